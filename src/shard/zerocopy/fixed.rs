//! Registered (fixed) buffers for zero-copy payloads. A `SEND_ZC` from ordinary memory pins
//! the payload's pages for every send (and, for a non-root user, charges them to the locked-
//! memory limit each time); one naming a registered buffer (`IORING_RECVSEND_FIXED_BUF` +
//! `buf_index`) uses pages pinned once, when the buffer was registered. The shard opens a
//! sparse table at start and registers a pooled buffer the first time a payload in it goes
//! zero-copy; the buffer keeps its slot while it lives in the pool, and its slot is cleared
//! when its memory goes back to the allocator (`buf.rs`'s `RegTable`).
//!
//! Used with `--zerocopy-payload-only 1` on the `uring` engine only: a fixed-buffer send
//! takes one buffer, so a payload must be its own send (batch mode's `SENDMSG_ZC` mixes
//! headers from the batch with payloads; its vectored fixed-buffer form, 6.15, also needs all
//! iovecs in one registered buffer).
//!
//! When the kernel refuses a registration (ENOMEM: `RLIMIT_MEMLOCK` of a non-root user; or
//! no sparse tables before 5.19) the shard logs it once, counts it, and sends from
//! unregistered memory from then on (where the same limit usually refuses the zero-copy send
//! too, and the connection falls back to copy: see `policy.rs`).

use crate::buf::{BufPool, IoBuf};
use crate::shard::ring::Ring;

/// Slots of a shard's table (the kernel's limit is 16384). A pooled buffer takes one while it
/// is cached; past this many, payloads go from unregistered memory.
pub const SLOTS: u16 = 4096;

/// Whether the shard registers buffers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FixedState {
    /// Not asked for (`--zerocopy-fixed-buffers 0`, batch mode, the `msg` engine, or
    /// zero-copy off or unsupported).
    Off,
    /// The table is open.
    Ready,
    /// The kernel refused (logged once): unregistered sends from then on.
    Failed,
}

/// A shard's registered buffers: state and counters.
#[derive(Debug)]
pub struct FixedBufs {
    pub state: FixedState,
    /// Zero-copy sends that named a registered buffer.
    pub sends: u64,
    /// Registrations the kernel refused (the table, or a buffer).
    pub failures: u64,
}

/// What `--op stat` shows of them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FixedSnap {
    pub registered: u64,
    pub registered_bytes: u64,
    pub sends: u64,
    pub failures: u64,
}

impl FixedSnap {
    /// Adds another shard's.
    pub fn add(&mut self, o: &FixedSnap) {
        self.registered += o.registered;
        self.registered_bytes += o.registered_bytes;
        self.sends += o.sends;
        self.failures += o.failures;
    }
}

fn refusal_line(e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ENOMEM) => "ENOMEM (locked memory, ulimit -l)",
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => "not supported by this kernel",
        Some(libc::EPERM) => "EPERM",
        _ => "error",
    };
    format!("zerocopy: registering payload buffers failed: {why} ({e}); sending from unregistered buffers")
}

impl FixedBufs {
    /// Opens the table when `wanted`; a refusal is logged (once, here) and counted.
    pub fn open(shard: usize, wanted: bool, ring: &mut Ring, pool: &BufPool) -> FixedBufs {
        let mut f = FixedBufs {
            state: FixedState::Off,
            sends: 0,
            failures: 0,
        };
        if !wanted {
            return f;
        }
        match ring.register_buffers_sparse(SLOTS) {
            Ok(()) => {
                pool.enable_registry(SLOTS);
                f.state = FixedState::Ready;
            }
            Err(e) => f.refused(shard, &e),
        }
        f
    }

    fn refused(&mut self, shard: usize, e: &std::io::Error) {
        self.failures += 1;
        if self.state != FixedState::Failed {
            tracing::warn!(shard, "{}", refusal_line(e));
        }
        self.state = FixedState::Failed;
    }

