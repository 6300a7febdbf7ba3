//! The 48-byte Basic Header Segment (RFC 7143 §11.2): a checked typed view of every PDU an
//! initiator may send, and builders for every PDU the target sends.
//!
//! Parsing happens once, here: [`Request::parse`] turns raw header bytes into a typed enum
//! with named fields, or a [`PduError`] naming the rule the peer broke. Nothing past this
//! module reads header bytes by offset.

use super::ids::{Cid, Isid, Itt, Tsih, Ttt};
use super::serial::{CmdSn, DataSn, StatSn};
use crate::scsi::types::{Lun, TaskAttr};

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// Initiator opcodes (RFC 7143 §11.2.1.2).
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_CMD: u8 = 0x01;
    pub const TASK_MGMT: u8 = 0x02;
    pub const LOGIN: u8 = 0x03;
    pub const TEXT: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RSP: u8 = 0x21;
    pub const TASK_MGMT_RSP: u8 = 0x22;
    pub const LOGIN_RSP: u8 = 0x23;
    pub const TEXT_RSP: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RSP: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Reject reasons (RFC 7143 §11.17.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    DataDigestError = 0x02,
    SnackReject = 0x03,
    ProtocolError = 0x04,
    CommandNotSupported = 0x05,
    ImmediateCommandRejected = 0x06,
    TaskInProgress = 0x07,
    InvalidDataAck = 0x08,
    InvalidPduField = 0x09,
    OutOfResources = 0x0a,
    WaitingForLogout = 0x0c,
}

/// Why a header could not be accepted. Each names the rule the initiator broke.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The opcode is not one an initiator may send (RFC 7143 §11.2.1.2).
    #[error("opcode {0:#04x} is not an initiator opcode")]
    UnknownOpcode(u8),
    /// The data segment is longer than the negotiated MaxRecvDataSegmentLength (§13.12).
    #[error("data segment of {len} bytes exceeds the {max}-byte limit")]
    DataSegmentTooLong { len: u32, max: u32 },
    /// Total AHS length beyond what any defined AHS needs.
    #[error("AHS of {0} words is larger than this target accepts")]
    AhsTooLong(u8),
    /// A PDU that must carry no data segment carried one (e.g. R2T-less Data-Out rules).
    #[error("{0} must not carry a data segment")]
    UnexpectedData(&'static str),
    /// The header digest does not match (§13.1).
    #[error("header digest mismatch")]
    HeaderDigest,
    /// The data digest does not match (§13.1).
    #[error("data digest mismatch")]
    DataDigest,
    /// A field holds a value the RFC forbids (named).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

/// Most AHS words accepted (an extended CDB of up to 260 bytes needs 66).
pub const MAX_AHS_WORDS: u8 = 68;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The framing fields common to every PDU: enough to know how many bytes the whole PDU takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Opcode (6 bits).
    pub opcode: u8,
    /// Immediate delivery bit.
    pub immediate: bool,
    /// AHS length in bytes.
    pub ahs_len: usize,
    /// DataSegmentLength (unpadded).
    pub data_len: usize,
}

impl Frame {
    /// Reads the framing fields, checking them against the limits before anything is sized.
    pub fn parse(bhs: &[u8; BHS_LEN], max_data: u32) -> Result<Frame, PduError> {
        let ahs_words = bhs[4];
        if ahs_words > MAX_AHS_WORDS {
            return Err(PduError::AhsTooLong(ahs_words));
        }
        let data_len = (u32::from(bhs[5]) << 16) | (u32::from(bhs[6]) << 8) | u32::from(bhs[7]);
        if data_len > max_data {
            return Err(PduError::DataSegmentTooLong {
                len: data_len,
                max: max_data,
            });
        }
        Ok(Frame {
            opcode: bhs[0] & 0x3f,
            immediate: bhs[0] & 0x40 != 0,
            ahs_len: usize::from(ahs_words) * 4,
            data_len: data_len as usize,
        })
    }

    /// Bytes of the data segment on the wire, with padding to a 4-byte boundary.
    pub fn padded_data_len(&self) -> usize {
        self.data_len.div_ceil(4) * 4
    }

    /// Total PDU bytes with the given digests.
    pub fn total_len(&self, header_digest: bool, data_digest: bool) -> usize {
        let mut n = BHS_LEN + self.ahs_len;
        if header_digest {
            n += 4;
        }
        if self.data_len > 0 {
            n += self.padded_data_len();
            if data_digest {
                n += 4;
            }
        }
        n
    }
}

