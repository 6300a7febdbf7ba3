//! The shard-side budgets (issue 11), each driven to its limit: the target refuses or paces,
//! and what it holds never grows past the budget.
//!
//! - connections per shard and per portal (`--max-conns-per-shard`, `--max-conns-per-portal`):
//!   more are closed at accept, logged rate-limited, and hold no descriptor;
//! - the login deadline also closes a login sent one byte at a time;
//! - output backlog per connection (`--conn-backlog-kib`): an initiator that sends pings with
//!   data and does not read the answers is no longer read from, so tgtd's memory stays put,
//!   and every ping is answered once it reads;
//! - write buffers per shard (`--write-buffer-mib`): many sessions asking for large writes
//!   get R2Ts only for what fits, buffers stay within the budget, and every write completes
//!   with its data on the medium.

use crate::common;
use common::initiator::{be32, login, read_pdu, scsi_cmd};
use common::Tgtd;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:budgets";

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Whether the target closed `s` (EOF or reset) within `within`.
fn closed_by_target(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Whether a fresh login on `s` is answered (the connection is served).
fn served(s: &mut TcpStream, initiator: &str) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    common::initiator::send_leading_login(s, IQN, initiator);
    matches!(read_pdu(s), Ok((h, _)) if h[0] & 0x3f == 0x23)
}

#[test]
fn connections_over_the_shard_cap_are_refused_and_logged_rate_limited() {
    let t = Tgtd::start_opts(&common::TgtdOpts {
        cores: Some("0"),
        args: &["--max-conns-per-shard", "3"],
        stderr_to_file: true,
        ..common::TgtdOpts::default()
    });
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    let pid = t.pid();
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", t.port)).unwrap())
        .collect();
    // The first three are served (one is asked, in login phase).
    assert!(served(&mut held[0], "iqn.2026-11.test:held0"));
    let fds_full = fds(pid);
    for i in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        assert!(
            closed_by_target(&mut s, Duration::from_secs(5)),
            "connection {i} over the cap was not closed"
        );
    }
    assert!(
        fds(pid) <= fds_full,
        "refused connections hold descriptors: {} > {fds_full}",
        fds(pid)
    );
    // The log line is rate-limited; the count in `--op stat` is not.
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        stat.contains("refused, shard connection limit: 20\n"),
        "stat after 20 refusals:\n{stat}"
    );
    // Refusals are logged, through the per-peer rate limit (5 lines per 5 s window).
    t.wait_log_line(&["refused", "limit of 3 connections"]);
    let lines = t
        .log()
        .lines()
        .filter(|l| l.contains("limit of 3 connections"))
        .count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} refusal lines for 20 refusals:\n{}",
        t.log()
    );
    // A held connection closes: its place is free again (bounded poll).
    drop(held.remove(1));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        if served(&mut s, "iqn.2026-11.test:again") {
            break;
        }
        assert!(Instant::now() < end, "the freed place never came back");
    }
}

#[test]
fn connections_over_the_portal_cap_are_refused() {
    let t = Tgtd::start_full(None, &[], &["--max-conns-per-portal", "2"]);
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    let mut a = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    assert!(served(&mut a, "iqn.2026-11.test:a"));
    assert!(served(&mut b, "iqn.2026-11.test:b"));
    // Nothing refused yet: the stat output is tgt's alone.
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(!stat.contains("refused"), "idle stat:\n{stat}");
    for _ in 0..5 {
        let mut c = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        assert!(closed_by_target(&mut c, Duration::from_secs(5)));
    }
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        stat.contains("\nConnections refused or closed by a budget, since start:\n")
            && stat.contains("refused, portal connection limit: 5\n")
            && stat.contains("refused, shard connection limit: 0\n"),
        "stat after 5 refusals:\n{stat}"
    );
}

