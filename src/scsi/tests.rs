//! Command-level tests: whole commands through [`execute`] and [`complete`], checking status,
//! sense and the data lengths residuals are computed from.

use super::lu::LuUpdate;
use super::*;
use crate::backing::file::FileStore;
use crate::backing::null::NullStore;
use crate::backing::BsOFlags;
use proptest::prelude::*;
use std::sync::Arc;

fn nexus(name: &str) -> NexusState {
    NexusState::new(NexusId {
        tid: 1,
        initiator_port: Arc::from(format!("iqn.2024-01.test:{name},i,0x000000000001")),
    })
}

fn null_disk() -> LogicalUnit {
    let b = Arc::new(NullStore::new("/dev/null", BsOFlags::default()).unwrap());
    LogicalUnit::new(lu::LuInit {
        tid: 1,
        lun: Lun(1),
        dev_type: DeviceType::Disk,
        backing: Some(b),
        block_size: 512,
    })
    .unwrap()
}

fn file_disk(size: u64) -> (LogicalUnit, tempfile::NamedTempFile) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let b =
        Arc::new(FileStore::open("rdwr", f.path().to_str().unwrap(), BsOFlags::default()).unwrap());
    let lu = LogicalUnit::new(lu::LuInit {
        tid: 1,
        lun: Lun(1),
        dev_type: DeviceType::Disk,
        backing: Some(b),
        block_size: 512,
    })
    .unwrap();
    (lu, f)
}

const LUNS: &[Lun] = &[Lun(0), Lun(1)];

fn exec(lu: Option<&LogicalUnit>, n: &mut NexusState, cdb: &[u8], data_out: &[u8]) -> Outcome {
    let mut ctx = ExecCtx {
        tid: 1,
        lun: Lun(1),
        lu,
        luns: LUNS,
        nexus: n,
    };
    let cmd = ScsiCommand {
        cdb,
        data_out,
        expected_len: 1 << 20,
        read: true,
        write: !data_out.is_empty(),
        attr: TaskAttr::Simple,
    };
    execute(&mut ctx, &cmd)
}

fn done(o: Outcome) -> Response {
    match o {
        Outcome::Done(r) => r,
        Outcome::Io(io) => panic!("unexpected I/O {io:?}"),
    }
}

fn io(o: Outcome) -> BlockIo {
    match o {
        Outcome::Io(io) => io,
        Outcome::Done(r) => panic!("expected I/O, got {r:?}"),
    }
}

fn bytes(r: &Response) -> &[u8] {
    match &r.data {
        DataIn::Bytes(b) => b,
        d => panic!("no generated data: {d:?}"),
    }
}

/// (sense key, ASC, ASCQ) of a fixed-format CHECK CONDITION.
fn sense_of(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, ScsiStatus::CheckCondition, "{r:?}");
    (r.sense[2] & 0x0f, r.sense[12], r.sense[13])
}

fn good(r: &Response) {
    assert_eq!(r.status, ScsiStatus::Good, "{r:?}");
}

