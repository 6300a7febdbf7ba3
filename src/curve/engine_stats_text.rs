//! The lines `tgtadm --op stat` prints for a curve LU after tgt's own: per shard, its
//! chunk-server connections and its chunk client's RPC and retry counters by cause; for the
//! LU, SCSI operations, failures and their latency through the Curve path.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::engine_stats::{EngineStats, CLIENT_COUNTERS, MAX_SHARDS};

/// Renders the counters; empty while the LU has done nothing.
pub fn render(s: &EngineStats) -> String {
    let ops = s.ops.load(Ordering::Relaxed);
    let conns = s.connections();
    if ops == 0 && conns.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for shard in 0..MAX_SHARDS {
        let c = s.client(shard);
        let n = conns.iter().find(|(i, _)| *i == shard).map_or(0, |x| x.1);
        if n == 0 && c.iter().all(|x| *x == 0) {
            continue;
        }
        let _ = write!(out, "    Shard {shard}: connections={n}");
        for (name, v) in CLIENT_COUNTERS.iter().zip(c) {
            let _ = write!(out, " {name}={v}");
        }
        out.push('\n');
    }
    let failed = s.failed.load(Ordering::Relaxed);
    let lat = s.latency_us.load(Ordering::Relaxed);
    let avg = lat.checked_div(ops).unwrap_or(0);
    let _ = writeln!(
        out,
        "    Operations: {ops} failed={failed} latency_avg_us={avg} latency_max_us={}",
        s.max_latency_us.load(Ordering::Relaxed)
    );
    out
}
