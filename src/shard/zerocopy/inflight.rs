//! Sent batches the kernel may still read. A zero-copy send completes (the bytes are queued)
//! long before the kernel is done with the pages: it reads them again on retransmission, and
//! only its notification says they are free. So a batch that went out (its `TxPdu`s, holding
//! the pooled read buffers) is retired here and dropped only when every zero-copy send issued
//! up to its retirement has been notified.
//!
//! Sends are numbered in the order the connection issued them, which for `MSG_ZEROCOPY` is
//! also the kernel's per-socket counter (one number per successful `sendmsg`, starting at 0,
//! wrapping at 2^32): notifications name these numbers, as single ids (io_uring, carried in
//! the CQE's user_data) or as inclusive ranges (the error queue). Notifications may arrive out
//! of order, so a batch waits for the oldest outstanding send, not for a count.

use super::errqueue::ZcNotification;
use std::collections::VecDeque;

/// One connection's outstanding zero-copy sends and the batches waiting on them.
#[derive(Debug)]
pub struct Inflight<T> {
    /// Sequence numbers of sends whose notification has not arrived, ascending.
    outstanding: VecDeque<u64>,
    /// Retired batches and the last sequence number issued when each was retired.
    retired: VecDeque<(u64, T)>,
    next_seq: u64,
}

impl<T> Default for Inflight<T> {
    fn default() -> Self {
        Inflight {
            outstanding: VecDeque::new(),
            retired: VecDeque::new(),
            next_seq: 0,
        }
    }
}

impl<T> Inflight<T> {
    /// Numbers the next zero-copy send and marks it outstanding. Returns the number as the
    /// kernel names it (its low 32 bits).
    pub fn issue(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq += 1;
        self.outstanding.push_back(s);
        s as u32
    }

    /// The send numbered `id` is done with its pages (its notification arrived, or it
    /// completed without one). Unknown ids are ignored (a duplicate or a stray CQE).
    pub fn complete(&mut self, id: u32) -> bool {
        match self.outstanding.iter().position(|s| *s as u32 == id) {
            Some(i) => {
                self.outstanding.remove(i);
                true
            }
            None => false,
        }
    }

    /// Completes every outstanding send a `MSG_ZEROCOPY` notification's range covers.
    /// Returns how many it completed.
    pub fn complete_range(&mut self, n: &ZcNotification) -> usize {
        let before = self.outstanding.len();
        self.outstanding.retain(|s| !n.contains(*s as u32));
        before - self.outstanding.len()
    }

    /// A batch fully sent: returns it at once when no zero-copy send is outstanding or when
    /// none of its bytes left by a zero-copy send (`zero_copy` false: the kernel copied them
    /// all, so they are free, whatever earlier sends still wait for), and the caller drops or
    /// recycles it; else keeps it until every send issued so far is notified.
    pub fn retire(&mut self, batch: T, zero_copy: bool) -> Option<T> {
        if self.outstanding.is_empty() || !zero_copy {
            return Some(batch);
        }
        self.retired.push_back((self.next_seq, batch));
        None
    }

    /// Batches no outstanding send can still read, oldest first.
    pub fn released(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        self.release_each(|b| out.push(b));
        out
    }

    /// Hands each batch no outstanding send can still read to `f`, oldest first (the hot
    /// path's form of [`Inflight::released`]: no vector).
    pub fn release_each(&mut self, mut f: impl FnMut(T)) {
        let oldest = self.outstanding.front().copied();
        while let Some((upto, _)) = self.retired.front() {
            // `upto` is the first number not yet issued at retirement: every send the batch
            // was part of is below it.
            if oldest.is_some_and(|o| o < *upto) {
                break;
            }
            f(self.retired.pop_front().expect("front exists").1);
        }
    }

    /// Gives up on every outstanding send (their notifications never came): forgets their
    /// numbers and returns the batches held for them, which the caller must never reuse
    /// (the kernel may still hold their pages), so it leaks them. Returns the batches.
    pub fn abandon(&mut self) -> Vec<T> {
        self.outstanding.clear();
        self.retired.drain(..).map(|(_, b)| b).collect()
    }

    /// Zero-copy sends still waiting for their notification.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Batches held for them.
    pub fn held(&self) -> usize {
        self.retired.len()
    }

    /// Nothing outstanding and nothing held: the connection's slot may be freed.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty() && self.retired.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_held_until_its_sends_are_notified() {
        let mut f = Inflight::default();
        assert_eq!(
            f.retire("idle", true),
            Some("idle"),
            "nothing outstanding: free at once"
        );
        let a = f.issue();
        let b = f.issue();
        assert_eq!((a, b), (0, 1));
        assert_eq!(f.retire("batch1", true), None);
        let c = f.issue();
        assert_eq!(
            f.retire("copied", false),
            Some("copied"),
            "a batch sent by copy is free at once, whatever is outstanding"
        );
        assert_eq!(f.retire("batch2", true), None);
        assert_eq!(f.held(), 2);
        // Out of order: the later sends first. batch1 still waits for send 0.
        assert!(f.complete(b));
        assert!(f.complete(c));
        assert!(f.released().is_empty());
        assert!(f.complete(a));
        assert_eq!(f.released(), vec!["batch1", "batch2"]);
        assert!(f.is_idle());
        assert!(!f.complete(a), "a duplicate is ignored");
    }

    #[test]
    fn an_older_batch_is_released_before_a_newer_sends_notification() {
        let mut f = Inflight::default();
        let a = f.issue();
        assert_eq!(f.retire("old", true), None);
        let _b = f.issue();
        assert_eq!(f.retire("new", true), None);
        f.complete(a);
        assert_eq!(f.released(), vec!["old"]);
        assert_eq!(f.outstanding(), 1);
        assert_eq!(f.held(), 1);
        assert!(!f.is_idle());
    }

    #[test]
    fn abandoning_forgets_the_sends_and_hands_back_what_they_held() {
        let mut f = Inflight::default();
        f.issue();
        assert_eq!(f.retire("held", true), None);
        f.issue();
        assert_eq!(f.abandon(), vec!["held"]);
        assert!(f.is_idle());
        // Numbering goes on: a late notification for an abandoned send matches nothing.
        assert!(!f.complete(0));
        assert_eq!(f.issue(), 2);
    }

    #[test]
    fn error_queue_ranges_complete_many_sends_and_wrap() {
        let mut f: Inflight<u8> = Inflight {
            next_seq: u64::from(u32::MAX) - 1,
            ..Inflight::default()
        };
        let ids: Vec<u32> = (0..4).map(|_| f.issue()).collect();
        assert_eq!(ids, vec![u32::MAX - 1, u32::MAX, 0, 1]);
        assert_eq!(f.retire(7, true), None);
        let n = ZcNotification {
            first: u32::MAX - 1,
            last: 0,
            copied: false,
        };
        assert_eq!(f.complete_range(&n), 3);
        assert!(f.released().is_empty());
        let n2 = ZcNotification {
            first: 1,
            last: 1,
            copied: true,
        };
        assert_eq!(f.complete_range(&n2), 1);
        assert_eq!(f.released(), vec![7]);
    }
}
