//! The zero-copy table of `tgtadm --op stat` (this target's addition, like the latency
//! table): one row per connection that has sent a Data-In payload at or above the zero-copy
//! threshold, with its mode (`zc`, or `copy:<reason>`) and counters, then one line of shard
//! totals (closed connections, pooled buffers handed out, connections draining, registered
//! payload buffers and the registrations the kernel refused). Empty when
//! no connection has sent a large payload and every pool is idle, so idle output stays
//! byte-identical to tgt's.

use crate::shard::stats::{SessionSnap, ZcShardSnap};
use crate::shard::zerocopy::policy::ZcCounters;
use std::fmt::Write;

/// Title line of the table.
pub const ZC_TITLE: &str = "Zero-copy Data-In, per connection since login:\n";

/// The shards' zero-copy totals, summed.
pub fn sum_shards<'a>(it: impl IntoIterator<Item = &'a ZcShardSnap>) -> ZcShardSnap {
    let mut t = ZcShardSnap::default();
    for s in it {
        t.closed.add(&s.closed);
        t.pool_buffers_out += s.pool_buffers_out;
        t.draining += s.draining;
        t.fixed.add(&s.fixed);
    }
    t
}

/// The table for `sessions` (already filtered by the caller), or "" when idle.
pub fn zc_table(sessions: &[&SessionSnap], shards: Option<&ZcShardSnap>) -> String {
    let rows: Vec<&&SessionSnap> = sessions
        .iter()
        .filter(|s| !s.zc.counters.is_idle())
        .collect();
    let shard_busy = shards.is_some_and(|t| {
        !t.closed.is_idle() || t.pool_buffers_out > 0 || t.draining > 0 || !rows.is_empty()
    });
    if rows.is_empty() && !shard_busy {
        return String::new();
    }
    let mut b = String::from(ZC_TITLE);
    let _ = writeln!(
        b,
        "{:>3} {:>5} {:>3} {:<17} {}",
        "tgt", "sid", "cid", "mode", COUNTER_HEADER
    );
    for s in rows {
        let _ = writeln!(
            b,
            "{:>3} {:>5} {:>3} {:<17} {} {:>7} {:>5}",
            s.tid,
            s.tsih,
            s.cid,
            s.zc.mode.describe(),
            counters(&s.zc.counters),
            s.zc.outstanding,
            s.zc.held
        );
    }
    if let Some(t) = shards.filter(|_| shard_busy) {
        let _ = writeln!(
            b,
            "closed connections: {}\npooled buffers out: {}, connections draining notifications: {}",
            counters_words(&t.closed),
            t.pool_buffers_out,
            t.draining
        );
        let f = &t.fixed;
        let _ = writeln!(
            b,
            "registered payload buffers: {} ({} bytes), fixed-buffer sends: {}, registration failures: {}",
            f.registered, f.registered_bytes, f.sends, f.failures
        );
    }
    b
}

const COUNTER_HEADER: &str = "     large  zc_sends        zc_bytes      copy_bytes    notifs    copied enobufs enomem eperm unsupp pending  held";

fn counters(c: &ZcCounters) -> String {
    format!(
        "{:>10} {:>9} {:>15} {:>15} {:>9} {:>9} {:>7} {:>6} {:>5} {:>6}",
        c.large_sends,
        c.zc_sends,
        c.zc_bytes,
        c.copy_bytes,
        c.notifications,
        c.copied_notifications,
        c.fallback_enobufs,
        c.fallback_enomem,
        c.fallback_eperm,
        c.fallback_unsupported
    )
}

fn counters_words(c: &ZcCounters) -> String {
    format!(
        "large {} zc_sends {} zc_bytes {} copy_bytes {} notifs {} copied {} enobufs {} enomem {} eperm {} unsupp {}",
        c.large_sends,
        c.zc_sends,
        c.zc_bytes,
        c.copy_bytes,
        c.notifications,
        c.copied_notifications,
        c.fallback_enobufs,
        c.fallback_enomem,
        c.fallback_eperm,
        c.fallback_unsupported
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::stats::ConnCounters;
    use crate::shard::stats::ZcConnSnap;
    use crate::shard::zerocopy::policy::{CopyReason, Mode};

    fn snap(counters: ZcCounters, mode: Mode) -> SessionSnap {
        SessionSnap {
            tid: 1,
            tsih: 3,
            cid: 0,
            lus: Vec::new(),
            conn: ConnCounters::default(),
            zc: ZcConnSnap {
                mode,
                counters,
                outstanding: 2,
                held: 1,
            },
        }
    }

    #[test]
    fn idle_connections_and_shards_print_nothing() {
        let idle = snap(
            ZcCounters {
                copy_bytes: 4096,
                ..ZcCounters::default()
            },
            Mode::ZeroCopy,
        );
        assert_eq!(zc_table(&[&idle], Some(&ZcShardSnap::default())), "");
        assert_eq!(zc_table(&[], None), "");
    }

    #[test]
    fn a_busy_connection_shows_mode_and_counters() {
        let c = ZcCounters {
            large_sends: 5,
            zc_sends: 1,
            fallback_enobufs: 1,
            ..ZcCounters::default()
        };
        let s = snap(c, Mode::Copy(CopyReason::NoBuffers));
        let shards = ZcShardSnap {
            pool_buffers_out: 4,
            ..ZcShardSnap::default()
        };
        let out = zc_table(&[&s], Some(&shards));
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(ZC_TITLE.trim_end()));
        assert!(lines.next().is_some_and(|h| h.contains("enobufs")));
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(
            row,
            [
                "1",
                "3",
                "0",
                "copy:enobufs",
                "5",
                "1",
                "0",
                "0",
                "0",
                "0",
                "1",
                "0",
                "0",
                "0",
                "2",
                "1"
            ]
        );
        assert!(out.contains("pooled buffers out: 4,"));
        assert!(out.contains("registration failures: 0\n"), "{out}");
    }
}
