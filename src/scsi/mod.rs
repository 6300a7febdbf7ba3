//! SCSI target logic for disk and controller logical units (SPC-4, SBC-3), sans-IO.
//!
//! The iSCSI layer hands [`execute`] a fully received command (CDB plus all Data-Out). It
//! answers either at once ([`Outcome::Done`]: INQUIRY, MODE SENSE, errors…) or with one
//! [`BlockIo`] for the shard to run on its ring ([`Outcome::Io`]); when that completes, the
//! shard calls [`complete`] for the final status. Nothing here blocks or does I/O.

pub mod cdb;
pub mod error;
pub mod inquiry;
pub mod lu;
pub mod mode;
mod params;
pub mod pr;
pub mod reserve;
pub mod sbc;
pub mod sense;
pub mod spc;
pub mod types;
pub mod ua;

#[cfg(test)]
mod tests;

use crate::backing::{BlockIo, IoResult};
use crate::buf::IoBuf;
use cdb::Cdb;
use error::CmdError;
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

/// What a handler decided, before it becomes a [`Response`] or an [`Outcome::Io`].
#[derive(Debug)]
pub enum Step {
    /// GOOD, no data.
    Good,
    /// GOOD with generated data (already truncated to the CDB's allocation length).
    Data(Vec<u8>),
    /// GOOD with side effects for other nexuses.
    Effects(Vec<Effect>),
    /// Backing-store I/O to run, then [`complete`].
    Io(BlockIo),
}

impl Response {
    /// GOOD with `data`.
    fn good(data: DataIn) -> Response {
        Response {
            status: ScsiStatus::Good,
            sense: Vec::new(),
            data,
            effects: Vec::new(),
        }
    }

    /// The status and sense data for `err`.
    pub fn error(err: CmdError, descriptor_sense: bool) -> Response {
        Response {
            status: err.status(),
            sense: err
                .sense()
                .map(|s| s.encode(descriptor_sense))
                .unwrap_or_default(),
            data: DataIn::None,
            effects: Vec::new(),
        }
    }
}

fn truncate(mut d: Vec<u8>, alloc: u32) -> Vec<u8> {
    d.truncate(alloc as usize);
    d
}

/// Runs a command up to its backing-store I/O. Implemented in the SCSI modules.
pub fn execute(ctx: &mut ExecCtx<'_>, cmd: &ScsiCommand<'_>) -> Outcome {
    let Some(lu) = ctx.lu else {
        return Outcome::Done(no_lun(ctx, cmd));
    };
    let desc = lu.sense_descriptor();
    match run(ctx, lu, cmd) {
        Ok(Step::Good) => Outcome::Done(Response::good(DataIn::None)),
        Ok(Step::Data(d)) => Outcome::Done(Response::good(DataIn::Bytes(d))),
        Ok(Step::Effects(e)) => Outcome::Done(Response {
            effects: e,
            ..Response::good(DataIn::None)
        }),
        Ok(Step::Io(io)) => Outcome::Io(io),
        Err(e) => Outcome::Done(Response::error(e, desc)),
    }
}

/// A command to a LUN with no logical unit (SPC-4 §6.6.2, SAM-5 §5.9.5): INQUIRY reports
/// qualifier 011b, REPORT LUNS works, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as its
/// data, everything else fails with it.
fn no_lun(ctx: &mut ExecCtx<'_>, cmd: &ScsiCommand<'_>) -> Response {
    let result = match cdb::parse(cmd.cdb) {
        Ok(Cdb::Inquiry {
            evpd: false,
            cmddt: false,
            page: 0,
            alloc,
        }) => Ok(truncate(inquiry::standard_no_lun(), alloc)),
        Ok(Cdb::ReportLuns { select, alloc }) => {
            spc::report_luns(ctx.luns, select, alloc).map(|d| truncate(d, alloc))
        }
        Ok(Cdb::RequestSense { desc, alloc }) => Ok(truncate(
            spc::request_sense(ctx.nexus, ctx.lun, None, desc),
            alloc,
        )),
        _ => Err(CmdError::LunNotSupported),
    };
    match result {
        Ok(d) => Response::good(DataIn::Bytes(d)),
        Err(e) => Response::error(e, false),
    }
}

