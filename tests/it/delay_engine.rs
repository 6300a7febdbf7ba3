//! The test-only `delay` store (tgtd with `CURVE_TGT_TEST_ENGINES=1`): an engine with no file
//! descriptor that completes out of order after a delay serves a LU through the whole stack;
//! aborting a READ it holds, or closing the connection, cancels the operation promptly and
//! returns its buffer to the shard's pool (seen in the test-mode `--op stat --mode sys` lines).

use crate::common;
use common::initiator::{be32, login, read_pdu};
use common::{require_tool, run, Tgtd};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:delay";

fn target(path: &str) -> Tgtd {
    let t = Tgtd::start_env(None, &[("CURVE_TGT_TEST_ENGINES", "1")]);
    t.add_target(1, IQN);
    t.add_lun(1, 1, "delay", std::path::Path::new(path));
    t
}

/// The shards' resources from the test-mode stat lines, summed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Res {
    buffers: u64,
    ops: u64,
    conns: u64,
}

fn resources(t: &Tgtd) -> Res {
    let out = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("Shard ")).collect();
    assert!(!lines.is_empty(), "no shard line in:\n{out}");
    let field = |k: &str| -> u64 {
        lines
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no {k} in {line}"))
            })
            .sum()
    };
    Res {
        buffers: field("buffers_in_use"),
        ops: field("backend_ops"),
        conns: field("connections"),
    }
}

