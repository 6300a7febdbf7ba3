//! Runs one SCSI [`BlockIo`] against a backing store on the shard's own ring. Multi-step
//! operations (COMPARE AND WRITE, WRITE SAME, UNMAP over several ranges, short transfers) are
//! small state machines advanced by each completion. Stores without a descriptor (`null`)
//! complete inline: reads are served from shared zero-filled buffers, writes are dropped.

use crate::backing::{BackingCaps, BlockIo, IoResult};
use crate::buf::{BufPool, IoBuf};
use crate::iscsi::task::TaskRef;
use crate::scsi::LogicalUnit;
use io_uring::{opcode, squeue, types};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// Largest buffer WRITE SAME writes per step.
const WRITE_SAME_CHUNK: u64 = 1 << 20;
/// Largest read served from a cached zero buffer for the null store.
const ZERO_CACHE_MAX: usize = 1 << 20;

/// Zero-filled read buffers shared by every null-store read of the same length (they are
/// never written after creation, so sharing is safe and saves a memset per read).
#[derive(Default)]
pub struct ZeroCache {
    by_len: HashMap<usize, IoBuf>,
}

impl ZeroCache {
    /// A zero-filled buffer of `len` bytes.
    pub fn get(&mut self, pool: &BufPool, len: usize) -> IoBuf {
        if len > ZERO_CACHE_MAX || self.by_len.len() >= 32 && !self.by_len.contains_key(&len) {
            let mut b = pool.alloc(len);
            b.as_mut_slice().fill(0);
            return b;
        }
        self.by_len
            .entry(len)
            .or_insert_with(|| {
                let mut b = pool.alloc(len);
                b.as_mut_slice().fill(0);
                b
            })
            .clone()
    }
}

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
pub enum Next {
    /// Submit this entry (its user_data is set by the caller).
    Submit(squeue::Entry),
    /// Finished.
    Done(IoResult),
}

/// A backend operation in flight for one task.
pub struct PendingIo {
    pub task: TaskRef,
    pub lu: Arc<LogicalUnit>,
    pub io: BlockIo,
    /// Data read (Read), or scratch (COMPARE AND WRITE, VERIFY).
    pub read_buf: Option<IoBuf>,
    /// The task's Data-Out buffer, held so it outlives the kernel's use of it.
    pub data: Option<IoBuf>,
    /// WRITE SAME pattern.
    pattern: Option<IoBuf>,
    step: usize,
    xfer: Option<Xfer>,
    fd: Option<RawFd>,
    caps: BackingCaps,
}

impl PendingIo {
    /// Prepares an operation; call [`PendingIo::start`] next.
    pub fn new(task: TaskRef, lu: Arc<LogicalUnit>, io: BlockIo, data: Option<IoBuf>) -> PendingIo {
        let (fd, caps) = match lu.backing() {
            Some(b) => (b.raw_fd(), b.caps()),
            None => (None, BackingCaps::default()),
        };
        PendingIo {
            task,
            lu,
            io,
            read_buf: None,
            data,
            pattern: None,
            step: 0,
            xfer: None,
            fd,
            caps,
        }
    }

    fn data_ptr(&self, r: &std::ops::Range<usize>) -> (usize, usize) {
        let d = self.data.as_ref().expect("write op has data");
        let end = r.end.min(d.len());
        let start = r.start.min(end);
        (d.as_ptr() as usize + start, end - start)
    }

    fn begin(&mut self, x: Xfer) -> Next {
        self.xfer = Some(x);
        self.resume()
    }

    fn resume(&mut self) -> Next {
        let x = self.xfer.expect("transfer in progress");
        let fd = self
            .fd
            .expect("transfers only for stores with a descriptor");
        let ptr = (x.ptr + x.done) as *mut u8;
        let len = u32::try_from(x.len - x.done).unwrap_or(u32::MAX);
        let off = x.offset + x.done as u64;
        let e = if x.write {
            let mut w = opcode::Write::new(types::Fd(fd), ptr as *const u8, len).offset(off);
            if x.dsync {
                w = w.rw_flags(libc::RWF_DSYNC);
            }
            w.build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(off)
                .build()
        };
        Next::Submit(e)
    }

    /// Reads `len` bytes at `offset` into a fresh pooled buffer held in `read_buf`.
    fn read_new(&mut self, pool: &BufPool, offset: u64, len: u32) -> Next {
        let mut b = pool.alloc(len as usize);
        let ptr = b.as_mut_ptr() as usize;
        self.read_buf = Some(b);
        self.begin(Xfer {
            write: false,
            ptr,
            len: len as usize,
            offset,
            done: 0,
            dsync: false,
        })
    }

