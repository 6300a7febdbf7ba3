//! Runs targets' redirect callbacks (tgtadm `RedirectCallback`) off the shards. A login whose
//! target has a callback parks (`LoginStep::RunCallback`); the shard hands the program to
//! [`CallbackRunner::start`], which runs it on a short-lived thread of its own (tgt forks a
//! process per login anyway) and hands the result back, so no shard ever waits on a program.
//!
//! Everything is bounded: how many run at once ([`MAX_RUNNING`]; beyond it a login gets a
//! target error at once), how long one may take to answer (tgt's 0.1 s by default), and how
//! much of its output is read ([`CALLBACK_OUTPUT_MAX`]). When the answer is in, or the time is
//! up, the program's whole process group is killed, so neither it nor anything it started
//! outlives the login.

use crate::iscsi::redirect::{CallbackError, CALLBACK_OUTPUT_MAX};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most callbacks running at once, over all shards.
pub const MAX_RUNNING: usize = 64;
/// How long a callback has to answer: tgt's `call_program` waits 0.1 s ("the initiator will
/// retry anyway").
pub const TIMEOUT_DEFAULT: Duration = Duration::from_millis(100);
/// The longest `CURVE_TGT_CALLBACK_TIMEOUT_MS` may ask for.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// What a callback run ends with: its output, or why there is none.
pub type CallbackResult = Result<Vec<u8>, CallbackError>;

/// Starts redirect callbacks on threads of their own, at most `limit` at once. Exists so the
/// bound on concurrent programs is one number for the whole process, whichever shard asks.
#[derive(Debug)]
pub struct CallbackRunner {
    running: Arc<AtomicUsize>,
    limit: usize,
    timeout: Duration,
}

/// Gives a running slot back when its thread ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallbackRunner {
    /// A runner allowing `limit` callbacks at once, each `timeout` to answer.
    pub fn new(limit: usize, timeout: Duration) -> CallbackRunner {
        CallbackRunner {
            running: Arc::new(AtomicUsize::new(0)),
            limit,
            timeout: timeout.min(TIMEOUT_MAX),
        }
    }

    /// tgt's limits, with the answer time overridden by `CURVE_TGT_CALLBACK_TIMEOUT_MS` (for
    /// callbacks slower to start than 0.1 s, and for tests that must not race the clock).
    pub fn from_env() -> CallbackRunner {
        let timeout = std::env::var("CURVE_TGT_CALLBACK_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(TIMEOUT_DEFAULT, Duration::from_millis);
        CallbackRunner::new(MAX_RUNNING, timeout)
    }

    /// Runs `argv` on a new thread and calls `done` there with the result. Fails at once,
    /// without calling `done`, when `limit` callbacks already run or no thread can be started.
    pub fn start(
        &self,
        argv: Vec<String>,
        done: impl FnOnce(CallbackResult) + Send + 'static,
    ) -> Result<(), CallbackError> {
        let taken = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(CallbackError::Busy(self.limit));
        }
        let slot = Slot(self.running.clone());
        let timeout = self.timeout;
        std::thread::Builder::new()
            .name("tgtd/callback".into())
            .spawn(move || {
                let result = run(&argv, timeout);
                drop(slot);
                done(result);
            })
            .map(drop)
            .map_err(|e| CallbackError::Spawn(e.kind()))
    }

    /// How many callbacks run now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

