//! The full feature phase of one session (one connection: MaxConnections=1), as a sans-IO
//! state machine: PDUs in, PDUs out, and tasks handed to the SCSI layer when all their data
//! is here (RFC 7143 §3.2, §4.2, §11).
//!
//! It owns the command window (ExpCmdSN/MaxCmdSN with RFC 1982 arithmetic), StatSN, the task
//! table, R2T and Data-Out bookkeeping, Data-In generation with phase-collapsed status, task
//! management, NOP-In/Out and logout. The shard feeds it parsed PDUs, runs the tasks it
//! releases, reports their SCSI responses back, and writes out what it queued.

use super::ids::{Cid, Isid, Itt, Tsih, Ttt};
use super::pdu::{
    Bhs, DataOut, LogoutReason, LogoutReq, NopOut, RejectReason, Request, ScsiCmd, SeqFields,
    TaskMgmt, TextReq, TmfFunction, BHS_LEN,
};
use super::rx::{InPdu, RxLimits};
use super::serial::{CmdSn, DataSn, StatSn};
use super::stats::{IoDir, LatencyMark, SessionStats};
use super::task::{R2t, Task, TaskRef, TaskState, TaskTable, MAX_R2T_PER_TASK, MAX_WRITE_BYTES};
use super::tx::{Payload, TxPdu};
use crate::buf::BufPool;
use crate::scsi::error::CmdError;
use crate::scsi::{DataIn, Lun, NexusState, Response, ScsiStatus};
use std::collections::VecDeque;

/// Negotiated values the full feature phase runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FfpParams {
    pub header_digest: bool,
    pub data_digest: bool,
    /// Our MaxRecvDataSegmentLength: largest data segment we accept.
    pub max_recv_data: u32,
    /// The initiator's MaxRecvDataSegmentLength: largest data segment we send.
    pub max_xmit_data: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub first_burst: u32,
    pub max_burst: u32,
    pub max_outstanding_r2t: u32,
    /// Command window (MaxQueueCmd).
    pub max_queue_cmd: u32,
}

impl Default for FfpParams {
    fn default() -> Self {
        FfpParams {
            header_digest: false,
            data_digest: false,
            max_recv_data: 8192,
            max_xmit_data: 8192,
            initial_r2t: true,
            immediate_data: true,
            first_burst: 65536,
            max_burst: 262_144,
            max_outstanding_r2t: 1,
            max_queue_cmd: 512,
        }
    }
}

/// Discovery or normal (RFC 7143 §6: SessionType).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Discovery,
    Normal { tid: u32 },
}

/// Why the connection should close.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseAfter {
    /// After everything queued so far is sent (logout, fatal reject).
    Flush,
}

/// Something the session needs its owner to do that is not a plain PDU.
#[derive(Debug)]
pub enum Event {
    /// A complete Text Request (continuations joined) for the text/discovery handler;
    /// `bhs` is its header, echoed if it must be rejected.
    Text {
        req: TextReq,
        data: Vec<u8>,
        bhs: [u8; BHS_LEN],
    },
    /// A LUN-wide task management action: abort other nexuses' tasks / raise UAs as the
    /// owner sees fit (LUN RESET raises 29/03 for other nexuses; TARGET RESET likewise).
    LunReset { lun: Lun },
    /// TARGET WARM/COLD RESET.
    TargetReset { cold: bool },
}

/// Extra slots above the window for immediate commands and TMF-aborted stragglers.
const EXTRA_TASK_SLOTS: usize = 32;
/// Longest joined text request kept (RFC 7143 §6.1 lets text span PDUs).
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// One session's full-feature-phase state.
pub struct Session {
    pub kind: Kind,
    pub tsih: Tsih,
    pub cid: Cid,
    pub isid: Isid,
    pub initiator_name: String,
    pub params: FfpParams,
    pub nexus: Option<NexusState>,
    exp_cmd_sn: CmdSn,
    stat_sn: StatSn,
    tasks: TaskTable,
    /// Non-immediate tasks accepted and not finished (they occupy the window).
    window_used: u32,
    /// Tasks held in `WaitCmdSn` behind a CmdSN gap: `release_held` scans only when some are.
    held: u32,
    /// CmdSNs of held commands that a task management function aborted: received, so
    /// ExpCmdSN passes them when the gap before them fills (at most one per window slot).
    aborted_held: Vec<CmdSn>,
    /// Tasks whose data is complete, in CmdSN order, waiting for the SCSI layer.
    ready: VecDeque<TaskRef>,
    /// PDUs queued to send.
    pub out: VecDeque<TxPdu>,
    /// Events for the owner.
    pub events: VecDeque<Event>,
    /// Set when the connection must close after flushing.
    pub close: Option<CloseAfter>,
    text_buf: Vec<u8>,
    pool: BufPool,
    /// Outstanding NOP-In pings (TTT counter).
    ping_ttt: u32,
    pub pings_unanswered: u32,
    /// Seconds since the last NOP-In ping decision (counted by the shard's 1 s timer).
    pub nop_ticks: u32,
    /// Text Request handling (SendTargets, key negotiation), with its continuation state.
    pub text: crate::iscsi::discovery::TextSm,
    /// Counters for `tgtadm --op stat`.
    pub stats: SessionStats,
}

