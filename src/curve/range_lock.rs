//! A per-engine range lock: a FIFO wait-list of byte ranges, so that writes to the same
//! physical blocks of a volume run one after another on a shard.
//!
//! Why it exists: a 512-byte-block LU on a 4096-byte-block Curve volume writes a partial
//! physical block by read-modify-write (see [`super::rmw`]). If another write of that block
//! ran between the read and the write-back, the write-back would put the old bytes back and
//! that write would be lost. Every write of such an LU therefore holds the range of physical
//! blocks it touches from before its first read until its last write is acknowledged; an
//! aligned write overlapping a read-modify-write in progress waits too.
//!
//! Grant rule: a request is granted when no request that arrived before it (granted or still
//! waiting) overlaps it. Overlapping requests are thus granted in arrival order — no
//! starvation, and the final contents equal the writes applied in that order — while
//! requests on disjoint ranges never wait for each other. The lock lives on one shard's
//! engine and needs no atomics; across shards it orders nothing (ARCHITECTURE.md says what
//! that means for two sessions writing the same block).
//!
//! Costs: acquiring is O(n) in the requests held or waiting; releasing re-checks only the
//! waiters, O(n²) in the worst case, where n is bounded by the shard's queue depth for the LU.

use std::ops::Range;

/// One held or waiting request.
#[derive(Debug)]
struct Entry<T> {
    ticket: T,
    range: Range<u64>,
    granted: bool,
}

/// Requests for ranges of `u64` (byte offsets of the volume), named by tickets of type `T`.
#[derive(Debug)]
pub struct RangeLock<T> {
    /// Held and waiting requests, in arrival order.
    entries: Vec<Entry<T>>,
}

impl<T> Default for RangeLock<T> {
    fn default() -> Self {
        RangeLock {
            entries: Vec::new(),
        }
    }
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

impl<T: Copy + Eq + std::fmt::Debug> RangeLock<T> {
    /// An empty lock.
    pub fn new() -> RangeLock<T> {
        RangeLock::default()
    }

    /// Queues `ticket` for `range`; true when it is granted at once. An empty range never
    /// waits and never blocks anyone. A ticket must not be queued twice.
    pub fn acquire(&mut self, ticket: T, range: Range<u64>) -> bool {
        debug_assert!(
            !self.entries.iter().any(|e| e.ticket == ticket),
            "ticket {ticket:?} queued twice"
        );
        let granted = !self.entries.iter().any(|e| overlaps(&e.range, &range));
        self.entries.push(Entry {
            ticket,
            range,
            granted,
        });
        granted
    }

    /// Removes `ticket` (held, or given up while waiting) and returns the tickets this
    /// grants, in arrival order. Unknown tickets are ignored.
    pub fn release(&mut self, ticket: T) -> Vec<T> {
        let Some(at) = self.entries.iter().position(|e| e.ticket == ticket) else {
            return Vec::new();
        };
        let gone = self.entries.remove(at);
        let mut granted = Vec::new();
        // Only a waiter after the removed entry, overlapping it, can have been waiting on it.
        for i in at..self.entries.len() {
            let e = &self.entries[i];
            if e.granted || !overlaps(&e.range, &gone.range) {
                continue;
            }
            let blocked = self.entries[..i]
                .iter()
                .any(|p| overlaps(&p.range, &self.entries[i].range));
            if !blocked {
                self.entries[i].granted = true;
                granted.push(self.entries[i].ticket);
            }
        }
        granted
    }

    /// Whether `ticket` holds its range now.
    pub fn is_granted(&self, ticket: T) -> bool {
        self.entries.iter().any(|e| e.ticket == ticket && e.granted)
    }

    /// Requests held or waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held or waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn disjoint_ranges_never_wait_and_overlaps_go_in_arrival_order() {
        let mut l = RangeLock::new();
        assert!(l.acquire(1, 0..4096));
        assert!(l.acquire(2, 4096..8192), "disjoint: granted at once");
        assert!(!l.acquire(3, 0..8192), "overlaps both");
        assert!(!l.acquire(4, 8192..12288) || l.is_granted(4));
        assert!(l.is_granted(4), "disjoint from every earlier one");
        assert!(
            !l.acquire(5, 4096..4097),
            "waits behind 2 and behind waiting 3"
        );
        assert_eq!(l.release(1), Vec::<u32>::new(), "3 still waits for 2");
        assert_eq!(l.release(2), vec![3], "5 waits behind 3 (FIFO)");
        assert_eq!(l.release(3), vec![5]);
        assert_eq!(l.release(5), Vec::<u32>::new());
        assert_eq!(l.release(4), Vec::<u32>::new());
        assert!(l.is_empty());
    }

    #[test]
    fn a_waiter_that_gives_up_unblocks_those_behind_it() {
        let mut l = RangeLock::new();
        assert!(l.acquire(1, 0..10));
        assert!(!l.acquire(2, 5..20));
        assert!(!l.acquire(3, 15..30), "behind waiting 2 only");
        assert_eq!(l.release(2), vec![3]);
        assert!(l.is_granted(1) && l.is_granted(3));
        assert_eq!(l.release(99), Vec::<u32>::new(), "unknown ticket ignored");
    }

    #[test]
    fn empty_ranges_neither_wait_nor_block() {
        let mut l = RangeLock::new();
        assert!(l.acquire(1, 0..100));
        assert!(l.acquire(2, 50..50));
        assert!(l.acquire(3, 100..200));
    }

    proptest! {
        /// Against a model: at every step, no two granted requests overlap; every waiter
        /// overlaps some earlier request (else it would have been granted); and every
        /// granted request has no earlier overlapping request (FIFO among overlaps).
        #[test]
        fn grants_match_the_model(
            steps in proptest::collection::vec((0u8..3, 0u64..16, 1u64..5), 1..200)
        ) {
            let mut l = RangeLock::new();
            let mut live: Vec<(u32, Range<u64>)> = Vec::new();
            let mut next = 0u32;
            for (what, start, len) in steps {
                if what < 2 || live.is_empty() {
                    next += 1;
                    let r = start..start + len;
                    let got = l.acquire(next, r.clone());
                    let want = !live.iter().any(|(_, p)| overlaps(p, &r));
                    prop_assert_eq!(got, want);
                    live.push((next, r));
                } else {
                    let (t, _) = live.remove(start as usize % live.len());
                    let newly = l.release(t);
                    for n in &newly {
                        prop_assert!(l.is_granted(*n));
                    }
                }
                for (i, (t, r)) in live.iter().enumerate() {
                    let earlier = live[..i].iter().any(|(_, p)| overlaps(p, r));
                    prop_assert_eq!(l.is_granted(*t), !earlier, "ticket {}", t);
                }
                prop_assert_eq!(l.len(), live.len());
            }
        }
    }
}