fn cdb10(opcode: u8, flags: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn cdb16(opcode: u8, flags: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

const TUR: [u8; 6] = [0; 6];

#[test]
fn standard_inquiry_defaults() {
    let lu = null_disk();
    let mut n = nexus("a");
    let r = done(exec(Some(&lu), &mut n, &[0x12, 0, 0, 0, 255, 0], &[]));
    good(&r);
    let d = bytes(&r);
    assert_eq!(d.len(), 66);
    assert_eq!(d[0], 0);
    assert_eq!(&d[8..16], b"IET     ");
    assert_eq!(&d[16..32], b"VIRTUAL-DISK    ");
    assert_eq!(&d[32..36], b"0001");
    assert_eq!(&d[58..64], &[0x04, 0xc0, 0x09, 0x60, 0x03, 0x00]);
    // Truncated to ALLOCATION LENGTH.
    let r = done(exec(Some(&lu), &mut n, &[0x12, 0, 0, 0, 10, 0], &[]));
    assert_eq!(bytes(&r).len(), 10);
    // Page code without EVPD.
    let r = done(exec(Some(&lu), &mut n, &[0x12, 0, 0x80, 0, 255, 0], &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn vpd_pages() {
    let lu = null_disk();
    let mut n = nexus("a");
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0, 0, 255, 0], &[]));
    assert_eq!(bytes(&r), &[0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0x80, 0, 255, 0], &[]));
    let d = bytes(&r);
    assert_eq!(d.len(), 40);
    assert!(d.ends_with(b"beaf11"));
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0x83, 0, 255, 0], &[]));
    let d = bytes(&r);
    assert_eq!(&d[4..8], &[2, 1, 0, 36]);
    assert_eq!(&d[8..24], b"IET     00010001");
    assert_eq!(&d[44..48], &[1, 3, 0, 8]);
    assert_eq!(&d[48..56], &[0x30, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(d[60] >> 4, 6);
    // B0: CAW 128, no unmap limits without thin provisioning.
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0xb0, 0, 255, 0], &[]));
    let d = bytes(&r);
    assert_eq!(d[5], 128);
    assert_eq!(&d[20..28], &[0; 8]);
    // Thin on a store that cannot unmap still advertises nothing.
    lu.apply_params("thin_provisioning=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0xb2, 0, 255, 0], &[]));
    assert_eq!(bytes(&r)[5], 0);
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0x99, 0, 255, 0], &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn thin_provisioning_on_file() {
    let (lu, _f) = file_disk(1 << 20);
    let mut n = nexus("a");
    lu.apply_params("thin_provisioning=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0xb2, 0, 255, 0], &[]));
    assert_eq!(bytes(&r)[5], 0xe4);
    let r = done(exec(Some(&lu), &mut n, &[0x12, 1, 0xb0, 0, 255, 0], &[]));
    assert_eq!(&bytes(&r)[24..28], &256u32.to_be_bytes());
    let rc16 = cdb16(0x9e, 0x10, 0, 32);
    let r = done(exec(Some(&lu), &mut n, &rc16, &[]));
    let d = bytes(&r);
    assert_eq!(u64::from_be_bytes(d[0..8].try_into().unwrap()), 2047);
    assert_eq!(d[14] & 0xc0, 0xc0);
    assert_eq!(d[13], 3);
    // UNMAP of two descriptors, one past the end.
    let mut p = vec![0u8; 8 + 32];
    p[1] = 6 + 32;
    p[3] = 32;
    p[8..16].copy_from_slice(&8u64.to_be_bytes());
    p[16..20].copy_from_slice(&8u32.to_be_bytes());
    p[24..32].copy_from_slice(&2040u64.to_be_bytes());
    p[32..36].copy_from_slice(&8u32.to_be_bytes());
    let un = cdb10(0x42, 0, 0, 40);
    let op = io(exec(Some(&lu), &mut n, &un, &p));
    assert_eq!(
        op,
        BlockIo::Discard {
            ranges: vec![(4096, 4096), (2040 * 512, 4096)]
        }
    );
    p[24..32].copy_from_slice(&2041u64.to_be_bytes());
    let r = done(exec(Some(&lu), &mut n, &un, &p));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    // Parameter list length shorter than the header.
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x42, 0, 0, 4), &p));
    assert_eq!(sense_of(&r), (5, 0x1a, 0));
    // WRITE SAME with UNMAP, 0 blocks = to the end.
    let ws = cdb16(0x93, 0x08, 2000, 0);
    // SBC-3 §5.43: UNMAP deallocates the range whatever the block holds (0xFF here).
    let op = io(exec(Some(&lu), &mut n, &ws, &[0xffu8; 512]));
    assert_eq!(
        op,
        BlockIo::Discard {
            ranges: vec![(2000 * 512, 48 * 512)]
        }
    );
    // A read-only LU refuses WRITE SAME UNMAP with DATA PROTECT (SBC-3 §4.11), also when
    // it is not provisioned.
    lu.apply_params("readonly=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &ws, &[0xffu8; 512]));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    lu.apply_params("thin_provisioning=0").unwrap();
    let r = done(exec(Some(&lu), &mut n, &ws, &[]));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    lu.apply_params("readonly=0,thin_provisioning=1").unwrap();
    // ... but its Data-Out must still be exactly one block.
    let r = done(exec(Some(&lu), &mut n, &ws, &[0xffu8; 1024]));
    assert_eq!(sense_of(&r), (5, 0x1a, 0));
    // GET LBA STATUS asks the store (an operation on its engine) for up to 3 extents (what
    // fits in 64 bytes); one deallocated extent (a sparse file) is one descriptor.
    let gls = cdb16(0x9e, 0x12, 0, 64);
    let end = lu.nr_blocks() << 9;
    assert_eq!(
        io(exec(Some(&lu), &mut n, &gls, &[])),
        BlockIo::LbaStatus {
            offset: 0,
            end,
            block: 512,
            max: 3
        }
    );
    let d = crate::scsi::sbc::lba_status_data(&lu, 0, &[(false, end)]);
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), 20);
    assert_eq!(d[20], 1);
}