impl Session {
    /// A session entering full feature phase. `exp_cmd_sn` and `stat_sn` continue from login.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        tsih: Tsih,
        cid: Cid,
        isid: Isid,
        initiator_name: String,
        params: FfpParams,
        nexus: Option<NexusState>,
        exp_cmd_sn: CmdSn,
        stat_sn: StatSn,
        pool: BufPool,
    ) -> Session {
        Session {
            kind,
            tsih,
            cid,
            isid,
            initiator_name,
            params,
            nexus,
            exp_cmd_sn,
            stat_sn,
            tasks: TaskTable::new(params.max_queue_cmd as usize + EXTRA_TASK_SLOTS),
            window_used: 0,
            held: 0,
            aborted_held: Vec::new(),
            ready: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            close: None,
            text_buf: Vec::new(),
            pool,
            ping_ttt: 0,
            pings_unanswered: 0,
            nop_ticks: 0,
            text: crate::iscsi::discovery::TextSm::new(),
            stats: SessionStats::default(),
        }
    }

    /// Framing limits for this session's receive path.
    pub fn rx_limits(&self) -> RxLimits {
        RxLimits {
            header_digest: self.params.header_digest,
            data_digest: self.params.data_digest,
            max_data: self.params.max_recv_data,
        }
    }

    /// The window fields stamped on every outgoing PDU.
    fn max_cmd_sn(&self) -> CmdSn {
        let free = self.params.max_queue_cmd.saturating_sub(self.window_used);
        // free == 0 gives ExpCmdSN - 1: the window is closed (RFC 7143 §4.2.2.1).
        CmdSn(self.exp_cmd_sn.0.wrapping_add(free).wrapping_sub(1))
    }

    /// Current ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp_cmd_sn
    }

    /// Current MaxCmdSN.
    pub fn current_max_cmd_sn(&self) -> CmdSn {
        self.max_cmd_sn()
    }

    /// Live tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Queues a PDU, stamping StatSN (advanced when the PDU carries status) and the window.
    pub fn queue(&mut self, mut bhs: Bhs, payload: Payload) {
        let stat_sn = self.stat_sn;
        if bhs.consumes_stat_sn() {
            self.stat_sn = self.stat_sn.next();
        }
        match bhs.opcode() {
            super::pdu::op::DATA_IN => {
                self.stats.conn.datain_pdus = self.stats.conn.datain_pdus.wrapping_add(1)
            }
            super::pdu::op::SCSI_RSP => {
                self.stats.conn.rsp_pdus = self.stats.conn.rsp_pdus.wrapping_add(1)
            }
            _ => {}
        }
        bhs.set_seq(SeqFields {
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        });
        self.out.push_back(TxPdu::new(
            bhs,
            payload,
            self.params.header_digest,
            self.params.data_digest,
        ));
    }

    fn reject(&mut self, reason: RejectReason, bhs: &[u8; BHS_LEN]) {
        self.queue(Bhs::reject(reason), Payload::Owned(bhs.to_vec()));
    }

    /// Handles one received PDU. `buf` is the buffer `pdu`'s ranges index.
    pub fn on_pdu(&mut self, pdu: &InPdu, buf: &[u8], now_ns: u64) {
        if pdu.data_digest_bad {
            // RFC 7143 §7.8 / §11.17: reject the PDU; at ErrorRecoveryLevel 0 the lost data
            // cannot be recovered, so the connection ends after the Reject.
            self.reject(RejectReason::DataDigestError, &pdu.bhs);
            self.close = Some(CloseAfter::Flush);
            return;
        }
        let data = &buf[pdu.data.clone()];
        match &pdu.req {
            Request::ScsiCmd(c) => {
                self.stats.conn.cmd_pdus = self.stats.conn.cmd_pdus.wrapping_add(1);
                self.on_scsi_cmd(c, &buf[pdu.ahs.clone()], data, &pdu.bhs, now_ns)
            }
            Request::DataOut(d) => {
                self.stats.conn.dataout_pdus = self.stats.conn.dataout_pdus.wrapping_add(1);
                self.on_data_out(d, data, &pdu.bhs)
            }
            Request::NopOut(n) => self.on_nop_out(n, data),
            Request::TaskMgmt(t) => self.on_tmf(t),
            Request::Logout(l) => self.on_logout(l),
            Request::Text(t) => self.on_text(t, data, &pdu.bhs),
            Request::Login(_) => {
                // A login PDU in full feature phase is a protocol error (RFC 7143 §6.1).
                self.reject(RejectReason::ProtocolError, &pdu.bhs);
            }
            Request::Snack(_) => {
                // SNACK needs ErrorRecoveryLevel > 0, which is never negotiated here.
                self.reject(RejectReason::ProtocolError, &pdu.bhs);
            }
        }
    }

    /// Checks a non-immediate PDU's CmdSN against the window. Returns whether to accept it
    /// now (`Some(true)`), hold it (`Some(false)`, ahead of a gap), or drop it (`None`).
    fn check_cmd_sn(&mut self, immediate: bool, cmd_sn: CmdSn) -> Option<bool> {
        if immediate {
            return Some(true);
        }
        if cmd_sn == self.exp_cmd_sn {
            return Some(true);
        }
        // Out of window: silently ignored (RFC 7143 §3.2.2.1).
        if cmd_sn.lt(self.exp_cmd_sn) || cmd_sn.gt(self.max_cmd_sn()) {
            return None;
        }
        Some(false)
    }

    /// Advances ExpCmdSN past a non-SCSI PDU's CmdSN and over the held commands that are
    /// now contiguous: a NOP-Out, Text, Logout or TMF that fills a gap must start the commands
    /// queued behind it, or they wait for ever (found by the `session` fuzz target).
    fn advance_cmd_sn(&mut self) {
        self.exp_cmd_sn = self.exp_cmd_sn.next();
        self.release_held();
    }

    /// Starts the held tasks that ExpCmdSN has reached, in CmdSN order.
    fn release_held(&mut self) {
        loop {
            let exp = self.exp_cmd_sn;
            if let Some(i) = self.aborted_held.iter().position(|sn| *sn == exp) {
                self.aborted_held.swap_remove(i);
                self.exp_cmd_sn = exp.next();
                continue;
            }
            if self.held == 0 {
                break;
            }
            let Some(r) = self
                .tasks
                .find(|t| t.state == TaskState::WaitCmdSn && t.cmd_sn == exp)
            else {
                break;
            };
            self.held -= 1;
            self.exp_cmd_sn = self.exp_cmd_sn.next();
            self.start_data_phase(r);
        }
    }

    fn on_scsi_cmd(
        &mut self,
        c: &ScsiCmd,
        ahs: &[u8],
        data: &[u8],
        bhs: &[u8; BHS_LEN],
        now_ns: u64,
    ) {
        let Some(in_order) = self.check_cmd_sn(c.immediate, c.cmd_sn) else {
            return;
        };
        if self.kind == Kind::Discovery {
            // RFC 7143 §4.3: only text, logout and NOP in discovery sessions.
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        if self.tasks.has_itt(c.itt) {
            self.reject(RejectReason::TaskInProgress, bhs);
            return;
        }
        if !c.immediate && self.window_used >= self.params.max_queue_cmd {
            // The initiator overran MaxCmdSN bookkeeping; refuse without consuming CmdSN.
            self.reject(RejectReason::OutOfResources, bhs);
            return;
        }
        // Immediate data rules (RFC 7143 §13.10/§13.14): only with ImmediateData=Yes, at most
        // FirstBurstLength, never more than the expected length.
        if !data.is_empty()
            && (!c.write
                || !self.params.immediate_data
                || data.len() as u32 > self.params.first_burst)
        {
            self.reject(RejectReason::ProtocolError, bhs);
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
        let mut buf = None;
        let mut got = 0u32;
        if data_want > 0 {
            let mut b = self.pool.alloc(data_want as usize);
            let n = data.len().min(data_want as usize);
            b.as_mut_slice()[..n].copy_from_slice(&data[..n]);
            got = n as u32;
            buf = Some(b);
        }
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
        };
        let Some(r) = self.tasks.insert(task) else {
            self.reject(RejectReason::OutOfResources, bhs);
            return;
        };
        if !c.immediate {
            self.window_used += 1;
        }
        if !in_order {
            self.held += 1;
        }
        if in_order {
            if !c.immediate {
                self.advance_cmd_sn_first(r);
            } else {
                self.start_data_phase(r);
            }
        }
    }

    /// ExpCmdSN passes the command before anything it queues (an R2T) is stamped, so no PDU
    /// carries a MaxCmdSN below one already advertised (RFC 7143 §3.2.2.1; found by the
    /// `session` fuzz target). The command still starts before the held ones behind it.
    fn advance_cmd_sn_first(&mut self, r: TaskRef) {
        self.exp_cmd_sn = self.exp_cmd_sn.next();
        self.start_data_phase(r);
        self.release_held();
    }

    /// A task whose CmdSN has been reached: ready at once, or solicit its data.
    fn start_data_phase(&mut self, r: TaskRef) {
        let Some(t) = self.tasks.get_mut(r) else {
            return;
        };
        if t.data_got >= t.data_want {
            self.data_complete(r);
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
    fn send_r2ts(&mut self, r: TaskRef) {
        let max_out = (self.params.max_outstanding_r2t as usize).min(MAX_R2T_PER_TASK);
        let max_burst = self.params.max_burst.max(512);
        let ttt = TaskTable::ttt_for(r);
        let mut new = Vec::new();
        if let Some(t) = self.tasks.get_mut(r) {
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

    fn on_data_out(&mut self, d: &DataOut, data: &[u8], bhs: &[u8; BHS_LEN]) {
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
        if !matches!(t.state, TaskState::ReceivingData | TaskState::WaitCmdSn) {
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

    fn on_nop_out(&mut self, n: &NopOut, data: &[u8]) {
        if n.itt == Itt::RESERVED {
            // Answer to our NOP-In ping (RFC 7143 §11.18): no response.
            self.pings_unanswered = 0;
            if !n.immediate && n.cmd_sn == self.exp_cmd_sn {
                self.advance_cmd_sn();
            }
            return;
        }
        let Some(in_order) = self.check_cmd_sn(n.immediate, n.cmd_sn) else {
            return;
        };
        if !n.immediate && in_order {
            self.advance_cmd_sn();
        }
        let echo = data.len().min(self.params.max_xmit_data as usize);
        let payload = if echo == 0 {
            Payload::None
        } else {
            Payload::Owned(data[..echo].to_vec())
        };
        self.queue(Bhs::nop_in(n.itt, Ttt::RESERVED, n.lun), payload);
    }

    /// One second of the keep-alive clock for a target with `nop_interval`/`nop_count` (tgt's
    /// semantics): every `interval` seconds send a NOP-In ping (RFC 7143 §11.19, ITT reserved,
    /// a TTT the initiator must echo); returns true when more than `count` pings went
    /// unanswered and the connection should be closed.
    pub fn nop_tick(&mut self, interval: u32, count: u32) -> bool {
        if interval == 0 {
            self.nop_ticks = 0;
            return false;
        }
        self.nop_ticks += 1;
        if self.nop_ticks < interval {
            return false;
        }
        self.nop_ticks = 0;
        if self.pings_unanswered > count {
            return true;
        }
        self.ping();
        false
    }

    /// Queues a NOP-In ping (keep-alive) and counts it as unanswered until a reply.
    pub fn ping(&mut self) {
        self.ping_ttt = self.ping_ttt.wrapping_add(1) & 0x7fff_ffff;
        self.pings_unanswered += 1;
        let ttt = Ttt(self.ping_ttt);
        self.queue(Bhs::nop_in(Itt::RESERVED, ttt, Lun(0)), Payload::None);
    }

    fn on_text(&mut self, t: &TextReq, data: &[u8], bhs: &[u8; BHS_LEN]) {
        if self.check_cmd_sn(t.immediate, t.cmd_sn).is_none() {
            return;
        }
        if !t.immediate && t.cmd_sn == self.exp_cmd_sn {
            self.advance_cmd_sn();
        }
        if self.text_buf.len() + data.len() > MAX_TEXT_BYTES {
            self.text_buf.clear();
            self.reject(RejectReason::OutOfResources, bhs);
            return;
        }
        self.text_buf.extend_from_slice(data);
        if t.continue_ && !t.final_ {
            // More text follows: acknowledge with an empty response (RFC 7143 §11.10.2).
            self.queue(
                Bhs::text_response(t.itt, Ttt(0x1000), false, false),
                Payload::None,
            );
            return;
        }
        let data = std::mem::take(&mut self.text_buf);
        self.events.push_back(Event::Text {
            req: t.clone(),
            data,
            bhs: *bhs,
        });
    }

    fn on_logout(&mut self, l: &LogoutReq) {
        if self.check_cmd_sn(l.immediate, l.cmd_sn).is_none() {
            return;
        }
        if !l.immediate && l.cmd_sn == self.exp_cmd_sn {
            self.advance_cmd_sn();
        }
        // RFC 7143 §11.15.1 responses: 0 closed, 1 CID not found, 2 recovery not supported.
        let response = match l.reason {
            LogoutReason::CloseSession => 0,
            LogoutReason::CloseConnection if l.cid == self.cid => 0,
            LogoutReason::CloseConnection => 1,
            LogoutReason::RemoveForRecovery => 2,
            LogoutReason::Other(_) => 2,
        };
        self.queue(Bhs::logout_response(l.itt, response, 2, 20), Payload::None);
        if response == 0 {
            self.abort_all(|_| true);
            self.close = Some(CloseAfter::Flush);
        }
    }

    fn on_tmf(&mut self, t: &TaskMgmt) {
        let Some(in_order) = self.check_cmd_sn(t.immediate, t.cmd_sn) else {
            return;
        };
        if !t.immediate && in_order {
            self.advance_cmd_sn();
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
                    !t.ref_cmd_sn.lt(self.exp_cmd_sn) && !t.ref_cmd_sn.gt(self.max_cmd_sn());
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
            TaskState::Executing | TaskState::Aborted => t.state = TaskState::Aborted,
            state => {
                if state == TaskState::WaitCmdSn && !t.immediate {
                    // Received, only not yet in order: its CmdSN still counts (found by the
                    // `session` fuzz target: ExpCmdSN stopped at it for ever).
                    self.held = self.held.saturating_sub(1);
                    self.aborted_held.push(t.cmd_sn);
                }
                let t = self.tasks.remove(r).expect("task exists");
                self.release_window(&t);
                self.ready.retain(|x| *x != r);
            }
        }
    }

    fn abort_all(&mut self, pred: impl Fn(&Task) -> bool) {
        for r in self.tasks.refs() {
            if self.tasks.get(r).is_some_and(&pred) {
                self.abort_one(r);
            }
        }
    }

    fn release_window(&mut self, t: &Task) {
        if !t.immediate {
            self.window_used = self.window_used.saturating_sub(1);
        }
    }

    /// The next task ready for the SCSI layer, marked executing.
    pub fn next_ready(&mut self) -> Option<TaskRef> {
        while let Some(r) = self.ready.pop_front() {
            if let Some(t) = self.tasks.get_mut(r) {
                if t.state == TaskState::Ready {
                    t.state = TaskState::Executing;
                    return Some(r);
                }
            }
        }
        None
    }

    /// The task behind a handle.
    pub fn task(&self, r: TaskRef) -> Option<&Task> {
        self.tasks.get(r)
    }

    /// The task and the nexus state, for building the SCSI layer's context.
    pub fn task_and_nexus(&mut self, r: TaskRef) -> Option<(&Task, &mut NexusState)> {
        let t = self.tasks.get(r)?;
        let n = self.nexus.as_mut()?;
        Some((t, n))
    }

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
        let t = self.tasks.remove(r)?;
        self.release_window(&t);
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
        if send_len > 0 {
            self.queue_data_in(
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
            bhs.0[36..40]
                .copy_from_slice(&(data_pdus(send_len, self.params.max_xmit_data)).to_be_bytes());
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

    fn queue_data_in(&mut self, t: &Task, data: DataIn, len: usize, status: Option<(u8, i64)>) {
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
    }

    /// Ends every task (connection closing): returns how many were still executing, whose
    /// completions will be discarded.
    pub fn abort_everything(&mut self) {
        self.abort_all(|_| true);
    }

    /// Sends an Asynchronous Message asking the initiator to log out (RFC 7143 §11.9.1
    /// event 1), used when an admin removes the session's target.
    pub fn request_logout(&mut self) {
        self.queue(Bhs::async_message(Lun(0), 1, 0, 2, 20), Payload::None);
    }

    /// Queues a text response built by the text handler.
    pub fn send_text(&mut self, bhs: Bhs, data: Vec<u8>) {
        let payload = if data.is_empty() {
            Payload::None
        } else {
            Payload::Owned(data)
        };
        self.queue(bhs, payload);
    }
}

/// How many Data-In PDUs a response of `len` bytes took (ExpDataSN in the SCSI Response).
fn data_pdus(len: usize, seg: u32) -> u32 {
    len.div_ceil(seg.max(512) as usize) as u32
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::pdu::op;
    use crate::iscsi::rx::{next_pdu, RxStep};
    use crate::scsi::NexusId;
    use std::sync::Arc;

    fn session(params: FfpParams) -> Session {
        let nexus = NexusState::new(NexusId {
            tid: 1,
            initiator_port: Arc::from("iqn.x,i,0x000000000001"),
        });
        Session::new(
            Kind::Normal { tid: 1 },
            Tsih(1),
            Cid(0),
            Isid::default(),
            "iqn.x".into(),
            params,
            Some(nexus),
            CmdSn(10),
            StatSn(100),
            BufPool::new(),
        )
    }

    fn cmd_pdu(itt: u32, cmd_sn: u32, read: bool, write: bool, edtl: u32, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; BHS_LEN];
        b[0] = op::SCSI_CMD;
        b[1] = 0x80 | if read { 0x40 } else { 0 } | if write { 0x20 } else { 0 } | 1;
        b[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        b[9] = 1;
        b[16..20].copy_from_slice(&itt.to_be_bytes());
        b[20..24].copy_from_slice(&edtl.to_be_bytes());
        b[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
        b[32] = if write { 0x2a } else { 0x28 };
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn data_out(itt: u32, ttt: u32, offset: u32, final_: bool, data: &[u8]) -> Vec<u8> {
        data_out_sn(itt, ttt, 0, offset, final_, data)
    }

    fn data_out_sn(itt: u32, ttt: u32, sn: u32, offset: u32, final_: bool, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; BHS_LEN];
        b[36..40].copy_from_slice(&sn.to_be_bytes());
        b[0] = op::DATA_OUT;
        b[1] = if final_ { 0x80 } else { 0 };
        b[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        b[16..20].copy_from_slice(&itt.to_be_bytes());
        b[20..24].copy_from_slice(&ttt.to_be_bytes());
        b[40..44].copy_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    fn feed(s: &mut Session, wire: &[u8]) {
        match next_pdu(wire, s.rx_limits()) {
            RxStep::Pdu { pdu, len } => {
                assert_eq!(len, wire.len());
                s.on_pdu(&pdu, wire, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn good(data: DataIn) -> Response {
        Response {
            status: ScsiStatus::Good,
            sense: Vec::new(),
            data,
            effects: Vec::new(),
        }
    }

    #[test]
    fn read_gets_collapsed_data_in_and_window_moves() {
        let mut s = session(FfpParams {
            max_xmit_data: 4096,
            ..Default::default()
        });
        feed(&mut s, &cmd_pdu(1, 10, true, false, 8192, &[]));
        assert_eq!(s.exp_cmd_sn(), CmdSn(11));
        // One task outstanding: the window is one smaller.
        assert_eq!(s.current_max_cmd_sn(), CmdSn(11 + 511 - 1));
        let r = s.next_ready().expect("read is ready at once");
        s.finish(r, good(DataIn::Bytes(vec![7u8; 8192])), None);
        assert_eq!(s.out.len(), 2, "two Data-In PDUs of 4096");
        let first = s.out[0].bhs();
        let last = s.out[1].bhs();
        assert_eq!(first[0], op::DATA_IN);
        assert_eq!(first[1] & 0x81, 0, "first PDU: no F, no S");
        assert_eq!(last[1] & 0x81, 0x81, "last PDU: F and S (phase collapse)");
        assert_eq!(be32(last, 24), 100, "StatSN of the status-bearing PDU");
        assert_eq!(be32(last, 36), 1, "DataSN");
        assert_eq!(be32(last, 40), 4096, "buffer offset");
        assert_eq!(
            be32(last, 32),
            11 + 512 - 1,
            "MaxCmdSN reopened after completion"
        );
    }

    #[test]
    fn the_status_pdu_carries_the_latency_mark_and_counters_follow_tgt() {
        use crate::iscsi::stats::IoDir;
        let mut s = session(FfpParams {
            max_xmit_data: 4096,
            ..Default::default()
        });
        // A read that produces two Data-In PDUs: only the last (with the status) is marked.
        feed(&mut s, &cmd_pdu(1, 10, true, false, 8192, &[]));
        let r = s.next_ready().unwrap();
        s.stats.submitted(Lun(1), true, false, 8192);
        s.finish(r, good(DataIn::Bytes(vec![0u8; 8192])), None);
        assert_eq!(s.out.len(), 2);
        assert_eq!(s.out[0].mark, None);
        let m = s.out[1].mark.expect("status PDU marked");
        assert_eq!((m.lun, m.dir), (Lun(1), IoDir::Read));
        // A write ending in CHECK CONDITION: the SCSI Response is marked, the error counted.
        s.out.clear();
        feed(&mut s, &cmd_pdu(2, 11, false, true, 512, &[0u8; 512]));
        let r = s.next_ready().unwrap();
        s.stats.submitted(Lun(1), false, true, 512);
        let check = Response {
            status: ScsiStatus::CheckCondition,
            sense: vec![0x70, 0, 5],
            data: DataIn::None,
            effects: Vec::new(),
        };
        s.finish(r, check, Some(512));
        assert_eq!(s.out.len(), 1);
        assert_eq!(s.out[0].bhs()[0], op::SCSI_RSP);
        assert_eq!(s.out[0].mark.map(|m| m.dir), Some(IoDir::Write));
        let c = s.stats.lus[0].1;
        assert_eq!((c.rd_done_bytes, c.rd_done_cmds), (8192, 1));
        assert_eq!((c.wr_done_bytes, c.wr_done_cmds, c.errs), (512, 1, 1));
        let k = s.stats.conn;
        assert_eq!((k.cmd_pdus, k.datain_pdus, k.rsp_pdus), (2, 2, 1));
        // A command to a LUN never submitted (no such LU) is neither counted nor timed.
        s.out.clear();
        let mut pdu = cmd_pdu(3, 12, true, false, 512, &[]);
        pdu[9] = 7;
        feed(&mut s, &pdu);
        let r = s.next_ready().unwrap();
        s.finish(r, good(DataIn::Bytes(vec![0u8; 512])), None);
        assert!(s.out.iter().all(|p| p.mark.is_none()));
        assert_eq!(s.stats.lus.len(), 1);
    }

    #[test]
    fn short_read_reports_underflow_residual() {
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(1, 10, true, false, 4096, &[]));
        let r = s.next_ready().unwrap();
        s.finish(r, good(DataIn::Bytes(vec![1u8; 512])), None);
        let b = s.out[0].bhs();
        assert_eq!(b[1] & 0x03, 0x03, "S and U bits");
        assert_eq!(be32(b, 44), 4096 - 512);
    }

    #[test]
    fn write_with_immediate_data_then_r2t() {
        let mut s = session(FfpParams {
            max_burst: 4096,
            max_outstanding_r2t: 1,
            ..Default::default()
        });
        let imm = vec![1u8; 1024];
        feed(&mut s, &cmd_pdu(5, 10, false, true, 9216, &imm));
        assert!(s.next_ready().is_none(), "data still missing");
        assert_eq!(s.out.len(), 1);
        let r2t = s.out.pop_front().unwrap();
        let b = r2t.bhs();
        assert_eq!(b[0], op::R2T);
        assert_eq!(be32(b, 40), 1024, "R2T starts after the immediate data");
        assert_eq!(be32(b, 44), 4096, "limited by MaxBurstLength");
        let ttt = be32(b, 20);
        feed(&mut s, &data_out(5, ttt, 1024, false, &vec![2u8; 2048]));
        assert!(s.out.is_empty(), "no new R2T mid-burst");
        feed(
            &mut s,
            &data_out_sn(5, ttt, 1, 3072, true, &vec![3u8; 2048]),
        );
        let r2 = s.out.pop_front().expect("second R2T");
        assert_eq!(be32(r2.bhs(), 40), 5120);
        assert_eq!(be32(r2.bhs(), 44), 4096);
        assert_eq!(be32(r2.bhs(), 36), 1, "R2TSN");
        let ttt2 = be32(r2.bhs(), 20);
        feed(&mut s, &data_out(5, ttt2, 5120, true, &vec![4u8; 4096]));
        let r = s.next_ready().expect("all data in");
        let t = s.task(r).unwrap();
        assert_eq!(t.data_out().len(), 9216);
        assert_eq!(t.data_out()[0], 1);
        assert_eq!(t.data_out()[1024], 2);
        assert_eq!(t.data_out()[5120], 4);
        s.finish(r, good(DataIn::None), None);
        let rsp = s.out.pop_front().unwrap();
        assert_eq!(rsp.bhs()[0], op::SCSI_RSP);
        assert_eq!(rsp.bhs()[3], 0);
    }

    #[test]
    fn an_r2t_never_advertises_a_smaller_max_cmd_sn() {
        // Found by the `session` fuzz target: the R2T for an in-order write was stamped before
        // ExpCmdSN moved past the write, so its MaxCmdSN was one below the previous PDU's.
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(1, 10, false, false, 0, &[]));
        let r = s.next_ready().unwrap();
        s.finish(r, good(DataIn::None), None);
        let rsp = s.out.pop_front().unwrap();
        let max_before = be32(rsp.bhs(), 32);
        feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[]));
        let r2t = s.out.pop_front().expect("R2T");
        assert_eq!(r2t.bhs()[0], op::R2T);
        assert_eq!(be32(r2t.bhs(), 28), 12, "ExpCmdSN already past the write");
        assert!(be32(r2t.bhs(), 32) >= max_before, "MaxCmdSN stepped back");
    }

    #[test]
    fn a_nop_out_filling_a_cmd_sn_gap_starts_the_commands_behind_it() {
        // Found by the `session` fuzz target: ExpCmdSN moved past a NOP-Out without looking
        // at held commands, so the one queued at the next CmdSN never started.
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(1, 11, false, false, 0, &[]));
        assert!(s.next_ready().is_none(), "CmdSN 11 waits for 10");
        let mut nop = vec![0u8; BHS_LEN];
        nop[0] = op::NOP_OUT;
        nop[1] = 0x80;
        nop[16..20].copy_from_slice(&7u32.to_be_bytes());
        nop[20..24].copy_from_slice(&[0xff; 4]);
        nop[24..28].copy_from_slice(&10u32.to_be_bytes());
        feed(&mut s, &nop);
        assert_eq!(s.exp_cmd_sn(), CmdSn(12));
        let r = s.next_ready().expect("the held command started");
        assert_eq!(s.task(r).unwrap().cmd_sn, CmdSn(11));
    }

    #[test]
    fn an_aborted_held_command_still_lets_exp_cmd_sn_pass() {
        // Found by the `session` fuzz target: ABORT TASK SET removed a command held behind a
        // CmdSN gap, and when the gap filled ExpCmdSN stopped at the aborted command's CmdSN,
        // so every later command waited for ever.
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(1, 11, false, false, 0, &[]));
        let mut tmf = vec![0u8; BHS_LEN];
        tmf[0] = 0x40 | op::TASK_MGMT;
        tmf[1] = 0x80 | 2;
        tmf[9] = 1;
        tmf[16..20].copy_from_slice(&20u32.to_be_bytes());
        tmf[24..28].copy_from_slice(&10u32.to_be_bytes());
        feed(&mut s, &tmf);
        assert_eq!(s.task_count(), 0, "aborted");
        feed(&mut s, &cmd_pdu(2, 10, false, false, 0, &[]));
        assert_eq!(s.exp_cmd_sn(), CmdSn(12), "past the aborted CmdSN 11");
        feed(&mut s, &cmd_pdu(3, 12, false, false, 0, &[]));
        let mut cmd_sns = Vec::new();
        while let Some(r) = s.next_ready() {
            cmd_sns.push(s.task(r).unwrap().cmd_sn);
        }
        assert_eq!(cmd_sns, vec![CmdSn(10), CmdSn(12)]);
    }

    #[test]
    fn data_outside_r2t_is_rejected() {
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(5, 10, false, true, 4096, &[]));
        let r2t = s.out.pop_front().unwrap();
        let ttt = be32(r2t.bhs(), 20);
        feed(&mut s, &data_out(5, ttt, 4000, true, &[0u8; 200]));
        assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
        // Unsolicited data is not allowed with InitialR2T=Yes.
        feed(&mut s, &data_out(5, 0xffff_ffff, 0, true, &[0u8; 100]));
        assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
    }

    /// RFC 7143 §7.9 / §7.8.2 b: a Data-Out with the wrong DataSN ends the task with CHECK
    /// CONDITION, ABORTED COMMAND, 47h/05h once all its data is in; nothing reaches SCSI.
    #[test]
    fn wrong_data_sn_fails_the_task() {
        // (DataSN of the first PDU, of the second PDU); None: a single 1024-byte PDU.
        for sns in [
            (0u32, Some(0u32)),
            (27, None),
            (u32::MAX, None),
            (1, Some(0)),
        ] {
            let mut s = session(FfpParams::default());
            feed(&mut s, &cmd_pdu(5, 10, false, true, 1024, &[]));
            let r2t = s.out.pop_front().unwrap();
            let ttt = be32(r2t.bhs(), 20);
            match sns {
                (a, Some(b)) => {
                    feed(&mut s, &data_out_sn(5, ttt, a, 0, false, &[1u8; 512]));
                    assert!(s.out.is_empty(), "{sns:?}: waits for the rest of the data");
                    feed(&mut s, &data_out_sn(5, ttt, b, 512, true, &[1u8; 512]));
                }
                (a, None) => feed(&mut s, &data_out_sn(5, ttt, a, 0, true, &[1u8; 1024])),
            }
            assert!(s.next_ready().is_none(), "{sns:?}: not run");
            let rsp = s.out.pop_front().expect("SCSI Response");
            let b = rsp.bhs();
            assert_eq!(b[0], op::SCSI_RSP);
            assert_eq!(b[3], ScsiStatus::CheckCondition as u8);
            let sense = &rsp.payload.bytes()[2..];
            assert_eq!((sense[2], sense[12], sense[13]), (0x0b, 0x47, 0x05));
            assert_eq!(s.task_count(), 0);
        }
        // In-sequence DataSNs (0, 1) run normally.
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(5, 10, false, true, 1024, &[]));
        let ttt = be32(s.out.pop_front().unwrap().bhs(), 20);
        feed(&mut s, &data_out_sn(5, ttt, 0, 0, false, &[1u8; 512]));
        feed(&mut s, &data_out_sn(5, ttt, 1, 512, true, &[1u8; 512]));
        assert!(s.next_ready().is_some());
    }

    #[test]
    fn repeated_or_skipped_data_out_cannot_complete_a_write() {
        let mut s = session(FfpParams {
            max_burst: 4096,
            ..Default::default()
        });
        feed(&mut s, &cmd_pdu(5, 10, false, true, 4096, &[]));
        let r2t = s.out.pop_front().unwrap();
        let ttt = be32(r2t.bhs(), 20);
        feed(&mut s, &data_out(5, ttt, 0, false, &[1u8; 2048]));
        // The same 2 KiB again would make the byte count whole while 2048.. stays unwritten.
        feed(&mut s, &data_out(5, ttt, 0, true, &[1u8; 2048]));
        assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
        assert!(s.next_ready().is_none(), "a write with a hole must not run");
        // Skipping ahead is refused too; the in-order PDU completes it.
        feed(&mut s, &data_out(5, ttt, 3072, true, &[2u8; 1024]));
        assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
        let mut last = data_out(5, ttt, 2048, true, &[2u8; 2048]);
        last[36..40].copy_from_slice(&1u32.to_be_bytes()); // DataSN 1 of this R2T's sequence
        feed(&mut s, &last);
        let r = s.next_ready().expect("all 4096 bytes placed");
        assert_eq!(s.task(r).unwrap().data_out()[4095], 2);
    }

    #[test]
    fn out_of_window_commands_are_ignored() {
        let mut s = session(FfpParams {
            max_queue_cmd: 4,
            ..Default::default()
        });
        feed(&mut s, &cmd_pdu(1, 9, true, false, 512, &[]));
        assert_eq!(s.task_count(), 0, "CmdSN below ExpCmdSN dropped");
        feed(&mut s, &cmd_pdu(2, 10 + 4, true, false, 512, &[]));
        assert_eq!(s.task_count(), 0, "CmdSN beyond MaxCmdSN dropped");
        // A CmdSN ahead of a gap is held until the gap fills.
        feed(&mut s, &cmd_pdu(3, 11, true, false, 512, &[]));
        assert_eq!(s.task_count(), 1);
        assert!(s.next_ready().is_none());
        feed(&mut s, &cmd_pdu(4, 10, true, false, 512, &[]));
        assert_eq!(s.exp_cmd_sn(), CmdSn(12));
        let a = s.next_ready().unwrap();
        let b = s.next_ready().unwrap();
        assert_eq!(s.task(a).unwrap().itt, Itt(4));
        assert_eq!(s.task(b).unwrap().itt, Itt(3));
    }

    #[test]
    fn queue_depth_512_never_closes_the_window_early() {
        let mut s = session(FfpParams::default());
        for i in 0..512u32 {
            feed(&mut s, &cmd_pdu(i, 10 + i, true, false, 4096, &[]));
        }
        assert_eq!(s.task_count(), 512);
        assert_eq!(
            s.current_max_cmd_sn(),
            CmdSn(10 + 512 - 1),
            "window closed only when full"
        );
        let r = s.next_ready().unwrap();
        s.finish(r, good(DataIn::Bytes(vec![0; 4096])), None);
        assert_eq!(s.current_max_cmd_sn(), CmdSn(10 + 512), "one slot reopens");
    }

    #[test]
    fn nop_out_is_echoed_and_abort_task_works() {
        let mut s = session(FfpParams::default());
        let mut nop = vec![0u8; BHS_LEN];
        nop[0] = 0x40 | op::NOP_OUT;
        nop[1] = 0x80;
        nop[7] = 4;
        nop[16..20].copy_from_slice(&9u32.to_be_bytes());
        nop[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        nop.extend_from_slice(b"ping");
        feed(&mut s, &nop);
        let r = s.out.pop_front().unwrap();
        assert_eq!(r.bhs()[0], op::NOP_IN);
        assert_eq!(be32(r.bhs(), 16), 9);
        assert_eq!(r.payload.bytes(), b"ping");

        feed(&mut s, &cmd_pdu(7, 10, false, true, 4096, &[]));
        s.out.clear();
        let mut tmf = vec![0u8; BHS_LEN];
        tmf[0] = 0x40 | op::TASK_MGMT;
        tmf[1] = 0x80 | 1;
        tmf[9] = 1;
        tmf[16..20].copy_from_slice(&20u32.to_be_bytes());
        tmf[20..24].copy_from_slice(&7u32.to_be_bytes());
        tmf[24..28].copy_from_slice(&11u32.to_be_bytes());
        feed(&mut s, &tmf);
        let r = s.out.pop_front().unwrap();
        assert_eq!(r.bhs()[0], op::TASK_MGMT_RSP);
        assert_eq!(r.bhs()[2], 0, "function complete");
        assert_eq!(s.task_count(), 0);
        // Aborting it again: the tag no longer exists.
        tmf[16..20].copy_from_slice(&21u32.to_be_bytes());
        tmf[32..36].copy_from_slice(&(11u32 + 2000).to_be_bytes());
        feed(&mut s, &tmf);
        assert_eq!(
            s.out.pop_front().unwrap().bhs()[2],
            1,
            "task does not exist"
        );
        // A command that already finished (RefCmdSN below ExpCmdSN): does not exist.
        tmf[32..36].copy_from_slice(&10u32.to_be_bytes());
        feed(&mut s, &tmf);
        assert_eq!(s.out.pop_front().unwrap().bhs()[2], 1, "finished task");
        // A command not received yet (RefCmdSN == ExpCmdSN, below the immediate TMF's
        // CmdSN): considered received, function complete.
        tmf[24..28].copy_from_slice(&(s.exp_cmd_sn().0 + 1).to_be_bytes());
        tmf[32..36].copy_from_slice(&s.exp_cmd_sn().0.to_be_bytes());
        feed(&mut s, &tmf);
        assert_eq!(s.out.pop_front().unwrap().bhs()[2], 0, "lost command");
    }

    #[test]
    fn unanswered_pings_close_the_connection() {
        let mut s = session(FfpParams::default());
        // interval 2 s, tolerate 1 unanswered ping.
        assert!(!s.nop_tick(2, 1));
        assert!(s.out.is_empty());
        assert!(!s.nop_tick(2, 1));
        let ping = s.out.pop_front().expect("a ping after 2 s");
        assert_eq!(ping.bhs()[0], op::NOP_IN);
        assert_eq!(be32(ping.bhs(), 16), 0xffff_ffff, "ITT reserved");
        let ttt = be32(ping.bhs(), 20);
        assert_ne!(ttt, 0xffff_ffff, "a TTT to echo");
        // The initiator answers: the count resets.
        let mut nop = vec![0u8; BHS_LEN];
        nop[0] = 0x40 | op::NOP_OUT;
        nop[1] = 0x80;
        nop[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        nop[20..24].copy_from_slice(&ttt.to_be_bytes());
        feed(&mut s, &nop);
        assert_eq!(s.pings_unanswered, 0);
        // Two pings go unanswered; at the third interval the connection must close.
        for _ in 0..4 {
            assert!(!s.nop_tick(2, 1));
        }
        assert_eq!(s.pings_unanswered, 2);
        assert!(!s.nop_tick(2, 1));
        assert!(s.nop_tick(2, 1), "more than nop_count unanswered");
        assert!(!s.nop_tick(0, 1), "interval 0 turns pings off");
    }

    #[test]
    fn logout_closes_after_response() {
        let mut s = session(FfpParams::default());
        let mut l = vec![0u8; BHS_LEN];
        l[0] = 0x40 | op::LOGOUT;
        l[1] = 0x80;
        l[16..20].copy_from_slice(&3u32.to_be_bytes());
        l[24..28].copy_from_slice(&10u32.to_be_bytes());
        feed(&mut s, &l);
        let r = s.out.pop_front().unwrap();
        assert_eq!(r.bhs()[0], op::LOGOUT_RSP);
        assert_eq!(r.bhs()[2], 0);
        assert_eq!(s.close, Some(CloseAfter::Flush));
    }

    #[test]
    fn check_condition_carries_sense_in_response() {
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(1, 10, true, false, 512, &[]));
        let r = s.next_ready().unwrap();
        let sense = vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
        s.finish(
            r,
            Response {
                status: ScsiStatus::CheckCondition,
                sense: sense.clone(),
                data: DataIn::None,
                effects: Vec::new(),
            },
            None,
        );
        let p = s.out.pop_front().unwrap();
        assert_eq!(p.bhs()[0], op::SCSI_RSP);
        assert_eq!(p.bhs()[3], 2);
        assert_eq!(&p.payload.bytes()[..2], &(sense.len() as u16).to_be_bytes());
        assert_eq!(&p.payload.bytes()[2..], &sense[..]);
    }
}