/// UA, opcode, CDB and reservation checks, then the command itself.
fn run(ctx: &mut ExecCtx<'_>, lu: &LogicalUnit, cmd: &ScsiCommand<'_>) -> Result<Step, CmdError> {
    let opcode = *cmd.cdb.first().ok_or(CmdError::InvalidOpcode)?;
    if !ua::exempt(opcode) {
        if let Some(u) = ua::take(ctx.nexus, ctx.lun) {
            return Err(CmdError::UnitAttention(u));
        }
    }
    if !spc::implemented(lu.dev_type(), opcode) {
        return Err(CmdError::InvalidOpcode);
    }
    let parsed = cdb::parse(cmd.cdb)?;
    let me = &ctx.nexus.id;
    reserve::check(lu, me, &parsed)?;
    let data_out = cmd.data_out;
    let step = match parsed {
        Cdb::TestUnitReady => spc::test_unit_ready(lu).map(|_| Step::Good)?,
        Cdb::RequestSense { desc, alloc } => Step::Data(truncate(
            spc::request_sense(ctx.nexus, ctx.lun, Some(lu), desc),
            alloc,
        )),
        Cdb::FormatUnit { fmtdata, fmtpinfo } => sbc::format_unit(lu, fmtpinfo, fmtdata)?,
        Cdb::Read(r) => sbc::read(lu, &r)?,
        Cdb::Write(r) | Cdb::WriteVerify(r) => sbc::write(lu, &r, data_out)?,
        Cdb::Verify(r) => sbc::verify(lu, &r, data_out)?,
        Cdb::PreFetch(r) => sbc::pre_fetch(lu, &r)?,
        Cdb::SyncCache(r) => sbc::sync_cache(lu, &r)?,
        Cdb::CompareAndWrite(r) => sbc::compare_and_write(lu, &r, data_out)?,
        Cdb::OrWrite(r) => sbc::orwrite(lu, &r, data_out)?,
        Cdb::ReadDefectData {
            twelve,
            plist,
            glist,
            format,
            alloc,
        } => Step::Data(truncate(
            sbc::read_defect_data(lu, twelve, plist, glist, format)?,
            alloc,
        )),
        Cdb::WriteSame(w) => sbc::write_same(lu, &w, data_out)?,
        Cdb::Unmap { anchor, len } => sbc::unmap(lu, anchor, len, data_out)?,
        Cdb::Inquiry {
            evpd,
            cmddt,
            page,
            alloc,
        } => Step::Data(truncate(inquiry::inquiry(lu, evpd, cmddt, page)?, alloc)),
        Cdb::ModeSense {
            ten,
            dbd,
            llbaa,
            pc,
            page,
            subpage,
            alloc,
        } => {
            let args = mode::SenseArgs {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
            };
            Step::Data(truncate(mode::mode_sense(lu, args)?, alloc))
        }
        Cdb::ModeSelect { ten, sp, len } => {
            Step::Effects(mode::mode_select(lu, me, ten, sp, len, data_out)?)
        }
        Cdb::Reserve6 => reserve::reserve6(lu, me).map(|_| Step::Good)?,
        Cdb::Release6 => reserve::release6(lu, me).map(|_| Step::Good)?,
        Cdb::StartStop {
            power_condition,
            loej,
            start,
        } => spc::start_stop(lu, power_condition, loej, start).map(|_| Step::Good)?,
        Cdb::SendDiagnostic {
            self_test_code,
            self_test,
            param_len,
        } => spc::send_diagnostic(self_test_code, self_test, param_len).map(|_| Step::Good)?,
        Cdb::PreventAllow { prevent } => spc::prevent_allow(lu, me, prevent).map(|_| Step::Good)?,
        Cdb::ReadCapacity10 { lba, pmi } => Step::Data(sbc::read_capacity10(lu, lba, pmi)?),
        Cdb::ReadCapacity16 { alloc } => Step::Data(truncate(sbc::read_capacity16(lu)?, alloc)),
        Cdb::GetLbaStatus { lba, alloc } => match sbc::get_lba_status(lu, lba, alloc)? {
            Step::Data(d) => Step::Data(truncate(d, alloc)),
            step => step,
        },
        Cdb::PrIn { sa, alloc } => Step::Data(truncate(pr::pr_in(lu, sa, alloc)?, alloc)),
        Cdb::PrOut {
            sa,
            scope,
            pr_type,
            len,
        } => {
            let args = pr::OutArgs {
                sa,
                scope,
                pr_type,
                len,
            };
            Step::Effects(pr::pr_out(lu, me, args, data_out)?)
        }
        Cdb::ReportLuns { select, alloc } => {
            Step::Data(truncate(spc::report_luns(ctx.luns, select, alloc)?, alloc))
        }
        Cdb::ReportOpcodes {
            rctd,
            options,
            opcode,
            sa,
            alloc,
        } => Step::Data(truncate(
            spc::report_opcodes(lu.dev_type(), rctd, options, opcode, sa)?,
            alloc,
        )),
        Cdb::ReportTmf { repd, alloc } => Step::Data(truncate(spc::report_tmf(repd), alloc)),
    };
    Ok(step)
}