/// Polls until `want` holds (bounded), returning the last reading.
fn wait_for(t: &Tgtd, what: &str, within: Duration, want: impl Fn(Res) -> bool) -> Res {
    let end = Instant::now() + within;
    loop {
        let r = resources(t);
        if want(r) {
            return r;
        }
        assert!(Instant::now() < end, "{what}: still {r:?} after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A SCSI Command PDU (simple attribute, LUN 1, final, read).
fn read10(itt: u32, cmd_sn: u32, exp_stat_sn: u32, lba: u32, blocks: u16) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x01;
    h[1] = 0x80 | 0x40 | 1;
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&(u32::from(blocks) * 512).to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h[28..32].copy_from_slice(&exp_stat_sn.to_be_bytes());
    let cdb = &mut h[32..42];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    h
}

/// ABORT TASK (immediate) for the task `ref_itt` issued at `ref_cmd_sn`.
fn abort_task(itt: u32, ref_itt: u32, cmd_sn: u32, ref_cmd_sn: u32, exp_stat_sn: u32) -> Vec<u8> {
    tmf(1, itt, ref_itt, cmd_sn, ref_cmd_sn, exp_stat_sn)
}

/// A Task Management Function Request (immediate, LUN 1): `function` 1 ABORT TASK, 2 ABORT
/// TASK SET, 5 LOGICAL UNIT RESET (RFC 7143 §11.5.1).
fn tmf(
    function: u8,
    itt: u32,
    ref_itt: u32,
    cmd_sn: u32,
    ref_cmd_sn: u32,
    exp_stat_sn: u32,
) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40 | 0x02;
    h[1] = 0x80 | function;
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&ref_itt.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h[28..32].copy_from_slice(&exp_stat_sn.to_be_bytes());
    h[32..36].copy_from_slice(&ref_cmd_sn.to_be_bytes());
    h
}

/// Logs in and starts a 64 KiB READ that the store holds for a minute; returns the socket,
/// the READ's CmdSN, the next ExpStatSN, and the resources before the READ.
fn held_read(t: &Tgtd) -> (TcpStream, u32, u32, Res) {
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (stat_sn, cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:delay");
    // The new nexus's first command reports POWER ON, RESET (a unit attention): spend it on
    // a TEST UNIT READY.
    let mut tur = read10(9, cmd_sn, stat_sn.wrapping_add(1), 0, 0);
    tur[1] = 0x80 | 1;
    tur[20..24].fill(0);
    tur[32..42].fill(0);
    s.write_all(&tur).unwrap();
    let (h, _) = read_pdu(&mut s).expect("TEST UNIT READY response");
    assert_eq!(
        (h[0] & 0x3f, be32(&h, 16)),
        (0x21, 9),
        "SCSI Response to TUR"
    );
    let (cmd_sn, exp_stat_sn) = (cmd_sn.wrapping_add(1), be32(&h, 24).wrapping_add(1));
    let before = wait_for(t, "logged in", Duration::from_secs(5), |r| r.conns == 1);
    assert_eq!(before.ops, 0);
    s.write_all(&read10(1, cmd_sn, exp_stat_sn, 0, 128))
        .unwrap();
    let during = wait_for(t, "READ in flight", Duration::from_secs(5), |r| r.ops == 1);
    assert!(
        during.buffers > before.buffers,
        "the held READ owns a buffer: {before:?} -> {during:?}"
    );
    (s, cmd_sn, exp_stat_sn, before)
}

#[test]
fn abort_task_of_a_held_read_is_prompt_and_returns_its_buffer() {
    let t = target("size=16M:delay_us=60000000");
    let (mut s, cmd_sn, exp_stat_sn, before) = held_read(&t);
    let asked = Instant::now();
    s.write_all(&abort_task(
        2,
        1,
        cmd_sn.wrapping_add(1),
        cmd_sn,
        exp_stat_sn,
    ))
    .unwrap();
    let (h, _) = read_pdu(&mut s).expect("TMF response");
    assert_eq!(
        h[0] & 0x3f,
        0x22,
        "a Task Management Function Response first"
    );
    assert_eq!(be32(&h, 16), 2, "for our ABORT TASK");
    assert_eq!(h[2], 0, "function complete");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered promptly, not after the store's minute"
    );
    let after = wait_for(&t, "READ cancelled", Duration::from_secs(5), |r| r.ops == 0);
    assert_eq!(
        after.buffers, before.buffers,
        "the READ's buffer went back to the pool"
    );
    assert_eq!(after.conns, 1, "the session carries on");
}

#[test]
fn lun_reset_and_abort_task_set_cancel_held_operations() {
    let t = target("size=16M:delay_us=60000000");
    for function in [5u8, 2] {
        let (mut s, cmd_sn, exp_stat_sn, before) = held_read(&t);
        s.write_all(&tmf(
            function,
            2,
            0xffff_ffff,
            cmd_sn.wrapping_add(1),
            0,
            exp_stat_sn,
        ))
        .unwrap();
        let (h, _) = read_pdu(&mut s).expect("TMF response");
        assert_eq!(
            (h[0] & 0x3f, be32(&h, 16), h[2]),
            (0x22, 2, 0),
            "function {function} complete"
        );
        let after = wait_for(&t, "READ cancelled", Duration::from_secs(5), |r| r.ops == 0);
        assert_eq!(
            after.buffers, before.buffers,
            "function {function}: buffer returned"
        );
        drop(s);
        wait_for(&t, "connection gone", Duration::from_secs(5), |r| {
            r.conns == 0
        });
    }
}

#[test]
fn closing_the_connection_cancels_its_operations_and_frees_the_slot() {
    let t = target("size=16M:delay_us=60000000");
    let (s, _, _, before) = held_read(&t);
    drop(s);
    let after = wait_for(&t, "connection freed", Duration::from_secs(5), |r| {
        r.conns == 0 && r.ops == 0
    });
    assert!(
        after.buffers <= before.buffers,
        "the READ's buffer went back to the pool: {before:?} -> {after:?}"
    );
}

#[test]
fn out_of_order_engine_serves_data_end_to_end() {
    require_tool("qemu-img");
    let t = target("size=8M:delay_us=50-3000");
    // A pseudo-random 8 MiB image, written through iSCSI and read back byte-exact while the
    // store completes every operation after its own random delay.
    let src = t.dir.path().join("src.img");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..(8 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&src, &data).unwrap();
    let url = t.url(IQN, 1);
    let (ok, _, err) = run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    assert!(ok, "qemu-img write failed: {err}");
    let back = t.dir.path().join("back.img");
    let (ok, _, err) = run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            back.to_str().unwrap(),
        ],
    );
    assert!(ok, "qemu-img read failed: {err}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data read back differs"
    );
}

#[test]
fn delay_store_is_unknown_outside_test_mode() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let o = t.tgtadm(&[
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
        "delay",
        "-b",
        "size=1M:delay_us=1",
    ]);
    assert!(!o.status.success(), "delay must not exist in production");
    let out = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        !out.contains("Shard 0:"),
        "no test lines in production: {out}"
    );
}