    /// Starts the operation.
    pub fn start(&mut self, pool: &BufPool, zeros: &mut ZeroCache) -> Next {
        match self.io.clone() {
            BlockIo::Read { offset, len } => {
                if self.fd.is_none() {
                    self.read_buf = Some(zeros.get(pool, len as usize));
                    return Next::Done(IoResult::Ok);
                }
                self.read_new(pool, offset, len)
            }
            BlockIo::Write { offset, data, fua } => {
                if self.fd.is_none() {
                    return Next::Done(IoResult::Ok);
                }
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
            BlockIo::Flush => match self.fd {
                None => Next::Done(IoResult::Ok),
                Some(fd) => Next::Submit(
                    opcode::Fsync::new(types::Fd(fd))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                ),
            },
            BlockIo::Discard { .. } => self.next_discard(),
            BlockIo::WriteSame {
                offset,
                len,
                block,
                unmap,
                ..
            } => {
                if self.fd.is_none() || len == 0 {
                    return Next::Done(IoResult::Ok);
                }
                let (bptr, blen) = self.data_ptr(&block);
                // SAFETY: `bptr..bptr+blen` lies inside the task's Data-Out buffer, which
                // `self.data` keeps alive and nobody writes while the task executes.
                let blk = unsafe { std::slice::from_raw_parts(bptr as *const u8, blen) };
                if unmap && self.caps.unmap && blk.iter().all(|b| *b == 0) {
                    self.io = BlockIo::Discard {
                        ranges: vec![(offset, len)],
                    };
                    return self.next_discard();
                }
                if blen == 0 {
                    return Next::Done(IoResult::Err(io::Error::from(io::ErrorKind::InvalidInput)));
                }
                let chunk = len.min(WRITE_SAME_CHUNK.max(blen as u64) / blen as u64 * blen as u64);
                let mut p = pool.alloc(chunk as usize);
                for c in p.as_mut_slice().chunks_mut(blen) {
                    c.copy_from_slice(&blk[..c.len()]);
                }
                self.pattern = Some(p);
                self.step = 0;
                self.next_write_same()
            }
            BlockIo::CompareAndWrite { offset, len, .. }
            | BlockIo::Verify { offset, len, .. }
            | BlockIo::OrWrite { offset, len, .. } => {
                if self.fd.is_none() {
                    self.read_buf = Some(zeros.get(pool, len as usize));
                    if matches!(self.io, BlockIo::OrWrite { .. }) {
                        return self.after_or_read();
                    }
                    return self.after_compare_read(pool, zeros);
                }
                self.read_new(pool, offset, len)
            }
        }
    }

    fn next_discard(&mut self) -> Next {
        let BlockIo::Discard { ranges } = &self.io else {
            unreachable!("discard state")
        };
        let Some(fd) = self.fd else {
            return Next::Done(IoResult::Ok);
        };
        if !self.caps.unmap {
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

    /// ORWRITE's second step: OR Data-Out into the blocks read, write them back.
    fn after_or_read(&mut self) -> Next {
        let BlockIo::OrWrite {
            offset, data, fua, ..
        } = self.io.clone()
        else {
            unreachable!("orwrite state")
        };
        self.step = 1;
        if self.fd.is_none() {
            // The null store's read buffer is a shared zero buffer: nothing to store anyway.
            return Next::Done(IoResult::Ok);
        }
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

    fn after_compare_read(&mut self, _pool: &BufPool, _zeros: &mut ZeroCache) -> Next {
        let read = self.read_buf.as_ref().expect("compare buffer");
        let (cmp_range, write) = match &self.io {
            BlockIo::CompareAndWrite { verify, write, .. } => {
                (Some(verify.clone()), Some(write.clone()))
            }
            BlockIo::Verify { compare, .. } => (compare.clone(), None),
            _ => unreachable!("compare state"),
        };
        if let Some(r) = cmp_range {
            let d = self.data.as_ref().map(|d| d.as_slice()).unwrap_or(&[]);
            let want = &d[r.start.min(d.len())..r.end.min(d.len())];
            let got = read.as_slice();
            if let Some(pos) = want.iter().zip(got).position(|(a, b)| a != b) {
                return Next::Done(IoResult::Miscompare { offset: pos as u64 });
            }
        }
        match (write, &self.io) {
            (Some(w), BlockIo::CompareAndWrite { offset, .. }) => {
                let offset = *offset;
                self.step = 1;
                if self.fd.is_none() {
                    return Next::Done(IoResult::Ok);
                }
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
    pub fn on_cqe(&mut self, res: i32, pool: &BufPool, zeros: &mut ZeroCache) -> Next {
        if res < 0 {
            return Next::Done(IoResult::Err(io::Error::from_raw_os_error(-res)));
        }
        if let Some(mut x) = self.xfer {
            if res == 0 && x.len > 0 {
                // Zero bytes moved: past the end of the medium.
                return Next::Done(IoResult::Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            x.done += res as usize;
            if x.done < x.len {
                self.xfer = Some(x);
                return self.resume();
            }
            self.xfer = None;
        }
        match &self.io {
            BlockIo::Read { .. } | BlockIo::Write { .. } | BlockIo::Flush => {
                Next::Done(IoResult::Ok)
            }
            BlockIo::Discard { .. } => self.next_discard(),
            BlockIo::WriteSame { .. } => self.next_write_same(),
            BlockIo::CompareAndWrite { .. } | BlockIo::OrWrite { .. } if self.step == 1 => {
                Next::Done(IoResult::Ok)
            }
            BlockIo::OrWrite { .. } => self.after_or_read(),
            BlockIo::CompareAndWrite { .. } | BlockIo::Verify { .. } => {
                self.after_compare_read(pool, zeros)
            }
        }
    }
}
