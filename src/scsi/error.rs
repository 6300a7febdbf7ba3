//! Why a command failed, named by the rule the initiator (or the medium) broke. Each variant
//! maps to one status and, for CHECK CONDITION, one sense condition (SPC-4 Annex D codes).

use super::sense::{Sense, SenseKey};
use super::types::ScsiStatus;
use super::UnitAttention;

/// A command's failure. Handlers return `Result<_, CmdError>`; the dispatcher turns the error
/// into a [`super::Response`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CmdError {
    /// 20h/00h: the opcode or service action is not implemented for this device type.
    InvalidOpcode,
    /// 24h/00h: a CDB field holds a value this target does not accept (SPC-4 §4.5.2.4.2).
    InvalidFieldInCdb,
    /// 24h/00h with the field pointer at this CDB byte (SPC-4 §4.5.2.4.2).
    InvalidFieldInCdbAt(u16),
    /// 26h/00h: a parameter-list field holds a value this target does not accept.
    InvalidFieldInParamList,
    /// 1Ah/00h: the parameter list is shorter than its own headers say, or of a length the
    /// command forbids.
    ParamListLength,
    /// 0Eh/03h: the initiator sent less Data-Out than the CDB asks for (EDTL < transfer length).
    InvalidFieldInIu,
    /// 21h/00h: LBA plus transfer length runs past the last logical block (SBC-3 §4.5).
    LbaOutOfRange,
    /// 27h/00h: a write to a read-only LU or one with SWP set (SBC-3 §4.11).
    WriteProtected,
    /// NOT READY 3Ah/00h: the LU is offline or its medium was ejected.
    MediumNotPresent,
    /// 25h/00h: no logical unit at this LUN (SAM-5 §5.9.5).
    LunNotSupported,
    /// 39h/00h: MODE SENSE PC=saved or MODE SELECT SP=1; nothing is saved across power loss.
    SavingParamsUnsupported,
    /// 53h/02h: START STOP UNIT eject while a PREVENT ALLOW MEDIUM REMOVAL lock is held.
    MediumRemovalPrevented,
    /// 55h/04h: PERSISTENT RESERVE OUT REGISTER beyond the registration limit.
    InsufficientRegistrationResources,
    /// 26h/04h: PR OUT RELEASE by the holder with a type or scope other than the reservation's.
    InvalidReleaseOfPr,
    /// RESERVATION CONFLICT status: another nexus's reservation forbids the command
    /// (SPC-4 §5.9.1, SPC-2 §5.5.1).
    ReservationConflict,
    /// MISCOMPARE 1Dh/00h: COMPARE AND WRITE or VERIFY found different data at this offset.
    Miscompare { offset: u64 },
    /// MEDIUM ERROR 11h/00h: the backing store failed a read.
    ReadError,
    /// MEDIUM ERROR 0Ch/00h: the backing store failed a write.
    WriteError,
    /// ABORTED COMMAND 47h/05h PROTOCOL SERVICE CRC ERROR: the iSCSI layer ended the task
    /// because Data-Out PDUs were lost or out of sequence (RFC 7143 §11.4.7.2).
    ProtocolServiceCrc,
    /// UNIT ATTENTION: a pending condition for this nexus is reported instead of running the
    /// command (SAM-5 §5.14).
    UnitAttention(UnitAttention),
}

impl CmdError {
    /// The status byte.
    pub fn status(self) -> ScsiStatus {
        match self {
            CmdError::ReservationConflict => ScsiStatus::ReservationConflict,
            _ => ScsiStatus::CheckCondition,
        }
    }

    /// The sense condition, `None` for statuses that carry no sense data.
    pub fn sense(self) -> Option<Sense> {
        use SenseKey::*;
        let s = match self {
            CmdError::InvalidOpcode => Sense::new(IllegalRequest, 0x20, 0x00),
            CmdError::InvalidFieldInCdb => Sense::new(IllegalRequest, 0x24, 0x00),
            CmdError::InvalidFieldInCdbAt(byte) => Sense {
                cdb_field: Some(byte),
                ..Sense::new(IllegalRequest, 0x24, 0x00)
            },
            CmdError::InvalidFieldInParamList => Sense::new(IllegalRequest, 0x26, 0x00),
            CmdError::ParamListLength => Sense::new(IllegalRequest, 0x1a, 0x00),
            CmdError::InvalidFieldInIu => Sense::new(IllegalRequest, 0x0e, 0x03),
            CmdError::LbaOutOfRange => Sense::new(IllegalRequest, 0x21, 0x00),
            CmdError::WriteProtected => Sense::new(DataProtect, 0x27, 0x00),
            CmdError::MediumNotPresent => Sense::new(NotReady, 0x3a, 0x00),
            CmdError::LunNotSupported => Sense::new(IllegalRequest, 0x25, 0x00),
            CmdError::SavingParamsUnsupported => Sense::new(IllegalRequest, 0x39, 0x00),
            CmdError::MediumRemovalPrevented => Sense::new(IllegalRequest, 0x53, 0x02),
            CmdError::InsufficientRegistrationResources => Sense::new(IllegalRequest, 0x55, 0x04),
            CmdError::InvalidReleaseOfPr => Sense::new(IllegalRequest, 0x26, 0x04),
            CmdError::ReservationConflict => return None,
            CmdError::Miscompare { offset } => Sense {
                info: Some(offset),
                ..Sense::new(Miscompare, 0x1d, 0x00)
            },
            CmdError::ReadError => Sense::new(MediumError, 0x11, 0x00),
            CmdError::WriteError => Sense::new(MediumError, 0x0c, 0x00),
            CmdError::ProtocolServiceCrc => Sense::new(AbortedCommand, 0x47, 0x05),
            CmdError::UnitAttention(ua) => {
                let (asc, ascq) = ua.asc_ascq();
                Sense::new(UnitAttention, asc, ascq)
            }
        };
        Some(s)
    }
}
