//! What a connection slot carries for zero-copy: the policy, the batches the kernel may
//! still read, the send in flight's kind, and (for the `msg` engine) the buffers of the
//! `recvmsg(MSG_ERRQUEUE)` that reads notifications on the ring. The event loop drives it;
//! here are the pieces that do not need the loop: building the ring entries, and the close
//! path's bounded drain.

use super::errqueue::{self, ErrQueueError, ZcNotification, CONTROL_BYTES};
use super::inflight::Inflight;
use super::policy::ZcConn;
use super::{Engine, ZcConfig};
use crate::iscsi::tx::{Payload, TxPdu};
use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

/// `IORING_SEND_ZC_REPORT_USAGE` (6.2): the notification's result says whether the kernel
/// copied.
pub const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the kernel copied.
pub const IORING_NOTIF_USAGE_ZC_COPIED: i32 = 1 << 31;

/// How long a closing connection waits for its notifications before its TCP connection is
/// reset (which frees the queued segments, so the kernel lets go of the pages).
pub const DRAIN_GRACE_NS: u64 = 2_000_000_000;
/// How long after the reset to keep waiting before giving up (logged): the slot is then
/// freed, and the buffers of the sends never notified are leaked, never reused (the kernel
/// may still hold their pages).
pub const DRAIN_GIVE_UP_NS: u64 = 30_000_000_000;
/// Spare batch vectors a connection keeps (REVIEW.md item 5): a batch held for notifications
/// is replaced by a spare, and a released one becomes a spare, so steady zero-copy sending
/// allocates no vector per send. A handful covers the batches one socket buffer holds.
const MAX_SPARES: usize = 4;

/// A payload slice inside a registered buffer, sent by `SEND_ZC` naming its slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FixedSlice {
    pub ptr: *const u8,
    pub len: u32,
    pub slot: u16,
}

/// The send in flight on a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SendKind {
    Copy,
    /// Zero-copy; for the `uring` engine with the id its notification carries.
    ZeroCopy {
        engine: Engine,
        id: Option<u32>,
    },
}

/// The `recvmsg(MSG_ERRQUEUE)` buffers (boxed: the kernel writes them while it is in flight).
pub struct ErrQueueRecv {
    msg: libc::msghdr,
    control: [u8; CONTROL_BYTES],
}

/// A closing connection's drain of outstanding notifications.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Waiting since (shard clock, ns).
    Waiting { since_ns: u64 },
    /// The TCP connection was reset at this time; still waiting.
    Reset { at_ns: u64 },
    /// Gave up: the outstanding sends were abandoned and the slot may go.
    GaveUp,
}

/// What the drain tick does for a closing connection whose notifications are still out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DrainStep {
    Wait,
    /// Reset the TCP connection (the peer will not acknowledge what is queued).
    ResetTcp,
    /// Stop waiting: log, leak the held buffers and free the slot.
    GiveUp,
}

impl Drain {
    /// The next state at `now_ns` (shard clock), and what to do.
    pub fn tick(self, now_ns: u64) -> (Drain, DrainStep) {
        match self {
            Drain::Waiting { since_ns } if now_ns.saturating_sub(since_ns) > DRAIN_GRACE_NS => {
                (Drain::Reset { at_ns: now_ns }, DrainStep::ResetTcp)
            }
            Drain::Reset { at_ns } if now_ns.saturating_sub(at_ns) > DRAIN_GIVE_UP_NS => {
                (Drain::GaveUp, DrainStep::GiveUp)
            }
            d => (d, DrainStep::Wait),
        }
    }
}

/// One connection's zero-copy state.
pub struct ZcLink {
    pub policy: ZcConn,
    pub engine: Engine,
    /// Headers and digests by ordinary sends, payloads zero-copy, one send per run
    /// (`super::runs`).
    pub payload_only: bool,
    pub report_usage: bool,
    pub inflight: Inflight<Vec<TxPdu>>,
    pub send: SendKind,
    pub errq: Box<ErrQueueRecv>,
    pub errq_inflight: bool,
    /// The ring token of the error-queue read in flight (to cancel it at close).
    pub errq_token: Option<u64>,
    /// uring sends that failed but still get a notification: it says "copied" for the zero
    /// bytes they sent, which is not the kernel copying our data.
    pub failed_ids: Vec<u32>,
    pub drain: Option<Drain>,
    /// `SO_ZEROCOPY` is set on the socket (`msg` engine); cleared once the connection
    /// copies for good.
    pub so_zerocopy: bool,
    /// Empty batch vectors with their capacity, for the next batches.
    spares: Vec<Vec<TxPdu>>,
}

