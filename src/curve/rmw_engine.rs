//! An [`Engine`] that serves logical blocks smaller than its inner engine's physical blocks
//! (`--blocksize 512` on a 4096-byte-block Curve volume) by read-modify-write.
//!
//! It wraps the shard's [`super::engine::CurveEngine`] (any engine, for the tests) and turns
//! each operation into inner operations on whole physical blocks ([`super::rmw`]):
//! - READ / VERIFY of an unaligned range: one inner read of the covering blocks, then the
//!   slice (and the compare) here;
//! - WRITE / WRITE SAME not aligned at an end: inner reads of the partial edge blocks, then
//!   inner writes of the patched edges and of the aligned middle (straight from the
//!   command's buffer; WRITE SAME's middle stays one inner WRITE SAME);
//! - COMPARE AND WRITE / ORWRITE: an inner read of the covering blocks, the compare or OR
//!   here, one inner write of them;
//! - aligned operations, SYNCHRONIZE CACHE and the rest pass through unchanged.
//!
//! Ordering: every write-type operation (aligned or not) holds its covering blocks in a
//! [`RangeLock`] from before its first inner read until its last inner write is answered, so
//! overlapping writes on this shard are applied one at a time in arrival order and no
//! write-back can put back bytes another write changed. The lock is per shard: two sessions
//! on different shards writing the same physical block are not ordered (ARCHITECTURE.md).
//!
//! Cancellation: an operation waiting for the lock or in its read phase completes
//! `Cancelled` at once (its inner reads are cancelled; nothing was written). Once writing, its
//! inner writes are left to finish and the operation completes with their result, so the
//! lock is never released while a write of those blocks may still land (the inner engine's
//! deadline bounds that wait).
//!
//! The inner engine's completions are caught by a [`Reactor`] wrapper (`Catch`) and handled
//! after each call into it; inner operations get ids of their own.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;

use io_uring::squeue;

use super::range_lock::RangeLock;
use super::rmw::{aligned, covering, patch, split_write};
use crate::backing::engine::{
    Completion, Engine, EngineMsg, OpId, OpRequest, Reactor, RingToken, TimerId,
};
use crate::backing::{BlockIo, IoResult};
use crate::buf::{BufPool, IoBuf};

type Key = (u32, u32);

fn key(op: OpId) -> Key {
    (op.index, op.generation)
}

/// Where an outer operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Queued behind an overlapping write.
    Waiting,
    /// One inner operation doing the whole thing (aligned, or not block data at all).
    Passing,
    /// Inner reads of the covering or edge blocks.
    Reading,
    /// Inner writes of the patched blocks.
    Writing,
}

/// Which read an inner read is: its buffer lands in `bufs[slot]`.
const SPAN: usize = 0;
const HEAD: usize = 0;
const TAIL: usize = 1;

/// One operation the shard started.
struct Outer {
    op: OpId,
    io: BlockIo,
    data: Option<IoBuf>,
    phase: Phase,
    /// Holds (or waits for) a range in the lock.
    locked: bool,
    /// Inner operations in flight.
    inner: Vec<Key>,
    /// Read results by slot.
    bufs: [Option<IoBuf>; 2],
    /// The first failure of an inner operation.
    error: Option<IoResult>,
    /// A passed-through operation's completion.
    pass: Option<(IoResult, Option<IoBuf>)>,
    cancelled: bool,
}

/// Serves `logical`-byte blocks on an inner engine that takes `phys`-byte blocks.
pub struct RmwEngine<E> {
    inner: E,
    phys: u64,
    lock: RangeLock<Key>,
    ops: HashMap<Key, Outer>,
    /// Inner operation → (outer operation, read slot).
    inner_of: HashMap<Key, (Key, usize)>,
    next_inner: u64,
    caught: VecDeque<Completion>,
}

