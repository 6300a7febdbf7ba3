//! SCSI Command PDUs entering a session (RFC 7143 §11.3): the command window decides when
//! a command counts, the immediate-data rules (§13.10, §13.14) are checked, and a task is
//! made with its write buffer and unsolicited-data bounds.

use super::window::Admit;
use super::{Kind, Session};
use crate::iscsi::pdu::{RejectReason, ScsiCmd, BHS_LEN};
use crate::iscsi::task::{Task, TaskState, MAX_WRITE_BYTES};

impl Session {
    pub(super) fn on_scsi_cmd(
        &mut self,
        c: &ScsiCmd,
        ahs: &[u8],
        data: &[u8],
        bhs: &[u8; BHS_LEN],
        now_ns: u64,
    ) {
        let admit = self.window.admit(c.immediate, c.cmd_sn);
        if admit == Admit::Ignore {
            return;
        }
        // A command rejected below still uses up its CmdSN (see `Session::use_cmd_sn`).
        if self.kind == Kind::Discovery {
            // RFC 7143 §4.3: only text, logout and NOP in discovery sessions.
            self.reject_cmd(RejectReason::ProtocolError, bhs, c, admit);
            return;
        }
        if self.tasks.has_itt(c.itt) {
            self.reject_cmd(RejectReason::TaskInProgress, bhs, c, admit);
            return;
        }
        // Immediate data rules (RFC 7143 §13.10/§13.14): only with ImmediateData=Yes, at most
        // FirstBurstLength, never more than the expected length.
        if !data.is_empty()
            && (!c.write
                || !self.params.immediate_data
                || data.len() as u32 > self.params.first_burst)
        {
            self.reject_cmd(RejectReason::ProtocolError, bhs, c, admit);
            return;
        }
        let cdb_ext = parse_ext_cdb(ahs);
        let data_want = if c.write {
            c.expected_len.min(MAX_WRITE_BYTES)
        } else {
            0
        };
        let unsolicited_end = if !c.write {
            0
        } else if self.params.initial_r2t {
            data.len() as u32
        } else {
            self.params
                .first_burst
                .min(data_want)
                .max(data.len() as u32)
        }
        .min(data_want);
        // Only the bytes that came are buffered now, never the expected length: the full
        // buffer is taken from the write budget when the rest is solicited (see writebuf).
        let mut buf = None;
        let got = data.len().min(data_want as usize);
        let mut buf_bytes = 0;
        let mut whole = false;
        if got > 0 {
            // In order, with room and nobody waiting: the whole buffer at once, so the
            // immediate data is copied only once.
            whole = got < data_want as usize
                && admit == Admit::Now
                && self.wait_buffer.is_empty()
                && self.budget.try_take(u64::from(data_want)).is_ok();
            buf_bytes = if whole { data_want as usize } else { got };
            if !whole {
                self.budget.force_take(got as u64);
            }
            let mut b = self.pool.alloc(buf_bytes);
            b.as_mut_slice()[..got].copy_from_slice(&data[..got]);
            buf = Some(b);
        }
        let (got, buf_bytes) = (got as u32, buf_bytes as u32);
        let task = Task {
            itt: c.itt,
            lun: c.lun,
            cdb: c.cdb,
            cdb_ext,
            attr: c.attr,
            read: c.read,
            write: c.write,
            immediate: c.immediate,
            expected_len: c.expected_len,
            cmd_sn: c.cmd_sn,
            state: TaskState::WaitCmdSn,
            data: buf,
            buf_bytes,
            data_want,
            data_got: got,
            unsolicited_end,
            unsolicited_got: got,
            next_r2t_offset: unsolicited_end,
            r2t_sn: 0,
            r2ts: Vec::new(),
            unsol_data_sn: 0,
            data_error: false,
            generation: 0,
            arrived_ns: now_ns,
            stalled_secs: 0,
            share_bytes: if whole { buf_bytes } else { 0 },
        };
        let Some(r) = self.tasks.insert(task) else {
            // The task never existed: the budget its immediate data took goes back.
            self.budget
                .give_back(u64::from(buf_bytes), if whole { buf_bytes } else { 0 });
            self.reject_cmd(RejectReason::OutOfResources, bhs, c, admit);
            return;
        };
        match admit {
            Admit::Now if c.immediate => self.start_data_phase(r),
            Admit::Now => self.delivered(Some(r)),
            Admit::Ahead => self.window.hold(c.cmd_sn, r),
            Admit::Ignore => unreachable!("returned above"),
        }
    }
}

impl Session {
    /// Rejects a SCSI Command PDU inside the window; its CmdSN is used up all the same.
    fn reject_cmd(&mut self, reason: RejectReason, bhs: &[u8; BHS_LEN], c: &ScsiCmd, admit: Admit) {
        self.use_cmd_sn(admit, c.immediate, c.cmd_sn);
        self.reject(reason, bhs);
    }
}

/// The extended CDB bytes from an AHS of type 1 (RFC 7143 §11.3.4), if present and sane.
fn parse_ext_cdb(ahs: &[u8]) -> Option<Box<[u8]>> {
    let mut at = 0usize;
    while at + 4 <= ahs.len() {
        let len = usize::from(u16::from_be_bytes([ahs[at], ahs[at + 1]]));
        let kind = ahs[at + 2];
        let body = at + 3;
        let end = body + len;
        if end > ahs.len() {
            return None;
        }
        if kind == 1 && len > 1 {
            // The first body byte is reserved; the rest are CDB bytes 16.. .
            return Some(ahs[body + 1..end].to_vec().into_boxed_slice());
        }
        at = end.div_ceil(4) * 4;
    }
    None
}
