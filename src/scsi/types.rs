//! Newtypes and small enums for SCSI protocol numbers, so a LUN, an LBA and a byte count cannot
//! be mixed up.

/// A logical unit number as the configuration names it (tgtadm `--lun`), 0..=16383.
///
/// On the wire (SAM-5 §4.7) it is 8 bytes; tgt uses peripheral addressing below 256 and flat
/// addressing (`0x40 | hi`, `lo`) above, and so do we, so initiators see the same LUN numbers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lun(pub u64);

impl Lun {
    /// Largest LUN the flat addressing method can carry.
    pub const MAX: u64 = 0x3fff;

    /// Decodes the 8-byte LUN field of a SCSI Command or Task Management PDU.
    pub fn from_wire(raw: [u8; 8]) -> Lun {
        let method = raw[0] >> 6;
        match method {
            0 | 1 => Lun((u64::from(raw[0] & 0x3f) << 8) | u64::from(raw[1])),
            // Other addressing methods are not used by this target: map to a LUN that
            // never exists, so the command gets LOGICAL UNIT NOT SUPPORTED.
            _ => Lun(u64::MAX),
        }
    }

    /// Encodes the LUN for REPORT LUNS and PDU headers.
    pub fn to_wire(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        if self.0 < 256 {
            out[1] = self.0 as u8;
        } else {
            out[0] = 0x40 | ((self.0 >> 8) as u8 & 0x3f);
            out[1] = (self.0 & 0xff) as u8;
        }
        out
    }
}

/// A logical block address in units of the LU's logical block size.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lba(pub u64);

/// SCSI status byte (SAM-5 §5.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ScsiStatus {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    AcaActive = 0x30,
    TaskAborted = 0x40,
}

/// Task attribute from the SCSI Command PDU (RFC 7143 §11.3.1 ATTR field).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskAttr {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

impl TaskAttr {
    /// Decodes the 3-bit ATTR field.
    pub fn from_bits(bits: u8) -> TaskAttr {
        match bits & 7 {
            0 => TaskAttr::Untagged,
            1 => TaskAttr::Simple,
            2 => TaskAttr::Ordered,
            3 => TaskAttr::HeadOfQueue,
            4 => TaskAttr::Aca,
            _ => TaskAttr::Simple,
        }
    }
}

/// SCSI peripheral device type (SPC-4 §6.4.2), as tgtadm `-Y` names them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeviceType {
    Disk,
    Controller,
}

impl DeviceType {
    /// The PERIPHERAL DEVICE TYPE code.
    pub fn code(self) -> u8 {
        match self {
            DeviceType::Disk => 0x00,
            DeviceType::Controller => 0x0c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_round_trip() {
        for l in [0u64, 1, 255, 256, 1000, Lun::MAX] {
            assert_eq!(Lun::from_wire(Lun(l).to_wire()), Lun(l));
        }
        assert_eq!(Lun(1).to_wire(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun(256).to_wire(), [0x41, 0, 0, 0, 0, 0, 0, 0]);
    }
}
