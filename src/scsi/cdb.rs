//! CDB decoding: checks a CDB's length once, then returns a typed command whose fields are
//! named, so handlers never index raw initiator bytes.

use super::error::CmdError;

/// Operation codes this target knows (SPC-4 Annex E, SBC-3 Table 13).
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const FORMAT_UNIT: u8 = 0x04;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const SEND_DIAGNOSTIC: u8 = 0x1d;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNC_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PR_IN: u8 = 0x5e;
    pub const PR_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNC_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;

    /// SERVICE ACTION IN(16) service actions.
    pub const SAI_READ_CAPACITY_16: u8 = 0x10;
    pub const SAI_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN service actions.
    pub const MI_REPORT_OPCODES: u8 = 0x0c;
    pub const MI_REPORT_TMF: u8 = 0x0d;
}

/// The block range and flags common to READ, WRITE, VERIFY, PRE-FETCH and SYNCHRONIZE CACHE.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockRange {
    pub lba: u64,
    /// Number of logical blocks (already 256 for a zero READ/WRITE(6) length).
    pub blocks: u32,
    /// RDPROTECT / WRPROTECT / VRPROTECT: must be 0, this target has no protection information.
    pub protect: u8,
    /// Force Unit Access.
    pub fua: bool,
    /// BYTCHK (VERIFY, WRITE AND VERIFY).
    pub bytchk: u8,
}

/// A decoded CDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cdb {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: u32,
    },
    FormatUnit {
        fmtdata: bool,
        fmtpinfo: bool,
    },
    Read(BlockRange),
    Write(BlockRange),
    WriteVerify(BlockRange),
    Verify(BlockRange),
    PreFetch(BlockRange),
    SyncCache(BlockRange),
    Inquiry {
        evpd: bool,
        cmddt: bool,
        page: u8,
        alloc: u32,
    },
    ModeSelect {
        ten: bool,
        sp: bool,
        len: u32,
    },
    ModeSense {
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc: u32,
    },
    Reserve6,
    Release6,
    StartStop {
        power_condition: u8,
        loej: bool,
        start: bool,
    },
    SendDiagnostic {
        self_test_code: u8,
        self_test: bool,
        param_len: u32,
    },
    PreventAllow {
        prevent: u8,
    },
    ReadCapacity10 {
        lba: u32,
        pmi: bool,
    },
    ReadCapacity16 {
        alloc: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    WriteSame(WriteSame),
    Unmap {
        anchor: bool,
        len: u32,
    },
    CompareAndWrite(BlockRange),
    /// ORWRITE(16) (SBC-3 §5.8); `protect` is ORPROTECT.
    OrWrite(BlockRange),
    /// READ DEFECT DATA(10)/(12) (SBC-3 §5.12, §5.13).
    ReadDefectData {
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        alloc: u32,
    },
    PrIn {
        sa: u8,
        alloc: u32,
    },
    PrOut {
        sa: u8,
        scope: u8,
        pr_type: u8,
        len: u32,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReportOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: u32,
    },
    ReportTmf {
        repd: bool,
        alloc: u32,
    },
}

/// WRITE SAME (10)/(16) fields (SBC-3 §5.42, §5.43).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSame {
    pub lba: u64,
    /// 0 means "to the last logical block".
    pub blocks: u32,
    pub wrprotect: u8,
    pub anchor: bool,
    pub unmap: bool,
    pub pbdata: bool,
    pub lbdata: bool,
    /// NDOB (WRITE SAME(16) only): no Data-Out, the block is zeros.
    pub ndob: bool,
}

/// CDB length for an opcode's group code (SPC-4 §4.2.5.1); `None` for groups this target
/// does not implement (variable length, vendor specific).
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn range10(c: &[u8]) -> BlockRange {
    BlockRange {
        lba: u64::from(be32(c, 2)),
        blocks: u32::from(be16(c, 7)),
        protect: c[1] >> 5,
        fua: c[1] & 0x08 != 0,
        bytchk: (c[1] >> 1) & 3,
    }
}
fn range12(c: &[u8]) -> BlockRange {
    BlockRange {
        blocks: be32(c, 6),
        ..range10(c)
    }
}
fn range16(c: &[u8]) -> BlockRange {
    BlockRange {
        lba: be64(c, 2),
        blocks: be32(c, 10),
        protect: c[1] >> 5,
        fua: c[1] & 0x08 != 0,
        bytchk: (c[1] >> 1) & 3,
    }
}
fn range6(c: &[u8]) -> BlockRange {
    let blocks = match c[4] {
        0 => 256,
        n => u32::from(n),
    };
    BlockRange {
        lba: u64::from(be24(c, 1) & 0x1f_ffff),
        blocks,
        ..BlockRange::default()
    }
}