/// Finishes a command after its [`BlockIo`] completed. `read_buf` holds the data of a `Read`.
pub fn complete(
    ctx: &mut ExecCtx<'_>,
    cmd: &ScsiCommand<'_>,
    io: &BlockIo,
    result: IoResult,
    read_buf: Option<IoBuf>,
) -> Response {
    let desc = ctx.lu.is_some_and(|lu| lu.sense_descriptor());
    match result {
        IoResult::Extents(ext) => match (ctx.lu, cdb::parse(cmd.cdb)) {
            (Some(lu), Ok(Cdb::GetLbaStatus { lba, alloc })) => Response::good(DataIn::Bytes(
                truncate(sbc::lba_status_data(lu, lba, &ext), alloc),
            )),
            _ => Response::error(CmdError::ReadError, desc),
        },
        // The store cannot do this at all (SPC-4 §4.5.2.4.2: an unsupported command).
        IoResult::Unsupported => Response::error(CmdError::InvalidOpcode, desc),
        IoResult::Cancelled => Response {
            status: ScsiStatus::TaskAborted,
            sense: Vec::new(),
            data: DataIn::None,
            effects: Vec::new(),
        },
        IoResult::Ok => match (io, read_buf) {
            (BlockIo::Read { .. }, Some(buf)) => Response::good(DataIn::Buf(buf)),
            (BlockIo::Read { .. }, None) => Response::error(CmdError::ReadError, desc),
            _ => Response::good(DataIn::None),
        },
        IoResult::Miscompare { offset } => Response::error(CmdError::Miscompare { offset }, desc),
        IoResult::Err(_) => {
            let err = match io {
                BlockIo::Read { .. } | BlockIo::Verify { .. } => CmdError::ReadError,
                _ => CmdError::WriteError,
            };
            Response::error(err, desc)
        }
    }
}

/// The SCSI transfer length in bytes of a command's Data-Out (its SPDTL, RFC 7143 §11.4.5.2)
/// for an LU with `block_size`, or `None` for commands without Data-Out or that do not parse.
/// The iSCSI layer compares it with the EDTL to set the residual of write commands; commands
/// that got less Data-Out than this either store only the whole blocks that arrived (WRITE,
/// WRITE AND VERIFY) or fail with INVALID FIELD IN INFORMATION UNIT (see `sbc`).
pub fn data_out_len(cdb: &[u8], block_size: u32) -> Option<u64> {
    let bs = u64::from(block_size);
    Some(match cdb::parse(cdb).ok()? {
        Cdb::Write(r) | Cdb::WriteVerify(r) | Cdb::OrWrite(r) => u64::from(r.blocks) * bs,
        Cdb::Verify(r) if r.bytchk == 1 => u64::from(r.blocks) * bs,
        Cdb::CompareAndWrite(r) => 2 * u64::from(r.blocks) * bs,
        Cdb::WriteSame(w) if !w.ndob => bs,
        Cdb::Unmap { len, .. } => u64::from(len),
        Cdb::ModeSelect { len, .. } => u64::from(len),
        Cdb::PrOut { len, .. } => u64::from(len),
        Cdb::SendDiagnostic { param_len, .. } => u64::from(param_len),
        _ => return None,
    })
}
