//! GET LBA STATUS on an O_DIRECT (`--bsoflags direct`) file LU: the store's extent scan runs
//! as an engine operation with an aligned buffer, so it works where an unaligned read would
//! fail with EINVAL (and the initiator would get MEDIUM ERROR).

use crate::common;
use common::initiator::{be32, login, read_pdu};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:lbastatus";

/// A SCSI Command PDU (simple attribute, LUN 1, final) with `flags` (0x40 read, 0x20 write).
fn command(itt: u32, cmd_sn: u32, exp_stat_sn: u32, cdb: &[u8], flags: u8, len: u32) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x01;
    h[1] = 0x80 | flags | 1;
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&len.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h[28..32].copy_from_slice(&exp_stat_sn.to_be_bytes());
    h[32..32 + cdb.len()].copy_from_slice(cdb);
    h
}

/// Reads PDUs until the status for `itt`; returns (status, Data-In bytes).
fn response(s: &mut TcpStream, itt: u32) -> (u8, Vec<u8>) {
    let mut data = Vec::new();
    for _ in 0..16 {
        let (h, d) = read_pdu(s).expect("response PDU");
        assert_eq!(be32(&h, 16), itt, "PDU for our command");
        match h[0] & 0x3f {
            0x25 => {
                data.extend_from_slice(&d);
                if h[1] & 0x01 != 0 {
                    return (h[3], data);
                }
            }
            0x21 => return (h[3], data),
            op => panic!("unexpected PDU opcode {op:#x}"),
        }
    }
    panic!("no status");
}

#[test]
fn get_lba_status_works_on_an_o_direct_file() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let img = t.sparse_file("direct.img", 8 << 20);
    t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "-E",
        "rdwr",
        "-b",
        img.to_str().unwrap(),
        "--bsoflags",
        "direct",
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (stat_sn, mut cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:lba");
    let exp = stat_sn.wrapping_add(1);
    // TEST UNIT READY takes the new nexus's unit attention.
    s.write_all(&command(1, cmd_sn, exp, &[0; 6], 0, 0))
        .unwrap();
    response(&mut s, 1);
    cmd_sn = cmd_sn.wrapping_add(1);
    // WRITE(10) 8 blocks (4 KiB of 0xab) at LBA 0, as immediate data.
    let mut w = command(
        2,
        cmd_sn,
        exp,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],
        0x20,
        4096,
    );
    w[5..8].copy_from_slice(&4096u32.to_be_bytes()[1..]);
    w.extend_from_slice(&[0xab; 4096]);
    s.write_all(&w).unwrap();
    assert_eq!(response(&mut s, 2).0, 0, "WRITE GOOD");
    cmd_sn = cmd_sn.wrapping_add(1);
    // GET LBA STATUS from LBA 0, room for 3 descriptors.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x12;
    cdb[13] = 56;
    s.write_all(&command(3, cmd_sn, exp, &cdb, 0x40, 56))
        .unwrap();
    let (status, d) = response(&mut s, 3);
    assert_eq!(status, 0, "GET LBA STATUS GOOD (not MEDIUM ERROR)");
    assert!(d.len() >= 40, "two descriptors: {d:?}");
    // First: LBA 0, mapped (provisioning status 0), the 8 written blocks; then the rest,
    // deallocated (a hole).
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 0);
    let first = u32::from_be_bytes(d[16..20].try_into().unwrap());
    assert_eq!(d[20] & 0x0f, 0, "mapped");
    assert_eq!(first, 8, "the 8 written blocks");
    assert_eq!(u64::from_be_bytes(d[24..32].try_into().unwrap()), 8);
    assert_eq!(d[36] & 0x0f, 1, "then deallocated");
}
