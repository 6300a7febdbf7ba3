//! The Data-Out deadline (issue 11): a write holds bytes of the shard's write budget (see
//! `writebuf`) from its first R2T until all its data is here. An initiator that takes R2Ts
//! and never sends the Data-Out would keep them for as long as its connection lasts, and
//! with them every other writer of the shard that waits for room: one silent session could
//! stall all of them. So a task that holds budget bytes while it waits on the initiator (its
//! solicited or unsolicited Data-Out, or a command filling a CmdSN gap before it) and sees
//! no progress for the deadline (`tgtd --dataout-timeout`, 20 s) makes the owner drop the
//! connection, which aborts its tasks and gives their bytes back.
//!
//! Why the connection and not the task: RFC 7143 §11.4 lets the target answer a command
//! early only after "a data PDU with the F bit set in the last expected sequence", so a
//! CHECK CONDITION cannot end a task whose data is still outstanding; and at
//! ErrorRecoveryLevel 0, the only level negotiated here, recovery from lost Data-Out is
//! session recovery (§7.1.5: the connection is dropped and the initiator logs in again,
//! retrying its commands). Linux's LIO does the same at level 0 when its DataOut timer runs
//! out. The deadline counts from the last progress, not from the command, so a slow but
//! moving write is never cut; an initiator that stops sending loses its connection only.

use super::Session;
use crate::iscsi::ids::Itt;
use crate::iscsi::task::{Task, TaskState};

/// What the deadline found stalled: the task, how many bytes of budget it held, and for how
/// many seconds it saw no progress. Displayed as the reason the connection is closed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stalled {
    pub itt: Itt,
    pub held_bytes: u32,
    pub secs: u32,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Data-Out deadline: the write with ITT {:#010x} held {} bytes of the write budget \
             with no data for {} s",
            self.itt.0, self.held_bytes, self.secs
        )
    }
}

/// Whether `t` holds write-budget bytes while only the initiator can move it on.
fn waits_on_initiator(t: &Task) -> bool {
    t.buf_bytes > 0 && matches!(t.state, TaskState::ReceivingData | TaskState::WaitCmdSn)
}

impl Session {
    /// One second of the Data-Out deadline with a limit of `limit_secs` (0: off): counts a
    /// second for every task that holds budget and waits on the initiator, and returns the
    /// first that has waited `limit_secs` without progress: then the owner must drop the
    /// connection.
    pub fn dataout_tick(&mut self, limit_secs: u32) -> Option<Stalled> {
        if limit_secs == 0 || self.tasks.is_empty() {
            return None;
        }
        let mut stalled = None;
        for t in self.tasks.iter_mut() {
            if !waits_on_initiator(t) {
                t.stalled_secs = 0;
                continue;
            }
            t.stalled_secs = t.stalled_secs.saturating_add(1);
            if stalled.is_none() && u32::from(t.stalled_secs) >= limit_secs {
                stalled = Some(Stalled {
                    itt: t.itt,
                    held_bytes: t.buf_bytes,
                    secs: limit_secs,
                });
            }
        }
        stalled
    }
}
