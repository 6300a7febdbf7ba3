//! Write data arriving (RFC 7143 §11.7, §11.8): R2Ts issued up to MaxOutstandingR2T, each
//! at most MaxBurstLength; Data-Out PDUs placed only where an R2T or the unsolicited window
//! asked for them, in order, with their DataSN checked; the task handed on when all is here.

use super::writebuf::grow;
use super::Session;
use crate::iscsi::ids::Ttt;
use crate::iscsi::pdu::{Bhs, DataOut, RejectReason, BHS_LEN};
use crate::iscsi::serial::DataSn;
use crate::iscsi::task::{R2t, TaskRef, TaskState, TaskTable, MAX_R2T_PER_TASK};
use crate::iscsi::tx::Payload;
use crate::scsi::error::CmdError;
use crate::scsi::Response;

impl Session {
    /// A task whose CmdSN has been reached: ready at once, or solicit its data.
    pub(super) fn start_data_phase(&mut self, r: TaskRef) {
        let Some(t) = self.tasks.get_mut(r) else {
            return;
        };
        if t.data_got >= t.data_want {
            self.data_complete(r);
            return;
        }
        if t.unsolicited_got < t.unsolicited_end {
            // Unsolicited Data-Out may come at any moment (InitialR2T=No): room for it now.
            let _ = grow(t, &self.pool, &mut self.budget, true);
        } else if !self.wait_buffer.is_empty()
            || grow(t, &self.pool, &mut self.budget, false).is_err()
        {
            // No R2T until the shard's write budget has room (behind earlier waiters).
            t.state = TaskState::WaitBuffer;
            self.wait_buffer.push_back(r);
            return;
        }
        t.state = TaskState::ReceivingData;
        self.send_r2ts(r);
    }

    /// All of a task's Data-Out is here: queue it for the SCSI layer, or, when a Data-Out PDU
    /// came out of sequence, end it with CHECK CONDITION, ABORTED COMMAND, PROTOCOL SERVICE
    /// CRC ERROR. RFC 7143 §7.9: an out-of-order DataSN means the target lost data PDUs to a
    /// digest error, handled as in §7.8.2; at ErrorRecoveryLevel 0 there is no recovery R2T,
    /// so option b applies: terminate the task with that iSCSI condition (§11.4.7.2) once
    /// all its data has arrived.
    fn data_complete(&mut self, r: TaskRef) {
        let Some(t) = self.tasks.get_mut(r) else {
            return;
        };
        t.r2ts.clear();
        if t.data_error {
            t.state = TaskState::Executing;
            let resp = Response::error(CmdError::ProtocolServiceCrc, false);
            self.finish(r, resp, None);
            return;
        }
        t.state = TaskState::Ready;
        self.ready.push_back(r);
    }

    /// Issues R2Ts up to MaxOutstandingR2T, each at most MaxBurstLength (RFC 7143 §11.8).
    pub(super) fn send_r2ts(&mut self, r: TaskRef) {
        let max_out = (self.params.max_outstanding_r2t as usize).min(MAX_R2T_PER_TASK);
        let max_burst = self.params.max_burst.max(512);
        let ttt = TaskTable::ttt_for(r);
        let mut new = Vec::new();
        if let Some(t) = self.tasks.get_mut(r) {
            // New R2Ts give the initiator the whole deadline to answer them.
            t.stalled_secs = 0;
            while t.r2ts.len() < max_out && t.next_r2t_offset < t.data_want {
                let len = (t.data_want - t.next_r2t_offset).min(max_burst);
                let r2t = R2t {
                    ttt,
                    offset: t.next_r2t_offset,
                    len,
                    received: 0,
                    next_data_sn: 0,
                };
                t.r2ts.push(r2t);
                new.push((t.itt, t.lun, DataSn(t.r2t_sn), r2t));
                t.r2t_sn = t.r2t_sn.wrapping_add(1);
                t.next_r2t_offset += len;
            }
        }
        for (itt, lun, sn, r2t) in new {
            self.queue(
                Bhs::r2t(itt, lun, r2t.ttt, sn, r2t.offset, r2t.len),
                Payload::None,
            );
        }
    }

