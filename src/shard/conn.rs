//! A connection as its shard holds it: the socket, the receive buffer the PDU framer reads,
//! the batch of PDUs in the current send (kept until the kernel is done with its bytes), the
//! backend operations its tasks have in flight, and the protocol phase (login, then full
//! feature).

use super::slots::SlotKey;
use super::timers::TimerKey;
use super::zerocopy::link::ZcLink;
use crate::backing::engine::OpId;
use crate::iscsi::login::LoginSm;
use crate::iscsi::session::Session;
use crate::iscsi::tx::TxPdu;
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

/// Receive buffer of a new or idle connection: a login PDU, or a few small commands. An idle
/// connection holds no more than this (plus what a partly received PDU needs), so thousands of
/// idle sessions or half-open health checks cost little memory.
pub const RX_BUF_MIN: usize = 2 * 1024;
/// How long after its last growth a receive buffer may shrink back.
pub const RX_SHRINK_AFTER_NS: u64 = 1_000_000_000;
/// A receive buffer that keeps filling up is doubled up to this size (room for many PDUs per
/// receive on a busy connection); a PDU larger than this still gets the room it needs.
pub const RX_BUF_BUSY: usize = 256 * 1024;
/// A receive buffer larger than `RX_BUF_MIN` is shrunk back when a receive is armed with
/// nothing buffered and the previous receive used less than 1/`RX_SHRINK_RATIO` of the room.
const RX_SHRINK_RATIO: usize = 16;
/// Most PDUs gathered into one sendmsg.
pub const TX_BATCH_PDUS: usize = 512;
/// Most iovecs in one sendmsg (the kernel's UIO_MAXIOV).
pub const TX_MAX_IOV: usize = 1024;

/// The protocol phase.
pub enum Phase {
    /// Login in progress; login responses wait in `login_out`.
    Login(Box<LoginSm>),
    /// Full feature phase.
    Ffp(Box<Session>),
}