/// SCSI Command (RFC 7143 §11.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiCmd {
    pub immediate: bool,
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: Lun,
    pub itt: Itt,
    pub expected_len: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    pub cdb: [u8; 16],
}

/// SCSI Data-Out (RFC 7143 §11.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    pub exp_stat_sn: StatSn,
    pub data_sn: DataSn,
    pub buffer_offset: u32,
}

/// NOP-Out (RFC 7143 §11.18).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

/// Task management functions (RFC 7143 §11.5.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LunReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
    Other(u8),
}

impl TmfFunction {
    fn from_code(c: u8) -> TmfFunction {
        match c {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LunReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            other => TmfFunction::Other(other),
        }
    }
}

/// Task Management Function Request (RFC 7143 §11.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmt {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: Lun,
    pub itt: Itt,
    pub referenced_itt: Itt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    pub ref_cmd_sn: CmdSn,
}

/// Login stages (RFC 7143 §11.12.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Security,
    Operational,
    FullFeature,
}

impl Stage {
    fn from_bits(b: u8) -> Option<Stage> {
        match b & 3 {
            0 => Some(Stage::Security),
            1 => Some(Stage::Operational),
            3 => Some(Stage::FullFeature),
            _ => None,
        }
    }
    fn bits(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::FullFeature => 3,
        }
    }
}

/// Login Request (RFC 7143 §11.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginReq {
    pub transit: bool,
    pub continue_: bool,
    pub csg: Stage,
    pub nsg: Option<Stage>,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    pub tsih: Tsih,
    pub itt: Itt,
    pub cid: Cid,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

/// Text Request (RFC 7143 §11.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextReq {
    pub immediate: bool,
    pub final_: bool,
    pub continue_: bool,
    pub itt: Itt,
    pub ttt: Ttt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

/// Logout reasons (RFC 7143 §11.14.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogoutReason {
    CloseSession,
    CloseConnection,
    RemoveForRecovery,
    Other(u8),
}

/// Logout Request (RFC 7143 §11.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutReq {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: Itt,
    pub cid: Cid,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

/// SNACK Request (RFC 7143 §11.16); only rejected at ErrorRecoveryLevel 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snack {
    pub itt: Itt,
}

/// Every PDU an initiator may send, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    NopOut(NopOut),
    ScsiCmd(ScsiCmd),
    TaskMgmt(TaskMgmt),
    Login(LoginReq),
    Text(TextReq),
    DataOut(DataOut),
    Logout(LogoutReq),
    Snack(Snack),
}

impl Request {
    /// Parses a header (after [`Frame::parse`] accepted its framing).
    pub fn parse(b: &[u8; BHS_LEN]) -> Result<Request, PduError> {
        let immediate = b[0] & 0x40 != 0;
        let f = b[1] & 0x80 != 0;
        let lun = Lun::from_wire(b[8..16].try_into().expect("8 bytes"));
        let itt = Itt(be32(b, 16));
        Ok(match b[0] & 0x3f {
            op::NOP_OUT => Request::NopOut(NopOut {
                immediate,
                lun,
                itt,
                ttt: Ttt(be32(b, 20)),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
            }),
            op::SCSI_CMD => Request::ScsiCmd(ScsiCmd {
                immediate,
                final_: f,
                read: b[1] & 0x40 != 0,
                write: b[1] & 0x20 != 0,
                attr: TaskAttr::from_bits(b[1]),
                lun,
                itt,
                expected_len: be32(b, 20),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
                cdb: b[32..48].try_into().expect("16 bytes"),
            }),
            op::TASK_MGMT => Request::TaskMgmt(TaskMgmt {
                immediate,
                function: TmfFunction::from_code(b[1] & 0x7f),
                lun,
                itt,
                referenced_itt: Itt(be32(b, 20)),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
                ref_cmd_sn: CmdSn(be32(b, 32)),
            }),
            op::LOGIN => Request::Login(LoginReq {
                transit: f,
                continue_: b[1] & 0x40 != 0,
                csg: Stage::from_bits(b[1] >> 2).ok_or(PduError::InvalidField("login CSG"))?,
                nsg: Stage::from_bits(b[1]),
                version_max: b[2],
                version_min: b[3],
                isid: Isid(b[8..14].try_into().expect("6 bytes")),
                tsih: Tsih(be16(b, 14)),
                itt,
                cid: Cid(be16(b, 20)),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
            }),
            op::TEXT => Request::Text(TextReq {
                immediate,
                final_: f,
                continue_: b[1] & 0x40 != 0,
                itt,
                ttt: Ttt(be32(b, 20)),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
            }),
            op::DATA_OUT => Request::DataOut(DataOut {
                final_: f,
                lun,
                itt,
                ttt: Ttt(be32(b, 20)),
                exp_stat_sn: StatSn(be32(b, 28)),
                data_sn: DataSn(be32(b, 36)),
                buffer_offset: be32(b, 40),
            }),
            op::LOGOUT => Request::Logout(LogoutReq {
                immediate,
                reason: match b[1] & 0x7f {
                    0 => LogoutReason::CloseSession,
                    1 => LogoutReason::CloseConnection,
                    2 => LogoutReason::RemoveForRecovery,
                    o => LogoutReason::Other(o),
                },
                itt,
                cid: Cid(be16(b, 20)),
                cmd_sn: CmdSn(be32(b, 24)),
                exp_stat_sn: StatSn(be32(b, 28)),
            }),
            op::SNACK => Request::Snack(Snack { itt }),
            other => return Err(PduError::UnknownOpcode(other)),
        })
    }
}

