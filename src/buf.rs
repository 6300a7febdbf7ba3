//! Per-core, page-aligned I/O buffers that can outlive the request that filled them.
//!
//! A READ's data is filled by the backing store, then handed to the connection's send path.
//! With zero-copy sends the kernel may still read the pages after the send completes, until the
//! error-queue notification arrives, so the buffer is reference counted: the SCSI task, the send
//! queue and the zero-copy tracker each hold a handle, and the last one returns the memory to the
//! shard's pool. Buffers are `!Send` on purpose: they never leave the shard that allocated them,
//! so the pool needs no lock.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;

/// Page alignment, so buffers also suit O_DIRECT file I/O.
const ALIGN: usize = 4096;
/// Smallest size class (one page).
const MIN_CLASS_SHIFT: u32 = 12;
/// Largest pooled size class (16 MiB); larger buffers are allocated and freed directly.
const MAX_CLASS_SHIFT: u32 = 24;
const NR_CLASSES: usize = (MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) as usize;
/// Bytes of free buffers kept per size class before extra ones go back to the allocator.
const CACHE_BYTES_PER_CLASS: usize = 64 << 20;

struct FreeLists {
    /// Free buffers per size class, each with its registration slot (if registered).
    classes: [Vec<(NonNull<u8>, Option<u16>)>; NR_CLASSES],
    counters: PoolCounters,
    /// The ring's registered-buffer table, once the shard opened one ([`BufPool::enable_registry`]).
    reg: Option<RegTable>,
}

/// Which slots of the shard ring's registered-buffer table the pool's buffers occupy. A
/// pooled buffer is registered on first use by a zero-copy send and keeps its slot while it
/// lives in the pool (handed out or free); when its memory goes back to the allocator its slot
/// is queued for clearing, and reused only once the shard has cleared it in the kernel (so a
/// slot never names two buffers). The syscalls are the shard's (`shard/zerocopy/fixed.rs`):
/// this table is bookkeeping only.
struct RegTable {
    /// Slots free for a new registration.
    free: Vec<u16>,
    /// Slots whose buffer went back to the allocator; the kernel still has them registered.
    clear: Vec<u16>,
    /// Buffers registered now, and their bytes.
    registered: u64,
    registered_bytes: u64,
}

/// What a pool has handed out, for `--op stat` test hooks and leak checks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Buffers handed out and not yet returned (their last handle is alive).
    pub in_use: u64,
    /// Bytes of capacity of those buffers.
    pub in_use_bytes: u64,
    /// Buffers handed out since the pool was made.
    pub allocs: u64,
    /// Buffers registered with the shard's ring (fixed buffers), and their bytes.
    pub registered: u64,
    pub registered_bytes: u64,
}

impl Drop for FreeLists {
    /// The pool is gone (its shard ended, and every buffer handle with it, since each holds
    /// the pool): the cached buffers go back to the allocator instead of leaking (found by the
    /// fuzz targets' leak checker).
    fn drop(&mut self) {
        for (class, list) in self.classes.iter_mut().enumerate() {
            let layout = Layout::from_size_align(1 << (class as u32 + MIN_CLASS_SHIFT), ALIGN)
                .expect("buffer layout");
            for (p, _) in list.drain(..) {
                // (Registered slots need no clearing: the ring goes with the shard.)
                // SAFETY: every pointer on class `class`'s list came from `raw_alloc` with this
                // layout (`class_of`) and no handle refers to it any more.
                unsafe { dealloc(p.as_ptr(), layout) };
                #[cfg(test)]
                tests::LIVE.with(|n| n.set(n.get() - 1));
            }
        }
    }
}

/// A shard's buffer pool: free lists per power-of-two size class, no locks.
#[derive(Clone)]
pub struct BufPool {
    free: Rc<RefCell<FreeLists>>,
}

impl Default for BufPool {
    fn default() -> Self {
        Self::new()
    }
}

impl BufPool {
    /// An empty pool; buffers are allocated on first use and recycled afterwards.
    pub fn new() -> BufPool {
        BufPool {
            free: Rc::new(RefCell::new(FreeLists {
                classes: std::array::from_fn(|_| Vec::new()),
                counters: PoolCounters::default(),
                reg: None,
            })),
        }
    }

