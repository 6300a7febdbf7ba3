//! The file store's engine: runs each [`BlockIo`] as io_uring operations on the shard's ring.
//! Multi-step operations (COMPARE AND WRITE, ORWRITE, WRITE SAME, UNMAP over several ranges,
//! GET LBA STATUS over several extents, short transfers) are small state machines advanced by
//! each completion; one SQE per operation is in flight at a time, so cancelling is one ring
//! cancel of that SQE. On a memory filesystem (`inline`) plain reads and writes run as
//! pread/pwrite on the shard instead (see `file::memory_backed`).

use super::engine::{Completion, Engine, OpId, OpRequest, Reactor, RingToken};
use super::lba;
use super::{BackingCaps, BlockIo, IoResult};
use crate::buf::IoBuf;
use io_uring::{opcode, squeue, types};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Largest buffer WRITE SAME writes per step.
const WRITE_SAME_CHUNK: u64 = 1 << 20;

/// One plain transfer step, resumed after short completions.
#[derive(Copy, Clone, Debug)]
struct Xfer {
    write: bool,
    ptr: usize,
    len: usize,
    offset: u64,
    done: usize,
    dsync: bool,
}

/// What to do next with an operation.
enum Next {
    Submit(squeue::Entry),
    /// Move the bytes of the transfer step in `FileOp::xfer`: an SQE, or inline.
    Xfer,
    Done(IoResult),
}

/// One operation in flight.
struct FileOp {
    op: OpId,
    io: BlockIo,
    /// The command's Data-Out buffer, held so it outlives the kernel's use of it.
    data: Option<IoBuf>,
    /// Data read (Read), or scratch (COMPARE AND WRITE, VERIFY, ORWRITE, GET LBA STATUS).
    read_buf: Option<IoBuf>,
    /// WRITE SAME pattern.
    pattern: Option<IoBuf>,
    step: usize,
    xfer: Option<Xfer>,
    /// GET LBA STATUS: extents so far, the current one's pending decision, and where it is.
    extents: Vec<(bool, u64)>,
    lba_then: Option<(lba::Then, u64, u64)>,
    /// The SQE in flight, for cancel.
    inflight: Option<RingToken>,
    cancelled: bool,
}

/// A file's engine on one shard.
pub struct FileEngine {
    file: Arc<File>,
    caps: BackingCaps,
    ops: Vec<Option<FileOp>>,
    live: usize,
    /// Transfer steps run inline (pread/pwrite) rather than on the ring.
    inline: bool,
}

impl FileEngine {
    /// An engine for `file`; `inline` runs its transfers as pread/pwrite on the calling
    /// thread (only for files whose I/O never waits for a device).
    pub fn new(file: Arc<File>, caps: BackingCaps, inline: bool) -> FileEngine {
        FileEngine {
            file,
            caps,
            ops: Vec::new(),
            live: 0,
            inline,
        }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Acts on a step's outcome: submit its next SQE, or complete the operation. Inline
    /// transfer steps are run here, each result fed back as a completion would be, until the
    /// operation needs the ring or is done.
    fn advance(&mut self, idx: usize, mut next: Next, r: &mut dyn Reactor) {
        let (fd, caps) = (self.fd(), self.caps);
        let Some(o) = self.ops[idx].as_mut() else {
            return;
        };
        while matches!(next, Next::Xfer) && self.inline && !o.cancelled {
            let res = o.xfer_inline(fd);
            next = o.on_cqe(res, fd, caps, r);
        }
        if let Next::Xfer = next {
            next = Next::Submit(o.xfer_sqe(fd));
        }
        match next {
            Next::Submit(e) if !o.cancelled => {
                let tag = idx as u64 | u64::from(o.op.generation) << 32;
                // SAFETY: the entry points into `o.data`, `o.read_buf` or `o.pattern`, which
                // the op keeps until its completion, and the op is only dropped after the
                // CQE of its in-flight SQE (`inflight`) was delivered.
                o.inflight = Some(unsafe { r.submit(e, tag) });
            }
            Next::Submit(_) | Next::Xfer => self.finish(idx, IoResult::Cancelled, r),
            Next::Done(res) => self.finish(idx, res, r),
        }
    }

    fn finish(&mut self, idx: usize, result: IoResult, r: &mut dyn Reactor) {
        let Some(mut o) = self.ops[idx].take() else {
            return;
        };
        self.live -= 1;
        let result = if o.cancelled && matches!(result, IoResult::Err(_)) {
            IoResult::Cancelled
        } else {
            result
        };
        let data = match o.io {
            BlockIo::Read { .. } => o.read_buf.take(),
            _ => None,
        };
        r.complete(Completion {
            op: o.op,
            result,
            data,
        });
    }
}

impl Engine for FileEngine {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        let idx = op.index as usize;
        if self.ops.len() <= idx {
            self.ops.resize_with(idx + 1, || None);
        }
        self.ops[idx] = Some(FileOp {
            op,
            io: req.io,
            data: req.data,
            read_buf: None,
            pattern: None,
            step: 0,
            xfer: None,
            extents: Vec::new(),
            lba_then: None,
            inflight: None,
            cancelled: false,
        });
        self.live += 1;
        let (fd, caps) = (self.fd(), self.caps);
        let o = self.ops[idx].as_mut().expect("just stored");
        let next = o.start(fd, caps, r);
        self.advance(idx, next, r);
    }

