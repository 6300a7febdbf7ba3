//! The shard's side of the budgets (issue 11 items 5 and 6; the caps are in `super::limits`):
//!
//! - **Output backlog per connection.** An initiator that sends requests but never reads the
//!   answers (NOP-Out pings with data, READs) made the shard queue responses without bound:
//!   50,000 pings of 8 KiB held 390 MiB. Now no receive is armed while a connection's queued
//!   responses exceed `conn_backlog_bytes` (or `BACKLOG_PDUS` PDUs); the requests wait in the
//!   socket, TCP flow control pushes back on the sender, and receiving resumes when the sends
//!   drain the queue. A connection's memory is then bounded by the backlog plus the answers to
//!   one receive buffer's worth of requests.
//! - **Write buffers per shard.** Every session of the shard takes its write buffers from one
//!   [`WriteBudget`] of `shard_write_bytes` (the session side is in `iscsi::session::writebuf`:
//!   a WRITE gets its R2Ts only once its whole buffer fits). Sessions whose writes wait are
//!   queued here, oldest first, and admitted as buffers come back, so writers are paced by
//!   R2Ts rather than by memory, and each waiting session is served in its turn; a session
//!   that waits only because it holds its share of the budget goes to the back.
//! - The [`ConnTicket`] of each connection, kept until the connection is freed.

use super::conn::Phase;
use super::event_loop::Shard;
use super::limits::{ConnTicket, Limits};
use super::slots::SlotKey;
use crate::iscsi::session::{NoRoom, WriteBudget};
use std::collections::{HashMap, VecDeque};

/// Most PDUs queued for one connection before its receives stop, whatever their size (so
/// measuring the backlog stays cheap, and tiny responses are bounded too).
pub const BACKLOG_PDUS: usize = 16 * 1024;

/// The shard's budgets and what waits on them.
pub struct ShardBudgets {
    /// The write-buffer budget every session of this shard takes from.
    pub write: WriteBudget,
    /// Connections whose sessions have writes waiting for room, oldest first.
    waiters: VecDeque<SlotKey>,
    /// Each live connection's place in the connection counts.
    tickets: HashMap<SlotKey, ConnTicket>,
    backlog_bytes: usize,
    /// Receives not armed because a connection's backlog was over budget (a counter).
    pub paused: u64,
}

impl ShardBudgets {
    pub fn new(limits: &Limits) -> ShardBudgets {
        ShardBudgets {
            write: {
                let b = WriteBudget::new(limits.shard_write_bytes);
                b.set_session_share_pct(limits.session_write_pct);
                b
            },
            waiters: VecDeque::new(),
            tickets: HashMap::new(),
            backlog_bytes: limits.conn_backlog_bytes,
            paused: 0,
        }
    }

    /// Keeps a new connection's ticket until [`ShardBudgets::conn_freed`].
    pub fn conn_added(&mut self, k: SlotKey, ticket: ConnTicket) {
        self.tickets.insert(k, ticket);
    }

    /// The connection is gone: its places in the counts go back.
    pub fn conn_freed(&mut self, k: SlotKey) {
        self.tickets.remove(&k);
        self.waiters.retain(|w| *w != k);
    }
}

impl Shard {
    /// Whether connection `k`'s queued responses are over its backlog budget: then no receive
    /// is armed (the send completions that drain it mark the connection again). Counts the
    /// pause.
    pub(super) fn backlog_full(&mut self, k: SlotKey) -> bool {
        let full = self.backlog_over(k);
        if full {
            self.budgets.paused += 1;
        }
        full
    }

    /// Whether connection `k`'s queued responses are over its backlog budget (see
    /// `backlog_full`), without counting a pause.
    pub(super) fn backlog_over(&self, k: SlotKey) -> bool {
        let limit = self.budgets.backlog_bytes;
        let Some(c) = self.conns.get(k) else {
            return false;
        };
        if c.recv_inflight || c.closing {
            return false;
        }
        let queued = match &c.phase {
            Phase::Login(_) => &c.login_out,
            Phase::Ffp(s) => &s.out,
        };
        if c.tx_batch.len() + queued.len() > BACKLOG_PDUS {
            return true;
        }
        // The batch in flight counts whole: its bytes stay ours until it completes.
        let mut bytes: usize = c.tx_batch.iter().map(|p| p.wire_len()).sum();
        for p in queued {
            if bytes > limit {
                break;
            }
            bytes += p.wire_len();
        }
        bytes > limit
    }

    /// Remembers connection `k` when its session has writes waiting for the write budget.
    pub(super) fn note_write_waiter(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get(k) else {
            return;
        };
        let waiting = !c.closing && matches!(&c.phase, Phase::Ffp(s) if s.writes_waiting());
        if waiting && !self.budgets.waiters.contains(&k) {
            self.budgets.waiters.push_back(k);
        }
    }

    /// Admits waiting writes, session by session in the order they started waiting, as far as
    /// the budget has room: a session whose oldest waiting write still does not fit the
    /// budget stays first in line (so a large write is not passed for ever by small ones);
    /// one that waits only because it holds its share of the budget goes to the back, and
    /// the others are served (it is served again as its own writes finish).
    pub(super) fn admit_write_waiters(&mut self) {
        // Each session is looked at most once per call: one over its share rotates.
        let mut turns = self.budgets.waiters.len();
        while let Some(&k) = self.budgets.waiters.front() {
            if turns == 0 {
                return;
            }
            turns -= 1;
            let b = &self.budgets.write;
            if b.used_bytes() != 0 && b.used_bytes() >= b.limit_bytes() {
                return;
            }
            let Some(c) = self.conns.get_mut(k) else {
                self.budgets.waiters.pop_front();
                continue;
            };
            let Phase::Ffp(s) = &mut c.phase else {
                self.budgets.waiters.pop_front();
                continue;
            };
            if c.closing || !s.writes_waiting() {
                self.budgets.waiters.pop_front();
                continue;
            }
            let before = s.out.len();
            let admitted = s.admit_waiting_writes();
            if s.out.len() != before {
                self.mark(k);
            }
            match admitted {
                Ok(()) => {
                    self.budgets.waiters.pop_front();
                }
                Err(NoRoom::Budget) => return,
                Err(NoRoom::Share) => self.budgets.waiters.rotate_left(1),
            }
        }
    }
}