impl ZcLink {
    /// A new connection's state. `supported`: the engine works on this kernel.
    pub fn new(cfg: &ZcConfig, supported: bool, report_usage: bool) -> ZcLink {
        ZcLink {
            policy: ZcConn::new(cfg, supported),
            engine: cfg.engine,
            payload_only: cfg.payload_only,
            report_usage,
            inflight: Inflight::default(),
            send: SendKind::Copy,
            errq: Box::new(ErrQueueRecv {
                // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
                msg: unsafe { std::mem::zeroed() },
                control: [0; CONTROL_BYTES],
            }),
            errq_inflight: false,
            errq_token: None,
            failed_ids: Vec::new(),
            drain: None,
            so_zerocopy: false,
            spares: Vec::new(),
        }
    }

    /// An empty vector for the next batch: a spare when there is one.
    pub fn take_spare(&mut self) -> Vec<TxPdu> {
        self.spares.pop().unwrap_or_default()
    }

    /// Spare vectors kept.
    pub fn spares(&self) -> usize {
        self.spares.len()
    }

    /// Drops the batches no outstanding send can still read (their pooled buffers go back to
    /// the pool) and keeps their vectors as spares.
    pub fn recycle_released(&mut self) {
        let spares = &mut self.spares;
        self.inflight.release_each(|mut b| {
            b.clear();
            if spares.len() < MAX_SPARES {
                spares.push(b);
            }
        });
    }

    /// The drain gave up: forgets the outstanding sends and leaks the batches held for them
    /// (the kernel may still read their pages, so they must never return to the pool).
    /// Returns how many batches and payload bytes were leaked.
    pub fn abandon(&mut self) -> (usize, usize) {
        let held = self.inflight.abandon();
        let bytes = held
            .iter()
            .flat_map(|b| b.iter())
            .map(|p| p.wire_len())
            .sum();
        let n = held.len();
        std::mem::forget(held);
        self.failed_ids.clear();
        (n, bytes)
    }

    /// Whether the slot may be freed: nothing the kernel may still read or write.
    pub fn idle(&self) -> bool {
        self.inflight.is_idle() && !self.errq_inflight
    }

    /// The ring entry for a prepared send (`msg` filled by `Conn::prepare_send`): ordinary,
    /// `SENDMSG_ZC`, or `SENDMSG` with `MSG_ZEROCOPY`; or, for a payload in a registered
    /// buffer (`fixed`: its one slice and slot, uring engine), `SEND_ZC` with
    /// `IORING_RECVSEND_FIXED_BUF`. Records the send's kind.
    pub fn send_entry(
        &mut self,
        fd: RawFd,
        msg: *const libc::msghdr,
        zc: bool,
        fixed: Option<FixedSlice>,
    ) -> squeue::Entry {
        let flags = libc::MSG_NOSIGNAL as u32;
        if !zc {
            self.send = SendKind::Copy;
            return opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build();
        }
        match self.engine {
            Engine::Uring => {
                let id = self.inflight.issue();
                self.send = SendKind::ZeroCopy {
                    engine: Engine::Uring,
                    id: Some(id),
                };
                let ioprio = if self.report_usage {
                    IORING_SEND_ZC_REPORT_USAGE
                } else {
                    0
                };
                match fixed {
                    Some(f) => opcode::SendZc::new(types::Fd(fd), f.ptr, f.len)
                        .buf_index(Some(f.slot))
                        .flags(flags as i32)
                        .zc_flags(ioprio)
                        .build(),
                    None => opcode::SendMsgZc::new(types::Fd(fd), msg)
                        .flags(flags)
                        .ioprio(ioprio)
                        .build(),
                }
            }
            Engine::Msg => {
                self.send = SendKind::ZeroCopy {
                    engine: Engine::Msg,
                    id: None,
                };
                opcode::SendMsg::new(types::Fd(fd), msg)
                    .flags(flags | libc::MSG_ZEROCOPY as u32)
                    .build()
            }
        }
    }

