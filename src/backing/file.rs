//! The `rdwr`/`aio` backing store: a regular file or block device, read and written through the
//! owning shard's io_uring. `-f direct` opens it O_DIRECT; `-f sync` opens it O_DSYNC so every
//! write is durable before its status. UNMAP punches holes; GET LBA STATUS uses SEEK_DATA/HOLE
//! (see [`super::lba`]). Each shard serves it with a [`FileEngine`] on its own ring.

use super::engine::Engine;
use super::file_engine::FileEngine;
use super::{BackingCaps, BackingError, BackingStore, BsOFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;

/// A file or block device opened once by the control thread and shared by every shard's ring.
#[derive(Debug)]
pub struct FileStore {
    bstype: &'static str,
    path: String,
    oflags: BsOFlags,
    file: Arc<File>,
    is_block: bool,
    /// A regular file on a memory filesystem (see [`memory_backed`]): its engine reads and
    /// writes it inline.
    inline: bool,
}

impl FileStore {
    /// Opens `path` read-write (tgt's rdwr does the same; a read-only LU is a SCSI-level flag).
    pub fn open(bstype: &str, path: &str, oflags: BsOFlags) -> Result<FileStore, BackingError> {
        let mut custom = 0;
        if oflags.direct {
            custom |= libc::O_DIRECT;
        }
        if oflags.sync {
            custom |= libc::O_DSYNC;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(custom)
            .open(path)
            .map_err(|source| BackingError::Open {
                path: path.to_string(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| BackingError::Open {
            path: path.to_string(),
            source,
        })?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(BackingError::Open {
                path: path.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file or block device"),
            });
        }
        // CURVE_TGT_FILE_INLINE=0 keeps every I/O on the ring (for A/B measurements).
        let inline = !is_block
            && std::env::var_os("CURVE_TGT_FILE_INLINE").is_none_or(|v| v != "0")
            && memory_backed(&file);
        Ok(FileStore {
            bstype: if bstype == "aio" { "aio" } else { "rdwr" },
            path: path.to_string(),
            oflags,
            file: Arc::new(file),
            is_block,
            inline,
        })
    }
}

impl BackingStore for FileStore {
    fn bstype(&self) -> &'static str {
        self.bstype
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn oflags(&self) -> BsOFlags {
        self.oflags
    }
    fn size_bytes(&self) -> io::Result<u64> {
        if self.is_block {
            let mut size: u64 = 0;
            // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
            const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
            // SAFETY: the fd is open for the life of `self` and `size` is a valid u64 out-pointer
            // of the width BLKGETSIZE64 writes.
            let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKGETSIZE64, &mut size) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(size)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }
    fn caps(&self) -> BackingCaps {
        // Hole punching is a regular-file feature; block devices would need BLKDISCARD, whose
        // read-back contents are device specific, so they advertise nothing.
        BackingCaps {
            unmap: !self.is_block,
            unmap_reads_zero: !self.is_block,
            lba_status: !self.is_block,
            max_write_same_bytes: None,
        }
    }
    fn engine(&self, _env: super::engine::EngineEnv) -> Box<dyn Engine> {
        Box::new(FileEngine::new(self.file.clone(), self.caps(), self.inline))
    }
}

/// Whether `file` lives on a memory filesystem (tmpfs, ramfs): its reads and writes copy to
/// or from the page cache and never wait for a device. These filesystems have no
/// non-blocking I/O (`RWF_NOWAIT` fails with EOPNOTSUPP), so io_uring hands every read and
/// write of theirs to a kernel worker thread: a thread wake-up and a context switch per I/O
/// that cost more than the copy. The file engine does them inline instead, as a plain
/// pread/pwrite on the shard. Only for regular files: a device node's `fstatfs` reports the
/// filesystem `/dev` is on, which is a tmpfs too.
fn memory_backed(file: &File) -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open and `st` is a valid out-pointer for one statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    // f_type's and the constant's widths differ between C libraries.
    #[allow(clippy::unnecessary_cast)]
    let (t, tmpfs) = (st.f_type as i64, libc::TMPFS_MAGIC as i64);
    t == tmpfs || t == RAMFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::lba;

    impl FileStore {
        /// The extent at `offset` as the engine decides it, with a plain pread for its read.
        fn lba_status_blocks(
            &self,
            offset: u64,
            limit: u64,
            block: u64,
        ) -> io::Result<(bool, u64)> {
            use std::os::unix::fs::FileExt;
            let fd = self.file.as_raw_fd();
            match lba::plan(fd, offset, limit, block)? {
                lba::Plan::Done(m, l) => Ok((m, l)),
                lba::Plan::Read { at, len, then } => {
                    let mut buf = vec![0u8; len as usize];
                    let n = self.file.read_at(&mut buf, at)?;
                    lba::finish(fd, then, &buf[..n], offset, limit, block)
                }
            }
        }
        fn lba_status(&self, offset: u64, limit: u64) -> io::Result<(bool, u64)> {
            lba::seek_status(self.file.as_raw_fd(), offset, limit)
        }
    }

    #[test]
    fn opens_a_file_and_reports_size() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let s = FileStore::open("rdwr", f.path().to_str().unwrap(), BsOFlags::default()).unwrap();
        assert_eq!(s.size_bytes().unwrap(), 1 << 20);
        assert!(s.caps().unmap);
        // A fresh sparse file is one hole.
        let (mapped, len) = s.lba_status(0, 1 << 20).unwrap();
        assert!(!mapped);
        assert_eq!(len, 1 << 20);
    }

    #[test]
    fn zeroed_sub_blocks_report_deallocated() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        f.as_file().write_all_at(&vec![b'A'; 37 * 512], 0).unwrap();
        // "UNMAP" LBA 3 the way the file system can: zeroes inside a 4 KiB block.
        f.as_file().write_all_at(&[0u8; 512], 3 * 512).unwrap();
        let s = FileStore::open("rdwr", f.path().to_str().unwrap(), BsOFlags::default()).unwrap();
        assert_eq!(
            s.lba_status_blocks(3 * 512, 1 << 20, 512).unwrap(),
            (false, 512)
        );
        assert_eq!(
            s.lba_status_blocks(0, 1 << 20, 512).unwrap(),
            (true, 3 * 512)
        );
        assert_eq!(
            s.lba_status_blocks(4 * 512, 1 << 20, 512).unwrap(),
            (true, 33 * 512)
        );
        // The zero blocks after the data, inside its last file-system block, then the hole.
        assert_eq!(
            s.lba_status_blocks(37 * 512, (1 << 20) - 37 * 512, 512)
                .unwrap(),
            (false, (1 << 20) - 37 * 512)
        );
        // Past the data: a hole to the end.
        let (mapped, _) = s.lba_status_blocks(40 * 512, 1 << 20, 512).unwrap();
        assert!(!mapped);
    }

    #[test]
    fn missing_path_is_an_open_error() {
        let e = FileStore::open("rdwr", "/nonexistent/x", BsOFlags::default()).unwrap_err();
        assert!(matches!(e, BackingError::Open { .. }));
    }
}
