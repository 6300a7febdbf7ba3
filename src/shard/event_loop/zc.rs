//! The shard's zero-copy glue: the event-loop steps that drive a connection's [`ZcLink`]
//! (policy in `shard/zerocopy/policy.rs`, batch lifetimes in `inflight.rs`). Kept apart from
//! the rest of the loop so the send path reads the same with zero-copy on or off.
//!
//! - A send is zero-copy when the connection is in zero-copy mode and its batch carries a
//!   Data-In payload at or above the threshold (`Shard::flush` asks the policy).
//! - Its batch, once fully sent, waits in `zc.inflight` until every zero-copy send before it
//!   is notified: a second CQE with `IORING_CQE_F_NOTIF` (uring engine), or an error-queue
//!   message read by a `recvmsg(MSG_ERRQUEUE)` on the same ring (msg engine).
//! - A refusal (ENOBUFS, ENOMEM, EPERM, no opcode) sends the same bytes again by copy and
//!   leaves the connection in copy mode; so does a notification saying the kernel copied.
//! - A closing connection keeps its slot until nothing is outstanding; after
//!   `DRAIN_GRACE_NS` its TCP connection is reset so the kernel drops the segments (and the
//!   pages) the peer will never acknowledge.

use super::super::zerocopy::link::{
    enable_so_zerocopy, reset_tcp, Drain, SendKind, ZcLink, DRAIN_GIVE_UP_NS, DRAIN_GRACE_NS,
    IORING_NOTIF_USAGE_ZC_COPIED,
};
use super::super::zerocopy::policy::SendErrorAction;
use super::super::zerocopy::Engine;
use super::{entry, OpKind, Shard, Token};
use io_uring::{cqueue, opcode};
use std::os::fd::AsRawFd;

/// Marks the user_data of an error-queue read's cancellation (its own CQE is ignored).
const CANCEL_SLOT: u16 = 0xffff;
/// Most error-queue messages read per connection per drain tick.
const DRAIN_READS_PER_TICK: usize = 256;

impl Shard {
    /// A new connection's zero-copy state (the msg engine needs `SO_ZEROCOPY` on the socket).
    pub(super) fn new_zc_link(
        &self,
        stream: &std::net::TcpStream,
        peer: std::net::SocketAddr,
    ) -> ZcLink {
        let supported = self.zc_kernel.supports(self.zc_cfg.engine);
        let mut zc = ZcLink::new(&self.zc_cfg, supported, self.zc_kernel.report_usage);
        if zc.policy.mode() == super::super::zerocopy::policy::Mode::ZeroCopy
            && self.zc_cfg.engine == Engine::Msg
        {
            if let Err(e) = enable_so_zerocopy(stream.as_raw_fd()) {
                if let Some(line) = zc.policy.unsupported() {
                    tracing::warn!(peer = %peer, "{line} (SO_ZEROCOPY: {e})");
                }
            }
        }
        zc
    }

