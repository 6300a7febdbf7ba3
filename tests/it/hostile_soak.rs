//! Hostile-initiator soak (issue 11): for a bounded time, hostile clients send malformed,
//! oversized, out-of-phase and out-of-window PDUs, open slow and half-open connections and
//! flood the portal, while verifier sessions write generation-stamped blocks and read each
//! back. Afterwards: the verifiers saw 0 errors and 0 mismatches, the daemon is up and serves
//! a new session, and its descriptors and RSS are back within a stated margin of the baseline.

use crate::common;
use common::client::{parse_block, pattern_block, Client, Outcome, BLOCK};
use common::procfs::{settle, usage, Usage};
use common::Tgtd;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:soak";
/// How long the hostile clients run.
const SOAK: Duration = Duration::from_secs(15);
const VERIFIERS: u32 = 2;
/// Blocks each verifier owns.
const SPAN: u32 = 256;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors and RSS the daemon may hold beyond its baseline once everyone has gone.
const FD_MARGIN: usize = 2;
const RSS_MARGIN_KIB: u64 = 16 * 1024;
const SETTLE: Duration = Duration::from_secs(15);

/// A Login Request header with these fields and `data` (padded).
fn login_req(flags: u8, data_len_field: u32, isid_low: u8, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x43;
    h[1] = flags;
    h[5..8].copy_from_slice(&data_len_field.to_be_bytes()[1..]);
    h[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, isid_low]);
    h.extend_from_slice(data);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

