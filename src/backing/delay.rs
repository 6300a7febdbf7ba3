//! The `delay` backing store, for tests only: an in-memory medium whose engine has no file
//! descriptor and completes every operation after a delay, out of order (each operation's
//! delay is drawn from a range). It exercises what a remote store (the Curve client) will:
//! completions that come from timers rather than from the ring, in any order, and
//! cancellation of operations that are still waiting.
//!
//! It exists only when tgtd runs with `CURVE_TGT_TEST_ENGINES=1` in its environment; without
//! it `--bstype delay` is an unknown type, as for any other name. The backing-store path says
//! what to serve: `size=<bytes>[K|M|G]:delay_us=<min>[-<max>]`, e.g.
//! `size=64M:delay_us=200-2000` (`:`-separated, since tgtadm's own request is
//! `,`-separated; the whole medium is held in memory, zero filled at start). A third key,
//! `panic_offset=<bytes>`, makes a READ at exactly that byte offset panic the shard that
//! starts it: the drill for a shard thread that dies (tests of what the daemon does then).

use super::engine::{Completion, Engine, OpId, OpRequest, Reactor, TimerId};
use super::file_engine::miscompare;
use super::{BackingCaps, BackingError, BackingStore, BlockIo, BsOFlags, IoResult};
use std::io;
use std::sync::{Arc, Mutex};

/// The environment variable that makes `delay` available.
pub const ENV: &str = "CURVE_TGT_TEST_ENGINES";
/// Most bytes a delay store holds.
const MAX_SIZE: u64 = 4 << 30;

/// Whether this process may open `delay` stores.
pub fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1")
}

/// What a `delay` store serves.
#[derive(Debug)]
pub struct DelayStore {
    path: String,
    mem: Arc<Mutex<Vec<u8>>>,
    delay_us: (u64, u64),
    panic_offset: Option<u64>,
}

fn bad(path: &str, why: &str) -> BackingError {
    BackingError::Open {
        path: path.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let (num, mul) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 1 << 10),
        b'M' | b'm' => (&v[..v.len() - 1], 1 << 20),
        b'G' | b'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

impl DelayStore {
    /// Parses the path (see the module documentation) and allocates the medium.
    pub fn open(path: &str, oflags: BsOFlags) -> Result<DelayStore, BackingError> {
        if oflags != BsOFlags::default() {
            return Err(BackingError::BadFlags(oflags.show().to_string()));
        }
        let (mut size, mut delay, mut panic_offset) = (None, (0, 0), None);
        for kv in path.split(':') {
            match kv.split_once('=') {
                Some(("size", v)) => size = parse_size(v),
                Some(("delay_us", v)) => {
                    let (a, b) = v.split_once('-').unwrap_or((v, v));
                    let (a, b) = (a.parse::<u64>(), b.parse::<u64>());
                    let (Ok(a), Ok(b)) = (a, b) else {
                        return Err(bad(path, "delay_us=MIN[-MAX]"));
                    };
                    delay = (a.min(b), a.max(b));
                }
                Some(("panic_offset", v)) => match v.parse::<u64>() {
                    Ok(v) => panic_offset = Some(v),
                    Err(_) => return Err(bad(path, "panic_offset=BYTES")),
                },
                _ => return Err(bad(path, "expected size=N:delay_us=MIN[-MAX]")),
            }
        }
        let size = size
            .filter(|s| *s > 0 && *s <= MAX_SIZE)
            .ok_or_else(|| bad(path, "size=N (at most 4G)"))?;
        Ok(DelayStore {
            path: path.to_string(),
            mem: Arc::new(Mutex::new(vec![0; size as usize])),
            delay_us: delay,
            panic_offset,
        })
    }
}

impl BackingStore for DelayStore {
    fn bstype(&self) -> &'static str {
        "delay"
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn oflags(&self) -> BsOFlags {
        BsOFlags::default()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self
            .mem
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .len() as u64)
    }
    fn caps(&self) -> BackingCaps {
        BackingCaps {
            unmap: true,
            unmap_reads_zero: true,
            lba_status: true,
            max_write_same_bytes: None,
        }
    }
    fn engine(&self, env: super::engine::EngineEnv) -> Box<dyn Engine> {
        Box::new(DelayEngine {
            mem: self.mem.clone(),
            delay_us: self.delay_us,
            panic_offset: self.panic_offset,
            ops: Vec::new(),
            live: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ env.shard as u64,
        })
    }
}

