//! fio with libiscsi's engine as a real initiator for integration tests: the binary that
//! `scripts/install-deps.sh --bench` builds (`/opt/fio-iscsi/fio`, or `FIO`), one run per call,
//! its JSON report parsed into the figures a test asserts on (errors, verify failures, I/O
//! counts, latencies).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// fio with the libiscsi engine, or `None` (the caller skips, saying why).
pub fn find() -> Option<PathBuf> {
    let p = std::env::var_os("FIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/fio-iscsi/fio"));
    let ok = Command::new(&p)
        .arg("--enghelp")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libiscsi"));
    if !ok {
        eprintln!(
            "SKIP: no fio with the libiscsi engine at {} (FIO=...; \
             bash scripts/install-deps.sh --bench builds it)",
            p.display()
        );
    }
    ok.then_some(p)
}

/// fio's `--filename` for LUN `lun` of `iqn` on 127.0.0.1:`port` (fio splits names on ':').
pub fn url(port: u16, iqn: &str, lun: u32) -> String {
    format!("iscsi://127.0.0.1:{port}/{iqn}/{lun}").replace(':', "\\:")
}

/// What one fio run did.
#[derive(Debug, Clone)]
pub struct Run {
    /// fio's exit status (`None`: killed).
    pub rc: Option<i32>,
    /// The job's `error` (0: none).
    pub error: i64,
    /// `total_err` (I/O errors counted under continue_on_error; 0 otherwise).
    pub total_err: i64,
    /// Writes completed.
    pub write_ios: u64,
    /// Reads completed (a verify's read-back counts here).
    pub read_ios: u64,
    /// Bytes written / read.
    pub write_bytes: u64,
    pub read_bytes: u64,
    /// Largest completion latency, ns (write, read).
    pub write_clat_max_ns: u64,
    pub read_clat_max_ns: u64,
    /// Lines fio logged about verification failures ("verify: bad ...", "bad magic", ...).
    pub verify_failures: usize,
    /// fio's stderr and the text part of its output (error lines).
    pub log: String,
    /// Wall time of the run.
    pub wall: Duration,
}

impl Run {
    /// Exit 0, no error, nothing failed verification.
    pub fn clean(&self) -> bool {
        self.rc == Some(0) && self.error == 0 && self.total_err == 0 && self.verify_failures == 0
    }

    /// The first sense libiscsi reported for a failed command, as (sense key, ASC << 8 | ASCQ):
    /// fio logs `iscsi: request failed with error SENSE KEY:NAME(3) ASCQ:NAME(0x0c00)`.
    pub fn sense(&self) -> Option<(u8, u16)> {
        // The names may be "(null)": the numbers are in the last parentheses of each part.
        let line = self.log.lines().find(|l| l.contains("SENSE KEY:"))?;
        let (key, ascq) = line.split_once("SENSE KEY:")?.1.split_once("ASCQ:")?;
        let last = |s: &str| -> Option<String> {
            let s = s.trim_end().trim_end_matches('.');
            let inner = s.strip_suffix(')')?;
            Some(inner[inner.rfind('(')? + 1..].to_string())
        };
        let key = last(key)?.parse().ok()?;
        let ascq = last(ascq)?;
        let ascq = u16::from_str_radix(ascq.strip_prefix("0x")?, 16).ok()?;
        Some((key, ascq))
    }
}

/// Runs `fio` with `args` (a job's options; `--output-format=json` and `--output` are added),
/// bounded by `timeout` (then killed), in `dir` (its JSON and log stay there).
pub fn run(fio: &Path, dir: &Path, name: &str, args: &[String], timeout: Duration) -> Run {
    let json = dir.join(format!("{name}.json"));
    let logf = dir.join(format!("{name}.log"));
    let started = Instant::now();
    let mut child = Command::new("timeout")
        .arg("-k")
        .arg("5")
        .arg(timeout.as_secs().max(1).to_string())
        .arg(fio)
        .arg(format!("--name={name}"))
        .args(args)
        .arg("--output-format=json")
        .arg(format!("--output={}", json.display()))
        .stdout(std::fs::File::create(&logf).unwrap())
        .stderr(std::fs::File::options().append(true).open(&logf).unwrap())
        .spawn()
        .expect("spawn fio");
    let status = child.wait().expect("wait for fio");
    let wall = started.elapsed();
    let log = std::fs::read_to_string(&logf).unwrap_or_default();
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    // fio writes error lines before the JSON document in the same file.
    let (pre, doc) = match text.find("{\n") {
        Some(at) => (&text[..at], &text[at..]),
        None => (text.as_str(), ""),
    };
    let log = format!("{log}{pre}");
    let v: serde_json::Value = serde_json::from_str(doc).unwrap_or(serde_json::Value::Null);
    let job = &v["jobs"][0];
    let num = |p: &[&str]| -> u64 {
        p.iter()
            .fold(job, |j, k| &j[*k])
            .as_u64()
            .unwrap_or_default()
    };
    let verify_failures = log
        .lines()
        .filter(|l| l.contains("verify:") || l.contains("bad magic") || l.contains("crc32c"))
        .count();
    Run {
        rc: status.code(),
        error: job["error"].as_i64().unwrap_or(-1),
        total_err: job["total_err"].as_i64().unwrap_or(0),
        write_ios: num(&["write", "total_ios"]),
        read_ios: num(&["read", "total_ios"]),
        write_bytes: num(&["write", "io_bytes"]),
        read_bytes: num(&["read", "io_bytes"]),
        write_clat_max_ns: num(&["write", "clat_ns", "max"]),
        read_clat_max_ns: num(&["read", "clat_ns", "max"]),
        verify_failures,
        log,
        wall,
    }
}