/// The shard's reactor as the inner engine sees it: everything passes through except
/// completions, which are kept for the wrapper.
struct Catch<'a> {
    r: &'a mut dyn Reactor,
    caught: &'a mut VecDeque<Completion>,
}

impl Reactor for Catch<'_> {
    fn now(&self) -> u64 {
        self.r.now()
    }
    fn pool(&self) -> &BufPool {
        self.r.pool()
    }
    unsafe fn submit(&mut self, sqe: squeue::Entry, tag: u64) -> RingToken {
        // SAFETY: the inner engine upholds `submit`'s contract; this only forwards it.
        unsafe { self.r.submit(sqe, tag) }
    }
    fn cancel(&mut self, t: RingToken) {
        self.r.cancel(t)
    }
    fn connect(
        &mut self,
        fd: std::os::fd::RawFd,
        addr: socket2::SockAddr,
        deadline: u64,
        tag: u64,
    ) -> RingToken {
        self.r.connect(fd, addr, deadline, tag)
    }
    fn timer(&mut self, deadline: u64, tag: u64) -> TimerId {
        self.r.timer(deadline, tag)
    }
    fn cancel_timer(&mut self, t: TimerId) -> bool {
        self.r.cancel_timer(t)
    }
    fn complete(&mut self, c: Completion) {
        self.caught.push_back(c);
    }
}

/// Whether an operation changes the medium (and so takes the range lock).
fn writes(io: &BlockIo) -> bool {
    matches!(
        io,
        BlockIo::Write { .. }
            | BlockIo::WriteSame { .. }
            | BlockIo::CompareAndWrite { .. }
            | BlockIo::OrWrite { .. }
    )
}

/// The byte range an operation touches, and whether it is whole physical blocks.
fn extent(io: &BlockIo) -> Option<(u64, u64)> {
    match io {
        BlockIo::Read { offset, len }
        | BlockIo::Verify { offset, len, .. }
        | BlockIo::CompareAndWrite { offset, len, .. }
        | BlockIo::OrWrite { offset, len, .. } => Some((*offset, u64::from(*len))),
        BlockIo::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
        BlockIo::WriteSame { offset, len, .. } => Some((*offset, *len)),
        _ => None,
    }
}

