//! A shard thread that dies (a panic; here the `delay` store's test drill `panic_offset`)
//! takes its connections with it. Before, the sessions it owned stayed in the session table
//! and in `--op show` for ever, their TSIHs taken; now the daemon drops them, counts them in
//! `--op stat`, and keeps answering tgtadm.

use crate::common;
use common::initiator::{login, read_pdu, scsi_cmd, test_unit_ready};
use common::Tgtd;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:deadshard";
const DOOMED: &str = "iqn.2026-11.test:doomed";

/// READ(10) of one 512-byte block at `lba`.
fn read10(itt: u32, cmd_sn: u32, lba: u32) -> Vec<u8> {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[8] = 1;
    scsi_cmd(itt, cmd_sn, 0x40 | 1, 512, &cdb, &[])
}

#[test]
fn a_dead_shards_sessions_leave_show_and_are_counted() {
    let t = Tgtd::start_opts(&common::TgtdOpts {
        cores: Some("0"),
        env: &[("CURVE_TGT_TEST_ENGINES", "1")],
        stderr_to_file: true,
        ..common::TgtdOpts::default()
    });
    t.add_target(1, IQN);
    // A READ at byte 4096 (LBA 8) panics the shard that starts it.
    t.tgtadm_ok(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "--bstype",
        "delay",
        "--backing-store",
        "size=1M:delay_us=0:panic_offset=4096",
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (_, cmd_sn, _) = login(&mut s, IQN, DOOMED);
    s.write_all(&test_unit_ready(1, cmd_sn)).unwrap();
    assert_eq!(read_pdu(&mut s).expect("TUR response").0[0] & 0x3f, 0x21);
    let show = || t.tgtadm_ok(&["--op", "show", "--mode", "target"]);
    assert!(
        show().contains(DOOMED),
        "the session is listed:\n{}",
        show()
    );
    // The shard dies starting this READ: the connection ends with no answer.
    s.write_all(&read10(2, cmd_sn + 1, 8)).unwrap();
    let mut b = [0u8; 48];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "the READ that kills the shard is not answered"
    );
    t.wait_log_line(&["shard 0 died"]);
    // The session leaves the control side's model (bounded poll: the event is folded in
    // at the next tgtadm request or within a second).
    let end = Instant::now() + Duration::from_secs(10);
    while show().contains(DOOMED) {
        assert!(
            Instant::now() < end,
            "the dead shard's session is still listed:\n{}",
            show()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        stat.contains("sessions lost with a dead shard: 1\n") && stat.contains("dead shards: 1\n"),
        "stat after the shard died:\n{stat}"
    );
    t.wait_log_line(&["shard 0:", "1 sessions lost with it were removed"]);
    // With its only shard dead, the daemon refuses connections but stays up for tgtadm.
    let mut c = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "refused");
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(stat.contains("refused, no shard running: 1\n"), "{stat}");
}