/// Decodes `cdb`. Fails with INVALID COMMAND OPERATION CODE for unknown opcodes and service
/// actions, and INVALID FIELD IN CDB when the CDB is shorter than its group's length.
pub fn parse(cdb: &[u8]) -> Result<Cdb, CmdError> {
    let opcode = *cdb.first().ok_or(CmdError::InvalidOpcode)?;
    let len = cdb_len(opcode).ok_or(CmdError::InvalidOpcode)?;
    if cdb.len() < len {
        return Err(CmdError::InvalidFieldInCdb);
    }
    let c = &cdb[..len];
    let cmd = match opcode {
        op::TEST_UNIT_READY => Cdb::TestUnitReady,
        op::REQUEST_SENSE => Cdb::RequestSense {
            desc: c[1] & 1 != 0,
            alloc: u32::from(c[4]),
        },
        op::FORMAT_UNIT => Cdb::FormatUnit {
            fmtpinfo: c[1] & 0x80 != 0,
            fmtdata: c[1] & 0x10 != 0,
        },
        op::READ_6 => Cdb::Read(range6(c)),
        op::WRITE_6 => Cdb::Write(range6(c)),
        op::READ_10 => Cdb::Read(range10(c)),
        op::READ_12 => Cdb::Read(range12(c)),
        op::READ_16 => Cdb::Read(range16(c)),
        op::WRITE_10 => Cdb::Write(range10(c)),
        op::WRITE_12 => Cdb::Write(range12(c)),
        op::WRITE_16 => Cdb::Write(range16(c)),
        op::WRITE_VERIFY_10 => Cdb::WriteVerify(range10(c)),
        op::WRITE_VERIFY_12 => Cdb::WriteVerify(range12(c)),
        op::WRITE_VERIFY_16 => Cdb::WriteVerify(range16(c)),
        op::VERIFY_10 => Cdb::Verify(range10(c)),
        op::VERIFY_12 => Cdb::Verify(range12(c)),
        op::VERIFY_16 => Cdb::Verify(range16(c)),
        op::PRE_FETCH_10 => Cdb::PreFetch(range10(c)),
        op::PRE_FETCH_16 => Cdb::PreFetch(range16(c)),
        op::SYNC_CACHE_10 => Cdb::SyncCache(range10(c)),
        op::SYNC_CACHE_16 => Cdb::SyncCache(range16(c)),
        op::INQUIRY => Cdb::Inquiry {
            evpd: c[1] & 1 != 0,
            cmddt: c[1] & 2 != 0,
            page: c[2],
            alloc: u32::from(be16(c, 3)),
        },
        op::MODE_SELECT_6 => Cdb::ModeSelect {
            ten: false,
            sp: c[1] & 1 != 0,
            len: u32::from(c[4]),
        },
        op::MODE_SELECT_10 => Cdb::ModeSelect {
            ten: true,
            sp: c[1] & 1 != 0,
            len: u32::from(be16(c, 7)),
        },
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
            let ten = opcode == op::MODE_SENSE_10;
            Cdb::ModeSense {
                ten,
                dbd: c[1] & 0x08 != 0,
                llbaa: ten && c[1] & 0x10 != 0,
                pc: c[2] >> 6,
                page: c[2] & 0x3f,
                subpage: c[3],
                alloc: if ten {
                    u32::from(be16(c, 7))
                } else {
                    u32::from(c[4])
                },
            }
        }
        op::RESERVE_6 => Cdb::Reserve6,
        op::RELEASE_6 => Cdb::Release6,
        op::START_STOP_UNIT => Cdb::StartStop {
            power_condition: c[4] >> 4,
            loej: c[4] & 2 != 0,
            start: c[4] & 1 != 0,
        },
        op::SEND_DIAGNOSTIC => Cdb::SendDiagnostic {
            self_test_code: c[1] >> 5,
            self_test: c[1] & 0x04 != 0,
            param_len: u32::from(be16(c, 3)),
        },
        op::PREVENT_ALLOW => Cdb::PreventAllow { prevent: c[4] & 3 },
        op::READ_CAPACITY_10 => Cdb::ReadCapacity10 {
            lba: be32(c, 2),
            pmi: c[8] & 1 != 0,
        },
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
            let sixteen = opcode == op::WRITE_SAME_16;
            Cdb::WriteSame(WriteSame {
                lba: if sixteen {
                    be64(c, 2)
                } else {
                    u64::from(be32(c, 2))
                },
                blocks: if sixteen {
                    be32(c, 10)
                } else {
                    u32::from(be16(c, 7))
                },
                wrprotect: c[1] >> 5,
                anchor: c[1] & 0x10 != 0,
                unmap: c[1] & 0x08 != 0,
                pbdata: c[1] & 0x04 != 0,
                lbdata: c[1] & 0x02 != 0,
                ndob: sixteen && c[1] & 0x01 != 0,
            })
        }
        op::UNMAP => Cdb::Unmap {
            anchor: c[1] & 1 != 0,
            len: u32::from(be16(c, 7)),
        },
        op::COMPARE_AND_WRITE => Cdb::CompareAndWrite(BlockRange {
            lba: be64(c, 2),
            blocks: u32::from(c[13]),
            protect: c[1] >> 5,
            fua: c[1] & 0x08 != 0,
            bytchk: 0,
        }),
        op::ORWRITE_16 => Cdb::OrWrite(BlockRange {
            // Bit 1 of byte 1 is the obsolete FUA_NV, not a BYTCHK.
            bytchk: 0,
            ..range16(c)
        }),
        op::READ_DEFECT_DATA_10 => Cdb::ReadDefectData {
            twelve: false,
            plist: c[2] & 0x10 != 0,
            glist: c[2] & 0x08 != 0,
            format: c[2] & 0x07,
            alloc: u32::from(be16(c, 7)),
        },
        // SBC-3 §5.13: the list flags are in byte 1 (bytes 2-5 are the ADDRESS DESCRIPTOR
        // INDEX, which an empty list has no use for).
        op::READ_DEFECT_DATA_12 => Cdb::ReadDefectData {
            twelve: true,
            plist: c[1] & 0x10 != 0,
            glist: c[1] & 0x08 != 0,
            format: c[1] & 0x07,
            alloc: be32(c, 6),
        },
        op::PR_IN => Cdb::PrIn {
            sa: c[1] & 0x1f,
            alloc: u32::from(be16(c, 7)),
        },
        op::PR_OUT => Cdb::PrOut {
            sa: c[1] & 0x1f,
            scope: c[2] >> 4,
            pr_type: c[2] & 0x0f,
            len: be32(c, 5),
        },
        op::SERVICE_ACTION_IN_16 => match c[1] & 0x1f {
            op::SAI_READ_CAPACITY_16 => Cdb::ReadCapacity16 { alloc: be32(c, 10) },
            op::SAI_GET_LBA_STATUS => Cdb::GetLbaStatus {
                lba: be64(c, 2),
                alloc: be32(c, 10),
            },
            _ => return Err(CmdError::InvalidFieldInCdb),
        },
        op::REPORT_LUNS => Cdb::ReportLuns {
            select: c[2],
            alloc: be32(c, 6),
        },
        op::MAINTENANCE_IN => match c[1] & 0x1f {
            op::MI_REPORT_OPCODES => Cdb::ReportOpcodes {
                rctd: c[2] & 0x80 != 0,
                options: c[2] & 0x07,
                opcode: c[3],
                sa: be16(c, 4),
                alloc: be32(c, 6),
            },
            op::MI_REPORT_TMF => Cdb::ReportTmf {
                repd: c[2] & 0x80 != 0,
                alloc: be32(c, 6),
            },
            _ => return Err(CmdError::InvalidFieldInCdb),
        },
        _ => return Err(CmdError::InvalidOpcode),
    };
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read6_zero_means_256() {
        let c = parse(&[op::READ_6, 0x01, 0x02, 0x03, 0, 0]).unwrap();
        assert_eq!(
            c,
            Cdb::Read(BlockRange {
                lba: 0x10203,
                blocks: 256,
                ..Default::default()
            })
        );
    }

    #[test]
    fn read16_fields() {
        let mut c = [0u8; 16];
        c[0] = op::READ_16;
        c[1] = 0x28; // RDPROTECT=1, FUA
        c[2..10].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        c[10..14].copy_from_slice(&9u32.to_be_bytes());
        let Cdb::Read(r) = parse(&c).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.lba, r.blocks, r.protect, r.fua),
            (0x1122_3344_5566_7788, 9, 1, true)
        );
    }

    #[test]
    fn short_cdb_and_unknown_opcode() {
        assert_eq!(
            parse(&[op::READ_10, 0, 0]),
            Err(CmdError::InvalidFieldInCdb)
        );
        assert_eq!(parse(&[]), Err(CmdError::InvalidOpcode));
        assert_eq!(parse(&[0x8c; 16]), Err(CmdError::InvalidOpcode));
        assert_eq!(parse(&[0xc0; 16]), Err(CmdError::InvalidOpcode));
    }

    proptest! {
        #[test]
        fn never_panics(cdb in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse(&cdb);
        }
    }
}
