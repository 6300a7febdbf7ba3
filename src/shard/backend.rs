//! The shard's side of the backend interface: one [`Engine`] per backing store this shard
//! serves (made on first use from the store's shared description), the table of backend
//! operations in flight (which connection and task each is for), and the [`Reactor`] through
//! which engines reach the ring, the timers, the buffer pool and the completion queue.

use super::owners::Owner;
use super::ring::{clock, Ring};
use super::slots::{Slab, SlotKey};
use super::timers::{TimerKey, TimerOwner, Timers};
use crate::backing::engine::{Completion, Engine, OpId, OpRequest, Reactor, RingToken, TimerId};
use crate::backing::{BackingStore, BlockIo};
use crate::buf::BufPool;
use crate::iscsi::task::TaskRef;
use crate::scsi::LogicalUnit;
use io_uring::{opcode, squeue, types};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

/// A backend operation in flight for one task.
pub struct OpEntry {
    /// The connection (slot and generation) and task it is for.
    pub conn: SlotKey,
    pub task: TaskRef,
    pub lu: Arc<LogicalUnit>,
    /// What the SCSI layer asked (it needs it again to build the response).
    pub io: BlockIo,
    engine: u16,
    /// Cancel was asked already.
    cancelled: bool,
}

struct EngineSlot {
    /// Kept so the store outlives its engine (and its address names it).
    store: Arc<dyn BackingStore>,
    engine: Box<dyn Engine>,
}

/// An outbound connect an engine started, until its CQE.
struct Connecting {
    deadline: TimerKey,
    /// The kernel reads the address when the SQE is submitted.
    _addr: Box<socket2::SockAddr>,
    timed_out: bool,
}

/// Engines and operations of one shard.
#[derive(Default)]
pub struct Backends {
    engines: Vec<Option<EngineSlot>>,
    /// Operations started and not completed.
    pub ops: Slab<OpEntry>,
    /// Completions engines reported, for the shard to apply.
    pub done: Vec<Completion>,
    connects: HashMap<u64, Connecting>,
}

/// What the shard lends an engine for one call.
struct Ctx<'a> {
    ring: &'a mut Ring,
    timers: &'a mut Timers,
    pool: &'a BufPool,
    done: &'a mut Vec<Completion>,
    connects: &'a mut HashMap<u64, Connecting>,
    engine: u16,
}

impl Reactor for Ctx<'_> {
    fn now(&self) -> u64 {
        clock()
    }
    fn pool(&self) -> &BufPool {
        self.pool
    }
    unsafe fn submit(&mut self, sqe: squeue::Entry, tag: u64) -> RingToken {
        let owner = Owner::Engine {
            engine: self.engine,
            tag,
        };
        // SAFETY: the engine vouches for the entry's pointers (this method's contract).
        RingToken(unsafe { self.ring.push(sqe, owner) })
    }
    fn cancel(&mut self, t: RingToken) {
        self.ring.cancel(t.0);
    }
    fn connect(
        &mut self,
        fd: RawFd,
        addr: socket2::SockAddr,
        deadline: u64,
        tag: u64,
    ) -> RingToken {
        let addr = Box::new(addr);
        let e = opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len()).build();
        let owner = Owner::Engine {
            engine: self.engine,
            tag,
        };
        // SAFETY: the address lives in `connects` until the connect's CQE.
        let token = unsafe { self.ring.push(e, owner) };
        let deadline = self
            .timers
            .insert(deadline, TimerOwner::ConnectDeadline { token });
        self.connects.insert(
            token,
            Connecting {
                deadline,
                _addr: addr,
                timed_out: false,
            },
        );
        RingToken(token)
    }
    fn timer(&mut self, deadline: u64, tag: u64) -> TimerId {
        let k = self.timers.insert(
            deadline,
            TimerOwner::Engine {
                engine: self.engine,
                tag,
            },
        );
        TimerId(k.0.token())
    }
    fn cancel_timer(&mut self, t: TimerId) -> bool {
        self.timers.cancel(TimerKey(SlotKey::from_token(t.0)))
    }
    fn complete(&mut self, c: Completion) {
        self.done.push(c);
    }
}

fn op_id(k: SlotKey) -> OpId {
    OpId {
        index: k.index,
        generation: k.generation,
    }
}

fn op_key(op: OpId) -> SlotKey {
    SlotKey::new(op.index, op.generation)
}

