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
//!
//! One session may hold at most a share of the budget (`tgtd --write-buffer-session-pct`,
//! 25 %) before its next write waits, so a session that trickles its Data-Out, or just
//! writes more than its share at once, cannot take the whole shard's room from the others.
//! A session holding no solicited buffer may always take one write, whatever its size
//! (unsolicited bytes do not count: they never wait, so counting them could make two
//! waiting writes with immediate data wait for each other).

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
    /// Most bytes one session holds before its next write waits.
    session_cap: Cell<u64>,
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
            session_cap: Cell::new(u64::MAX),
        }))
    }

    /// Caps what one session holds at `pct` percent of the limit (100: no cap).
    pub fn set_session_share_pct(&self, pct: u32) {
        let cap = if pct >= 100 {
            u64::MAX
        } else {
            (u128::from(self.limit_bytes()) * u128::from(pct) / 100) as u64
        };
        self.0.session_cap.set(cap);
    }

    /// Most bytes one session holds before its next write waits.
    pub fn session_cap_bytes(&self) -> u64 {
        self.0.session_cap.get()
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

/// One session's hold on the shard's [`WriteBudget`]: the solicited bytes its tasks'
/// buffers hold, so its takes can be capped at its share.
#[derive(Debug, Default)]
pub(super) struct SessionShare {
    budget: WriteBudget,
    held: u64,
}

/// Why a write could not take its buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// The shard's budget is full.
    Budget,
    /// This session holds its share already.
    Share,
}

impl SessionShare {
    /// Takes `n` bytes if the session's share and the budget allow.
    pub(super) fn try_take(&mut self, n: u64) -> Result<(), NoRoom> {
        if self.held != 0 && self.held.saturating_add(n) > self.budget.session_cap_bytes() {
            return Err(NoRoom::Share);
        }
        if !self.budget.try_take(n) {
            return Err(NoRoom::Budget);
        }
        self.held += n;
        Ok(())
    }

    /// Takes `n` bytes whatever the limits: data the initiator may send unasked (not
    /// counted in the share).
    pub(super) fn force_take(&mut self, n: u64) {
        self.budget.force_take(n);
    }

    /// Returns `n` bytes, `shared` of which counted in the share.
    pub(super) fn give_back(&mut self, n: u64, shared: u32) {
        self.budget.give_back(n);
        self.held = self.held.saturating_sub(u64::from(shared));
    }
}

/// Gives `t` its full buffer of `data_want` bytes, keeping the bytes already placed. With
/// `force` the budget is taken whether it has room or not; otherwise an error when the
/// budget or the session's share has none.
pub(super) fn grow(
    t: &mut Task,
    pool: &BufPool,
    budget: &mut SessionShare,
    force: bool,
) -> Result<(), NoRoom> {
    let have = t.data.as_ref().map_or(0, |b| b.len());
    if have >= t.data_want as usize {
        return Ok(());
    }
    let more = u64::from(t.data_want - t.buf_bytes.min(t.data_want));
    if force {
        budget.force_take(more);
    } else {
        budget.try_take(more)?;
        t.share_bytes += more as u32;
    }
    let mut b = pool.alloc(t.data_want as usize);
    if let Some(old) = &t.data {
        let n = (t.data_got as usize).min(old.len());
        b.as_mut_slice()[..n].copy_from_slice(&old.as_slice()[..n]);
    }
    t.data = Some(b);
    t.buf_bytes = t.data_want;
    Ok(())
}

impl Session {
    /// Makes this session take its write buffers from `budget` (the shard's), instead of
    /// the unlimited default.
    pub fn set_write_budget(&mut self, budget: WriteBudget) {
        debug_assert_eq!(self.budget.held, 0, "set before any write");
        self.budget.budget = budget;
    }

    /// Whether writes wait for room in the write budget. The owner calls
    /// [`Session::admit_waiting_writes`] when room may have been freed (a task finished on
    /// any session sharing the budget).
    pub fn writes_waiting(&self) -> bool {
        !self.wait_buffer.is_empty()
    }

    /// Solicits the data of writes that waited for room in the write budget, oldest first,
    /// as far as the budget now allows: Ok when none waits any more, otherwise why the
    /// oldest still waits (the shard serves other sessions meanwhile when it is this
    /// session's share).
    pub fn admit_waiting_writes(&mut self) -> Result<(), NoRoom> {
        while let Some(&r) = self.wait_buffer.front() {
            let Some(t) = self.tasks.get_mut(r) else {
                self.wait_buffer.pop_front(); // aborted meanwhile
                continue;
            };
            if t.state != TaskState::WaitBuffer {
                self.wait_buffer.pop_front();
                continue;
            }
            grow(t, &self.pool, &mut self.budget, false)?;
            t.state = TaskState::ReceivingData;
            self.wait_buffer.pop_front();
            self.send_r2ts(r);
        }
        Ok(())
    }

    /// Removes a task from the table, returning its buffer's bytes to the budget.
    pub(super) fn remove_task(&mut self, r: TaskRef) -> Option<Task> {
        let t = self.tasks.remove(r)?;
        self.budget.give_back(u64::from(t.buf_bytes), t.share_bytes);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_at_most_its_share_but_always_one_write() {
        let b = WriteBudget::new(1000);
        b.set_session_share_pct(25);
        assert_eq!(b.session_cap_bytes(), 250);
        let (mut s1, mut s2) = (
            SessionShare {
                budget: b.clone(),
                held: 0,
            },
            SessionShare {
                budget: b.clone(),
                held: 0,
            },
        );
        s1.force_take(10);
        assert_eq!(
            s1.try_take(600),
            Ok(()),
            "a session holding nothing solicited takes one write"
        );
        assert_eq!(s1.try_take(1), Err(NoRoom::Share));
        assert_eq!(s2.try_take(200), Ok(()));
        assert_eq!(s2.try_take(50), Ok(()), "up to its share");
        assert_eq!(s2.try_take(1), Err(NoRoom::Share));
        s1.give_back(610, 600);
        assert_eq!(s1.try_take(250), Ok(()));
        assert_eq!(b.used_bytes(), 500);
        s1.force_take(900);
        let mut s3 = SessionShare {
            budget: b.clone(),
            held: 0,
        };
        assert_eq!(s3.try_take(1), Err(NoRoom::Budget), "the budget is full");
        b.set_session_share_pct(100);
        assert_eq!(b.session_cap_bytes(), u64::MAX, "100 %: no cap");
    }

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
