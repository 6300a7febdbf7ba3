//! Ring mechanics: the shard's io_uring, its token table, the one armed timeout behind the
//! timer heap, cancellation, and the wait (poll briefly, hold for a deadline, or sleep).
//! Everything that puts an SQE on the ring goes through [`Ring::push`], which registers the
//! SQE's owner and stamps the token, so every CQE can be routed (see [`super::owners`]).

use super::owners::{Cqe, Owner, OwnerTable};
use io_uring::{opcode, squeue, types, IoUring};

/// Submission queue depth per shard.
const RING_ENTRIES: u32 = 4096;

/// The shard's monotonic clock in nanoseconds (CLOCK_MONOTONIC, the clock absolute ring
/// timeouts use).
pub fn clock() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the loop wants to wait.
pub enum Wait {
    /// Until at least one completion.
    One,
    /// Poll for up to this many ns (no syscalls) before sleeping for one completion.
    SpinThenOne(u64),
    /// Until `want` completions or the deadline (shard clock), whichever first.
    Until { deadline: u64, want: usize },
}

/// The shard's ring and the bookkeeping that makes its tokens safe.
pub struct Ring {
    ring: IoUring,
    /// Token → owner of every submission whose last CQE has not arrived.
    pub owners: OwnerTable,
    /// The armed timeout: its deadline and token.
    armed: Option<(u64, u64)>,
    /// The armed timeout's absolute time; read by the kernel when the SQE is submitted.
    armed_ts: Box<types::Timespec>,
    /// Entries pushed while the submission queue was full and the kernel took none of it
    /// (`super::sq_overflow`); queued in order, moved to the ring before each wait.
    overflow: std::collections::VecDeque<squeue::Entry>,
}

