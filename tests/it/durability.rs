//! Crash durability (issue 11): `kill -9` tgtd while initiators write, restart it on the same
//! file, and read everything back. Every write whose GOOD status reached the initiator must be
//! on the medium; a write that was in flight at the kill may or may not be (the block then
//! holds either the acknowledged generation or the one in flight, never anything else, and
//! never a torn block).
//!
//! Two ways an initiator asks for durability are covered: a file LU opened with sync flags
//! (`tgtadm --bsoflags sync`, tgtd opens it O_DSYNC: checked in /proc/<pid>/fdinfo), and FUA
//! writes (WRITE(10) with FUA set) to a default LU.
//!
//! What this can and cannot show: a killed process loses what it had not handed to the kernel
//! (a target that answered GOOD from a user-space cache, or before its write was issued); the
//! page cache itself survives a process kill, so losing power is out of reach of this test.

use crate::common;
use common::client::{parse_block, pattern_block, Client, Outcome, BLOCK};
use common::Tgtd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:durability";
const WRITERS: u32 = 4;
/// Blocks each writer owns (its LBAs: writer * SPAN ..), written in 4 KiB (8-block) writes.
const SPAN: u32 = 512;
const BLOCKS_PER_WRITE: u32 = 8;
/// Acknowledged writes to see before the kill (or this long), so the kill lands mid-stream.
const WRITES_BEFORE_KILL: u32 = 1500;
const WRITE_PHASE_LIMIT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `--bsoflags sync`, plain writes.
    SyncLu,
    /// Default LU, every write with FUA.
    FuaWrites,
}

/// What a writer knows about each of its blocks: the generation last acknowledged, and the
/// one sent and not yet answered (0: none).
#[derive(Default, Clone, Copy)]
struct BlockLog {
    acked: u32,
    in_flight: u32,
}

fn add_lu(t: &Tgtd, path: &Path, mode: Mode) {
    t.add_target(1, IQN);
    let mut args = vec![
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
        "--bstype",
        "rdwr",
        "-b",
        path.to_str().unwrap(),
    ];
    if mode == Mode::SyncLu {
        args.extend(["--bsoflags", "sync"]);
    }
    t.tgtadm_ok(&args);
}

/// The open flags of the descriptor tgtd holds on `path`, from /proc/<pid>/fdinfo.
fn open_flags(pid: u32, path: &Path) -> Option<u32> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(e.path()).ok().as_deref() == Some(path) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_str()?))
                    .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            return u32::from_str_radix(flags.trim(), 8).ok();
        }
    }
    None
}