/// Runs one callback to its answer: `argv[0]` is executed as a path (execv: no PATH search,
/// no shell), stdin is empty, stdout is read until it closes, [`CALLBACK_OUTPUT_MAX`] bytes
/// are in or `timeout` passes, whichever is first. The exit status is not looked at (tgt does
/// not either). Output that arrived before the deadline is the answer, as in tgt, which reads
/// whatever the pipe holds once it turns readable; none at all is [`CallbackError::Timeout`].
pub fn run(argv: &[String], timeout: Duration) -> CallbackResult {
    let (prog, args) = argv
        .split_first()
        .ok_or(CallbackError::Spawn(ErrorKind::NotFound))?;
    // execv takes a name without '/' as a path from the working directory.
    let path = if prog.contains('/') {
        PathBuf::from(prog)
    } else {
        Path::new(".").join(prog)
    };
    let mut child = Command::new(&path)
        .arg0(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| CallbackError::Spawn(e.kind()))?;
    let deadline = Instant::now() + timeout;
    let out = match child.stdout.take() {
        Some(mut stdout) => read_until(&mut stdout, deadline),
        None => Ok(Vec::new()),
    };
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        // The group is the child's own (process_group(0)), and the child is not reaped yet, so
        // its id cannot have been reused for another group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.wait();
    match out {
        Ok(bytes) if bytes.is_empty() && Instant::now() >= deadline => {
            Err(CallbackError::Timeout(millis(timeout)))
        }
        other => other,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads `r` until end of file, [`CALLBACK_OUTPUT_MAX`] bytes, or the deadline.
fn read_until(r: &mut std::process::ChildStdout, deadline: Instant) -> CallbackResult {
    let fd = r.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns (the child's stdout pipe).
    let nonblocking = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !nonblocking {
        return Err(CallbackError::Spawn(std::io::Error::last_os_error().kind()));
    }
    let mut out = Vec::with_capacity(256);
    let mut buf = [0u8; CALLBACK_OUTPUT_MAX];
    while out.len() < CALLBACK_OUTPUT_MAX {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait_ms = (deadline - now).as_micros().div_ceil(1000);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, i32::try_from(wait_ms).unwrap_or(i32::MAX)) };
        if n < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            break;
        }
        if n <= 0 {
            continue;
        }
        let room = CALLBACK_OUTPUT_MAX - out.len();
        match r.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable shell script.
    fn script(dir: &Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    /// Generous: these tests check what a callback answers, not how fast.
    const SLOW_OK: Duration = Duration::from_secs(20);

    #[test]
    fn output_and_arguments() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "cb", r#"echo "$0|$1|$2""#);
        let out = run(&[p.clone(), "iqn.t:1".into(), "10.0.0.2".into()], SLOW_OK).unwrap();
        assert_eq!(out, format!("{p}|iqn.t:1|10.0.0.2\n").as_bytes());
    }

    #[test]
    fn failures() {
        let d = tempfile::tempdir().unwrap();
        // No program, a missing one, one not executable: cannot run.
        assert_eq!(
            run(&[], SLOW_OK),
            Err(CallbackError::Spawn(ErrorKind::NotFound))
        );
        let missing = d.path().join("missing").display().to_string();
        assert!(matches!(
            run(&[missing], SLOW_OK),
            Err(CallbackError::Spawn(_))
        ));
        let plain = d.path().join("plain");
        std::fs::write(&plain, "echo hi").unwrap();
        assert!(matches!(
            run(&[plain.display().to_string()], SLOW_OK),
            Err(CallbackError::Spawn(_))
        ));
        // No PATH search: a bare name is a path in the working directory.
        assert!(matches!(
            run(&["true".into()], SLOW_OK),
            Err(CallbackError::Spawn(_))
        ));
        // Exits without a word: empty output (the login then fails to parse it).
        let quiet = script(d.path(), "quiet", "exit 3");
        assert_eq!(run(&[quiet], SLOW_OK), Ok(Vec::new()));
    }

    #[test]
    fn a_silent_callback_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "slow", "sleep 5");
        // run() returns once the group is killed and the child reaped, well before 5 s; the
        // result is what the test checks.
        assert_eq!(
            run(&[p], Duration::from_millis(100)),
            Err(CallbackError::Timeout(100))
        );
    }

    #[test]
    fn output_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "loud", "yes 10.0.0.1:3260:Temporary");
        let out = run(&[p], SLOW_OK).unwrap();
        assert_eq!(out.len(), CALLBACK_OUTPUT_MAX);
        assert!(out.starts_with(b"10.0.0.1:3260:Temporary\n"));
    }

    #[test]
    fn at_most_limit_run_at_once() {
        let d = tempfile::tempdir().unwrap();
        // Blocks until its stdin... which is empty; so block on a FIFO the test opens last.
        let fifo = d.path().join("gate");
        let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let p = script(
            d.path(),
            "gated",
            &format!("read x < {}; echo 10.0.0.1:3260:Temporary", fifo.display()),
        );
        let runner = CallbackRunner::new(1, SLOW_OK);
        let (tx, rx) = crossbeam_channel::unbounded();
        let tx2 = tx.clone();
        runner
            .start(vec![p.clone()], move |r| tx.send(r).unwrap())
            .unwrap();
        assert_eq!(
            runner.start(vec![p], move |r| tx2.send(r).unwrap()),
            Err(CallbackError::Busy(1))
        );
        // Open the gate: the first callback answers, and its slot is free again.
        std::fs::write(&fifo, "go\n").unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            Ok(b"10.0.0.1:3260:Temporary\n".to_vec())
        );
        // The slot is given back before `done` runs.
        assert_eq!(runner.running(), 0);
    }
}