impl<E: Engine> RmwEngine<E> {
    /// Wraps `inner`, whose I/O must be whole `phys`-byte blocks (a power of two).
    pub fn new(inner: E, phys: u32) -> RmwEngine<E> {
        assert!(phys.is_power_of_two(), "physical block {phys}");
        RmwEngine {
            inner,
            phys: u64::from(phys),
            lock: RangeLock::new(),
            ops: HashMap::new(),
            inner_of: HashMap::new(),
            next_inner: 1,
            caught: VecDeque::new(),
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Starts an inner operation for `outer`, its read (if any) landing in `slot`.
    fn start_inner(&mut self, outer: Key, slot: usize, req: OpRequest, r: &mut dyn Reactor) {
        let n = self.next_inner;
        self.next_inner += 1;
        let id = OpId {
            index: n as u32,
            generation: (n >> 32) as u32,
        };
        self.inner_of.insert(key(id), (outer, slot));
        if let Some(o) = self.ops.get_mut(&outer) {
            o.inner.push(key(id));
        }
        let mut c = Catch {
            r,
            caught: &mut self.caught,
        };
        self.inner.start(id, req, &mut c);
    }

    /// Handles caught inner completions until none is left (handling one may start more).
    fn drain(&mut self, r: &mut dyn Reactor) {
        while let Some(c) = self.caught.pop_front() {
            self.on_inner_done(c, r);
        }
    }

    /// The operation may run now (it needs no lock, or was granted it).
    fn begin(&mut self, k: Key, r: &mut dyn Reactor) {
        let Some(o) = self.ops.get_mut(&k) else {
            return;
        };
        let p = self.phys;
        let ext = extent(&o.io);
        let pass = match ext {
            None => true,
            Some((off, len)) => len == 0 || aligned(off, len, p),
        };
        if pass {
            o.phase = Phase::Passing;
            let req = OpRequest {
                io: o.io.clone(),
                data: o.data.clone(),
            };
            return self.start_inner(k, SPAN, req, r);
        }
        let (off, len) = ext.unwrap_or((0, 0));
        o.phase = Phase::Reading;
        let edges = matches!(o.io, BlockIo::Write { .. } | BlockIo::WriteSame { .. });
        let read = |offset: u64, len: u64| OpRequest {
            io: BlockIo::Read {
                offset,
                len: len as u32,
            },
            data: None,
        };
        if edges {
            let s = split_write(off, len, p);
            if let Some(h) = s.head {
                self.start_inner(k, HEAD, read(h, p), r);
            }
            if let Some(t) = s.tail {
                self.start_inner(k, TAIL, read(t, p), r);
            }
        } else {
            let c = covering(off, len, p);
            self.start_inner(k, SPAN, read(c.start, c.end - c.start), r);
        }
    }

    fn on_inner_done(&mut self, c: Completion, r: &mut dyn Reactor) {
        let Some((k, slot)) = self.inner_of.remove(&key(c.op)) else {
            return;
        };
        let Some(o) = self.ops.get_mut(&k) else {
            return;
        };
        o.inner.retain(|i| *i != key(c.op));
        match (o.phase, c.result) {
            (Phase::Passing, res) => o.pass = Some((res, c.data)),
            (_, IoResult::Ok) => {
                if let Some(d) = c.data {
                    o.bufs[slot] = Some(d);
                }
            }
            (_, res) => {
                if o.error.is_none() {
                    o.error = Some(res);
                }
            }
        }
        if o.inner.is_empty() {
            self.advance(k, r);
        }
    }

    /// Every inner operation of the current phase is answered: on to the next, or done.
    fn advance(&mut self, k: Key, r: &mut dyn Reactor) {
        let Some(o) = self.ops.get_mut(&k) else {
            return;
        };
        if o.phase == Phase::Passing {
            let (res, data) = o
                .pass
                .take()
                .unwrap_or((IoResult::Err(io::Error::other("no inner result")), None));
            return self.finish(k, res, data, r);
        }
        if let Some(e) = o.error.take() {
            return self.finish(k, e, None, r);
        }
        if o.phase == Phase::Writing {
            return self.finish(k, IoResult::Ok, None, r);
        }
        if o.cancelled {
            return self.finish(k, IoResult::Cancelled, None, r);
        }
        // Reading is done.
        if let Some((res, data)) = self.after_read(k, r) {
            self.finish(k, res, data, r);
        }
    }

    /// Uses what the read phase read: the answer (`Some`), or the writes started (`None`).
    fn after_read(&mut self, k: Key, r: &mut dyn Reactor) -> Option<(IoResult, Option<IoBuf>)> {
        let p = self.phys;
        let o = self.ops.get_mut(&k)?;
        // Every path below ends the operation (`Some`) or starts its writes (`None`).
        let missing = || {
            Some((
                IoResult::Err(io::Error::other("inner read gave no data")),
                None,
            ))
        };
        let io = o.io.clone();
        let Some((off, len)) = extent(&io) else {
            return Some((IoResult::Unsupported, None));
        };
        let cov = covering(off, len, p);
        let at = (off - cov.start) as usize;
        let data = o.data.clone();
        let src = |range: &Range<usize>| data.as_ref().map(|d| &d.as_slice()[range.clone()]);
        match &io {
            BlockIo::Read { .. } => {
                let Some(span) = &o.bufs[SPAN] else {
                    return missing();
                };
                let out = r.pool().from_slice(&span.as_slice()[at..at + len as usize]);
                Some((IoResult::Ok, Some(out)))
            }
            BlockIo::Verify { compare, .. } => {
                let Some(span) = &o.bufs[SPAN] else {
                    return missing();
                };
                let got = &span.as_slice()[at..at + len as usize];
                let res = match compare.as_ref().and_then(&src) {
                    Some(want) => compare_bytes(want, got),
                    None => IoResult::Ok,
                };
                Some((res, None))
            }
            BlockIo::CompareAndWrite { verify, write, .. } => {
                let Some(mut span) = o.bufs[SPAN].take() else {
                    return missing();
                };
                let (Some(want), Some(new)) = (src(verify), src(write)) else {
                    return missing();
                };
                if let IoResult::Miscompare { offset } =
                    compare_bytes(want, &span.as_slice()[at..at + len as usize])
                {
                    return Some((IoResult::Miscompare { offset }, None));
                }
                let n = new.len().min(len as usize);
                span.as_mut_slice()[at..at + n].copy_from_slice(&new[..n]);
                self.write_back(
                    k,
                    vec![(cov.start, span, 0..cov.end as usize - cov.start as usize)],
                    r,
                );
                None
            }
            BlockIo::OrWrite { data: range, .. } => {
                let Some(mut span) = o.bufs[SPAN].take() else {
                    return missing();
                };
                let Some(new) = src(range) else {
                    return missing();
                };
                for (a, b) in span.as_mut_slice()[at..at + len as usize]
                    .iter_mut()
                    .zip(new)
                {
                    *a |= *b;
                }
                let n = span.len();
                self.write_back(k, vec![(cov.start, span, 0..n)], r);
                None
            }
            BlockIo::Write { data: range, .. } => {
                let Some(buf) = data.clone() else {
                    return missing();
                };
                let s = split_write(off, len, p);
                let mut parts = Vec::new();
                for (slot, edge) in [(HEAD, s.head), (TAIL, s.tail)] {
                    let Some(at) = edge else { continue };
                    let Some(mut b) = o.bufs[slot].take() else {
                        return missing();
                    };
                    let src = &buf.as_slice()[range.clone()];
                    patch(b.as_mut_slice(), at, off, len, |i| src[i]);
                    let n = b.len();
                    parts.push((at, b, 0..n));
                }
                if !s.middle.is_empty() {
                    let from = range.start + (s.middle.start - off) as usize;
                    let to = from + (s.middle.end - s.middle.start) as usize;
                    parts.push((s.middle.start, buf, from..to));
                }
                self.write_back(k, parts, r);
                None
            }
            BlockIo::WriteSame {
                block,
                unmap,
                block_size,
                ..
            } => {
                let Some(buf) = data.clone() else {
                    return missing();
                };
                let pat = &buf.as_slice()[block.clone()];
                if pat.is_empty() {
                    return Some((IoResult::Err(io::Error::other("empty block")), None));
                }
                let s = split_write(off, len, p);
                let mut parts = Vec::new();
                for (slot, edge) in [(HEAD, s.head), (TAIL, s.tail)] {
                    let Some(at) = edge else { continue };
                    let Some(mut b) = o.bufs[slot].take() else {
                        return missing();
                    };
                    patch(b.as_mut_slice(), at, off, len, |i| pat[i % pat.len()]);
                    let n = b.len();
                    parts.push((at, b, 0..n));
                }
                let mut same = None;
                if !s.middle.is_empty() {
                    // The middle starts a whole number of pattern blocks into the write
                    // (the pattern is one logical block, which divides the physical one).
                    debug_assert_eq!((s.middle.start - off) % pat.len() as u64, 0);
                    same = Some(OpRequest {
                        io: BlockIo::WriteSame {
                            offset: s.middle.start,
                            len: s.middle.end - s.middle.start,
                            block: block.clone(),
                            unmap: *unmap,
                            block_size: *block_size,
                        },
                        data: Some(buf.clone()),
                    });
                }
                self.write_back(k, parts, r);
                if let Some(req) = same {
                    self.start_inner(k, SPAN, req, r);
                }
                None
            }
            _ => Some((IoResult::Unsupported, None)),
        }
    }

    /// Starts the write phase: one inner WRITE per `(volume offset, buffer, range)`.
    fn write_back(&mut self, k: Key, parts: Vec<(u64, IoBuf, Range<usize>)>, r: &mut dyn Reactor) {
        if let Some(o) = self.ops.get_mut(&k) {
            o.phase = Phase::Writing;
        }
        for (offset, buf, range) in parts {
            let req = OpRequest {
                io: BlockIo::Write {
                    offset,
                    data: range,
                    fua: false,
                },
                data: Some(buf),
            };
            self.start_inner(k, SPAN, req, r);
        }
    }

    /// Completes the operation, releases its range and starts those it was holding back.
    fn finish(&mut self, k: Key, result: IoResult, data: Option<IoBuf>, r: &mut dyn Reactor) {
        let Some(o) = self.ops.remove(&k) else {
            return;
        };
        r.complete(Completion {
            op: o.op,
            result,
            data,
        });
        if o.locked {
            for g in self.lock.release(k) {
                self.begin(g, r);
            }
        }
    }
}

/// SBC-3 §5.2/§5.31: the first differing byte, as a miscompare.
fn compare_bytes(want: &[u8], got: &[u8]) -> IoResult {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(at) => IoResult::Miscompare { offset: at as u64 },
        None => IoResult::Ok,
    }
}

impl<E: Engine> Engine for RmwEngine<E> {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        let k = key(op);
        let locked = writes(&req.io);
        let range = extent(&req.io).map(|(off, len)| covering(off, len, self.phys));
        self.ops.insert(
            k,
            Outer {
                op,
                io: req.io,
                data: req.data,
                phase: Phase::Waiting,
                locked,
                inner: Vec::new(),
                bufs: [None, None],
                error: None,
                pass: None,
                cancelled: false,
            },
        );
        let go = !locked || self.lock.acquire(k, range.unwrap_or(0..0));
        if go {
            self.begin(k, r);
        }
        self.drain(r);
    }

