//! The per-shard half of a backing store: an [`Engine`] owns the store's in-flight operations
//! on one shard's io_uring. The shared half is [`super::BackingStore`] (`Send + Sync`: open,
//! size, block size, capabilities, show text); each shard asks it once for an engine with
//! [`super::BackingStore::engine`] and keeps that engine for as long as the LU exists.
//!
//! # Contract
//!
//! Everything happens on the shard's thread, so an engine needs no lock and may hold `!Send`
//! state (pooled buffers, sockets it owns). The shard drives it with four calls, and the
//! engine acts on the world only through the [`Reactor`] it is handed in each call:
//!
//! * [`Engine::start`]`(op, req, r)`: begin operation `op`. The engine now owns `req` (its
//!   Data-Out buffer included) until it reports the operation done with exactly one
//!   [`Reactor::complete`] — possibly from inside `start` itself (an inline answer), usually
//!   later from `on_cqe` or `on_timer`. An engine that cannot serve `req.io` at all completes
//!   it with [`IoResult::Unsupported`] (the initiator gets ILLEGAL REQUEST / INVALID COMMAND
//!   OPERATION CODE).
//! * [`Engine::on_cqe`]`(tag, res, flags, r)`: a completion for an SQE this engine submitted
//!   with [`Reactor::submit`] (or [`Reactor::connect`]) under `tag`. Every CQE is delivered,
//!   flags included (`IORING_CQE_F_MORE` for multishot receives and zero-copy sends, whose
//!   `IORING_CQE_F_NOTIF` notification follows; the provided-buffer id in the upper 16 bits).
//!   A CQE for a submission the shard knows to be stale is never delivered.
//! * [`Engine::on_timer`]`(tag, r)`: a timer armed with [`Reactor::timer`] is due.
//! * [`Engine::cancel`]`(op, r)`: the initiator no longer wants `op` (ABORT TASK, ABORT TASK
//!   SET, LUN RESET, connection closed). The engine stops it as soon as it can — ring cancel
//!   ([`Reactor::cancel`]) of what it submitted, dropping an RPC from its queue — and still
//!   completes it exactly once (with [`IoResult::Cancelled`], or with its real result if it
//!   was already done). It must not touch the operation's buffers after completing it. The
//!   shard frees a closed connection's slot and buffers only when every one of its operations
//!   has been completed, so an engine must complete a cancelled operation within bounded time.
//! * [`Engine::shutdown`]`(r)`: the store left the configuration and nothing is in flight:
//!   release sockets and timers. The engine is dropped when nothing it submitted or armed is
//!   outstanding (the shard counts both), so its engine index is never reused early.
//!
//! * [`Engine::on_message`]`(msg, r)`: a message posted to this engine through its
//!   [`Mailbox`] (from the store's own control-side thread, or from its engine on another
//!   shard), e.g. a new volume layout. Messages for a shard where the store has no engine yet
//!   are dropped: an engine made later reads the current state from the store instead.
//!
//! An engine is made by [`super::BackingStore::engine`] with an [`EngineEnv`]: its shard and
//! a [`Mailbox`] that reaches this store's engines on every shard. A store that runs a
//! control-side task (the Curve MDS client: layouts, leases) keeps a clone of the mailbox to
//! push updates to the shards; engines send the other way with whatever channel the store
//! hands them (the shard does not need to know).
//!
//! Tags are the engine's own: a 64-bit value naming what a CQE or timer is for (an operation
//! and its step, a peer connection's receive, an RPC's deadline). The shard routes each CQE
//! by a token with a generation, so tags need no generation of their own.
//!
//! A remote engine (the Curve client) fits the same shape: it opens its sockets itself,
//! connects them with [`Reactor::connect`] (a deadline included), keeps a receive and a send
//! per connection on the ring with [`Reactor::submit`], many RPCs in flight per connection,
//! arms per-RPC deadlines and backoff timers with [`Reactor::timer`], and completes each SCSI
//! operation when its RPCs are done. The buffers it hands the kernel must stay valid until
//! the CQE that ends their use (for `SEND_ZC`, the `F_NOTIF` one).
//!
//! Buffers come from [`Reactor::pool`] (page aligned, so they suit O_DIRECT); the data of a
//! `Read` goes back in [`Completion::data`].

use super::{BlockIo, IoResult};
use crate::buf::{BufPool, IoBuf};
use io_uring::squeue;
use std::os::fd::RawFd;
use std::sync::Arc;

/// A message for an engine; the engine downcasts it to the type its store posts.
pub type EngineMsg = Box<dyn std::any::Any + Send>;

/// Reaches one store's engines on every shard: [`Mailbox::post`] queues a message for the
/// engine on `shard` and wakes that shard, whose loop hands it to [`Engine::on_message`].
/// `Send + Sync` and cheap to clone, so a store's control-side thread can keep one.
#[derive(Clone)]
pub struct Mailbox {
    post: Arc<dyn Fn(usize, EngineMsg) + Send + Sync>,
    shards: usize,
}

