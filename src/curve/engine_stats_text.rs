//! The lines `tgtadm --op stat` prints for a curve LU after tgt's own.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::engine_stats::EngineStats;

/// Renders the counters; empty while the LU has done nothing.
pub fn render(s: &EngineStats) -> String {
    let ops = s.ops.load(Ordering::Relaxed);
    let conns = s.connections();
    if ops == 0 && conns.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "        Curve:");
    for (shard, n) in conns {
        let _ = writeln!(
            out,
            "            Shard {shard}: chunk-server connections: {n}"
        );
    }
    let failed = s.failed.load(Ordering::Relaxed);
    let lat = s.latency_us.load(Ordering::Relaxed);
    let avg = lat.checked_div(ops).unwrap_or(0);
    let _ = writeln!(out, "            Operations: {ops}, failed: {failed}");
    let _ = writeln!(
        out,
        "            Latency: avg {avg} us, max {} us",
        s.max_latency_us.load(Ordering::Relaxed)
    );
    out
}
