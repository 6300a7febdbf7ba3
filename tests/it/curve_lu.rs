//! A curve LU end to end (issue 9): `tgtadm --bstype curve --backing-store cbd:pool//VOL_OWNER_`
//! against a real CurveBS cluster (`../shared/curve/`), checked through an iSCSI initiator and
//! with Curve's own client (`cluster.sh vol write|verify`, libcurve) as the judge: data written
//! by either side reads back exactly through the other, across chunk (16 MiB) and segment
//! (1 GiB) boundaries; `disksize=auto` after `vol extend` raises CAPACITY DATA HAS CHANGED and
//! shows the new size; leader transfers and a chunk-server kill/restart during verified I/O
//! give no error. Bad backing-store strings and an unreachable MDS are refused by tgtadm with
//! a log line saying why.
//!
//! Without the cluster kit (no `../shared/curve/cluster.sh`, or `CURVE_CLUSTER_SH` pointing
//! nowhere) the cluster tests say so and pass.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::curve::Cluster;
use crate::common::{self, initiator as ini};
use curve_tgt::curve::pattern;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CHUNK: u64 = 16 * MIB;
use crate::common::curve::{add_curve_lu, OWNER};
const IQN: &str = "iqn.2026-11.org.curve-tgt:curve-lu";
const INI: &str = "iqn.2026-11.org.curve-tgt:curve-lu-initiator";
/// Bytes per WRITE command.
const BURST: usize = 64 * 1024;
/// Bytes per Data-Out PDU (the target's default MaxRecvDataSegmentLength).
const DATA_OUT_PDU: usize = 8192;

/// A logged-in iSCSI session to LUN 1 speaking READ(16)/WRITE(16) with immediate data.
struct Session {
    s: TcpStream,
    itt: u32,
    cmd_sn: u32,
}

/// How a command ended: status and sense (key, ASC, ASCQ).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u8,
    sense: Option<(u8, u8, u8)>,
    data: Vec<u8>,
}

impl Session {
    fn login(port: u16) -> Session {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        s.set_nodelay(true).unwrap();
        let (_, exp_cmd_sn, _) = ini::login(&mut s, IQN, INI);
        Session {
            s,
            itt: 1,
            cmd_sn: exp_cmd_sn,
        }
    }

    /// One command; Data-In collected, NOP-In pings answered (bounded).
    fn cmd(&mut self, cdb: &[u8], edtl: u32, read: bool, data: &[u8]) -> Outcome {
        self.itt += 1;
        let flags = if read {
            0x40
        } else if !data.is_empty() {
            0x20
        } else {
            0
        } | 1;
        // No immediate data: Data-Out answers the target's R2Ts (InitialR2T=Yes), in PDUs of
        // its default MaxRecvDataSegmentLength.
        let pdu = ini::scsi_cmd(self.itt, self.cmd_sn, flags, edtl, cdb, &[]);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.s.write_all(&pdu).expect("send command");
        let mut got = Vec::new();
        for _ in 0..4096 {
            let (h, d) = ini::read_pdu(&mut self.s).expect("reply");
            match h[0] & 0x3f {
                0x20 => {
                    // NOP-In ping: answer it.
                    let ttt = ini::be32(&h, 20);
                    if ttt != 0xffff_ffff {
                        self.s
                            .write_all(&ini::nop_out_reply(ttt, self.cmd_sn))
                            .unwrap();
                    }
                }
                0x31 if ini::be32(&h, 16) == self.itt => {
                    let ttt = ini::be32(&h, 20);
                    let at = ini::be32(&h, 40) as usize;
                    let len = ini::be32(&h, 44) as usize;
                    let part = &data[at.min(data.len())..(at + len).min(data.len())];
                    let n = part.len().div_ceil(DATA_OUT_PDU);
                    for (sn, piece) in part.chunks(DATA_OUT_PDU).enumerate() {
                        let mut o = vec![0u8; 48];
                        o[0] = 0x05;
                        o[1] = if sn + 1 == n { 0x80 } else { 0 };
                        o[5..8].copy_from_slice(&(piece.len() as u32).to_be_bytes()[1..]);
                        o[9] = 1;
                        o[16..20].copy_from_slice(&self.itt.to_be_bytes());
                        o[20..24].copy_from_slice(&ttt.to_be_bytes());
                        o[36..40].copy_from_slice(&(sn as u32).to_be_bytes());
                        let off = (at + sn * DATA_OUT_PDU) as u32;
                        o[40..44].copy_from_slice(&off.to_be_bytes());
                        o.extend_from_slice(piece);
                        while o.len() % 4 != 0 {
                            o.push(0);
                        }
                        self.s.write_all(&o).expect("send Data-Out");
                    }
                }
                0x25 if ini::be32(&h, 16) == self.itt => {
                    got.extend_from_slice(&d);
                    if h[1] & 1 != 0 {
                        return Outcome {
                            status: h[3],
                            sense: None,
                            data: got,
                        };
                    }
                }
                0x21 if ini::be32(&h, 16) == self.itt => {
                    let sense = (d.len() >= 2).then(|| {
                        let n = usize::from(u16::from_be_bytes([d[0], d[1]]));
                        d[2..(2 + n).min(d.len())].to_vec()
                    });
                    let triple = sense.and_then(|s| match s.first()? & 0x7f {
                        0x70 | 0x71 if s.len() >= 14 => Some((s[2] & 0xf, s[12], s[13])),
                        0x72 | 0x73 if s.len() >= 4 => Some((s[1] & 0xf, s[2], s[3])),
                        _ => None,
                    });
                    return Outcome {
                        status: h[3],
                        sense: triple,
                        data: got,
                    };
                }
                _ => {}
            }
        }
        panic!("no response to command {:#x}", cdb[0]);
    }