impl Backends {
    /// The engine serving `store` on this shard, made on first use.
    fn engine_for(&mut self, shard: usize, store: &Arc<dyn BackingStore>) -> u16 {
        // Linear: a shard serves few stores, and comparing a handful of pointers beats
        // hashing on every operation.
        if let Some(e) = self
            .engines
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| Arc::ptr_eq(&s.store, store)))
        {
            return e as u16;
        }
        let slot = EngineSlot {
            store: store.clone(),
            engine: store.engine(shard),
        };
        let i = match self.engines.iter().position(Option::is_none) {
            Some(i) => {
                self.engines[i] = Some(slot);
                i
            }
            None => {
                self.engines.push(Some(slot));
                self.engines.len() - 1
            }
        };
        u16::try_from(i).expect("fewer than 65536 stores per shard")
    }

    /// Starts `io` for a task on `lu`'s store. Its completion arrives in `done` (perhaps at
    /// once). An LU without a store never gets here (the SCSI layer answers NOT READY).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        shard: usize,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        conn: SlotKey,
        task: TaskRef,
        lu: Arc<LogicalUnit>,
        io: BlockIo,
        data: Option<crate::buf::IoBuf>,
    ) -> Option<OpId> {
        let Some(store) = lu.backing().cloned() else {
            // No medium: the SCSI layer answers NOT READY before asking for I/O.
            return None;
        };
        let engine = self.engine_for(shard, &store);
        let req = OpRequest {
            io: io.clone(),
            data,
        };
        let key = self.ops.insert(OpEntry {
            conn,
            task,
            lu,
            io,
            engine,
            cancelled: false,
        });
        let op = op_id(key);
        self.with_engine(engine, ring, timers, pool, |e, r| e.start(op, req, r));
        Some(op)
    }

    fn with_engine(
        &mut self,
        engine: u16,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        f: impl FnOnce(&mut dyn Engine, &mut dyn Reactor),
    ) {
        let Some(slot) = self
            .engines
            .get_mut(usize::from(engine))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let mut ctx = Ctx {
            ring,
            timers,
            pool,
            done: &mut self.done,
            connects: &mut self.connects,
            engine,
        };
        f(&mut *slot.engine, &mut ctx);
    }

    /// Routes a CQE to its engine.
    #[allow(clippy::too_many_arguments)]
    pub fn on_cqe(
        &mut self,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        engine: u16,
        tag: u64,
        token: u64,
        mut res: i32,
        flags: u32,
    ) {
        if let Some(c) = (!self.connects.is_empty())
            .then(|| self.connects.remove(&token))
            .flatten()
        {
            timers.cancel(c.deadline);
            if c.timed_out && res == -libc::ECANCELED {
                res = -libc::ETIMEDOUT;
            }
        }
        self.with_engine(engine, ring, timers, pool, |e, r| {
            e.on_cqe(tag, res, flags, r)
        });
    }

    /// Routes a timer expiry.
    pub fn on_timer(
        &mut self,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        owner: TimerOwner,
    ) {
        match owner {
            TimerOwner::Engine { engine, tag } => {
                self.with_engine(engine, ring, timers, pool, |e, r| e.on_timer(tag, r));
            }
            TimerOwner::ConnectDeadline { token } => {
                if let Some(c) = self.connects.get_mut(&token) {
                    c.timed_out = true;
                    ring.cancel(token);
                }
            }
            _ => {}
        }
    }

    /// Asks the engine to stop `op` (it still completes, into `done`).
    pub fn cancel(&mut self, ring: &mut Ring, timers: &mut Timers, pool: &BufPool, op: OpId) {
        let Some(e) = self.ops.get_mut(op_key(op)) else {
            return;
        };
        if e.cancelled {
            return;
        }
        e.cancelled = true;
        let engine = e.engine;
        self.with_engine(engine, ring, timers, pool, |e, r| e.cancel(op, r));
    }

    /// Takes a completed operation's entry.
    pub fn finish(&mut self, op: OpId) -> Option<OpEntry> {
        self.ops.remove(op_key(op))
    }

    /// Drops engines of stores no LU in the configuration uses any more, once idle.
    pub fn prune(&mut self, in_use: impl Fn(&Arc<dyn BackingStore>) -> bool) {
        for i in 0..self.engines.len() {
            let drop_it = self.engines[i]
                .as_ref()
                .is_some_and(|s| s.engine.in_flight() == 0 && !in_use(&s.store));
            if drop_it {
                self.engines[i] = None;
            }
        }
    }

    /// Operations the engines say are in flight (checked against `ops`).
    pub fn engines_in_flight(&self) -> usize {
        self.engines
            .iter()
            .flatten()
            .map(|s| s.engine.in_flight())
            .sum()
    }
}
