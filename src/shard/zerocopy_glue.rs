//! Where zero-copy Data-In meets the shard (policy in [`super::zerocopy::policy`], batch
//! lifetimes in [`super::zerocopy::inflight`]): the event-loop steps that drive a
//! connection's [`ZcLink`]. Kept apart so the send path reads the same with zero-copy on or
//! off.
//!
//! - A send is zero-copy when the connection is in zero-copy mode (or probing, for its first
//!   large payload) and its batch carries a Data-In payload at or above the threshold
//!   (`Shard::flush` asks [`Shard::zc_send_entry`]).
//! - Its batch, once fully sent, waits in `zc.inflight` until every zero-copy send before it
//!   is notified: a second CQE with `IORING_CQE_F_NOTIF` (uring engine), or an error-queue
//!   message read by a `recvmsg(MSG_ERRQUEUE)` on the same ring (msg engine).
//! - A refusal (ENOBUFS, ENOMEM, EPERM, no opcode) sends the same bytes again by copy and
//!   leaves the connection in copy mode; so does a notification saying the kernel copied.
//! - A closing connection keeps its slot until nothing is outstanding; after
//!   `DRAIN_GRACE_NS` its TCP connection is reset so the kernel drops the segments (and the
//!   pages) the peer will never acknowledge; `DRAIN_GIVE_UP_NS` later it stops waiting, leaks
//!   the buffers still held (never reused) and frees the slot.
//! - The `msg` engine clears `SO_ZEROCOPY` once a connection copies for good.

use super::event_loop::Shard;
use super::owners::{ConnOp, Cqe, Owner};
use super::ring::{clock, Ring};
use super::slots::SlotKey;
use super::timers::TimerOwner;
use super::zerocopy::fixed::FixedBufs;
use super::zerocopy::link::{
    largest_payload, reset_tcp, set_so_zerocopy, Drain, DrainStep, FixedSlice, SendKind, ZcLink,
    IORING_NOTIF_USAGE_ZC_COPIED,
};
use super::zerocopy::policy::SendErrorAction;
use super::zerocopy::probe::KernelSupport;
use super::zerocopy::runs::{cut_iov, largest_payload_in, run_at, RunKind};
use super::zerocopy::{Engine, ZcConfig};
use crate::buf::BufPool;
use crate::iscsi::tx::Payload;
use io_uring::squeue;
use std::os::fd::AsRawFd;

/// The drain tick's period.
const DRAIN_TICK_NS: u64 = 1_000_000_000;
/// Most error-queue messages read per connection per drain tick.
const DRAIN_READS_PER_TICK: usize = 256;

/// A shard's zero-copy settings, what its kernel supports, and its totals.
pub struct ZcShard {
    pub cfg: ZcConfig,
    pub kernel: KernelSupport,
    /// Counters of connections already freed.
    pub closed: super::zerocopy::policy::ZcCounters,
    /// Closing connections waiting for notifications (they need the drain tick).
    pub draining: usize,
    /// Connections whose drain gave up, and the batches they leaked.
    pub abandoned_conns: u64,
    pub abandoned_batches: u64,
    pub tick_armed: bool,
    /// Registered payload buffers (payload-only mode, `uring` engine).
    pub fixed: FixedBufs,
}

impl ZcShard {
    /// Probes the kernel (on a small ring of its own) and logs what will be used, once; opens
    /// the registered-buffer table on the shard's `ring` when payloads will use it.
    pub fn new(id: usize, cfg: ZcConfig, ring: &mut Ring, pool: &BufPool) -> ZcShard {
        let kernel = match io_uring::IoUring::new(2) {
            Ok(r) => KernelSupport::probe(&r),
            Err(_) => {
                KernelSupport::from_parts(&super::zerocopy::probe::uname_release(), None, None)
            }
        };
        if id == 0 && cfg.enabled {
            if kernel.supports(cfg.engine) {
                tracing::info!(
                    "zerocopy: engine {}, threshold {} bytes, kernel {} (report usage: {})",
                    cfg.engine.name(),
                    cfg.threshold_bytes,
                    kernel.release,
                    kernel.report_usage
                );
            } else {
                tracing::warn!(
                    "zerocopy: engine {} not supported by kernel {}, sending by copy",
                    cfg.engine.name(),
                    kernel.release
                );
            }
        }
        let wants_fixed = cfg.enabled
            && cfg.payload_only
            && cfg.fixed_buffers
            && cfg.engine == Engine::Uring
            && kernel.supports(Engine::Uring);
        let fixed = FixedBufs::open(id, wants_fixed, ring, pool);
        ZcShard {
            fixed,
            cfg,
            kernel,
            closed: Default::default(),
            draining: 0,
            abandoned_conns: 0,
            abandoned_batches: 0,
            tick_armed: false,
        }
    }

