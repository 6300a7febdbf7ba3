//! Target `scsi_cdb`: CDB decoding (`scsi::cdb::parse`) and whole-command execution
//! (`scsi::execute` / `scsi::complete`) against an in-memory disk LU (null backing store, 1 TiB)
//! and the LUN 0 controller, from two nexuses, so reservations, persistent reservations, mode
//! pages and unit attentions carry state from one command to the next.
//!
//! Checks: no panic; CHECK CONDITION carries sense and GOOD none; generated data stays within
//! the largest allocation length; every backing-store operation lies inside the LU and its
//! Data-Out ranges inside the Data-Out the initiator sent; no read larger than the advertised
//! MAXIMUM TRANSFER LENGTH.

use crate::input::Reader;
use curve_tgt::backing::{BlockIo, BsOFlags, IoResult};
use curve_tgt::stores;
use curve_tgt::buf::BufPool;
use curve_tgt::scsi::inquiry::MAX_XFER_BYTES;
use curve_tgt::scsi::lu::LuInit;
use curve_tgt::scsi::{
    self, cdb, DataIn, DeviceType, ExecCtx, LogicalUnit, Lun, NexusId, NexusState, Outcome,
    Response, ScsiCommand, ScsiStatus, TaskAttr,
};
use std::sync::Arc;

/// The disk LU every target that executes commands uses.
pub fn null_disk(tid: u32, lun: Lun, block_size: u32) -> LogicalUnit {
    let b = stores::open("null", "/dev/null", BsOFlags::default()).expect("null store");
    LogicalUnit::new(LuInit {
        tid,
        lun,
        dev_type: DeviceType::Disk,
        backing: Some(b),
        block_size,
    })
    .expect("null disk")
}

/// A nexus for initiator number `i` of target `tid`.
pub fn nexus(tid: u32, i: u8) -> NexusState {
    NexusState::new(NexusId {
        tid,
        initiator_port: Arc::from(format!("iqn.2026-01.fuzz:host{i},i,0x00000000000{i}")),
    })
}

/// Checks one backing-store operation against the LU and the command's Data-Out.
pub fn check_io(io: &BlockIo, lu: &LogicalUnit, data_out: usize) {
    let size = lu.size_bytes();
    let inside = |off: u64, len: u64| off.checked_add(len).is_some_and(|e| e <= size);
    let in_data = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= data_out;
    match io {
        BlockIo::Read { offset, len } => {
            assert!(inside(*offset, u64::from(*len)), "{io:?}");
            assert!(u64::from(*len) <= MAX_XFER_BYTES, "{io:?}");
        }
        BlockIo::Write { offset, data, .. } => {
            assert!(
                in_data(data) && inside(*offset, data.len() as u64),
                "{io:?}"
            );
        }
        BlockIo::Flush => {}
        BlockIo::LbaStatus { offset, end, .. } => {
            assert!(offset <= end && *end <= size, "{io:?}");
        }
        BlockIo::Discard { ranges } => {
            assert!(ranges.iter().all(|(o, l)| inside(*o, *l)), "{io:?}");
        }
        BlockIo::WriteSame {
            offset, len, block, ..
        } => {
            assert!(in_data(block) && inside(*offset, *len), "{io:?}");
        }
        BlockIo::CompareAndWrite {
            offset,
            len,
            verify,
            write,
        } => {
            assert!(in_data(verify) && in_data(write), "{io:?}");
            assert!(inside(*offset, u64::from(*len)), "{io:?}");
        }
        BlockIo::OrWrite {
            offset, len, data, ..
        } => {
            assert!(in_data(data) && inside(*offset, u64::from(*len)), "{io:?}");
        }
        BlockIo::Verify {
            offset,
            len,
            compare,
        } => {
            assert!(compare.as_ref().is_none_or(in_data), "{io:?}");
            assert!(inside(*offset, u64::from(*len)), "{io:?}");
        }
    }
}

