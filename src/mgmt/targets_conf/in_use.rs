//! Whether a backing store is in use, before tgt-admin hands it to tgtd (`check_device`):
//! a device the kernel holds (mounted, swap, RAID: `open(O_EXCL)` fails with EBUSY), or a
//! file some process has open (tgt's calls `lsof`; we read `/proc/*/fd` ourselves). Two
//! targets writing one device would corrupt it, so this is refused unless `allow-in-use yes`
//! or `--force`.

use super::admin::{Admin, R};
use super::lun::DataKey;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether the kernel refuses exclusive access (EBUSY), as for a mounted device.
fn busy_in_kernel(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; the descriptor is closed at once.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_EXCL | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` was just opened by this function and is not used elsewhere.
        unsafe { libc::close(fd) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY)
}

/// Whether another process has `path` open (what `lsof PATH` reports), by its
/// /proc/PID/fd links. Bounded by the number of processes and descriptors on the host.
pub fn open_by_a_process(path: &Path) -> bool {
    let Ok(want) = std::fs::canonicalize(path) else {
        return false;
    };
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.filter_map(Result::ok) {
        let name = p.file_name();
        let name = name.to_string_lossy();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == want) {
                return true;
            }
        }
    }
    false
}

impl Admin<'_> {
    /// `check_device`: true when `bs` may be used.
    pub fn check_device(&mut self, bs: &str, dk: &DataKey) -> R<bool> {
        let allow = dk
            .get(bs)
            .and_then(|m| m.get("allow-in-use"))
            .cloned()
            .flatten();
        if allow.as_deref() == Some("yes") {
            return Ok(true);
        }
        let p = Path::new(bs);
        if !p.exists() {
            return Ok(true);
        }
        if busy_in_kernel(p) {
            self.execute(&format!(
                "# Device {bs} is used by the system (mounted, used by swap?)."
            ))?;
            return Ok(false);
        }
        if open_by_a_process(p) {
            self.execute(&format!("# Device {bs} is used (already tgtd target?)."))?;
            self.execute(&format!("# Run 'lsof {bs}' to see the details."))?;
            return Ok(false);
        }
        Ok(true)
    }
}
