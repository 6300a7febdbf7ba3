//! Response-hold policy: when an initiator is itself the bottleneck, hold a connection's
//! responses back a little so they go out in one larger sendmsg; and whether polling before
//! sleeping can pay. Both read how far the initiator is behind on our responses (the StatSN
//! we sent against the ExpStatSN of its latest command).

use super::conn::Phase;
use super::event_loop::Shard;
use super::ring::clock;
use super::slots::SlotKey;

/// Hold a connection's responses only while the initiator has at least this many responses
/// it has not processed yet.
pub const HOLD_MIN_BACKLOG: u32 = 32;
/// Longest hold per unprocessed response the initiator has (it has that much work queued).
pub const HOLD_NS_PER_BACKLOG: u64 = 1_000;
/// Longest hold at all.
pub const HOLD_MAX_NS: u64 = 500_000;
/// Send at once when this many PDUs are queued.
pub const HOLD_MAX_PDUS: usize = 256;
/// While every connection holds, wake for this many completions (or the deadline), so the
/// initiator's trickle of commands is gathered too instead of costing a wake-up each.
const HOLD_WAIT_EVENTS: usize = 64;
/// Poll only while some initiator has at most this many of our responses unprocessed (see
/// `Shard::worth_spinning`).
const SPIN_MAX_BACKLOG: u32 = 2;

impl Shard {
    /// How many completions to wait for while holding: only when every connection is
    /// holding may the wait outlast the next completion (a connection at low queue depth
    /// must be answered at once).
    pub(super) fn hold_wait_events(&self) -> usize {
        if self.holding.len() >= self.conns.len() {
            HOLD_WAIT_EVENTS
        } else {
            1
        }
    }

    /// Whether polling before sleeping can pay: some connection's initiator has processed
    /// (nearly) every response we sent, so its next command is what it is waiting to send
    /// (queue depth 1 to a few). When every initiator is behind on our responses (a deep
    /// queue, or one busy streaming Data-Out), it is the bottleneck, the next command comes
    /// when it catches up, and a poll would only burn the core.
    pub(super) fn worth_spinning(&self) -> bool {
        self.conns.iter().any(|(_, c)| match c.peer_exp_stat_sn {
            None => true,
            Some(exp) => {
                let backlog = c.stat_sn_sent.wrapping_add(1).wrapping_sub(exp);
                backlog <= SPIN_MAX_BACKLOG || backlog > 1 << 20
            }
        })
    }

    /// Marks connections whose hold has expired, so `service_dirty` sends their responses.
    pub(super) fn release_holds(&mut self) {
        let Some(d) = self.hold_deadline else { return };
        if d > clock() {
            return;
        }
        self.hold_deadline = None;
        for k in std::mem::take(&mut self.holding) {
            self.mark(k);
        }
    }

    /// Whether to hold a connection's queued responses back a little to send them in one
    /// larger batch. Only when the initiator itself is the bottleneck: its latest command's
    /// ExpStatSN shows it has not yet processed `backlog` responses we sent, so it has that
    /// much work queued and a short delay costs it nothing, while one sendmsg per few PDUs
    /// costs both sides a full TCP round of work per PDU. Never at low queue depth (an
    /// initiator at iodepth 1 has always processed every response when it sends a command).
    pub(super) fn hold(&mut self, k: SlotKey, now: u64) -> bool {
        let Some(c) = self.conns.get_mut(k) else {
            return false;
        };
        let queued = match &c.phase {
            Phase::Ffp(s) => s.out.len(),
            Phase::Login(_) => 0,
        };
        let Some(exp) = c.peer_exp_stat_sn else {
            return false;
        };
        let hold_ns = hold_ns(c.stat_sn_sent, exp, queued);
        let Some(hold_ns) = hold_ns.filter(|_| !c.close_after_flush) else {
            c.hold_deadline = None;
            return false;
        };
        let d = *c.hold_deadline.get_or_insert(now + hold_ns);
        if now >= d {
            c.hold_deadline = None;
            return false;
        }
        if !self.holding.contains(&k) {
            self.holding.push(k);
        }
        self.hold_deadline = Some(self.hold_deadline.map_or(d, |x| x.min(d)));
        true
    }
}

/// How long responses may be held back, given the last StatSN we sent, the initiator's latest
/// ExpStatSN and how many PDUs are queued: `None` to send at once.
pub fn hold_ns(stat_sn_sent: u32, peer_exp_stat_sn: u32, queued: usize) -> Option<u64> {
    // Responses sent that the initiator had not processed (serial arithmetic; a value past
    // 2^20 means ExpStatSN is ahead of or unrelated to ours, so no hold).
    let backlog = stat_sn_sent.wrapping_add(1).wrapping_sub(peer_exp_stat_sn);
    if queued == 0 || queued >= HOLD_MAX_PDUS || !(HOLD_MIN_BACKLOG..=1 << 20).contains(&backlog) {
        return None;
    }
    Some((u64::from(backlog) * HOLD_NS_PER_BACKLOG).min(HOLD_MAX_NS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_held_only_behind_an_initiator_backlog() {
        // iodepth 1: the initiator has processed everything we sent.
        assert_eq!(hold_ns(100, 101, 1), None);
        // A backlog below the threshold: send at once.
        assert_eq!(hold_ns(100, 101 - HOLD_MIN_BACKLOG + 1, 4), None);
        // At the threshold: hold, longer for a longer backlog, bounded.
        assert_eq!(
            hold_ns(100, 101 - HOLD_MIN_BACKLOG, 4),
            Some(u64::from(HOLD_MIN_BACKLOG) * HOLD_NS_PER_BACKLOG)
        );
        assert_eq!(hold_ns(5000, 1, 4), Some(HOLD_MAX_NS));
        // Across the StatSN wrap.
        assert_eq!(
            hold_ns(10, 10u32.wrapping_sub(99), 4),
            Some(100 * HOLD_NS_PER_BACKLOG)
        );
        // Nothing queued, or a full batch: no hold.
        assert_eq!(hold_ns(5000, 1, 0), None);
        assert_eq!(hold_ns(5000, 1, HOLD_MAX_PDUS), None);
        // ExpStatSN ahead of ours (or garbage): no hold.
        assert_eq!(hold_ns(100, 200, 4), None);
    }
}