/// Window fields every target PDU that carries them gets stamped with when it is queued.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqFields {
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
}

/// A target PDU header under construction. Builders fill the opcode-specific fields; the
/// data segment length is set from the payload actually attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl Bhs {
    fn new(opcode: u8, flags: u8) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode;
        b[1] = flags;
        Bhs(b)
    }

    /// Sets DataSegmentLength (24 bits; callers never exceed the negotiated maximum).
    pub fn set_data_len(&mut self, len: usize) {
        assert!(len < (1 << 24), "data segment length exceeds 24 bits");
        self.0[5] = (len >> 16) as u8;
        self.0[6] = (len >> 8) as u8;
        self.0[7] = len as u8;
    }

    /// DataSegmentLength as set.
    pub fn data_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0] & 0x3f
    }

    /// Stamps StatSN, ExpCmdSN and MaxCmdSN at offsets 24, 28, 32.
    pub fn set_seq(&mut self, s: SeqFields) {
        put32(&mut self.0, 24, s.stat_sn.0);
        put32(&mut self.0, 28, s.exp_cmd_sn.0);
        put32(&mut self.0, 32, s.max_cmd_sn.0);
    }

    /// Stamps only ExpCmdSN and MaxCmdSN (Data-In without status, R2T keep StatSN as set).
    pub fn set_window(&mut self, exp: CmdSn, max: CmdSn) {
        put32(&mut self.0, 28, exp.0);
        put32(&mut self.0, 32, max.0);
    }

    /// Whether this PDU carries a StatSN that advances the connection's counter.
    pub fn consumes_stat_sn(&self) -> bool {
        match self.opcode() {
            op::DATA_IN => self.0[1] & 0x01 != 0,
            op::R2T => false,
            op::NOP_IN => self.0[16..20] != [0xff; 4],
            _ => true,
        }
    }

    /// SCSI Response (§11.4). `residual`: positive = underflow, negative = overflow.
    pub fn scsi_response(itt: Itt, status: u8, residual: i64) -> Bhs {
        let mut b = Bhs::new(op::SCSI_RSP, 0x80);
        b.0[2] = 0; // Command Completed at Target
        b.0[3] = status;
        put32(&mut b.0, 16, itt.0);
        set_residual(&mut b, residual);
        b
    }

    /// Data-In (§11.7). With `status`, the S bit carries the command's status (phase
    /// collapse); `residual` as in [`Bhs::scsi_response`].
    pub fn data_in(
        itt: Itt,
        lun: Lun,
        data_sn: DataSn,
        offset: u32,
        final_: bool,
        status: Option<(u8, i64)>,
    ) -> Bhs {
        let mut flags = if final_ { 0x80 } else { 0 };
        if status.is_some() {
            flags |= 0x01;
        }
        let mut b = Bhs::new(op::DATA_IN, flags);
        b.0[8..16].copy_from_slice(&lun.to_wire());
        put32(&mut b.0, 16, itt.0);
        put32(&mut b.0, 20, Ttt::RESERVED.0);
        put32(&mut b.0, 36, data_sn.0);
        put32(&mut b.0, 40, offset);
        if let Some((st, residual)) = status {
            b.0[3] = st;
            set_residual(&mut b, residual);
        }
        b
    }

    /// Ready To Transfer (§11.8).
    pub fn r2t(itt: Itt, lun: Lun, ttt: Ttt, r2t_sn: DataSn, offset: u32, len: u32) -> Bhs {
        let mut b = Bhs::new(op::R2T, 0x80);
        b.0[8..16].copy_from_slice(&lun.to_wire());
        put32(&mut b.0, 16, itt.0);
        put32(&mut b.0, 20, ttt.0);
        put32(&mut b.0, 36, r2t_sn.0);
        put32(&mut b.0, 40, offset);
        put32(&mut b.0, 44, len);
        b
    }

    /// NOP-In (§11.19): an answer to a NOP-Out (`itt` echoed, TTT reserved) or a ping
    /// (`itt` reserved, a TTT the initiator must echo).
    pub fn nop_in(itt: Itt, ttt: Ttt, lun: Lun) -> Bhs {
        let mut b = Bhs::new(op::NOP_IN, 0x80);
        b.0[8..16].copy_from_slice(&lun.to_wire());
        put32(&mut b.0, 16, itt.0);
        put32(&mut b.0, 20, ttt.0);
        b
    }

    /// Task Management Function Response (§11.6).
    pub fn tmf_response(itt: Itt, response: u8) -> Bhs {
        let mut b = Bhs::new(op::TASK_MGMT_RSP, 0x80);
        b.0[2] = response;
        put32(&mut b.0, 16, itt.0);
        b
    }

    /// Login Response (§11.13).
    #[allow(clippy::too_many_arguments)]
    pub fn login_response(
        transit: bool,
        csg: Stage,
        nsg: Stage,
        isid: Isid,
        tsih: Tsih,
        itt: Itt,
        status_class: u8,
        status_detail: u8,
    ) -> Bhs {
        let mut flags = (csg.bits() << 2) | if transit { 0x80 | nsg.bits() } else { 0 };
        if !transit {
            flags &= !0x03;
        }
        let mut b = Bhs::new(op::LOGIN_RSP, flags);
        b.0[2] = 0; // VersionMax
        b.0[3] = 0; // VersionActive
        b.0[8..14].copy_from_slice(&isid.0);
        put16(&mut b.0, 14, tsih.0);
        put32(&mut b.0, 16, itt.0);
        b.0[36] = status_class;
        b.0[37] = status_detail;
        b
    }

    /// Text Response (§11.11). `continue_` with a TTT when more text follows.
    pub fn text_response(itt: Itt, ttt: Ttt, final_: bool, continue_: bool) -> Bhs {
        let mut flags = 0;
        if final_ {
            flags |= 0x80;
        }
        if continue_ {
            flags |= 0x40;
        }
        let mut b = Bhs::new(op::TEXT_RSP, flags);
        put32(&mut b.0, 16, itt.0);
        put32(&mut b.0, 20, ttt.0);
        b
    }

    /// Logout Response (§11.15).
    pub fn logout_response(itt: Itt, response: u8, time2wait: u16, time2retain: u16) -> Bhs {
        let mut b = Bhs::new(op::LOGOUT_RSP, 0x80);
        b.0[2] = response;
        put32(&mut b.0, 16, itt.0);
        put16(&mut b.0, 40, time2wait);
        put16(&mut b.0, 42, time2retain);
        b
    }

    /// Reject (§11.17); the rejected header goes in the data segment.
    pub fn reject(reason: RejectReason) -> Bhs {
        let mut b = Bhs::new(op::REJECT, 0x80);
        b.0[2] = reason as u8;
        put32(&mut b.0, 16, 0xffff_ffff);
        b
    }

    /// Asynchronous Message (§11.9), e.g. event 1 "logout requested" with Parameter3 =
    /// Time2Retain.
    pub fn async_message(lun: Lun, event: u8, param1: u16, param2: u16, param3: u16) -> Bhs {
        let mut b = Bhs::new(op::ASYNC, 0x80);
        b.0[8..16].copy_from_slice(&lun.to_wire());
        put32(&mut b.0, 16, 0xffff_ffff);
        b.0[36] = event;
        put16(&mut b.0, 38, param1);
        put16(&mut b.0, 40, param2);
        put16(&mut b.0, 42, param3);
        b
    }
}

