//! Read-modify-write arithmetic: how an I/O in 512-byte logical blocks maps onto a volume
//! whose chunk servers only take whole physical blocks (4096 bytes on Curve: the chunk
//! server refuses a read or write whose offset or length is not a multiple of its page size).
//!
//! A read of an unaligned range reads the covering physical blocks and returns the slice. A
//! write splits into at most three parts: a partial head block and a partial tail block,
//! each read, patched and written back whole, and the aligned middle, written straight from
//! the command's buffer. [`super::rmw_engine`] runs the parts under a [`super::range_lock`].

use std::ops::Range;

/// How a write of `offset..offset+len` splits on `phys`-byte blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSplit {
    /// Start of a physical block the write covers only in part, at its start (or the one
    /// block when the write starts and ends inside it): read, patched, written back.
    pub head: Option<u64>,
    /// The whole physical blocks between the edges (may be empty).
    pub middle: Range<u64>,
    /// Start of a partial last block, different from `head`.
    pub tail: Option<u64>,
}

/// The whole physical blocks covering `offset..offset+len` (`phys` a power of two).
pub fn covering(offset: u64, len: u64, phys: u64) -> Range<u64> {
    let start = offset & !(phys - 1);
    let end = (offset + len).div_ceil(phys) * phys;
    start..end
}

/// True when `offset` and `len` are both multiples of `phys`.
pub fn aligned(offset: u64, len: u64, phys: u64) -> bool {
    (offset | len) & (phys - 1) == 0
}

/// Splits a write of `len > 0` bytes at `offset` into edges and middle.
pub fn split_write(offset: u64, len: u64, phys: u64) -> WriteSplit {
    let end = offset + len;
    let first = offset & !(phys - 1);
    let last = (end - 1) & !(phys - 1);
    let head_partial = offset != first || (end & (phys - 1) != 0 && last == first);
    let tail_partial = end & (phys - 1) != 0 && last != first;
    let head = head_partial.then_some(first);
    let tail = tail_partial.then_some(last);
    let mid_start = if head_partial { first + phys } else { first };
    let mid_end = if tail_partial {
        last
    } else if head_partial && last == first {
        first + phys
    } else {
        end.div_ceil(phys) * phys
    };
    WriteSplit {
        head,
        middle: mid_start..mid_end.max(mid_start),
        tail,
    }
}

/// Copies into `block` (the physical block at volume offset `block_at`) the bytes of the
/// write `offset..offset+len` that fall in it; `src(i)` is the write's byte at index `i`.
pub fn patch(block: &mut [u8], block_at: u64, offset: u64, len: u64, src: impl Fn(usize) -> u8) {
    let from = offset.max(block_at);
    let to = (offset + len).min(block_at + block.len() as u64);
    for v in from..to {
        block[(v - block_at) as usize] = src((v - offset) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u64 = 4096;

    #[test]
    fn examples() {
        let s = |o, l| split_write(o, l, P);
        assert_eq!(
            s(0, 8192),
            WriteSplit {
                head: None,
                middle: 0..8192,
                tail: None
            }
        );
        assert_eq!(
            s(512, 512),
            WriteSplit {
                head: Some(0),
                middle: 4096..4096,
                tail: None
            }
        );
        assert_eq!(
            s(3584, 1024),
            WriteSplit {
                head: Some(0),
                middle: 4096..4096,
                tail: Some(4096)
            }
        );
        assert_eq!(
            s(512, 3 * 4096),
            WriteSplit {
                head: Some(0),
                middle: 4096..12288,
                tail: Some(12288)
            }
        );
        assert_eq!(
            s(4096, 4608),
            WriteSplit {
                head: None,
                middle: 4096..8192,
                tail: Some(8192)
            }
        );
        assert_eq!(s(0, 512).head, Some(0));
        assert_eq!(covering(512, 512, P), 0..4096);
        assert_eq!(covering(4096, 4096, P), 4096..8192);
        assert!(aligned(8192, 4096, P) && !aligned(8192, 512, P) && !aligned(512, 4096, P));
        let mut b = vec![0u8; 4096];
        patch(&mut b, 4096, 4096 + 4000, 200, |i| i as u8 + 1);
        assert_eq!(&b[3999..4001], &[0, 1]);
        assert_eq!(b[4095], 96);
    }

    proptest! {
        /// The parts are disjoint whole blocks in order, cover exactly the covering range,
        /// edges are partial, and the middle is whole blocks fully inside the write.
        #[test]
        fn split_covers_exactly(sector in 0u64..200, sectors in 1u64..100) {
            let (offset, len) = (sector * 512, sectors * 512);
            let end = offset + len;
            let s = split_write(offset, len, P);
            let cov = covering(offset, len, P);
            let mut blocks = Vec::new();
            blocks.extend(s.head);
            let mut m = s.middle.start;
            while m < s.middle.end {
                prop_assert!(m >= offset && m + P <= end, "middle block inside the write");
                blocks.push(m);
                m += P;
            }
            prop_assert_eq!(s.middle.start % P, 0);
            prop_assert_eq!(s.middle.end % P, 0);
            blocks.extend(s.tail);
            let want: Vec<u64> = (cov.start / P..cov.end / P).map(|b| b * P).collect();
            prop_assert_eq!(&blocks, &want);
            for e in s.head.iter().chain(s.tail.iter()) {
                prop_assert!(*e < offset || *e + P > end, "edge {} is partial", e);
            }
            prop_assert_eq!(aligned(offset, len, P), s.head.is_none() && s.tail.is_none());
        }
    }
}
