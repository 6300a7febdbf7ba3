//! The `null` backing store: reads return zeros and writes are dropped. For benchmarks, so the
//! target's own cost can be measured without a medium. Its engine answers every operation
//! inline, within [`super::engine::Engine::start`].

use super::engine::{Completion, Engine, OpId, OpRequest, Reactor};
use super::file_engine::miscompare;
use super::{BackingCaps, BackingError, BackingStore, BlockIo, BsOFlags, IoResult};
use crate::buf::{BufPool, IoBuf};
use std::collections::HashMap;
use std::io;

/// Size tgt's bs_null reports (`BS_NULL_SIZE`, 1 TiB), so `show` prints the same size.
pub const NULL_SIZE_BYTES: u64 = 1 << 40;
/// Largest read served from a cached zero buffer.
const ZERO_CACHE_MAX: usize = 1 << 20;
/// Most distinct read lengths with a cached zero buffer.
const ZERO_CACHE_LENS: usize = 32;

/// A store with no medium (tgt's `bs_null`).
#[derive(Debug)]
pub struct NullStore {
    path: String,
}

impl NullStore {
    /// Creates the store; `path` is only remembered for `show` (tgt users pass `/dev/null`).
    pub fn new(path: &str, oflags: BsOFlags) -> Result<NullStore, BackingError> {
        if oflags != BsOFlags::default() {
            return Err(BackingError::BadFlags(oflags.show().to_string()));
        }
        Ok(NullStore {
            path: path.to_string(),
        })
    }
}

impl BackingStore for NullStore {
    fn bstype(&self) -> &'static str {
        "null"
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn oflags(&self) -> BsOFlags {
        BsOFlags::default()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(NULL_SIZE_BYTES)
    }
    fn caps(&self) -> BackingCaps {
        BackingCaps::default()
    }
    fn engine(&self, _env: super::engine::EngineEnv) -> Box<dyn Engine> {
        Box::new(NullEngine::default())
    }
}

/// Zero-filled read buffers shared by every null read of the same length (they are never
/// written after creation, so sharing is safe and saves a memset per read).
#[derive(Default)]
struct ZeroCache {
    by_len: HashMap<usize, IoBuf>,
}

impl ZeroCache {
    fn get(&mut self, pool: &BufPool, len: usize) -> IoBuf {
        let zeroed = || {
            let mut b = pool.alloc(len);
            b.as_mut_slice().fill(0);
            b
        };
        if len > ZERO_CACHE_MAX
            || self.by_len.len() >= ZERO_CACHE_LENS && !self.by_len.contains_key(&len)
        {
            return zeroed();
        }
        self.by_len.entry(len).or_insert_with(zeroed).clone()
    }
}

/// The null store's engine: every answer is inline.
#[derive(Default)]
pub struct NullEngine {
    zeros: ZeroCache,
}

impl Engine for NullEngine {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        let (result, data) = match &req.io {
            BlockIo::Read { len, .. } => {
                (IoResult::Ok, Some(self.zeros.get(r.pool(), *len as usize)))
            }
            BlockIo::CompareAndWrite { verify, .. } => {
                match miscompare(req.data.as_ref(), verify, &zeros_like(verify.len())) {
                    Some(offset) => (IoResult::Miscompare { offset }, None),
                    None => (IoResult::Ok, None),
                }
            }
            BlockIo::Verify {
                compare: Some(c), ..
            } => match miscompare(req.data.as_ref(), c, &zeros_like(c.len())) {
                Some(offset) => (IoResult::Miscompare { offset }, None),
                None => (IoResult::Ok, None),
            },
            BlockIo::LbaStatus { .. } => (IoResult::Unsupported, None),
            _ => (IoResult::Ok, None),
        };
        r.complete(Completion { op, result, data });
    }
    fn on_cqe(&mut self, _tag: u64, _res: i32, _flags: u32, _r: &mut dyn Reactor) {}
    fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}
    fn cancel(&mut self, _op: OpId, _r: &mut dyn Reactor) {}
    fn in_flight(&self) -> usize {
        0
    }
}

/// What the null medium holds over `len` bytes.
fn zeros_like(len: usize) -> Vec<u8> {
    vec![0; len]
}
