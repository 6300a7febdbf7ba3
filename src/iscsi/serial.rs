//! RFC 1982 serial-number arithmetic for the 32-bit sequence numbers of RFC 7143 §4.2.2.1
//! (CmdSN, StatSN, DataSN, R2TSN): they wrap, so "greater" must be decided modulo 2^32.

use std::cmp::Ordering;

/// Compares two 32-bit serial numbers per RFC 1982 §3.2. `None` when they are exactly 2^31
/// apart, where the comparison is undefined.
pub fn serial_cmp(a: u32, b: u32) -> Option<Ordering> {
    if a == b {
        return Some(Ordering::Equal);
    }
    let diff = b.wrapping_sub(a);
    match diff.cmp(&(1u32 << 31)) {
        Ordering::Less => Some(Ordering::Less),
        Ordering::Greater => Some(Ordering::Greater),
        Ordering::Equal => None,
    }
}

/// `a < b` in serial arithmetic.
pub fn serial_lt(a: u32, b: u32) -> bool {
    serial_cmp(a, b) == Some(Ordering::Less)
}

/// `a <= b` in serial arithmetic.
pub fn serial_le(a: u32, b: u32) -> bool {
    matches!(serial_cmp(a, b), Some(Ordering::Less | Ordering::Equal))
}

/// `a > b` in serial arithmetic.
pub fn serial_gt(a: u32, b: u32) -> bool {
    serial_cmp(a, b) == Some(Ordering::Greater)
}

macro_rules! serial_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl $name {
            /// The next number, wrapping at 2^32.
            #[must_use]
            pub fn next(self) -> Self {
                Self(self.0.wrapping_add(1))
            }
            /// This number plus `n`, wrapping at 2^32.
            #[must_use]
            pub fn plus(self, n: u32) -> Self {
                Self(self.0.wrapping_add(n))
            }
            /// Serial-arithmetic `<` (RFC 1982).
            pub fn lt(self, other: Self) -> bool {
                serial_lt(self.0, other.0)
            }
            /// Serial-arithmetic `<=` (RFC 1982).
            pub fn le(self, other: Self) -> bool {
                serial_le(self.0, other.0)
            }
            /// Serial-arithmetic `>` (RFC 1982).
            pub fn gt(self, other: Self) -> bool {
                serial_gt(self.0, other.0)
            }
        }
    };
}

serial_newtype!(
    /// Command sequence number (RFC 7143 §4.2.2.1): orders non-immediate commands in a session.
    CmdSn
);
serial_newtype!(
    /// Status sequence number (RFC 7143 §4.2.2.2): numbers responses on one connection.
    StatSn
);
serial_newtype!(
    /// Data sequence number (RFC 7143 §4.2.2.3): numbers Data-In, Data-Out and R2T PDUs of a task.
    DataSn
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_across_wrap() {
        assert!(serial_lt(u32::MAX, 0));
        assert!(serial_lt(u32::MAX - 5, 3));
        assert!(serial_gt(3, u32::MAX - 5));
        assert!(serial_le(7, 7));
        assert!(!serial_lt(7, 7));
        assert_eq!(serial_cmp(0, 1 << 31), None);
        assert!(serial_lt(0, (1 << 31) - 1));
        assert!(serial_gt(0, (1 << 31) + 1));
    }

    #[test]
    fn newtype_next_wraps() {
        let s = CmdSn(u32::MAX);
        assert_eq!(s.next(), CmdSn(0));
        assert!(s.lt(s.next()));
        assert_eq!(CmdSn(u32::MAX - 1).plus(3), CmdSn(1));
    }
}