/// Checks a finished command's response.
pub fn check_response(r: &Response) {
    match r.status {
        ScsiStatus::CheckCondition => assert!(!r.sense.is_empty(), "{r:?}"),
        ScsiStatus::Good => assert!(r.sense.is_empty(), "{r:?}"),
        _ => {}
    }
    assert!(r.sense.len() <= 252, "{r:?}");
    if let DataIn::Bytes(b) = &r.data {
        assert!(
            b.len() as u64 <= MAX_XFER_BYTES,
            "{} bytes generated",
            b.len()
        );
    }
}

/// A read buffer as the backing store would fill it, for `complete`.
pub fn read_buf(pool: &BufPool, io: &BlockIo) -> Option<curve_tgt::buf::IoBuf> {
    match io {
        BlockIo::Read { len, .. } => Some(pool.alloc(*len as usize)),
        _ => None,
    }
}

/// An I/O result picked by the input.
pub fn io_result(sel: u8, io: &BlockIo) -> IoResult {
    match sel % 8 {
        0 => IoResult::Err(std::io::Error::from_raw_os_error(5)),
        1 => IoResult::Miscompare {
            offset: match io {
                BlockIo::CompareAndWrite { len, .. } | BlockIo::Verify { len, .. } => {
                    u64::from(*len / 2)
                }
                _ => 0,
            },
        },
        _ => IoResult::Ok,
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let bs = if r.bool() { 4096 } else { 512 };
    let disk = null_disk(1, Lun(1), bs);
    let ctrl = LogicalUnit::controller(1);
    let luns = [Lun(0), Lun(1)];
    let mut nexuses = [nexus(1, 1), nexus(1, 2)];
    let pool = BufPool::new();
    // Bounded: at most 64 commands.
    for _ in 0..64 {
        if r.is_empty() {
            break;
        }
        let op = r.u8();
        match op % 8 {
            6 => {
                let p = String::from_utf8_lossy(r.bytes(64)).into_owned();
                let _ = disk.apply_params(&p);
                continue;
            }
            7 => {
                if op & 0x10 != 0 {
                    disk.reset();
                } else {
                    disk.nexus_lost(&nexuses[usize::from(op >> 7)].id);
                }
                continue;
            }
            _ => {}
        }
        let cdb_bytes = r.bytes(64).to_vec();
        let flags = r.u8();
        let expected_len = r.u32() % (1 << 20);
        let data_out = r.bytes(8192).to_vec();
        let complete_with = r.u8();
        let _ = cdb::cdb_len(cdb_bytes.first().copied().unwrap_or(0));
        let _ = cdb::parse(&cdb_bytes);
        let (lun, lu) = match (op >> 3) % 4 {
            0 => (Lun(0), Some(&ctrl)),
            1 => (Lun(7), None),
            _ => (Lun(1), Some(&disk)),
        };
        if let Some(lu) = lu {
            let _ = scsi::data_out_len(&cdb_bytes, lu.block_size());
        }
        let nexus = &mut nexuses[usize::from(op >> 7)];
        let mut ctx = ExecCtx {
            tid: 1,
            lun,
            lu,
            luns: &luns,
            nexus,
        };
        let cmd = ScsiCommand {
            cdb: &cdb_bytes,
            data_out: &data_out,
            expected_len,
            read: flags & 1 != 0,
            write: flags & 2 != 0,
            attr: TaskAttr::from_bits(flags >> 2),
        };
        match scsi::execute(&mut ctx, &cmd) {
            Outcome::Done(resp) => check_response(&resp),
            Outcome::Io(io) => {
                let lu = lu.expect("I/O only for an existing LU");
                check_io(&io, lu, data_out.len());
                let result = io_result(complete_with, &io);
                let buf = match result {
                    IoResult::Ok => read_buf(&pool, &io),
                    _ => None,
                };
                let resp = scsi::complete(&mut ctx, &cmd, &io, result, buf);
                check_response(&resp);
            }
        }
    }
}