    fn on_cqe(&mut self, tag: u64, res: i32, _flags: u32, r: &mut dyn Reactor) {
        let idx = tag as u32 as usize;
        let fd = self.fd();
        let caps = self.caps;
        let Some(o) = self
            .ops
            .get_mut(idx)
            .and_then(Option::as_mut)
            .filter(|o| o.op.generation == (tag >> 32) as u32)
        else {
            return;
        };
        o.inflight = None;
        if o.cancelled {
            // Whatever the SQE's own result, the operation ends here: no further step.
            self.finish(idx, IoResult::Cancelled, r);
            return;
        }
        let next = o.on_cqe(res, fd, caps, r);
        self.advance(idx, next, r);
    }

    fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}

    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor) {
        let idx = op.index as usize;
        let Some(o) = self
            .ops
            .get_mut(idx)
            .and_then(Option::as_mut)
            .filter(|o| o.op == op)
        else {
            return;
        };
        o.cancelled = true;
        match o.inflight {
            Some(t) => r.cancel(t),
            None => self.finish(idx, IoResult::Cancelled, r),
        }
    }

    fn in_flight(&self) -> usize {
        self.live
    }
}

impl FileOp {
    fn data_ptr(&self, r: &std::ops::Range<usize>) -> (usize, usize) {
        let d = self.data.as_ref().expect("write op has data");
        let end = r.end.min(d.len());
        let start = r.start.min(end);
        (d.as_ptr() as usize + start, end - start)
    }

    fn begin(&mut self, x: Xfer) -> Next {
        self.xfer = Some(x);
        Next::Xfer
    }

    /// The SQE for the rest of the transfer in progress.
    fn xfer_sqe(&self, fd: RawFd) -> squeue::Entry {
        let x = self.xfer.expect("transfer in progress");
        let ptr = (x.ptr + x.done) as *mut u8;
        let len = u32::try_from(x.len - x.done).unwrap_or(u32::MAX);
        let off = x.offset + x.done as u64;
        if x.write {
            let mut w = opcode::Write::new(types::Fd(fd), ptr as *const u8, len).offset(off);
            if x.dsync {
                w = w.rw_flags(libc::RWF_DSYNC);
            }
            w.build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(off)
                .build()
        }
    }

    /// Moves the rest of the transfer in progress with one pread/pwrite on this thread;
    /// returns what its CQE's result would have been (bytes moved, or -errno).
    fn xfer_inline(&self, fd: RawFd) -> i32 {
        let x = self.xfer.expect("transfer in progress");
        let len = (x.len - x.done).min(i32::MAX as usize & !4095);
        let iov = libc::iovec {
            iov_base: (x.ptr + x.done) as *mut libc::c_void,
            iov_len: len,
        };
        let off = (x.offset + x.done as u64) as libc::off_t;
        let flags = if x.write && x.dsync {
            libc::RWF_DSYNC
        } else {
            0
        };
        loop {
            // SAFETY: `ptr..ptr+len` lies inside the buffer this op holds (`data`,
            // `read_buf` or `pattern`) for its whole life, the same bytes the SQE would name;
            // the call returns before the buffer can be dropped.
            let n = unsafe {
                if x.write {
                    libc::pwritev2(fd, &iov, 1, off, flags)
                } else {
                    libc::preadv2(fd, &iov, 1, off, 0)
                }
            };
            if n >= 0 {
                return n as i32;
            }
            let err = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if err != libc::EINTR {
                return -err;
            }
        }
    }

    /// Reads `len` bytes at `offset` into a fresh pooled buffer held in `read_buf`.
    fn read_new(&mut self, r: &mut dyn Reactor, offset: u64, len: usize) -> Next {
        let mut b = r.pool().alloc(len);
        let ptr = b.as_mut_ptr() as usize;
        self.read_buf = Some(b);
        self.begin(Xfer {
            write: false,
            ptr,
            len,
            offset,
            done: 0,
            dsync: false,
        })
    }

