//! SCSI target logic for disk and controller logical units (SPC-4, SBC-3), sans-IO.
//!
//! The iSCSI layer hands [`execute`] a fully received command (CDB plus all Data-Out). It
//! answers either at once ([`Outcome::Done`]: INQUIRY, MODE SENSE, errors…) or with one
//! [`BlockIo`] for the shard to run on its ring ([`Outcome::Io`]); when that completes, the
//! shard calls [`complete`] for the final status. Nothing here blocks or does I/O.

pub mod lu;
pub mod types;

use crate::backing::{BlockIo, IoResult};
use crate::shard::buf::IoBuf;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub use lu::LogicalUnit;
pub use types::{DeviceType, Lba, Lun, ScsiStatus, TaskAttr};

/// Identity of an I_T nexus: the initiator port (`<InitiatorName>,i,0x<ISID>`) and the target
/// it logged into. Stable across session reinstatement, so reservations and unit attentions
/// follow the initiator port, as SPC-4 §5.7 keys registrations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NexusId {
    /// Target id the nexus belongs to.
    pub tid: u32,
    /// `<InitiatorName>,i,0x<ISID in 12 hex digits>` (RFC 7143 §4.4.2 initiator port name).
    pub initiator_port: Arc<str>,
}

/// Unit attention conditions this target raises (SAM-5 §5.14, SPC-4 Table on ASC/ASCQ).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnitAttention {
    /// 29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (new nexus).
    PowerOnReset,
    /// 29h/03h BUS DEVICE RESET FUNCTION OCCURRED (LUN RESET).
    LunReset,
    /// 29h/07h I_T NEXUS LOSS OCCURRED.
    NexusLoss,
    /// 2Ah/01h MODE PARAMETERS CHANGED.
    ModeParametersChanged,
    /// 2Ah/03h RESERVATIONS PREEMPTED.
    ReservationsPreempted,
    /// 2Ah/04h RESERVATIONS RELEASED.
    ReservationsReleased,
    /// 2Ah/05h REGISTRATIONS PREEMPTED.
    RegistrationsPreempted,
    /// 2Ah/09h CAPACITY DATA HAS CHANGED.
    CapacityChanged,
    /// 3Fh/0Eh REPORTED LUNS DATA HAS CHANGED.
    ReportedLunsChanged,
    /// 2Fh/00h COMMANDS CLEARED BY ANOTHER INITIATOR.
    CommandsCleared,
}

impl UnitAttention {
    /// (ASC, ASCQ) for the sense data.
    pub fn asc_ascq(self) -> (u8, u8) {
        match self {
            UnitAttention::PowerOnReset => (0x29, 0x00),
            UnitAttention::LunReset => (0x29, 0x03),
            UnitAttention::NexusLoss => (0x29, 0x07),
            UnitAttention::ModeParametersChanged => (0x2a, 0x01),
            UnitAttention::ReservationsPreempted => (0x2a, 0x03),
            UnitAttention::ReservationsReleased => (0x2a, 0x04),
            UnitAttention::RegistrationsPreempted => (0x2a, 0x05),
            UnitAttention::CapacityChanged => (0x2a, 0x09),
            UnitAttention::ReportedLunsChanged => (0x3f, 0x0e),
            UnitAttention::CommandsCleared => (0x2f, 0x00),
        }
    }
}

/// Per-nexus SCSI state, owned by the session on its shard (no lock): pending unit attentions
/// per LUN. Bounded: at most [`NexusState::MAX_UA_PER_LUN`] queued per LUN.
#[derive(Debug)]
pub struct NexusState {
    /// Which nexus this is.
    pub id: NexusId,
    /// Unit attentions waiting to be reported, per LUN, oldest first.
    pub ua: HashMap<Lun, VecDeque<UnitAttention>>,
}

impl NexusState {
    /// Most unit attentions kept queued per LUN; older ones are dropped first.
    pub const MAX_UA_PER_LUN: usize = 16;

    /// A fresh nexus with no pending conditions.
    pub fn new(id: NexusId) -> NexusState {
        NexusState {
            id,
            ua: HashMap::new(),
        }
    }

