//! The admission section of `tgtadm --op stat --mode sys` (this target's addition, like the
//! latency and zero-copy tables): how many connections the budgets refused at accept or
//! closed at a deadline, and how many sessions were lost with a dead shard. Refusals are
//! logged through a per-peer rate limit, so the log alone cannot say how many there were;
//! these counts can. The section comes after tgt's lines behind an empty line, and only once
//! something was refused, closed or lost, so an untroubled target's output stays tgt's.

use crate::shard::limits::AdmissionCounts;
use std::fmt::Write;

/// Title line of the section.
pub const TITLE: &str = "Connections refused or closed by a budget, since start:\n";

/// The section for `c`, or "" when every count is 0. Every line is printed once one count
/// is not, so a script finds the same lines each time.
pub fn section(c: &AdmissionCounts) -> String {
    if c.is_idle() {
        return String::new();
    }
    let mut b = String::from("\n");
    b.push_str(TITLE);
    let rows = [
        ("refused, portal connection limit", c.refused_portal),
        ("refused, shard connection limit", c.refused_shards),
        ("refused, no shard running", c.refused_no_shard),
        ("closed, login deadline", c.login_deadline),
        ("closed, Data-Out deadline", c.dataout_deadline),
        ("sessions lost with a dead shard", c.dead_shard_sessions),
        ("dead shards", c.dead_shards),
    ];
    for (what, n) in rows {
        let _ = writeln!(b, "{what}: {n}");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_counts_print_nothing() {
        assert_eq!(section(&AdmissionCounts::default()), "");
    }

    #[test]
    fn any_count_prints_every_line_after_an_empty_one() {
        let c = AdmissionCounts {
            refused_shards: 20,
            login_deadline: 1,
            ..AdmissionCounts::default()
        };
        let s = section(&c);
        assert!(s.starts_with("\nConnections refused or closed by a budget"));
        assert!(s.contains("refused, shard connection limit: 20\n"));
        assert!(s.contains("closed, login deadline: 1\n"));
        assert!(s.contains("closed, Data-Out deadline: 0\n"));
        assert_eq!(s.lines().count(), 9, "{s}");
    }
}
