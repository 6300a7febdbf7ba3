//! When polling before sleeping pays while a backend operation is outstanding.
//!
//! The shard polls its ring for up to `CURVE_TGT_POLL_US` (50 µs) before it sleeps, so a
//! command that arrives meanwhile costs no wake-up. Waiting for an initiator that pays: at
//! queue depth 1 its next command comes a few µs after our response. Waiting for a remote
//! store it burns the whole window: a Curve chunk server answers a 4 KiB read in 100 µs or
//! more, and that poll was about half the shard's CPU per I/O on a curve LU at queue depth 1
//! (`perf record`, bench/README.md). So waits while backend operations are outstanding keep
//! a record of the last [`HISTORY`] of them, and are polled only while at least three
//! quarters ended within the window: a missed poll burns the whole window, a caught one saves
//! one wake-up (a few µs). Every such wait is judged, polled or not (a sleep that ended within
//! the window would have been caught), so polling resumes when the store gets fast (or the
//! queue deep). Waits that end at once (a send that completed inline, work already queued)
//! are not judged: they say nothing about what comes next, and counted as caught they made a
//! chunk-server wait look half caught (each one follows the send of its request). Waits for
//! initiators are polled as before (issue 8 tuned that poll; `Shard::worth_spinning`).

/// Backend waits remembered.
pub const HISTORY: u32 = 16;
/// Poll when at least this many of the remembered waits ended within the poll window.
pub const MIN_HITS: u32 = HISTORY * 3 / 4;
/// Waits shorter than this ended at once and are not judged.
pub const IMMEDIATE_NS: u64 = 2_000;

/// What a shard is waiting for when it has nothing to do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// No backend operation outstanding: the next event is an initiator's (or a timer's).
    Initiator,
    /// Some backend operation is outstanding (a remote store's reply may come first).
    Backend,
}

/// The poll decision for a shard (see the module comment).
#[derive(Clone, Debug)]
pub struct SpinPolicy {
    /// The poll window, ns (0: never poll).
    window_ns: u64,
    /// One bit per remembered backend wait, newest lowest: 1 when it ended within the window.
    backend_hits: u16,
}

impl SpinPolicy {
    /// A policy polling up to `window_ns` (0 turns polling off), starting out polling.
    pub fn new(window_ns: u64) -> SpinPolicy {
        SpinPolicy {
            window_ns,
            backend_hits: u16::MAX,
        }
    }

    /// The poll window, ns.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    /// Whether to poll before sleeping for a wait of this kind.
    pub fn should_spin(&self, kind: WaitKind) -> bool {
        self.window_ns > 0
            && (kind == WaitKind::Initiator || self.backend_hits.count_ones() >= MIN_HITS)
    }

    /// Records how long a wait of this kind lasted (polling included), ns.
    pub fn record(&mut self, kind: WaitKind, waited_ns: u64) {
        if kind != WaitKind::Backend || waited_ns < IMMEDIATE_NS {
            return;
        }
        let h = &mut self.backend_hits;
        *h = (*h << 1) | u16::from(waited_ns <= self.window_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 50_000;

    #[test]
    fn polls_from_the_start_and_never_with_a_zero_window() {
        assert!(SpinPolicy::new(W).should_spin(WaitKind::Initiator));
        assert!(SpinPolicy::new(W).should_spin(WaitKind::Backend));
        assert!(!SpinPolicy::new(0).should_spin(WaitKind::Initiator));
    }

    #[test]
    fn stops_polling_a_kind_whose_waits_outlast_the_window_and_only_that_kind() {
        let mut p = SpinPolicy::new(W);
        // A chunk server answering in 200 µs, an initiator in 10 µs, alternately (qd1).
        let mut stopped_after = None;
        for i in 0..HISTORY {
            p.record(WaitKind::Backend, 200_000);
            p.record(WaitKind::Initiator, 10_000);
            if stopped_after.is_none() && !p.should_spin(WaitKind::Backend) {
                stopped_after = Some(i + 1);
            }
        }
        assert_eq!(stopped_after, Some(HISTORY - MIN_HITS + 1));
        assert!(!p.should_spin(WaitKind::Backend));
        assert!(p.should_spin(WaitKind::Initiator));
        // Initiator waits are polled whatever they did (issue 8's tuning stands).
        for _ in 0..HISTORY {
            p.record(WaitKind::Initiator, 1_000_000);
        }
        assert!(p.should_spin(WaitKind::Initiator));
    }

    #[test]
    fn waits_that_end_at_once_are_not_judged() {
        let mut p = SpinPolicy::new(W);
        // Each chunk-server wait follows an inline send completion.
        for _ in 0..HISTORY {
            p.record(WaitKind::Backend, 500);
            p.record(WaitKind::Backend, 150_000);
        }
        assert!(!p.should_spin(WaitKind::Backend));
    }

    #[test]
    fn backend_waits_caught_only_half_the_time_are_not_polled() {
        let mut p = SpinPolicy::new(W);
        for _ in 0..HISTORY {
            p.record(WaitKind::Backend, 10_000);
            p.record(WaitKind::Backend, 90_000);
        }
        assert!(!p.should_spin(WaitKind::Backend));
    }

    #[test]
    fn resumes_when_sleeps_end_within_the_window_again() {
        let mut p = SpinPolicy::new(W);
        for _ in 0..HISTORY {
            p.record(WaitKind::Backend, 1_000_000);
        }
        assert!(!p.should_spin(WaitKind::Backend));
        // The store got fast (or the queue deep): sleeps now end within the window.
        for _ in 0..MIN_HITS - 1 {
            p.record(WaitKind::Backend, 20_000);
        }
        assert!(!p.should_spin(WaitKind::Backend));
        p.record(WaitKind::Backend, W);
        assert!(p.should_spin(WaitKind::Backend));
    }
}