struct DelayOp {
    op: OpId,
    req: OpRequest,
    read_buf: Option<crate::buf::IoBuf>,
    timer: TimerId,
}

/// A delay store's engine on one shard.
pub struct DelayEngine {
    mem: Arc<Mutex<Vec<u8>>>,
    delay_us: (u64, u64),
    panic_offset: Option<u64>,
    ops: Vec<Option<DelayOp>>,
    live: usize,
    rng: u64,
}

impl DelayEngine {
    fn next_delay_ns(&mut self) -> u64 {
        // xorshift64: only a spread of delays, so completions come out of order.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, hi) = self.delay_us;
        (lo + self.rng % (hi - lo + 1)) * 1000
    }

    fn take(&mut self, op: OpId) -> Option<DelayOp> {
        let slot = self.ops.get_mut(op.index as usize)?;
        if slot.as_ref().is_some_and(|o| o.op == op) {
            self.live -= 1;
            slot.take()
        } else {
            None
        }
    }
}

fn tag_of(op: OpId) -> u64 {
    u64::from(op.index) | u64::from(op.generation) << 32
}

fn op_of(tag: u64) -> OpId {
    OpId {
        index: tag as u32,
        generation: (tag >> 32) as u32,
    }
}

impl Engine for DelayEngine {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        let idx = op.index as usize;
        if self.ops.len() <= idx {
            self.ops.resize_with(idx + 1, || None);
        }
        if let BlockIo::Read { offset, .. } = req.io {
            if Some(offset) == self.panic_offset {
                panic!("delay store: READ at panic_offset={offset}: the shard dies (test drill)");
            }
        }
        // The read buffer is taken now, as a remote store's receive buffer would be.
        let read_buf = match req.io {
            BlockIo::Read { len, .. } => Some(r.pool().alloc(len as usize)),
            _ => None,
        };
        let at = r.now() + self.next_delay_ns();
        let timer = r.timer(at, tag_of(op));
        self.ops[idx] = Some(DelayOp {
            op,
            req,
            read_buf,
            timer,
        });
        self.live += 1;
    }

    fn on_cqe(&mut self, _tag: u64, _res: i32, _flags: u32, _r: &mut dyn Reactor) {}

    fn on_timer(&mut self, tag: u64, r: &mut dyn Reactor) {
        let Some(mut o) = self.take(op_of(tag)) else {
            return;
        };
        let result = {
            let mut mem = match self.mem.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            apply(&mut mem, &o.req, o.read_buf.as_mut())
        };
        r.complete(Completion {
            op: o.op,
            result,
            data: o.read_buf,
        });
    }

    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor) {
        let Some(o) = self.take(op) else { return };
        r.cancel_timer(o.timer);
        r.complete(Completion {
            op,
            result: IoResult::Cancelled,
            data: None,
        });
    }

    fn in_flight(&self) -> usize {
        self.live
    }
}

fn range(mem: &[u8], offset: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= mem.len() as u64).then_some(offset as usize..end as usize)
}

