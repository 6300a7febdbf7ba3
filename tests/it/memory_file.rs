//! A file LU on a memory filesystem (/dev/shm) is read and written inline on the shard: the
//! data round-trips byte-exact and no io_uring worker thread (`iou-wrk-*`) is needed for it,
//! while the same LU with `CURVE_TGT_FILE_INLINE=0` does go through one (so the check can
//! see them).

use crate::common;
use common::initiator::{be32, login, read_pdu, scsi_cmd};
use common::{Tgtd, TgtdOpts};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:memfile";

/// A command PDU with its ExpStatSN set.
fn cmd(
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    flags: u8,
    edtl: u32,
    cdb: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut p = scsi_cmd(itt, cmd_sn, flags, edtl, cdb, data);
    p[28..32].copy_from_slice(&exp_stat_sn.to_be_bytes());
    p
}

/// Names of tgtd's threads.
fn threads(t: &Tgtd) -> Vec<String> {
    let dir = format!("/proc/{}/task", t.pid());
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// Writes 8 KiB at LBA 8 and reads them back through the target; checks the data in the
/// file and in the Data-In. Returns tgtd's thread names right after the I/O.
fn round_trip(inline: &str) -> Vec<String> {
    let shm = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
    let t = Tgtd::start_opts(&TgtdOpts {
        env: &[("CURVE_TGT_FILE_INLINE", inline)],
        ..TgtdOpts::default()
    });
    t.add_target(1, IQN);
    let lun = shm.path().join("lun.img");
    std::fs::File::create(&lun)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    t.add_lun(1, 1, "rdwr", &lun);

    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (stat_sn, mut cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:memfile");
    let mut exp = stat_sn.wrapping_add(1);
    // The nexus's first command reports POWER ON, RESET: spend it on a TEST UNIT READY.
    s.write_all(&cmd(9, cmd_sn, exp, 1, 0, &[0u8; 6], &[]))
        .unwrap();
    let (h, _) = read_pdu(&mut s).expect("TEST UNIT READY response");
    assert_eq!((h[0] & 0x3f, be32(&h, 16)), (0x21, 9));
    (cmd_sn, exp) = (cmd_sn.wrapping_add(1), be32(&h, 24).wrapping_add(1));

    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a; // WRITE(10), LBA 8, 16 blocks, all immediate data
    cdb[5] = 8;
    cdb[8] = 16;
    s.write_all(&cmd(1, cmd_sn, exp, 0x20 | 1, 8192, &cdb, &data))
        .unwrap();
    let (h, _) = read_pdu(&mut s).expect("WRITE response");
    assert_eq!(
        (h[0] & 0x3f, be32(&h, 16), h[3]),
        (0x21, 1, 0),
        "WRITE status GOOD"
    );
    (cmd_sn, exp) = (cmd_sn.wrapping_add(1), be32(&h, 24).wrapping_add(1));
    let file = std::fs::read(&lun).unwrap();
    assert!(
        file[4096..4096 + 8192] == data[..],
        "the file holds what was written"
    );

    cdb[0] = 0x28; // READ(10), same blocks
    s.write_all(&cmd(2, cmd_sn, exp, 0x40 | 1, 8192, &cdb, &[]))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..16 {
        let (h, d) = read_pdu(&mut s).expect("READ Data-In or response");
        match h[0] & 0x3f {
            0x25 => {
                got.extend_from_slice(&d);
                if h[1] & 0x01 != 0 {
                    assert_eq!(h[3], 0, "READ status GOOD in the Data-In");
                    break;
                }
            }
            0x21 => {
                assert_eq!(h[3], 0, "READ status GOOD");
                break;
            }
            op => panic!("unexpected PDU opcode {op:#x}"),
        }
    }
    assert!(got == data, "the READ returns what was written");
    threads(&t)
}

#[test]
fn tmpfs_file_lu_round_trips_without_io_worker_threads() {
    let inline = round_trip("1");
    assert!(
        !inline.iter().any(|n| n.starts_with("iou-wrk")),
        "an io_uring worker served a /dev/shm LU: {inline:?}"
    );
    let ring = round_trip("0");
    assert!(
        ring.iter().any(|n| n.starts_with("iou-wrk")),
        "with CURVE_TGT_FILE_INLINE=0 the ring's workers serve the LU: {ring:?}"
    );
}
