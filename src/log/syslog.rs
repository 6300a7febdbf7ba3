//! Sending log lines to the system logger when tgtd runs as a daemon.
//!
//! A daemonised tgtd has no stdout or stderr (they are /dev/null), so without this every
//! line is lost. tgt logs to syslog with facility `daemon`; so do we: one datagram per line
//! on the local syslog socket (`/dev/log`, where both rsyslog and systemd-journald listen),
//! in the format glibc's `syslog(3)` sends (RFC 3164: `<PRI>Mmm dd hh:mm:ss tgtd[PID]: text`).
//! `TGT_SYSLOG_SOCKET` names another socket (tests bind their own). The socket is reconnected
//! once when a send fails (the logger restarted); a line that still cannot be sent is dropped,
//! never blocking a shard.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The system's syslog socket.
pub const DEFAULT_SOCKET: &str = "/dev/log";
/// Environment variable naming another syslog socket.
pub const SOCKET_ENV: &str = "TGT_SYSLOG_SOCKET";
/// syslog facility `daemon` (3), shifted as in `<syslog.h>`.
const FACILITY_DAEMON: u8 = 3 << 3;
/// The longest datagram sent; longer lines are cut (the escaping already caps peer text).
const MAX_DATAGRAM: usize = 4096;

/// syslog severity for a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3, // LOG_ERR
        Level::WARN => 4,  // LOG_WARNING
        Level::INFO => 6,  // LOG_INFO
        _ => 7,            // LOG_DEBUG
    }
}

/// The path from the environment, or `/dev/log`.
pub fn socket_path_from_env() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A connection to the local syslog socket, shared by every thread that logs.
#[derive(Debug)]
pub struct Syslog {
    path: PathBuf,
    ident: String,
    sock: Mutex<Option<UnixDatagram>>,
}

impl Syslog {
    /// Connects to `path` now (a missing logger is retried on each line).
    pub fn new(path: &Path, ident: &str) -> Syslog {
        Syslog {
            path: path.to_path_buf(),
            ident: ident.to_string(),
            sock: Mutex::new(Self::connect(path).ok()),
        }
    }

    fn connect(path: &Path) -> io::Result<UnixDatagram> {
        let s = UnixDatagram::unbound()?;
        s.connect(path)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// Sends one line (without its trailing newline) at `severity`.
    fn send(&self, severity: u8, line: &[u8]) {
        let mut msg = format!(
            "<{}>{} {}[{}]: ",
            FACILITY_DAEMON | severity,
            timestamp(),
            self.ident,
            std::process::id()
        )
        .into_bytes();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let room = MAX_DATAGRAM.saturating_sub(msg.len());
        msg.extend_from_slice(&line[..line.len().min(room)]);
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        for _attempt in 0..2 {
            if guard.is_none() {
                *guard = Self::connect(&self.path).ok();
            }
            match guard.as_ref().map(|s| s.send(&msg)) {
                Some(Ok(_)) => return,
                // Full: drop the line rather than block a shard.
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => *guard = None,
            }
        }
    }
}

/// `Mmm dd hh:mm:ss` in local time, as RFC 3164 and glibc write it.
fn timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) only returns the time; localtime_r writes into the tm we own.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    let month = MONTHS[usize::try_from(tm.tm_mon).unwrap_or(0).min(11)];
    format!(
        "{month} {:>2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// One formatted event on its way to syslog: buffered, sent as one datagram when dropped.
pub struct SyslogLine<'a> {
    to: &'a Syslog,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.to.send(self.severity, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;
    fn make_writer(&'a self) -> SyslogLine<'a> {
        SyslogLine {
            to: self,
            severity: 6,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine<'a> {
        SyslogLine {
            to: self,
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_one_datagram_with_priority_and_ident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let rx = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::new(&path, "tgtd");
        {
            let mut w = SyslogLine {
                to: &s,
                severity: severity(&Level::WARN),
                buf: Vec::new(),
            };
            w.write_all(b"portal down\n").unwrap();
        }
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<28>"), "{got}");
        assert!(
            got.ends_with(&format!(" tgtd[{}]: portal down", std::process::id())),
            "{got}"
        );
    }

    #[test]
    fn a_missing_logger_loses_the_line_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let s = Syslog::new(&dir.path().join("none"), "tgtd");
        s.send(6, b"nobody hears this");
    }
}