#[test]
fn read_write_checks() {
    let (lu, _f) = file_disk(1 << 20); // 2048 blocks
    let mut n = nexus("a");
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x28, 0, 2047, 2), &[]));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x28, 0x20, 0, 1), &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb10(0x28, 0, 2, 3), &[])),
        BlockIo::Read {
            offset: 1024,
            len: 1536
        }
    );
    // READ(6) with length 0 reads 256 blocks.
    assert_eq!(
        io(exec(Some(&lu), &mut n, &[0x08, 0, 0, 1, 0, 0], &[])),
        BlockIo::Read {
            offset: 512,
            len: 256 * 512
        }
    );
    // READ(10) with 0 blocks is GOOD without I/O.
    good(&done(exec(Some(&lu), &mut n, &cdb10(0x28, 0, 0, 0), &[])));
    // ... but its LBA must still be a block of the medium (SBC-3 §4.5): capacity is refused.
    let cap = lu.nr_blocks() as u32;
    for op in [0x28u8, 0x2a, 0x2f, 0x34] {
        let r = done(exec(Some(&lu), &mut n, &cdb10(op, 0, cap, 0), &[]));
        assert_eq!(sense_of(&r), (5, 0x21, 0), "opcode {op:#x}");
    }
    good(&done(exec(
        Some(&lu),
        &mut n,
        &cdb10(0x28, 0, cap - 1, 0),
        &[],
    )));
    let data = vec![7u8; 1024];
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb16(0x8a, 0x08, 1, 2), &data)),
        BlockIo::Write {
            offset: 512,
            data: 0..1024,
            fua: true
        }
    );
    // Less Data-Out than the CDB asks for (EDTL < SPDTL, FCP-4 §9.4.2 a): the whole blocks
    // that arrived are written, the rest of the range is untouched.
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 2), &data[..512])),
        BlockIo::Write {
            offset: 0,
            data: 0..512,
            fua: false
        }
    );
    // No Data-Out at all: GOOD, nothing written (the residual tells the initiator).
    good(&done(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 1), &[])));
    // Data-Out ending inside a block: refused, nothing written (option b).
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 1), &data[..200]));
    assert_eq!(sense_of(&r), (5, 0x0e, 0x03));
    // More Data-Out than the CDB asks for (EDTL > SPDTL): only the CDB's blocks are written.
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 1), &data)),
        BlockIo::Write {
            offset: 0,
            data: 0..512,
            fua: false
        }
    );
    // WRITE AND VERIFY(10) follows the same rule.
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb10(0x2e, 0, 0, 2), &data[..512])),
        BlockIo::Write {
            offset: 0,
            data: 0..512,
            fua: false
        }
    );
    assert_eq!(data_out_len(&cdb10(0x2a, 0, 0, 2), 512), Some(1024));
    lu.apply_params("readonly=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 2), &data));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    // Zero blocks in range: still a write to a protected medium.
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, 0, 0), &[]));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    // Out of range on a protected medium: LBA OUT OF RANGE first (WRITE, WRITE AND VERIFY,
    // COMPARE AND WRITE).
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x2a, 0, cap - 1, 2), &data));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8e, 0, u64::MAX, 1), &data));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let mut caw = cdb16(0x89, 0, u64::from(cap), 0);
    caw[13] = 1;
    let r = done(exec(Some(&lu), &mut n, &caw, &data));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    lu.apply_params("readonly=0,online=0").unwrap();
    let r = done(exec(Some(&lu), &mut n, &cdb10(0x28, 0, 0, 1), &[]));
    assert_eq!(sense_of(&r), (2, 0x3a, 0));
    let r = done(exec(Some(&lu), &mut n, &TUR, &[]));
    assert_eq!(sense_of(&r), (2, 0x3a, 0));
}

#[test]
fn orwrite_checks() {
    let (lu, _f) = file_disk(1 << 20); // 2048 blocks
    let mut n = nexus("a");
    let data = vec![0xa5u8; 1024];
    // FUA set, obsolete FUA_NV (bit 1) ignored.
    assert_eq!(
        io(exec(Some(&lu), &mut n, &cdb16(0x8b, 0x0a, 3, 2), &data)),
        BlockIo::OrWrite {
            offset: 3 * 512,
            len: 1024,
            data: 0..1024,
            fua: true
        }
    );
    assert_eq!(data_out_len(&cdb16(0x8b, 0, 3, 2), 512), Some(1024));
    good(&done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0, 0, 0), &[])));
    for (lba, blocks) in [(2047, 2), (2049, 0), (u64::MAX, 1), (1 << 63, 1)] {
        let r = done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0, lba, blocks), &data));
        assert_eq!(sense_of(&r), (5, 0x21, 0), "lba {lba} blocks {blocks}");
    }
    // ORPROTECT without protection information.
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0x20, 0, 1), &data));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // The OR needs every byte: a short Data-Out is refused, nothing read or written.
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0, 0, 2), &data[..512]));
    assert_eq!(sense_of(&r), (5, 0x0e, 0x03));
    lu.apply_params("readonly=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0, 0, 1), &data));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8b, 0, 2048, 1), &data));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
}

