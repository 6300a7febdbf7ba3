//! The operator's log: one line per event (portals, logins, logouts, reinstatement, tgtadm
//! changes and refusals with their reasons), peer text escaped, refusals rate-limited per
//! peer, and a daemonised tgtd's lines in syslog.

use crate::common::initiator::{login, login_status, read_pdu, send_leading_login};
use crate::common::{free_port, Tgtd};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2026-11.io.curve-tgt:logging";

fn connect(t: &Tgtd) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// An immediate Logout Request closing the session (RFC 7143 §11.14).
fn logout_pdu(cmd_sn: u32, exp_stat_sn: u32) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x46;
    h[1] = 0x80;
    h[16..20].copy_from_slice(&0x1234u32.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h[28..32].copy_from_slice(&exp_stat_sn.to_be_bytes());
    h
}

#[test]
fn admin_changes_and_refusals_are_logged_with_their_reasons() {
    let t = Tgtd::start_logged();
    t.wait_log_line(&["portal", &format!("127.0.0.1:{}", t.port), "up"]);
    t.add_target(1, IQN);
    t.wait_log_line(&["tgtadm --op new --mode target tid=1", IQN, "done"]);
    t.wait_log_line(&[
        "tgtadm --op bind --mode target tid=1",
        "initiator-address=ALL",
        "done",
    ]);

    // A LU on a missing file: tgtadm only says "invalid request"; the log says why.
    let missing = t.dir.path().join("missing.img");
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
        "-b",
        missing.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let why = t.wait_log_line(&["logical unit 1 of tid 1 not created", "missing.img"]);
    assert!(why.contains("No such file or directory"), "{why}");
    t.wait_log_line(&[
        "tgtadm --op new --mode logicalunit tid=1 lun=1",
        "refused: invalid request",
    ]);
    // An LU update with a bad parameter: the reason, then the request.
    let lu = t.sparse_file("lu.img", 1 << 20);
    t.add_lun(1, 2, "rdwr", &lu);
    let o = t.tgtadm(&[
        "--lld",
        "iscsi",
        "--op",
        "update",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "2",
        "--params",
        "no_such_param=1",
    ]);
    assert!(!o.status.success());
    t.wait_log_line(&["logical unit update refused", "no_such_param"]);

    // Accounts: the change is logged, the password is not.
    t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "new",
        "--mode",
        "account",
        "--user",
        "alice",
        "--password",
        "Secret-Pass-42",
    ]);
    t.wait_log_line(&[
        "tgtadm --op new --mode account",
        "alice",
        "password=***",
        "done",
    ]);
    // A refusal of a request for something that does not exist.
    let o = t.tgtadm(&[
        "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "9",
    ]);
    assert!(!o.status.success());
    t.wait_log_line(&[
        "tgtadm --op delete --mode target tid=9",
        "refused: can't find the target",
    ]);

    // Portal added and removed at run time.
    let extra = free_port();
    let p = format!("portal=127.0.0.1:{extra}");
    t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "new", "--mode", "portal", "--param", &p,
    ]);
    t.wait_log_line(&[&format!("portal 127.0.0.1:{extra} up")]);
    t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "delete", "--mode", "portal", "--param", &p,
    ]);
    t.wait_log_line(&[&format!("portal 127.0.0.1:{extra} down")]);

    // Debugging lines (here: show requests) only once debug is switched on, at run time as
    // tgt's `--name debug --value on`.
    t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    t.tgtadm_ok(&[
        "--op", "update", "--mode", "sys", "--name", "debug", "--value", "on",
    ]);
    t.wait_log_line(&["tgtadm --op update --mode system", "debug=on", "done"]);
    assert!(
        !t.log().contains("tgtadm --op show --mode target"),
        "no debugging lines before debug is on"
    );
    t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    t.wait_log_line(&["DEBUG", "tgtadm --op show --mode target: done"]);

    let log = t.log();
    assert!(!log.contains("Secret-Pass-42"), "{log}");
    // Written to a file, not a terminal: no colour codes.
    assert!(!log.contains('\x1b'), "{log}");
}

