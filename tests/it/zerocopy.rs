//! Zero-copy Data-In (issue 10) end to end over loopback: a scripted initiator reads known
//! data through tgtd with each engine, with and without data digests, and checks every byte
//! and digest; `tgtadm --op stat` shows what each connection did. Loopback always copies
//! (the kernel reports it in every notification), so the tests that exercise the zero-copy
//! send path itself run tgtd with `CURVE_TGT_ZEROCOPY_FORCE=1`, which keeps a connection in
//! zero-copy mode despite copied notifications; the default (auto) is tested to step aside.
//!
//! The ENOBUFS test needs root and `ip netns`: it lowers `net.core.optmem_max` to 0 inside a
//! network namespace it creates (the kernel keeps it per namespace since 6.9), so the kernel
//! itself refuses every `MSG_ZEROCOPY` send there.

use crate::common;
use common::initiator::{be32, login_pdu};
use common::{Tgtd, TgtdOpts};
use curve_tgt::iscsi::digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:zerocopy";
const LU_BYTES: u64 = 8 << 20;

/// The byte at `off` of the LU: a pattern no two nearby blocks share.
fn pattern(off: u64) -> u8 {
    let x = off.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29;
    (x ^ (off >> 9)) as u8
}

/// A target with one rdwr LU filled with `pattern`.
fn target(opts: &TgtdOpts) -> Tgtd {
    let t = Tgtd::start_opts(opts);
    t.add_target(1, IQN);
    let img = t.dir.path().join("data.img");
    let data: Vec<u8> = (0..LU_BYTES).map(pattern).collect();
    std::fs::write(&img, data).unwrap();
    // Readable and writable by a tgtd that runs as another user (the ENOMEM test).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o666)).unwrap();
    t.add_lun(1, 1, "rdwr", &img);
    t
}

/// A logged-in connection of the scripted initiator.
struct Conn {
    s: TcpStream,
    data_digest: bool,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

impl Conn {
    fn login(port: u16, initiator: &str, data_digest: bool) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Conn::login_on(s, initiator, data_digest)
    }

