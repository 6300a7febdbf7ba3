//! The full feature phase of one session (one connection: MaxConnections=1), as a sans-IO
//! state machine: PDUs in, PDUs out, and tasks handed to the SCSI layer when all their data
//! is here (RFC 7143 §3.2, §4.2, §11).
//!
//! It owns StatSN, the task table and the output queue; one file per concept does the rest:
//! `window` the command window (ExpCmdSN/MaxCmdSN, held and duplicate CmdSNs), `command` the
//! SCSI Command PDU, `dataout` R2Ts and Data-Out, `datain` Data-In and SCSI Responses, `tmf`
//! task management, `nop` NOP-In/Out and keep-alive, `text` Text Requests, `logout` Logout.
//! The shard feeds it parsed PDUs, runs the tasks it releases, reports their SCSI responses
//! back, writes out what it queued, and closes the connection once that is sent when `close`
//! is set.

use super::ids::{Cid, Isid, Itt, Tsih};
use super::pdu::{Bhs, RejectReason, Request, SeqFields, TextReq, BHS_LEN};
use super::rx::{InPdu, RxLimits};
use super::serial::{CmdSn, StatSn};
use super::stats::SessionStats;
use super::task::{Task, TaskRef, TaskState, TaskTable};
use super::tx::{Payload, TxPdu};
use crate::buf::BufPool;
use crate::scsi::{Lun, NexusState};
use std::collections::VecDeque;

mod command;
mod datain;
mod dataout;
mod deadline;
mod logout;
mod nop;
mod text;
mod tmf;
mod window;
mod writebuf;
pub use deadline::Stalled;
use window::{Admit, CmdWindow};
pub use writebuf::{NoRoom, WriteBudget};

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
    /// One Text Request PDU for the text/discovery handler ([`TextSm`] joins the pieces of
    /// a continued request); `bhs` is its header, echoed if it must be rejected.
    ///
    /// [`TextSm`]: crate::iscsi::discovery::TextSm
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
    /// A task that was executing (its backend operation in flight) was aborted: the owner
    /// cancels that operation. The task's slot stays taken until the owner's `finish`.
    Cancel { task: TaskRef },
}

/// Extra slots above the window for immediate commands and TMF-aborted stragglers.
const EXTRA_TASK_SLOTS: usize = 32;

/// One session's full-feature-phase state.
pub struct Session {
    pub kind: Kind,
    pub tsih: Tsih,
    pub cid: Cid,
    pub isid: Isid,
    pub initiator_name: String,
    pub params: FfpParams,
    pub nexus: Option<NexusState>,
    /// ExpCmdSN, MaxCmdSN and the requests held behind a CmdSN gap.
    window: CmdWindow,
    /// Reused list of held tasks a delivery released (no allocation per command).
    released: Vec<TaskRef>,
    stat_sn: StatSn,
    tasks: TaskTable,
    /// Tasks whose data is complete, in CmdSN order, waiting for the SCSI layer.
    ready: VecDeque<TaskRef>,
    /// PDUs queued to send.
    pub out: VecDeque<TxPdu>,
    /// Events for the owner.
    pub events: VecDeque<Event>,
    /// Set when the connection must close after flushing: the owner reads and runs nothing
    /// more from it (Logout, TARGET COLD RESET, a data digest error; RFC 7143 §11.14).
    pub close: Option<CloseAfter>,
    pool: BufPool,
    /// This session's hold on the shard's write-buffer budget (see `writebuf`).
    budget: writebuf::SessionShare,
    /// Writes waiting for room in `budget` before their R2Ts, oldest first.
    wait_buffer: VecDeque<TaskRef>,
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
            window: CmdWindow::new(exp_cmd_sn, params.max_queue_cmd),
            released: Vec::new(),
            stat_sn,
            tasks: TaskTable::new(params.max_queue_cmd as usize + EXTRA_TASK_SLOTS),
            ready: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            close: None,
            pool,
            budget: writebuf::SessionShare::default(),
            wait_buffer: VecDeque::new(),
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

    /// Current ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.window.exp()
    }

    /// Current MaxCmdSN (never below one already advertised, RFC 7143 §4.2.2.1).
    pub fn current_max_cmd_sn(&self) -> CmdSn {
        self.window.max()
    }

    /// Live tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Whether a live task uses `itt` (the fuzz harness's evidence that a command was taken).
    pub fn has_task(&self, itt: Itt) -> bool {
        self.tasks.has_itt(itt)
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
            exp_cmd_sn: self.window.exp(),
            max_cmd_sn: self.window.advertise(),
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
            Request::Logout(l) => self.on_logout(l, &pdu.bhs),
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

    /// Takes the CmdSN of a request that is handled at once, whatever its order (NOP-Out,
    /// Text, Logout, task management): false when it is to be silently ignored (outside the
    /// window, or a duplicate, RFC 7143 §3.2.2.1).
    fn take_cmd_sn(&mut self, immediate: bool, cmd_sn: CmdSn) -> bool {
        let admit = self.window.admit(immediate, cmd_sn);
        self.use_cmd_sn(admit, immediate, cmd_sn);
        admit != Admit::Ignore
    }

    /// Uses up the CmdSN of a request admitted as `admit` that is handled without becoming
    /// a task: one handled at once, and one inside the window answered with a Reject.
    ///
    /// RFC 7143 is silent on whether a rejected command consumes its CmdSN, so the choice
    /// follows from the window rules: the initiator advanced CmdSN when it sent the command
    /// (§3.2.2.1), the target acknowledges every command below ExpCmdSN as received
    /// (§4.2.2.1), and at ErrorRecoveryLevel 0 nothing ever resends that CmdSN. A Reject that
    /// left ExpCmdSN on it would hold every later command behind a gap nobody fills: the
    /// session hangs (the failure of issue 11 item 1). The Reject is the command's delivery.
    fn use_cmd_sn(&mut self, admit: Admit, immediate: bool, cmd_sn: CmdSn) {
        match admit {
            Admit::Ignore => {}
            Admit::Now => {
                if !immediate {
                    self.delivered(None);
                }
            }
            Admit::Ahead => self.window.used_ahead(cmd_sn),
        }
    }

    /// The request with CmdSN == ExpCmdSN was taken (`task`, when it is a task): ExpCmdSN
    /// moves on, and the tasks held behind it that are now in order start, in CmdSN order.
    fn delivered(&mut self, task: Option<TaskRef>) {
        let mut released = std::mem::take(&mut self.released);
        self.window.delivered(task.is_some(), &mut released);
        if let Some(r) = task {
            self.start_data_phase(r);
        }
        for r in released.drain(..) {
            self.start_data_phase(r);
        }
        self.released = released;
    }

    /// A delivered task ended: a non-immediate one reopens its window slot.
    fn release_window(&mut self, t: &Task) {
        if !t.immediate {
            self.window.finished();
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
}

#[cfg(test)]
mod tests;