    fn rw16(op: u8, off: u64, len: usize) -> [u8; 16] {
        let mut cdb = [0u8; 16];
        cdb[0] = op;
        cdb[2..10].copy_from_slice(&(off / 4096).to_be_bytes());
        cdb[10..14].copy_from_slice(&((len / 4096) as u32).to_be_bytes());
        cdb
    }

    fn read(&mut self, off: u64, len: usize) -> Result<Vec<u8>, Outcome> {
        let o = self.cmd(&Session::rw16(0x88, off, len), len as u32, true, &[]);
        if o.status == 0 && o.data.len() == len {
            Ok(o.data)
        } else {
            Err(o)
        }
    }

    /// Writes `data` at `off` in commands of at most one burst.
    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), Outcome> {
        for (i, piece) in data.chunks(BURST).enumerate() {
            let at = off + (i * BURST) as u64;
            let o = self.cmd(
                &Session::rw16(0x8a, at, piece.len()),
                piece.len() as u32,
                false,
                piece,
            );
            if o.status != 0 {
                return Err(o);
            }
        }
        Ok(())
    }

    /// Sends a READ that cannot finish (its chunk servers are down), then ABORT TASK for it;
    /// returns how long the TMF took to answer "function complete".
    fn abort_stuck_read(&mut self, off: u64) -> Duration {
        self.itt += 1;
        let (rd_itt, rd_sn) = (self.itt, self.cmd_sn);
        let cdb = Session::rw16(0x88, off, 4096);
        let pdu = ini::scsi_cmd(rd_itt, rd_sn, 0x40 | 1, 4096, &cdb, &[]);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.s.write_all(&pdu).expect("send READ");
        // Let the READ reach the engine before the abort.
        let settle = Instant::now() + Duration::from_millis(300);
        while Instant::now() < settle {
            std::thread::park_timeout(settle - Instant::now());
        }
        self.itt += 1;
        let tmf_itt = self.itt;
        let mut tmf = ini::task_mgmt(tmf_itt, self.cmd_sn, 1); // ABORT TASK
        tmf[20..24].copy_from_slice(&rd_itt.to_be_bytes()); // Referenced Task Tag
        tmf[32..36].copy_from_slice(&rd_sn.to_be_bytes()); // RefCmdSN
        let started = Instant::now();
        self.s.write_all(&tmf).expect("send ABORT TASK");
        for _ in 0..64 {
            let (h, _) = ini::read_pdu(&mut self.s).expect("TMF response");
            match h[0] & 0x3f {
                0x22 if ini::be32(&h, 16) == tmf_itt => {
                    assert_eq!(h[2], 0, "ABORT TASK response {:#x}", h[2]);
                    return started.elapsed();
                }
                // The aborted READ may be answered TASK ABORTED, never GOOD.
                0x21 if ini::be32(&h, 16) == rd_itt => assert_eq!(h[3], 0x40, "aborted READ"),
                _ => {}
            }
        }
        panic!("no TMF response");
    }

    /// TEST UNIT READY until no unit attention is left (bounded); returns those seen.
    fn drain_unit_attentions(&mut self) -> Vec<(u8, u8, u8)> {
        let mut seen = Vec::new();
        for _ in 0..16 {
            let o = self.cmd(&[0u8; 6], 0, false, &[]);
            match o.sense {
                Some(t) if o.status == 2 && t.0 == 6 => seen.push(t),
                _ => break,
            }
        }
        seen
    }

    fn capacity(&mut self) -> (u64, u32) {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9e;
        cdb[1] = 0x10;
        cdb[13] = 32;
        let o = self.cmd(&cdb, 32, true, &[]);
        assert_eq!(o.status, 0, "READ CAPACITY(16): {o:?}");
        let last = u64::from_be_bytes(o.data[0..8].try_into().unwrap());
        (last + 1, ini::be32(&o.data, 8))
    }
}