#[test]
fn login_reinstatement_and_logout_are_logged_with_initiator_address_and_target() {
    let t = Tgtd::start_logged();
    t.add_target(1, IQN);
    let lu = t.sparse_file("lu.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &lu);
    let initiator = "iqn.2026-11.test:logging-initiator";

    let mut first = connect(&t);
    login(&mut first, IQN, initiator);
    let line = t.wait_log_line(&[
        "login: initiator",
        initiator,
        "from 127.0.0.1:",
        IQN,
        "(tid 1",
    ]);
    assert!(!line.contains("discovery"), "{line}");

    // Same initiator port again (the scripted initiator's ISID is fixed): reinstatement.
    let mut second = connect(&t);
    let (stat_sn, exp_cmd_sn, _) = login(&mut second, IQN, initiator);
    t.wait_log_line(&["session reinstatement: initiator", initiator, "on tid 1"]);

    second
        .write_all(&logout_pdu(exp_cmd_sn, stat_sn + 1))
        .unwrap();
    let (h, _) = read_pdu(&mut second).expect("logout response");
    assert_eq!(h[0] & 0x3f, 0x26, "logout response");
    t.wait_log_line(&["logout: initiator", initiator, "CloseSession"]);
    t.wait_log_line(&[
        "session closed: initiator",
        initiator,
        "from 127.0.0.1:",
        "tid 1",
    ]);
    drop(first);
}

#[test]
fn hostile_names_are_escaped_and_refusals_rate_limited_per_peer() {
    let t = Tgtd::start_logged();
    t.add_target(1, IQN);

    // A successful login whose InitiatorName carries a forged line and terminal escapes.
    let hostile = "iqn.2026-11.evil:x\nFAKE-LOG-LINE: admin logged in\x1b[2J\x1b[31m";
    let mut s = connect(&t);
    login(&mut s, IQN, hostile);
    let line = t.wait_log_line(&["login: initiator", "FAKE-LOG-LINE"]);
    assert!(
        line.contains(r#""iqn.2026-11.evil:x\nFAKE-LOG-LINE: admin logged in\u{1b}[2J\u{1b}[31m""#),
        "{line}"
    );
    drop(s);

    // Refused logins with a hostile TargetName: the first few are logged, escaped ...
    let started = Instant::now();
    let flood = 200;
    for _ in 0..flood {
        let mut s = connect(&t);
        send_leading_login(
            &mut s,
            "iqn.x\nFAKE-LOG-LINE: refused\x1b[0m",
            "iqn.2026-11.test:flood",
        );
        let (h, _) = read_pdu(&mut s).expect("login response");
        assert_eq!(login_status(&h).0, 2, "initiator error");
    }
    let flood_time = started.elapsed();
    let log = t.log();
    assert!(
        log.contains(r#"iqn.x\nFAKE-LOG-LINE: refused\u{1b}[0m"#),
        "{log}"
    );
    // ... at most 5 a window (5 s) ...
    let windows = flood_time.as_secs() / 5 + 2;
    let refused = |log: &str| log.lines().filter(|l| l.contains("login refused")).count();
    let n = refused(&log);
    assert!(
        n >= 1 && n as u64 <= 5 * windows,
        "{n} refusal lines for {flood} refusals in {flood_time:?}:\n{log}"
    );
    // ... and the rest are counted once their window ends (the flood stopped: the count
    // still comes, from the logger's own timer).
    let suppressed = |log: &str| -> usize {
        log.lines()
            .filter_map(|l| {
                l.split_once("127.0.0.1: ")?
                    .1
                    .strip_suffix(" more lines from this peer suppressed in 5s")
            })
            .map(|v| v.parse::<usize>().expect("a count"))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while suppressed(&t.log()) + refused(&t.log()) < flood {
        assert!(
            Instant::now() < deadline,
            "suppressed lines never counted:\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = t.log();
    assert_eq!(suppressed(&log) + refused(&log), flood, "{log}");

    // Whatever a peer sent, no line of the log starts with its text, and no escape byte or
    // control character reached the file.
    let log = t.log();
    assert!(
        log.lines().all(|l| !l.starts_with("FAKE-LOG-LINE")),
        "{log}"
    );
    assert!(log.chars().all(|c| c == '\n' || !c.is_control()), "{log}");
}

/// Ends a daemonised tgtd: `sys delete`, then SIGKILL by the PID it wrote, if still there.
struct Daemon {
    ctl: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn tgtadm(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tgtadm"))
            .arg("-C")
            .arg(self.ctl.to_string())
            .args(args)
            .env("TGT_IPC_SOCKET", self.dir.path().join("socket"))
            .output()
            .unwrap()
    }
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("tgtd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.tgtadm(&["--op", "delete", "--mode", "system"]);
        if let Some(pid) = self.pid() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                // SAFETY: kill(2) on the PID of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn a_daemonised_tgtd_logs_to_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log");
    let syslog = UnixDatagram::bind(&sock).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let ctl = 20000 + (port % 10000); // tgtadm takes -C up to 32767
    let status = Command::new(env!("CARGO_BIN_EXE_tgtd"))
        .args(["-C", &ctl.to_string(), "-p"])
        .arg(dir.path().join("tgtd.pid"))
        .args([
            "--cores",
            "0",
            "--iscsi",
            &format!("portal=127.0.0.1:{port}"),
        ])
        .env("TGT_IPC_SOCKET", dir.path().join("socket"))
        .env("TGT_SYSLOG_SOCKET", &sock)
        .env_remove("RUST_LOG")
        .status()
        .unwrap();
    assert!(status.success(), "tgtd did not daemonise: {status}");
    let d = Daemon { ctl, dir };

    let mut lines = Vec::<String>::new();
    let mut receive_until = |want: &[&str]| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 8192];
        loop {
            if let Some(l) = lines.iter().find(|l| want.iter().all(|w| l.contains(w))) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no syslog line with {want:?}: {lines:#?}"
            );
            if let Ok(n) = syslog.recv(&mut buf) {
                lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    let up = receive_until(&[&format!("portal 127.0.0.1:{port} up")]);
    // Facility daemon (3), severity info (6); glibc's format: "<30>Mmm dd hh:mm:ss tgtd[PID]: ".
    assert!(up.starts_with("<30>"), "{up}");
    let pid = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = d.pid() {
                break p;
            }
            assert!(Instant::now() < deadline, "no pid file");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(up.contains(&format!(" tgtd[{pid}]: portal")), "{up}");
    receive_until(&["tgtd ready"]);

    let o = d.tgtadm(&[
        "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    receive_until(&["tgtadm --op new --mode target tid=1", IQN, "done"]);
    let o = d.tgtadm(&[
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
        "-b",
        "/nonexistent/vol.img",
    ]);
    assert!(!o.status.success());
    let why = receive_until(&["not created", "/nonexistent/vol.img"]);
    assert!(why.starts_with("<28>"), "a warning: {why}");
    assert!(why.contains("No such file or directory"), "{why}");
}
