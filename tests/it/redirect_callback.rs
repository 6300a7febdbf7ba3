//! Login redirects chosen by a program (tgtadm `RedirectCallback`), end to end: shell scripts
//! stand in for Curve's balancer and the scripted initiator reads the Login Response. No
//! external iSCSI tool is needed.

use crate::common;
use common::initiator::{login, login_status, read_pdu, send_leading_login, text_value};
use common::Tgtd;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T1: &str = "iqn.2024-05.io.curve:balanced";
const T2: &str = "iqn.2024-05.io.curve:plain";
const INI: &str = "iqn.1994-05.com.example:ini";
/// Only a bound on a broken target, never a synchronisation: every wait below ends on an event.
const BOUND: Duration = Duration::from_secs(30);

/// A tgtd whose callbacks have 20 s to answer instead of tgt's 0.1 s, for tests about what a
/// callback answers: a loaded machine must not turn their redirects into timeouts.
fn patient_tgtd() -> Tgtd {
    Tgtd::start_env(Some("0"), &[("CURVE_TGT_CALLBACK_TIMEOUT_MS", "20000")])
}

/// Writes an executable shell script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn set_callback(t: &Tgtd, tid: u32, prog: &Path) {
    t.tgtadm_ok(&[
        "--lld",
        "iscsi",
        "--op",
        "update",
        "--mode",
        "target",
        "--tid",
        &tid.to_string(),
        "--name",
        "RedirectCallback",
        "--value",
        prog.to_str().unwrap(),
    ]);
}

fn connect(t: &Tgtd) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s
}

/// The first Login Response to a normal session's login on `target`: status and text.
fn first_login(t: &Tgtd, target: &str) -> ((u8, u8), Vec<u8>) {
    let mut s = connect(t);
    send_leading_login(&mut s, target, INI);
    let (h, data) = read_pdu(&mut s).expect("login response");
    (login_status(&h), data)
}

#[test]
fn callback_redirects_temporarily_and_permanently() {
    let t = patient_tgtd();
    t.add_target(1, T1);
    let dir = t.dir.path();
    let args = dir.join("args");
    let temp = script(
        dir,
        "temporary",
        &format!(
            "echo \"$@\" > {}\necho 127.0.0.2:3261:Temporary",
            args.display()
        ),
    );
    set_callback(&t, 1, &temp);
    let (st, data) = first_login(&t, T1);
    assert_eq!(st, (1, 1), "target moved temporarily");
    assert_eq!(
        text_value(&data, "TargetAddress").as_deref(),
        Some("127.0.0.2:3261")
    );
    // The callback got the target's name and the initiator's address.
    assert_eq!(
        std::fs::read_to_string(&args).unwrap(),
        format!("{T1} 127.0.0.1\n")
    );

    let perm = script(dir, "permanent", "echo '[::2]:3262:Permanent'");
    set_callback(&t, 1, &perm);
    let (st, data) = first_login(&t, T1);
    assert_eq!(st, (1, 2), "target moved permanently");
    assert_eq!(
        text_value(&data, "TargetAddress").as_deref(),
        Some("[::2]:3262")
    );
}

#[test]
fn callback_failures_are_target_errors() {
    // tgt's 0.1 s, which the slow script exceeds.
    let t = Tgtd::start();
    t.add_target(1, T1);
    let dir = t.dir.path();
    for (name, body) in [
        ("garbage", "echo garbage"),
        ("silent", "exit 0"),
        // Killed at tgt's 0.1 s: the login fails long before the script would answer.
        ("slow", "sleep 2; echo 127.0.0.2:3261:Temporary"),
    ] {
        set_callback(&t, 1, &script(dir, name, body));
        let (st, data) = first_login(&t, T1);
        assert_eq!(st, (3, 0), "{name}: target error");
        assert_eq!(text_value(&data, "TargetAddress"), None, "{name}");
    }
    set_callback(&t, 1, &dir.join("missing"));
    assert_eq!(first_login(&t, T1).0, (3, 0), "missing program");
}

#[test]
fn callback_naming_the_initiator_itself_lets_the_login_proceed() {
    let t = patient_tgtd();
    t.add_target(1, T1);
    t.add_lun(1, 1, "null", Path::new("/dev/null"));
    set_callback(
        &t,
        1,
        &script(t.dir.path(), "self", "echo 127.0.0.1:3260:Temporary"),
    );
    let mut s = connect(&t);
    login(&mut s, T1, INI);
    // A host name is no redirect either (tgt: the address must be numeric).
    set_callback(
        &t,
        1,
        &script(t.dir.path(), "name", "echo localhost:3260:Permanent"),
    );
    let mut s = connect(&t);
    login(&mut s, T1, INI);
}

/// Makes a FIFO.
fn fifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A FIFO the callback reads "go" from. `open` writes it through a read-write descriptor,
/// which Linux opens on a FIFO without waiting for a reader, and keeps that descriptor until
/// the gate is dropped: the word waits in the pipe whether or not the callback has opened
/// the FIFO yet. (Writing through a non-blocking write-only open lost the word whenever the
/// callback had not opened it yet: the open failed with ENXIO.) Dropping opens it too, so a
/// failed test leaves no callback blocked on it.
struct Gate {
    path: PathBuf,
    held: std::cell::RefCell<Option<std::fs::File>>,
}

impl Gate {
    fn new(path: PathBuf) -> Gate {
        Gate {
            path,
            held: std::cell::RefCell::new(None),
        }
    }

    fn open(&self) {
        self.try_open().expect("write go into the gate FIFO");
    }

    fn try_open(&self) -> std::io::Result<()> {
        use std::io::Write;
        if self.held.borrow().is_some() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)?;
        f.write_all(b"go\n")?;
        *self.held.borrow_mut() = Some(f);
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.try_open();
    }
}

#[test]
fn an_outstanding_callback_blocks_no_other_login() {
    // Callbacks may take 30 s here, so the order of events below, not the clock, decides.
    let t = Tgtd::start_env(Some("0"), &[("CURVE_TGT_CALLBACK_TIMEOUT_MS", "30000")]);
    t.add_target(1, T1);
    t.add_target(2, T2);
    let dir = t.dir.path();
    let (started, gate) = (dir.join("started"), Gate::new(dir.join("gate")));
    fifo(&started);
    fifo(&gate.path);
    let cb = script(
        dir,
        "gated",
        &format!(
            "echo started > {}\nread x < {}\necho 127.0.0.2:3261:Temporary",
            started.display(),
            gate.path.display()
        ),
    );
    set_callback(&t, 1, &cb);
    // Connection A's login parks on the callback...
    let mut a = connect(&t);
    send_leading_login(&mut a, T1, INI);
    let (tx, rx) = std::sync::mpsc::channel();
    let s = started.clone();
    std::thread::spawn(move || tx.send(std::fs::read_to_string(s).unwrap()));
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), "started\n");
    // ...and while it runs, connection B (same single shard) logs in to another target.
    let mut b = connect(&t);
    login(&mut b, T2, "iqn.1994-05.com.example:other");
    // Only now does the callback answer: A is redirected, not timed out.
    gate.open();
    let (h, data) = read_pdu(&mut a).expect("login response");
    assert_eq!(login_status(&h), (1, 1));
    assert_eq!(
        text_value(&data, "TargetAddress").as_deref(),
        Some("127.0.0.2:3261")
    );
}