    /// Queues a unit attention for `lun` (deduplicating an identical pending one).
    pub fn push_ua(&mut self, lun: Lun, ua: UnitAttention) {
        let q = self.ua.entry(lun).or_default();
        if q.contains(&ua) {
            return;
        }
        if q.len() >= Self::MAX_UA_PER_LUN {
            q.pop_front();
        }
        q.push_back(ua);
    }
}

/// A command as the iSCSI layer received it, with all of its Data-Out.
#[derive(Debug)]
pub struct ScsiCommand<'a> {
    /// The CDB (16 bytes from the BHS, more from an extended-CDB AHS).
    pub cdb: &'a [u8],
    /// All Data-Out bytes the initiator sent (at most `expected_len`).
    pub data_out: &'a [u8],
    /// Expected Data Transfer Length from the PDU.
    pub expected_len: u32,
    /// R bit: the initiator expects Data-In.
    pub read: bool,
    /// W bit: the initiator sends Data-Out.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttr,
}

/// Everything [`execute`] may look at besides the command.
pub struct ExecCtx<'a> {
    /// Target id.
    pub tid: u32,
    /// LUN the command addresses.
    pub lun: Lun,
    /// That LU, or `None` when no such LUN exists (INQUIRY then reports qualifier 011b, most
    /// commands get LOGICAL UNIT NOT SUPPORTED).
    pub lu: Option<&'a LogicalUnit>,
    /// Every LUN of the target, ascending (REPORT LUNS).
    pub luns: &'a [Lun],
    /// The nexus's own state.
    pub nexus: &'a mut NexusState,
}

/// Data for the initiator.
#[derive(Debug, Default)]
pub enum DataIn {
    /// No data.
    #[default]
    None,
    /// Data generated by the SCSI layer (INQUIRY, MODE SENSE…).
    Bytes(Vec<u8>),
    /// Data read by the backing store into a pooled buffer.
    Buf(IoBuf),
}

impl DataIn {
    /// Length of the data.
    pub fn len(&self) -> usize {
        match self {
            DataIn::None => 0,
            DataIn::Bytes(v) => v.len(),
            DataIn::Buf(b) => b.len(),
        }
    }
    /// True when there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who a side effect's unit attention is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UaScope {
    /// Every nexus of the target except the one that ran the command.
    OthersOf(NexusId),
    /// Exactly this nexus.
    Only(NexusId),
}

/// Something a command changes beyond its own response, which the session must carry to other
/// nexuses (possibly on other shards, by message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Raise a unit attention on `lun` (all LUNs of the target when `None`).
    Ua {
        scope: UaScope,
        lun: Option<Lun>,
        ua: UnitAttention,
    },
}

/// The final answer to a command.
#[derive(Debug)]
pub struct Response {
    /// SCSI status.
    pub status: ScsiStatus,
    /// Sense data (empty unless CHECK CONDITION), already formatted (fixed or descriptor per
    /// the LU's `sense_format`).
    pub sense: Vec<u8>,
    /// Data-In payload; the iSCSI layer trims it to the expected length and computes residuals.
    pub data: DataIn,
    /// Side effects for other nexuses.
    pub effects: Vec<Effect>,
}

/// What [`execute`] decided.
#[derive(Debug)]
pub enum Outcome {
    /// Finished without backing-store I/O.
    Done(Response),
    /// Run this I/O, then call [`complete`].
    Io(BlockIo),
}

/// Runs a command up to its backing-store I/O. Implemented in the SCSI modules.
pub fn execute(ctx: &mut ExecCtx<'_>, cmd: &ScsiCommand<'_>) -> Outcome {
    let _ = (ctx, cmd);
    todo!("scsi::execute")
}

/// Finishes a command after its [`BlockIo`] completed. `read_buf` holds the data of a `Read`.
pub fn complete(
    ctx: &mut ExecCtx<'_>,
    cmd: &ScsiCommand<'_>,
    io: &BlockIo,
    result: IoResult,
    read_buf: Option<IoBuf>,
) -> Response {
    let _ = (ctx, cmd, io, result, read_buf);
    todo!("scsi::complete")
}
