//! A scripted initiator keeps 512 commands outstanding on one session: the target must open
//! a command window of at least 512 at login and answer every command without the initiator
//! ever waiting for MaxCmdSN (the queue_depth-512 VM hosts this product is for).

use crate::common;
use common::initiator::{be32, login, read_pdu};
use common::Tgtd;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:qd";

#[test]
fn holds_512_outstanding_commands_on_one_session() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let (stat_sn, exp_cmd_sn, max_cmd_sn) = login(&mut s, IQN, "iqn.2026-11.test:qd");
    let window = max_cmd_sn.wrapping_sub(exp_cmd_sn).wrapping_add(1);
    assert!(
        window >= 512,
        "command window after login is {window}, want >= 512"
    );

    // 512 READ(10)s of 4 KiB, all sent before reading anything back.
    let mut burst = Vec::with_capacity(512 * 48);
    for i in 0..512u32 {
        let mut h = [0u8; 48];
        h[0] = 0x01;
        h[1] = 0x80 | 0x40 | 1;
        h[9] = 1;
        h[16..20].copy_from_slice(&i.to_be_bytes());
        h[20..24].copy_from_slice(&4096u32.to_be_bytes());
        h[24..28].copy_from_slice(&exp_cmd_sn.wrapping_add(i).to_be_bytes());
        h[28..32].copy_from_slice(&stat_sn.wrapping_add(1).to_be_bytes());
        h[32] = 0x28;
        h[34..38].copy_from_slice(&(i * 8).to_be_bytes());
        h[39] = 8;
        burst.extend_from_slice(&h);
    }
    s.write_all(&burst).unwrap();

    let mut done = vec![false; 512];
    let mut statuses = 0;
    let mut unit_attentions = 0;
    let mut max_seen = max_cmd_sn;
    // Bounded: each command produces at most one Data-In and one response.
    for _ in 0..2048 {
        if statuses == 512 {
            break;
        }
        let (h, _data) = read_pdu(&mut s).expect("response PDU");
        let itt = be32(&h, 16) as usize;
        match h[0] & 0x3f {
            0x25 if h[1] & 0x01 != 0 => {
                assert_eq!(h[3], 0, "Data-In status");
                assert!(!done[itt], "two statuses for ITT {itt}");
                done[itt] = true;
                statuses += 1;
            }
            0x25 => {}
            0x21 => {
                // The first command on a new nexus may report POWER ON / RESET as a unit
                // attention (SAM-5): that is a response too, never a stall.
                assert!(h[3] == 0 || h[3] == 2, "SCSI status {:#x}", h[3]);
                if h[3] == 2 {
                    unit_attentions += 1;
                }
                done[itt] = true;
                statuses += 1;
            }
            op => panic!("unexpected PDU opcode {op:#x}"),
        }
        max_seen = max_seen.max(be32(&h, 32));
    }
    assert_eq!(statuses, 512, "every command answered");
    assert!(done.iter().all(|d| *d));
    assert!(
        unit_attentions <= 1,
        "at most the one power-on unit attention"
    );
    assert!(
        max_seen.wrapping_sub(exp_cmd_sn) >= 1023,
        "window reopened as commands completed: MaxCmdSN {max_seen}"
    );
}
