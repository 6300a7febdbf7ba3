//! Fault drills through a real initiator (issue 9): a curve LU served by our tgtd on a private
//! real CurveBS cluster, driven by fio's libiscsi engine with `verify=crc32c` (every block
//! written is read back and checked, `verify_fatal`), while in turn leaders are transferred
//! every ~2 s, one chunk server of three is killed and restarted, a snapshot is taken and the
//! MDS is killed (SIGKILL) and started again after its lease has run out (I/O is held, then
//! resumes). The initiator must see 0 I/O errors and 0 verify mismatches, and the data must
//! read back afterwards, through the target and straight from the cluster.
//!
//! Then the MDS goes away for longer than the LU's 20 s deadline: I/O that needs it (a segment never
//! allocated) fails with MEDIUM ERROR at the LU's deadline; I/O to allocated segments works
//! while the lease holds and, once it has expired, is held and fails at the deadline too (the
//! lease gates all I/O, as libcurve's does); everything works again once the MDS is back.
//!
//! Without fio's libiscsi engine or the cluster kit the tests say so and pass.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::curve::{Cluster, ClusterCtl, OWNER};
use crate::common::curve_fixture::{self, Fault};
use crate::common::{self, fio};
use curve_tgt::curve::auth::Credentials;
use curve_tgt::curve::blocking::BlockingClient;
use curve_tgt::curve::config::ClientConfig;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IQN: &str = "iqn.2026-11.org.curve-tgt:curve-drill";
const INITIATOR: &str = "iqn.2026-11.org.curve-tgt:curve-drill-fio";
/// fio's span: six 16 MiB chunks of segment 0 (several copysets).
const SPAN: u64 = 96 * MIB;
/// The LU's operation deadline (`ClientConfig::default().op_deadline`).
const LU_DEADLINE: Duration = Duration::from_secs(20);
/// Bounds on the drill's fio runs.
const MAX_RUNS: u32 = 40;
const FIO_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the drill keeps the killed MDS down before starting it again: with its restart
/// (3.5-5 s here) past the 5 s lease, well inside the LU's deadline.
const MDS_HOLD_DOWN: Duration = Duration::from_secs(6);

/// Adds LUN 1 of target 1: the curve volume `name` of OWNER on `mds`.
fn add_curve_lu(t: &common::Tgtd, name: &str, mds: &str) {
    let backing = format!("cbd:pool//{name}_{OWNER}_");
    let o = common::curve::add_curve_lu(t, &backing, &format!("mds={mds}"), &[]);
    assert!(o.status.success(), "tgtadm new curve LU: {o:?}");
}

/// A random-write job over `size` bytes at `offset`, every block verified (crc32c) after the
/// write pass; `seed` makes each run's data (and verify headers) its own, so a block left
/// over from an earlier run fails verification.
fn verified_write_args(port: u16, offset: u64, size: u64, seed: u64, bs: &str) -> Vec<String> {
    vec![
        "--ioengine=libiscsi".into(),
        format!("--filename={}", fio::url(port, IQN, 1)),
        format!("--initiator={INITIATOR}"),
        "--rw=randwrite".into(),
        format!("--bsrange={bs}"),
        "--iodepth=8".into(),
        format!("--offset={offset}"),
        format!("--size={size}"),
        format!("--randseed={seed}"),
        "--verify=crc32c".into(),
        "--do_verify=1".into(),
        "--verify_fatal=1".into(),
        "--verify_state_save=0".into(),
    ]
}

/// What the fault thread did, with times from the start of the schedule.
#[derive(Debug, Default)]
struct Drill {
    events: Vec<(Duration, String)>,
    transfers_tried: u32,
    transfers_ok: u32,
    cs_killed_and_back: bool,
    snapshot: Option<String>,
    snapshot_waited: Duration,
    mds_restart_listen: Duration,
    mds_down: Duration,
    failures: Vec<String>,
}

