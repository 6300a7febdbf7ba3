//! The login deadline (`tgtd --login-timeout`): a connection that has not finished login in
//! time is closed, so a stalled or half-done login cannot hold a connection slot forever; a
//! connection that finished login is not affected.

use crate::common;
use common::initiator::{be32, login, nop_out_reply, read_pdu};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:deadline";

fn target() -> Tgtd {
    let t = Tgtd::start_full(None, &[], &["--login-timeout", "1"]);
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    t
}

/// A Login Request in the operational stage that does not ask to move on (T=0): the target
/// answers and waits for the next one.
fn login_step_without_transit(keys: &str) -> Vec<u8> {
    let data = keys.as_bytes();
    let mut h = [0u8; 48];
    h[0] = 0x43;
    h[1] = 1 << 2; // CSG=1 (operational), T=0
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 9]);
    h[24..28].copy_from_slice(&1u32.to_be_bytes());
    let mut pdu = h.to_vec();
    pdu.extend_from_slice(data);
    while pdu.len() % 4 != 0 {
        pdu.push(0);
    }
    pdu
}

#[test]
fn stalled_half_way_login_is_closed_after_the_deadline() {
    let t = target();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let keys =
        format!("InitiatorName=iqn.2026-11.test:stall\0SessionType=Normal\0TargetName={IQN}\0");
    let started = Instant::now();
    s.write_all(&login_step_without_transit(&keys)).unwrap();
    let (r, _) = read_pdu(&mut s).expect("first login response");
    assert_eq!(r[0] & 0x3f, 0x23, "a login response");
    assert_eq!(r[36], 0, "login step accepted");
    assert_eq!(r[1] & 0x80, 0, "still in login (no transit)");
    // Now stall: the target must close the connection (EOF), not leave it open until our
    // 10 s read timeout.
    let e = read_pdu(&mut s).expect_err("no further PDU");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof,
        "closed by the target, not our read timeout: {e}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "closed after about the 1 s deadline, took {took:?}"
    );
}

#[test]
fn silent_connection_that_never_logs_in_is_closed() {
    let t = target();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Half a BHS, then nothing.
    s.write_all(&[0x43, 0x87, 0, 0]).unwrap();
    let e = read_pdu(&mut s).expect_err("no PDU");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
}

#[test]
fn logged_in_connection_outlives_the_deadline() {
    let t = target();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (_, exp_cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:done");
    // Past the deadline (1 s) with margin: the session is still served.
    std::thread::sleep(Duration::from_millis(2500));
    // A NOP-Out asking for a reply (ITT 0x77, TTT 0xffffffff).
    let mut nop = nop_out_reply(0xffff_ffff, exp_cmd_sn);
    nop[16..20].copy_from_slice(&0x77u32.to_be_bytes());
    s.write_all(&nop).unwrap();
    let (h, _) = read_pdu(&mut s).expect("NOP-In reply");
    assert_eq!(h[0] & 0x3f, 0x20, "NOP-In");
    assert_eq!(be32(&h, 16), 0x77, "answers our ping");
}
