//! The per-shard half of a Curve LU: a [`backing::engine::Engine`] that drives one
//! [`ChunkIo`] on the shard's own io_uring (backing/engine.rs has the contract).
//!
//! The shard's engine owns its chunk-server sockets: each is connected with
//! [`Reactor::connect`] (a deadline included), keeps one receive and at most one `writev` on
//! the ring, and carries many RPCs at once. The chunk I/O engine's deadlines and backoffs run
//! on one shard timer, re-armed to [`ChunkIo::poll_timeout`] after every event. Layout comes
//! from the volume thread ([`super::engine_volume`]) as `Arc` snapshots through a mailbox whose
//! eventfd this engine keeps a read on; what the layout lacks goes back as a message. Nothing
//! on the data path takes a lock.
//!
//! Each SCSI operation becomes one or more chunk reads and writes (read-then-compare for
//! VERIFY, read-compare-write for COMPARE AND WRITE, read-OR-write for ORWRITE, repeated
//! writes for WRITE SAME), and completes exactly once: with its result, with `Cancelled` after
//! ABORT TASK or a closed connection, or with an error once the client's deadline passed
//! (`ClientConfig::op_deadline`, below the initiator's 30 s command timeout).
//!
//! [`backing::engine::Engine`]: crate::backing::engine::Engine

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::chunk_io::ChunkIo;
use super::config::ClientConfig;
use super::conn::{Action, Transmit};
use super::engine_stats::EngineStats;
use super::engine_volume::{Mailbox, ToShard, Volume};
use super::error::IoError;
use super::ids::{OpId as CurveOp, PeerId};
use crate::backing::engine::{Completion, Engine, OpId, OpRequest, Reactor, RingToken, TimerId};
use crate::backing::{BlockIo, IoResult};
use crate::buf::IoBuf;

/// Receive buffer per chunk-server connection: a 64 KiB read reply and its header fit.
const RECV_BYTES: usize = 128 << 10;
/// How long a connect to a chunk server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// WRITE SAME is written in pieces of at most this many bytes.
const SAME_PIECE: usize = 1 << 20;
/// iovecs per `writev` (IOV_MAX is 1024).
const MAX_IOV: usize = 512;

const K_CONNECT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_MAILBOX: u64 = 4;
const K_TIMER: u64 = 5;

/// A read's destination: a pooled buffer this engine holds the only handle to.
#[derive(Debug)]
pub struct ReadBuf(IoBuf);

impl AsMut<[u8]> for ReadBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

/// A write's source: a range of a pooled buffer, shared (not copied) with queued sends.
#[derive(Clone, Debug)]
pub struct WriteBuf {
    buf: IoBuf,
    range: Range<usize>,
}

impl AsRef<[u8]> for WriteBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_slice()[self.range.clone()]
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SockState {
    Connecting,
    Open,
    Closing,
}

/// One chunk-server socket and what the ring holds of it.
struct SockSlot {
    gen: u32,
    peer: PeerId,
    sock: Option<socket2::Socket>,
    state: SockState,
    recv_buf: Box<[u8]>,
    connect: Option<RingToken>,
    recv: Option<RingToken>,
    send: Option<RingToken>,
    /// Transmits waiting for the next `writev`.
    queue: VecDeque<Transmit<WriteBuf>>,
    /// The transmits the in-flight `writev` sends, bytes of them already sent, and its iovecs
    /// (kept here, unmoved, until the CQE).
    batch: Vec<Transmit<WriteBuf>>,
    batch_skip: usize,
    iov: Vec<libc::iovec>,
}

impl SockSlot {
    fn idle(&self) -> bool {
        self.connect.is_none() && self.recv.is_none() && self.send.is_none()
    }
}

/// Where an operation is in its chunk reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// READ; VERIFY's, COMPARE AND WRITE's and ORWRITE's read.
    Read,
    /// The final write (WRITE, COMPARE AND WRITE, ORWRITE).
    Write,
    /// WRITE SAME: bytes written so far.
    Same(u64),
}