/// Waits `d`: the fault schedule's own clock (I/O runs meanwhile), not synchronisation.
fn pause(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::thread::park_timeout(until - Instant::now());
    }
}

/// The fault schedule: leaders moved every ~2 s, a chunk server killed and restarted, a
/// snapshot, the MDS killed and restarted past its lease; I/O runs throughout.
fn fault_schedule(ctl: ClusterCtl, log: Arc<Mutex<Drill>>) {
    let t0 = Instant::now();
    let note = |what: String| {
        eprintln!("drill +{:.1}s: {what}", t0.elapsed().as_secs_f64());
        log.lock().unwrap().events.push((t0.elapsed(), what));
    };
    let fail = |what: String| {
        note(format!("FAILED: {what}"));
        log.lock().unwrap().failures.push(what);
    };
    // 1. Leader transfers every ~2 s over the copysets, for ~12 s.
    for k in 0..6u32 {
        let copyset = (k % 10 + 1).to_string();
        let to = (k % 3).to_string();
        let (ok, out) = ctl.sh(&["transfer-leader", "1", &copyset, &to]);
        {
            let mut l = log.lock().unwrap();
            l.transfers_tried += 1;
            l.transfers_ok += u32::from(ok);
        }
        note(format!(
            "transfer-leader copyset {copyset} -> cs{to}: {}",
            if ok { "ok" } else { out.trim() }
        ));
        pause(Duration::from_secs(2));
    }
    // 2. One chunk server of three killed (SIGKILL), I/O on two replicas, then back.
    let (killed, out) = ctl.sh(&["kill-cs", "1"]);
    note(format!("kill-cs 1: {}", if killed { "ok" } else { &out }));
    pause(Duration::from_secs(5));
    let (mut back, mut out) = ctl.sh(&["start-cs", "1"]);
    note(format!("start-cs 1: {}", if back { "ok" } else { &out }));
    if !back {
        // Curve's chunk server now and then aborts while starting (see common::curve).
        (back, out) = ctl.sh(&["start-cs", "1"]);
        note(format!(
            "start-cs 1 again: {}",
            if back { "ok" } else { &out }
        ));
    }
    log.lock().unwrap().cs_killed_and_back = killed && back;
    if !(killed && back) {
        fail(format!("chunk server kill/restart: {out}"));
    }
    pause(Duration::from_secs(4));
    // 3. A snapshot mid-write. Curve's MDS refuses snapshots (kSnapshotFrozen) until it has
    // run ten file-record expiry periods (50 s): ask again until it accepts (bounded).
    let asked = Instant::now();
    loop {
        let o = Command::new(env!("CARGO_BIN_EXE_curve-vol"))
            .args(["--mds", &ctl.mds, "--user", OWNER])
            .args(["snapshot", "--filename", "/drill"])
            .output()
            .expect("run curve-vol");
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            let mut l = log.lock().unwrap();
            l.snapshot = Some(text.trim().to_string());
            l.snapshot_waited = asked.elapsed();
            drop(l);
            note(format!("snapshot: {}", text.trim()));
            break;
        }
        if !text.contains("kSnapshotFrozen") || asked.elapsed() > Duration::from_secs(90) {
            fail(format!("snapshot: {}", text.trim()));
            break;
        }
        pause(Duration::from_millis(500));
    }
    pause(Duration::from_secs(3));
    // 4. The MDS crashes (SIGKILL) and stays down past the 5 s lease, so the LU's I/O is held
    // (the lease gates it) and must resume, inside the 20 s deadline, once the MDS is started
    // again with its own command line and a RefreshSession succeeds.
    let img = ctl.kill_mds();
    let killed_at = Instant::now();
    note("MDS killed (SIGKILL)".into());
    pause(MDS_HOLD_DOWN);
    let took = ctl.restart_mds(&img);
    let down = killed_at.elapsed();
    {
        let mut l = log.lock().unwrap();
        l.mds_restart_listen = took;
        l.mds_down = down;
    }
    note(format!(
        "MDS restarted: listening after {took:.1?}, {down:.1?} after the kill"
    ));
    // I/O goes on through the lease refresh against the new MDS.
    pause(Duration::from_secs(8));
    note("schedule done".into());
}

