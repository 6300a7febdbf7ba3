//! CPU selection and pinning: by default one shard per CPU in the process's affinity mask (so
//! `taskset -c 0 tgtd` runs one shard on CPU 0); `--cores 0,2-3` chooses explicitly.

use std::io;

/// CPUs in this process's affinity mask, ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect())
}

/// Parses a CPU list such as `0,2-3`.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: usize = a.parse().map_err(|_| format!("bad CPU number {a:?}"))?;
        let b: usize = b.parse().map_err(|_| format!("bad CPU number {b:?}"))?;
        if a > b || b >= libc::CPU_SETSIZE as usize {
            return Err(format!("bad CPU range {part:?}"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(out)
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: as in allowed_cpus; CPU_SET writes within the set for cpu < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu was validated against CPU_SETSIZE by the caller's list.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid for the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(parse_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_list("3,1,1").unwrap(), vec![1, 3]);
        assert!(parse_list("2-1").is_err());
        assert!(parse_list("x").is_err());
        assert!(parse_list("").is_err());
        assert!(!allowed_cpus().unwrap().is_empty());
    }
}
