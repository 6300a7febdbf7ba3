//! Per-core event loops. Each shard is a thread pinned to one CPU that owns one io_uring, the
//! connections and sessions placed on it, and the backend I/O they issue. Cores share nothing
//! mutable on the data path: they talk by [`msg::ShardMsg`] over crossbeam channels, each
//! paired with an eventfd whose read is always pending on the receiving shard's ring.

pub mod backend;
mod budget;
pub mod callback;
pub mod conn;
pub mod cpus;
pub mod event_loop;
mod hold;
pub mod limits;
mod login_glue;
pub mod msg;
pub mod owners;
pub mod plane;
pub mod reclaim;
pub mod ring;
mod scsi_glue;
pub mod slots;
mod spin;
mod sq_overflow;
pub mod stats;
pub mod timers;
pub mod zerocopy;
mod zerocopy_glue;

use crate::iscsi::registry::SessionRegistry;
use callback::CallbackRunner;
use crossbeam_channel::Sender;
use msg::{ControlEvent, ShardMsg};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicUsize;

/// How to reach one shard: its channel and its wake-up eventfd.
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    wake: OwnedFd,
}

impl ShardHandle {
    /// Queues a message and wakes the shard's ring.
    pub fn send(&self, m: ShardMsg) {
        if self.tx.send(m).is_ok() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
            let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// What every shard and the control side share, read-mostly: the handles to reach each
/// shard, per-shard connection counts (for placement), the login-time session registry and
/// the channel to the control thread, and the runner of redirect callbacks (one bound on them
/// for the whole process). Nothing here is touched per I/O.
pub struct Shared {
    pub handles: Vec<ShardHandle>,
    pub shard_conns: Vec<AtomicUsize>,
    pub registry: SessionRegistry,
    pub control: Sender<ControlEvent>,
    pub callbacks: CallbackRunner,
    /// How each shard runs (login deadline, ...).
    pub options: ShardOptions,
    /// Dead shards and refused connections (`limits`).
    pub admission: limits::Admission,
}

/// Settings every shard runs with (tgtd options).
#[derive(Copy, Clone, Debug)]
pub struct ShardOptions {
    /// A connection that has not finished login this long after it was accepted is closed
    /// (`tgtd --login-timeout`; a stalled or half-done login must not hold a slot forever).
    pub login_timeout: std::time::Duration,
    /// Connection caps, output backlog and write-buffer budget (`limits`).
    pub limits: limits::Limits,
    /// A connection whose write holds write-budget bytes and sees no Data-Out for this many
    /// seconds is closed (`tgtd --dataout-timeout`; 0: never). See `iscsi::session`'s
    /// `deadline`.
    pub dataout_timeout_secs: u32,
}

/// Default login deadline.
pub const LOGIN_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(15);
/// Default Data-Out deadline in seconds: well above what a working initiator takes to answer
/// an R2T even on a congested link (TCP's own retransmission gives up on a dead peer after
/// minutes, far too long to hold other writers back), and below typical SCSI command
/// timeouts (30 s in Linux), so the initiator sees a reconnect, not a failed command.
pub const DATAOUT_TIMEOUT_DEFAULT_SECS: u32 = 20;

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            login_timeout: LOGIN_TIMEOUT_DEFAULT,
            limits: limits::Limits::default(),
            dataout_timeout_secs: DATAOUT_TIMEOUT_DEFAULT_SECS,
        }
    }
}

impl Shared {
    /// Sends to one shard.
    pub fn send(&self, shard: usize, m: ShardMsg) {
        if let Some(h) = self.handles.get(shard) {
            h.send(m);
        }
    }

    /// Sends a message built by `f` to every shard.
    pub fn broadcast(&self, f: impl Fn() -> ShardMsg) {
        for h in &self.handles {
            h.send(f());
        }
    }
}

/// Test fixture: the shared state of `shards` shards run with `options`, each shard's message
/// receiver with the raw fd of its wake eventfd (owned by its handle; what `Shard::new`
/// takes), and the control thread's receiver of session events.
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn test_shared(
    shards: usize,
    options: ShardOptions,
) -> (
    std::sync::Arc<Shared>,
    Vec<(crossbeam_channel::Receiver<ShardMsg>, std::os::fd::RawFd)>,
    crossbeam_channel::Receiver<ControlEvent>,
) {
    use std::os::fd::FromRawFd;
    let mut handles = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = crossbeam_channel::unbounded();
        // SAFETY: eventfd returns a new descriptor or -1 (checked).
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        handles.push(ShardHandle { tx, wake });
        rxs.push((rx, fd));
    }
    let (control, control_rx) = crossbeam_channel::unbounded();
    let s = std::sync::Arc::new(Shared {
        shard_conns: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
        handles,
        registry: SessionRegistry::default(),
        control,
        callbacks: CallbackRunner::new(1, std::time::Duration::from_secs(1)),
        options,
        admission: limits::Admission::new(shards),
    });
    (s, rxs, control_rx)
}