#[test]
fn a_login_sent_one_byte_at_a_time_is_closed_at_the_deadline() {
    let t = Tgtd::start_full(None, &[], &["--login-timeout", "1"]);
    t.add_target(1, IQN);
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    let keys =
        format!("InitiatorName=iqn.2026-11.test:slow\0SessionType=Normal\0TargetName={IQN}\0");
    let pdu = common::initiator::login_pdu(&keys);
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 50 ms would take several seconds for the whole PDU; the 1 s deadline
    // counts from accept, so the target closes long before (a write then fails).
    for byte in &pdu {
        if s.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match s.read(&mut probe) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(_) => panic!("the target answered a login it never fully received"),
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(sent < pdu.len(), "the whole slow login got through");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "closed after {took:?} ({sent} bytes)"
    );
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        stat.contains("closed, login deadline: 1\n"),
        "stat after one login deadline:\n{stat}"
    );
}

/// An immediate NOP-Out ping (ITT `itt`) with `data`, answered by a NOP-In echoing it.
fn ping(itt: u32, cmd_sn: u32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40;
    h[1] = 0x80;
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h.extend_from_slice(data);
    h
}

#[test]
fn an_initiator_that_does_not_read_is_paced_not_buffered() {
    const PINGS: u32 = 8000;
    let t = Tgtd::start_full(
        Some("0"),
        &[("CURVE_TGT_TEST_ENGINES", "1")],
        &["--conn-backlog-kib", "1024"],
    );
    t.add_target(1, IQN);
    t.add_lun(1, 1, "null", std::path::Path::new("/dev/null"));
    let pid = t.pid();
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (_, exp_cmd_sn, _) = login(&mut s, IQN, "iqn.2026-11.test:deaf");
    let rss0 = rss_kib(pid);
    let written = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let mut w = s.try_clone().unwrap();
        // Bounded, so a failing assertion below (nobody reading) cannot hang the test.
        w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let written = &written;
        sc.spawn(move || {
            let data = vec![0x5au8; 8192];
            for i in 0..PINGS {
                if w.write_all(&ping(i, exp_cmd_sn, &data)).is_err() {
                    return;
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
        });
        // 64 MiB of pings, none of the answers read: the writer stalls once the target stops
        // reading (socket buffers plus the 1 MiB backlog), well before the end.
        let end = Instant::now() + Duration::from_secs(60);
        let (mut last, mut since) = (0, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let n = written.load(Ordering::Relaxed);
            if n != last {
                (last, since) = (n, Instant::now());
            } else if since.elapsed() > Duration::from_secs(2) {
                break;
            }
            assert!(
                n < u64::from(PINGS),
                "the target read every ping without pacing"
            );
            assert!(Instant::now() < end, "the writer never stalled");
        }
        let grown = rss_kib(pid).saturating_sub(rss0);
        assert!(
            grown < 16 * 1024,
            "tgtd grew by {grown} KiB while {last} pings (of {PINGS}) were sent unread"
        );
        assert!(
            shard_field(&t, "backlog_pauses") > 0,
            "receives held back for the backlog"
        );
        // Now read: every ping is answered, in order, and the writer finishes.
        for i in 0..PINGS {
            let (h, d) = read_pdu(&mut s).expect("NOP-In");
            assert_eq!(h[0] & 0x3f, 0x20, "NOP-In");
            assert_eq!(be32(&h, 16), i, "answers in order");
            assert_eq!(d.len(), 8192);
        }
    });
    assert_eq!(written.load(Ordering::Relaxed), u64::from(PINGS));
}

const MIB: usize = 1 << 20;
const SESSIONS: usize = 6;
const WRITES: usize = 4;
const SEG: usize = 8192;

fn pattern(session: usize, write: usize, offset: usize) -> u8 {
    ((session * 31 + write * 7 + offset / 512) % 251) as u8
}

/// WRITE(10) of 1 MiB at `lba` with no immediate data.
fn write_1m(itt: u32, cmd_sn: u32, lba: u32) -> Vec<u8> {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((MIB / 512) as u16).to_be_bytes());
    scsi_cmd(itt, cmd_sn, 0x20 | 1, MIB as u32, &cdb, &[])
}