    fn login_on(mut s: TcpStream, initiator: &str, data_digest: bool) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let dd = if data_digest { "CRC32C" } else { "None" };
        let keys = format!(
            "InitiatorName={initiator}\0SessionType=Normal\0TargetName={IQN}\0HeaderDigest=None\0\
             DataDigest={dd}\0MaxRecvDataSegmentLength=262144\0MaxBurstLength=1048576\0\
             ImmediateData=Yes\0InitialR2T=Yes\0"
        );
        for round in 0..4 {
            s.write_all(&login_pdu(if round == 0 { &keys } else { "" }))
                .unwrap();
            // Login PDUs never carry digests (RFC 7143 §13.1: they start after login).
            let (h, _) = read_plain(&mut s);
            assert_eq!(h[0] & 0x3f, 0x23, "login response");
            assert_eq!(h[36], 0, "login status {:#x}/{:#x}", h[36], h[37]);
            if h[1] & 0x80 != 0 && h[1] & 3 == 3 {
                return Conn {
                    s,
                    data_digest,
                    cmd_sn: be32(&h, 28),
                    exp_stat_sn: be32(&h, 24).wrapping_add(1),
                    itt: 1,
                };
            }
        }
        panic!("no full feature phase");
    }

    /// Sends READ(10) of `blocks` 512-byte blocks at `lba`; returns its ITT.
    fn send_read(&mut self, lba: u32, blocks: u16) -> u32 {
        let itt = self.itt;
        self.itt += 1;
        let mut h = [0u8; 48];
        h[0] = 0x01;
        h[1] = 0x80 | 0x40 | 1; // final, read, simple
        h[9] = 1; // LUN 1
        h[16..20].copy_from_slice(&itt.to_be_bytes());
        h[20..24].copy_from_slice(&(u32::from(blocks) * 512).to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        h[32] = 0x28;
        h[34..38].copy_from_slice(&lba.to_be_bytes());
        h[39..41].copy_from_slice(&blocks.to_be_bytes());
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.s.write_all(&h).unwrap();
        itt
    }

    /// Reads PDUs until the status of `itt`; returns the data (checked against its offsets)
    /// and the SCSI status. A unit attention's CHECK CONDITION is returned as status 2.
    fn collect(&mut self, itt: u32, len: usize) -> (Vec<u8>, u8) {
        let mut data = vec![0u8; len];
        let mut got = 0usize;
        loop {
            let (h, d) = self.read_pdu();
            let op = h[0] & 0x3f;
            assert_eq!(be32(&h, 16), itt, "PDU for another task (opcode {op:#x})");
            match op {
                0x25 => {
                    let off = be32(&h, 40) as usize;
                    data[off..off + d.len()].copy_from_slice(&d);
                    got += d.len();
                    if h[1] & 0x01 != 0 {
                        self.exp_stat_sn = be32(&h, 24).wrapping_add(1);
                        assert_eq!(got, len, "Data-In bytes");
                        return (data, h[3]);
                    }
                }
                0x21 => {
                    self.exp_stat_sn = be32(&h, 24).wrapping_add(1);
                    return (data, h[3]);
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// One PDU, checking the data digest when negotiated.
    fn read_pdu(&mut self) -> ([u8; 48], Vec<u8>) {
        let mut h = [0u8; 48];
        self.s.read_exact(&mut h).unwrap();
        let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
        let padded = len.div_ceil(4) * 4;
        let mut d = vec![0u8; padded];
        self.s.read_exact(&mut d).unwrap();
        if self.data_digest && len > 0 {
            let mut dg = [0u8; 4];
            self.s.read_exact(&mut dg).unwrap();
            let want = digest::to_wire(digest::crc32c(&d));
            assert_eq!(dg, want, "data digest of a {len}-byte segment");
        }
        d.truncate(len);
        (h, d)
    }

    /// A whole READ: retried once past the power-on unit attention.
    fn read(&mut self, lba: u32, blocks: u16) -> Vec<u8> {
        for _ in 0..2 {
            let itt = self.send_read(lba, blocks);
            let (d, status) = self.collect(itt, usize::from(blocks) * 512);
            if status == 0 {
                return d;
            }
            assert_eq!(status, 2, "CHECK CONDITION (unit attention) or GOOD");
        }
        panic!("READ kept failing");
    }
}

fn read_plain(s: &mut TcpStream) -> ([u8; 48], Vec<u8>) {
    common::initiator::read_pdu(s).expect("PDU")
}

/// Reads small and large extents and checks every byte against the pattern.
fn read_and_check(c: &mut Conn) {
    for (lba, blocks) in [
        (0u32, 8u16),
        (8, 8),
        (100, 128),
        (2048, 2048),
        (7, 2049),
        (0, 16384),
    ] {
        let d = c.read(lba, blocks);
        let base = u64::from(lba) * 512;
        let bad = d
            .iter()
            .enumerate()
            .find(|(i, b)| **b != pattern(base + *i as u64));
        assert!(
            bad.is_none(),
            "READ lba {lba} x{blocks}: byte {:?} differs",
            bad.map(|(i, _)| i)
        );
    }
}

/// One zero-copy row of `--op stat`: (mode, counters by column name).
#[derive(Debug)]
struct ZcRow {
    mode: String,
    n: std::collections::HashMap<&'static str, u64>,
}

const COLS: [&str; 12] = [
    "large",
    "zc_sends",
    "zc_bytes",
    "copy_bytes",
    "notifs",
    "copied",
    "enobufs",
    "enomem",
    "eperm",
    "unsupp",
    "pending",
    "held",
];

fn zc_rows(t: &Tgtd) -> (Vec<ZcRow>, String) {
    let out = t.tgtadm_ok(&["--lld", "iscsi", "--op", "stat", "--mode", "sys"]);
    let rows = out
        .lines()
        .skip_while(|l| !l.starts_with("Zero-copy Data-In"))
        .skip(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 16)
        .map(|f| ZcRow {
            mode: f[3].to_string(),
            n: COLS
                .iter()
                .zip(&f[4..])
                .map(|(k, v)| (*k, v.parse().unwrap()))
                .collect(),
        })
        .collect();
    (rows, out)
}

/// "pooled buffers out: N" from the stat output.
fn pool_out(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix("pooled buffers out: "))
        .and_then(|r| r.split(',').next()?.parse().ok())
}

fn forced(engine: &'static str) -> [&'static str; 2] {
    ["--zerocopy-engine", engine]
}

/// The registered-buffer line of the stat output: (registered buffers, fixed-buffer sends,
/// registration failures).
fn fixed_line(out: &str) -> Option<(u64, u64, u64)> {
    let l = out
        .lines()
        .find_map(|l| l.strip_prefix("registered payload buffers: "))?;
    let num = |after: &str| -> Option<u64> {
        let rest = &l[l.find(after)? + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((
        num("")?,
        num("fixed-buffer sends: ")?,
        num("registration failures: ")?,
    ))
}

/// Payload bytes of the Data-In PDUs at or above the default threshold (10 KiB) that
/// `read_and_check` makes with 256 KiB PDUs: 64 KiB, 4 x 256 KiB (plus a 512-byte PDU, below),
/// 4 x 256 KiB, 32 x 256 KiB.
const LARGE_PAYLOAD_BYTES: u64 = 65536 + 2 * (4 * 262144) + 8 * 1048576;

#[test]
fn reads_are_exact_through_both_engines_with_and_without_digests() {
    for engine in ["uring", "msg"] {
        let args = forced(engine);
        let t = target(&TgtdOpts {
            cores: Some("0"),
            args: &args,
            env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
            ..TgtdOpts::default()
        });
        let mut conns = Vec::new();
        for dd in [false, true] {
            let mut c = Conn::login(t.port, &format!("iqn.2026-11.test:zc-{engine}-{dd}"), dd);
            read_and_check(&mut c);
            conns.push(c); // kept open: the stat rows are of live connections
        }
        let (rows, out) = zc_rows(&t);
        assert_eq!(rows.len(), 2, "{engine}: a row per connection:\n{out}");
        for r in &rows {
            assert_eq!(r.mode, "zc", "{engine}: forced zero-copy stays on:\n{out}");
            assert!(
                r.n["zc_sends"] > 0 && r.n["zc_bytes"] > 0,
                "{engine}:\n{out}"
            );
            // Loopback copies, and the kernel says so in the notifications.
            assert!(r.n["copied"] > 0, "{engine}: copied notifications:\n{out}");
            assert_eq!(r.n["enobufs"] + r.n["unsupp"], 0, "{engine}:\n{out}");
        }
    }
}

#[test]
fn payload_only_sends_payloads_zero_copy_and_headers_by_copy_exactly() {
    // (engine, extra options, fixed-buffer sends expected)
    let cases: [(&str, &[&str], bool); 3] = [
        ("uring", &[], true),
        ("uring", &["--zerocopy-fixed-buffers", "0"], false),
        ("msg", &[], false),
    ];
    for (engine, extra, fixed) in cases {
        let mut args = vec!["--zerocopy-engine", engine, "--zerocopy-payload-only", "1"];
        args.extend_from_slice(extra);
        let t = target(&TgtdOpts {
            cores: Some("0"),
            args: &args,
            env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
            ..TgtdOpts::default()
        });
        let what = format!("{engine} {extra:?}");
        let mut conns = Vec::new();
        for dd in [false, true] {
            let mut c = Conn::login(t.port, &format!("iqn.2026-11.test:po-{engine}-{dd}"), dd);
            read_and_check(&mut c);
            conns.push(c);
        }
        let (rows, out) = zc_rows(&t);
        assert_eq!(rows.len(), 2, "{what}: a row per connection:\n{out}");
        for r in &rows {
            assert_eq!(r.mode, "zc", "{what}:\n{out}");
            // Exactly the large payloads went zero-copy: no header, digest or small payload.
            assert_eq!(r.n["zc_bytes"], LARGE_PAYLOAD_BYTES, "{what}:\n{out}");
            // One zero-copy send per large payload (41 PDUs), more if some were short.
            assert!(r.n["zc_sends"] >= 41, "{what}:\n{out}");
            // Headers, digests, the small payloads (4 KiB x2, 512 B, sense) and login went by
            // copy: a few KiB beyond the small payloads, never a large one.
            let copy = r.n["copy_bytes"];
            assert!(
                copy > 8192 + 512 && copy < 65536,
                "{what}: copy_bytes {copy}:\n{out}"
            );
            assert_eq!(
                r.n["enobufs"] + r.n["enomem"] + r.n["unsupp"],
                0,
                "{what}:\n{out}"
            );
        }
        let (registered, sends, failures) =
            fixed_line(&out).unwrap_or_else(|| panic!("{what}: registered line:\n{out}"));
        assert_eq!(failures, 0, "{what}:\n{out}");
        if fixed {
            assert!(
                registered > 0 && sends >= 82,
                "{what}: fixed buffers used:\n{out}"
            );
        } else {
            assert_eq!((registered, sends), (0, 0), "{what}:\n{out}");
        }
    }
}

#[test]
fn auto_mode_steps_aside_when_the_kernel_copies() {
    for (engine, payload_only) in [("uring", "0"), ("msg", "0"), ("uring", "1")] {
        let args = [
            "--zerocopy-engine",
            engine,
            "--zerocopy-payload-only",
            payload_only,
        ];
        let engine = format!("{engine} payload-only {payload_only}");
        let t = target(&TgtdOpts {
            cores: Some("0"),
            args: &args,
            stderr_to_file: true,
            ..TgtdOpts::default()
        });
        let mut c = Conn::login(t.port, "iqn.2026-11.test:auto", false);
        let peer = c.s.local_addr().unwrap().to_string();
        read_and_check(&mut c);
        let (rows, out) = zc_rows(&t);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0].mode, "copy:copied", "{engine}:\n{out}");
        // Auto mode probes with one send; its notification said copied.
        assert_eq!(rows[0].n["zc_sends"], 1, "{engine}: only the probe:\n{out}");
        assert_eq!(rows[0].n["copied"], 1, "{out}");
        assert!(rows[0].n["large"] > 1, "{out}");
        let log = t.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("SO_EE_CODE_ZEROCOPY_COPIED detected"))
            .collect();
        assert_eq!(lines.len(), 1, "{engine}: logged once:\n{log}");
        assert!(
            lines[0].contains(&peer),
            "the line names the peer {peer}: {}",
            lines[0]
        );
    }
}

#[test]
fn tcp_zerocopy_0_sends_nothing_zero_copy() {
    let t = target(&TgtdOpts {
        cores: Some("0"),
        args: &["--tcp_zerocopy", "0"],
        env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
        ..TgtdOpts::default()
    });
    let idle = t.tgtadm_ok(&["--lld", "iscsi", "--op", "stat", "--mode", "sys"]);
    assert!(
        !idle.contains("Zero-copy"),
        "idle output stays tgt's:\n{idle}"
    );
    let mut c = Conn::login(t.port, "iqn.2026-11.test:off", false);
    read_and_check(&mut c);
    let (rows, out) = zc_rows(&t);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0].mode, "copy:off");
    assert!(rows[0].n["large"] > 0, "{out}");
    for k in [
        "zc_sends", "zc_bytes", "notifs", "copied", "pending", "held",
    ] {
        assert_eq!(rows[0].n[k], 0, "{k}:\n{out}");
    }
}