fn pattern(off: u64, len: u64, seed: u32) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    pattern::fill(&mut v, off, seed);
    v
}

#[test]
fn curve_lu_refuses_bad_strings_and_an_unreachable_mds() {
    let t = common::Tgtd::start_logged();
    t.add_target(1, IQN);
    let dead = format!("mds=127.0.0.1:{}", common::free_port());
    for (backing, bsopts, why) in [
        ("cbd:pool/vol_user_", dead.as_str(), "no \"//\""),
        ("cbd:pool//vol", dead.as_str(), "lacks the _OWNER_ suffix"),
        ("cbd:pool//vol__", dead.as_str(), "empty owner"),
        ("cbd:pool//vol_user_", "speed=fast", "bad curve bsopts item"),
        ("cbd:pool//vol_user_", dead.as_str(), "MDS"),
    ] {
        let started = Instant::now();
        let o = add_curve_lu(&t, backing, bsopts, &[]);
        assert!(!o.status.success(), "{backing} {bsopts} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("invalid request"),
            "{backing}: tgtadm said {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "refusing {backing} took {:?}",
            started.elapsed()
        );
        let line = t.wait_log_line(&["not created", backing, why]);
        assert!(line.contains("can't open backing store"), "{line}");
    }
    let show = t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    assert!(!show.contains("LUN: 1"), "a refused LU exists:\n{show}");
}