impl Mailbox {
    /// A mailbox over `shards` shards that delivers with `post(shard, msg)`.
    pub fn new(shards: usize, post: impl Fn(usize, EngineMsg) + Send + Sync + 'static) -> Mailbox {
        Mailbox {
            post: Arc::new(post),
            shards,
        }
    }

    /// A mailbox that delivers nothing (tests, tools without shards).
    pub fn none() -> Mailbox {
        Mailbox::new(0, |_, _| {})
    }

    /// Queues `msg` for this store's engine on `shard` (dropped when there is none).
    pub fn post(&self, shard: usize, msg: EngineMsg) {
        if shard < self.shards {
            (self.post)(shard, msg);
        }
    }

    /// How many shards there are (`0..shards()` are valid for [`Mailbox::post`]).
    pub fn shards(&self) -> usize {
        self.shards
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("shards", &self.shards)
            .finish()
    }
}

/// What an engine is made with.
#[derive(Clone, Debug)]
pub struct EngineEnv {
    /// The shard the engine serves.
    pub shard: usize,
    /// Reaches this store's engines on every shard.
    pub mailbox: Mailbox,
}

/// Names one backend operation on a shard. `index` is small and dense (slots are reused), so
/// an engine can keep per-operation state in a `Vec` indexed by it; `generation` tells a
/// slot's successive operations apart.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpId {
    pub index: u32,
    pub generation: u32,
}

/// What an operation asks.
#[derive(Debug)]
pub struct OpRequest {
    pub io: BlockIo,
    /// The command's Data-Out buffer; ranges in `io` index into it.
    pub data: Option<IoBuf>,
}

/// How an operation ended.
#[derive(Debug)]
pub struct Completion {
    pub op: OpId,
    pub result: IoResult,
    /// The data of a `Read` (and of `Verify`/`CompareAndWrite` scratch reads, unused after).
    pub data: Option<IoBuf>,
}

/// Names a submission on the ring, for [`Reactor::cancel`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RingToken(pub u64);

/// Names an armed timer, for [`Reactor::cancel_timer`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimerId(pub u64);

/// What a shard offers an engine during one call.
pub trait Reactor {
    /// The shard's monotonic clock, in nanoseconds (the clock of timer deadlines).
    fn now(&self) -> u64;
    /// The shard's buffer pool.
    fn pool(&self) -> &BufPool;
    /// Queues `sqe` on the shard's ring; each of its CQEs comes back to
    /// [`Engine::on_cqe`] with `tag`. The SQE's `user_data` is overwritten.
    ///
    /// # Safety
    /// Every pointer in `sqe` (buffers, iovecs, msghdr, sockaddr) must stay valid until the
    /// last CQE of the submission has been delivered.
    unsafe fn submit(&mut self, sqe: squeue::Entry, tag: u64) -> RingToken;
    /// Asks the kernel to cancel a submission; its CQE still comes (-ECANCELED, or its real
    /// result when it had already finished).
    fn cancel(&mut self, t: RingToken);
    /// Connects socket `fd` to `addr` on the ring. The result comes to [`Engine::on_cqe`] with
    /// `tag`: 0, a negative errno, or `-ETIMEDOUT` when `deadline` (shard clock) passed first.
    /// The shard keeps `addr` alive until then.
    fn connect(&mut self, fd: RawFd, addr: socket2::SockAddr, deadline: u64, tag: u64)
        -> RingToken;
    /// Arms a timer: [`Engine::on_timer`] gets `tag` at `deadline` (shard clock, ns).
    fn timer(&mut self, deadline: u64, tag: u64) -> TimerId;
    /// Disarms a timer; false when it already fired or was cancelled.
    fn cancel_timer(&mut self, t: TimerId) -> bool;
    /// Reports an operation done (exactly once per started operation).
    fn complete(&mut self, c: Completion);
}

/// A store's in-flight operations on one shard (see the module documentation).
pub trait Engine {
    /// Begins an operation.
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor);
    /// A CQE for a submission made under `tag`.
    fn on_cqe(&mut self, tag: u64, res: i32, flags: u32, r: &mut dyn Reactor);
    /// A timer armed under `tag` is due.
    fn on_timer(&mut self, tag: u64, r: &mut dyn Reactor);
    /// Stops an operation; it still completes exactly once.
    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor);
    /// Operations started and not yet completed.
    fn in_flight(&self) -> usize;
    /// The store is no longer used on this shard (its LU was deleted) and no operation is in
    /// flight: close sockets, cancel what was submitted, disarm timers. The shard drops the
    /// engine once none of its submissions has a CQE to come and none of its timers is armed,
    /// so until then its buffers must stay valid. Engines that hold nothing when idle (files)
    /// need not do anything.
    fn shutdown(&mut self, r: &mut dyn Reactor) {
        let _ = r;
    }
    /// A message posted through this store's [`Mailbox`]. Engines that post none ignore it.
    fn on_message(&mut self, msg: EngineMsg, r: &mut dyn Reactor) {
        let _ = (msg, r);
    }
}
