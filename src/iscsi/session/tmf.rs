//! Task management (RFC 7143 §11.5, §11.6): ABORT TASK with its "considered received" rule,
//! task set and LUN-wide aborts, target resets, and the aborting of tasks in any state.

use super::{CloseAfter, Event, Session};
use crate::iscsi::pdu::{Bhs, TaskMgmt, TmfFunction};
use crate::iscsi::task::{Task, TaskRef, TaskState};
use crate::iscsi::tx::Payload;

impl Session {
    pub(super) fn on_tmf(&mut self, t: &TaskMgmt) {
        if !self.take_cmd_sn(t.immediate, t.cmd_sn) {
            return;
        }
        // Responses (RFC 7143 §11.6.1): 0 complete, 1 no such task, 2 no such LUN,
        // 4 reassignment unsupported, 5 not supported.
        let response = match t.function {
            TmfFunction::AbortTask => self.abort_task(t),
            TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
                let lun = t.lun;
                self.abort_all(|task| task.lun == lun);
                0
            }
            TmfFunction::LunReset => {
                let lun = t.lun;
                self.abort_all(|task| task.lun == lun);
                self.events.push_back(Event::LunReset { lun });
                0
            }
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                self.abort_all(|_| true);
                let cold = t.function == TmfFunction::TargetColdReset;
                self.events.push_back(Event::TargetReset { cold });
                0
            }
            TmfFunction::ClearAca => 5,
            TmfFunction::TaskReassign => 4,
            TmfFunction::Other(_) => 5,
        };
        self.queue(Bhs::tmf_response(t.itt, response), Payload::None);
        if self.writes_waiting() {
            // Aborted tasks gave their write buffers back to the budget: a write waiting for
            // room may go now (only `finish` admitted them before, so a session whose
            // buffer-holding writes were all aborted never sent its waiting writes an R2T).
            // What still waits stays in the shard's queue of waiting sessions.
            let _ = self.admit_waiting_writes();
        }
        if t.function == TmfFunction::TargetColdReset {
            self.close = Some(CloseAfter::Flush);
        }
    }

    fn abort_task(&mut self, t: &TaskMgmt) -> u8 {
        match self.tasks.find_itt(t.referenced_itt) {
            Some(r) => {
                self.abort_one(r);
                0
            }
            None => {
                // RFC 7143 §11.5.1 b/c: a RefCmdSN inside the valid CmdSN window
                // [ExpCmdSN, MaxCmdSN] (a command not received yet) and below the TMF's own
                // CmdSN is "considered received": function complete. A RefCmdSN below
                // ExpCmdSN names a command already received and finished: the task does not
                // exist (libiscsi's AbortTaskSimpleAsync counts a GOOD write plus "function
                // complete" as a failure).
                let in_window =
                    !t.ref_cmd_sn.lt(self.window.exp()) && !t.ref_cmd_sn.gt(self.window.max());
                if in_window && t.ref_cmd_sn.lt(t.cmd_sn) {
                    0
                } else {
                    1
                }
            }
        }
    }

    fn abort_one(&mut self, r: TaskRef) {
        let Some(t) = self.tasks.get_mut(r) else {
            return;
        };
        match t.state {
            TaskState::Aborted => {}
            TaskState::Executing => {
                t.state = TaskState::Aborted;
                self.events.push_back(Event::Cancel { task: r });
            }
            TaskState::WaitCmdSn => {
                // Never delivered: its CmdSN stays used, so ExpCmdSN can pass it.
                self.window.drop_held(r);
                self.remove_task(r);
            }
            _ => {
                let t = self.remove_task(r).expect("task exists");
                self.release_window(&t);
                self.ready.retain(|x| *x != r);
            }
        }
    }

    pub(super) fn abort_all(&mut self, pred: impl Fn(&Task) -> bool) {
        for r in self.tasks.refs() {
            if self.tasks.get(r).is_some_and(&pred) {
                self.abort_one(r);
            }
        }
    }

    /// Ends every task (connection closing): returns how many were still executing, whose
    /// completions will be discarded.
    pub fn abort_everything(&mut self) {
        self.abort_all(|_| true);
    }
}