#[test]
fn a_connection_killed_with_notifications_pending_leaks_no_buffer() {
    for (engine, payload_only) in [("uring", "0"), ("msg", "0"), ("uring", "1"), ("msg", "1")] {
        let args = [
            "--zerocopy-engine",
            engine,
            "--zerocopy-payload-only",
            payload_only,
        ];
        let engine = format!("{engine} payload-only {payload_only}");
        let t = target(&TgtdOpts {
            cores: Some("0"),
            args: &args,
            env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
            ..TgtdOpts::default()
        });
        // A complete read first, on a connection that stays: the pool's idle value with
        // one quiet session.
        let mut a = Conn::login(t.port, "iqn.2026-11.test:steady", false);
        read_and_check(&mut a);
        // Idle means its last notification arrived too (nothing pending or held): on a
        // loaded machine it may come after the reply was read.
        let deadline = Instant::now() + Duration::from_secs(20);
        let idle = loop {
            let (rows, out) = zc_rows(&t);
            if rows.len() == 1 && rows[0].n["pending"] == 0 && rows[0].n["held"] == 0 {
                break pool_out(&out).unwrap_or_else(|| panic!("pool line:\n{out}"));
            }
            assert!(Instant::now() < deadline, "{engine}: never idle:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        };

        // A connection with a tiny receive buffer asks for 16 MiB and reads none of it: the
        // target's zero-copy sends stall in its socket, notifications pending.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 << 10).unwrap();
        sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], t.port)).into())
            .unwrap();
        let mut b = Conn::login_on(sock.into(), "iqn.2026-11.test:killed", false);
        b.read(0, 8); // past the unit attention
        for i in 0..16 {
            b.send_read(i * 2048, 2048);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let pending = loop {
            let (rows, out) = zc_rows(&t);
            let p = rows.iter().map(|r| r.n["pending"]).max().unwrap_or(0);
            if p > 0 {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "{engine}: no send pending:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(pending > 0);
        // Kill it: RST (linger 0), as a crashed initiator host's kernel would.
        let s2 = socket2::Socket::from(b.s);
        s2.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s2);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (rows, out) = zc_rows(&t);
            let draining = out.contains("connections draining notifications: 0");
            if rows.len() == 1 && pool_out(&out) == Some(idle) && draining {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{engine}: pool never back to {idle} buffers:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The steady connection still reads correctly.
        read_and_check(&mut a);
    }
}

/// A network namespace this test created; deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ok = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", name]) {
            return None;
        }
        let ns = Netns(name.to_string());
        assert!(ok(&[
            "netns", "exec", name, "ip", "link", "set", "lo", "up"
        ]));
        Some(ns)
    }

    fn sysctl(&self, key: &str, value: Option<&str>) -> String {
        let mut args = vec!["netns", "exec", &self.0, "sysctl", "-n"];
        let kv;
        if let Some(v) = value {
            args.pop();
            args.push("-w");
            kv = format!("{key}={v}");
            args.push(&kv);
        } else {
            args.push(key);
        }
        let o = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "sysctl {args:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Runs `f` on a thread inside the namespace (setns affects only that thread).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace file we opened; it changes only this thread.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn host_optmem() -> String {
    std::fs::read_to_string("/proc/sys/net/core/optmem_max")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn enobufs_from_the_kernel_falls_back_once_per_connection_and_reads_stay_exact() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (ip netns)");
    let name = format!("zc-enobufs-{}", std::process::id());
    let ns = Netns::create(&name).expect("ip netns add");
    let host_before = host_optmem();
    ns.sysctl("net.core.optmem_max", Some("0"));
    // The namespace must have its own value: if the host's moved, put it back and stop.
    if host_optmem() != host_before {
        std::fs::write("/proc/sys/net/core/optmem_max", &host_before).unwrap();
        panic!("net.core.optmem_max is not per namespace on this kernel");
    }
    assert_eq!(ns.sysctl("net.core.optmem_max", None), "0");
    let args = ["--zerocopy-engine", "msg"];
    let t = target(&TgtdOpts {
        cores: Some("0"),
        args: &args,
        netns: Some(&name),
        env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
        stderr_to_file: true,
        ..TgtdOpts::default()
    });
    let port = t.port;
    let conns: Vec<(String, Conn)> = ns.run(move || {
        (0..2)
            .map(|i| {
                let mut c = Conn::login(port, &format!("iqn.2026-11.test:enobufs{i}"), i == 1);
                let peer = c.s.local_addr().unwrap().to_string();
                read_and_check(&mut c);
                read_and_check(&mut c);
                (peer, c) // kept open: the stat rows are of live connections
            })
            .collect()
    });
    let peers: Vec<&String> = conns.iter().map(|(p, _)| p).collect();
    let (rows, out) = zc_rows(&t);
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        assert_eq!(r.mode, "copy:enobufs", "{out}");
        assert_eq!(r.n["enobufs"], 1, "one refusal, then copy mode:\n{out}");
        assert_eq!(
            r.n["zc_sends"], 0,
            "the refused send is not counted:\n{out}"
        );
        assert!(r.n["copy_bytes"] >= 2 * (8 << 20), "{out}");
    }
    let log = t.log();
    for p in peers {
        let n = log
            .lines()
            .filter(|l| l.contains("got ENOBUFS, turn off zerocopy") && l.contains(p.as_str()))
            .count();
        assert_eq!(n, 1, "one line for peer {p}:\n{log}");
    }
    drop(conns);
    drop(t);
    assert_eq!(host_optmem(), host_before, "the host's value is untouched");
}

