//! What a process holds, read from /proc: resident memory and open descriptors. Resource
//! tests compare these before and after a load, with a stated margin.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// A process's resident set (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// How many descriptors a process has open.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd")
        .count()
}

/// A process's resources at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: usize,
}

/// Samples `pid` now.
pub fn usage(pid: u32) -> Usage {
    Usage {
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
    }
}

/// Polls `pid` every 50 ms until its descriptors are back to `base.fds` (plus `fd_margin`)
/// and its RSS within `rss_margin_kib` of `base`, for at most `limit`. Returns the last
/// sample either way: the caller asserts on it, so a failure prints the figures.
pub fn settle(
    pid: u32,
    base: Usage,
    fd_margin: usize,
    rss_margin_kib: u64,
    limit: Duration,
) -> Usage {
    let deadline = Instant::now() + limit;
    loop {
        let u = usage(pid);
        if (u.fds <= base.fds + fd_margin && u.rss_kib <= base.rss_kib + rss_margin_kib)
            || Instant::now() >= deadline
        {
            return u;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
