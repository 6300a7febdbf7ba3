//! The shard's timers: a min-heap of deadlines behind one armed ring timeout. Login
//! deadlines, the NOP-In tick and backend engines' per-operation deadlines, backoffs and
//! lease renewals all live here; the shard keeps a single `IORING_OP_TIMEOUT` armed for the
//! earliest one. Insert is O(log n); cancel is O(1) (the entry is dropped from the slab, and
//! its heap node is skipped when it surfaces); the heap is rebuilt when cancelled nodes
//! outnumber live ones, so it stays bounded by twice the live timers.
//!
//! Deadlines are nanoseconds on the shard's monotonic clock ([`super::ring::clock`]).

use super::slots::{Slab, SlotKey};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Names an armed timer, for cancelling it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimerKey(pub SlotKey);

/// Whom an expiry is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimerOwner {
    /// A connection that must have finished login by now (`conn` names slot + generation).
    LoginDeadline { conn: SlotKey },
    /// The shard's keep-alive second (NOP-In pings).
    NopTick,
    /// Shutting down: stop waiting for engines to drain.
    ShutdownDeadline,
    /// Once a second while closing connections wait for zero-copy notifications.
    ZcDrainTick,
    /// A backend engine's timer, handed back to it with its tag.
    Engine { engine: u16, tag: u64 },
    /// An engine's outbound connect (ring token `token`) must have finished by now.
    ConnectDeadline { token: u64 },
    /// Time to give memory back after connections left ([`super::reclaim`]).
    Reclaim,
}

/// The heap.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, SlotKey)>>,
    live: Slab<(u64, TimerOwner)>,
    seq: u64,
}

impl Timers {
    /// Arms a timer for `deadline` (shard clock, ns).
    pub fn insert(&mut self, deadline: u64, owner: TimerOwner) -> TimerKey {
        let k = self.live.insert((deadline, owner));
        // The sequence number keeps timers with equal deadlines in insertion order.
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Reverse((deadline, self.seq, k)));
        TimerKey(k)
    }

    /// Disarms a timer; false when it already fired or was cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> bool {
        let hit = self.live.remove(key.0).is_some();
        if hit && self.heap.len() > 2 * self.live.len() + 64 {
            let live = self.live.iter().map(|(k, (d, _))| (*d, k));
            let mut nodes: Vec<_> = live.collect();
            nodes.sort_unstable();
            self.heap = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (d, k))| Reverse((d, i as u64, k)))
                .collect();
            self.seq = self.heap.len() as u64;
        }
        hit
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(Reverse((d, _, k))) = self.heap.peek().copied() {
            if self.live.get(k).is_some() {
                return Some(d);
            }
            self.heap.pop();
        }
        None
    }

    /// Moves every timer due at `now` into `out`, earliest first.
    pub fn expire(&mut self, now: u64, out: &mut Vec<TimerOwner>) {
        while let Some(Reverse((d, _, k))) = self.heap.peek().copied() {
            if d > now {
                break;
            }
            self.heap.pop();
            if let Some((_, owner)) = self.live.remove(k) {
                out.push(owner);
            }
        }
    }

    /// Armed timers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is armed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Heap nodes, cancelled ones included (tests of the bound).
    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eng(tag: u64) -> TimerOwner {
        TimerOwner::Engine { engine: 0, tag }
    }

    #[test]
    fn expire_in_deadline_order_then_insertion_order() {
        let mut t = Timers::default();
        t.insert(30, eng(3));
        t.insert(10, eng(1));
        t.insert(20, eng(2));
        t.insert(20, eng(22));
        assert_eq!(t.next_deadline(), Some(10));
        let mut out = Vec::new();
        t.expire(25, &mut out);
        assert_eq!(out, vec![eng(1), eng(2), eng(22)]);
        assert_eq!(t.next_deadline(), Some(30));
        out.clear();
        t.expire(29, &mut out);
        assert!(out.is_empty(), "nothing before its deadline");
        t.expire(30, &mut out);
        assert_eq!(out, vec![eng(3)]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn cancel_is_final_and_skipped_by_next_deadline() {
        let mut t = Timers::default();
        let a = t.insert(5, eng(1));
        t.insert(9, eng(2));
        assert!(t.cancel(a));
        assert!(!t.cancel(a), "a second cancel finds nothing");
        assert_eq!(t.next_deadline(), Some(9));
        let mut out = Vec::new();
        t.expire(100, &mut out);
        assert_eq!(out, vec![eng(2)]);
        // Cancelling a timer that fired finds nothing either.
        let b = t.insert(1, eng(3));
        t.expire(1, &mut out);
        assert!(!t.cancel(b));
    }

    #[test]
    fn reused_slot_after_wrap_keeps_old_keys_dead() {
        // Many arm/cancel rounds on one slot: the generation climbs (and would wrap), an old
        // key never cancels the slot's new timer.
        let mut t = Timers::default();
        let first = t.insert(1, eng(0));
        t.cancel(first);
        let mut last = first;
        for i in 0..100_000u64 {
            let k = t.insert(i, eng(i));
            assert_eq!(k.0.index, first.0.index);
            assert!(t.cancel(k));
            last = k;
        }
        let live = t.insert(7, eng(7));
        assert!(!t.cancel(first));
        assert!(!t.cancel(last));
        assert_eq!(t.next_deadline(), Some(7));
        assert!(t.cancel(live));
        // The heap stayed bounded by the rebuilds.
        assert!(t.nodes() <= 2 * t.len() + 65, "heap nodes {}", t.nodes());
    }

    #[test]
    fn far_and_past_deadlines() {
        let mut t = Timers::default();
        t.insert(u64::MAX, eng(9));
        t.insert(0, eng(1));
        let mut out = Vec::new();
        t.expire(5, &mut out);
        assert_eq!(out, vec![eng(1)]);
        assert_eq!(t.next_deadline(), Some(u64::MAX));
    }
}