    pub(super) fn on_data_out(&mut self, d: &DataOut, data: &[u8], bhs: &[u8; BHS_LEN]) {
        let r = if d.ttt == Ttt::RESERVED {
            self.tasks.find_itt(d.itt)
        } else {
            self.tasks
                .from_ttt(d.ttt)
                .filter(|r| self.tasks.get(*r).is_some_and(|t| t.itt == d.itt))
        };
        // Data for a task that is gone (aborted, or an unknown tag): dropped.
        let Some(r) = r else { return };
        let Some(t) = self.tasks.get_mut(r) else {
            return;
        };
        if !matches!(
            t.state,
            TaskState::ReceivingData | TaskState::WaitCmdSn | TaskState::WaitBuffer
        ) {
            return;
        }
        let off = d.buffer_offset;
        let end = off.checked_add(data.len() as u32);
        // DataPDUInOrder=Yes is always the outcome (tgt ORs it, RFC 7143 §13.19), so each
        // PDU must continue its sequence exactly where the last one ended. That makes the byte
        // counts below exact: a repeated or skipped range can never complete a task with holes
        // (which would hold a recycled buffer's old bytes).
        let window_ok = match end {
            None => false,
            Some(end) if d.ttt == Ttt::RESERVED => {
                // Unsolicited Data-Out only with InitialR2T=No, inside FirstBurstLength.
                !self.params.initial_r2t && off == t.unsolicited_got && end <= t.unsolicited_end
            }
            Some(end) => t
                .r2ts
                .iter()
                .any(|x| x.ttt == d.ttt && off == x.offset + x.received && end <= x.offset + x.len),
        };
        if !window_ok {
            // Data outside what was asked for: a protocol error (RFC 7143 §11.7.5). The task
            // can no longer complete correctly, so end it with a Reject and drop it.
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        // DataSN check (RFC 7143 §11.7.4): numbered from 0 within the unsolicited sequence or
        // within each R2T's sequence. A wrong one marks the task failed (see data_complete);
        // its data still counts, so the task ends when the initiator has sent everything.
        let expected_sn = if d.ttt == Ttt::RESERVED {
            Some(&mut t.unsol_data_sn)
        } else {
            t.r2ts
                .iter_mut()
                .find(|x| off >= x.offset && off < x.offset + x.len)
                .map(|x| &mut x.next_data_sn)
        };
        match expected_sn {
            Some(sn) if *sn == d.data_sn.0 => *sn = sn.wrapping_add(1),
            Some(sn) => {
                *sn = sn.wrapping_add(1);
                t.data_error = true;
            }
            None => t.data_error = true,
        }
        // Progress: the Data-Out deadline counts again from here (see `deadline`).
        t.stalled_secs = 0;
        if d.ttt == Ttt::RESERVED {
            // Unsolicited data of a task still held behind a CmdSN gap: room for it now.
            let _ = grow(t, &self.pool, &mut self.budget, true);
        }
        if let Some(buf) = t.data.as_mut() {
            let s = off as usize;
            let e = (s + data.len()).min(buf.len());
            if s < e {
                buf.as_mut_slice()[s..e].copy_from_slice(&data[..e - s]);
            }
        }
        t.data_got = t.data_got.saturating_add(data.len() as u32);
        if d.ttt == Ttt::RESERVED {
            t.unsolicited_got += data.len() as u32;
        }
        let mut r2t_done = false;
        if d.ttt != Ttt::RESERVED {
            if let Some(x) = t
                .r2ts
                .iter_mut()
                .find(|x| off >= x.offset && off < x.offset + x.len)
            {
                x.received += data.len() as u32;
                r2t_done = x.received >= x.len || d.final_;
            }
            if r2t_done {
                t.r2ts.retain(|x| x.received < x.len);
            }
        }
        if t.state == TaskState::ReceivingData && t.data_got >= t.data_want {
            self.data_complete(r);
        } else if r2t_done && t.state == TaskState::ReceivingData {
            self.send_r2ts(r);
        }
    }
}
