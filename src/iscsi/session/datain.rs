//! A task's answer (RFC 7143 §11.4, §11.7): Data-In PDUs cut to MaxRecvDataSegmentLength
//! and MaxBurstLength, the status collapsed into the last one when it can be, else a SCSI
//! Response carrying sense and residuals.

use super::Session;
use crate::iscsi::pdu::Bhs;
use crate::iscsi::serial::DataSn;
use crate::iscsi::stats::{IoDir, LatencyMark};
use crate::iscsi::task::{Task, TaskRef, TaskState};
use crate::iscsi::tx::Payload;
use crate::scsi::{DataIn, Response, ScsiStatus};

impl Session {
    /// Delivers the SCSI layer's response for a task: Data-In with phase-collapsed status
    /// when possible, else Data-In then SCSI Response with sense (RFC 7143 §11.4, §11.7).
    /// Returns the task (for accounting) unless it was aborted meanwhile.
    /// `scsi_out_len` is the Data-Out length the CDB itself asked for (writes), so residuals
    /// compare what the command needed with the Expected Data Transfer Length.
    pub fn finish(
        &mut self,
        r: TaskRef,
        resp: Response,
        scsi_out_len: Option<u64>,
    ) -> Option<Task> {
        let t = self.remove_task(r)?;
        self.release_window(&t);
        if self.writes_waiting() {
            // Its buffer went back to the budget: a waiting write of this session may go.
            // What still waits stays in the shard's queue of waiting sessions.
            let _ = self.admit_waiting_writes();
        }
        if t.state == TaskState::Aborted {
            return None;
        }
        let status = resp.status as u8;
        let counted = self.stats.done(
            t.lun,
            t.read,
            t.write,
            t.expected_len,
            resp.status == ScsiStatus::Good,
        );
        let mark = IoDir::of_opcode(t.cdb[0])
            .filter(|_| counted)
            .map(|dir| LatencyMark {
                arrived_ns: t.arrived_ns,
                lun: t.lun,
                dir,
            });
        let expected = t.expected_len as i64;
        let data_len = resp.data.len();
        let mut send_len = if t.read {
            data_len.min(t.expected_len as usize)
        } else {
            0
        };
        // Residual (RFC 7143 §11.4.5): for reads, what the command produced vs. expected; for
        // writes, what the initiator offered vs. what the command needed.
        let residual = if t.read {
            expected - data_len as i64
        } else if t.write {
            scsi_out_len
                .map(|l| expected - i64::try_from(l).unwrap_or(i64::MAX))
                .unwrap_or(0)
        } else {
            0
        };
        let collapse = resp.sense.is_empty()
            && matches!(resp.status, ScsiStatus::Good | ScsiStatus::ConditionMet)
            && send_len > 0;
        if resp.status == ScsiStatus::CheckCondition && !t.read {
            send_len = 0;
        }
        let mut data_in_pdus = 0;
        if send_len > 0 {
            data_in_pdus = self.queue_data_in(
                &t,
                resp.data,
                send_len,
                if collapse {
                    Some((status, residual))
                } else {
                    None
                },
            );
        }
        if !collapse {
            let mut bhs = Bhs::scsi_response(t.itt, status, residual);
            // ExpDataSN: the Data-In PDUs this task took (RFC 7143 §11.4.8), as cut above:
            // at burst ends too, so not len / MaxRecvDataSegmentLength when MaxBurstLength
            // is not a multiple of it.
            bhs.0[36..40].copy_from_slice(&data_in_pdus.to_be_bytes());
            let payload = if resp.sense.is_empty() {
                Payload::None
            } else {
                let mut v = Vec::with_capacity(2 + resp.sense.len());
                v.extend_from_slice(&(resp.sense.len() as u16).to_be_bytes());
                v.extend_from_slice(&resp.sense);
                Payload::Owned(v)
            };
            self.queue(bhs, payload);
        }
        // The status went out last: collapsed into the final Data-In, or the SCSI Response.
        if let (Some(m), Some(p)) = (mark, self.out.back_mut()) {
            p.mark = Some(m);
        }
        Some(t)
    }

    /// Queues the Data-In PDUs of `len` bytes; returns how many.
    fn queue_data_in(
        &mut self,
        t: &Task,
        data: DataIn,
        len: usize,
        status: Option<(u8, i64)>,
    ) -> u32 {
        let seg_max = self.params.max_xmit_data.max(512) as usize;
        let burst = self.params.max_burst.max(512) as usize;
        let mut off = 0usize;
        let mut sn = 0u32;
        let mut owned: Option<Vec<u8>> = None;
        let buf = match data {
            DataIn::Buf(b) => Some(b),
            DataIn::Bytes(v) => {
                owned = Some(v);
                None
            }
            DataIn::None => None,
        };
        while off < len {
            let seg = (len - off).min(seg_max).min(burst - off % burst);
            let last = off + seg == len;
            let end_of_burst = (off + seg) % burst == 0;
            let bhs = Bhs::data_in(
                t.itt,
                t.lun,
                DataSn(sn),
                off as u32,
                last || end_of_burst,
                if last { status } else { None },
            );
            let payload = match (&buf, &mut owned) {
                (Some(b), _) => Payload::Buf {
                    buf: b.clone(),
                    offset: off,
                    len: seg,
                },
                (None, Some(v)) if off == 0 && last => {
                    v.truncate(seg);
                    Payload::Owned(std::mem::take(v))
                }
                (None, Some(v)) => Payload::Owned(v[off..off + seg].to_vec()),
                (None, None) => Payload::None,
            };
            self.queue(bhs, payload);
            off += seg;
            sn += 1;
        }
        sn
    }
}
