//! GET LBA STATUS for files: which extents are mapped and which are deallocated. The extent
//! boundaries come from `lseek(SEEK_DATA/SEEK_HOLE)` (metadata only, no data I/O); where the
//! file system's allocation unit is larger than a logical block (a 4 KiB block under
//! 512-byte LBAs), zeroed blocks inside an allocated unit read as zeros and are reported
//! deallocated (LBPRZ), which needs one data read per extent. That read is planned here
//! ([`plan`]) and done by the engine on the ring into an aligned buffer (O_DIRECT works),
//! then [`finish`] decides the extent.

use std::io;
use std::os::fd::RawFd;

/// Most bytes read to refine one extent (the command is rare; the bound keeps it cheap on a
/// large LU).
pub const ZERO_SCAN_MAX: u64 = 64 * 1024;

/// Where one extent's decision stands after the seek.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Decided: (mapped, bytes).
    Done(bool, u64),
    /// Read `len` bytes at `at`, then call [`finish`] with this plan.
    Read { at: u64, len: u64, then: Then },
}

/// What the planned read decides.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Then {
    /// A hole of `hole` bytes: extend it by the zero blocks read after it.
    AfterHole { hole: u64 },
    /// Data of `len` bytes by SEEK_DATA: leading zero blocks are deallocated, else the run of
    /// data blocks.
    InData { len: u64 },
}

/// Mapped state of the byte at `offset` and how many bytes from it share that state
/// (bounded by `limit`), by SEEK_DATA / SEEK_HOLE.
pub fn seek_status(fd: RawFd, offset: u64, limit: u64) -> io::Result<(bool, u64)> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
        return Ok((false, ((data - off) as u64).min(limit)));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((true, ((hole - off) as u64).min(limit)))
}

/// First step for the extent at `offset` (at most `limit` bytes, `block`-byte logical blocks).
pub fn plan(fd: RawFd, offset: u64, limit: u64, block: u64) -> io::Result<Plan> {
    let (mapped, len) = seek_status(fd, offset, limit)?;
    if block == 0 {
        return Ok(Plan::Done(mapped, len));
    }
    let (at, max, then) = if mapped {
        (offset, len, Then::InData { len })
    } else {
        if len >= limit {
            return Ok(Plan::Done(false, len));
        }
        (offset + len, limit - len, Then::AfterHole { hole: len })
    };
    let want = max.min(ZERO_SCAN_MAX) / block * block;
    if want == 0 {
        return Ok(match then {
            Then::AfterHole { hole } => Plan::Done(false, hole),
            Then::InData { len } => Plan::Done(true, len),
        });
    }
    Ok(Plan::Read {
        at,
        len: want,
        then,
    })
}

/// Leading whole `block`s of `buf` that are all zeros (`zeros`) or all not-all-zero.
fn run(buf: &[u8], block: u64, zeros: bool) -> u64 {
    let n = buf
        .chunks_exact(block as usize)
        .take_while(|b| b.iter().all(|x| *x == 0) == zeros)
        .count() as u64;
    n * block
}

/// Decides the extent from the planned read's bytes (`buf`, as many as were read).
pub fn finish(
    fd: RawFd,
    then: Then,
    buf: &[u8],
    offset: u64,
    limit: u64,
    block: u64,
) -> io::Result<(bool, u64)> {
    let scanned = buf.len() as u64 / block * block;
    let buf = &buf[..scanned as usize];
    match then {
        // A hole, extended by the zero blocks that follow it inside a partly punched
        // file-system block (UNMAP of fewer blocks than the file system's unit zeroes them).
        Then::AfterHole { hole } => Ok((false, hole + run(buf, block, true))),
        Then::InData { len } => {
            // Leading zero blocks count as deallocated (they read as zeros, LBPRZ).
            let z = run(buf, block, true);
            if z > 0 {
                // Zeros to the end of the data extent run on into the hole after it.
                if z == len && len < limit {
                    let (m2, l2) = seek_status(fd, offset + len, limit - len)?;
                    if !m2 {
                        return Ok((false, len + l2));
                    }
                }
                return Ok((false, z));
            }
            let d = run(buf, block, false);
            if d < scanned {
                return Ok((true, d.max(block)));
            }
            Ok((true, len))
        }
    }
}
