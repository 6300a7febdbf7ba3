//! A scripted initiator breaks the full-feature phase's rules on purpose (issue 11): commands
//! out of CmdSN order and duplicated, commands sent behind a Logout, a TARGET COLD RESET or a
//! data digest error, and text requests in pieces. Each test asserts what the initiator sees
//! on the wire and, for writes, what reached the medium.

use crate::common;
use common::initiator::{
    be32, login, login_with, logout_session, read_pdu, read_until_close, task_mgmt,
    test_unit_ready, text_req, text_value, write10_immediate,
};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:session";
const INI: &str = "iqn.2026-11.test:hostile-session";

/// A target with LUN 1 on a 1 MiB file; returns it and the file.
fn target() -> (Tgtd, PathBuf) {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let f = t.sparse_file("lun.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &f);
    (t, f)
}

fn connect(t: &Tgtd) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// RFC 1982 "a < b" for 32-bit serial numbers.
fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// Reads `n` SCSI Responses (the first command of a nexus may carry the power-on unit
/// attention); returns their ITTs in arrival order. Every PDU's MaxCmdSN must stay at or above
/// `max_cmd_sn`, which is raised to the highest seen (RFC 7143 §4.2.2.1: it never goes back).
fn read_responses(s: &mut TcpStream, n: usize, max_cmd_sn: &mut u32) -> Vec<u32> {
    let mut itts = Vec::with_capacity(n);
    while itts.len() < n {
        let (h, _) = read_pdu(s).unwrap_or_else(|e| {
            panic!(
                "{} of {n} responses, then the session stalled: {e}",
                itts.len()
            )
        });
        assert_eq!(h[0] & 0x3f, 0x21, "SCSI Response");
        assert!(h[3] == 0 || h[3] == 2, "SCSI status {:#x}", h[3]);
        let max = be32(&h, 32);
        assert!(
            !serial_lt(max, *max_cmd_sn),
            "MaxCmdSN went back from {max_cmd_sn} to {max}"
        );
        *max_cmd_sn = max;
        itts.push(be32(&h, 16));
    }
    itts
}

/// Issue 11 item 1: commands held behind a CmdSN gap used to shrink the window below what was
/// advertised, so later in-window commands were dropped and the session hung.
#[test]
fn every_command_inside_the_advertised_window_is_answered() {
    let (t, _) = target();
    let mut s = connect(&t);
    let (_, e, mut max) = login(&mut s, IQN, INI);
    assert!(max.wrapping_sub(e) >= 511, "window of 512 advertised");
    // CmdSN E+1 ..= E+257 first, then the gap E: all 258 are inside [E, E+511].
    let mut burst = Vec::new();
    for i in 1..=257u32 {
        burst.extend(test_unit_ready(i, e.wrapping_add(i)));
    }
    burst.extend(test_unit_ready(0, e));
    s.write_all(&burst).unwrap();
    let mut itts = read_responses(&mut s, 258, &mut max);
    itts.sort_unstable();
    assert_eq!(
        itts,
        (0..=257).collect::<Vec<_>>(),
        "each command answered once"
    );
    // The session goes on.
    s.write_all(&test_unit_ready(300, e.wrapping_add(258)))
        .unwrap();
    assert_eq!(read_responses(&mut s, 1, &mut max), [300]);
}

/// RFC 7143 §3.2.2.1: a non-immediate duplicate inside the window is silently ignored; it
/// must neither run nor stay held, nor cost the window a slot.
#[test]
fn a_duplicate_cmd_sn_is_ignored_and_holds_nothing() {
    let (t, _) = target();
    let mut s = connect(&t);
    let (_, e, mut max) = login(&mut s, IQN, INI);
    let mut burst = Vec::new();
    burst.extend(test_unit_ready(10, e.wrapping_add(1)));
    burst.extend(test_unit_ready(11, e.wrapping_add(1))); // duplicate, held one
    burst.extend(test_unit_ready(12, e));
    burst.extend(test_unit_ready(13, e.wrapping_add(2)));
    burst.extend(test_unit_ready(14, e.wrapping_add(2))); // duplicate, already run
    s.write_all(&burst).unwrap();
    assert_eq!(read_responses(&mut s, 3, &mut max), [12, 10, 13]);
    // Had the duplicates been kept, the next command's answer would not come first.
    s.write_all(&test_unit_ready(15, e.wrapping_add(3)))
        .unwrap();
    assert_eq!(read_responses(&mut s, 1, &mut max), [15]);
    // The window is whole again: MaxCmdSN = ExpCmdSN + 511 once nothing is outstanding.
    assert_eq!(max, e.wrapping_add(4).wrapping_add(511));
}

/// Sends `first` and a WRITE of 0xab bytes to LBA 0 in one segment; expects `answer` (an
/// opcode) and then the connection to close, the write never reaching the medium.
fn nothing_runs_after(t: &Tgtd, lun: &PathBuf, s: &mut TcpStream, first: Vec<u8>, answer: u8) {
    let mut wire = first;
    // The first request is immediate: the WRITE carries the same CmdSN.
    let cmd_sn = be32(&wire, 24);
    wire.extend(write10_immediate(99, cmd_sn, 0, &[0xab; 4096]));
    s.write_all(&wire).unwrap();
    let seen = read_until_close(s, 8);
    let ops: Vec<u8> = seen.iter().map(|h| h[0] & 0x3f).collect();
    assert_eq!(ops, [answer], "one answer, then the connection closes");
    let bytes = std::fs::read(lun).unwrap();
    assert!(
        bytes[..4096].iter().all(|b| *b == 0),
        "a command sent after it reached the medium"
    );
    // The target still serves others.
    let mut other = connect(t);
    let (_, e, mut max) = login(&mut other, IQN, "iqn.2026-11.test:bystander");
    other.write_all(&test_unit_ready(1, e)).unwrap();
    assert_eq!(read_responses(&mut other, 1, &mut max), [1]);
}

/// Issue 11 item 2: RFC 7143 §11.14, after a close-session Logout Response the target closes
/// the connection; a WRITE behind the Logout Request used to get GOOD and reach the medium.
#[test]
fn nothing_runs_after_a_logout() {
    let (t, lun) = target();
    let mut s = connect(&t);
    let (_, e, _) = login(&mut s, IQN, INI);
    nothing_runs_after(&t, &lun, &mut s, logout_session(1, e), 0x26);
}

/// TARGET COLD RESET ends the session too (RFC 7143 §11.5.1: the target drops its connections).
#[test]
fn nothing_runs_after_a_target_cold_reset() {
    let (t, lun) = target();
    let mut s = connect(&t);
    let (_, e, _) = login(&mut s, IQN, INI);
    nothing_runs_after(&t, &lun, &mut s, task_mgmt(1, e, 7), 0x22);
}

/// A data digest error at ErrorRecoveryLevel 0 ends the connection after the Reject (RFC 7143
/// §7.8); a command behind the damaged PDU must not run.
#[test]
fn nothing_runs_after_a_data_digest_error() {
    let (t, lun) = target();
    let mut s = connect(&t);
    let (_, e, _) = login_with(&mut s, IQN, INI, "DataDigest=CRC32C");
    // A WRITE whose data digest is wrong, then a TUR (no data, so no digest).
    let mut wire = write10_immediate(1, e, 0, &[0xab; 512]);
    wire.extend_from_slice(&0u32.to_be_bytes());
    wire.extend(test_unit_ready(2, e.wrapping_add(1)));
    s.write_all(&wire).unwrap();
    let seen = read_until_close(&mut s, 8);
    let ops: Vec<u8> = seen.iter().map(|h| h[0] & 0x3f).collect();
    assert_eq!(ops, [0x3f], "a Reject, then the connection closes");
    assert!(std::fs::read(&lun).unwrap()[..512].iter().all(|b| *b == 0));
}

/// Issue 11 item 8: a Text Request in two pieces (C bit, then the target's TTT echoed) is
/// answered as one (RFC 7143 §11.10.2); it used to be rejected as an unknown TTT.
#[test]
fn a_text_request_in_pieces_is_answered() {
    let (t, _) = target();
    let mut s = connect(&t);
    let (_, e, _) = login(&mut s, IQN, INI);
    s.write_all(&text_req(1, e, 0xffff_ffff, true, b"SendTarg"))
        .unwrap();
    let (h, data) = read_pdu(&mut s).unwrap();
    assert_eq!(h[0] & 0x3f, 0x24, "Text Response");
    assert_eq!(h[1] & 0xc0, 0, "neither F nor C: send the rest");
    assert!(data.is_empty());
    let ttt = be32(&h, 20);
    assert_ne!(ttt, 0xffff_ffff, "a tag to echo");
    // In a normal session SendTargets names a target (All is for discovery sessions).
    let rest = format!("ets={IQN}\0");
    s.write_all(&text_req(1, e, ttt, false, rest.as_bytes()))
        .unwrap();
    let (h, data) = read_pdu(&mut s).unwrap();
    assert_eq!(h[0] & 0x3f, 0x24, "Text Response, not a Reject");
    assert_eq!(h[1] & 0x80, 0x80, "final");
    assert_eq!(text_value(&data, "TargetName").as_deref(), Some(IQN));
}
