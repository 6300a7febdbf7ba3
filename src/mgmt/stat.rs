//! `tgtadm --op stat`: merges what the shards report ([`ShardStats`]) with the
//! configuration's list of sessions and LUs into tgt's stat lines, in tgt's order, and adds
//! the per-LU latency table after them.
//!
//! tgt prints only its counter lines; the latency table is this target's addition. It comes
//! after tgt's lines, behind an empty line, and only for LUs that have served a READ or
//! WRITE since they were created, so output for an idle target stays byte-identical to
//! tgt's and scripts that read tgt's lines read the same lines here.

use super::config::Config;
use super::ipc::TgtadmError;
use super::show::{self, ConnStatLine, LatencyLine, LuStatLine};
use super::stat_zerocopy;
use crate::iscsi::stats::{ConnCounters, LuCounters};
use crate::scsi::Lun;
use crate::shard::stats::{new_histogram, SessionSnap, ShardStats, ZcShardSnap};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};

/// The shards' reports, merged and indexed.
#[derive(Default)]
pub struct Gathered {
    sessions: HashMap<(u32, u16), SessionSnap>,
    /// Per LU: read and write histograms summed over shards.
    latency: BTreeMap<(u32, Lun), (Histogram<u64>, Histogram<u64>)>,
    /// Zero-copy totals of every shard.
    zc_shards: ZcShardSnap,
    /// Each shard's resources, in shard order.
    resources: Vec<crate::shard::stats::ShardResources>,
}

impl Gathered {
    /// Merges every shard's report.
    pub fn new(reports: Vec<ShardStats>) -> Gathered {
        let mut g = Gathered {
            zc_shards: stat_zerocopy::sum_shards(reports.iter().map(|r| &r.zc)),
            ..Gathered::default()
        };
        for r in reports {
            g.resources.push(r.resources);
            for s in r.sessions {
                g.sessions.insert((s.tid, s.tsih), s);
            }
            for l in r.latency {
                let (rd, wr) = g
                    .latency
                    .entry((l.tid, l.lun))
                    .or_insert_with(|| (new_histogram(), new_histogram()));
                // Same bounds on every shard, so adding cannot fail.
                let _ = rd.add(&l.read);
                let _ = wr.add(&l.write);
            }
        }
        g
    }