#[test]
fn fio_verifies_through_leader_moves_cs_and_mds_crashes_and_a_snapshot() {
    let Some(fio_bin) = fio::find() else { return };
    let Some(c) = Cluster::start("curve-drill") else {
        return;
    };
    let (ok, out) = c.sh(&["vol", "create", "/drill", OWNER, "10"]);
    assert!(ok, "vol create: {out}");
    let t = common::Tgtd::start_logged();
    t.add_target(1, IQN);
    add_curve_lu(&t, "drill", &c.mds);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();

    // The faults run on their own clock while fio writes and verifies, run after run.
    let drill = Arc::new(Mutex::new(Drill::default()));
    let done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (ctl, drill, done) = (c.ctl(), drill.clone(), done.clone());
        std::thread::spawn(move || {
            fault_schedule(ctl, drill);
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut runs = Vec::new();
    let mut seed = 0;
    while !done.load(Ordering::SeqCst) && (runs.len() as u32) < MAX_RUNS {
        seed = 7000 + runs.len() as u64;
        let r = fio::run(
            &fio_bin,
            dir.path(),
            &format!("drill{}", runs.len()),
            &verified_write_args(t.port, 0, SPAN, seed, "4k-256k"),
            FIO_RUN_TIMEOUT,
        );
        eprintln!(
            "fio run {} (+{:.1}s): rc {:?} error {} writes {} reads {} in {:.1?}, max clat write {} ms read {} ms",
            runs.len(),
            started.elapsed().as_secs_f64(),
            r.rc,
            r.error,
            r.write_ios,
            r.read_ios,
            r.wall,
            r.write_clat_max_ns / 1_000_000,
            r.read_clat_max_ns / 1_000_000
        );
        let clean = r.clean();
        runs.push(r);
        if !clean {
            break;
        }
    }
    // Let the schedule finish (it is bounded) whatever fio did.
    let chaos_ok = chaos.join().is_ok();
    let d = drill.lock().unwrap();
    let bad: Vec<_> = runs.iter().filter(|r| !r.clean()).collect();
    let sum = |f: &dyn Fn(&fio::Run) -> u64| runs.iter().map(f).sum::<u64>();
    eprintln!(
        "drill: {} fio runs, {} writes ({} MiB), {} verify reads ({} MiB), {} failed runs, \
         worst write clat {} ms, worst read clat {} ms; transfers {}/{}; cs kill+restart {}; \
         snapshot after {:.1?}: {:?}; MDS down {:.1?} (listening {:.1?} after its restart); \
         {:.1?} total",
        runs.len(),
        sum(&|r| r.write_ios),
        sum(&|r| r.write_bytes) / MIB,
        sum(&|r| r.read_ios),
        sum(&|r| r.read_bytes) / MIB,
        bad.len(),
        runs.iter().map(|r| r.write_clat_max_ns).max().unwrap_or(0) / 1_000_000,
        runs.iter().map(|r| r.read_clat_max_ns).max().unwrap_or(0) / 1_000_000,
        d.transfers_ok,
        d.transfers_tried,
        d.cs_killed_and_back,
        d.snapshot_waited,
        d.snapshot,
        d.mds_down,
        d.mds_restart_listen,
        started.elapsed()
    );
    assert!(chaos_ok, "the fault thread panicked");
    assert!(
        bad.is_empty(),
        "the initiator saw errors or verify failures: {:?}\ntgtd log tail:\n{}",
        bad.iter()
            .map(|r| (r.rc, r.error, r.verify_failures, &r.log))
            .collect::<Vec<_>>(),
        tail(&t.log(), 40)
    );
    assert!(d.failures.is_empty(), "faults not made: {:?}", d.failures);
    assert!(d.transfers_ok >= 3, "too few leader transfers: {d:?}");
    assert!(d.snapshot.is_some(), "no snapshot");
    assert!(
        d.mds_down > Duration::from_secs(5),
        "the MDS was down only {:?}, not past its lease",
        d.mds_down
    );
    assert!(
        runs.len() >= 3,
        "too little I/O ran through the faults: {} runs",
        runs.len()
    );
    assert!(runs.iter().all(|r| r.read_ios > 0 && r.write_ios > 0));
    drop(d);

    // Read back afterwards: the last run's blocks, every one checked again (fio verify_only).
    let mut args = verified_write_args(t.port, 0, SPAN, seed, "4k-256k");
    args.push("--verify_only".into());
    let r = fio::run(&fio_bin, dir.path(), "readback", &args, FIO_RUN_TIMEOUT);
    assert!(
        r.clean() && r.read_bytes == SPAN,
        "read-back after the drill: {r:?}"
    );
    eprintln!(
        "read-back after the drill: {} MiB verified",
        r.read_bytes / MIB
    );
    // And from the cluster directly, not through the target: our own client reads the span
    // and checks every block's fio header (its offset, header and data crc32c).
    let blocks = check_fio_blocks_from_the_cluster(&c);
    eprintln!("read-back from the cluster: {blocks} blocks of 4 KiB carry fio's header for their own offset and crc32c");

    mds_away_longer_than_the_lease(&c, &t, &fio_bin, dir.path());
}

/// Reads the drill's span with our Curve client (a second path to the chunk servers, not
/// through tgtd) and checks that every 4 KiB block is a block fio wrote for that offset, whole:
/// fio's verify header (`verify.h`: magic 0xacca, len, rand_seed, offset, time, thread,
/// numberio, header crc32c) followed by the data's crc32c. Returns the blocks checked.
fn check_fio_blocks_from_the_cluster(c: &Cluster) -> u64 {
    // fio's crc32c (crc/crc32c.c) has no final inversion.
    let fio_crc = |b: &[u8]| !crc32c::crc32c(b);
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let mut cl = BlockingClient::new(
        ClientConfig {
            mds_addrs: vec![c.mds.parse().unwrap()],
            ..ClientConfig::default()
        },
        Credentials::user(OWNER),
    );
    cl.open("/drill").expect("open /drill with our client");
    let mut blocks = 0;
    for piece in 0..SPAN / MIB {
        let at = piece * MIB;
        let data = cl.read(at, MIB as usize).expect("read the span");
        for (i, b) in data.chunks(4096).enumerate() {
            let off = at + i as u64 * 4096;
            let why = if le16(b, 0) != 0xacca {
                "bad magic"
            } else if le32(b, 4) != 4096 {
                "bad length"
            } else if le64(b, 16) != off {
                "header for another offset"
            } else if le32(b, 36) != fio_crc(&b[..36]) {
                "bad header crc"
            } else if le32(b, 40) != fio_crc(&b[44..]) {
                "bad data crc32c"
            } else {
                blocks += 1;
                continue;
            };
            panic!("block at {off}: {why}");
        }
    }
    cl.close().expect("close");
    blocks
}

/// A counter of shard 0's line in `tgtadm --op stat` output for a curve LU.
fn stat_field(stat: &str, name: &str) -> u64 {
    stat.lines()
        .find(|l| l.trim_start().starts_with("Shard 0: connections="))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} for shard 0 in:\n{stat}"))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One verified 4 KiB write at `off` (write, then read back and check).
fn one_write(port: u16, off: u64, seed: u64) -> Vec<String> {
    verified_write_args(port, off, 4096, seed, "4k-4k")
}

/// The MDS gone for longer than the lease, through the target.
fn mds_away_longer_than_the_lease(c: &Cluster, t: &common::Tgtd, fio_bin: &Path, dir: &Path) {
    let allocated = 8 * MIB; // written by the drill: its segment is in the layout
    let unallocated = 6 * GIB; // segment 6: never written, so its layout needs the MDS
    let img = c.kill_mds();
    let down = Instant::now();
    // Within the lease (5 s, refreshed every 1.25 s): allocated segments work.
    let r = fio::run(
        fio_bin,
        dir,
        "lease-held",
        &one_write(t.port, allocated, 1),
        Duration::from_secs(60),
    );
    let held_for = down.elapsed();
    assert!(
        r.clean(),
        "I/O to an allocated segment failed {held_for:?} after the MDS went (lease 5 s): {r:?}"
    );
    // A segment never allocated needs GetOrAllocateSegment: it fails at the deadline.
    let needs_mds = {
        let (fio_bin, dir, port) = (fio_bin.to_path_buf(), dir.to_path_buf(), t.port);
        std::thread::spawn(move || {
            fio::run(
                &fio_bin,
                &dir,
                "needs-mds",
                &one_write(port, unallocated, 2),
                Duration::from_secs(60),
            )
        })
    };
    // After the lease has run out, allocated segments are held too (the lease gates I/O).
    let lease_over = down + Duration::from_secs(6);
    while Instant::now() < lease_over {
        std::thread::park_timeout(lease_over - Instant::now());
    }
    let r_expired = fio::run(
        fio_bin,
        dir,
        "lease-expired",
        &one_write(t.port, allocated, 3),
        Duration::from_secs(60),
    );
    let r_needs = needs_mds.join().expect("fio thread");
    eprintln!(
        "MDS away: allocated-segment write ok {held_for:.1?} after the kill; \
         unallocated-segment write failed after {:.1?} (rc {:?}); allocated-segment write \
         after the lease failed after {:.1?} (rc {:?})",
        r_needs.wall, r_needs.rc, r_expired.wall, r_expired.rc
    );
    for (what, r) in [("needs-mds", &r_needs), ("lease-expired", &r_expired)] {
        assert!(!r.clean(), "{what}: succeeded with the MDS gone: {r:?}");
        // MEDIUM ERROR, WRITE ERROR (sense key 3h, ASC/ASCQ 0C00h).
        assert_eq!(
            r.sense(),
            Some((3, 0x0c00)),
            "{what}: fio's output:\n{}",
            r.log
        );
        assert!(
            r.wall >= LU_DEADLINE - Duration::from_secs(2)
                && r.wall < LU_DEADLINE + Duration::from_secs(8),
            "{what}: failed after {:?}, the LU deadline is {LU_DEADLINE:?}",
            r.wall
        );
    }
    let line = t.wait_log_line(&["curve I/O failed", "lease expired"]);
    eprintln!("tgtd: {line}");

    // The MDS returns: both kinds of I/O work again (bounded retries while it settles).
    c.restart_mds(&img);
    let back = Instant::now();
    for (name, off) in [
        ("back-unallocated", unallocated),
        ("back-allocated", allocated),
    ] {
        for attempt in 0.. {
            let r = fio::run(
                fio_bin,
                dir,
                &format!("{name}{attempt}"),
                &one_write(t.port, off, 4 + attempt),
                Duration::from_secs(60),
            );
            if r.clean() {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(60) && attempt < 5,
                "{name}: I/O still fails {:?} after the MDS came back: {r:?}",
                back.elapsed()
            );
        }
    }
    eprintln!(
        "MDS back: I/O to both segments works {:.1?} after the restart",
        back.elapsed()
    );
}

/// The project's fault fixture (a fake MDS and chunk server) behind a curve LU: bursts of
/// OVERLOAD and slow replies while fio writes and verifies give the initiator no error and
/// correct data; OVERLOAD without end fails the command with MEDIUM ERROR at the LU's deadline,
/// and I/O works again once it stops.
#[test]
fn fio_through_fixture_overload_and_slow_replies() {
    let Some(fio_bin) = fio::find() else { return };
    let f = curve_fixture::fixture();
    let t = common::Tgtd::start_logged();
    t.add_target(1, IQN);
    add_curve_lu(&t, "fixture", &f.mds.to_string());
    let dir = tempfile::tempdir().unwrap();

    // Faults pushed on a clock while fio runs: every 300 ms a burst of three OVERLOADs, every
    // fourth time a reply slower than the client's 1 s RPC timeout instead.
    let done = Arc::new(AtomicBool::new(false));
    let injector = {
        let (faults, done) = (f.faults.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut bursts, mut slow) = (0u32, 0u32);
            for k in 0..400u32 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let mut q = faults.lock().unwrap();
                if q.is_empty() {
                    if k % 4 == 3 {
                        q.push_back(Fault::Slow(1500));
                        slow += 1;
                    } else {
                        q.extend([Fault::Overload; 3]);
                        bursts += 1;
                    }
                }
                drop(q);
                pause(Duration::from_millis(300));
            }
            (bursts, slow)
        })
    };
    // 32 MiB across a chunk boundary (16 MiB), twice.
    let mut runs = Vec::new();
    for k in 0..2u64 {
        let r = fio::run(
            &fio_bin,
            dir.path(),
            &format!("fixture{k}"),
            &verified_write_args(t.port, 8 * MIB, 32 * MIB, 100 + k, "4k-256k"),
            FIO_RUN_TIMEOUT,
        );
        runs.push(r);
    }
    done.store(true, Ordering::SeqCst);
    let (bursts, slow) = injector.join().expect("injector");
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
    for r in &runs {
        eprintln!(
            "fixture fio: rc {:?} writes {} reads {} in {:.1?}, max clat write {} ms read {} ms",
            r.rc,
            r.write_ios,
            r.read_ios,
            r.wall,
            r.write_clat_max_ns / 1_000_000,
            r.read_clat_max_ns / 1_000_000
        );
        assert!(r.clean() && r.read_ios > 0, "{r:?}");
    }
    eprintln!(
        "fixture: {bursts} OVERLOAD bursts of 3, {slow} slow replies injected; stat:\n{stat}"
    );
    assert!(
        bursts >= 3 && slow >= 1,
        "too few faults injected: {bursts} {slow}"
    );
    // The faults reached the engine: OVERLOAD retries, and slow replies timed out and retried.
    assert!(stat_field(&stat, "retry_overload") > 0, "{stat}");
    assert!(stat_field(&stat, "retry_rpc") > 0, "{stat}");

    // OVERLOAD without end: the write fails at the deadline with MEDIUM ERROR.
    *f.always_overload.lock().unwrap() = true;
    let r = fio::run(
        &fio_bin,
        dir.path(),
        "endless",
        &one_write(t.port, 0, 200),
        Duration::from_secs(60),
    );
    *f.always_overload.lock().unwrap() = false;
    eprintln!(
        "endless OVERLOAD: fio failed after {:.1?} (rc {:?})",
        r.wall, r.rc
    );
    assert!(
        !r.clean(),
        "a write under endless OVERLOAD succeeded: {r:?}"
    );
    // MEDIUM ERROR, WRITE ERROR (sense key 3h, ASC/ASCQ 0C00h, SPC-4 §4.5.6).
    assert_eq!(r.sense(), Some((3, 0x0c00)), "fio's output:\n{}", r.log);
    assert!(
        r.wall >= LU_DEADLINE - Duration::from_secs(2)
            && r.wall < LU_DEADLINE + Duration::from_secs(8),
        "failed after {:?}, the LU deadline is {LU_DEADLINE:?}",
        r.wall
    );
    let line = t.wait_log_line(&["curve I/O failed", "overload"]);
    eprintln!("tgtd: {line}");
    let r = fio::run(
        &fio_bin,
        dir.path(),
        "after-endless",
        &one_write(t.port, 0, 201),
        Duration::from_secs(60),
    );
    assert!(r.clean(), "I/O after the OVERLOAD ended: {r:?}");
}
