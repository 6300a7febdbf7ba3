//! Shared by the `admin_*` tests: a private tgtd that is either Debian's (`/usr/sbin/tgtd`)
//! or ours, either tgtadm run against it, and a tiny scripted initiator that holds a session
//! open (libiscsi's tools log out as soon as they finish).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEBIAN_TGTD: &str = "/usr/sbin/tgtd";
pub const DEBIAN_TGTADM: &str = "/usr/sbin/tgtadm";
pub const DEBIAN_TGT_ADMIN: &str = "/usr/sbin/tgt-admin";

/// Whose program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Debian,
    Ours,
}

impl Impl {
    pub fn tgtd(self) -> &'static str {
        match self {
            Impl::Debian => DEBIAN_TGTD,
            Impl::Ours => env!("CARGO_BIN_EXE_tgtd"),
        }
    }
    pub fn tgtadm(self) -> &'static str {
        match self {
            Impl::Debian => DEBIAN_TGTADM,
            Impl::Ours => env!("CARGO_BIN_EXE_tgtadm"),
        }
    }
}

/// Fails the test with a clear message when a program the test needs is missing.
pub fn require(path: &str, package: &str) {
    let found = if path.contains('/') {
        Path::new(path).exists()
    } else {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {path}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        found,
        "{path} is not installed: this test needs Debian's `{package}` package \
         (apt-get install {package}; CI installs it)"
    );
}

pub fn require_debian_tgt() {
    require(DEBIAN_TGTD, "tgt");
    require(DEBIAN_TGTADM, "tgt");
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one tgtadm run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub rc: i32,
    pub out: String,
    pub err: String,
}

/// A private tgtd: its own socket directory, control port and loopback portal.
pub struct Daemon {
    pub kind: Impl,
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ctl: u16,
}

