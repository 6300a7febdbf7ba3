//! Pushing to the submission queue without spinning (issue 11: "`push()` can spin").
//!
//! An entry goes into the ring's submission queue; when that is full, one submit hands the
//! queue to the kernel to make room. If the kernel takes nothing (it refuses submissions while
//! completions it could not post wait to be reaped, `EBUSY`), retrying could only spin: the
//! completions that would free it are reaped by this same thread. So the entry waits in an
//! overflow queue instead, in order (everything pushed after it goes there too), and the
//! shard moves the overflow to the ring before each wait; while some remains, the wait does
//! not sleep, so the loop reaps completions and tries again. No entry is dropped (every owner
//! still gets its completion) and none is reordered.

use io_uring::{squeue, IoUring};
use std::collections::VecDeque;

/// Queues `e`: into the ring when it has room (after one submit if needed), else behind the
/// overflow.
pub fn push(ring: &mut IoUring, overflow: &mut VecDeque<squeue::Entry>, e: squeue::Entry) {
    if overflow.is_empty() && try_push(ring, &e) {
        return;
    }
    overflow.push_back(e);
}

/// Moves the overflow into the ring as far as it has room; true when none is left.
pub fn drain(ring: &mut IoUring, overflow: &mut VecDeque<squeue::Entry>) -> bool {
    while let Some(e) = overflow.front() {
        if !try_push(ring, e) {
            return false;
        }
        overflow.pop_front();
    }
    true
}

/// One entry into the submission queue, with at most one submit to make room.
fn try_push(ring: &mut IoUring, e: &squeue::Entry) -> bool {
    // SAFETY: every entry reaching here was vouched for by `Ring::push`'s caller (or built by
    // the ring over its own memory); pushing only copies it into the queue.
    if unsafe { ring.submission().push(e) }.is_ok() {
        return true;
    }
    let _ = ring.submit();
    // SAFETY: as above.
    unsafe { ring.submission().push(e) }.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn a_full_queue_never_spins_and_loses_nothing() {
        // A small ring whose completion queue is never reaped while pushing: far more entries
        // than the queues hold. Each push returns; every entry completes once the overflow
        // is moved in between reaps.
        let mut ring = IoUring::new(8).unwrap();
        let mut overflow = VecDeque::new();
        const N: u64 = 2000;
        for i in 0..N {
            push(
                &mut ring,
                &mut overflow,
                opcode::Nop::new().build().user_data(i),
            );
        }
        let mut seen = vec![false; N as usize];
        let mut got = 0;
        for _ in 0..100_000 {
            if got == N {
                break;
            }
            let _ = drain(&mut ring, &mut overflow);
            let _ = ring.submit();
            for c in ring.completion() {
                let i = c.user_data() as usize;
                assert!(!seen[i], "entry {i} completed twice");
                seen[i] = true;
                got += 1;
            }
        }
        assert_eq!(got, N, "every entry completed");
        assert!(overflow.is_empty());
    }

    #[test]
    fn overflow_keeps_order() {
        let mut ring = IoUring::new(4).unwrap();
        let mut overflow = VecDeque::new();
        // Fill the queue and the kernel's completion queue without reaping.
        for i in 0..64u64 {
            push(
                &mut ring,
                &mut overflow,
                opcode::Nop::new().build().user_data(i),
            );
        }
        let mut order = Vec::new();
        for _ in 0..10_000 {
            if order.len() == 64 {
                break;
            }
            let _ = drain(&mut ring, &mut overflow);
            let _ = ring.submit();
            order.extend(ring.completion().map(|c| c.user_data()));
        }
        assert_eq!(order, (0..64).collect::<Vec<_>>());
    }
}