struct OpState {
    io: BlockIo,
    data: Option<IoBuf>,
    stage: Stage,
    curve: CurveOp,
    started: Instant,
}

/// The Curve engine of one LU on one shard.
pub struct CurveEngine {
    io: ChunkIo<ReadBuf, WriteBuf>,
    vol: Arc<Volume>,
    shard: usize,
    mb_idx: usize,
    mailbox: Arc<Mailbox>,
    mb_buf: Box<u64>,
    mb_token: Option<RingToken>,
    instance: u64,
    slots: Vec<SockSlot>,
    free: Vec<usize>,
    by_peer: HashMap<PeerId, usize>,
    ops: HashMap<(u32, u32), OpState>,
    by_curve: HashMap<CurveOp, OpId>,
    next_curve: u64,
    /// The armed timer: deadline (shard clock), id, and the sequence number in its tag.
    timer: Option<(u64, TimerId, u32)>,
    timer_seq: u32,
    stats: Arc<EngineStats>,
    /// The LU is gone: nothing is re-armed, so the shard can drop this engine (and with it
    /// the last reference to the volume, whose thread then closes it).
    shut: bool,
}

fn key(op: OpId) -> (u32, u32) {
    (op.index, op.generation)
}

fn errno_text(res: i32) -> String {
    io::Error::from_raw_os_error(-res).to_string()
}

impl CurveEngine {
    /// An engine for `shard`, attached to the volume thread's mailboxes.
    pub fn new(
        cfg: ClientConfig,
        vol: Arc<Volume>,
        shard: usize,
        instance: u64,
        stats: Arc<EngineStats>,
    ) -> io::Result<CurveEngine> {
        let (mb_idx, mailbox, layout) = vol.attach()?;
        let mut io = ChunkIo::new(cfg, 0);
        if let Some(l) = layout {
            io.set_layout(Instant::now(), l);
        }
        Ok(CurveEngine {
            io,
            vol,
            shard,
            mb_idx,
            mailbox,
            mb_buf: Box::new(0),
            mb_token: None,
            instance: instance & 0xff,
            slots: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            ops: HashMap::new(),
            by_curve: HashMap::new(),
            next_curve: 1,
            timer: None,
            timer_seq: 0,
            stats,
            shut: false,
        })
    }

    fn tag(&self, kind: u64, slot: usize, gen: u32) -> u64 {
        (self.instance << 56) | (kind << 52) | (((slot as u64) & 0xf_ffff) << 32) | u64::from(gen)
    }

    fn curve_op(&mut self, op: OpId) -> CurveOp {
        let c = CurveOp(self.next_curve);
        self.next_curve += 1;
        self.by_curve.insert(c, op);
        c
    }

    fn arm_mailbox(&mut self, r: &mut dyn Reactor) {
        if self.mb_token.is_some() || self.shut {
            return;
        }
        let ptr: *mut u64 = &mut *self.mb_buf;
        let e = opcode::Read::new(types::Fd(self.mailbox.fd()), ptr.cast(), 8).build();
        let tag = self.tag(K_MAILBOX, 0, 0);
        // SAFETY: `mb_buf` is boxed, lives as long as the engine, and is leaked by Drop while
        // this read may still be in the kernel.
        self.mb_token = Some(unsafe { r.submit(e, tag) });
    }

    fn read_mailbox(&mut self) {
        let now = Instant::now();
        for m in self.mailbox.take() {
            match m {
                ToShard::Layout(l) => self.io.set_layout(now, l),
                ToShard::NeedFailed(n, why) => self.io.layout_failed(now, &n, &why),
            }
        }
    }