/// One connection on a shard.
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub phase: Phase,
    /// PDUs to send while in login phase.
    pub login_out: VecDeque<TxPdu>,
    /// Received bytes; `rx_len` of them are valid.
    pub rx: Vec<u8>,
    pub rx_len: usize,
    /// Bytes the latest receive returned, and the room it was offered (sizes `rx`).
    rx_last: usize,
    rx_offered: usize,
    /// When the receive buffer last grew (shard clock, ns): it shrinks back only after a
    /// quiet second, so a busy connection whose receives vary in size does not reallocate
    /// its buffer (and its send vectors) over and over.
    rx_grown_ns: u64,
    pub recv_inflight: bool,
    /// The PDUs of the send in flight, and how many of their bytes already went out.
    pub tx_batch: Vec<TxPdu>,
    pub tx_sent: usize,
    /// Some bytes of the current batch left by a zero-copy send: it must wait for the
    /// notifications when it is done (a batch sent only by copy is free at once).
    pub tx_zc: bool,
    pub iov: Vec<libc::iovec>,
    pub msg: Box<libc::msghdr>,
    pub send_inflight: bool,
    /// Zero-copy Data-In (`shard/zerocopy`): policy and counters, and the sent batches the
    /// kernel may still read, kept until the notifications of the zero-copy sends before
    /// them arrived (`IORING_CQE_F_NOTIF`, or the error queue for `MSG_ZEROCOPY`).
    pub zc: ZcLink,
    /// Backend operations in flight, by task slot: the connection is freed only when none is.
    pub ops: Vec<Option<OpId>>,
    pub ops_inflight: u32,
    /// Until login completes: the timer that closes the connection if it has not by then.
    pub login_timer: Option<TimerKey>,
    /// Closing: no new receives; freed when nothing is in flight.
    pub closing: bool,
    /// Close once the send queue drains (logout, login failure).
    pub close_after_flush: bool,
    /// The login waits for its target's redirect callback: no PDU is parsed and no receive
    /// armed until the result is in (what the initiator sends meanwhile waits in the socket).
    pub callback_running: bool,
    /// This connection's slot and generation.
    pub key: SlotKey,
    /// The initiator's ExpStatSN from its latest SCSI Command: every status before it has
    /// been processed by the initiator.
    pub peer_exp_stat_sn: Option<u32>,
    /// StatSN of the last status-bearing PDU handed to the socket.
    pub stat_sn_sent: u32,
    /// While responses are held back to batch them: when they must go out (shard clock, ns).
    pub hold_deadline: Option<u64>,
    /// Bytes received and sent on the socket, login included (`--op stat`).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Conn {
    /// A new connection starting login.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        login: LoginSm,
        key: SlotKey,
        zc: ZcLink,
    ) -> Conn {
        // SAFETY: msghdr is a plain C struct for which all-zero is a valid empty value.
        let msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        Conn {
            stream,
            peer,
            local,
            phase: Phase::Login(Box::new(login)),
            login_out: VecDeque::new(),
            rx: vec![0u8; RX_BUF_MIN],
            rx_len: 0,
            rx_last: 0,
            rx_offered: 0,
            rx_grown_ns: 0,
            recv_inflight: false,
            // Both grow with the first sends and shrink again when the connection idles.
            tx_batch: Vec::new(),
            tx_sent: 0,
            tx_zc: false,
            iov: Vec::new(),
            msg,
            send_inflight: false,
            zc,
            ops: Vec::new(),
            ops_inflight: 0,
            login_timer: None,
            closing: false,
            close_after_flush: false,
            callback_running: false,
            key,
            peer_exp_stat_sn: None,
            stat_sn_sent: 0,
            hold_deadline: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// Accounts a completed receive of `n` bytes into `rx`.
    pub fn received(&mut self, n: usize) {
        self.rx_len += n;
        self.rx_bytes += n as u64;
        self.rx_last = n;
    }

    /// Whether a receive ended inside a PDU of a logged-in connection that nothing stops
    /// from reading on: then `recv_now` may take the rest without waiting for the ring.
    pub fn wants_rest_now(&self) -> bool {
        self.rx_len > 0
            && self.rx_len < self.rx.len()
            && matches!(self.phase, Phase::Ffp(_))
            && !(self.recv_inflight || self.closing || self.close_after_flush)
            && !self.callback_running
    }

    /// One non-blocking `recv` into the free room after the buffered bytes. Returns whether
    /// it took any; an error or end of stream is not acted on here (the next ring receive
    /// meets it again). Call only with no receive in flight (`wants_rest_now`).
    pub fn recv_now(&mut self) -> bool {
        debug_assert!(!self.recv_inflight);
        let room = &mut self.rx[self.rx_len..];
        // SAFETY: the pointer and length name `room`, which outlives the call; no ring
        // receive is in flight into this buffer.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return false;
        }
        let n = n as usize;
        self.rx_len += n;
        self.rx_bytes += n as u64;
        true
    }

    /// Sizes the receive buffer for the next receive and returns the free room in it (never
    /// empty). A receive that filled all the room it was offered doubles the buffer (up to
    /// `RX_BUF_BUSY`, or more when a PDU needs it); on an idle connection (no task live,
    /// nothing to send), with nothing buffered after a receive that used little of the room,
    /// the buffer (and the send batch's vectors) shrink back, so an idle connection holds
    /// only `RX_BUF_MIN` (no sooner than `RX_SHRINK_AFTER_NS` after the last growth). A busy
    /// connection keeps its room: at a deep queue an initiator's commands arrive a few per
    /// receive, which alone would shrink the buffer every second and regrow it through
    /// receives cut short at each size (an mmap and munmap of `RX_BUF_BUSY` each time, see
    /// `shard/reclaim.rs`). Call only with no receive in flight.
    pub fn rx_room(&mut self, now_ns: u64) -> &mut [u8] {
        let cap = self.rx.len();
        let filled = self.rx_offered > 0 && self.rx_last == self.rx_offered;
        if self.rx_len == cap || (filled && cap < RX_BUF_BUSY) {
            self.rx.resize((cap * 2).max(RX_BUF_MIN), 0);
            self.rx_grown_ns = now_ns;
        } else if self.rx_len == 0
            && cap > RX_BUF_MIN
            && self.rx_last < cap / RX_SHRINK_RATIO
            && now_ns.saturating_sub(self.rx_grown_ns) >= RX_SHRINK_AFTER_NS
            && self.idle()
        {
            self.rx = vec![0u8; RX_BUF_MIN];
            if !self.send_inflight && self.tx_batch.is_empty() {
                self.tx_batch = Vec::new();
                self.iov = Vec::new();
            }
        }
        self.rx_offered = self.rx.len() - self.rx_len;
        &mut self.rx[self.rx_len..]
    }

    /// Whether the connection has nothing under way: no live task and nothing to send (a
    /// connection still logging in has no tasks).
    fn idle(&self) -> bool {
        !self.has_output() && !matches!(&self.phase, Phase::Ffp(s) if s.task_count() > 0)
    }

    /// Makes room for a PDU of `need` bytes at the start of `rx` (the framer asked for it).
    pub fn rx_reserve(&mut self, need: usize) {
        if need > self.rx.len() {
            self.rx.resize(need.next_power_of_two(), 0);
        }
    }

    /// The queue the next PDUs come from.
    pub fn out_queue(&mut self) -> &mut VecDeque<TxPdu> {
        match &mut self.phase {
            Phase::Login(_) => &mut self.login_out,
            Phase::Ffp(s) => &mut s.out,
        }
    }

    /// Whether anything is queued or in flight to send.
    pub fn has_output(&self) -> bool {
        self.send_inflight
            || !self.login_out.is_empty()
            || matches!(&self.phase, Phase::Ffp(s) if !s.out.is_empty())
    }

    /// Fills `iov`/`msg` from the queue for one sendmsg. Returns false when nothing to send.
    pub fn prepare_send(&mut self) -> bool {
        if self.tx_batch.is_empty() {
            let n = self.out_queue().len().min(TX_BATCH_PDUS);
            let mut batch = std::mem::take(&mut self.tx_batch);
            // Each PDU takes at most three iovecs (header, data, padding/digest).
            let mut iovs = 0;
            while let Some(p) = self.out_queue().front() {
                let k =
                    1 + usize::from(!p.payload.bytes().is_empty()) + usize::from(p.trailer_len > 0);
                if batch.len() >= n || iovs + k > TX_MAX_IOV {
                    break;
                }
                iovs += k;
                batch.push(self.out_queue().pop_front().expect("front exists"));
            }
            self.tx_batch = batch;
            self.tx_sent = 0;
        }
        if self.tx_batch.is_empty() {
            return false;
        }
        self.iov.clear();
        let mut skip = self.tx_sent;
        for p in &self.tx_batch {
            let len = p.wire_len();
            if skip >= len {
                skip -= len;
                continue;
            }
            for s in p.slices(skip) {
                self.iov.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
            skip = 0;
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
        true
    }

    /// Accounts `n` sent bytes. Returns true when the whole batch went out. A batch is
    /// released then unless some of its bytes left by a zero-copy send and zero-copy sends
    /// are still un-notified (any of them may include its bytes): it waits in `zc.inflight`
    /// until they are, and the next batch is a spare vector (`ZcLink::take_spare`), so the
    /// zero-copy path allocates no vector per send once warm.
    pub fn sent(&mut self, n: usize) -> bool {
        self.tx_sent += n;
        let total: usize = self.tx_batch.iter().map(|p| p.wire_len()).sum();
        if self.tx_sent >= total {
            let batch = std::mem::take(&mut self.tx_batch);
            let zc = std::mem::replace(&mut self.tx_zc, false);
            self.tx_batch = match self.zc.inflight.retire(batch, zc) {
                Some(mut b) => {
                    b.clear();
                    b
                }
                None => self.zc.take_spare(),
            };
            self.tx_sent = 0;
            true
        } else {
            false
        }
    }

    /// Whether the kernel still holds anything of this connection: a receive, a send, a
    /// zero-copy notification or error-queue read, or a backend operation. The slot is freed
    /// only when not.
    pub fn busy(&self) -> bool {
        self.recv_inflight || self.send_inflight || !self.zc.idle() || self.ops_inflight > 0
    }

    /// Records a backend operation started for task slot `slot`.
    pub fn add_op(&mut self, slot: usize, op: OpId) {
        if self.ops.len() <= slot {
            self.ops.resize_with(slot + 1, || None);
        }
        self.ops[slot] = Some(op);
        self.ops_inflight += 1;
    }

    /// Forgets a completed backend operation.
    pub fn remove_op(&mut self, slot: usize, op: OpId) -> bool {
        match self.ops.get_mut(slot) {
            Some(o) if *o == Some(op) => {
                *o = None;
                self.ops_inflight -= 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::tx::{Payload, TxPdu};

    fn conn() -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let s = TcpStream::connect(a).unwrap();
        let login = LoginSm::new(crate::iscsi::login::LoginCtx {
            local: a,
            peer: a,
            tpgt: 1,
            shard: 0,
        });
        let zc = ZcLink::new(&crate::shard::zerocopy::ZcConfig::default(), true, true);
        Conn::new(s, a, a, login, SlotKey::new(0, 0), zc)
    }

    fn pdu(pool: &crate::buf::BufPool) -> (TxPdu, crate::buf::IoBuf) {
        let b = pool.alloc(4096);
        let bhs = crate::iscsi::pdu::Bhs::reject(crate::iscsi::pdu::RejectReason::ProtocolError);
        let p = Payload::Buf {
            buf: b.clone(),
            offset: 0,
            len: 4096,
        };
        (TxPdu::new(bhs, p, false, false), b)
    }

    /// Grows `c`'s receive buffer to `RX_BUF_BUSY` through receives that fill their room.
    fn grow_busy(c: &mut Conn, now_ns: u64) {
        for _ in 0..32 {
            if c.rx.len() >= RX_BUF_BUSY {
                return;
            }
            let n = c.rx_room(now_ns).len();
            c.received(n);
            c.rx_len = 0;
        }
        panic!("the receive buffer did not grow to RX_BUF_BUSY");
    }

    #[test]
    fn a_receive_buffer_shrinks_only_when_the_connection_is_idle() {
        let pool = crate::buf::BufPool::new();
        let mut c = conn();
        assert_eq!(c.rx.len(), RX_BUF_MIN);
        grow_busy(&mut c, 0);
        let later = RX_SHRINK_AFTER_NS;
        // A small receive a quiet second later, but a response is waiting to go out: the
        // connection is busy and keeps its room.
        let (p, _b) = pdu(&pool);
        c.login_out.push_back(p);
        c.rx_room(later);
        c.received(100);
        c.rx_len = 0;
        assert_eq!(c.rx_room(later).len(), RX_BUF_BUSY, "busy: no shrink");
        // Nothing under way any more: the next arm gives the memory back.
        c.login_out.clear();
        c.received(100);
        c.rx_len = 0;
        assert_eq!(
            c.rx_room(later).len(),
            RX_BUF_MIN,
            "idle: back to RX_BUF_MIN"
        );
        // Sooner than a quiet second after growing, even an idle connection keeps it.
        grow_busy(&mut c, 2 * later);
        c.received(100);
        c.rx_len = 0;
        assert_eq!(c.rx_room(2 * later + 1).len(), RX_BUF_BUSY);
    }

    #[test]
    fn plain_send_releases_the_batch_at_its_completion() {
        let pool = crate::buf::BufPool::new();
        let mut c = conn();
        let (p, b) = pdu(&pool);
        let len = p.wire_len();
        c.login_out.push_back(p);
        assert!(c.prepare_send());
        assert_eq!(b.handles(), 2);
        assert!(!c.sent(len - 1), "partial");
        assert_eq!(b.handles(), 2);
        assert!(c.sent(1));
        assert_eq!(b.handles(), 1, "payload released");
        assert!(!c.busy());
    }

    #[test]
    fn zero_copy_send_keeps_pages_until_the_notification() {
        let pool = crate::buf::BufPool::new();
        let mut c = conn();
        let (p, b) = pdu(&pool);
        let len = p.wire_len();
        c.login_out.push_back(p);
        assert!(c.prepare_send());
        let id = c.zc.inflight.issue();
        c.tx_zc = true;
        assert!(c.sent(len));
        assert_eq!(b.handles(), 2, "the kernel may still read the pages");
        assert!(
            c.busy(),
            "a connection with a pending notification is not freed"
        );
        assert!(c.zc.inflight.complete(id));
        c.zc.recycle_released();
        assert_eq!(b.handles(), 1);
        assert!(!c.busy());
        assert_eq!(
            c.zc.spares(),
            1,
            "the held batch's vector is kept as a spare"
        );
        // The next zero-copy batch reuses it: its capacity is the old batch's.
        let (p2, _b2) = pdu(&pool);
        let len2 = p2.wire_len();
        c.login_out.push_back(p2);
        assert!(c.prepare_send());
        c.zc.inflight.issue();
        c.tx_zc = true;
        assert!(c.sent(len2));
        assert_eq!(c.zc.spares(), 0, "taken for the batch after the held one");
        assert!(c.tx_batch.capacity() >= 1);
    }

    #[test]
    fn payload_only_runs_put_every_byte_on_the_wire_once_in_order_despite_short_sends() {
        use crate::shard::zerocopy::runs::{cut_iov, run_at, RunKind};
        let pool = crate::buf::BufPool::new();
        let mut c = conn();
        let mut want = Vec::new();
        for (i, n) in [65536usize, 100, 20000, 4096, 131072]
            .into_iter()
            .enumerate()
        {
            let mut b = pool.alloc(n);
            for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
                *x = (i * 31 + j * 7) as u8;
            }
            let bhs =
                crate::iscsi::pdu::Bhs::reject(crate::iscsi::pdu::RejectReason::ProtocolError);
            let p = Payload::Buf {
                buf: b,
                offset: 0,
                len: n,
            };
            let pdu = TxPdu::new(bhs, p, i % 2 == 0, i % 2 == 0);
            want.extend(pdu.to_vec());
            c.login_out.push_back(pdu);
        }
        // The socket takes at most these many bytes per send, in turn: short sends in every
        // kind of run (inside headers, digests, payloads).
        let takes = [7usize, 1000, 50, 3, 70000, 13, 1];
        let mut wire = Vec::new();
        let (mut sends, mut zc_sends) = (0, 0);
        for round in 0..10_000 {
            assert!(c.prepare_send(), "round {round}: bytes left to send");
            let run = run_at(&c.tx_batch, c.tx_sent, |len| len >= 10 * 1024).unwrap();
            assert_eq!(
                run.start, c.tx_sent,
                "a send starts at the first unsent byte"
            );
            let n = cut_iov(&mut c.iov, run.len);
            let iov_bytes: usize = c.iov[..n].iter().map(|v| v.iov_len).sum();
            assert_eq!(iov_bytes, run.len);
            if let RunKind::ZeroCopy { .. } = run.kind {
                assert_eq!(n, 1, "a zero-copy run is one payload slice");
                zc_sends += 1;
            }
            sends += 1;
            let take = takes[round % takes.len()].min(run.len);
            let mut left = take;
            for v in &c.iov[..n] {
                let k = v.iov_len.min(left);
                // SAFETY: the iovec points into the batch, alive and unchanged here.
                wire.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, k)
                });
                left -= k;
            }
            if c.sent(take) {
                break;
            }
        }
        assert_eq!(wire.len(), want.len());
        assert!(
            wire == want,
            "the bytes on the wire are the batch's, in order"
        );
        assert!(
            sends > 10 && zc_sends >= 3,
            "{sends} sends, {zc_sends} zero-copy"
        );
    }

    #[test]
    fn a_batch_sent_by_copy_is_not_held_for_an_earlier_zero_copy_send() {
        let pool = crate::buf::BufPool::new();
        let mut c = conn();
        let (p1, b1) = pdu(&pool);
        let (p2, b2) = pdu(&pool);
        let (l1, l2) = (p1.wire_len(), p2.wire_len());
        c.login_out.push_back(p1);
        assert!(c.prepare_send());
        let id = c.zc.inflight.issue();
        c.tx_zc = true;
        assert!(c.sent(l1));
        c.login_out.push_back(p2);
        assert!(c.prepare_send());
        assert!(c.sent(l2), "by copy");
        assert_eq!(b2.handles(), 1, "the copied batch is free at once");
        assert_eq!(b1.handles(), 2, "the zero-copy one waits");
        c.zc.inflight.complete(id);
        c.zc.recycle_released();
        assert_eq!(b1.handles(), 1);
    }
}
