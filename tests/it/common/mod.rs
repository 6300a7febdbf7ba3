//! Shared harness for integration tests: a private `tgtd` (its own management socket in a
//! temporary directory, its own control port and a loopback portal on a free port), driven
//! with our `tgtadm`, and stopped by PID when the test ends.
#![allow(dead_code)]

pub mod client;
pub mod curve;
pub mod curve_fixture;
pub mod fio;
pub mod initiator;
pub mod procfs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running tgtd for one test.
pub struct Tgtd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ctl: u16,
    /// tgtd runs as this uid/gid, and tgtadm with it (tgtd answers only its own uid).
    run_as: Option<u32>,
}

/// How to start a tgtd beyond the defaults.
#[derive(Default)]
pub struct TgtdOpts<'a> {
    pub cores: Option<&'a str>,
    pub env: &'a [(&'a str, &'a str)],
    /// Extra command-line arguments.
    pub args: &'a [&'a str],
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<&'a str>,
    /// Write stderr (the log) to `tgtd.log` in the test directory instead of inheriting it.
    pub stderr_to_file: bool,
    /// Run tgtd (and this harness's tgtadm) as this uid and gid, without capabilities
    /// (`setpriv`); the test directory is made world-writable for its socket.
    pub run_as: Option<u32>,
    /// `RLIMIT_MEMLOCK` for tgtd, in bytes (`prlimit --memlock`).
    pub memlock: Option<u64>,
}

/// `setpriv` arguments that drop to `id` (uid and gid) with no capabilities.
fn setpriv(id: u32) -> Vec<String> {
    let id = id.to_string();
    [
        "setpriv",
        "--reuid",
        &id,
        "--regid",
        &id,
        "--clear-groups",
        "--inh-caps=-all",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Sets the running process `pid`'s `RLIMIT_MEMLOCK` (soft and hard) to `bytes`, as user
/// `id`, the user it runs as: lowering another user's limit takes CAP_SYS_RESOURCE, which
/// root lacks on some machines (this project's VM), while a process may always lower the
/// limits of one with its own credentials.
pub fn set_memlock_as(id: u32, pid: u32, bytes: u64) {
    let argv = setpriv(id);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args([
            "prlimit",
            "--pid",
            &pid.to_string(),
            &format!("--memlock={bytes}:{bytes}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prlimit --pid {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts a tool the test needs is installed (scripts/test.sh installs them).
pub fn require_tool(name: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{name} is not installed: run scripts/install-deps.sh (or scripts/test.sh)"
    );
}

impl Tgtd {
    /// Starts tgtd on one shard pinned to the first allowed CPU... or on `cores` when given.
    pub fn start_with(cores: Option<&str>) -> Tgtd {
        Tgtd::start_env(cores, &[])
    }

    /// As `start_with`, with these environment variables set for tgtd.
    pub fn start_env(cores: Option<&str>, env: &[(&str, &str)]) -> Tgtd {
        Tgtd::start_opts(&TgtdOpts {
            cores,
            env,
            ..TgtdOpts::default()
        })
    }

    /// Starts tgtd with one shard, its log (stderr) going to [`Tgtd::log`]'s file.
    pub fn start_logged() -> Tgtd {
        Tgtd::start_opts(&TgtdOpts {
            cores: Some("0"),
            stderr_to_file: true,
            ..TgtdOpts::default()
        })
    }

    /// What tgtd has logged so far (only for [`Tgtd::start_logged`], or
    /// `TgtdOpts::stderr_to_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tgtd.log")).unwrap_or_default()
    }

    /// Polls (bounded) until tgtd's log has a line containing every one of `parts`; returns
    /// that line.
    pub fn wait_log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .log()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}; the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// As `start_env`, with these extra tgtd arguments.
    pub fn start_full(cores: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Tgtd {
        Tgtd::start_opts(&TgtdOpts {
            cores,
            env,
            args,
            ..TgtdOpts::default()
        })
    }

    /// Starts tgtd as `o` says (extra arguments, a network namespace, a user and a
    /// locked-memory limit, stderr to [`Tgtd::log`]'s file).
    pub fn start_opts(o: &TgtdOpts) -> Tgtd {
        let (cores, env) = (o.cores, o.env);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let ctl = 20000 + (std::process::id() % 10000) as u16 + (port % 7);
        // Wrappers, outermost first: netns, memlock limit, user; then tgtd.
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = o.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(m) = o.memlock {
            argv.extend(["prlimit".to_string(), format!("--memlock={m}:{m}")]);
        }
        if let Some(id) = o.run_as {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            argv.extend(setpriv(id));
        }
        argv.push(env!("CARGO_BIN_EXE_tgtd").to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.arg("-f")
            .arg("-C")
            .arg(ctl.to_string())
            .arg("--iscsi")
            .arg(format!("portal=127.0.0.1:{port}"));
        if let Some(c) = cores {
            cmd.arg("--cores").arg(c);
        }
        cmd.args(o.args);
        cmd.envs(env.iter().copied());
        let stderr = if o.stderr_to_file {
            Stdio::from(std::fs::File::create(dir.path().join("tgtd.log")).unwrap())
        } else {
            Stdio::inherit()
        };
        let child = cmd
            .env("TGT_IPC_SOCKET", dir.path().join("socket"))
            // The shard checks its loop invariants every turn (release test runs too).
            .env("CURVE_TGT_CHECK_INVARIANTS", "1")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tgtd");
        let t = Tgtd {
            child,
            dir,
            port,
            ctl,
            run_as: o.run_as,
        };
        // Wait (bounded) until the management socket answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = t.tgtadm(&["--op", "show", "--mode", "sys"]);
            if o.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tgtd did not come up: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// The tgtd process id (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts tgtd with one shard.
    pub fn start() -> Tgtd {
        Tgtd::start_with(Some("0"))
    }

    /// Runs our tgtadm against this tgtd.
    pub fn tgtadm(&self, args: &[&str]) -> Output {
        let mut argv = self.run_as.map(setpriv).unwrap_or_default();
        argv.push(env!("CARGO_BIN_EXE_tgtadm").to_string());
        Command::new(&argv[0])
            .args(&argv[1..])
            .arg("-C")
            .arg(self.ctl.to_string())
            .args(args)
            .env("TGT_IPC_SOCKET", self.dir.path().join("socket"))
            .output()
            .expect("run tgtadm")
    }

    /// Runs tgtadm and asserts success; returns stdout.
    pub fn tgtadm_ok(&self, args: &[&str]) -> String {
        let o = self.tgtadm(args);
        assert!(
            o.status.success(),
            "tgtadm {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Creates target `tid` named `iqn` open to everyone.
    pub fn add_target(&self, tid: u32, iqn: &str) {
        let t = tid.to_string();
        self.tgtadm_ok(&[
            "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", &t, "-T", iqn,
        ]);
        self.tgtadm_ok(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", &t, "-I", "ALL",
        ]);
    }

    /// Adds a LUN backed by `path` with `bstype` (rdwr, null…).
    pub fn add_lun(&self, tid: u32, lun: u32, bstype: &str, path: &Path) {
        self.tgtadm_ok(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid.to_string(),
            "--lun",
            &lun.to_string(),
            "-E",
            bstype,
            "-b",
            path.to_str().unwrap(),
        ]);
    }

    /// The iscsi:// URL of a LUN.
    pub fn url(&self, iqn: &str, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{}/{}", self.port, iqn, lun)
    }

    /// A sparse file of `size` bytes in this test's directory.
    pub fn sparse_file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM as tgt does; the test owns this PID, so end it with SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