    /// A new connection's zero-copy state (the msg engine needs `SO_ZEROCOPY` on the socket).
    pub fn link(&self, stream: &std::net::TcpStream, peer: std::net::SocketAddr) -> ZcLink {
        let supported = self.kernel.supports(self.cfg.engine);
        let mut zc = ZcLink::new(&self.cfg, supported, self.kernel.report_usage);
        if zc.policy.zero_copy_possible() && self.cfg.engine == Engine::Msg {
            match set_so_zerocopy(stream.as_raw_fd(), true) {
                Ok(()) => zc.so_zerocopy = true,
                Err(e) => {
                    if let Some(line) = zc.policy.unsupported() {
                        tracing::warn!(peer = %peer, "{line} (SO_ZEROCOPY: {e})");
                    }
                }
            }
        }
        zc
    }
}

/// After a notification or a refusal: a `msg` connection that copies for good clears
/// `SO_ZEROCOPY`, so nothing of zero-copy stays on its socket (notifications still due
/// arrive all the same).
fn settle(c: &mut super::conn::Conn) {
    if c.zc.so_zerocopy && !c.zc.policy.zero_copy_possible() {
        c.zc.so_zerocopy = false;
        if let Err(e) = set_so_zerocopy(c.stream.as_raw_fd(), false) {
            tracing::debug!(peer = %c.peer, "clearing SO_ZEROCOPY: {e}");
        }
    }
}

impl Shard {
    /// The ring entry and owner for a connection's prepared send: by copy, or zero-copy when
    /// the policy says so for this batch.
    pub(super) fn zc_send_entry(&mut self, k: SlotKey) -> Option<(squeue::Entry, Owner)> {
        let c = self.conns.get_mut(k)?;
        let (zc, fixed) = if c.zc.payload_only {
            self.zc_run(k)?
        } else {
            (c.zc.policy.on_submit(largest_payload(&c.tx_batch)), None)
        };
        let c = self.conns.get_mut(k)?;
        let fd = c.stream.as_raw_fd();
        let msg: *const libc::msghdr = &*c.msg;
        let e = c.zc.send_entry(fd, msg, zc, fixed);
        let op = match c.zc.send {
            SendKind::ZeroCopy { id: Some(id), .. } => ConnOp::SendZc { id },
            _ => ConnOp::Send,
        };
        Some((e, Owner::Conn { conn: k, op }))
    }

    /// Payload-only mode: cuts the prepared send (the batch from its first unsent byte) to
    /// the run that starts there (`zerocopy::runs`, which explains why byte order holds),
    /// and says whether it goes zero-copy and, for a payload in a registered buffer, from
    /// which slot.
    fn zc_run(&mut self, k: SlotKey) -> Option<(bool, Option<FixedSlice>)> {
        let c = self.conns.get_mut(k)?;
        let policy = &c.zc.policy;
        let run = run_at(&c.tx_batch, c.tx_sent, |len| policy.wants_zerocopy(len))?;
        c.msg.msg_iovlen = cut_iov(&mut c.iov, run.len);
        c.msg.msg_iov = c.iov.as_mut_ptr();
        let RunKind::ZeroCopy { pdu } = run.kind else {
            // By copy: counted as a large send when it carries a large payload (copy mode).
            let largest = largest_payload_in(&c.tx_batch, &run);
            if !c.zc.policy.wants_zerocopy(largest) {
                c.zc.policy.on_submit(largest);
            }
            return Some((false, None));
        };
        let Payload::Buf { buf, len, .. } = &c.tx_batch[pdu].payload else {
            return Some((false, None));
        };
        if !c.zc.policy.on_submit(*len) {
            return Some((false, None));
        }
        let (Engine::Uring, Ok(n)) = (c.zc.engine, u32::try_from(c.iov[0].iov_len)) else {
            return Some((true, None));
        };
        let ptr = c.iov[0].iov_base as *const u8;
        let buf = buf.clone();
        // A buffer registered before a refusal keeps its slot (`FixedState::Failed` only
        // stops new registrations).
        let fixed = self
            .zc
            .fixed
            .slot_for(self.id, &mut self.ring, &self.pool, &buf)
            .map(|slot| FixedSlice { ptr, len: n, slot });
        if fixed.is_some() {
            self.zc.fixed.sent();
        }
        Some((true, fixed))
    }

