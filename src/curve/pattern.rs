//! The deterministic data pattern of `../shared/curve/`'s `curve_smoke` (Curve's own client):
//! byte `i` of a volume under seed `s` depends only on (s, i), so data written by one client
//! can be verified by the other, across restarts.

/// Fills `buf` with the pattern for volume offset `offset` and `seed`.
pub fn fill(buf: &mut [u8], offset: u64, seed: u32) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_at(offset + i as u64, seed);
    }
}

/// The pattern byte at volume offset `off`.
pub fn byte_at(off: u64, seed: u32) -> u8 {
    let x = off
        .wrapping_mul(2654435761)
        .wrapping_add(u64::from(seed).wrapping_mul(40503));
    ((x >> 13) ^ (x >> 29) ^ u64::from(seed)) as u8
}

/// The first offset (relative to `buf`) where `buf` differs from the pattern.
pub fn first_mismatch(buf: &[u8], offset: u64, seed: u32) -> Option<usize> {
    buf.iter()
        .enumerate()
        .position(|(i, b)| *b != byte_at(offset + i as u64, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        let mut a = vec![0; 64];
        let mut b = vec![0; 64];
        fill(&mut a, 4096, 7);
        fill(&mut b, 4096, 8);
        assert_ne!(a, b);
        assert_eq!(first_mismatch(&a, 4096, 7), None);
        a[10] ^= 1;
        assert_eq!(first_mismatch(&a, 4096, 7), Some(10));
    }
}
