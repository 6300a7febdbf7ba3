//! NOP-In keep-alive (tgtadm target update nop_interval/nop_count, as tgt): a silent
//! initiator is pinged and then disconnected; one that answers the pings stays connected.

use crate::common;
use common::initiator::{be32, login, nop_out_reply, read_pdu};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:nop";

fn target_with_pings() -> Tgtd {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    for (k, v) in [("nop_interval", "1"), ("nop_count", "1")] {
        t.tgtadm_ok(&[
            "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", "1", "-n", k, "-v", v,
        ]);
    }
    t
}

#[test]
fn silent_initiator_is_pinged_then_disconnected() {
    let t = target_with_pings();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    login(&mut s, IQN, "iqn.2026-11.test:silent");
    let mut pings = 0;
    // Bounded: nop_count=1 means the target closes once 2 pings are unanswered.
    for _ in 0..10 {
        match read_pdu(&mut s) {
            Ok((h, _)) => {
                assert_eq!(h[0] & 0x3f, 0x20, "only NOP-In pings arrive");
                assert_eq!(be32(&h, 16), 0xffff_ffff);
                pings += 1;
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by the target, not a timeout: {e}"
                );
                break;
            }
        }
    }
    assert_eq!(pings, 2, "pinged nop_count + 1 times before the close");
}

#[test]
fn answering_initiator_stays_connected() {
    let t = target_with_pings();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let (_, exp_cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:polite");
    // Answer 4 pings (twice what would close a silent initiator), then still be served.
    for _ in 0..4 {
        let (h, _) = read_pdu(&mut s).expect("a ping");
        assert_eq!(h[0] & 0x3f, 0x20);
        s.write_all(&nop_out_reply(be32(&h, 20), exp_cmd_sn))
            .unwrap();
    }
    // A TEST UNIT READY still gets an answer on the same connection.
    let mut cmd = [0u8; 48];
    cmd[0] = 0x01;
    cmd[1] = 0x81;
    cmd[9] = 1;
    cmd[16..20].copy_from_slice(&77u32.to_be_bytes());
    cmd[24..28].copy_from_slice(&exp_cmd_sn.to_be_bytes());
    s.write_all(&cmd).unwrap();
    for _ in 0..4 {
        let (h, _) = read_pdu(&mut s).expect("connection still open");
        if h[0] & 0x3f == 0x21 {
            assert_eq!(be32(&h, 16), 77);
            return;
        }
        s.write_all(&nop_out_reply(be32(&h, 20), exp_cmd_sn))
            .unwrap();
    }
    panic!("no response to TEST UNIT READY");
}