/// A BHS with `opcode` (immediate bit set), ITT, CmdSN and a data segment of `data`.
fn pdu(opcode: u8, flags: u8, itt: u32, cmd_sn: u32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = opcode;
    h[1] = flags;
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h.extend_from_slice(data);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

/// Connects, sends `bytes` (ignoring a reset), reads what comes for at most `wait`, closes.
fn hit(port: u16, bytes: &[u8], wait: Duration) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(wait));
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Cheap deterministic bytes.
fn junk(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pre-login abuse: garbage, lengths beyond any limit, PDUs that belong to another phase.
fn prelogin_abuse(port: u16, round: u64) {
    let w = Duration::from_millis(200);
    match round % 6 {
        0 => hit(port, &junk(round, 48 + (round as usize % 4000)), w),
        1 => hit(port, &login_req(0x87, 0xff_ffff, 1, b""), w),
        2 => hit(port, &pdu(0x01, 0xc1, 1, 1, &[]), w), // SCSI command before login
        3 => hit(port, &pdu(0x46, 0x80, 1, 1, &[]), w), // Logout before login
        4 => hit(port, &login_req(0x87, 12, 2, b"garbage\0\0\0\0\0"), w),
        _ => {
            // Login text that never ends: continue bit set, key fragments, many PDUs.
            let mut bytes = Vec::new();
            for _ in 0..64 {
                bytes.extend(login_req(0x40 | 0x04 | 1, 1000, 3, &[b'A'; 1000]));
            }
            hit(port, &bytes, w);
        }
    }
}

/// Full-feature abuse on a logged-in session of its own: out-of-window and duplicate CmdSNs,
/// an oversized data segment, unknown opcodes, Data-Out for tasks that do not exist, a NOP-Out
/// flood with data that is never read. Each ends by closing the connection.
fn session_abuse(port: u16, round: u64) {
    let name = format!("iqn.2026-11.test:hostile{}", round % 4);
    let Ok(mut c) = Client::login(port, IQN, &name, (round % 4) as u16 + 100, IO_TIMEOUT) else {
        return;
    };
    let sn = c.cmd_sn();
    let s = c.stream();
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let tur = |itt: u32, cmd_sn: u32| pdu(0x01, 0x81, itt, cmd_sn, &[]);
    let mut bytes = Vec::new();
    match round % 5 {
        0 => {
            // Far outside the window, then a wrapped CmdSN.
            for i in 0..64u32 {
                bytes.extend(tur(i + 1, sn.wrapping_add(100_000 + i)));
                bytes.extend(tur(i + 1000, sn.wrapping_sub(1 + i)));
            }
        }
        1 => {
            // A data segment beyond MaxRecvDataSegmentLength (the header says 16 MiB - 1).
            let mut h = pdu(0x01, 0xa1, 7, sn, &[]);
            h[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
            bytes.extend(h);
            bytes.extend(junk(round, 64 * 1024));
        }
        2 => {
            // Unknown opcodes and a Login Request in full feature phase.
            bytes.extend(pdu(0x3e, 0x80, 9, sn, &[]));
            bytes.extend(login_req(0x87, 0, 4, b""));
        }
        3 => {
            // Data-Out for a task and TTT that do not exist.
            for i in 0..32u32 {
                let mut h = pdu(0x05, 0x80, 500 + i, 0, &[0u8; 512]);
                h[20..24].copy_from_slice(&(0x1234_0000 + i).to_be_bytes());
                bytes.extend(h);
            }
        }
        _ => {
            // NOP-Out pings with 8 KiB of data each, never reading the answers.
            for i in 0..256u32 {
                bytes.extend(pdu(0x40, 0x80, 2000 + i, sn, &[0x5a; 8192]));
            }
        }
    }
    let _ = s.write_all(&bytes);
    // Whatever the target answers, this client walks away without reading.
}

/// Slow and half-open connections: a login header one byte at a time, and connections that
/// send half a header and then nothing, all held until `stop`.
fn slow_and_half_open(port: u16, stop: Arc<AtomicBool>) {
    let mut held = Vec::new();
    for i in 0..20u8 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(&[0x43; 20][..usize::from(i % 20) + 1]);
            held.push(s);
        }
    }
    let slow_pdu = login_req(0x87, 0, 5, b"");
    let mut slow = TcpStream::connect(("127.0.0.1", port)).ok();
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(s) = slow.as_mut() {
            if at < slow_pdu.len() && s.write_all(&slow_pdu[at..at + 1]).is_ok() {
                at += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
}

/// Writes and reads back generation-stamped blocks until `stop`; returns (ops, errors,
/// mismatches) with the first problem's description.
fn verifier(port: u16, v: u32, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) -> (u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut c = match Client::login(
        port,
        IQN,
        &format!("iqn.2026-11.test:verifier{v}"),
        v as u16,
        IO_TIMEOUT,
    ) {
        Ok(c) => c,
        Err(e) => return (0, vec![format!("login: {e}")]),
    };
    if let Err(e) = c.clear_unit_attentions() {
        return (0, vec![format!("TUR: {e}")]);
    }
    let mut n = 0;
    'outer: for generation in 1u32.. {
        for lba in (v * SPAN..(v + 1) * SPAN).step_by(8) {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            let data: Vec<u8> = (lba..lba + 8)
                .flat_map(|l| pattern_block(l, generation, v))
                .collect();
            match c.write(lba, &data, false) {
                Ok(Outcome::Good(_)) => {}
                other => {
                    problems.push(format!("write {lba} gen {generation}: {other:?}"));
                    break 'outer;
                }
            }
            match c.read(lba, 8) {
                Ok(Outcome::Good(d)) => {
                    for (i, b) in d.chunks(BLOCK).enumerate() {
                        let want = (lba + i as u32, generation, v);
                        if parse_block(b) != Some(want) {
                            problems.push(format!("mismatch at {}: {:?}", want.0, parse_block(b)));
                        }
                    }
                }
                other => {
                    problems.push(format!("read {lba}: {other:?}"));
                    break 'outer;
                }
            }
            n += 2;
            ops.fetch_add(2, Ordering::Relaxed);
        }
    }
    if let Err(e) = c.logout() {
        problems.push(format!("logout: {e}"));
    }
    (n, problems)
}

#[test]
fn hostile_clients_cost_verified_sessions_nothing() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let f = t.sparse_file(
        "lun.img",
        u64::from(VERIFIERS * SPAN) * BLOCK as u64 + (1 << 20),
    );
    t.add_lun(1, 1, "rdwr", &f);
    let port = t.port;

    // Warm-up: one of each hostile kind and a short verified session, then the baseline.
    for r in 0..6 {
        prelogin_abuse(port, r);
    }
    for r in 0..5 {
        session_abuse(port, r);
    }
    let base = lowest_usage(&t, Duration::from_secs(3));

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let verifiers: Vec<_> = (0..VERIFIERS)
        .map(|v| {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || verifier(port, v, stop, ops))
        })
        .collect();
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || slow_and_half_open(port, stop))
    };
    let hostile: Vec<_> = (0..2u64)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut r = k;
                let end = Instant::now() + SOAK;
                while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                    if k == 0 {
                        prelogin_abuse(port, r);
                    } else {
                        session_abuse(port, r);
                    }
                    // A connect flood between rounds.
                    for _ in 0..20 {
                        drop(TcpStream::connect(("127.0.0.1", port)));
                    }
                    r += 2;
                }
                r / 2
            })
        })
        .collect();
    let rounds: u64 = hostile.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    let mut verified_ops = 0;
    let mut problems = Vec::new();
    for v in verifiers {
        let (n, p) = v.join().unwrap();
        verified_ops += n;
        problems.extend(p);
    }
    eprintln!("soak: {rounds} hostile rounds, {verified_ops} verified I/Os");
    assert!(
        problems.is_empty(),
        "verified sessions saw problems: {problems:?}"
    );
    assert!(
        verified_ops >= 100,
        "verified sessions made too little progress: {verified_ops} I/Os"
    );

    // The daemon is up and serves a new session.
    let mut c = Client::login(port, IQN, "iqn.2026-11.test:after", 1, IO_TIMEOUT)
        .expect("a new session after the soak");
    c.clear_unit_attentions().unwrap();
    let b = pattern_block(3, 77, 9);
    assert_eq!(c.write(3, &b, false).unwrap(), Outcome::Good(vec![]));
    assert_eq!(c.read(3, 1).unwrap(), Outcome::Good(b.to_vec()));
    c.logout().unwrap();

    let u = settle(t.pid(), base, FD_MARGIN, RSS_MARGIN_KIB, SETTLE);
    eprintln!(
        "soak: afterwards {} fds (baseline {}), RSS {} KiB (baseline {} KiB)",
        u.fds, base.fds, u.rss_kib, base.rss_kib
    );
    assert!(
        u.fds <= base.fds + FD_MARGIN,
        "{} descriptors open after the soak, baseline {} (+{FD_MARGIN} allowed)",
        u.fds,
        base.fds
    );
    assert!(
        u.rss_kib <= base.rss_kib + RSS_MARGIN_KIB,
        "RSS {} KiB after the soak, baseline {} KiB (+{RSS_MARGIN_KIB} KiB allowed)",
        u.rss_kib,
        base.rss_kib
    );
}