    fn lu_counters(&self, tid: u32, tsih: u16, lun: Lun) -> LuCounters {
        self.sessions
            .get(&(tid, tsih))
            .and_then(|s| s.lus.iter().find(|(l, _)| *l == lun))
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    fn conn_counters(&self, tid: u32, tsih: u16, cid: u16) -> ConnCounters {
        self.sessions
            .get(&(tid, tsih))
            .filter(|s| s.cid == cid)
            .map(|s| s.conn)
            .unwrap_or_default()
    }
}

fn lu_line(tid: u32, lun: Lun, tsih: u16, c: LuCounters) -> LuStatLine {
    LuStatLine {
        tid,
        lun: lun.0,
        sid: u64::from(tsih),
        c,
    }
}

fn latency_line(tid: u32, lun: Lun, op: &'static str, h: &Histogram<u64>) -> LatencyLine {
    let us = |ns: u64| ns as f64 / 1000.0;
    LatencyLine {
        tid,
        lun: lun.0,
        op,
        cmds: h.len(),
        mean_us: h.mean() / 1000.0,
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

/// sys, target and lu stat: one line per (LU, session) of the selection, then the latency
/// table of the selected LUs that have samples.
pub fn lu_report(cfg: &Config, g: &Gathered, tid: Option<u32>, lun: Option<Lun>) -> String {
    let mut lines = Vec::new();
    let mut latency = Vec::new();
    for (t_id, t) in cfg
        .targets
        .iter()
        .filter(|(t, _)| tid.is_none() || tid == Some(**t))
    {
        for l in t.luns.keys().filter(|l| lun.is_none() || lun == Some(**l)) {
            for s in &t.sessions {
                lines.push(lu_line(*t_id, *l, s.tsih, g.lu_counters(*t_id, s.tsih, *l)));
            }
            if let Some((rd, wr)) = g.latency.get(&(*t_id, *l)) {
                for (op, h) in [("read", rd), ("write", wr)] {
                    if !h.is_empty() {
                        latency.push(latency_line(*t_id, *l, op, h));
                    }
                }
            }
        }
    }
    let mut out = show::lu_stats(&lines);
    if !latency.is_empty() {
        out.push('\n');
        out.push_str(&show::latency_table(&latency));
    }
    if lun.is_none() {
        // sys and target stat: the zero-copy table of the selected targets' connections.
        let sessions: Vec<&SessionSnap> = g
            .sessions
            .values()
            .filter(|s| tid.is_none_or(|t| t == s.tid))
            .collect();
        push_section(
            &mut out,
            &zc_table(sessions, tid.is_none().then_some(&g.zc_shards)),
        );
    }
    // What a remote store adds (a curve LU's connections and RPCs), only when non-idle.
    for (t_id, t) in cfg
        .targets
        .iter()
        .filter(|(t, _)| tid.is_none() || tid == Some(**t))
    {
        for (l, u) in t
            .luns
            .iter()
            .filter(|(l, _)| lun.is_none() || lun == Some(**l))
        {
            let Some(b) = u.backing() else { continue };
            if let Some(text) = b.stat_lines().filter(|t| !t.is_empty()) {
                out.push_str(&format!("\nLUN {t_id}/{} {}:\n{text}", l.0, b.bstype()));
            }
        }
    }
    out
}

/// The zero-copy table, rows in (tid, sid, cid) order.
fn zc_table(mut sessions: Vec<&SessionSnap>, shards: Option<&ZcShardSnap>) -> String {
    sessions.sort_by_key(|s| (s.tid, s.tsih, s.cid));
    stat_zerocopy::zc_table(&sessions, shards)
}

/// Appends an extra table after an empty line; nothing when it is empty.
fn push_section(out: &mut String, section: &str) {
    if !section.is_empty() {
        out.push('\n');
        out.push_str(section);
    }
}

/// sys stat in test mode (`CURVE_TGT_TEST_ENGINES=1`): after tgt's lines, one line per
/// shard with the buffers it has out of its pool and its backend operations in flight, so
/// tests can check that an aborted or cancelled operation released what it held. Never
/// printed otherwise (the output stays tgt's).
pub fn shard_resources(g: &Gathered) -> String {
    if !crate::backing::delay::enabled() {
        return String::new();
    }
    let mut out = String::from("\n");
    for (i, r) in g.resources.iter().enumerate() {
        out.push_str(&format!(
            "Shard {i}: buffers_in_use={} buffer_bytes_in_use={} backend_ops={} connections={} timers={} write_budget_bytes={} backlog_pauses={}\n",
            r.buffers_in_use, r.buffer_bytes_in_use, r.backend_ops, r.connections, r.timers,
            r.write_budget_bytes, r.backlog_pauses
        ));
    }
    out
}

/// session stat: the session's LU lines in tgt's nexus order, then its connection lines.
pub fn session_report(cfg: &Config, g: &Gathered, sid: u64) -> Result<String, TgtadmError> {
    let (tid, s) = cfg.session_by_tsih(sid).ok_or(TgtadmError::NoSession)?;
    let lus: Vec<_> = s
        .lu_order
        .iter()
        .map(|l| lu_line(tid, *l, s.tsih, g.lu_counters(tid, s.tsih, *l)))
        .collect();
    let conns: Vec<_> = s
        .conns
        .iter()
        .map(|c| conn_line(s.tsih, c.cid, g.conn_counters(tid, s.tsih, c.cid)))
        .collect();
    let mut out = show::session_stats(&lus, &conns);
    let mine: Vec<&SessionSnap> = g.sessions.get(&(tid, s.tsih)).into_iter().collect();
    push_section(&mut out, &zc_table(mine, None));
    Ok(out)
}

/// conn stat: one connection's line.
pub fn conn_report(cfg: &Config, g: &Gathered, sid: u64, cid: u32) -> Result<String, TgtadmError> {
    let (tid, s) = cfg.session_by_tsih(sid).ok_or(TgtadmError::NoSession)?;
    let c = s
        .conns
        .iter()
        .find(|c| u32::from(c.cid) == cid)
        .ok_or(TgtadmError::NoConnection)?;
    let line = conn_line(s.tsih, c.cid, g.conn_counters(tid, s.tsih, c.cid));
    Ok(show::conn_stats(&[line]))
}

fn conn_line(tsih: u16, cid: u16, c: ConnCounters) -> ConnStatLine {
    ConnStatLine { tsih, cid, c }
}