    /// The slot to send `buf`'s bytes from, registering it first when needed; `None`: send
    /// from unregistered memory (not open, the table is full, a buffer too large to pool, or
    /// the kernel refused, which turns registration off for the shard).
    pub fn slot_for(
        &mut self,
        shard: usize,
        ring: &mut Ring,
        pool: &BufPool,
        buf: &IoBuf,
    ) -> Option<u16> {
        if let Some(s) = buf.reg_index() {
            return Some(s);
        }
        if self.state != FixedState::Ready {
            return None;
        }
        // Slots of buffers freed since are cleared first, so they can be reused.
        pool.clear_registrations(|s| ring.clear_buffer(s));
        // SAFETY: the pool keeps the buffer's memory allocated while its slot is taken: it
        // queues the slot for clearing before the memory goes back to the allocator, and
        // reuses the slot only once `clear_registrations` cleared it (above, or at trim).
        match pool.register(buf, |slot, base, len| unsafe {
            ring.register_buffer(slot, base, len)
        }) {
            Ok(s) => s,
            Err(e) => {
                self.refused(shard, &e);
                None
            }
        }
    }

    /// A fixed-buffer send went out.
    pub fn sent(&mut self) {
        self.sends += 1;
    }

    /// Clears the slots of freed buffers (after a pool trim, so their pages are unpinned).
    pub fn clear_freed(ring: &mut Ring, pool: &BufPool) {
        pool.clear_registrations(|s| ring.clear_buffer(s));
    }

    /// For `--op stat`.
    pub fn snap(&self, pool: &BufPool) -> FixedSnap {
        let c = pool.counters();
        FixedSnap {
            registered: c.registered,
            registered_bytes: c.registered_bytes,
            sends: self.sends,
            failures: self.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_buffer_keeps_its_slot_until_its_memory_leaves_the_pool() {
        let mut ring = Ring::new().unwrap();
        let pool = BufPool::new();
        let mut f = FixedBufs::open(0, true, &mut ring, &pool);
        assert_eq!(f.state, FixedState::Ready, "sparse tables exist since 5.19");
        let a = pool.alloc(65536);
        let s = f.slot_for(0, &mut ring, &pool, &a).expect("registered");
        assert_eq!(f.slot_for(0, &mut ring, &pool, &a), Some(s), "once");
        assert_eq!(pool.counters().registered, 1);
        assert_eq!(pool.counters().registered_bytes, 65536);
        // Recycled through the pool: the same memory, the same slot, no new registration.
        drop(a);
        let b = pool.alloc(65536);
        assert_eq!(b.reg_index(), Some(s));
        drop(b);
        // Trimmed: the memory leaves, the slot is cleared and free again.
        pool.trim(0);
        assert_eq!(pool.counters().registered, 0);
        FixedBufs::clear_freed(&mut ring, &pool);
        let c = pool.alloc(1 << 20);
        let s2 = f.slot_for(0, &mut ring, &pool, &c).expect("registered");
        assert_eq!(s2, s, "the cleared slot is reused");
        // Too large to pool: never registered (its memory would leave with it).
        let huge = pool.alloc((32 << 20) + 1);
        assert_eq!(f.slot_for(0, &mut ring, &pool, &huge), None);
        assert_eq!(f.failures, 0);
    }

    #[test]
    fn a_refused_registration_is_counted_and_turns_registration_off() {
        let mut ring = Ring::new().unwrap();
        let pool = BufPool::new();
        let mut f = FixedBufs::open(0, true, &mut ring, &pool);
        // A registration the kernel refuses, as RLIMIT_MEMLOCK would.
        let a = pool.alloc(65536);
        let r = pool.register(&a, |_, _, _| {
            Err(std::io::Error::from_raw_os_error(libc::ENOMEM))
        });
        assert!(r.is_err());
        f.refused(0, &r.unwrap_err());
        assert_eq!((f.state, f.failures), (FixedState::Failed, 1));
        assert_eq!(
            f.slot_for(0, &mut ring, &pool, &a),
            None,
            "off for the shard"
        );
        assert_eq!(pool.counters().registered, 0);
        assert!(
            refusal_line(&std::io::Error::from_raw_os_error(libc::ENOMEM))
                .contains("ENOMEM (locked memory, ulimit -l)")
        );
        let off = FixedBufs::open(0, false, &mut ring, &pool);
        assert_eq!(off.state, FixedState::Off);
    }
}
