//! The `null` backing store: reads return zeros and writes are dropped. For benchmarks, so the
//! target's own cost can be measured without a medium.

use super::{BackingCaps, BackingError, BackingStore, BsOFlags};
use std::io;
use std::os::fd::RawFd;

/// Size tgt's bs_null reports (`BS_NULL_SIZE`, 1 TiB), so `show` prints the same size.
pub const NULL_SIZE_BYTES: u64 = 1 << 40;

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
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}