    fn start(&mut self, fd: RawFd, caps: BackingCaps, r: &mut dyn Reactor) -> Next {
        match self.io.clone() {
            BlockIo::Read { offset, len } => self.read_new(r, offset, len as usize),
            BlockIo::Write { offset, data, fua } => {
                let (ptr, len) = self.data_ptr(&data);
                if len == 0 {
                    return Next::Done(IoResult::Ok);
                }
                self.begin(Xfer {
                    write: true,
                    ptr,
                    len,
                    offset,
                    done: 0,
                    dsync: fua,
                })
            }
            BlockIo::Flush => Next::Submit(
                opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            ),
            BlockIo::Discard { .. } => self.next_discard(fd, caps),
            BlockIo::WriteSame {
                offset,
                len,
                block,
                unmap,
                ..
            } => {
                if len == 0 {
                    return Next::Done(IoResult::Ok);
                }
                let (bptr, blen) = self.data_ptr(&block);
                // SAFETY: `bptr..bptr+blen` lies inside the task's Data-Out buffer, which
                // `self.data` keeps alive and nobody writes while the task executes.
                let blk = unsafe { std::slice::from_raw_parts(bptr as *const u8, blen) };
                if unmap && caps.unmap && blk.iter().all(|b| *b == 0) {
                    self.io = BlockIo::Discard {
                        ranges: vec![(offset, len)],
                    };
                    return self.next_discard(fd, caps);
                }
                if blen == 0 {
                    return Next::Done(IoResult::Err(io::Error::from(io::ErrorKind::InvalidInput)));
                }
                let chunk = len.min(WRITE_SAME_CHUNK.max(blen as u64) / blen as u64 * blen as u64);
                let mut p = r.pool().alloc(chunk as usize);
                for c in p.as_mut_slice().chunks_mut(blen) {
                    c.copy_from_slice(&blk[..c.len()]);
                }
                self.pattern = Some(p);
                self.step = 0;
                self.next_write_same()
            }
            BlockIo::CompareAndWrite { offset, len, .. }
            | BlockIo::Verify { offset, len, .. }
            | BlockIo::OrWrite { offset, len, .. } => self.read_new(r, offset, len as usize),
            BlockIo::LbaStatus { .. } => {
                if !caps.lba_status {
                    return Next::Done(IoResult::Unsupported);
                }
                self.next_extent(fd, r)
            }
        }
    }

    fn next_discard(&mut self, fd: RawFd, caps: BackingCaps) -> Next {
        let BlockIo::Discard { ranges } = &self.io else {
            unreachable!("discard state")
        };
        if !caps.unmap {
            // Deallocation is advisory (SBC-3 §4.7.3.3): without hole punching, UNMAP is a
            // successful no-op, as the VPD pages say (LBPU=0).
            return Next::Done(IoResult::Ok);
        }
        match ranges.get(self.step) {
            None => Next::Done(IoResult::Ok),
            Some(&(off, len)) => {
                self.step += 1;
                Next::Submit(
                    opcode::Fallocate::new(types::Fd(fd), len)
                        .offset(off)
                        .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                        .build(),
                )
            }
        }
    }

    fn next_write_same(&mut self) -> Next {
        let BlockIo::WriteSame { offset, len, .. } = self.io else {
            unreachable!("write same state")
        };
        let p = self.pattern.as_ref().expect("pattern");
        let done = self.step as u64 * p.len() as u64;
        if done >= len {
            return Next::Done(IoResult::Ok);
        }
        self.step += 1;
        let n = (len - done).min(p.len() as u64) as usize;
        let ptr = p.as_ptr() as usize;
        self.begin(Xfer {
            write: true,
            ptr,
            len: n,
            offset: offset + done,
            done: 0,
            dsync: false,
        })
    }

    /// GET LBA STATUS: plans the next extent (seek), reading its blocks when needed.
    fn next_extent(&mut self, fd: RawFd, r: &mut dyn Reactor) -> Next {
        let BlockIo::LbaStatus {
            offset,
            end,
            block,
            max,
        } = self.io
        else {
            unreachable!("lba status state")
        };
        loop {
            let cur = offset + self.extents.iter().map(|e| e.1).sum::<u64>();
            if cur >= end || self.extents.len() >= usize::from(max) {
                return Next::Done(IoResult::Extents(std::mem::take(&mut self.extents)));
            }
            let block = u64::from(block);
            let limit = (end - cur).min(u64::from(u32::MAX) * block);
            match lba::plan(fd, cur, limit, block) {
                Err(e) => return Next::Done(IoResult::Err(e)),
                Ok(lba::Plan::Done(m, l)) => self.push_extent(m, l, limit, block),
                Ok(lba::Plan::Read { at, len, then }) => {
                    self.lba_then = Some((then, cur, limit));
                    return self.read_new(r, at, len as usize);
                }
            }
        }
    }

    fn push_extent(&mut self, mapped: bool, len: u64, limit: u64, block: u64) {
        // At least one block, at most what is left.
        let len = (len / block * block).clamp(block, limit);
        self.extents.push((mapped, len));
    }