/// Runs one operation against the memory.
fn apply(mem: &mut [u8], req: &OpRequest, read_buf: Option<&mut crate::buf::IoBuf>) -> IoResult {
    let eof = || IoResult::Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    let data = req.data.as_ref().map(|d| d.as_slice()).unwrap_or(&[]);
    let sub = |r: &std::ops::Range<usize>| &data[r.start.min(data.len())..r.end.min(data.len())];
    match &req.io {
        BlockIo::Read { offset, len } => {
            let (Some(m), Some(b)) = (range(mem, *offset, u64::from(*len)), read_buf) else {
                return eof();
            };
            b.as_mut_slice().copy_from_slice(&mem[m]);
            IoResult::Ok
        }
        BlockIo::Write { offset, data, .. } => {
            let d = sub(data);
            let Some(m) = range(mem, *offset, d.len() as u64) else {
                return eof();
            };
            mem[m].copy_from_slice(d);
            IoResult::Ok
        }
        BlockIo::Flush => IoResult::Ok,
        BlockIo::Discard { ranges } => {
            for (off, len) in ranges {
                match range(mem, *off, *len) {
                    Some(m) => mem[m].fill(0),
                    None => return eof(),
                }
            }
            IoResult::Ok
        }
        BlockIo::WriteSame {
            offset, len, block, ..
        } => {
            let b = sub(block);
            let Some(m) = range(mem, *offset, *len).filter(|_| !b.is_empty()) else {
                return eof();
            };
            for c in mem[m].chunks_mut(b.len()) {
                c.copy_from_slice(&b[..c.len()]);
            }
            IoResult::Ok
        }
        BlockIo::CompareAndWrite {
            offset,
            len,
            verify,
            write,
        } => {
            let Some(m) = range(mem, *offset, u64::from(*len)) else {
                return eof();
            };
            if let Some(offset) = miscompare(req.data.as_ref(), verify, &mem[m.clone()]) {
                return IoResult::Miscompare { offset };
            }
            let w = sub(write);
            mem[m.start..m.start + w.len().min(m.len())]
                .copy_from_slice(&w[..w.len().min(m.len())]);
            IoResult::Ok
        }
        BlockIo::OrWrite {
            offset, len, data, ..
        } => {
            let Some(m) = range(mem, *offset, u64::from(*len)) else {
                return eof();
            };
            for (b, o) in mem[m].iter_mut().zip(sub(data)) {
                *b |= *o;
            }
            IoResult::Ok
        }
        BlockIo::Verify {
            offset,
            len,
            compare,
        } => {
            let Some(m) = range(mem, *offset, u64::from(*len)) else {
                return eof();
            };
            match compare
                .as_ref()
                .and_then(|c| miscompare(req.data.as_ref(), c, &mem[m]))
            {
                Some(offset) => IoResult::Miscompare { offset },
                None => IoResult::Ok,
            }
        }
        BlockIo::LbaStatus {
            offset,
            end,
            block,
            max,
        } => {
            // Deallocated = reads as zeros (the medium is zero filled and UNMAP zeroes).
            let block = u64::from(*block).max(1);
            let end = (*end).min(mem.len() as u64);
            let mut out: Vec<(bool, u64)> = Vec::new();
            let mut cur = *offset;
            while cur < end {
                let n = block.min(end - cur);
                let mapped = mem[cur as usize..(cur + n) as usize]
                    .iter()
                    .any(|b| *b != 0);
                let full = out.len() >= usize::from(*max);
                match out.last_mut() {
                    Some((m, l)) if *m == mapped && *l + n <= u64::from(u32::MAX) * block => {
                        *l += n
                    }
                    _ if full => break,
                    _ => out.push((mapped, n)),
                }
                cur += n;
            }
            IoResult::Extents(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_forms() {
        let s = DelayStore::open("size=1M:delay_us=5-9", BsOFlags::default()).unwrap();
        assert_eq!(s.size_bytes().unwrap(), 1 << 20);
        assert_eq!(s.delay_us, (5, 9));
        assert!(DelayStore::open("size=0", BsOFlags::default()).is_err());
        assert!(DelayStore::open("size=1M:bogus=1", BsOFlags::default()).is_err());
        assert!(DelayStore::open("size=1M:delay_us=x", BsOFlags::default()).is_err());
    }
}