#[test]
fn curve_lu_serves_a_real_volume_both_ways_through_faults() {
    let Some(c) = Cluster::start("curve-lu") else {
        return;
    };
    let (ok, out) = c.sh(&["vol", "create", "/lu1", OWNER, "10"]);
    assert!(ok, "vol create: {out}");
    // Curve's own client writes a pattern at the start, across a chunk and a segment boundary.
    let theirs = [
        (0, 256 * 1024),
        (CHUNK - 128 * 1024, 256 * 1024),
        (GIB - 128 * 1024, 256 * 1024),
    ];
    for (off, len) in theirs {
        let (ok, out) = c.smoke("write", "/lu1", off, len, 11);
        assert!(ok, "curve_smoke write at {off}: {out}");
    }

    let t = common::Tgtd::start_logged();
    t.add_target(1, IQN);
    let o = add_curve_lu(&t, "cbd:pool//lu1_ctest_", &format!("mds={}", c.mds), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let show = t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    for want in [
        "Size: 10737 MB, Block size: 4096",
        "Backing store type: curve",
        "Backing store path: cbd:pool//lu1_ctest_",
    ] {
        assert!(show.contains(want), "show lacks {want:?}:\n{show}");
    }
    let sys = t.tgtadm_ok(&["--op", "show", "--mode", "sys"]);
    assert!(sys.contains("    curve (bsoflags sync:direct)\n"), "{sys}");

    let mut s = Session::login(t.port);
    s.drain_unit_attentions();
    assert_eq!(s.capacity(), (10 * GIB / 4096, 4096));

    // Theirs reads back exactly through us.
    for (off, len) in theirs {
        let got = s.read(off, len as usize).expect("read");
        assert_eq!(pattern::first_mismatch(&got, off, 11), None, "at {off}");
    }
    // Never-written blocks read as zeros.
    assert!(s.read(5 * GIB, 64 * 1024).unwrap().iter().all(|b| *b == 0));

    // Ours verifies with libcurve: across a chunk boundary and into a new segment.
    let ours = [
        (2 * CHUNK - 96 * 1024, 192 * 1024),
        (2 * GIB - 96 * 1024, 192 * 1024),
    ];
    for (off, len) in ours {
        s.write(off, &pattern(off, len, 22)).expect("write");
        assert_eq!(
            pattern::first_mismatch(&s.read(off, len as usize).unwrap(), off, 22),
            None
        );
        let (ok, out) = c.smoke("verify", "/lu1", off, len, 22);
        assert!(ok, "libcurve does not verify our write at {off}: {out}");
    }
    // SYNCHRONIZE CACHE(10) completes at once: acknowledged writes are replicated already.
    let o = s.cmd(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, false, &[]);
    assert_eq!((o.status, o.sense), (0, None));

    // Resize: extend with Curve's tool, disksize=auto, CAPACITY DATA HAS CHANGED, new size.
    let (ok, out) = c.sh(&["vol", "extend", "/lu1", OWNER, "20"]);
    assert!(ok, "vol extend: {out}");
    t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "update",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "--params",
        "disksize=auto",
    ]);
    assert_eq!(s.drain_unit_attentions(), vec![(6, 0x2a, 0x09)]);
    assert_eq!(s.capacity(), (20 * GIB / 4096, 4096));
    // The new range is usable at once (the shards' layout took the new length).
    let off = 15 * GIB;
    s.write(off, &pattern(off, 64 * 1024, 23))
        .expect("write past the old end");
    assert_eq!(
        pattern::first_mismatch(&s.read(off, 64 * 1024).unwrap(), off, 23),
        None
    );

    faults(&c, &mut s);

    // tgtadm --op stat: after tgt's lines, the curve LU's connections, RPCs and retries.
    let stat = t.tgtadm_ok(&[
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
    let block = stat
        .split("\nLUN 1/1 curve:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no curve block in stat:\n{stat}"));
    let shard0 = block
        .lines()
        .find(|l| l.starts_with("    Shard 0: connections="))
        .unwrap_or_else(|| panic!("no shard line:\n{stat}"));
    let field = |name: &str| -> u64 {
        shard0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {shard0}"))
    };
    assert!(field("connections") >= 1, "{shard0}");
    assert!(field("rpcs") > 100, "{shard0}");
    assert_eq!(field("bad_replies"), 0, "{shard0}");
    assert!(block.contains("Operations: "), "{block}");
    eprintln!("stat after the faults:\n{block}");

    backend_down_fails_within_the_deadline(&c, &t, &mut s);

    // LU delete closes the volume (CloseFile on its thread) and tgtd carries on.
    drop(s);
    t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "delete",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
    ]);
    t.wait_log_line(&["curve volume thread stopped", "/lu1"]);
    let show = t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    assert!(!show.contains("Backing store type: curve"), "{show}");
}