    /// A send's completion as zero-copy sees it: counts its bytes, and for a refused
    /// zero-copy send switches to copy mode and resends. Returns true when it handled the
    /// completion entirely.
    pub(super) fn zc_send_done(&mut self, k: SlotKey, cqe: &Cqe) -> bool {
        let Some(c) = self.conns.get_mut(k) else {
            return true;
        };
        let res = cqe.res;
        let kind = std::mem::replace(&mut c.zc.send, SendKind::Copy);
        let SendKind::ZeroCopy { engine, id } = kind else {
            if res > 0 {
                c.zc.policy.on_sent(false, res as usize);
            }
            return false;
        };
        if let Some(id) = id {
            if !cqe.more() {
                // No IORING_CQE_F_MORE: no notification will follow (the send failed early).
                c.zc.inflight.complete(id);
                c.zc.recycle_released();
            } else if res < 0 {
                c.zc.failed_ids.push(id);
            }
        }
        if res < 0 {
            let errno = -res;
            if errno == libc::EAGAIN || errno == libc::EINTR {
                // Nothing moved; the next flush sends the same bytes (a probe probes again).
                c.zc.policy.on_send_retry();
                return false;
            }
            return match c.zc.policy.on_send_error(errno) {
                SendErrorAction::ResendByCopy { log } => {
                    if let Some(line) = log {
                        tracing::warn!(peer = %c.peer, "{line}");
                    }
                    settle(c);
                    // The batch is still in `tx_batch` with `tx_sent` unchanged: the next
                    // flush sends the same bytes, now by copy.
                    c.send_inflight = false;
                    self.mark(k);
                    true
                }
                SendErrorAction::NotZeroCopy => false,
            };
        }
        c.zc.policy.on_sent(true, res as usize);
        if res > 0 {
            // The batch's pages went to the kernel: it waits for the notifications.
            c.tx_zc = true;
        }
        if engine == Engine::Msg && res > 0 {
            // The kernel numbered this sendmsg; its notification comes on the error queue.
            c.zc.inflight.issue();
            self.arm_errq(k);
        }
        false
    }