    /// A send's completion as zero-copy sees it: counts its bytes, and for a refused
    /// zero-copy send switches to copy mode and resends. Returns true when it handled the
    /// completion entirely.
    pub(super) fn zc_send_done(&mut self, ci: u16, res: i32, flags: u32) -> bool {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return true;
        };
        let kind = std::mem::replace(&mut c.zc.send, SendKind::Copy);
        let SendKind::ZeroCopy { engine, id } = kind else {
            if res > 0 {
                c.zc.policy.on_sent(false, res as usize);
            }
            return false;
        };
        if let Some(id) = id {
            // No IORING_CQE_F_MORE: no notification will follow (the send failed early).
            if !cqueue::more(flags) {
                c.zc.inflight.complete(id);
                drop(c.zc.inflight.released());
            }
        }
        if res < 0 {
            let errno = -res;
            if errno == libc::EAGAIN || errno == libc::EINTR {
                return false;
            }
            return match c.zc.policy.on_send_error(errno) {
                SendErrorAction::ResendByCopy { log } => {
                    if let Some(line) = log {
                        tracing::warn!(peer = %c.peer, "{line}");
                    }
                    // The batch is still in `tx_batch` with `tx_sent` unchanged: the next
                    // flush sends the same bytes, now by copy.
                    self.mark(ci);
                    true
                }
                SendErrorAction::NotZeroCopy => false,
            };
        }
        c.zc.policy.on_sent(true, res as usize);
        if engine == Engine::Msg && res > 0 {
            // The kernel numbered this sendmsg; its notification comes on the error queue.
            c.zc.inflight.issue();
            self.arm_errq(ci);
        }
        false
    }

    /// A uring zero-copy notification (`IORING_CQE_F_NOTIF`): the send named in the token
    /// no longer reads its pages.
    pub(super) fn on_zc_notif(&mut self, t: Token, res: i32) {
        let ci = t.conn;
        let Some(c) = self.conn_mut(t) else { return };
        let id = (u32::from(t.task_slot) << 16) | u32::from(t.task_gen);
        c.zc.inflight.complete(id);
        let copied = c.zc.report_usage && res & IORING_NOTIF_USAGE_ZC_COPIED != 0;
        if let Some(line) = c.zc.policy.on_notification(copied) {
            tracing::warn!(peer = %c.peer, "{line}");
        }
        drop(c.zc.inflight.released());
        self.mark(ci);
    }

    /// Arms the msg engine's error-queue read, if none is in flight.
    pub(super) fn arm_errq(&mut self, ci: u16) {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        if c.zc.errq_inflight || c.closing {
            return;
        }
        let e = c.zc.errq_entry(c.stream.as_raw_fd());
        let tok = self.token(OpKind::ErrQueue, ci, None);
        self.push(entry(e, tok));
    }

    /// An error-queue read completed: a `MSG_ZEROCOPY` notification (a range of sends).
    pub(super) fn on_errqueue(&mut self, t: Token, res: i32) {
        if t.task_slot == CANCEL_SLOT {
            return;
        }
        let ci = t.conn;
        let Some(c) = self.conn_mut(t) else { return };
        c.zc.errq_inflight = false;
        if res >= 0 {
            match c.zc.errq_parse() {
                Ok(n) => {
                    c.zc.inflight.complete_range(&n);
                    if let Some(line) = c.zc.policy.on_notification(n.copied) {
                        tracing::warn!(peer = %c.peer, "{line}");
                    }
                    drop(c.zc.inflight.released());
                }
                Err(e) => tracing::debug!(peer = %c.peer, "error queue: {e}"),
            }
        }
        let again = res >= 0 || res == -libc::EAGAIN || res == -libc::EINTR;
        if again && c.zc.inflight.outstanding() > 0 {
            // While closing, `zc_drain_tick` reads the queue instead (a socket error would
            // keep a ring read waking for nothing).
            self.arm_errq(ci);
        }
        self.mark(ci);
    }

    /// Whether a closing connection's slot may be freed; if not, starts its bounded drain.
    pub(super) fn zc_may_free(&mut self, ci: u16) -> bool {
        let now = self.now_ns();
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return true;
        };
        if c.zc.inflight.is_idle() && c.zc.errq_inflight {
            // Nothing left to read: stop the error-queue read so the slot can go.
            self.cancel_errq(ci);
            return false;
        }
        if c.zc.idle() {
            return true;
        }
        if c.zc.drain.is_none() {
            c.zc.drain = Some(Drain::Waiting { since_ns: now });
            self.zc_draining += 1;
            if c.zc.errq_inflight {
                self.cancel_errq(ci);
            }
        }
        false
    }

    fn cancel_errq(&mut self, ci: u16) {
        let target = self.token(OpKind::ErrQueue, ci, None).encode();
        let mut tok = self.token(OpKind::ErrQueue, ci, None);
        tok.task_slot = CANCEL_SLOT;
        let e = opcode::AsyncCancel::new(target).build();
        self.push(entry(e, tok));
    }

    /// Once a second while some closing connection waits for notifications: read the msg
    /// engine's error queue, reset connections past their grace period, give up (keeping
    /// the slot) past the last deadline.
    pub(super) fn zc_drain_tick(&mut self) {
        let now = self.now_ns();
        for ci in 0..self.conns.len() {
            let Some(c) = self.conns[ci].as_mut() else {
                continue;
            };
            let Some(drain) = c.zc.drain else { continue };
            let fd = c.stream.as_raw_fd();
            if c.zc.engine == Engine::Msg && !c.zc.errq_inflight {
                for _ in 0..DRAIN_READS_PER_TICK {
                    match c.zc.errq_read_now(fd) {
                        None => break,
                        Some(Ok(n)) => {
                            c.zc.inflight.complete_range(&n);
                            c.zc.policy.on_notification(n.copied);
                        }
                        Some(Err(_)) => {}
                    }
                }
                drop(c.zc.inflight.released());
            }
            if !c.zc.idle() {
                c.zc.drain = Some(match drain {
                    Drain::Waiting { since_ns } if now - since_ns > DRAIN_GRACE_NS => {
                        tracing::info!(
                            peer = %c.peer,
                            "zerocopy: {} sends unacknowledged at close, resetting the connection",
                            c.zc.inflight.outstanding()
                        );
                        reset_tcp(fd);
                        Drain::Reset { at_ns: now }
                    }
                    Drain::Reset { at_ns } if now - at_ns > DRAIN_GIVE_UP_NS => {
                        tracing::error!(
                            peer = %c.peer,
                            "zerocopy: {} notifications never came; keeping the slot and its buffers",
                            c.zc.inflight.outstanding()
                        );
                        Drain::GaveUp
                    }
                    d => d,
                });
            }
            self.mark(ci as u16);
        }
    }
}