fn set_residual(b: &mut Bhs, residual: i64) {
    if residual > 0 {
        b.0[1] |= 0x02; // U: underflow
        put32(&mut b.0, 44, u32::try_from(residual).unwrap_or(u32::MAX));
    } else if residual < 0 {
        b.0[1] |= 0x04; // O: overflow
        put32(&mut b.0, 44, u32::try_from(-residual).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scsi_cmd_bytes() -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = op::SCSI_CMD;
        b[1] = 0x80 | 0x40 | 1;
        b[9] = 3;
        b[16..20].copy_from_slice(&7u32.to_be_bytes());
        b[20..24].copy_from_slice(&4096u32.to_be_bytes());
        b[24..28].copy_from_slice(&100u32.to_be_bytes());
        b[32] = 0x28;
        b
    }

    #[test]
    fn parses_scsi_command() {
        let b = scsi_cmd_bytes();
        let f = Frame::parse(&b, 8192).unwrap();
        assert_eq!(f.opcode, op::SCSI_CMD);
        assert_eq!(f.total_len(false, false), 48);
        match Request::parse(&b).unwrap() {
            Request::ScsiCmd(c) => {
                assert!(c.final_ && c.read && !c.write);
                assert_eq!(c.attr, TaskAttr::Simple);
                assert_eq!(c.lun, Lun(3));
                assert_eq!(c.itt, Itt(7));
                assert_eq!(c.expected_len, 4096);
                assert_eq!(c.cmd_sn, CmdSn(100));
                assert_eq!(c.cdb[0], 0x28);
            }
            other => panic!("wrong type {other:?}"),
        }
    }

    #[test]
    fn framing_checks_limits_before_sizing() {
        let mut b = scsi_cmd_bytes();
        b[5] = 0x01; // 65536 bytes
        assert_eq!(
            Frame::parse(&b, 8192),
            Err(PduError::DataSegmentTooLong {
                len: 65536,
                max: 8192
            })
        );
        b[5] = 0;
        b[7] = 5;
        let f = Frame::parse(&b, 8192).unwrap();
        assert_eq!(f.padded_data_len(), 8);
        assert_eq!(f.total_len(true, true), 48 + 4 + 8 + 4);
        b[4] = MAX_AHS_WORDS + 1;
        assert_eq!(
            Frame::parse(&b, 8192),
            Err(PduError::AhsTooLong(MAX_AHS_WORDS + 1))
        );
    }

    #[test]
    fn rejects_target_opcodes_from_initiator() {
        let mut b = [0u8; BHS_LEN];
        b[0] = op::DATA_IN;
        assert_eq!(
            Request::parse(&b),
            Err(PduError::UnknownOpcode(op::DATA_IN))
        );
    }

    #[test]
    fn builds_data_in_with_status_and_underflow() {
        let b = Bhs::data_in(Itt(9), Lun(1), DataSn(2), 8192, true, Some((0, 512)));
        assert_eq!(b.opcode(), op::DATA_IN);
        assert_eq!(b.0[1], 0x80 | 0x02 | 0x01);
        assert_eq!(be32(&b.0, 44), 512);
        assert_eq!(be32(&b.0, 40), 8192);
        assert_eq!(be32(&b.0, 36), 2);
        assert!(b.consumes_stat_sn());
        let nb = Bhs::data_in(Itt(9), Lun(1), DataSn(0), 0, false, None);
        assert!(!nb.consumes_stat_sn());
    }

    #[test]
    fn builds_response_with_overflow_and_seq() {
        let mut b = Bhs::scsi_response(Itt(1), 2, -100);
        b.set_seq(SeqFields {
            stat_sn: StatSn(5),
            exp_cmd_sn: CmdSn(6),
            max_cmd_sn: CmdSn(517),
        });
        b.set_data_len(20);
        assert_eq!(b.0[1], 0x80 | 0x04);
        assert_eq!(be32(&b.0, 44), 100);
        assert_eq!(be32(&b.0, 24), 5);
        assert_eq!(be32(&b.0, 32), 517);
        assert_eq!(b.data_len(), 20);
    }

    #[test]
    fn login_request_round_trip_fields() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x40 | op::LOGIN;
        b[1] = 0x80 | (1 << 2) | 3;
        b[8..14].copy_from_slice(&[0x40, 0, 1, 0x37, 0, 0]);
        b[20..22].copy_from_slice(&1u16.to_be_bytes());
        match Request::parse(&b).unwrap() {
            Request::Login(l) => {
                assert!(l.transit);
                assert_eq!(l.csg, Stage::Operational);
                assert_eq!(l.nsg, Some(Stage::FullFeature));
                assert_eq!(l.isid.hex(), "400001370000");
                assert_eq!(l.cid, Cid(1));
            }
            other => panic!("wrong type {other:?}"),
        }
        b[1] = 2 << 2;
        assert_eq!(Request::parse(&b), Err(PduError::InvalidField("login CSG")));
    }

    proptest::proptest! {
        #[test]
        fn any_header_parses_or_errors(bytes in proptest::collection::vec(proptest::num::u8::ANY, BHS_LEN)) {
            let b: [u8; BHS_LEN] = bytes.try_into().unwrap();
            let _ = Frame::parse(&b, 1 << 24);
            let _ = Request::parse(&b);
        }
    }
}
