//! Write buffers and the budget they are taken from (issue 11 item 6).
//!
//! A WRITE's Expected Data Transfer Length is the initiator's word, not data: buffering it
//! on arrival let one session ask for gigabytes with a few hundred commands. So a task buffers
//! only what has arrived (its immediate data) until the rest is solicited, and the full buffer
//! is taken from the shard's [`WriteBudget`] before the first R2T. When the budget has no room
//! the task waits without an R2T: the writer is paced by R2Ts instead of by memory. Data the
//! initiator may send unasked (immediate data, the unsolicited burst with InitialR2T=No) is
//! bounded by FirstBurstLength per command and always taken, so the budget can be exceeded
//! by at most that.

use super::Session;
use crate::buf::BufPool;
use crate::iscsi::task::{Task, TaskRef, TaskState};
use std::cell::Cell;
use std::rc::Rc;

/// The bytes of write buffers one shard's sessions may hold at once. Cloned into every
/// session of the shard (one thread, so `Rc`); the default is unlimited.
#[derive(Clone, Debug)]
pub struct WriteBudget(Rc<Counts>);

#[derive(Debug)]
struct Counts {
    limit: Cell<u64>,
    used: Cell<u64>,
}

impl Default for WriteBudget {
    fn default() -> Self {
        WriteBudget::new(u64::MAX)
    }
}

impl WriteBudget {
    /// A budget of `limit_bytes`.
    pub fn new(limit_bytes: u64) -> WriteBudget {
        WriteBudget(Rc::new(Counts {
            limit: Cell::new(limit_bytes),
            used: Cell::new(0),
        }))
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> u64 {
        self.0.used.get()
    }

    /// The limit.
    pub fn limit_bytes(&self) -> u64 {
        self.0.limit.get()
    }

    /// Changes the limit (buffers already held stay).
    pub fn set_limit_bytes(&self, limit: u64) {
        self.0.limit.set(limit);
    }

    /// Takes `n` bytes if they fit. A write larger than the whole budget still goes when
    /// nothing else holds any, so no write can wait for ever.
    pub fn try_take(&self, n: u64) -> bool {
        let used = self.0.used.get();
        if used != 0 && used.saturating_add(n) > self.0.limit.get() {
            return false;
        }
        self.0.used.set(used.saturating_add(n));
        true
    }

    /// Takes `n` bytes whether they fit or not: data the initiator may send unasked.
    pub fn force_take(&self, n: u64) {
        self.0.used.set(self.0.used.get().saturating_add(n));
    }

    /// Returns `n` bytes.
    pub fn give_back(&self, n: u64) {
        let used = self.0.used.get();
        debug_assert!(used >= n, "gave back more than was taken");
        self.0.used.set(used.saturating_sub(n));
    }
}

/// Gives `t` its full buffer of `data_want` bytes, keeping the bytes already placed. With
/// `force` the budget is taken whether it has room or not; otherwise false when it has none.
pub(super) fn grow(t: &mut Task, pool: &BufPool, budget: &WriteBudget, force: bool) -> bool {
    let have = t.data.as_ref().map_or(0, |b| b.len());
    if have >= t.data_want as usize {
        return true;
    }
    let more = u64::from(t.data_want - t.buf_bytes.min(t.data_want));
    if force {
        budget.force_take(more);
    } else if !budget.try_take(more) {
        return false;
    }
    let mut b = pool.alloc(t.data_want as usize);
    if let Some(old) = &t.data {
        let n = (t.data_got as usize).min(old.len());
        b.as_mut_slice()[..n].copy_from_slice(&old.as_slice()[..n]);
    }
    t.data = Some(b);
    t.buf_bytes = t.data_want;
    true
}

impl Session {
    /// Makes this session take its write buffers from `budget` (the shard's), instead of
    /// the unlimited default.
    pub fn set_write_budget(&mut self, budget: WriteBudget) {
        self.budget = budget;
    }

    /// Whether writes wait for room in the write budget. The owner calls
    /// [`Session::admit_waiting_writes`] when room may have been freed (a task finished on
    /// any session sharing the budget).
    pub fn writes_waiting(&self) -> bool {
        !self.wait_buffer.is_empty()
    }

    /// Solicits the data of writes that waited for room in the write budget, oldest first,
    /// as far as the budget now allows.
    pub fn admit_waiting_writes(&mut self) {
        while let Some(&r) = self.wait_buffer.front() {
            let Some(t) = self.tasks.get_mut(r) else {
                self.wait_buffer.pop_front(); // aborted meanwhile
                continue;
            };
            if t.state != TaskState::WaitBuffer {
                self.wait_buffer.pop_front();
                continue;
            }
            if !grow(t, &self.pool, &self.budget, false) {
                return;
            }
            t.state = TaskState::ReceivingData;
            self.wait_buffer.pop_front();
            self.send_r2ts(r);
        }
    }

    /// Removes a task from the table, returning its buffer's bytes to the budget.
    pub(super) fn remove_task(&mut self, r: TaskRef) -> Option<Task> {
        let t = self.tasks.remove(r)?;
        self.budget.give_back(u64::from(t.buf_bytes));
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_admits_up_to_its_limit_and_one_oversized_alone() {
        let b = WriteBudget::new(1000);
        assert!(b.try_take(600));
        assert!(!b.try_take(500), "beyond the limit");
        assert!(b.try_take(400));
        b.give_back(1000);
        assert!(b.try_take(5000), "alone, even larger than the budget");
        assert!(!b.try_take(1));
        b.force_take(10);
        assert_eq!(b.used_bytes(), 5010);
        b.give_back(5010);
        assert_eq!(b.used_bytes(), 0);
    }
}