/// The lowest descriptor count and RSS seen over `d` (the daemon trims once a second).
fn lowest_usage(t: &Tgtd, d: Duration) -> Usage {
    let mut best = usage(t.pid());
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        let u = usage(t.pid());
        best.fds = best.fds.min(u.fds);
        best.rss_kib = best.rss_kib.min(u.rss_kib);
    }
    best
}

/// Logs in and sends `n` NOP-Out pings with 8 KiB of data each, never reading the NOP-In
/// answers (a write timeout ends the flood if the target stops reading). Returns the session's
/// socket (still open) and how many pings went out.
fn unread_nop_flood(port: u16, n: u32) -> (Client, u32) {
    let mut c = Client::login(port, IQN, "iqn.2026-11.test:flood", 1, IO_TIMEOUT).unwrap();
    let sn = c.cmd_sn();
    let s = c.stream();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0;
    for i in 0..n {
        // Immediate NOP-Out: it does not take a CmdSN slot.
        if s.write_all(&pdu(0x40, 0x80, i + 1, sn, &[0x5a; 8192]))
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    (c, sent)
}

#[test]
fn memory_of_an_unread_nop_flood_is_given_back_after_close() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let f = t.sparse_file("lun.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &f);
    drop(unread_nop_flood(t.port, 100));
    let base = lowest_usage(&t, Duration::from_secs(3));
    let (c, sent) = unread_nop_flood(t.port, 5000);
    drop(c);
    let u = settle(t.pid(), base, FD_MARGIN, RSS_MARGIN_KIB, SETTLE);
    eprintln!(
        "soak: {sent} unread 8 KiB pings, then close: RSS {} KiB (baseline {} KiB)",
        u.rss_kib, base.rss_kib
    );
    assert!(
        u.rss_kib <= base.rss_kib + RSS_MARGIN_KIB && u.fds <= base.fds + FD_MARGIN,
        "after an unread flood of {sent} pings and a close: RSS {} KiB, {} fds; baseline {} \
         KiB, {} fds",
        u.rss_kib,
        u.fds,
        base.rss_kib,
        base.fds
    );
}

#[test]
#[ignore = "issue 11 item 5 (not fixed): receives are re-armed whatever the output backlog, so \
            20,000 unread 8 KiB NOP-Out pings hold ~160 MB while the connection lives"]
fn an_unread_nop_flood_is_bounded_while_connected() {
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let f = t.sparse_file("lun.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &f);
    let base = lowest_usage(&t, Duration::from_secs(1));
    let (c, sent) = unread_nop_flood(t.port, 20_000);
    let held = usage(t.pid());
    drop(c);
    // A target that stops reading from an initiator that does not read its answers holds
    // a bounded backlog; 32 MiB is far above any sane per-connection output budget.
    assert!(
        held.rss_kib <= base.rss_kib + 32 * 1024,
        "{sent} unread pings: RSS {} KiB while connected, baseline {} KiB",
        held.rss_kib,
        base.rss_kib
    );
}
