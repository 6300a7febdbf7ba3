//! Backing stores: where a logical unit's blocks live.
//!
//! One trait serves every store. A store does not run I/O itself: it describes itself (size,
//! capabilities, file descriptor) and the owning shard turns each [`BlockIo`] into io_uring
//! operations on its own ring, so backend I/O is submitted and completed on the core that owns
//! the session, with no thread hop. The `null` store has no descriptor and completes inline.

pub mod curve;
pub mod file;
pub mod null;

use std::io;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

/// Open flags a store was created with (tgtadm `-f sync|direct|sync:direct`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BsOFlags {
    /// O_SYNC: writes are durable before status is returned.
    pub sync: bool,
    /// O_DIRECT: bypass the page cache.
    pub direct: bool,
}

impl BsOFlags {
    /// Parses tgtadm's `bsoflags=` value (`sync`, `direct`, `sync:direct`, or empty).
    pub fn parse(s: &str) -> Option<BsOFlags> {
        let mut f = BsOFlags::default();
        for part in s.split(':').filter(|p| !p.is_empty()) {
            match part {
                "sync" => f.sync = true,
                "direct" => f.direct = true,
                _ => return None,
            }
        }
        Some(f)
    }

    /// The text tgtadm's show prints after "Backing store flags: ".
    pub fn show(&self) -> &'static str {
        match (self.sync, self.direct) {
            (false, false) => "",
            (true, false) => "sync",
            (false, true) => "direct",
            (true, true) => "sync:direct",
        }
    }
}

/// What a store really does, so VPD pages advertise only that (SBC-3 §6.6.4, §6.6.7).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BackingCaps {
    /// Deallocation (UNMAP, WRITE SAME with UNMAP) really frees space (hole punching).
    pub unmap: bool,
    /// Deallocated blocks read back as zeros (LBPRZ).
    pub unmap_reads_zero: bool,
    /// GET LBA STATUS can report mapped/deallocated extents.
    pub lba_status: bool,
}

/// Why a backing store could not be opened: tgtadm reports these as its error codes.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    /// The backing-store type is not one this build has.
    #[error("unknown backing store type {0:?}")]
    UnknownType(String),
    /// The open flags are not supported by this store.
    #[error("unsupported bsoflags {0:?}")]
    BadFlags(String),
    /// The path could not be opened.
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
}

/// A backing store behind a logical unit. Shared by every shard (`Send + Sync`); its descriptor
/// is used concurrently by their rings, which positioned I/O allows.
pub trait BackingStore: Send + Sync + std::fmt::Debug {
    /// tgt's name for this type (`rdwr`, `aio`, `null`).
    fn bstype(&self) -> &'static str;
    /// The path given at creation.
    fn path(&self) -> &str;
    /// Flags given at creation.
    fn oflags(&self) -> BsOFlags;
    /// Current size in bytes, read afresh (for `disksize=auto`).
    fn size_bytes(&self) -> io::Result<u64>;
    /// What this store can really do.
    fn caps(&self) -> BackingCaps;
    /// The descriptor io_uring operations target; `None` for stores that complete inline.
    fn raw_fd(&self) -> Option<RawFd>;
    /// For GET LBA STATUS: whether the byte at `offset` is mapped, and how many bytes from
    /// `offset` share that state (bounded by `limit`).
    fn lba_status(&self, offset: u64, limit: u64) -> io::Result<(bool, u64)> {
        let _ = offset;
        Ok((true, limit))
    }
    /// [`BackingStore::lba_status`] at logical-block granularity `block`: where the store's
    /// allocation unit is larger than a logical block (a 4 KiB file-system block under 512-byte
    /// LBAs), a deallocated block may still be allocated but read as zeros. For a store whose
    /// deallocated blocks read as zeros (LBPRZ), such blocks are reported deallocated.
    fn lba_status_blocks(&self, offset: u64, limit: u64, block: u64) -> io::Result<(bool, u64)> {
        let _ = block;
        self.lba_status(offset, limit)
    }
}

/// Opens a store by tgt type name: `rdwr` and `aio` are files or block devices through
/// io_uring, `null` reads zeros and drops writes.
pub fn open(
    bstype: &str,
    path: &str,
    oflags: BsOFlags,
) -> Result<Arc<dyn BackingStore>, BackingError> {
    match bstype {
        "null" => Ok(Arc::new(null::NullStore::new(path, oflags)?)),
        "rdwr" | "aio" => Ok(Arc::new(file::FileStore::open(bstype, path, oflags)?)),
        other => Err(BackingError::UnknownType(other.to_string())),
    }
}

/// Backing-store types this build supports, in the order `tgtadm --mode sys --op show` lists
/// them, with the flags each accepts.
pub const SUPPORTED_TYPES: &[(&str, bool)] = &[("null", false), ("rdwr", true), ("aio", true)];

/// One block-level operation the SCSI layer asks of a backing store, in bytes.
///
/// Byte ranges into the command's Data-Out buffer are given as `Range<usize>`; the shard owns
/// that buffer and keeps it alive until the operation completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockIo {
    /// Read `len` bytes at `offset` into a fresh buffer that becomes the Data-In payload.
    Read { offset: u64, len: u32 },
    /// Write `data` of the Data-Out buffer at `offset`; `fua` forces it durable first (FUA bit).
    Write {
        offset: u64,
        data: Range<usize>,
        fua: bool,
    },
    /// Make all completed writes durable (SYNCHRONIZE CACHE).
    Flush,
    /// Deallocate byte ranges (UNMAP); each `(offset, len)`.
    Discard { ranges: Vec<(u64, u64)> },
    /// Write the one logical block `block` of Data-Out over `len` bytes at `offset`
    /// (WRITE SAME). With `unmap`, the store may deallocate instead where the block is zeros.
    /// `lbdata` stamps each block's LBA (big-endian u32) into its first 4 bytes (obsolete
    /// LBDATA bit), with `block_size` to count blocks.
    WriteSame {
        offset: u64,
        len: u64,
        block: Range<usize>,
        unmap: bool,
        block_size: u32,
    },
    /// COMPARE AND WRITE (SBC-3 §5.2): read `len` bytes at `offset`, compare with `verify`; if
    /// equal write `write`, else report the first differing byte.
    CompareAndWrite {
        offset: u64,
        len: u32,
        verify: Range<usize>,
        write: Range<usize>,
    },
    /// ORWRITE (SBC-3 §5.8): read `len` bytes at `offset`, OR `data` of Data-Out (`len` bytes)
    /// into them, write the result back; `fua` as for `Write`.
    OrWrite {
        offset: u64,
        len: u32,
        data: Range<usize>,
        fua: bool,
    },
    /// VERIFY / WRITE AND VERIFY's compare step: read `len` at `offset` and compare with
    /// `compare` of Data-Out when given (BYTCHK=1), else only check the medium is readable.
    Verify {
        offset: u64,
        len: u32,
        compare: Option<Range<usize>>,
    },
}

/// How a [`BlockIo`] ended, as the SCSI layer needs to know it.
#[derive(Debug)]
pub enum IoResult {
    /// Done; for `Read` the buffer holds the data.
    Ok,
    /// A compare found a difference at this byte offset from the start of the operation.
    Miscompare { offset: u64 },
    /// The store failed; becomes MEDIUM ERROR.
    Err(io::Error),
}