    /// A buffer of `len` bytes (contents unspecified, but initialised memory).
    pub fn alloc(&self, len: usize) -> IoBuf {
        let (class, cap) = class_of(len);
        let recycled = {
            let mut f = self.free.borrow_mut();
            f.counters.in_use += 1;
            f.counters.in_use_bytes += cap as u64;
            f.counters.allocs += 1;
            class.and_then(|c| f.classes[c].pop())
        };
        let (ptr, reg) = match recycled {
            Some(p) => p,
            None => (raw_alloc(cap), None),
        };
        IoBuf {
            inner: Rc::new(Inner {
                ptr,
                cap,
                len,
                pool: self.free.clone(),
                class,
                reg: Cell::new(reg),
            }),
        }
    }

    /// Opens a registered-buffer table of `slots` slots (the shard registered a sparse table
    /// of that size with its ring).
    pub fn enable_registry(&self, slots: u16) {
        self.free.borrow_mut().reg = Some(RegTable {
            free: (0..slots).rev().collect(),
            clear: Vec::new(),
            registered: 0,
            registered_bytes: 0,
        });
    }

    /// Gives `buf` a registered-buffer slot: takes a free one and calls `register(slot,
    /// base, capacity)` (the syscall), keeping the slot when it succeeds. `Ok(None)` when the
    /// buffer cannot be registered (no table, the table is full, or a buffer too large to
    /// pool, whose memory would leave with it); `Err` is the registration's error (the slot
    /// stays free). A buffer already registered returns its slot.
    pub fn register(
        &self,
        buf: &IoBuf,
        register: impl FnOnce(u16, *mut u8, usize) -> std::io::Result<()>,
    ) -> std::io::Result<Option<u16>> {
        if let Some(slot) = buf.reg_index() {
            return Ok(Some(slot));
        }
        if buf.inner.class.is_none() {
            return Ok(None);
        }
        let slot = {
            let mut f = self.free.borrow_mut();
            match f.reg.as_mut().and_then(|r| r.free.pop()) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
        let r = register(slot, buf.inner.ptr.as_ptr(), buf.inner.cap);
        let mut f = self.free.borrow_mut();
        let t = f.reg.as_mut().expect("the table that gave the slot");
        match r {
            Ok(()) => {
                t.registered += 1;
                t.registered_bytes += buf.inner.cap as u64;
                buf.inner.reg.set(Some(slot));
                Ok(Some(slot))
            }
            Err(e) => {
                t.free.push(slot);
                Err(e)
            }
        }
    }

    /// Clears, through `clear(slot)` (the syscall), the slots of buffers that went back to
    /// the allocator, and frees them for new registrations. A slot whose clearing fails is
    /// never reused.
    pub fn clear_registrations(&self, mut clear: impl FnMut(u16) -> std::io::Result<()>) {
        let slots = match self.free.borrow_mut().reg.as_mut() {
            Some(t) if !t.clear.is_empty() => std::mem::take(&mut t.clear),
            _ => return,
        };
        let cleared: Vec<u16> = slots.into_iter().filter(|s| clear(*s).is_ok()).collect();
        if let Some(t) = self.free.borrow_mut().reg.as_mut() {
            t.free.extend(cleared);
        }
    }

    /// Returns cached free buffers to the allocator, keeping at most `keep_per_class` bytes
    /// in each size class (0: all). The shard calls this after connections leave, so a burst
    /// of I/O does not keep its peak memory for the life of the process.
    pub fn trim(&self, keep_per_class: usize) {
        let mut free = self.free.borrow_mut();
        let free = &mut *free;
        for (c, list) in free.classes.iter_mut().enumerate() {
            let cap = 1usize << (c as u32 + MIN_CLASS_SHIFT);
            let keep = keep_per_class / cap;
            while list.len() > keep {
                let (p, reg) = list.pop().expect("list longer than keep");
                if let (Some(slot), Some(t)) = (reg, free.reg.as_mut()) {
                    t.unregistered(slot, cap);
                }
                let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout");
                // SAFETY: pooled pointers of class `c` were allocated by `raw_alloc` with
                // exactly this layout, and a pointer on a free list has no handle left.
                unsafe { dealloc(p.as_ptr(), layout) };
            }
        }
    }

    /// Bytes held in free buffers (not handed out).
    pub fn cached_bytes(&self) -> usize {
        let free = self.free.borrow();
        free.classes
            .iter()
            .enumerate()
            .map(|(c, l)| l.len() << (c as u32 + MIN_CLASS_SHIFT))
            .sum()
    }

    /// What this pool has handed out (and registered).
    pub fn counters(&self) -> PoolCounters {
        let f = self.free.borrow();
        let mut c = f.counters;
        if let Some(t) = &f.reg {
            c.registered = t.registered;
            c.registered_bytes = t.registered_bytes;
        }
        c
    }

    /// A buffer holding a copy of `data` (for small generated responses such as INQUIRY data).
    pub fn from_slice(&self, data: &[u8]) -> IoBuf {
        let mut b = self.alloc(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }
}

fn class_of(len: usize) -> (Option<usize>, usize) {
    let cap = len.max(1).next_power_of_two().max(1 << MIN_CLASS_SHIFT);
    let shift = cap.trailing_zeros();
    if shift > MAX_CLASS_SHIFT {
        (None, len.div_ceil(ALIGN) * ALIGN)
    } else {
        (Some((shift - MIN_CLASS_SHIFT) as usize), cap)
    }
}

fn raw_alloc(cap: usize) -> NonNull<u8> {
    let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout");
    // SAFETY: `layout` has a non-zero size (cap >= 4096) and a power-of-two alignment. The
    // memory is zeroed below so that every byte handed out is initialised.
    let p = unsafe { alloc(layout) };
    let p = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
    // SAFETY: `p` points to `cap` writable bytes just allocated.
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0, cap) };
    #[cfg(test)]
    tests::LIVE.with(|n| n.set(n.get() + 1));
    p
}