    /// Starts the chunk read or write `op`'s current stage needs (or completes it).
    fn run_stage(&mut self, op: OpId, r: &mut dyn Reactor) {
        let now = Instant::now();
        let Some(st) = self.ops.get(&key(op)) else {
            return;
        };
        let stage = st.stage;
        let io = st.io.clone();
        match (&io, stage) {
            (BlockIo::Read { offset, len }, Stage::Read)
            | (BlockIo::Verify { offset, len, .. }, Stage::Read)
            | (BlockIo::CompareAndWrite { offset, len, .. }, Stage::Read)
            | (BlockIo::OrWrite { offset, len, .. }, Stage::Read) => {
                let buf = r.pool().alloc(*len as usize);
                let c = self.curve_op(op);
                self.set_curve(op, c);
                self.io.read(now, c, *offset, ReadBuf(buf));
            }
            (BlockIo::Write { offset, data, .. }, Stage::Write) => {
                let Some(buf) = self.ops.get(&key(op)).and_then(|s| s.data.clone()) else {
                    return self.finish(
                        op,
                        IoResult::Err(io::Error::other("no Data-Out")),
                        None,
                        r,
                    );
                };
                let c = self.curve_op(op);
                self.set_curve(op, c);
                let w = WriteBuf {
                    buf,
                    range: data.clone(),
                };
                self.io.write(now, c, *offset, w);
            }
            (
                BlockIo::WriteSame {
                    offset, len, block, ..
                },
                Stage::Same(done),
            ) => {
                if done >= *len {
                    return self.finish(op, IoResult::Ok, None, r);
                }
                let Some(src) = self.ops.get(&key(op)).and_then(|s| s.data.clone()) else {
                    return self.finish(
                        op,
                        IoResult::Err(io::Error::other("no Data-Out")),
                        None,
                        r,
                    );
                };
                let pattern = &src.as_slice()[block.clone()];
                let n = (*len - done).min(SAME_PIECE as u64) as usize;
                let mut buf = r.pool().alloc(n);
                if pattern.is_empty() {
                    return self.finish(
                        op,
                        IoResult::Err(io::Error::other("empty block")),
                        None,
                        r,
                    );
                }
                for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
                    *b = pattern[i % pattern.len()];
                }
                let c = self.curve_op(op);
                self.set_curve(op, c);
                self.io
                    .write(now, c, offset + done, WriteBuf { buf, range: 0..n });
            }
            _ => self.finish(op, IoResult::Unsupported, None, r),
        }
    }

    fn set_curve(&mut self, op: OpId, c: CurveOp) {
        if let Some(s) = self.ops.get_mut(&key(op)) {
            s.curve = c;
        }
    }

    fn finish(&mut self, op: OpId, result: IoResult, data: Option<IoBuf>, r: &mut dyn Reactor) {
        if let Some(st) = self.ops.remove(&key(op)) {
            self.stats
                .record_op(st.started.elapsed(), matches!(result, IoResult::Ok));
        }
        r.complete(Completion { op, result, data });
    }

    /// A chunk read or write finished: on to the operation's next stage, or done.
    fn on_io_done(
        &mut self,
        c: CurveOp,
        buf: Option<ReadBuf>,
        res: Result<(), IoError>,
        r: &mut dyn Reactor,
    ) {
        let Some(op) = self.by_curve.remove(&c) else {
            return;
        };
        let Some(st) = self.ops.get_mut(&key(op)) else {
            return;
        };
        if let Err(e) = res {
            let result = match e {
                IoError::Cancelled => IoResult::Cancelled,
                e => {
                    tracing::warn!(
                        shard = self.shard,
                        volume = %self.vol.path,
                        io = ?st.io,
                        error = %e,
                        "curve I/O failed"
                    );
                    let kind = match e {
                        IoError::Deadline { .. } => io::ErrorKind::TimedOut,
                        _ => io::ErrorKind::Other,
                    };
                    IoResult::Err(io::Error::new(kind, e.to_string()))
                }
            };
            return self.finish(op, result, None, r);
        }
        let read = buf.map(|b| b.0);
        match (st.io.clone(), st.stage) {
            (BlockIo::Read { .. }, _) => self.finish(op, IoResult::Ok, read, r),
            (BlockIo::Verify { compare, .. }, _) => {
                let result = match (compare, &st.data, &read) {
                    (Some(range), Some(d), Some(got)) => {
                        compare_bytes(&d.as_slice()[range], got.as_slice())
                    }
                    _ => IoResult::Ok,
                };
                self.finish(op, result, None, r)
            }
            (
                BlockIo::CompareAndWrite {
                    offset,
                    verify,
                    write,
                    ..
                },
                Stage::Read,
            ) => {
                let (Some(d), Some(got)) = (st.data.clone(), read) else {
                    return self.finish(op, IoResult::Err(io::Error::other("no data")), None, r);
                };
                match compare_bytes(&d.as_slice()[verify], got.as_slice()) {
                    IoResult::Ok => {
                        st.stage = Stage::Write;
                        let c = self.curve_op(op);
                        self.set_curve(op, c);
                        let w = WriteBuf {
                            buf: d,
                            range: write,
                        };
                        self.io.write(Instant::now(), c, offset, w);
                    }
                    other => self.finish(op, other, None, r),
                }
            }
            (BlockIo::OrWrite { offset, data, .. }, Stage::Read) => {
                let (Some(d), Some(mut got)) = (st.data.clone(), read) else {
                    return self.finish(op, IoResult::Err(io::Error::other("no data")), None, r);
                };
                for (a, b) in got.as_mut_slice().iter_mut().zip(&d.as_slice()[data]) {
                    *a |= *b;
                }
                st.stage = Stage::Write;
                let n = got.len();
                let c = self.curve_op(op);
                self.set_curve(op, c);
                let w = WriteBuf {
                    buf: got,
                    range: 0..n,
                };
                self.io.write(Instant::now(), c, offset, w);
            }
            (BlockIo::WriteSame { .. }, Stage::Same(done)) => {
                let next = done + SAME_PIECE as u64;
                st.stage = Stage::Same(next);
                self.run_stage(op, r);
            }
            _ => self.finish(op, IoResult::Ok, None, r),
        }
    }

    /// Moves everything the chunk I/O engine wants done onto the ring, the volume thread and
    /// the completion queue, until it is quiet; then re-arms the timer.
    fn pump(&mut self, r: &mut dyn Reactor) {
        if self.shut {
            // Retired with nothing in flight: only let the cancelled submissions drain.
            if let Some((_, id, _)) = self.timer.take() {
                r.cancel_timer(id);
            }
            return;
        }
        self.arm_mailbox(r);
        for _ in 0..1024 {
            let mut moved = false;
            while let Some(n) = self.io.poll_need() {
                self.vol.need(self.mb_idx, n);
                moved = true;
            }
            while let Some(a) = self.io.poll_action() {
                moved = true;
                match a {
                    Action::Connect { peer, addr } => self.connect(peer, addr, r),
                    Action::Close { peer, reason } => {
                        tracing::debug!(shard = self.shard, peer = peer.0, %reason, "closing chunk-server connection");
                        if let Some(i) = self.by_peer.remove(&peer) {
                            self.close_slot(i, r);
                        }
                    }
                }
            }
            while let Some(t) = self.io.poll_transmit() {
                moved = true;
                if let Some(&i) = self.by_peer.get(&t.peer) {
                    self.slots[i].queue.push_back(t);
                }
            }
            while let Some(c) = self.io.poll_completion() {
                moved = true;
                self.on_io_done(c.op, c.buf, c.result, r);
            }
            if !moved {
                break;
            }
        }
        for i in 0..self.slots.len() {
            self.flush(i, r);
        }
        self.rearm_timer(r);
        self.stats.publish(self.shard, self.io.stats());
    }

    fn rearm_timer(&mut self, r: &mut dyn Reactor) {
        let Some(t) = self.io.poll_timeout() else {
            if let Some((_, id, _)) = self.timer.take() {
                r.cancel_timer(id);
            }
            return;
        };
        let wait = t
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let deadline = r.now() + wait.as_nanos() as u64;
        if let Some((armed, id, _)) = self.timer {
            // Keep an armed timer that fires no later than needed: firing early only runs
            // on_timeout and re-arms, which is cheaper than re-arming on every RPC.
            if armed <= deadline {
                return;
            }
            r.cancel_timer(id);
        }
        self.timer_seq = self.timer_seq.wrapping_add(1);
        let tag = self.tag(K_TIMER, 0, self.timer_seq);
        self.timer = Some((deadline, r.timer(deadline, tag), self.timer_seq));
    }

    fn connect(&mut self, peer: PeerId, addr: SocketAddr, r: &mut dyn Reactor) {
        if let Some(i) = self.by_peer.remove(&peer) {
            self.close_slot(i, r);
        }
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )
        .and_then(|s| {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                self.io
                    .on_closed(Instant::now(), peer, &format!("socket: {e}"));
                return;
            }
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(SockSlot {
                    gen: 0,
                    peer,
                    sock: None,
                    state: SockState::Closing,
                    recv_buf: vec![0; RECV_BYTES].into_boxed_slice(),
                    connect: None,
                    recv: None,
                    send: None,
                    queue: VecDeque::new(),
                    batch: Vec::new(),
                    batch_skip: 0,
                    iov: Vec::new(),
                });
                self.slots.len() - 1
            }
        };
        let fd = sock.as_raw_fd();
        let s = &mut self.slots[i];
        s.gen = s.gen.wrapping_add(1);
        s.peer = peer;
        s.sock = Some(sock);
        s.state = SockState::Connecting;
        let gen = s.gen;
        self.by_peer.insert(peer, i);
        self.stats.connects_add(self.shard, 1);
        let tag = self.tag(K_CONNECT, i, gen);
        let deadline = r.now() + CONNECT_TIMEOUT.as_nanos() as u64;
        self.slots[i].connect = Some(r.connect(fd, addr.into(), deadline, tag));
    }

    fn close_slot(&mut self, i: usize, r: &mut dyn Reactor) {
        let s = &mut self.slots[i];
        if s.state == SockState::Closing {
            return;
        }
        // Counted from connect on, so a failed connect is uncounted here too.
        self.stats.connects_add(self.shard, -1);
        s.state = SockState::Closing;
        s.queue.clear();
        if let Some(sock) = &s.sock {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        for t in [s.connect, s.recv, s.send].into_iter().flatten() {
            r.cancel(t);
        }
        self.maybe_free(i);
    }

    fn maybe_free(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if s.state == SockState::Closing && s.idle() && s.sock.is_some() {
            s.sock = None;
            s.batch.clear();
            s.batch_skip = 0;
            s.iov.clear();
            self.free.push(i);
        }
    }

    fn arm_recv(&mut self, i: usize, r: &mut dyn Reactor) {
        let tag = self.tag(K_RECV, i, self.slots[i].gen);
        let s = &mut self.slots[i];
        if s.state != SockState::Open || s.recv.is_some() {
            return;
        }
        let Some(sock) = &s.sock else { return };
        let e = opcode::Recv::new(
            types::Fd(sock.as_raw_fd()),
            s.recv_buf.as_mut_ptr(),
            s.recv_buf.len() as u32,
        )
        .build();
        // SAFETY: `recv_buf` is boxed in the slot, which is not freed or reused until this
        // receive's CQE (maybe_free waits for it), and leaked by Drop if still in flight.
        s.recv = Some(unsafe { r.submit(e, tag) });
    }

    /// Starts a `writev` of the queued transmits if none is in flight.
    fn flush(&mut self, i: usize, r: &mut dyn Reactor) {
        let tag = self.tag(K_SEND, i, self.slots[i].gen);
        let s = &mut self.slots[i];
        if s.state != SockState::Open || s.send.is_some() {
            return;
        }
        while s.batch.len() * 2 < MAX_IOV {
            match s.queue.pop_front() {
                Some(t) => s.batch.push(t),
                None => break,
            }
        }
        if s.batch.is_empty() {
            return;
        }
        s.iov.clear();
        let mut skip = s.batch_skip;
        for t in &s.batch {
            for part in [&t.head[..], t.attachment_bytes()] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let p = &part[skip..];
                skip = 0;
                s.iov.push(libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                });
            }
        }
        let Some(sock) = &s.sock else { return };
        let e = opcode::Writev::new(
            types::Fd(sock.as_raw_fd()),
            s.iov.as_ptr(),
            s.iov.len() as u32,
        )
        .build();
        // SAFETY: the iovecs and the transmits they point into (heads, and write buffers held
        // by the `WriteBuf` clones) stay in the slot, unmoved, until this CQE; Drop leaks them
        // if it is still in flight.
        s.send = Some(unsafe { r.submit(e, tag) });
    }

    fn on_sent(&mut self, i: usize, res: i32, r: &mut dyn Reactor) {
        let s = &mut self.slots[i];
        s.send = None;
        if s.state == SockState::Closing {
            return self.maybe_free(i);
        }
        if res <= 0 {
            let peer = s.peer;
            let why = if res == 0 {
                "send wrote nothing".to_string()
            } else {
                errno_text(res)
            };
            self.by_peer.remove(&peer);
            self.close_slot(i, r);
            self.io
                .on_closed(Instant::now(), peer, &format!("send: {why}"));
            return;
        }
        s.batch_skip += res as usize;
        while let Some(t) = s.batch.first() {
            let n = t.head.len() + t.attachment_bytes().len();
            if s.batch_skip < n {
                break;
            }
            s.batch_skip -= n;
            s.batch.remove(0);
        }
        s.iov.clear();
    }

    fn on_recv(&mut self, i: usize, res: i32, r: &mut dyn Reactor) {
        let s = &mut self.slots[i];
        s.recv = None;
        if s.state == SockState::Closing {
            return self.maybe_free(i);
        }
        let peer = s.peer;
        if res <= 0 {
            let why = if res == 0 {
                "closed by the chunk server".to_string()
            } else {
                errno_text(res)
            };
            self.by_peer.remove(&peer);
            self.close_slot(i, r);
            self.io.on_closed(Instant::now(), peer, &why);
            return;
        }
        let n = res as usize;
        // The bytes are borrowed from the slot while the client parses them.
        let bytes = std::mem::take(&mut self.slots[i].recv_buf);
        self.io.on_recv(Instant::now(), peer, &bytes[..n]);
        self.slots[i].recv_buf = bytes;
        self.arm_recv(i, r);
    }

    fn on_connected(&mut self, i: usize, res: i32, r: &mut dyn Reactor) {
        let s = &mut self.slots[i];
        s.connect = None;
        if s.state == SockState::Closing {
            return self.maybe_free(i);
        }
        let peer = s.peer;
        if res < 0 {
            self.by_peer.remove(&peer);
            self.close_slot(i, r);
            self.io.on_closed(
                Instant::now(),
                peer,
                &format!("connect: {}", errno_text(res)),
            );
            return;
        }
        s.state = SockState::Open;
        self.io.on_connected(Instant::now(), peer);
        self.arm_recv(i, r);
    }

    /// Snapshot of the counters (for `tgtadm --op stat`).
    pub fn client_stats(&self) -> &super::chunk_io::IoStats {
        self.io.stats()
    }
}