    /// ORWRITE's second step: OR Data-Out into the blocks read, write them back.
    fn after_or_read(&mut self) -> Next {
        let BlockIo::OrWrite {
            offset, data, fua, ..
        } = self.io.clone()
        else {
            unreachable!("orwrite state")
        };
        self.step = 1;
        let (dptr, dlen) = self.data_ptr(&data);
        // SAFETY: as in WriteSame: inside the Data-Out buffer `self.data` keeps alive.
        let d = unsafe { std::slice::from_raw_parts(dptr as *const u8, dlen) };
        let buf = self.read_buf.as_mut().expect("orwrite buffer");
        for (b, o) in buf.as_mut_slice().iter_mut().zip(d) {
            *b |= *o;
        }
        let (ptr, len) = (buf.as_ptr() as usize, buf.len());
        self.begin(Xfer {
            write: true,
            ptr,
            len,
            offset,
            done: 0,
            dsync: fua,
        })
    }

    fn after_compare_read(&mut self) -> Next {
        let read = self.read_buf.as_ref().expect("compare buffer");
        let (cmp_range, write) = match &self.io {
            BlockIo::CompareAndWrite { verify, write, .. } => {
                (Some(verify.clone()), Some(write.clone()))
            }
            BlockIo::Verify { compare, .. } => (compare.clone(), None),
            _ => unreachable!("compare state"),
        };
        if let Some(r) = cmp_range {
            if let Some(pos) = miscompare(self.data.as_ref(), &r, read.as_slice()) {
                return Next::Done(IoResult::Miscompare { offset: pos });
            }
        }
        match (write, &self.io) {
            (Some(w), BlockIo::CompareAndWrite { offset, .. }) => {
                let offset = *offset;
                self.step = 1;
                let (ptr, len) = self.data_ptr(&w);
                self.begin(Xfer {
                    write: true,
                    ptr,
                    len,
                    offset,
                    done: 0,
                    dsync: false,
                })
            }
            _ => Next::Done(IoResult::Ok),
        }
    }

    /// Advances after a completion with result `res`.
    fn on_cqe(&mut self, res: i32, fd: RawFd, caps: BackingCaps, r: &mut dyn Reactor) -> Next {
        if res < 0 {
            return Next::Done(IoResult::Err(io::Error::from_raw_os_error(-res)));
        }
        if let Some(mut x) = self.xfer {
            let lba_read = matches!(self.io, BlockIo::LbaStatus { .. });
            if res == 0 && x.len > 0 && !lba_read {
                // Zero bytes moved: past the end of the medium.
                return Next::Done(IoResult::Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            x.done += res as usize;
            if x.done < x.len && !(lba_read && res == 0) {
                self.xfer = Some(x);
                return Next::Xfer;
            }
            self.xfer = None;
            if lba_read {
                let Some((then, cur, limit)) = self.lba_then.take() else {
                    return Next::Done(IoResult::Unsupported);
                };
                let BlockIo::LbaStatus { block, .. } = self.io else {
                    unreachable!("lba status state")
                };
                let block = u64::from(block);
                let buf = self.read_buf.take().expect("lba scan buffer");
                match lba::finish(fd, then, &buf.as_slice()[..x.done], cur, limit, block) {
                    Ok((m, l)) => self.push_extent(m, l, limit, block),
                    Err(e) => return Next::Done(IoResult::Err(e)),
                }
                return self.next_extent(fd, r);
            }
        }
        match &self.io {
            BlockIo::Read { .. } | BlockIo::Write { .. } | BlockIo::Flush => {
                Next::Done(IoResult::Ok)
            }
            BlockIo::Discard { .. } => self.next_discard(fd, caps),
            BlockIo::WriteSame { .. } => self.next_write_same(),
            BlockIo::CompareAndWrite { .. } | BlockIo::OrWrite { .. } if self.step == 1 => {
                Next::Done(IoResult::Ok)
            }
            BlockIo::OrWrite { .. } => self.after_or_read(),
            BlockIo::CompareAndWrite { .. } | BlockIo::Verify { .. } => self.after_compare_read(),
            BlockIo::LbaStatus { .. } => self.next_extent(fd, r),
        }
    }
}

/// The first byte where `read` differs from `range` of the Data-Out buffer, if any.
pub fn miscompare(
    data: Option<&IoBuf>,
    range: &std::ops::Range<usize>,
    read: &[u8],
) -> Option<u64> {
    let d = data.map(|d| d.as_slice()).unwrap_or(&[]);
    let want = &d[range.start.min(d.len())..range.end.min(d.len())];
    want.iter()
        .zip(read)
        .position(|(a, b)| a != b)
        .map(|p| p as u64)
}
