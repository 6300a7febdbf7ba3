//! Per-peer rate limiting of the lines a peer can cause without logging in.
//!
//! A refused login or a connection closed for a protocol error costs the peer one TCP
//! connection and costs us one log line: without a limit, a loop of bad connections writes
//! megabytes a second into syslog and buries every other line. [`PeerLimiter`] lets through
//! `burst` lines per peer address per window, and `global` lines per window from all peers
//! together (so many addresses cannot flood either); the rest are counted, and the count is
//! logged once the window is over ("N lines suppressed"), so the operator still learns the
//! flood happened and from where. The table of peers is bounded: beyond `max_peers`
//! addresses in one window, new ones share one slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per peer per window.
pub const DEFAULT_BURST: u32 = 5;
/// Lines per window from all peers together.
pub const DEFAULT_GLOBAL: u32 = 50;
/// The window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// Distinct peer addresses tracked per window.
pub const DEFAULT_MAX_PEERS: usize = 4096;

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// Count it, don't log it.
    Suppress,
}

/// A finished window in which lines were suppressed: log "`peer`: `count` lines suppressed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed {
    /// The peer, or `None` for lines over the global limit or from peers beyond the table.
    pub peer: Option<IpAddr>,
    pub count: u64,
    pub window: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

impl Slot {
    fn new(now: Instant) -> Slot {
        Slot {
            start: now,
            lines: 0,
            suppressed: 0,
        }
    }
}

#[derive(Debug)]
struct Table {
    peers: HashMap<IpAddr, Slot>,
    /// All peers together (also the shared slot for peers beyond `max_peers`).
    global: Slot,
    last_sweep: Instant,
}

/// The limiter; one per process, shared by every shard (refusals are the cold path).
#[derive(Debug)]
pub struct PeerLimiter {
    burst: u32,
    global: u32,
    window: Duration,
    max_peers: usize,
    table: Mutex<Table>,
}

impl PeerLimiter {
    pub fn new(burst: u32, global: u32, window: Duration, max_peers: usize) -> PeerLimiter {
        let now = Instant::now();
        PeerLimiter {
            burst,
            global,
            window,
            max_peers,
            table: Mutex::new(Table {
                peers: HashMap::new(),
                global: Slot::new(now),
                last_sweep: now,
            }),
        }
    }

    /// Decides about one line from `peer` at `now`, and returns the windows that ended with
    /// suppressed lines (to be logged first).
    pub fn check(&self, peer: IpAddr, now: Instant) -> (Verdict, Vec<Suppressed>) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let ended = self.sweep(&mut t, now);
        let known = t.peers.len() < self.max_peers || t.peers.contains_key(&peer);
        let global_ok = t.global.lines < self.global;
        let verdict = if known {
            let slot = t.peers.entry(peer).or_insert_with(|| Slot::new(now));
            if slot.lines < self.burst && global_ok {
                slot.lines += 1;
                Verdict::Log
            } else {
                slot.suppressed += 1;
                Verdict::Suppress
            }
        } else if global_ok {
            Verdict::Log
        } else {
            Verdict::Suppress
        };
        match verdict {
            Verdict::Log => t.global.lines += 1,
            Verdict::Suppress if !known => t.global.suppressed += 1,
            Verdict::Suppress => {}
        }
        (verdict, ended)
    }

    /// Ends every window older than `window` (at most once per `window / 4`), returning those
    /// with suppressed lines.
    pub fn flush(&self, now: Instant) -> Vec<Suppressed> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.sweep(&mut t, now)
    }

    fn sweep(&self, t: &mut Table, now: Instant) -> Vec<Suppressed> {
        let mut ended = Vec::new();
        if now.saturating_duration_since(t.last_sweep) < self.window / 4 {
            return ended;
        }
        t.last_sweep = now;
        let window = self.window;
        t.peers.retain(|ip, s| {
            let done = now.saturating_duration_since(s.start) >= window;
            if done && s.suppressed > 0 {
                ended.push(Suppressed {
                    peer: Some(*ip),
                    count: s.suppressed,
                    window,
                });
            }
            !done
        });
        if now.saturating_duration_since(t.global.start) >= window {
            if t.global.suppressed > 0 {
                ended.push(Suppressed {
                    peer: None,
                    count: t.global.suppressed,
                    window,
                });
            }
            t.global = Slot::new(now);
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(5);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_flood_logs_the_burst_then_one_count_after_the_window() {
        let l = PeerLimiter::new(5, 50, W, 16);
        let t0 = Instant::now();
        let logged = (0..5000)
            .filter(|_| l.check(ip(1), t0).0 == Verdict::Log)
            .count();
        assert_eq!(logged, 5);
        // Before the window ends: no count yet, still suppressed.
        assert_eq!(l.check(ip(1), t0 + W / 2).0, Verdict::Suppress);
        assert!(l.flush(t0 + W / 2).is_empty());
        let later = t0 + W;
        let (v, ended) = l.check(ip(1), later);
        assert_eq!(v, Verdict::Log);
        assert_eq!(
            ended,
            vec![Suppressed {
                peer: Some(ip(1)),
                count: 4996,
                window: W
            }]
        );
    }

    #[test]
    fn one_peers_flood_leaves_other_peers_their_lines() {
        let l = PeerLimiter::new(5, 50, W, 16);
        let t0 = Instant::now();
        for _ in 0..1000 {
            l.check(ip(1), t0);
        }
        assert_eq!(l.check(ip(2), t0).0, Verdict::Log);
    }

    #[test]
    fn many_peers_together_are_capped_and_counted() {
        let l = PeerLimiter::new(5, 50, W, 16);
        let t0 = Instant::now();
        let logged = (0..=255u8)
            .flat_map(|i| std::iter::repeat_n(i, 3))
            .filter(|i| l.check(ip(*i), t0).0 == Verdict::Log)
            .count();
        assert_eq!(logged, 50);
        let ended = l.flush(t0 + W);
        let total: u64 = ended.iter().map(|s| s.count).sum();
        assert_eq!(total, 256 * 3 - 50);
        assert!(ended.iter().any(|s| s.peer.is_none()), "{ended:?}");
        // The table never held more than max_peers addresses.
        assert!(ended.iter().filter(|s| s.peer.is_some()).count() <= 16);
    }
}