    fn on_cqe(&mut self, tag: u64, res: i32, flags: u32, r: &mut dyn Reactor) {
        let mut c = Catch {
            r,
            caught: &mut self.caught,
        };
        self.inner.on_cqe(tag, res, flags, &mut c);
        self.drain(r);
    }

    fn on_timer(&mut self, tag: u64, r: &mut dyn Reactor) {
        let mut c = Catch {
            r,
            caught: &mut self.caught,
        };
        self.inner.on_timer(tag, &mut c);
        self.drain(r);
    }

    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor) {
        let k = key(op);
        let Some(o) = self.ops.get_mut(&k) else {
            return;
        };
        o.cancelled = true;
        match o.phase {
            Phase::Waiting => self.finish(k, IoResult::Cancelled, None, r),
            // Writes (passed through or not) run to their end: see the module documentation.
            Phase::Writing => {}
            Phase::Passing if writes(&o.io) => {}
            Phase::Passing | Phase::Reading => {
                let inner: Vec<Key> = o.inner.clone();
                for (index, generation) in inner {
                    let mut c = Catch {
                        r,
                        caught: &mut self.caught,
                    };
                    self.inner.cancel(OpId { index, generation }, &mut c);
                }
            }
        }
        self.drain(r);
    }

    fn in_flight(&self) -> usize {
        self.ops.len()
    }

    fn shutdown(&mut self, r: &mut dyn Reactor) {
        let mut c = Catch {
            r,
            caught: &mut self.caught,
        };
        self.inner.shutdown(&mut c);
        self.drain(r);
    }

    fn on_message(&mut self, msg: EngineMsg, r: &mut dyn Reactor) {
        let mut c = Catch {
            r,
            caught: &mut self.caught,
        };
        self.inner.on_message(msg, &mut c);
        self.drain(r);
    }
}

#[cfg(test)]
#[path = "rmw_engine_tests.rs"]
mod tests;
