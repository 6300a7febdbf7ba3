//! Giving memory back after connections leave.
//!
//! Two things keep a shard's peak memory after its connections are gone: the shard's I/O
//! buffer pool (free lists that only grow), and glibc's allocator, which keeps freed memory of
//! a thread's arena mapped (only the top of a heap is ever returned by itself; a freed
//! connection's buffers sit below longer-lived allocations). Without both, RSS after N
//! connections came and went stayed at its peak for ever (issue 11, item 3). So after a
//! connection is freed, a 1 s timer trims the pool (all of it when no connection is
//! left, down to a small cache otherwise) and asks glibc to release every free page of every
//! arena (`malloc_trim(0)`, which walks the heaps: done at most once a second, never per
//! close).

use super::ring::clock;
use super::timers::{TimerKey, TimerOwner, Timers};
use crate::buf::BufPool;

/// How long after a connection is freed the memory is given back (frees meanwhile join in).
const RECLAIM_DELAY_NS: u64 = 1_000_000_000;

/// Free buffers a shard with live connections keeps per size class across a trim.
const POOL_KEEP_BYTES_PER_CLASS: usize = 4 << 20;

/// glibc's thresholds, fixed: allocations from this size up are mmapped (and unmapped when
/// freed), and a heap's free top beyond `TRIM_THRESHOLD` is returned when memory is freed.
/// Left to themselves both move up to 32 and 64 MiB the first time a large buffer is freed,
/// after which freed connection memory stays mapped until `malloc_trim`.
const MMAP_THRESHOLD: i32 = 256 << 10;
const TRIM_THRESHOLD: i32 = 1 << 20;

/// The reclaim timer: armed while memory is worth giving back.
pub struct Reclaim {
    timer: Option<TimerKey>,
}

impl Default for Reclaim {
    fn default() -> Self {
        Self::new()
    }
}

impl Reclaim {
    /// A shard's reclaim state; the first one also fixes the allocator's thresholds for the
    /// process (see `MMAP_THRESHOLD`).
    pub fn new() -> Reclaim {
        static ALLOCATOR: std::sync::Once = std::sync::Once::new();
        ALLOCATOR.call_once(configure_allocator);
        Reclaim { timer: None }
    }

    /// A connection slot was freed: arms the reclaim timer unless it is armed.
    pub fn conn_freed(&mut self, timers: &mut Timers) {
        if self.timer.is_none() {
            self.timer = Some(timers.insert(clock() + RECLAIM_DELAY_NS, TimerOwner::Reclaim));
        }
    }

    /// The reclaim timer fired: trims the pool (all of it when no connection is left) and
    /// returns free heap pages to the system.
    pub fn run(&mut self, live_conns: usize, pool: &BufPool) {
        self.timer = None;
        pool.trim(if live_conns == 0 {
            0
        } else {
            POOL_KEEP_BYTES_PER_CLASS
        });
        release_free_heap();
    }
}

/// Fixes glibc's mmap and trim thresholds (which turns off their dynamic adjustment).
fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning parameters; it takes the main
    // arena's lock itself.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the allocator's free pages to the system.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes
    // the arena locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