    /// The ring entry reading one error-queue message (the `msg` engine's notifications).
    pub fn errq_entry(&mut self, fd: RawFd) -> squeue::Entry {
        let e = &mut *self.errq;
        e.msg.msg_control = e.control.as_mut_ptr().cast();
        e.msg.msg_controllen = CONTROL_BYTES;
        e.msg.msg_flags = 0;
        self.errq_inflight = true;
        opcode::RecvMsg::new(types::Fd(fd), &mut e.msg)
            .flags(libc::MSG_ERRQUEUE as u32)
            .build()
    }

    /// The error-queue message that just arrived.
    pub fn errq_parse(&self) -> Result<ZcNotification, ErrQueueError> {
        let e = &*self.errq;
        let n = e.msg.msg_controllen.min(CONTROL_BYTES);
        errqueue::parse(&e.control[..n], e.msg.msg_flags)
    }

    /// Reads one error-queue message without waiting (the close path's drain, where a
    /// pending ring read could spin on a socket error). `None` when the queue is empty.
    pub fn errq_read_now(&mut self, fd: RawFd) -> Option<Result<ZcNotification, ErrQueueError>> {
        let e = &mut *self.errq;
        e.msg.msg_control = e.control.as_mut_ptr().cast();
        e.msg.msg_controllen = CONTROL_BYTES;
        e.msg.msg_flags = 0;
        // SAFETY: `msg` points to our control buffer of CONTROL_BYTES; no iovec is read.
        let r = unsafe { libc::recvmsg(fd, &mut e.msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        (r >= 0).then(|| self.errq_parse())
    }
}

/// The largest Data-In payload (pooled read buffer) in a batch.
pub fn largest_payload(batch: &[TxPdu]) -> usize {
    batch
        .iter()
        .filter_map(|p| match &p.payload {
            Payload::Buf { len, .. } => Some(*len),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Resets a TCP connection in place (`connect(AF_UNSPEC)`: the kernel's `tcp_disconnect`),
/// which drops its queued segments, so the kernel releases the pages of zero-copy sends the
/// peer will never acknowledge.
pub fn reset_tcp(fd: RawFd) {
    // SAFETY: an all-zero sockaddr with family AF_UNSPEC is what disconnect expects.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `sa` is a valid sockaddr of the given length.
    unsafe {
        libc::connect(
            fd,
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
}

/// Asks for `MSG_ZEROCOPY` on a socket (`SO_ZEROCOPY` 1), or stops asking (0).
pub fn set_so_zerocopy(fd: RawFd, on: bool) -> std::io::Result<()> {
    let one: libc::c_int = on.into();
    // SAFETY: passes a valid c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ZEROCOPY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_waits_then_resets_then_gives_up_once() {
        let start = Drain::Waiting { since_ns: 100 };
        assert_eq!(start.tick(100 + DRAIN_GRACE_NS), (start, DrainStep::Wait));
        let t1 = 101 + DRAIN_GRACE_NS;
        let (reset, step) = start.tick(t1);
        assert_eq!(
            (reset, step),
            (Drain::Reset { at_ns: t1 }, DrainStep::ResetTcp)
        );
        assert_eq!(reset.tick(t1 + DRAIN_GIVE_UP_NS), (reset, DrainStep::Wait));
        let (gave_up, step) = reset.tick(t1 + DRAIN_GIVE_UP_NS + 1);
        assert_eq!((gave_up, step), (Drain::GaveUp, DrainStep::GiveUp));
        assert_eq!(gave_up.tick(u64::MAX), (Drain::GaveUp, DrainStep::Wait));
        // A clock that reads earlier than the start (never, but) waits.
        assert_eq!(start.tick(0), (start, DrainStep::Wait));
    }

    #[test]
    fn the_largest_data_in_payload_decides() {
        let pool = crate::buf::BufPool::new();
        let bhs = || crate::iscsi::pdu::Bhs::reject(crate::iscsi::pdu::RejectReason::ProtocolError);
        let buf = |n: usize| Payload::Buf {
            buf: pool.alloc(n),
            offset: 0,
            len: n,
        };
        let batch = vec![
            TxPdu::new(bhs(), Payload::Owned(vec![0; 50_000]), false, false),
            TxPdu::new(bhs(), buf(8192), false, false),
            TxPdu::new(bhs(), buf(32768), false, false),
            TxPdu::new(bhs(), Payload::None, false, false),
        ];
        // Owned bytes (login text, sense) never count: only pooled read buffers.
        assert_eq!(largest_payload(&batch), 32768);
        assert_eq!(largest_payload(&batch[..1]), 0);
    }
}