/// The Data-Out PDUs answering one R2T of write `w` of session `si`.
fn data_out(si: usize, w: usize, itt: u32, ttt: u32, offset: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + len / SEG * 48 + 48);
    let mut done = 0;
    let mut sn = 0u32;
    while done < len {
        let n = SEG.min(len - done);
        let mut h = [0u8; 48];
        h[0] = 0x05;
        h[1] = if done + n == len { 0x80 } else { 0 };
        h[5..8].copy_from_slice(&(n as u32).to_be_bytes()[1..]);
        h[9] = 1;
        h[16..20].copy_from_slice(&itt.to_be_bytes());
        h[20..24].copy_from_slice(&ttt.to_be_bytes());
        h[36..40].copy_from_slice(&sn.to_be_bytes());
        h[40..44].copy_from_slice(&((offset + done) as u32).to_be_bytes());
        out.extend_from_slice(&h);
        out.extend((0..n).map(|i| pattern(si, w, offset + done + i)));
        done += n;
        sn += 1;
    }
    out
}

/// Counts a finished writer thread when dropped.
struct Finished<'a>(&'a AtomicU64);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A field of the test-mode stat lines (`CURVE_TGT_TEST_ENGINES=1`), summed over shards.
fn shard_field(t: &Tgtd, field: &str) -> u64 {
    let out = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    let key = format!("{field}=");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("Shard ")).collect();
    assert!(!lines.is_empty(), "no shard line in:\n{out}");
    lines
        .iter()
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {field} in {l}"))
        })
        .sum()
}

