//! `tgtadm --op stat` reports what an initiator actually did: a scripted initiator runs a
//! known mix of commands, then the LU, session and connection stat lines must carry exactly
//! those counts (tgt's columns and rules), and the latency table must count exactly the
//! READs and WRITEs.

use crate::common;
use common::initiator::{be32, login, read_pdu};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:stat";

/// A SCSI Command PDU (simple attribute, LUN 1) with optional immediate data.
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

fn rw10(opcode: u8, lba: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 8; // 8 blocks of 512 bytes: 4 KiB
    c
}

/// The numeric fields of the one stat line of `tid lun sid`.
fn lu_line(out: &str, sid: u32) -> Vec<u64> {
    let line = out
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 12 && f[0] == "1" && f[1] == "1" && f[2] == sid.to_string()
        })
        .unwrap_or_else(|| panic!("no stat line for sid {sid} in:\n{out}"));
    line.split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect()
}

#[test]
fn stat_counts_what_the_initiator_did() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let img = t.sparse_file("stat.img", 16 << 20);
    t.add_lun(1, 1, "rdwr", &img);

    // Idle: tgt's header only, no latency table (byte-compatible with tgt).
    let idle = t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "stat", "--mode", "target", "--tid", "1",
    ]);
    assert_eq!(
        idle,
        "tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs\n"
    );

    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (stat_sn, mut cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:stat");
    let exp_stat = stat_sn.wrapping_add(1);

    // TEST UNIT READY first: it takes the power-on unit attention (one CHECK CONDITION,
    // counted in errs) and moves no data.
    s.write_all(&command(100, cmd_sn, exp_stat, &[0u8; 6], 0, 0))
        .unwrap();
    cmd_sn = cmd_sn.wrapping_add(1);
    let (h, _) = read_pdu(&mut s).unwrap();
    assert_eq!(
        (h[0] & 0x3f, h[3]),
        (0x21, 0x02),
        "TUR ends in CHECK CONDITION"
    );

    // Three 4 KiB READ(10)s: each one Data-In with the status collapsed into it.
    for i in 0..3 {
        s.write_all(&command(
            i,
            cmd_sn,
            exp_stat,
            &rw10(0x28, i * 8),
            0x40,
            4096,
        ))
        .unwrap();
        cmd_sn = cmd_sn.wrapping_add(1);
        let (h, d) = read_pdu(&mut s).unwrap();
        assert_eq!(
            (h[0] & 0x3f, h[1] & 1, h[3]),
            (0x25, 1, 0),
            "Data-In with GOOD"
        );
        assert_eq!(d.len(), 4096);
    }
    // Two 4 KiB WRITE(10)s with the data sent immediately.
    for i in 0..2 {
        let mut pdu = command(10 + i, cmd_sn, exp_stat, &rw10(0x2a, i * 8), 0x20, 4096);
        pdu[5..8].copy_from_slice(&4096u32.to_be_bytes()[1..]);
        pdu.extend_from_slice(&[0x5a; 4096]);
        s.write_all(&pdu).unwrap();
        cmd_sn = cmd_sn.wrapping_add(1);
        let (h, _) = read_pdu(&mut s).unwrap();
        assert_eq!((h[0] & 0x3f, h[3]), (0x21, 0), "WRITE GOOD");
        assert_eq!(be32(&h, 16), 10 + i);
    }

    let conns = t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", "1",
    ]);
    let sid: u32 = conns
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .expect("a session")
        .trim()
        .parse()
        .unwrap();

    // LU stat: tgt's columns, read and write bytes and commands submitted and done.
    let out = t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "stat",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
    ]);
    assert_eq!(
        lu_line(&out, sid)[3..],
        [12288, 3, 12288, 3, 8192, 2, 8192, 2, 1],
        "{out}"
    );
    // The latency table counts the READs and WRITEs only.
    let lat: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("In-target latency"))
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lat.len(), 2, "{out}");
    assert_eq!(lat[0][..4], ["1", "1", "read", "3"], "{out}");
    assert_eq!(lat[1][..4], ["1", "1", "write", "2"], "{out}");
    for row in &lat {
        let p50: f64 = row[5].parse().unwrap();
        let max: f64 = row[9].parse().unwrap();
        assert!(p50 > 0.0 && p50 <= max, "{out}");
    }

    // Target and system stat show the same line.
    for args in [
        &[
            "--lld", "iscsi", "--op", "stat", "--mode", "target", "--tid", "1",
        ][..],
        &["--op", "stat", "--mode", "sys"][..],
    ] {
        let o = t.tgtadm_ok(args);
        assert_eq!(lu_line(&o, sid), lu_line(&out, sid), "{args:?}: {o}");
    }

    // Connection stat: 6 command PDUs, no Data-Out (all immediate), 3 Data-In, 3 SCSI
    // Responses; octets at least the payloads moved.
    let sid_s = sid.to_string();
    let c = t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "stat", "--mode", "conn", "--tid", "1", "--sid", &sid_s, "--cid",
        "0",
    ]);
    let f: Vec<u64> = c
        .lines()
        .nth(1)
        .expect("a connection line")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!((f[0], f[1]), (u64::from(sid), 0));
    assert!(f[2] >= 6 * 48 + 2 * 4096, "rx octets {c}");
    assert!(f[3] >= 6 * 48 + 3 * 4096, "tx octets {c}");
    assert_eq!(f[4..], [0, 3, 6, 3], "{c}");

    // Session stat: the LU line, an empty line, the connection line.
    let ss = t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "stat", "--mode", "session", "--tid", "1", "--sid", &sid_s,
    ]);
    assert_eq!(lu_line(&ss, sid), lu_line(&out, sid));
    assert!(ss.contains(&format!("\n\n{c}")), "{ss}");
}