    /// A uring zero-copy notification (`IORING_CQE_F_NOTIF`): send `id` no longer reads
    /// its pages.
    pub(super) fn on_zc_notif(&mut self, k: SlotKey, id: u32, res: i32) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.zc.inflight.complete(id);
        let failed = match c.zc.failed_ids.iter().position(|f| *f == id) {
            Some(i) => {
                c.zc.failed_ids.swap_remove(i);
                true
            }
            None => false,
        };
        if failed {
            c.zc.policy.on_failed_send_notification();
        } else {
            let copied = c.zc.report_usage && res & IORING_NOTIF_USAGE_ZC_COPIED != 0;
            if let Some(line) = c.zc.policy.on_notification(copied) {
                tracing::warn!(peer = %c.peer, "{line}");
            }
        }
        c.zc.recycle_released();
        self.mark(k);
    }

    /// Arms the msg engine's error-queue read, if none is in flight.
    fn arm_errq(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.zc.errq_inflight || c.closing {
            return;
        }
        let e = c.zc.errq_entry(c.stream.as_raw_fd());
        let owner = Owner::Conn {
            conn: k,
            op: ConnOp::ErrQueue,
        };
        // SAFETY: the msghdr and control buffer are boxed in the connection's ZcLink, which
        // is not freed while `errq_inflight` is set (`Conn::busy`).
        let token = unsafe { self.ring.push(e, owner) };
        if let Some(c) = self.conns.get_mut(k) {
            c.zc.errq_token = Some(token);
        }
    }

    /// An error-queue read completed: a `MSG_ZEROCOPY` notification (a range of sends).
    pub(super) fn on_errqueue(&mut self, k: SlotKey, res: i32) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.zc.errq_inflight = false;
        c.zc.errq_token = None;
        if res >= 0 {
            match c.zc.errq_parse() {
                Ok(n) => {
                    c.zc.inflight.complete_range(&n);
                    if let Some(line) = c.zc.policy.on_notification(n.copied) {
                        tracing::warn!(peer = %c.peer, "{line}");
                    }
                    settle(c);
                    c.zc.recycle_released();
                }
                Err(e) => tracing::debug!(peer = %c.peer, "error queue: {e}"),
            }
        }
        let again = res >= 0 || res == -libc::EAGAIN || res == -libc::EINTR;
        if again && c.zc.inflight.outstanding() > 0 {
            // While closing, `zc_drain_tick` reads the queue instead (a socket error would
            // keep a ring read waking for nothing).
            self.arm_errq(k);
        }
        self.mark(k);
    }

    /// Called for a closing connection that is otherwise free to go: starts its bounded
    /// drain when notifications are outstanding, and stops a pending error-queue read.
    pub(super) fn zc_closing(&mut self, k: SlotKey) {
        let now = clock();
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.zc.idle() {
            return;
        }
        if let (true, Some(t)) = (c.zc.inflight.is_idle(), c.zc.errq_token.take()) {
            // Nothing left to read: stop the error-queue read so the slot can go.
            self.ring.cancel(t);
            return;
        }
        if c.zc.drain.is_none() {
            c.zc.drain = Some(Drain::Waiting { since_ns: now });
            let t = c.zc.errq_token.take();
            self.zc.draining += 1;
            if let Some(t) = t {
                self.ring.cancel(t);
            }
            self.arm_zc_tick();
        }
    }

    /// A connection is being freed: its counters join the shard's.
    pub(super) fn zc_freed(&mut self, link: &ZcLink) {
        self.zc.closed.add(&link.policy.counters);
        if link.drain.is_some() {
            self.zc.draining -= 1;
        }
    }

    fn arm_zc_tick(&mut self) {
        if !self.zc.tick_armed && self.zc.draining > 0 {
            self.timers
                .insert(clock() + DRAIN_TICK_NS, TimerOwner::ZcDrainTick);
            self.zc.tick_armed = true;
        }
    }

    /// Once a second while some closing connection waits for notifications: read the msg
    /// engine's error queue, reset connections past their grace period, give up (keeping
    /// the slot) past the last deadline.
    pub(super) fn zc_drain_tick(&mut self) {
        self.zc.tick_armed = false;
        let now = clock();
        for k in self.conns.keys() {
            let Some(c) = self.conns.get_mut(k) else {
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
                c.zc.recycle_released();
            }
            if !c.zc.idle() {
                let (next, step) = drain.tick(now);
                c.zc.drain = Some(next);
                match step {
                    DrainStep::Wait => {}
                    DrainStep::ResetTcp => {
                        tracing::info!(
                            peer = %c.peer,
                            "zerocopy: {} sends unacknowledged at close, resetting the connection",
                            c.zc.inflight.outstanding()
                        );
                        reset_tcp(fd);
                    }
                    DrainStep::GiveUp => {
                        let outstanding = c.zc.inflight.outstanding();
                        let (batches, bytes) = c.zc.abandon();
                        tracing::error!(
                            peer = %c.peer,
                            "zerocopy: {outstanding} notifications never came; freeing the slot, \
                             leaking {batches} batches ({bytes} bytes) the kernel may still read"
                        );
                        self.zc.abandoned_conns += 1;
                        self.zc.abandoned_batches += batches as u64;
                        // Their notification CQEs, if they ever come, find no owner.
                        self.ring.owners.release_where(|o| {
                            matches!(o, Owner::Conn { conn, op: ConnOp::SendZc { .. } } if *conn == k)
                        });
                    }
                }
            }
            self.mark(k);
        }
        self.arm_zc_tick();
    }
}