#[test]
fn many_large_writes_are_paced_by_the_shard_write_budget() {
    const BUDGET_MIB: usize = 4;
    let t = Tgtd::start_full(
        Some("0"),
        &[("CURVE_TGT_TEST_ENGINES", "1")],
        &["--write-buffer-mib", &BUDGET_MIB.to_string()],
    );
    t.add_target(1, IQN);
    let file = t.sparse_file("lu.img", (SESSIONS * WRITES * MIB) as u64);
    t.add_lun(1, 1, "rdwr", &file);
    // Every session sends all its WRITEs at once, then a ping: once the ping's answer is in,
    // every WRITE has been seen, and the R2Ts before it are all that were granted.
    let mut conns = Vec::new();
    let mut granted = Vec::new();
    for si in 0..SESSIONS {
        let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (_, cmd_sn, _) = login(&mut s, IQN, &format!("iqn.2026-11.test:writer{si}"));
        // The new nexus's first command collects its POWER ON unit attention.
        s.write_all(&common::initiator::test_unit_ready(0x7777, cmd_sn))
            .unwrap();
        let (h, _) = read_pdu(&mut s).expect("TEST UNIT READY response");
        assert_eq!(h[0] & 0x3f, 0x21);
        let cmd_sn = cmd_sn + 1;
        for w in 0..WRITES {
            let lba = ((si * WRITES + w) * MIB / 512) as u32;
            s.write_all(&write_1m(w as u32, cmd_sn + w as u32, lba))
                .unwrap();
        }
        s.write_all(&ping(0x9999, cmd_sn + WRITES as u32, &[]))
            .unwrap();
        let mut r2ts = Vec::new();
        loop {
            let (h, _) = read_pdu(&mut s).expect("R2T or NOP-In");
            match h[0] & 0x3f {
                0x31 => r2ts.push((be32(&h, 16), be32(&h, 20), be32(&h, 40), be32(&h, 44))),
                0x20 => break,
                op => panic!("unexpected opcode {op:#x}"),
            }
        }
        granted.push(r2ts);
        conns.push((s, cmd_sn));
    }
    let admitted: usize = granted.iter().map(|r| r.len()).sum();
    assert!(admitted >= 1, "no write admitted at all");
    assert!(
        admitted * MIB <= BUDGET_MIB * MIB,
        "{admitted} writes of 1 MiB admitted at once with a {BUDGET_MIB} MiB budget"
    );
    let held = shard_field(&t, "buffer_bytes_in_use");
    assert!(
        held <= (BUDGET_MIB * MIB) as u64,
        "{held} buffer bytes held with a {BUDGET_MIB} MiB budget"
    );
    assert_eq!(
        shard_field(&t, "write_budget_bytes"),
        (admitted * MIB) as u64,
        "the budget holds exactly the admitted writes' buffers"
    );
    // Now every session answers its R2Ts; the budget admits the waiting writes in turn.
    let peak = AtomicU64::new(held);
    let peak_budget = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for (si, ((mut s, _), r2ts)) in conns.into_iter().zip(granted).enumerate() {
            let done = &done;
            sc.spawn(move || {
                // Counted however the thread ends, so the sampler below stops.
                let _done = Finished(done);
                for (itt, ttt, off, len) in r2ts {
                    let w = itt as usize;
                    s.write_all(&data_out(si, w, itt, ttt, off as usize, len as usize))
                        .unwrap();
                }
                let mut finished = 0;
                while finished < WRITES {
                    let (h, _) = read_pdu(&mut s).expect("R2T or response");
                    match h[0] & 0x3f {
                        0x31 => {
                            let (itt, ttt) = (be32(&h, 16), be32(&h, 20));
                            let (off, len) = (be32(&h, 40) as usize, be32(&h, 44) as usize);
                            s.write_all(&data_out(si, itt as usize, itt, ttt, off, len))
                                .unwrap();
                        }
                        0x21 => {
                            assert_eq!((h[2], h[3]), (0, 0), "write {} GOOD", be32(&h, 16));
                            finished += 1;
                        }
                        op => panic!("unexpected opcode {op:#x}"),
                    }
                }
            });
        }
        // Sample the buffers held while the writes run.
        let end = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::Relaxed) < SESSIONS as u64 {
            peak.fetch_max(shard_field(&t, "buffer_bytes_in_use"), Ordering::Relaxed);
            peak_budget.fetch_max(shard_field(&t, "write_budget_bytes"), Ordering::Relaxed);
            assert!(Instant::now() < end, "writes did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (peak, peak_budget) = (peak.into_inner(), peak_budget.into_inner());
    assert!(
        peak <= (BUDGET_MIB * MIB) as u64 && peak_budget <= (BUDGET_MIB * MIB) as u64,
        "{peak} buffer bytes ({peak_budget} from the budget) held at the peak with a \
         {BUDGET_MIB} MiB budget"
    );
    assert_eq!(shard_field(&t, "write_budget_bytes"), 0, "all returned");
    // Every write is on the medium.
    let data = std::fs::read(&file).unwrap();
    for si in 0..SESSIONS {
        for w in 0..WRITES {
            let base = (si * WRITES + w) * MIB;
            for off in (0..MIB).step_by(512) {
                assert_eq!(
                    data[base + off],
                    pattern(si, w, off),
                    "session {si} write {w} offset {off}"
                );
            }
        }
    }
}

/// Logs in on a fresh connection and collects the new nexus's POWER ON unit attention with a
/// TEST UNIT READY; returns the stream and the next CmdSN.
fn writer(t: &Tgtd, initiator: &str) -> (TcpStream, u32) {
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (_, cmd_sn, _) = login(&mut s, IQN, initiator);
    s.write_all(&common::initiator::test_unit_ready(0x7777, cmd_sn))
        .unwrap();
    let (h, _) = read_pdu(&mut s).expect("TEST UNIT READY response");
    assert_eq!(h[0] & 0x3f, 0x21);
    (s, cmd_sn + 1)
}

/// Issue 11, the Data-Out deadline (`--dataout-timeout`): a session takes R2Ts for writes
/// that fill the shard's whole write budget and then sends nothing. Before, it held the
/// budget for as long as its connection lived and every other writer on the shard waited
/// for ever; now its connection is closed at the deadline, the budget comes back, and
/// another session's verified write completes within the deadline's bound.
#[test]
fn a_writer_silent_after_its_r2ts_loses_its_connection_not_the_shards_budget() {
    const BUDGET_MIB: usize = 2;
    const DEADLINE_S: u64 = 2;
    let t = Tgtd::start_full(
        Some("0"),
        &[("CURVE_TGT_TEST_ENGINES", "1")],
        &[
            "--write-buffer-mib",
            &BUDGET_MIB.to_string(),
            "--dataout-timeout",
            &DEADLINE_S.to_string(),
            // No per-session share: the silent session may take the whole budget, which is
            // what the deadline must get back.
            "--write-buffer-session-pct",
            "100",
        ],
    );
    t.add_target(1, IQN);
    let file = t.sparse_file("lu.img", (4 * MIB) as u64);
    t.add_lun(1, 1, "rdwr", &file);
    // The hostile session: two writes of 1 MiB take the whole budget; it reads their R2Ts
    // (and a ping's answer, so it knows it has them all) and then goes silent.
    let (mut hostile, cmd_sn) = writer(&t, "iqn.2026-11.test:silent");
    for w in 0..2u32 {
        hostile
            .write_all(&write_1m(w, cmd_sn + w, w * (MIB / 512) as u32))
            .unwrap();
    }
    hostile.write_all(&ping(0x9999, cmd_sn + 2, &[])).unwrap();
    let mut r2ts = 0;
    loop {
        let (h, _) = read_pdu(&mut hostile).expect("R2T or NOP-In");
        match h[0] & 0x3f {
            0x31 => r2ts += 1,
            0x20 => break,
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
    assert_eq!(r2ts, 2, "both writes solicited");
    assert_eq!(
        shard_field(&t, "write_budget_bytes"),
        (BUDGET_MIB * MIB) as u64,
        "the silent session holds the whole budget"
    );
    let silent_since = Instant::now();
    // Another session on the same shard writes 1 MiB: its R2T waits for room, then its
    // data goes in and it completes.
    let (mut victim, cmd_sn) = writer(&t, "iqn.2026-11.test:victim");
    let lba = (2 * MIB / 512) as u32;
    victim.write_all(&write_1m(7, cmd_sn, lba)).unwrap();
    loop {
        let (h, _) = read_pdu(&mut victim)
            .expect("the waiting write got no R2T or response: the budget never came back");
        match h[0] & 0x3f {
            0x31 => {
                let (itt, ttt) = (be32(&h, 16), be32(&h, 20));
                let (off, len) = (be32(&h, 40) as usize, be32(&h, 44) as usize);
                victim
                    .write_all(&data_out(1, 7, itt, ttt, off, len))
                    .unwrap();
            }
            0x21 => {
                assert_eq!((h[2], h[3]), (0, 0), "the waiting write ends GOOD");
                break;
            }
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
    let took = silent_since.elapsed();
    // The deadline, plus up to one tick of the 1 s clock, plus the write itself; the margin
    // is for a loaded machine, far below the 30 s the write would otherwise wait.
    assert!(
        took < Duration::from_secs(DEADLINE_S + 8),
        "the waiting write took {took:?} with a {DEADLINE_S} s Data-Out deadline"
    );
    assert!(
        closed_by_target(&mut hostile, Duration::from_secs(5)),
        "the silent session's connection is closed"
    );
    // Every byte of the budget is back (bounded poll: the close completes on the shard).
    let end = Instant::now() + Duration::from_secs(10);
    while shard_field(&t, "write_budget_bytes") != 0 {
        assert!(
            Instant::now() < end,
            "the write budget never returned to idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(shard_field(&t, "buffer_bytes_in_use"), 0, "no buffer held");
    let stat = t.tgtadm_ok(&["--op", "stat", "--mode", "sys"]);
    assert!(
        stat.contains("closed, Data-Out deadline: 1\n"),
        "stat after one Data-Out deadline:\n{stat}"
    );
    // The waiting write is on the medium; the silent one's range was never written.
    let data = std::fs::read(&file).unwrap();
    for off in (0..MIB).step_by(512) {
        assert_eq!(data[2 * MIB + off], pattern(1, 7, off), "offset {off}");
    }
    assert!(data[..2 * MIB].iter().all(|b| *b == 0), "no silent data");
}

/// Sends `writes` WRITEs of 1 MiB (ITT = index, LBA from `first_lba`) and a ping; returns the
/// R2Ts granted before the ping's answer as (itt, ttt, offset, length).
fn send_writes(
    s: &mut TcpStream,
    cmd_sn: u32,
    writes: u32,
    first_lba: u32,
) -> Vec<(u32, u32, u32, u32)> {
    for w in 0..writes {
        s.write_all(&write_1m(w, cmd_sn + w, first_lba + w * (MIB / 512) as u32))
            .unwrap();
    }
    s.write_all(&ping(0x9999, cmd_sn + writes, &[])).unwrap();
    let mut r2ts = Vec::new();
    loop {
        let (h, _) = read_pdu(s).expect("R2T or NOP-In");
        match h[0] & 0x3f {
            0x31 => r2ts.push((be32(&h, 16), be32(&h, 20), be32(&h, 40), be32(&h, 44))),
            0x20 => return r2ts,
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

/// Answers `r2ts` and every R2T that follows until `writes` responses are in, all GOOD.
fn finish_writes(s: &mut TcpStream, si: usize, writes: usize, r2ts: Vec<(u32, u32, u32, u32)>) {
    for (itt, ttt, off, len) in r2ts {
        s.write_all(&data_out(
            si,
            itt as usize,
            itt,
            ttt,
            off as usize,
            len as usize,
        ))
        .unwrap();
    }
    let mut finished = 0;
    while finished < writes {
        let (h, _) = read_pdu(s).expect("R2T or response");
        match h[0] & 0x3f {
            0x31 => {
                let (itt, ttt) = (be32(&h, 16), be32(&h, 20));
                let (off, len) = (be32(&h, 40) as usize, be32(&h, 44) as usize);
                s.write_all(&data_out(si, itt as usize, itt, ttt, off, len))
                    .unwrap();
            }
            0x21 => {
                assert_eq!((h[2], h[3]), (0, 0), "write {} GOOD", be32(&h, 16));
                finished += 1;
            }
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

/// Issue 11, the per-session share (`--write-buffer-session-pct`): one session asking for
/// the whole shard budget at once gets R2Ts only for its share, so another session's write
/// is solicited at once instead of waiting behind it (a session that trickles its data can
/// hold no more than that); the first session's other writes follow as its own finish, and
/// everything lands on the medium.
#[test]
fn one_session_holds_at_most_its_share_of_the_write_budget() {
    const BUDGET_MIB: usize = 4;
    let t = Tgtd::start_full(
        Some("0"),
        &[("CURVE_TGT_TEST_ENGINES", "1")],
        &[
            "--write-buffer-mib",
            &BUDGET_MIB.to_string(),
            "--write-buffer-session-pct",
            "25",
        ],
    );
    t.add_target(1, IQN);
    let file = t.sparse_file("lu.img", (8 * MIB) as u64);
    t.add_lun(1, 1, "rdwr", &file);
    let (mut greedy, cmd_sn) = writer(&t, "iqn.2026-11.test:greedy");
    let granted = send_writes(&mut greedy, cmd_sn, 4, 0);
    let writes_granted: std::collections::BTreeSet<u32> = granted.iter().map(|r| r.0).collect();
    assert_eq!(
        writes_granted.len(),
        1,
        "4 writes of 1 MiB asked with a 1 MiB share: R2Ts for {writes_granted:?}"
    );
    assert_eq!(shard_field(&t, "write_budget_bytes"), MIB as u64);
    // Another session's write is solicited at once: the budget has room the greedy one
    // may not take.
    let (mut other, cmd_sn) = writer(&t, "iqn.2026-11.test:other");
    let r2ts = send_writes(&mut other, cmd_sn, 1, (4 * MIB / 512) as u32);
    assert!(!r2ts.is_empty(), "the second session's write got no R2T");
    finish_writes(&mut other, 1, 1, r2ts);
    // The greedy session's writes all complete, one share at a time.
    finish_writes(&mut greedy, 0, 4, granted);
    let end = Instant::now() + Duration::from_secs(10);
    while shard_field(&t, "write_budget_bytes") != 0 {
        assert!(
            Instant::now() < end,
            "the write budget never returned to idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = std::fs::read(&file).unwrap();
    for (si, w, base) in [(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3), (1, 0, 4)] {
        for off in (0..MIB).step_by(512) {
            assert_eq!(
                data[base * MIB + off],
                pattern(si, w, off),
                "session {si} write {w} offset {off}"
            );
        }
    }
}
