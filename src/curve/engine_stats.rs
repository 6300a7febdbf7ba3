//! Counters a curve LU's engines share with the control thread, for `tgtadm --op stat`:
//! chunk-server connections per shard, operations, failures and latency. Atomics only, so the
//! data path never waits on the control thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Largest shard count the per-shard counters keep apart (more share the last slot).
pub const MAX_SHARDS: usize = 64;

/// Names of the chunk-client counters each shard publishes, in [`EngineStats::client`] order.
pub const CLIENT_COUNTERS: [&str; 12] = [
    "rpcs",
    "get_leader",
    "retry_redirect",
    "retry_overload",
    "retry_backward",
    "retry_rpc",
    "retry_other",
    "deadline_failures",
    "bad_replies",
    "conns_lost",
    "rpc_p50_us",
    "rpc_p99_us",
];

/// The counters of one curve LU.
#[derive(Debug)]
pub struct EngineStats {
    conns: Vec<AtomicI64>,
    /// Per shard, the chunk client's counters ([`CLIENT_COUNTERS`]), copied after each event.
    client: Vec<[AtomicU64; 12]>,
    /// SCSI operations completed.
    pub ops: AtomicU64,
    /// Of those, failed (deadline, refused, cancelled).
    pub failed: AtomicU64,
    /// Total operation latency, in microseconds.
    pub latency_us: AtomicU64,
    /// Largest operation latency, in microseconds.
    pub max_latency_us: AtomicU64,
}

impl Default for EngineStats {
    fn default() -> Self {
        EngineStats {
            conns: (0..MAX_SHARDS).map(|_| AtomicI64::new(0)).collect(),
            client: (0..MAX_SHARDS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            max_latency_us: AtomicU64::new(0),
        }
    }
}

impl EngineStats {
    /// A shard opened (+1) or closed (-1) a chunk-server connection.
    pub fn connects_add(&self, shard: usize, d: i64) {
        self.conns[shard.min(MAX_SHARDS - 1)].fetch_add(d, Ordering::Relaxed);
    }

    /// An operation finished after `took`.
    pub fn record_op(&self, took: Duration, ok: bool) {
        let us = took.as_micros() as u64;
        self.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_us.fetch_add(us, Ordering::Relaxed);
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Shard `shard` publishes its chunk client's counters.
    pub fn publish(&self, shard: usize, s: &crate::curve::chunk_io::IoStats) {
        let v = [
            s.rpcs,
            s.get_leader_rpcs,
            s.retries_redirect,
            s.retries_overload,
            s.retries_backward,
            s.retries_rpc,
            s.retries_other,
            s.deadline_failures,
            s.bad_replies,
            s.conns_lost,
            s.latency_us_quantile(500).unwrap_or(0),
            s.latency_us_quantile(990).unwrap_or(0),
        ];
        for (a, x) in self.client[shard.min(MAX_SHARDS - 1)].iter().zip(v) {
            a.store(x, Ordering::Relaxed);
        }
    }

    /// A shard's published client counters.
    pub fn client(&self, shard: usize) -> [u64; 12] {
        std::array::from_fn(|i| self.client[shard.min(MAX_SHARDS - 1)][i].load(Ordering::Relaxed))
    }

    /// Connections per shard, for the shards that have any.
    pub fn connections(&self) -> Vec<(usize, i64)> {
        self.conns
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c != 0)
            .collect()
    }
}
