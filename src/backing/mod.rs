//! Backing stores: where a logical unit's blocks live.
//!
//! Every store has two halves. [`BackingStore`] is the shared description (`Send + Sync`,
//! one per LU): type, path, flags, size, capabilities. [`engine::Engine`] is its per-shard
//! half, made by [`BackingStore::engine`]: it owns the store's in-flight operations on that
//! shard's io_uring, so backend I/O is submitted and completed on the core that owns the
//! session, with no thread hop. There is no other way to serve a store: a store that cannot
//! do something says so ([`IoResult::Unsupported`]), it is never quietly served as `null`.

pub mod delay;
pub mod engine;
pub mod file;
pub mod file_engine;
pub mod lba;
pub mod null;

use std::io;
use std::ops::Range;

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
    /// Largest WRITE SAME the store serves in one command, in bytes (a remote store writes
    /// every block). Advertised as VPD B0h MAXIMUM WRITE SAME LENGTH with WSNZ set, so "to the
    /// last block" (NUMBER OF LOGICAL BLOCKS 0) is refused (SBC-3 §6.6.3). None: no limit.
    pub max_write_same_bytes: Option<u64>,
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
    /// The engine that serves this store's operations on shard `env.shard` (called once per
    /// shard that uses the LU, on that shard's thread).
    fn engine(&self, env: engine::EngineEnv) -> Box<dyn engine::Engine>;
    /// The store's own logical block size, when it has one (a Curve volume's): an LU created
    /// without `--blocksize` uses it, and a smaller one is refused unless
    /// [`BackingStore::serve_block_size`] accepts it.
    fn block_size(&self) -> Option<u32> {
        None
    }
    /// Asks the store to serve `bs`-byte logical blocks, smaller than its own
    /// [`BackingStore::block_size`] (by read-modify-write); false when it cannot. Called once,
    /// before the LU exists and before any engine is made.
    fn serve_block_size(&self, bs: u32) -> bool {
        let _ = bs;
        false
    }
    /// Lines `tgtadm --op stat` prints for the LU after tgt's own (empty or none when idle).
    fn stat_lines(&self) -> Option<String> {
        None
    }
}

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
    /// GET LBA STATUS (SBC-3 §5.6): up to `max` extents from `offset` to `end` (bytes), at
    /// logical-block granularity `block`, each reported mapped or deallocated.
    LbaStatus {
        offset: u64,
        end: u64,
        block: u32,
        max: u8,
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
    /// The store cannot do this operation at all; becomes ILLEGAL REQUEST, INVALID COMMAND
    /// OPERATION CODE.
    Unsupported,
    /// The operation was cancelled (its task was aborted or its connection closed).
    Cancelled,
    /// GET LBA STATUS extents, in order from the requested offset: (mapped, bytes).
    Extents(Vec<(bool, u64)>),
}