/// Every chunk server down: a READ fails (MEDIUM ERROR / READ ERROR) within the client's
/// deadline instead of hanging as libcurve does, the log says why, and I/O works again once
/// they are back.
fn backend_down_fails_within_the_deadline(c: &Cluster, t: &common::Tgtd, s: &mut Session) {
    for n in ["0", "1", "2"] {
        let (ok, out) = c.sh(&["kill-cs", n]);
        assert!(ok, "kill-cs {n}: {out}");
    }
    // A chunk never written in an allocated segment (the faults wrote chunks 0..10 of
    // segment 3): reading it needs a chunk server (an unallocated segment reads as zeros
    // without one).
    let off = 3 * GIB + 11 * CHUNK;
    let started = Instant::now();
    let o = s
        .read(off, 4096)
        .expect_err("a read with every chunk server down succeeded");
    let took = started.elapsed();
    assert_eq!((o.status, o.sense), (2, Some((0x3, 0x11, 0x00))), "{o:?}");
    assert!(took < Duration::from_secs(30), "the failure took {took:?}");
    let line = t.wait_log_line(&["curve I/O failed"]);
    assert!(
        line.contains("gave up after") || line.contains("refused"),
        "{line}"
    );
    // ABORT TASK stops a READ that is retrying: answered at once, not at the deadline.
    let took_abort = s.abort_stuck_read(off + 64 * 1024);
    assert!(
        took_abort < Duration::from_secs(3),
        "ABORT TASK took {took_abort:?}"
    );
    for n in ["0", "1", "2"] {
        let (ok, out) = c.sh(&["start-cs", n]);
        assert!(ok, "start-cs {n}: {out}");
    }
    // Back: the same read works (bounded retries while the copysets elect leaders).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match s.read(off, 4096) {
            Ok(d) => {
                assert!(d.iter().all(|b| *b == 0), "unwritten blocks read as zeros");
                break;
            }
            Err(o) => assert!(
                Instant::now() < deadline,
                "reads still fail after the chunk servers returned: {o:?}"
            ),
        }
    }
    eprintln!("backend down: READ failed after {took:?}; ABORT TASK answered in {took_abort:?}");
}

/// Writes and read-backs over every copyset while leaders move and a chunk server is killed
/// and restarted: no command fails, everything reads back, and libcurve verifies it.
fn faults(c: &Cluster, s: &mut Session) {
    const SEED: u32 = 41;
    const SLOTS: u64 = 10; // chunks 0..10 of segment 3 spread over the 10 copysets
    let base = 3 * GIB;
    let slot_off = |i: u64| base + (i % SLOTS) * CHUNK + ((i / SLOTS) % 16) * 64 * 1024;
    let done = Arc::new(AtomicBool::new(false));
    let transfers = Arc::new(AtomicU32::new(0));
    let chaos = {
        let (done, transfers) = (done.clone(), transfers.clone());
        let script = c.script.clone();
        let env = c.env.clone();
        std::thread::spawn(move || {
            let sh = |args: &[&str]| {
                Command::new("bash")
                    .arg(&script)
                    .args(args)
                    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            };
            for round in 0..2u32 {
                for cs in 1..=SLOTS as u32 {
                    let to = ((cs + round) % 3).to_string();
                    if sh(&["transfer-leader", "1", &cs.to_string(), &to]) {
                        transfers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let killed = sh(&["kill-cs", "1"]);
            // I/O runs with one replica down for a while (the main loop keeps going).
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                std::thread::park_timeout(until - Instant::now());
            }
            let started = sh(&["start-cs", "1"]);
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                std::thread::park_timeout(until - Instant::now());
            }
            done.store(true, Ordering::Relaxed);
            (killed, started)
        })
    };
    let start = Instant::now();
    let mut i = 0u64;
    let mut errors = Vec::new();
    while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(240) {
        let off = slot_off(i);
        if let Err(e) = s.write(off, &pattern(off, 64 * 1024, SEED)) {
            errors.push(format!("write {off}: {e:?}"));
        }
        match s.read(off, 64 * 1024) {
            Ok(got) if pattern::first_mismatch(&got, off, SEED).is_none() => {}
            Ok(_) => errors.push(format!("read {off}: data mismatch")),
            Err(e) => errors.push(format!("read {off}: {e:?}")),
        }
        i += 1;
    }
    let (killed, started) = chaos.join().expect("chaos thread");
    eprintln!(
        "faults: {i} write+read pairs, {} leader transfers",
        transfers.load(Ordering::Relaxed)
    );
    assert!(killed && started, "kill-cs/start-cs failed");
    assert!(errors.is_empty(), "I/O errors during faults: {errors:?}");
    assert!(
        transfers.load(Ordering::Relaxed) > 0,
        "no leader transfer succeeded"
    );
    assert!(i > 20, "too little I/O ran during the faults: {i}");
    for k in 0..SLOTS.min(i) {
        let off = slot_off(k);
        let (ok, out) = c.smoke("verify", "/lu1", off, 64 * 1024, SEED);
        assert!(ok, "libcurve does not verify {off} after the faults: {out}");
    }
}
