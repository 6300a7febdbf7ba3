//! The command window of one session (RFC 7143 §3.2.2.1, §4.2.2.1): which CmdSNs the target
//! accepts, in what order non-immediate requests are delivered, and the MaxCmdSN it
//! advertises.
//!
//! The window is counted in CmdSN space, not in tasks. Every CmdSN in [ExpCmdSN, MaxCmdSN]
//! is a slot the target has promised, whether its request has arrived or not; the requests
//! already delivered (below ExpCmdSN) and still running hold the rest of the depth. So a
//! request held behind a gap never shrinks the window it arrived in, MaxCmdSN never moves
//! backwards, and `running + (MaxCmdSN - ExpCmdSN + 1) <= depth` always holds, which is what
//! bounds the task table.

use crate::iscsi::serial::CmdSn;
use crate::iscsi::task::TaskRef;
use std::collections::VecDeque;

/// What to do with a request carrying a CmdSN.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Immediate, or exactly ExpCmdSN: deliver it now.
    Now,
    /// Inside the window but ahead of a gap: hold it until the gap fills.
    Ahead,
    /// Outside the window, or a duplicate of a CmdSN already received: silently ignored
    /// (RFC 7143 §3.2.2.1).
    Ignore,
}

/// A CmdSN received ahead of ExpCmdSN.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// Nothing with this CmdSN has arrived yet.
    Missing,
    /// A task waits here to be delivered in order.
    Task(TaskRef),
    /// A request that needs no ordering (NOP-Out, Text, Logout, task management) or a held
    /// task aborted meanwhile: the CmdSN is used, ExpCmdSN passes over it.
    Used,
}

/// One session's command window. Exists so the CmdSN rules live in one place with their
/// invariants, apart from the task and data bookkeeping.
#[derive(Debug)]
pub struct CmdWindow {
    exp: CmdSn,
    /// The highest MaxCmdSN computed (and so possibly advertised) so far.
    max: CmdSn,
    /// MaxQueueCmd: the most non-immediate requests the target holds at once.
    depth: u32,
    /// Non-immediate tasks delivered in order (below ExpCmdSN) and not finished.
    running: u32,
    /// Slots for CmdSNs ExpCmdSN + 1 .. ; only as long as the last one received ahead.
    ahead: VecDeque<Slot>,
}

impl CmdWindow {
    /// A window of `depth` starting at `exp` (the login's CmdSN). MaxCmdSN is what the final
    /// Login Response advertised: ExpCmdSN + depth - 1.
    pub fn new(exp: CmdSn, depth: u32) -> CmdWindow {
        let depth = depth.max(1);
        CmdWindow {
            exp,
            max: exp.plus(depth - 1),
            depth,
            running: 0,
            ahead: VecDeque::new(),
        }
    }

    /// ExpCmdSN.
    pub fn exp(&self) -> CmdSn {
        self.exp
    }

    /// MaxCmdSN. It only ever grows: as running tasks finish, or as ExpCmdSN passes requests
    /// that hold no slot. `depth - running == 0` gives ExpCmdSN - 1, a closed window.
    pub fn max(&self) -> CmdSn {
        // ExpCmdSN + free - 1, in serial arithmetic.
        let open = CmdSn(
            self.exp
                .0
                .wrapping_add(self.depth.saturating_sub(self.running))
                .wrapping_sub(1),
        );
        if open.gt(self.max) {
            open
        } else {
            self.max
        }
    }

    /// MaxCmdSN as stamped on an outgoing PDU: remembered, so it is never taken back.
    pub fn advertise(&mut self) -> CmdSn {
        self.max = self.max();
        self.max
    }

    /// Non-immediate tasks delivered and not finished.
    #[cfg(test)]
    pub fn running(&self) -> u32 {
        self.running
    }

