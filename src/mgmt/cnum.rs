//! C's `strtoull(s, &end, 0)`, which tgt and tgtadm use for every number they read (tids,
//! LUNs, block sizes): leading blanks, an optional sign, `0x`/`0` prefixes, and digits up to
//! the first character that is not one. Reproduced so we accept and refuse what tgt does.

/// The value `strtoull(s, &end, 0)` returns and how many bytes it consumed (0 when no digits
/// were read, as C's `end == s`). Overflow gives `u64::MAX`; a `-` negates modulo 2^64.
pub fn strtoull(s: &str) -> (u64, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i] == b' ' || (b'\t'..=b'\r').contains(&b[i])) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let (radix, start) = if b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2)
    } else if b.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let mut j = start;
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(d) = b.get(j).and_then(|c| char::from(*c).to_digit(radix)) {
        match v
            .checked_mul(u64::from(radix))
            .and_then(|x| x.checked_add(u64::from(d)))
        {
            Some(x) => v = x,
            None => overflow = true,
        }
        j += 1;
    }
    if j == start {
        return (0, 0);
    }
    if overflow {
        return (u64::MAX, j);
    }
    (if neg { v.wrapping_neg() } else { v }, j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_c() {
        assert_eq!(strtoull("12"), (12, 2));
        assert_eq!(strtoull(" 0x10z"), (16, 5));
        assert_eq!(strtoull("010"), (8, 3));
        assert_eq!(strtoull("0"), (0, 1));
        assert_eq!(strtoull("abc"), (0, 0));
        assert_eq!(strtoull("-1"), (u64::MAX, 2));
        assert_eq!(strtoull("99999999999999999999999"), (u64::MAX, 23));
    }
}