/// Writes generations 1, 2, ... over the writer's span until the connection dies or `stop`;
/// logs each block's acknowledged and in-flight generation. Returns how the loop ended.
fn writer(
    port: u16,
    w: u32,
    mode: Mode,
    log: Arc<Mutex<Vec<BlockLog>>>,
    acked_writes: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut c = Client::login(
        port,
        IQN,
        &format!("iqn.2026-11.test:writer{w}"),
        w as u16,
        IO_TIMEOUT,
    )
    .map_err(|e| format!("login: {e}"))?;
    c.clear_unit_attentions().map_err(|e| format!("TUR: {e}"))?;
    for generation in 1u32.. {
        for first in (w * SPAN..(w + 1) * SPAN).step_by(BLOCKS_PER_WRITE as usize) {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let lbas = first..first + BLOCKS_PER_WRITE;
            let mut data = Vec::with_capacity((BLOCKS_PER_WRITE as usize) * BLOCK);
            for lba in lbas.clone() {
                data.extend_from_slice(&pattern_block(lba, generation, w));
            }
            {
                let mut l = log.lock().unwrap();
                lbas.clone()
                    .for_each(|lba| l[lba as usize].in_flight = generation);
            }
            match c.write(first, &data, mode == Mode::FuaWrites) {
                Ok(Outcome::Good(_)) => {
                    let mut l = log.lock().unwrap();
                    for lba in lbas {
                        l[lba as usize] = BlockLog {
                            acked: generation,
                            in_flight: 0,
                        };
                    }
                    acked_writes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => return Err(format!("write at {first} answered {other:?}")),
                // The kill: the connection ends with the write unanswered (it stays in flight).
                Err(e) => return Err(format!("connection ended: {e}")),
            }
        }
    }
    unreachable!()
}

fn crash_and_verify(mode: Mode) {
    let medium = tempfile::tempdir().unwrap();
    let path = medium.path().join("lu.img");
    let blocks = WRITERS * SPAN;
    std::fs::File::create(&path)
        .unwrap()
        .set_len(u64::from(blocks) * BLOCK as u64)
        .unwrap();
    let path = path.canonicalize().unwrap();

    let t = Tgtd::start();
    add_lu(&t, &path, mode);
    let flags = open_flags(t.pid(), &path).expect("tgtd holds the backing file open");
    if mode == Mode::SyncLu {
        assert_ne!(
            flags & libc::O_DSYNC as u32,
            0,
            "--bsoflags sync: the file is opened O_DSYNC (flags {flags:o})"
        );
    }

    let log = Arc::new(Mutex::new(vec![BlockLog::default(); blocks as usize]));
    let acked_writes = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let port = t.port;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, acked, stop) = (log.clone(), acked_writes.clone(), stop.clone());
            std::thread::spawn(move || writer(port, w, mode, log, acked, stop))
        })
        .collect();
    let deadline = Instant::now() + WRITE_PHASE_LIMIT;
    while acked_writes.load(Ordering::Relaxed) < WRITES_BEFORE_KILL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before_kill = acked_writes.load(Ordering::Relaxed);
    assert!(
        before_kill >= WRITES_BEFORE_KILL,
        "only {before_kill} writes acknowledged in {WRITE_PHASE_LIMIT:?}"
    );
    // kill -9 while the writers are mid-stream (Tgtd's drop sends SIGKILL).
    drop(t);
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<Result<(), String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let cut = ends
        .iter()
        .filter(|e| matches!(e, Err(m) if m.starts_with("connection ended")))
        .count();
    for e in &ends {
        if let Err(m) = e {
            assert!(
                m.starts_with("connection ended"),
                "a writer failed before the kill: {m}"
            );
        }
    }
    assert!(
        cut > 0,
        "no writer was cut off by the kill: the kill did not land mid-write"
    );

    // Restart on the same file and read everything back.
    let t = Tgtd::start();
    add_lu(&t, &path, mode);
    let mut c = Client::login(t.port, IQN, "iqn.2026-11.test:verifier", 99, IO_TIMEOUT).unwrap();
    c.clear_unit_attentions().unwrap();
    let log = log.lock().unwrap();
    let (mut checked, mut lost, mut in_flight_landed) = (0u32, Vec::new(), 0u32);
    for first in (0..blocks).step_by(64) {
        let data = match c.read(first, 64).unwrap() {
            Outcome::Good(d) => d,
            other => panic!("read at {first}: {other:?}"),
        };
        for (i, b) in data.chunks(BLOCK).enumerate() {
            let lba = first + i as u32;
            let want = log[lba as usize];
            if want.acked == 0 && want.in_flight == 0 {
                continue;
            }
            checked += 1;
            let found = parse_block(b);
            let ok = match found {
                Some((l, g, _)) if l == lba && g == want.acked => true,
                Some((l, g, _)) if l == lba && want.in_flight != 0 && g == want.in_flight => {
                    in_flight_landed += 1;
                    true
                }
                // Never written before the kill, and the in-flight write did not land.
                None if want.acked == 0 && b.iter().all(|x| *x == 0) => true,
                _ => false,
            };
            if !ok {
                lost.push((lba, want.acked, want.in_flight, found));
            }
        }
    }
    c.logout().unwrap();
    eprintln!(
        "durability: {before_kill}+ writes acknowledged, {cut} writers cut off, {checked} blocks \
         checked, {in_flight_landed} in-flight blocks landed"
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged blocks not on the medium after kill -9 (lba, acked gen, in-flight gen, \
         found): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn acknowledged_writes_to_a_sync_lu_survive_kill_9() {
    crash_and_verify(Mode::SyncLu);
}

#[test]
fn acknowledged_fua_writes_survive_kill_9() {
    crash_and_verify(Mode::FuaWrites);
}