    /// Tasks held ahead of a gap.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.ahead
            .iter()
            .filter(|s| matches!(s, Slot::Task(_)))
            .count()
    }

    /// Where a request with `cmd_sn` stands.
    pub fn admit(&self, immediate: bool, cmd_sn: CmdSn) -> Admit {
        if immediate {
            return Admit::Now;
        }
        // Checked before `== ExpCmdSN`: a closed window (MaxCmdSN = ExpCmdSN - 1) takes
        // nothing, not even ExpCmdSN (RFC 7143 §3.2.2.1).
        if cmd_sn.lt(self.exp) || cmd_sn.gt(self.max()) {
            return Admit::Ignore;
        }
        if cmd_sn == self.exp {
            return Admit::Now;
        }
        match self.slot(cmd_sn).and_then(|i| self.ahead.get(i)) {
            Some(Slot::Task(_) | Slot::Used) => Admit::Ignore,
            Some(Slot::Missing) | None => Admit::Ahead,
        }
    }

    /// The index in `ahead` of a CmdSN above ExpCmdSN.
    fn slot(&self, cmd_sn: CmdSn) -> Option<usize> {
        let d = cmd_sn.0.wrapping_sub(self.exp.0);
        (d >= 1 && d <= self.depth).then(|| d as usize - 1)
    }

    fn put(&mut self, cmd_sn: CmdSn, slot: Slot) {
        let Some(i) = self.slot(cmd_sn) else {
            debug_assert!(false, "put outside the window");
            return;
        };
        if self.ahead.len() <= i {
            self.ahead.resize(i + 1, Slot::Missing);
        }
        self.ahead[i] = slot;
    }

    /// Holds task `r` (admitted [`Admit::Ahead`]) until ExpCmdSN reaches `cmd_sn`.
    pub fn hold(&mut self, cmd_sn: CmdSn, r: TaskRef) {
        self.put(cmd_sn, Slot::Task(r));
    }

    /// Records a request admitted [`Admit::Ahead`] that was handled at once (it needs no
    /// ordering): ExpCmdSN will pass over its CmdSN.
    pub fn used_ahead(&mut self, cmd_sn: CmdSn) {
        self.put(cmd_sn, Slot::Used);
    }

    /// A held task was aborted: its CmdSN stays used (the initiator will not send it again),
    /// so it must not become a gap.
    pub fn drop_held(&mut self, r: TaskRef) {
        if let Some(s) = self.ahead.iter_mut().find(|s| **s == Slot::Task(r)) {
            *s = Slot::Used;
        }
    }

    /// The request with CmdSN == ExpCmdSN was delivered (`task`: it is a task that now
    /// runs). ExpCmdSN moves past it and past every request already held after it; the held
    /// tasks that become deliverable are pushed to `deliver`, in CmdSN order, and count as
    /// running from now on.
    pub fn delivered(&mut self, task: bool, deliver: &mut Vec<TaskRef>) {
        if task {
            self.running += 1;
        }
        self.exp = self.exp.next();
        // ahead[0] was ExpCmdSN + 1, which is ExpCmdSN now.
        while let Some(front) = self.ahead.pop_front() {
            match front {
                Slot::Missing => break,
                Slot::Task(r) => {
                    self.running += 1;
                    deliver.push(r);
                }
                Slot::Used => {}
            }
            self.exp = self.exp.next();
        }
        debug_assert!(self.running <= self.depth, "running beyond the window");
    }

    /// A delivered non-immediate task finished (or was aborted): its slot reopens.
    pub fn finished(&mut self) {
        debug_assert!(self.running > 0, "finished more than ran");
        self.running = self.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(slot: u32) -> TaskRef {
        TaskRef {
            slot,
            generation: 1,
        }
    }

    #[test]
    fn held_requests_do_not_shrink_the_window() {
        let mut w = CmdWindow::new(CmdSn(100), 512);
        assert_eq!(w.advertise(), CmdSn(611));
        for i in 1..=257u32 {
            assert_eq!(w.admit(false, CmdSn(100 + i)), Admit::Ahead, "{i}");
            w.hold(CmdSn(100 + i), r(i));
            assert_eq!(w.advertise(), CmdSn(611), "MaxCmdSN stays");
        }
        assert_eq!(
            w.admit(false, CmdSn(611)),
            Admit::Ahead,
            "last advertised slot"
        );
        assert_eq!(w.admit(false, CmdSn(612)), Admit::Ignore);
        let mut out = Vec::new();
        assert_eq!(w.admit(false, CmdSn(100)), Admit::Now);
        w.delivered(true, &mut out);
        assert_eq!(out, (1..=257).map(r).collect::<Vec<_>>());
        assert_eq!(w.exp(), CmdSn(358));
        assert_eq!(w.running(), 258);
        assert_eq!(w.advertise(), CmdSn(611));
        for _ in 0..258 {
            w.finished();
        }
        assert_eq!(w.advertise(), CmdSn(358 + 511));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut w = CmdWindow::new(CmdSn(10), 8);
        w.hold(CmdSn(12), r(1));
        assert_eq!(w.admit(false, CmdSn(12)), Admit::Ignore, "held already");
        w.used_ahead(CmdSn(13));
        assert_eq!(w.admit(false, CmdSn(13)), Admit::Ignore, "used already");
        assert_eq!(w.admit(false, CmdSn(11)), Admit::Ahead);
        assert_eq!(w.admit(false, CmdSn(9)), Admit::Ignore, "below ExpCmdSN");
        assert_eq!(w.admit(true, CmdSn(9)), Admit::Now, "immediate");
        let mut out = Vec::new();
        w.delivered(false, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.exp(), CmdSn(11));
        w.delivered(true, &mut out);
        assert_eq!(out, [r(1)]);
        assert_eq!(w.exp(), CmdSn(14), "past the held task and the used slot");
        assert_eq!(w.running(), 2);
    }

    #[test]
    fn an_aborted_held_task_leaves_no_gap() {
        let mut w = CmdWindow::new(CmdSn(0), 4);
        w.hold(CmdSn(1), r(1));
        w.drop_held(r(1));
        assert_eq!(w.held(), 0);
        let mut out = Vec::new();
        w.delivered(true, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.exp(), CmdSn(2));
    }

    #[test]
    fn a_full_window_closes_and_reopens_across_wrap() {
        let mut w = CmdWindow::new(CmdSn(u32::MAX - 1), 2);
        let mut out = Vec::new();
        w.delivered(true, &mut out);
        w.delivered(true, &mut out);
        assert_eq!(w.exp(), CmdSn(0));
        assert_eq!(w.advertise(), CmdSn(u32::MAX), "closed: ExpCmdSN - 1");
        assert_eq!(w.admit(false, CmdSn(1)), Admit::Ignore);
        assert_eq!(
            w.admit(false, CmdSn(0)),
            Admit::Ignore,
            "closed: not even ExpCmdSN"
        );
        assert_eq!(w.admit(true, CmdSn(0)), Admit::Now, "immediate");
        w.finished();
        assert_eq!(w.advertise(), CmdSn(0));
        assert_eq!(w.admit(false, CmdSn(0)), Admit::Now);
    }
}