struct Inner {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    pool: Rc<RefCell<FreeLists>>,
    /// Size class, `None` for buffers too large to pool.
    class: Option<usize>,
    /// The registered-buffer slot of this memory, once registered (kept across recycling).
    reg: Cell<Option<u16>>,
}

impl RegTable {
    /// A registered buffer's memory goes back to the allocator: its slot waits for clearing.
    fn unregistered(&mut self, slot: u16, cap: usize) {
        self.clear.push(slot);
        self.registered -= 1;
        self.registered_bytes -= cap as u64;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let mut free = self.pool.borrow_mut();
            let free = &mut *free;
            free.counters.in_use -= 1;
            free.counters.in_use_bytes -= self.cap as u64;
            if let Some(class) = self.class {
                let list = &mut free.classes[class];
                if (list.len() + 1) * self.cap <= CACHE_BYTES_PER_CLASS.max(self.cap) {
                    list.push((self.ptr, self.reg.get()));
                    return;
                }
            }
            if let (Some(slot), Some(t)) = (self.reg.get(), free.reg.as_mut()) {
                t.unregistered(slot, self.cap);
            }
        }
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("buffer layout");
        // SAFETY: `ptr` was allocated by `raw_alloc` with exactly this layout and is not used
        // after this point: this is the last handle.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
        #[cfg(test)]
        tests::LIVE.with(|n| n.set(n.get() - 1));
    }
}

/// A reference-counted handle to a pooled buffer. Cloning shares the same bytes; writing needs
/// the only handle (so bytes an in-flight send reads are never changed under it).
#[derive(Clone)]
pub struct IoBuf {
    inner: Rc<Inner>,
}