/// SBC-3 §5.2/§5.31: the first differing byte, as a miscompare.
fn compare_bytes(want: &[u8], got: &[u8]) -> IoResult {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(at) => IoResult::Miscompare { offset: at as u64 },
        None => IoResult::Ok,
    }
}

impl Engine for CurveEngine {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        let stage = match &req.io {
            BlockIo::Flush => {
                // Acknowledged Curve writes are already replicated: nothing to flush.
                return r.complete(Completion {
                    op,
                    result: IoResult::Ok,
                    data: None,
                });
            }
            BlockIo::Discard { .. } | BlockIo::LbaStatus { .. } => {
                return r.complete(Completion {
                    op,
                    result: IoResult::Unsupported,
                    data: None,
                });
            }
            BlockIo::Read { len: 0, .. } => {
                return r.complete(Completion {
                    op,
                    result: IoResult::Ok,
                    data: Some(r.pool().alloc(0)),
                });
            }
            BlockIo::Write { .. } => Stage::Write,
            BlockIo::WriteSame { .. } => Stage::Same(0),
            _ => Stage::Read,
        };
        self.ops.insert(
            key(op),
            OpState {
                io: req.io,
                data: req.data,
                stage,
                curve: CurveOp(0),
                started: Instant::now(),
            },
        );
        self.run_stage(op, r);
        self.pump(r);
    }

    fn on_cqe(&mut self, tag: u64, res: i32, _flags: u32, r: &mut dyn Reactor) {
        if tag >> 56 != self.instance {
            return;
        }
        let kind = (tag >> 52) & 0xf;
        let slot = ((tag >> 32) & 0xf_ffff) as usize;
        let gen = tag as u32;
        if kind == K_MAILBOX {
            self.mb_token = None;
            self.read_mailbox();
        } else if slot < self.slots.len() && self.slots[slot].gen == gen {
            match kind {
                K_CONNECT => self.on_connected(slot, res, r),
                K_RECV => self.on_recv(slot, res, r),
                K_SEND => self.on_sent(slot, res, r),
                _ => {}
            }
        }
        self.pump(r);
    }

    fn on_timer(&mut self, tag: u64, r: &mut dyn Reactor) {
        if tag >> 56 != self.instance {
            return;
        }
        // A timer whose cancel came too late is stale: the armed one stays recorded.
        if self.timer.is_some_and(|(_, _, seq)| seq == tag as u32) {
            self.timer = None;
        }
        self.io.on_timeout(Instant::now());
        self.pump(r);
    }

    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor) {
        let Some(st) = self.ops.get(&key(op)) else {
            return;
        };
        let c = st.curve;
        if self.by_curve.contains_key(&c) {
            self.io.cancel(c);
        } else {
            self.finish(op, IoResult::Cancelled, None, r);
        }
        self.pump(r);
    }

    fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Cancels the mailbox read, closes the chunk-server sockets (their receives end) and
    /// disarms the timer, re-arming nothing after: the shard counts these down to zero before
    /// it drops the engine.
    fn shutdown(&mut self, r: &mut dyn Reactor) {
        self.shut = true;
        if let Some(t) = self.mb_token {
            r.cancel(t);
        }
        for i in 0..self.slots.len() {
            self.close_slot(i, r);
        }
        self.by_peer.clear();
        if let Some((_, id, _)) = self.timer.take() {
            r.cancel_timer(id);
        }
    }
}

impl Drop for CurveEngine {
    /// The ring may still hold a receive, a send or the mailbox read pointing into this
    /// engine's buffers (the shard drops an idle engine without a reactor to cancel them).
    /// Sockets are shut down so their receives end without data, and the few buffers the
    /// kernel may still name are leaked rather than freed under it.
    fn drop(&mut self) {
        self.mailbox.close();
        if self.mb_token.is_some() {
            std::mem::forget(std::mem::replace(&mut self.mb_buf, Box::new(0)));
        }
        for mut s in self.slots.drain(..) {
            if let Some(sock) = s.sock.take() {
                // The ring holds its own reference to the file; our descriptor can go.
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            if !s.idle() {
                std::mem::forget(std::mem::take(&mut s.recv_buf));
                std::mem::forget(std::mem::take(&mut s.batch));
                std::mem::forget(std::mem::take(&mut s.iov));
            }
        }
    }
}