#[test]
fn read_defect_data_is_empty() {
    let (lu, _f) = file_disk(1 << 20);
    let mut n = nexus("a");
    // (10): REQ_PLIST | REQ_GLIST, long block format (011b), header only.
    let mut c = [0u8; 10];
    c[0] = 0x37;
    c[2] = 0x18 | 3;
    c[8] = 32;
    let r = done(exec(Some(&lu), &mut n, &c, &[]));
    good(&r);
    assert_eq!(bytes(&r), &[0, 0x18 | 3, 0, 0]);
    // Allocation length truncates.
    c[8] = 2;
    assert_eq!(bytes(&done(exec(Some(&lu), &mut n, &c, &[]))), &[0, 0x1b]);
    // Reserved format 111b.
    c[2] = 7;
    let r = done(exec(Some(&lu), &mut n, &c, &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // (12): flags in byte 1, generation code and 4-byte length zero.
    let mut c = [0u8; 12];
    c[0] = 0xb7;
    c[1] = 0x08;
    c[9] = 32;
    let r = done(exec(Some(&lu), &mut n, &c, &[]));
    assert_eq!(bytes(&r), &[0, 0x08, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn compare_and_write_and_completion() {
    let (lu, _f) = file_disk(1 << 20);
    let mut n = nexus("a");
    let mut c = cdb16(0x89, 0, 4, 0);
    c[13] = 2;
    let data = vec![1u8; 2048];
    let op = io(exec(Some(&lu), &mut n, &c, &data));
    assert_eq!(
        op,
        BlockIo::CompareAndWrite {
            offset: 2048,
            len: 1024,
            verify: 0..1024,
            write: 1024..2048
        }
    );
    c[13] = 129;
    let r = done(exec(Some(&lu), &mut n, &c, &data));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // SBC-3 §5.2: Data-Out must be exactly 2 × NUMBER OF LOGICAL BLOCKS blocks.
    for (nlb, len) in [(1u8, 2048usize), (3, 2048), (2, 2047), (0, 2048)] {
        c[13] = nlb;
        let r = done(exec(Some(&lu), &mut n, &c, &data[..len]));
        assert_eq!(sense_of(&r), (5, 0x24, 0), "nlb {nlb} len {len}");
    }
    // NUMBER OF LOGICAL BLOCKS 0 without Data-Out: nothing to do.
    c[13] = 0;
    good(&done(exec(Some(&lu), &mut n, &c, &[])));
    c[13] = 2;
    let cmd = ScsiCommand {
        cdb: &c,
        data_out: &data,
        expected_len: 2048,
        read: false,
        write: true,
        attr: TaskAttr::Simple,
    };
    let mut ctx = ExecCtx {
        tid: 1,
        lun: Lun(1),
        lu: Some(&lu),
        luns: LUNS,
        nexus: &mut n,
    };
    let r = complete(
        &mut ctx,
        &cmd,
        &op,
        IoResult::Miscompare { offset: 700 },
        None,
    );
    assert_eq!(sense_of(&r), (0x0e, 0x1d, 0));
    assert_eq!(r.sense[0], 0xf0);
    assert_eq!(&r.sense[3..7], &700u32.to_be_bytes());
    let r = complete(
        &mut ctx,
        &cmd,
        &op,
        IoResult::Err(std::io::Error::other("x")),
        None,
    );
    assert_eq!(sense_of(&r), (3, 0x0c, 0));
    let rd = BlockIo::Read { offset: 0, len: 4 };
    let buf = crate::buf::BufPool::new().from_slice(&[1, 2, 3, 4]);
    let r = complete(&mut ctx, &cmd, &rd, IoResult::Ok, Some(buf));
    good(&r);
    assert_eq!(r.data.len(), 4);
}

#[test]
fn descriptor_sense_format() {
    let lu = null_disk();
    let mut n = nexus("a");
    lu.apply_params("sense_format=1").unwrap();
    let r = done(exec(Some(&lu), &mut n, &[0xff; 16], &[]));
    assert_eq!(r.status, ScsiStatus::CheckCondition);
    assert_eq!(&r.sense[..4], &[0x72, 5, 0x20, 0]);
}

#[test]
fn unit_attentions_oldest_first_and_exemptions() {
    let lu = null_disk();
    let mut n = nexus("a");
    n.push_ua(Lun(1), UnitAttention::PowerOnReset);
    n.push_ua(Lun(1), UnitAttention::CapacityChanged);
    // INQUIRY does not report or clear it.
    good(&done(exec(Some(&lu), &mut n, &[0x12, 0, 0, 0, 36, 0], &[])));
    let r = done(exec(Some(&lu), &mut n, &TUR, &[]));
    assert_eq!(sense_of(&r), (6, 0x29, 0));
    // REQUEST SENSE returns the next one as data, and clears it.
    let r = done(exec(Some(&lu), &mut n, &[0x03, 0, 0, 0, 252, 0], &[]));
    good(&r);
    let d = bytes(&r);
    assert_eq!((d[2], d[12], d[13]), (6, 0x2a, 0x09));
    good(&done(exec(Some(&lu), &mut n, &TUR, &[])));
    let r = done(exec(Some(&lu), &mut n, &[0x03, 0, 0, 0, 252, 0], &[]));
    assert_eq!(bytes(&r)[2], 0);
}

#[test]
fn absent_lun() {
    let mut n = nexus("a");
    let r = done(exec(None, &mut n, &[0x12, 0, 0, 0, 96, 0], &[]));
    assert_eq!(bytes(&r)[0], 0x7f);
    let r = done(exec(None, &mut n, &TUR, &[]));
    assert_eq!(sense_of(&r), (5, 0x25, 0));
    let r = done(exec(None, &mut n, &[0x03, 0, 0, 0, 18, 0], &[]));
    good(&r);
    assert_eq!(bytes(&r)[12], 0x25);
    let mut rl = [0u8; 12];
    rl[0] = 0xa0;
    rl[9] = 16;
    let r = done(exec(None, &mut n, &rl, &[]));
    assert_eq!(
        bytes(&r),
        &[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn report_luns_and_opcodes() {
    let lu = null_disk();
    let mut n = nexus("a");
    let mut rl = [0u8; 12];
    rl[0] = 0xa0;
    rl[9] = 15;
    assert_eq!(
        sense_of(&done(exec(Some(&lu), &mut n, &rl, &[]))),
        (5, 0x24, 0)
    );
    rl[9] = 255;
    let r = done(exec(Some(&lu), &mut n, &rl, &[]));
    assert_eq!(bytes(&r).len(), 24);
    let mut ro = [0u8; 12];
    ro[0] = 0xa3;
    ro[1] = 0x0c;
    ro[9] = 0xff;
    ro[8] = 0xff;
    let r = done(exec(Some(&lu), &mut n, &ro, &[]));
    let d = bytes(&r);
    let len = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, d.len() - 4);
    assert_eq!(len % 8, 0);
    // One command: READ(10).
    ro[2] = 1;
    ro[3] = 0x28;
    let r = done(exec(Some(&lu), &mut n, &ro, &[]));
    let d = bytes(&r);
    assert_eq!((d[1] & 7, d[3], d[4]), (3, 10, 0x28));
    // One command without SA for an opcode that has service actions.
    ro[3] = 0x9e;
    let r = done(exec(Some(&lu), &mut n, &ro, &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // The field pointer names REPORTING OPTIONS (CDB byte 2; SPC-4 §4.5.2.4.2).
    assert_eq!(&r.sense[15..18], &[0xc0, 0, 2]);
    // Service-action reporting for an opcode without service actions (TEST UNIT READY).
    ro[2] = 2;
    ro[3] = 0;
    let r = done(exec(Some(&lu), &mut n, &ro, &[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    assert_eq!(&r.sense[15..18], &[0xc0, 0, 2]);
    // READ ATTRIBUTE is not implemented.
    let r = done(exec(Some(&lu), &mut n, &cdb16(0x8c, 0, 0, 1), &[]));
    assert_eq!(sense_of(&r), (5, 0x20, 0));
}

fn mode_sense6(lu: &LogicalUnit, n: &mut NexusState, page: u8, sub: u8) -> Response {
    done(exec(Some(lu), n, &[0x1a, 0, page, sub, 255, 0], &[]))
}

#[test]
fn mode_sense_and_select() {
    let lu = null_disk();
    let mut a = nexus("a");
    let r = mode_sense6(&lu, &mut a, 0x3f, 0);
    let d = bytes(&r).to_vec();
    assert_eq!(usize::from(d[0]) + 1, d.len());
    assert_eq!((d[2], d[3]), (0x10, 8));
    // Caching page, changeable values: only WCE.
    let r = mode_sense6(&lu, &mut a, 0x48, 0);
    assert_eq!(&bytes(&r)[12..15], &[0x08, 18, 0x04]);
    let r = mode_sense6(&lu, &mut a, 0xc8, 0);
    assert_eq!(sense_of(&r), (5, 0x39, 0));
    let r = mode_sense6(&lu, &mut a, 0x0a, 1);
    assert_eq!(&bytes(&r)[12..16], &[0x4a, 1, 0, 0x1c]);
    // Set SWP through MODE SELECT(6).
    let r = done(exec(Some(&lu), &mut a, &[0x1a, 0x08, 0x0a, 0, 255, 0], &[]));
    let mut p = bytes(&r).to_vec();
    p[0] = 0;
    p[4 + 4] |= 0x08;
    let r = done(exec(
        Some(&lu),
        &mut a,
        &[0x15, 0x10, 0, 0, p.len() as u8, 0],
        &p,
    ));
    good(&r);
    assert_eq!(r.effects.len(), 1);
    assert!(lu.swp());
    let r = done(exec(Some(&lu), &mut a, &cdb10(0x2a, 0, 0, 1), &[0; 512]));
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    assert_eq!(bytes(&mode_sense6(&lu, &mut a, 0x0a, 0))[2] & 0x80, 0x80);
    // A bit that is not changeable.
    p[4 + 5] ^= 0x01;
    let r = done(exec(
        Some(&lu),
        &mut a,
        &[0x15, 0x10, 0, 0, p.len() as u8, 0],
        &p,
    ));
    assert_eq!(sense_of(&r), (5, 0x26, 0));
}

fn pr_out(lu: &LogicalUnit, n: &mut NexusState, sa: u8, ty: u8, key: u64, sa_key: u64) -> Response {
    let mut c = [0u8; 10];
    c[0] = 0x5f;
    c[1] = sa;
    c[2] = ty;
    c[8] = 24;
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    done(exec(Some(lu), n, &c, &p))
}

fn can(lu: &LogicalUnit, n: &mut NexusState, write: bool) -> bool {
    let o = if write {
        exec(Some(lu), n, &cdb10(0x2a, 0, 0, 1), &[0; 512])
    } else {
        exec(Some(lu), n, &cdb10(0x28, 0, 0, 1), &[])
    };
    match o {
        Outcome::Io(_) => true,
        Outcome::Done(r) => {
            assert_eq!(r.status, ScsiStatus::ReservationConflict);
            false
        }
    }
}

#[test]
fn persistent_reservation_access_matrix() {
    // (type, registered non-holder read, write, unregistered read, write), SPC-4 Table 50.
    let table = [
        (1u8, true, false, true, false),
        (3, false, false, false, false),
        (5, true, true, true, false),
        (6, true, true, false, false),
        (7, true, true, true, false),
        (8, true, true, false, false),
    ];
    for (ty, rr, rw, ur, uw) in table {
        let lu = null_disk();
        let mut a = nexus("a");
        let mut b = nexus("b");
        good(&pr_out(&lu, &mut a, 6, 0, 0, 0xa));
        good(&pr_out(&lu, &mut b, 6, 0, 0, 0xb));
        good(&pr_out(&lu, &mut a, 1, ty, 0xa, 0));
        assert!(lu.reservation_held());
        assert!(
            can(&lu, &mut a, false) && can(&lu, &mut a, true),
            "type {ty}"
        );
        assert_eq!(
            (can(&lu, &mut b, false), can(&lu, &mut b, true)),
            (rr, rw),
            "type {ty}"
        );
        good(&pr_out(&lu, &mut b, 0, 0, 0xb, 0));
        assert_eq!(
            (can(&lu, &mut b, false), can(&lu, &mut b, true)),
            (ur, uw),
            "type {ty}"
        );
        // READ RESERVATION: key 0 for all-registrants types.
        let r = done(exec(
            Some(&lu),
            &mut a,
            &[0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0],
            &[],
        ));
        let d = bytes(&r);
        let key = u64::from_be_bytes(d[8..16].try_into().unwrap());
        assert_eq!(key, if ty >= 7 { 0 } else { 0xa });
        assert_eq!(d[21], ty);
        good(&pr_out(&lu, &mut a, 2, ty, 0xa, 0));
        assert!(!lu.reservation_held());
    }
}

#[test]
fn persistent_reservation_rules() {
    let lu = null_disk();
    let mut a = nexus("a");
    let mut b = nexus("b");
    // REGISTER with a wrong key while unregistered.
    assert_eq!(
        pr_out(&lu, &mut a, 0, 0, 5, 0xa).status,
        ScsiStatus::ReservationConflict
    );
    good(&pr_out(&lu, &mut a, 0, 0, 0, 0xa));
    good(&pr_out(&lu, &mut b, 0, 0, 0, 0xb));
    // RESERVE with an invalid type.
    assert_eq!(sense_of(&pr_out(&lu, &mut a, 1, 2, 0xa, 0)), (5, 0x24, 0));
    good(&pr_out(&lu, &mut a, 1, 1, 0xa, 0));
    assert_eq!(
        pr_out(&lu, &mut b, 1, 1, 0xb, 0).status,
        ScsiStatus::ReservationConflict
    );
    // RELEASE by the holder with the wrong type.
    assert_eq!(sense_of(&pr_out(&lu, &mut a, 2, 3, 0xa, 0)), (5, 0x26, 4));
    // READ KEYS.
    let r = done(exec(
        Some(&lu),
        &mut a,
        &[0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0],
        &[],
    ));
    let d = bytes(&r);
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), 2);
    assert_eq!(d.len(), 8 + 16);
    // b preempts a: a's registration goes, b holds the reservation, a gets a UA.
    let r = pr_out(&lu, &mut b, 4, 3, 0xb, 0xa);
    good(&r);
    assert_eq!(
        r.effects,
        vec![Effect::Ua {
            scope: UaScope::Only(a.id.clone()),
            lun: Some(Lun(1)),
            ua: UnitAttention::RegistrationsPreempted
        }]
    );
    assert!(!can(&lu, &mut a, false));
    // RESERVE(6) conflicts while registrations exist.
    let r = done(exec(Some(&lu), &mut b, &[0x16, 0, 0, 0, 0, 0], &[]));
    assert_eq!(r.status, ScsiStatus::ReservationConflict);
    // CLEAR drops everything.
    good(&pr_out(&lu, &mut b, 3, 0, 0xb, 0));
    assert!(!lu.reservation_held());
    // Parameter list length must be 24.
    let mut c = [0u8; 10];
    c[0] = 0x5f;
    c[8] = 20;
    let r = done(exec(Some(&lu), &mut a, &c, &[0; 24]));
    assert_eq!(sense_of(&r), (5, 0x1a, 0));
    // REPORT CAPABILITIES.
    let r = done(exec(
        Some(&lu),
        &mut a,
        &[0x5e, 2, 0, 0, 0, 0, 0, 0, 64, 0],
        &[],
    ));
    assert_eq!(&bytes(&r)[..2], &[0, 8]);
    // Unknown PR IN service action.
    let r = done(exec(
        Some(&lu),
        &mut a,
        &[0x5e, 9, 0, 0, 0, 0, 0, 0, 64, 0],
        &[],
    ));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn spc2_reservations() {
    let lu = null_disk();
    let mut a = nexus("a");
    let mut b = nexus("b");
    let reserve = [0x16, 0, 0, 0, 0, 0];
    let release = [0x17, 0, 0, 0, 0, 0];
    good(&done(exec(Some(&lu), &mut a, &reserve, &[])));
    good(&done(exec(Some(&lu), &mut a, &reserve, &[])));
    let r = done(exec(Some(&lu), &mut b, &reserve, &[]));
    assert_eq!(r.status, ScsiStatus::ReservationConflict);
    good(&done(exec(Some(&lu), &mut b, &release, &[])));
    let r = mode_sense6(&lu, &mut b, 0x3f, 0);
    assert_eq!(r.status, ScsiStatus::ReservationConflict);
    good(&mode_sense6(&lu, &mut a, 0x3f, 0));
    good(&done(exec(Some(&lu), &mut b, &[0x12, 0, 0, 0, 36, 0], &[])));
    lu.nexus_lost(&a.id);
    good(&done(exec(Some(&lu), &mut b, &reserve, &[])));
    lu.reset();
    assert!(!lu.reservation_held());
}

#[test]
fn removable_eject_and_prevent() {
    let lu = null_disk();
    let mut a = nexus("a");
    lu.apply_params("removable=1").unwrap();
    let prevent = [0x1e, 0, 0, 0, 1, 0];
    let eject = [0x1b, 0, 0, 0, 0x02, 0];
    let load = [0x1b, 0, 0, 0, 0x03, 0];
    good(&done(exec(Some(&lu), &mut a, &prevent, &[])));
    assert!(lu.show().prevent_removal);
    assert!(matches!(
        lu.apply_params("online=0"),
        Err(lu::LuParamError::PreventRemoval)
    ));
    assert_eq!(
        sense_of(&done(exec(Some(&lu), &mut a, &eject, &[]))),
        (5, 0x53, 2)
    );
    good(&done(exec(Some(&lu), &mut a, &[0x1e, 0, 0, 0, 0, 0], &[])));
    good(&done(exec(Some(&lu), &mut a, &eject, &[])));
    assert_eq!(
        sense_of(&done(exec(Some(&lu), &mut a, &TUR, &[]))),
        (2, 0x3a, 0)
    );
    // Loading is refused too while a nexus prevents removal (SBC-3 §5.25, tgt).
    good(&done(exec(Some(&lu), &mut a, &prevent, &[])));
    assert_eq!(
        sense_of(&done(exec(Some(&lu), &mut a, &load, &[]))),
        (5, 0x53, 2)
    );
    good(&done(exec(Some(&lu), &mut a, &[0x1e, 0, 0, 0, 0, 0], &[])));
    good(&done(exec(Some(&lu), &mut a, &load, &[])));
    good(&done(exec(Some(&lu), &mut a, &TUR, &[])));
}

#[test]
fn write_same_checks() {
    let (lu, _f) = file_disk(1 << 20);
    let mut a = nexus("a");
    let blk = [0u8; 512];
    let r = done(exec(Some(&lu), &mut a, &cdb10(0x41, 0x08, 0, 1), &blk));
    assert_eq!(
        sense_of(&r),
        (5, 0x24, 0),
        "UNMAP without thin provisioning"
    );
    let r = done(exec(Some(&lu), &mut a, &cdb10(0x41, 0x10, 0, 1), &blk));
    assert_eq!(sense_of(&r), (5, 0x24, 0), "ANCHOR");
    let r = done(exec(Some(&lu), &mut a, &cdb10(0x41, 0, 0, 1), &blk[..100]));
    assert_eq!(sense_of(&r), (5, 0x1a, 0));
    let r = done(exec(Some(&lu), &mut a, &cdb10(0x41, 0, 2048, 1), &blk));
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let op = io(exec(Some(&lu), &mut a, &cdb10(0x41, 0, 2000, 0), &blk));
    assert_eq!(
        op,
        BlockIo::WriteSame {
            offset: 2000 * 512,
            len: 48 * 512,
            block: 0..512,
            unmap: false,
            block_size: 512
        }
    );
}

#[test]
fn params_and_show() {
    let (lu, f) = file_disk(1 << 20);
    assert!(matches!(
        lu.apply_params("vendor_id=X,bogus=1"),
        Err(lu::LuParamError::InvalidRequest(_))
    ));
    assert_eq!(lu.show().scsi_id, "IET     00010001", "nothing applied");
    assert!(matches!(
        lu.apply_params("disksize=100"),
        Err(lu::LuParamError::UnknownParam(_))
    ));
    assert!(matches!(
        lu.apply_params("path=/tmp/x"),
        Err(lu::LuParamError::Unsupported)
    ));
    lu.apply_params("targetOps vendor_id=NetEase,,product_id=CurveVolume,product_rev=2.0")
        .unwrap();
    assert_eq!(
        lu.apply_params("disksize=AUTO").unwrap(),
        LuUpdate::default()
    );
    f.as_file().set_len(2 << 20).unwrap();
    assert_eq!(
        lu.apply_params("disksize=auto").unwrap(),
        LuUpdate {
            capacity_changed: true
        }
    );
    lu.apply_params("mode_page=0x1c:0:10:8:0:0:0:0:0:0:0:0:1")
        .unwrap();
    let s = lu.show();
    assert_eq!(s.size_bytes, 2 << 20);
    assert_eq!(
        (s.type_name, s.block_size, s.bstype.as_str()),
        ("disk", 512, "rdwr")
    );
    let c = LogicalUnit::controller(1);
    let s = c.show();
    assert_eq!(
        (
            s.type_name,
            s.bstype.as_str(),
            s.path.as_str(),
            s.block_size,
            s.size_bytes
        ),
        ("controller", "null", "None", 1, 0)
    );
    assert_eq!(s.scsi_sn, "beaf10");
    assert!(s.online);
    // The controller answers INQUIRY with type 0Ch and refuses block commands.
    let mut a = nexus("a");
    let r = done(exec(Some(&c), &mut a, &[0x12, 0, 0, 0, 36, 0], &[]));
    assert_eq!(bytes(&r)[0], 0x0c);
    let r = done(exec(Some(&c), &mut a, &cdb10(0x28, 0, 0, 1), &[]));
    assert_eq!(sense_of(&r), (5, 0x20, 0));
    good(&done(exec(Some(&c), &mut a, &TUR, &[])));
}

proptest! {
    #[test]
    fn random_cdbs_never_panic(
        cdb in proptest::collection::vec(any::<u8>(), 0..24),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        absent in any::<bool>(),
    ) {
        let lu = null_disk();
        lu.apply_params("thin_provisioning=1").unwrap();
        let mut n = nexus("fuzz");
        let lu_ref = if absent { None } else { Some(&lu) };
        let _ = exec(lu_ref, &mut n, &cdb, &data);
    }

    #[test]
    fn random_opcode_bodies_never_panic(
        opcode in prop::sample::select(vec![
            0x03u8, 0x12, 0x15, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2f, 0x35, 0x41, 0x42,
            0x55, 0x5a, 0x5e, 0x5f, 0x89, 0x8a, 0x93, 0x9e, 0xa0, 0xa3,
        ]),
        rest in proptest::collection::vec(any::<u8>(), 15),
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let (lu, _f) = file_disk(1 << 16);
        lu.apply_params("thin_provisioning=1").unwrap();
        let mut n = nexus("fuzz");
        let mut cdb = vec![opcode];
        cdb.extend_from_slice(&rest);
        let _ = exec(Some(&lu), &mut n, &cdb, &data);
    }
}

#[test]
fn store_answers_become_sense() {
    // What an engine reports for an operation decides the status the initiator sees.
    let (lu, _f) = file_disk(1 << 20);
    let mut n = nexus("a");
    let cdb = cdb10(0x28, 0, 0, 1);
    let io = io(exec(Some(&lu), &mut n, &cdb, &[]));
    let cmd = ScsiCommand {
        cdb: &cdb,
        data_out: &[],
        expected_len: 512,
        read: true,
        write: false,
        attr: TaskAttr::Simple,
    };
    let mut ctx = ExecCtx {
        tid: 1,
        lun: Lun(1),
        lu: Some(&lu),
        luns: LUNS,
        nexus: &mut n,
    };
    // A store that cannot do the operation at all: ILLEGAL REQUEST, INVALID COMMAND OPERATION
    // CODE (not a medium error, not success).
    let r = complete(&mut ctx, &cmd, &io, IoResult::Unsupported, None);
    assert_eq!(sense_of(&r), (5, 0x20, 0));
    // A failed read: MEDIUM ERROR, UNRECOVERED READ ERROR.
    let e = std::io::Error::from_raw_os_error(libc::EIO);
    let r = complete(&mut ctx, &cmd, &io, IoResult::Err(e), None);
    assert_eq!(sense_of(&r), (3, 0x11, 0));
    // A cancelled operation (its task was aborted): TASK ABORTED, no data.
    let r = complete(&mut ctx, &cmd, &io, IoResult::Cancelled, None);
    assert_eq!(r.status, ScsiStatus::TaskAborted);
    assert!(r.data.is_empty());
}