impl IoBuf {
    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True when no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Bytes that can be used without reallocating.
    pub fn capacity(&self) -> usize {
        self.inner.cap
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap >= len` initialised bytes for as long as `inner` lives,
        // and no `&mut` exists while `&self` is borrowed (as_mut_slice needs the unique handle).
        unsafe { std::slice::from_raw_parts(self.inner.ptr.as_ptr(), self.inner.len) }
    }

    /// Mutable bytes. Panics if another handle shares this buffer: a shared buffer may be in
    /// flight in the kernel.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let inner = Rc::get_mut(&mut self.inner).expect("IoBuf written while shared");
        // SAFETY: we hold the only handle, so no other reference to these bytes exists.
        unsafe { std::slice::from_raw_parts_mut(inner.ptr.as_ptr(), inner.len) }
    }

    /// Raw pointer for handing to the kernel (io_uring read/send). The caller keeps a handle
    /// alive until the operation's completion.
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.ptr.as_ptr()
    }

    /// Raw mutable pointer for a kernel read into the buffer. The caller must hold the only
    /// handle and keep it alive until the completion.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        let inner = Rc::get_mut(&mut self.inner).expect("IoBuf written while shared");
        inner.ptr.as_ptr()
    }

    /// Shrinks or grows the used length within the capacity.
    pub fn set_len(&mut self, len: usize) {
        let inner = Rc::get_mut(&mut self.inner).expect("IoBuf resized while shared");
        assert!(len <= inner.cap, "IoBuf length beyond capacity");
        inner.len = len;
    }

    /// The slot this buffer's memory has in the ring's registered-buffer table, if any (a
    /// fixed-buffer send names it with `buf_index`; its whole capacity is registered).
    pub fn reg_index(&self) -> Option<u16> {
        self.inner.reg.get()
    }

    /// Number of handles sharing this buffer (used by tests and zero-copy accounting).
    pub fn handles(&self) -> usize {
        Rc::strong_count(&self.inner)
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Buffers allocated and not yet returned to the allocator, on this thread.
        pub(super) static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    #[test]
    fn dropping_the_pool_returns_its_cached_buffers() {
        let before = LIVE.with(Cell::get);
        let pool = BufPool::new();
        let a = pool.alloc(5000);
        let b = pool.alloc(100_000);
        let c = pool.alloc((32 << 20) + 1);
        drop((a, b, c));
        assert_eq!(
            LIVE.with(Cell::get) - before,
            2,
            "two pooled buffers cached"
        );
        drop(pool);
        assert_eq!(LIVE.with(Cell::get), before, "the pool's cache leaked");
    }

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let pool = BufPool::new();
        let mut a = pool.alloc(5000);
        assert_eq!(a.len(), 5000);
        assert_eq!(a.capacity(), 8192);
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        a.as_mut_slice()[0] = 7;
        let p = a.as_ptr();
        drop(a);
        let b = pool.alloc(8000);
        assert_eq!(b.as_ptr(), p, "freed buffer of the same class is reused");
    }

    #[test]
    fn shared_buffer_outlives_first_handle() {
        let pool = BufPool::new();
        let a = pool.from_slice(b"hello");
        let send_ref = a.clone();
        assert_eq!(a.handles(), 2);
        drop(a);
        assert_eq!(send_ref.as_slice(), b"hello");
    }

    #[test]
    #[should_panic(expected = "shared")]
    fn writing_a_shared_buffer_panics() {
        let pool = BufPool::new();
        let mut a = pool.alloc(10);
        let _b = a.clone();
        a.as_mut_slice()[0] = 1;
    }

    #[test]
    fn trim_returns_cached_buffers() {
        let pool = BufPool::new();
        let bufs: Vec<IoBuf> = (0..8).map(|_| pool.alloc(1 << 20)).collect();
        drop(bufs);
        assert_eq!(pool.cached_bytes(), 8 << 20);
        pool.trim(2 << 20);
        assert_eq!(pool.cached_bytes(), 2 << 20, "two 1 MiB buffers kept");
        pool.trim(0);
        assert_eq!(pool.cached_bytes(), 0);
        let again = pool.alloc(1 << 20);
        assert_eq!(
            again.len(),
            1 << 20,
            "the pool still allocates after a trim"
        );
    }

    #[test]
    fn counters_follow_the_last_handle() {
        let pool = BufPool::new();
        let a = pool.alloc(100);
        let b = a.clone();
        let big = pool.alloc((32 << 20) + 1);
        assert_eq!(pool.counters().in_use, 2);
        drop(a);
        assert_eq!(pool.counters().in_use, 2, "a handle is still alive");
        drop(b);
        drop(big);
        let c = pool.counters();
        assert_eq!((c.in_use, c.in_use_bytes, c.allocs), (0, 0, 2));
    }

    #[test]
    fn huge_buffers_bypass_the_pool() {
        let pool = BufPool::new();
        let a = pool.alloc((32 << 20) + 1);
        assert!(a.capacity() > (32 << 20));
    }
}