impl Daemon {
    pub fn start(kind: Impl) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Control ports only name the socket file, which lives in this test's own directory.
        let ctl = 1 + (port % 30000);
        let mut cmd = Command::new(kind.tgtd());
        cmd.arg("-f")
            .arg("-C")
            .arg(ctl.to_string())
            .arg("--iscsi")
            .arg(format!("portal=127.0.0.1:{port}"));
        if kind == Impl::Ours {
            cmd.arg("--cores").arg("0");
        }
        let log = std::fs::File::create(dir.path().join("tgtd.log")).unwrap();
        let child = cmd
            .env("TGT_IPC_SOCKET", dir.path().join("socket"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", kind.tgtd()));
        let d = Daemon {
            kind,
            child,
            dir,
            port,
            ctl,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if d.tgtadm(kind, &["--op", "show", "--mode", "sys"]).rc == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not come up: {}",
                kind.tgtd(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tgtd.log")).unwrap_or_default()
    }

    pub fn socket_base(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// Runs `who`'s tgtadm (argv[0] "tgtadm", so getopt messages read the same) against
    /// this daemon.
    pub fn tgtadm(&self, who: Impl, args: &[&str]) -> Outcome {
        let o = Command::new(who.tgtadm())
            .arg0("tgtadm")
            .arg("-C")
            .arg(self.ctl.to_string())
            .args(args)
            .env("TGT_IPC_SOCKET", self.socket_base())
            .stdin(Stdio::null())
            .output()
            .expect("run tgtadm");
        Outcome {
            rc: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn tgtadm_ok(&self, who: Impl, args: &[&str]) -> String {
        let o = self.tgtadm(who, args);
        assert!(o.rc == 0, "tgtadm {args:?} failed: {}", o.err);
        o.out
    }

    /// Whether the daemon process has ended (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (bounded) for the daemon to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        // tgt's way out: force-delete every target, then `sys delete`; SIGKILL if still alive
        // (Debian tgtd ignores SIGTERM). Everything here is bounded.
        let show = self.tgtadm(Impl::Debian, &["--op", "show", "--mode", "target"]);
        for line in show.out.lines() {
            if let Some(rest) = line.strip_prefix("Target ") {
                if let Some((tid, _)) = rest.split_once(':') {
                    let _ = self.tgtadm(
                        Impl::Debian,
                        &[
                            "--op", "delete", "--mode", "target", "--force", "--tid", tid,
                        ],
                    );
                }
            }
        }
        let _ = Command::new("timeout")
            .args(["5", DEBIAN_TGTADM, "-C", &self.ctl.to_string()])
            .args(["--op", "delete", "--mode", "system"])
            .env("TGT_IPC_SOCKET", self.socket_base())
            .output();
        if !self.wait_exit(Duration::from_secs(2)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Replaces this run's temporary paths and port numbers with placeholders.
pub fn normalize(s: &str, d: &Daemon) -> String {
    s.replace(&d.dir.path().display().to_string(), "$DIR")
        .replace(&format!(":{}", d.port), ":$PORT")
}

// ---------------------------------------------------------------------------------------
// A scripted initiator: login without CHAP, a few SCSI commands, then it just holds the
// connection open until dropped.

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// One logged-in iSCSI connection.
pub struct Initiator {
    pub s: TcpStream,
    pub tsih: u16,
    /// Every key=value the target sent during login.
    pub login_keys: Vec<String>,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

/// What a SCSI command returned.
#[derive(Debug)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
}

impl ScsiResult {
    /// (sense key, ASC, ASCQ) from fixed or descriptor sense.
    pub fn sense_triple(&self) -> Option<(u8, u8, u8)> {
        let s = &self.sense;
        match s.first()? & 0x7f {
            0x70 | 0x71 if s.len() >= 14 => Some((s[2] & 0xf, s[12], s[13])),
            0x72 | 0x73 if s.len() >= 4 => Some((s[1] & 0xf, s[2], s[3])),
            _ => None,
        }
    }
}

impl Initiator {
    fn read_pdu(&mut self) -> std::io::Result<([u8; 48], Vec<u8>)> {
        let mut h = [0u8; 48];
        self.s.read_exact(&mut h)?;
        let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
        let ahs = usize::from(h[4]) * 4;
        let mut d = vec![0u8; ahs + len.div_ceil(4) * 4];
        self.s.read_exact(&mut d)?;
        Ok((h, d[ahs..ahs + len].to_vec()))
    }

    /// Logs in to `target` as `initiator` (security negotiation skipped: no CHAP). Returns
    /// why it failed otherwise: the login status class/detail, or the transport error.
    pub fn login(port: u16, initiator: &str, target: &str) -> Result<Initiator, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut ini = Initiator {
            s,
            tsih: 0,
            login_keys: Vec::new(),
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 0x100,
        };
        let keys = format!(
            "InitiatorName={initiator}\0SessionType=Normal\0TargetName={target}\0\
             HeaderDigest=None\0DataDigest=None\0MaxRecvDataSegmentLength=262144\0\
             ImmediateData=Yes\0InitialR2T=Yes\0"
        );
        // Keys the target offers on its own (not answers to ours) need an answer: accept them.
        const DECLARED: &[&str] = &["TargetPortalGroupTag", "TargetAlias", "TargetAddress"];
        let offered: Vec<&str> = keys
            .split('\0')
            .filter_map(|k| k.split_once('=').map(|(n, _)| n))
            .collect();
        let mut answer = String::new();
        for round in 0..4u32 {
            let data = if round == 0 {
                keys.as_bytes().to_vec()
            } else {
                std::mem::take(&mut answer).into_bytes()
            };
            let mut h = [0u8; 48];
            h[0] = 0x43;
            h[1] = 0x80 | (1 << 2) | 3;
            h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            h[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 7]);
            h[16..20].copy_from_slice(&round.to_be_bytes());
            h[24..28].copy_from_slice(&1u32.to_be_bytes());
            let mut pdu = h.to_vec();
            pdu.extend_from_slice(&data);
            while pdu.len() % 4 != 0 {
                pdu.push(0);
            }
            ini.s
                .write_all(&pdu)
                .map_err(|e| format!("send login: {e}"))?;
            let (r, data) = ini.read_pdu().map_err(|e| format!("login response: {e}"))?;
            for k in data.split(|&b| b == 0).filter(|k| !k.is_empty()) {
                let k = String::from_utf8_lossy(k).into_owned();
                if let Some((name, _)) = k.split_once('=') {
                    if !offered.contains(&name) && !DECLARED.contains(&name) {
                        answer.push_str(&k);
                        answer.push('\0');
                    }
                }
                ini.login_keys.push(k);
            }
            if r[0] & 0x3f != 0x23 {
                return Err(format!("login response opcode {:#x}", r[0]));
            }
            if r[36] != 0 {
                return Err(format!("login status {:#04x}/{:#04x}", r[36], r[37]));
            }
            if r[1] & 0x80 != 0 && r[1] & 3 == 3 {
                ini.tsih = u16::from_be_bytes([r[14], r[15]]);
                ini.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                ini.cmd_sn = be32(&r, 28);
                return Ok(ini);
            }
        }
        panic!("target never moved to full feature phase");
    }

    /// Sends one SCSI command to `lun` expecting up to `alloc` bytes in, and returns its
    /// outcome (NOP-Ins and unsolicited PDUs are skipped; bounded).
    pub fn scsi(&mut self, lun: u16, cdb: &[u8], alloc: u32) -> ScsiResult {
        self.itt += 1;
        let itt = self.itt;
        let mut h = [0u8; 48];
        h[0] = 0x01;
        h[1] = 0x80 | if alloc > 0 { 0x40 } else { 0 } | 1;
        h[8..10].copy_from_slice(&lun.to_be_bytes());
        h[16..20].copy_from_slice(&itt.to_be_bytes());
        h[20..24].copy_from_slice(&alloc.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        h[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.s.write_all(&h).expect("send SCSI command");
        let mut data = Vec::new();
        for _ in 0..64 {
            let (r, d) = self.read_pdu().expect("SCSI reply");
            match r[0] & 0x3f {
                0x25 if be32(&r, 16) == itt => {
                    data.extend_from_slice(&d);
                    if r[1] & 0x01 != 0 {
                        self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                        return ScsiResult {
                            status: r[3],
                            data,
                            sense: Vec::new(),
                        };
                    }
                }
                0x21 if be32(&r, 16) == itt => {
                    self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                    let sense = if d.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([d[0], d[1]]));
                        d[2..(2 + n).min(d.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return ScsiResult {
                        status: r[3],
                        data,
                        sense,
                    };
                }
                _ => {}
            }
        }
        panic!("no response to SCSI command");
    }

    /// READ CAPACITY(16): (last LBA + 1, block length).
    pub fn read_capacity16(&mut self, lun: u16) -> Result<(u64, u32), ScsiResult> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9e;
        cdb[1] = 0x10;
        cdb[13] = 32;
        let r = self.scsi(lun, &cdb, 32);
        if r.status != 0 {
            return Err(r);
        }
        let d = &r.data;
        let last = u64::from_be_bytes(d[0..8].try_into().unwrap());
        Ok((last + 1, be32(d, 8)))
    }

    /// TEST UNIT READY.
    pub fn test_unit_ready(&mut self, lun: u16) -> ScsiResult {
        self.scsi(lun, &[0u8; 6], 0)
    }

    /// Consumes every pending unit attention (bounded): returns their (key, asc, ascq).
    pub fn drain_unit_attentions(&mut self, lun: u16) -> Vec<(u8, u8, u8)> {
        let mut seen = Vec::new();
        for _ in 0..16 {
            let r = self.test_unit_ready(lun);
            match r.sense_triple() {
                Some(t) if r.status == 2 && t.0 == 6 => seen.push(t),
                _ => break,
            }
        }
        seen
    }

    /// Whether the target has closed this connection (waits up to `limit`).
    pub fn closed_by_target(&mut self, limit: Duration) -> bool {
        self.s.set_read_timeout(Some(limit)).unwrap();
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue, // e.g. an Async Message or NOP-In before the close
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true, // reset
            }
        }
        false
    }
}