impl Ring {
    /// Creates the ring. Runs on the shard's own thread.
    pub fn new() -> std::io::Result<Ring> {
        // DEFER_TASKRUN (6.1+): completion work runs only when this thread enters the ring to
        // wait, so a burst of socket events is batched into one enter instead of interrupting
        // the loop; it needs SINGLE_ISSUER, which holds (only this thread touches the ring).
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_single_issuer()
                    .setup_coop_taskrun()
                    .build(RING_ENTRIES)
            })
            .or_else(|_| IoUring::new(RING_ENTRIES))?;
        Ok(Ring {
            ring,
            owners: OwnerTable::default(),
            armed: None,
            armed_ts: Box::new(types::Timespec::new()),
            overflow: std::collections::VecDeque::new(),
        })
    }

    /// Queues `e` for `owner`; returns its token (for [`Ring::cancel`]).
    ///
    /// # Safety
    /// Every buffer, iovec, msghdr or sockaddr the entry points to must stay valid (and not be
    /// written, for sends) until the entry's last completion has been delivered to `owner`.
    pub unsafe fn push(&mut self, e: squeue::Entry, owner: Owner) -> u64 {
        let token = self.owners.register(owner);
        self.push_raw(e.user_data(token));
        token
    }

    fn push_raw(&mut self, e: squeue::Entry) {
        // The caller of `push` vouched for the entry's pointers; the entries the ring itself
        // builds point into `self` (the armed timespec) or nowhere. Never spins: see
        // `super::sq_overflow`.
        super::sq_overflow::push(&mut self.ring, &mut self.overflow, e);
    }

    /// Asks the kernel to cancel the submission behind `token` (its CQE then comes with
    /// -ECANCELED, or with its real result when it was already done).
    pub fn cancel(&mut self, token: u64) {
        let e = opcode::AsyncCancel::new(token).build();
        let t = self.owners.register(Owner::Cancel);
        self.push_raw(e.user_data(t));
    }

    /// Makes the one ring timeout fire at `deadline` (shard clock) unless it already fires
    /// earlier; `None` leaves it as it is (a timeout with nothing due is harmless).
    pub fn arm_timer(&mut self, deadline: Option<u64>) {
        let Some(d) = deadline else { return };
        if self.armed.is_some_and(|(a, _)| a <= d) {
            return;
        }
        *self.armed_ts = types::Timespec::new()
            .sec(d / 1_000_000_000)
            .nsec((d % 1_000_000_000) as u32);
        let ts: *const types::Timespec = &*self.armed_ts;
        match self.armed {
            Some((_, token)) => {
                // Moved earlier in place: still one armed timeout.
                let e = opcode::TimeoutUpdate::new(token, ts)
                    .flags(types::TimeoutFlags::ABS)
                    .build();
                let t = self.owners.register(Owner::Cancel);
                self.push_raw(e.user_data(t));
                self.armed = Some((d, token));
            }
            None => {
                let e = opcode::Timeout::new(ts)
                    .flags(types::TimeoutFlags::ABS)
                    .build();
                let token = self.owners.register(Owner::Timer);
                self.push_raw(e.user_data(token));
                self.armed = Some((d, token));
            }
        }
    }

    /// Opens a sparse registered-buffer table of `slots` empty slots (5.19+; costs no
    /// locked memory until a slot is filled).
    pub fn register_buffers_sparse(&mut self, slots: u16) -> std::io::Result<()> {
        self.ring
            .submitter()
            .register_buffers_sparse(u32::from(slots))
    }

    /// Registers `len` bytes at `base` in slot `slot` (pins the pages; charged to
    /// `RLIMIT_MEMLOCK` without CAP_IPC_LOCK: ENOMEM past it).
    ///
    /// # Safety
    /// The memory must stay allocated until the slot is cleared ([`Ring::clear_buffer`]) or
    /// the ring is dropped, and fixed-buffer sends name the slot only while it holds it.
    pub unsafe fn register_buffer(
        &mut self,
        slot: u16,
        base: *mut u8,
        len: usize,
    ) -> std::io::Result<()> {
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        // SAFETY: the caller keeps the memory allocated while the slot names it.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(u32::from(slot), &[iov], None)
        }
        .map(drop)
    }

    /// Empties slot `slot` (the kernel unpins its pages once no request uses them).
    pub fn clear_buffer(&mut self, slot: u16) -> std::io::Result<()> {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: an empty iovec registers nothing.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(u32::from(slot), &[iov], None)
        }
        .map(drop)
    }

    /// The armed timeout's CQE arrived: nothing is armed now.
    pub fn timer_fired(&mut self) {
        self.armed = None;
    }

    /// Moves every completion out of the ring, resolved to its owner (stale ones dropped).
    pub fn completions(&mut self, out: &mut Vec<Cqe>) {
        let owners = &mut self.owners;
        for c in self.ring.completion() {
            if let Some(cqe) = owners.resolve(c.user_data(), c.result(), c.flags()) {
                out.push(cqe);
            }
        }
    }

    /// Submits what is queued and waits as asked.
    pub fn wait(&mut self, how: Wait) -> std::io::Result<()> {
        if !super::sq_overflow::drain(&mut self.ring, &mut self.overflow) {
            // Entries still wait for room: hand over what fits and come back at once to
            // reap the completions that make room, instead of sleeping on them.
            return self.ring.submit().map(drop);
        }
        match how {
            Wait::One => self.ring.submit_and_wait(1).map(drop),
            Wait::SpinThenOne(ns) => {
                // With DEFER_TASKRUN + TASKRUN_FLAG the kernel raises IORING_SQ_TASKRUN when
                // completion work is pending; sends that finished inline are already CQEs.
                self.ring.submit()?;
                let start = clock();
                loop {
                    if self.ring.submission().taskrun() || !self.ring.completion().is_empty() {
                        break;
                    }
                    if clock() - start > ns {
                        break;
                    }
                    std::hint::spin_loop();
                }
                self.ring.submit_and_wait(1).map(drop)
            }
            Wait::Until { deadline, want } => {
                let now = clock();
                if deadline <= now {
                    return self.ring.submit().map(drop);
                }
                let ts = types::Timespec::new().nsec((deadline - now).min(999_999_999) as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(want, &args) {
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
                    r => r.map(drop),
                }
            }
        }
    }
}
