//! What a shard reports for `tgtadm --op stat`: its sessions' counters and its per-LU
//! latency histograms.
//!
//! Each shard keeps one read and one write histogram (hdrhistogram, nanoseconds) per LU it
//! has served, recording every READ and WRITE from the arrival of its command PDU to the
//! moment its status PDU is handed to the socket: the target's own share of the latency the
//! initiator sees. Nothing here is shared: the control thread asks every shard for a
//! [`ShardStats`] by message and merges the answers, so the data path never takes a lock or
//! writes a cache line another core reads.

use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::stats::{ConnCounters, IoDir, LuCounters};
use crate::scsi::{LogicalUnit, Lun};
use crate::shard::zerocopy::policy::{Mode, ZcCounters};
use hdrhistogram::Histogram;
use std::sync::{Arc, Weak};

/// Longest latency a histogram resolves (60 s, in ns); longer ones count as this.
const MAX_TRACKED_NS: u64 = 60_000_000_000;
/// Significant digits kept: 1% resolution at every magnitude, about 32 KiB per histogram.
const SIGFIG: u8 = 2;

/// A fresh, empty latency histogram with the bounds every shard uses, so they merge.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIG).expect("constant bounds are valid")
}

/// One LU's histograms on one shard.
struct LuLatency {
    tid: u32,
    lun: Lun,
    /// The LU these samples are of: a deleted and re-created LU starts afresh. A `Weak`
    /// keeps the allocation's address from being reused while the entry exists.
    lu: Weak<LogicalUnit>,
    read: Histogram<u64>,
    write: Histogram<u64>,
}

/// A shard's per-LU latency histograms. Bounded by the LUs configured: entries of LUs that
/// leave the configuration are dropped when the shard sees the new configuration.
#[derive(Default)]
pub struct LatencyTable {
    entries: Vec<LuLatency>,
}

impl LatencyTable {
    /// Records one command's latency. Linear search: a shard serves few LUs, and a scan of
    /// a handful of entries beats hashing.
    pub fn record(&mut self, cfg: &ConfigSnapshot, tid: u32, lun: Lun, dir: IoDir, ns: u64) {
        let i = match self
            .entries
            .iter()
            .position(|e| e.tid == tid && e.lun == lun)
        {
            Some(i) => i,
            None => {
                let Some(lu) = cfg.targets.get(&tid).and_then(|t| t.luns.get(&lun)) else {
                    return;
                };
                self.entries.push(LuLatency {
                    tid,
                    lun,
                    lu: Arc::downgrade(lu),
                    read: new_histogram(),
                    write: new_histogram(),
                });
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[i];
        let h = match dir {
            IoDir::Read => &mut e.read,
            IoDir::Write => &mut e.write,
        };
        h.saturating_record(ns.clamp(1, MAX_TRACKED_NS));
    }

    /// Drops the histograms of LUs that are no longer configured (or were re-created).
    pub fn prune(&mut self, cfg: &ConfigSnapshot) {
        self.entries.retain(|e| {
            cfg.targets
                .get(&e.tid)
                .and_then(|t| t.luns.get(&e.lun))
                .is_some_and(|lu| std::ptr::eq(Arc::as_ptr(lu), e.lu.as_ptr()))
        });
    }

    /// Copies of every histogram with samples.
    pub fn snapshot(&self) -> Vec<LuLatencySnap> {
        self.entries
            .iter()
            .filter(|e| !e.read.is_empty() || !e.write.is_empty())
            .map(|e| LuLatencySnap {
                tid: e.tid,
                lun: e.lun,
                read: e.read.clone(),
                write: e.write.clone(),
            })
            .collect()
    }
}

/// One LU's latency histograms from one shard.
#[derive(Clone, Debug)]
pub struct LuLatencySnap {
    pub tid: u32,
    pub lun: Lun,
    pub read: Histogram<u64>,
    pub write: Histogram<u64>,
}

/// One session's counters (tgt's per-nexus LU lines and its connection line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSnap {
    pub tid: u32,
    pub tsih: u16,
    pub cid: u16,
    pub lus: Vec<(Lun, LuCounters)>,
    pub conn: ConnCounters,
    /// The connection's zero-copy mode and counters (`shard/zerocopy`), and the peer.
    pub zc: ZcConnSnap,
}

/// One connection's zero-copy state for `tgtadm --op stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZcConnSnap {
    pub mode: Mode,
    pub counters: ZcCounters,
    /// Zero-copy sends waiting for their notification, and sent batches held for them.
    pub outstanding: usize,
    pub held: usize,
}

/// A shard's zero-copy totals: closed connections' counters, and what its buffer pool has
/// handed out (back to its idle value once every notification is in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZcShardSnap {
    pub closed: ZcCounters,
    pub pool_buffers_out: usize,
    /// Connections closed but kept while notifications drain.
    pub draining: usize,
    /// Registered payload buffers (`shard/zerocopy/fixed.rs`).
    pub fixed: crate::shard::zerocopy::fixed::FixedSnap,
}

/// Everything one shard reports.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    pub sessions: Vec<SessionSnap>,
    pub latency: Vec<LuLatencySnap>,
    pub zc: ZcShardSnap,
    /// The shard's own resources (printed only in test mode, see `mgmt::stat`).
    pub resources: ShardResources,
}

/// What a shard holds: buffers out of its pool, backend operations in flight, connections.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardResources {
    pub buffers_in_use: u64,
    pub buffer_bytes_in_use: u64,
    pub backend_ops: u64,
    pub connections: u64,
    pub timers: u64,
    /// Bytes taken from the shard's write-buffer budget, and receives held back for an
    /// output backlog over budget (`super::budget`).
    pub write_budget_bytes: u64,
    pub backlog_pauses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_from_all_shards_merge() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        a.saturating_record(10_000);
        b.saturating_record(MAX_TRACKED_NS * 2);
        a.add(&b).expect("same bounds");
        assert_eq!(a.len(), 2);
        assert!(a.max() >= MAX_TRACKED_NS * 99 / 100);
    }
}
