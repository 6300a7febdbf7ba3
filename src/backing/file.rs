//! The `rdwr`/`aio` backing store: a regular file or block device, read and written through the
//! owning shard's io_uring. `-f direct` opens it O_DIRECT; `-f sync` opens it O_DSYNC so every
//! write is durable before its status. UNMAP punches holes; GET LBA STATUS uses SEEK_DATA/HOLE.

use super::{BackingCaps, BackingError, BackingStore, BsOFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// A file or block device opened once by the control thread and shared by every shard's ring.
#[derive(Debug)]
pub struct FileStore {
    bstype: &'static str,
    path: String,
    oflags: BsOFlags,
    file: File,
    is_block: bool,
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
        Ok(FileStore {
            bstype: if bstype == "aio" { "aio" } else { "rdwr" },
            path: path.to_string(),
            oflags,
            file,
            is_block,
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
        }
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
    fn lba_status(&self, offset: u64, limit: u64) -> io::Result<(bool, u64)> {
        if self.is_block {
            return Ok((true, limit));
        }
        let fd = self.file.as_raw_fd();
        let off =
            i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek on an open descriptor has no memory effects.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: no data at or after `offset`, so the rest is a hole.
            return if e.raw_os_error() == Some(libc::ENXIO) {
                Ok((false, limit))
            } else {
                Err(e)
            };
        }
        if data > off {
            let hole_len = (data - off) as u64;
            return Ok((false, hole_len.min(limit)));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((true, ((hole - off) as u64).min(limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn missing_path_is_an_open_error() {
        let e = FileStore::open("rdwr", "/nonexistent/x", BsOFlags::default()).unwrap_err();
        assert!(matches!(e, BackingError::Open { .. }));
    }
}