#[test]
fn enomem_from_the_locked_memory_limit_falls_back_once_per_connection() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (to start tgtd as another user)"
    );
    // As nobody, without CAP_IPC_LOCK, io_uring charges SEND_ZC's pinned pages and
    // registered buffers to the user's RLIMIT_MEMLOCK (and its rings, about 800 KiB here, at
    // start): tgtd starts under 1 MiB, which holds the rings, and once it is up the limit is
    // lowered to 0, so every later pin is refused whatever the rings took. (Left at 1 MiB,
    // whether a 256 KiB payload still fitted beside the rings depended on how far the last
    // send's notification had got: payload-only mode, one payload per send, sometimes never
    // hit the limit.) In payload-only mode the first large payload's buffer is registered
    // first: refused (counted once for the shard, which registers no more), then its
    // unregistered send is refused too.
    for (payload_only, memlock) in [("0", 1u64 << 20), ("1", 1 << 20)] {
        let args = ["--zerocopy-payload-only", payload_only];
        let t = target(&TgtdOpts {
            cores: Some("0"),
            args: &args,
            run_as: Some(65534),
            memlock: Some(memlock),
            stderr_to_file: true,
            env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
            ..TgtdOpts::default()
        });
        common::set_memlock_as(65534, t.pid(), 0);
        let mut conns = Vec::new();
        for i in 0..2 {
            let mut c = Conn::login(t.port, &format!("iqn.2026-11.test:enomem{i}"), i == 1);
            read_and_check(&mut c);
            let peer = c.s.local_addr().unwrap().to_string();
            conns.push((peer, c));
        }
        let (rows, out) = zc_rows(&t);
        assert_eq!(rows.len(), 2, "payload-only {payload_only}:\n{out}");
        for r in &rows {
            assert_eq!(r.mode, "copy:enomem", "payload-only {payload_only}:\n{out}");
            assert_eq!(r.n["enomem"], 1, "one refusal, then copy mode:\n{out}");
        }
        let log = t.log();
        for (p, _) in &conns {
            let n = log
                .lines()
                .filter(|l| l.contains("got ENOMEM (locked memory, ulimit -l), turn off zerocopy"))
                .filter(|l| l.contains(p.as_str()))
                .count();
            assert_eq!(n, 1, "one line for peer {p}:\n{log}");
        }
        let (registered, sends, failures) =
            fixed_line(&out).unwrap_or_else(|| panic!("registered line:\n{out}"));
        let refusals = log
            .lines()
            .filter(|l| l.contains("registering payload buffers failed: ENOMEM"))
            .count();
        if payload_only == "1" {
            assert_eq!(
                (registered, sends),
                (0, 0),
                "nothing could be registered:\n{out}"
            );
            assert_eq!(
                failures, 1,
                "the refused registration is counted once for the shard:\n{out}"
            );
            assert_eq!(refusals, 1, "logged once per shard:\n{log}");
        } else {
            assert_eq!(
                (registered, sends, failures),
                (0, 0, 0),
                "batch mode registers nothing"
            );
            assert_eq!(refusals, 0, "{log}");
        }
    }
}

#[test]
fn payloads_below_the_threshold_are_copied() {
    let args = ["--zerocopy-threshold", "65536"];
    let t = target(&TgtdOpts {
        cores: Some("0"),
        args: &args,
        env: &[("CURVE_TGT_ZEROCOPY_FORCE", "1")],
        ..TgtdOpts::default()
    });
    let mut c = Conn::login(t.port, "iqn.2026-11.test:threshold", false);
    // 32 KiB reads: one 32 KiB Data-In PDU each, below 64 KiB: copied, and the connection
    // stays out of the table (idle output stays tgt's).
    for lba in [0u32, 64, 128] {
        let d = c.read(lba, 64);
        assert!(d
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(u64::from(lba) * 512 + i as u64)));
    }
    let (rows, out) = zc_rows(&t);
    assert!(rows.is_empty(), "{out}");
    assert!(!out.contains("Zero-copy"), "{out}");
    // 256 KiB PDUs pass it.
    c.read(0, 2048);
    let (rows, out) = zc_rows(&t);
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].n["zc_sends"] > 0 && rows[0].n["large"] > 0, "{out}");
}
