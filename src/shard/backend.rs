//! The shard's side of the backend interface: one [`Engine`] per backing store this shard
//! serves (made on first use from the store's shared description), the table of backend
//! operations in flight (which connection and task each is for), and the [`Reactor`] through
//! which engines reach the ring, the timers, the buffer pool and the completion queue.

use super::owners::Owner;
use super::ring::{clock, Ring};
use super::slots::{Slab, SlotKey};
use super::timers::{TimerKey, TimerOwner, Timers};
use crate::backing::engine::{
    Completion, Engine, EngineEnv, EngineMsg, Mailbox, OpId, OpRequest, Reactor, RingToken, TimerId,
};
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
    /// What the engine has outstanding: ring submissions whose last CQE has not come, and
    /// armed timers. The slot (and its index, which tokens carry) is reused only when both
    /// are zero, so no completion or expiry can reach the slot's next engine.
    outstanding: Outstanding,
    /// The store left the configuration while the engine still had operations in flight:
    /// it is told to shut down once they complete (see [`Backends::retire_gone`]).
    gone: bool,
    /// The store left the configuration: the engine was told to shut down and is dropped
    /// once nothing is outstanding.
    retiring: bool,
}

/// Per-engine counts of what the kernel or the timer heap still holds for it.
#[derive(Default)]
struct Outstanding {
    ring: u64,
    timers: u64,
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
    /// Some engine is retiring (see [`Backends::reap`]).
    retiring: bool,
    /// Some engine's store is gone but the engine is still busy (see
    /// [`Backends::retire_gone`]).
    gone: bool,
    /// How engines' mailboxes reach the shards (`None` in unit tests: messages are dropped).
    shared: Option<Arc<super::Shared>>,
}

/// What the shard lends an engine for one call.
struct Ctx<'a> {
    ring: &'a mut Ring,
    timers: &'a mut Timers,
    pool: &'a BufPool,
    done: &'a mut Vec<Completion>,
    connects: &'a mut HashMap<u64, Connecting>,
    engine: u16,
    outstanding: &'a mut Outstanding,
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
        self.outstanding.ring += 1;
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
        self.outstanding.ring += 1;
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
        self.outstanding.timers += 1;
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
        let hit = self.timers.cancel(TimerKey(SlotKey::from_token(t.0)));
        if hit {
            self.outstanding.timers -= 1;
        }
        hit
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
    /// A shard's backends; engines' mailboxes post through `shared`.
    pub fn new(shared: Arc<super::Shared>) -> Backends {
        Backends {
            shared: Some(shared),
            ..Backends::default()
        }
    }

    /// The engine serving `store` on this shard, made on first use.
    fn engine_for(&mut self, shard: usize, store: &Arc<dyn BackingStore>) -> u16 {
        // Linear: a shard serves few stores, and comparing a handful of pointers beats
        // hashing on every operation.
        if let Some(e) = self.engines.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| !s.retiring && Arc::ptr_eq(&s.store, store))
        }) {
            return e as u16;
        }
        let mailbox = match &self.shared {
            Some(shared) => {
                let (shared, weak) = (shared.clone(), Arc::downgrade(store));
                Mailbox::new(shared.handles.len(), move |to, msg| {
                    let store = weak.clone();
                    shared.send(to, super::msg::ShardMsg::Engine { store, msg });
                })
            }
            None => Mailbox::none(),
        };
        let slot = EngineSlot {
            store: store.clone(),
            engine: store.engine(EngineEnv { shard, mailbox }),
            outstanding: Outstanding::default(),
            gone: false,
            retiring: false,
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
            outstanding: &mut slot.outstanding,
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
        if !io_uring::cqueue::more(flags) {
            if let Some(s) = self
                .engines
                .get_mut(usize::from(engine))
                .and_then(Option::as_mut)
            {
                s.outstanding.ring -= 1;
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
                if let Some(s) = self
                    .engines
                    .get_mut(usize::from(engine))
                    .and_then(Option::as_mut)
                {
                    s.outstanding.timers -= 1;
                }
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

    /// Hands a mailbox message to `store`'s engine on this shard (dropped when there is none).
    pub fn deliver(
        &mut self,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        store: &std::sync::Weak<dyn BackingStore>,
        msg: EngineMsg,
    ) {
        let Some(i) = self.engines.iter().position(|s| {
            s.as_ref().is_some_and(|s| {
                !s.retiring && std::ptr::addr_eq(Arc::as_ptr(&s.store), store.as_ptr())
            })
        }) else {
            return;
        };
        self.with_engine(i as u16, ring, timers, pool, |e, r| e.on_message(msg, r));
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

    /// Retires the engines of stores no LU in the configuration uses any more: once such an
    /// engine has no operation in flight it is told to shut down ([`Engine::shutdown`]), and
    /// [`Backends::reap`] drops it once nothing it submitted or armed is outstanding. An
    /// engine still busy now is marked gone and retired by [`Backends::retire_gone`] on the
    /// loop turn its last operation completes, so an LU deleted under I/O does not keep its
    /// engine (and a file store's fd) until some later configuration change.
    pub fn prune(
        &mut self,
        ring: &mut Ring,
        timers: &mut Timers,
        pool: &BufPool,
        in_use: impl Fn(&Arc<dyn BackingStore>) -> bool,
    ) {
        for s in self.engines.iter_mut().flatten() {
            if !s.retiring && !s.gone && !in_use(&s.store) {
                s.gone = true;
                self.gone = true;
            }
        }
        self.retire_gone(ring, timers, pool);
        self.reap();
    }

    /// Tells the gone stores' engines that have gone idle to shut down. Called every loop
    /// turn; cheap when no engine is gone.
    pub fn retire_gone(&mut self, ring: &mut Ring, timers: &mut Timers, pool: &BufPool) {
        if !self.gone {
            return;
        }
        self.gone = false;
        for i in 0..self.engines.len() {
            let Some(s) = self.engines[i].as_mut() else {
                continue;
            };
            if !s.gone {
                continue;
            }
            if s.engine.in_flight() > 0 {
                self.gone = true;
                continue;
            }
            s.gone = false;
            s.retiring = true;
            self.retiring = true;
            self.with_engine(i as u16, ring, timers, pool, |e, r| e.shutdown(r));
        }
    }

    /// Drops retired engines with nothing outstanding. Cheap when none is retiring.
    pub fn reap(&mut self) {
        if !self.retiring {
            return;
        }
        self.retiring = false;
        for slot in &mut self.engines {
            let idle = slot.as_ref().is_some_and(|s| {
                s.retiring
                    && s.engine.in_flight() == 0
                    && s.outstanding.ring == 0
                    && s.outstanding.timers == 0
            });
            if idle {
                *slot = None;
            } else {
                self.retiring |= slot.as_ref().is_some_and(|s| s.retiring);
            }
        }
    }

    /// Whether no engine is left (all retired and reaped).
    pub fn is_empty(&self) -> bool {
        self.engines.iter().all(Option::is_none)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::{BackingCaps, BsOFlags};
    use std::io;

    /// Waits for a completion as the shard does: EINTR and EBUSY mean "look again".
    fn wait_one(ring: &mut Ring) {
        if let Err(e) = ring.wait(crate::shard::ring::Wait::One) {
            let again = [Some(libc::EINTR), Some(libc::EBUSY)].contains(&e.raw_os_error());
            assert!(again, "io_uring wait: {e}");
        }
    }

    /// A store whose engine, when shut down, still has one ring submission and one timer
    /// outstanding (as a remote store closing its sockets would).
    #[derive(Debug)]
    struct Lingering;

    struct LingeringEngine;

    impl Engine for LingeringEngine {
        fn start(&mut self, op: OpId, _req: OpRequest, r: &mut dyn Reactor) {
            r.complete(Completion {
                op,
                result: crate::backing::IoResult::Ok,
                data: None,
            });
        }
        fn on_cqe(&mut self, _tag: u64, _res: i32, _flags: u32, _r: &mut dyn Reactor) {}
        fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}
        fn cancel(&mut self, _op: OpId, _r: &mut dyn Reactor) {}
        fn in_flight(&self) -> usize {
            0
        }
        fn shutdown(&mut self, r: &mut dyn Reactor) {
            // SAFETY: a NOP points at nothing.
            unsafe { r.submit(opcode::Nop::new().build(), 7) };
            r.timer(r.now() + 1_000_000, 8);
        }
    }

    impl BackingStore for Lingering {
        fn bstype(&self) -> &'static str {
            "lingering"
        }
        fn path(&self) -> &str {
            ""
        }
        fn oflags(&self) -> BsOFlags {
            BsOFlags::default()
        }
        fn size_bytes(&self) -> io::Result<u64> {
            Ok(1 << 20)
        }
        fn caps(&self) -> BackingCaps {
            BackingCaps::default()
        }
        fn engine(&self, _env: EngineEnv) -> Box<dyn Engine> {
            Box::new(LingeringEngine)
        }
    }

    #[test]
    fn retired_engine_is_dropped_only_when_nothing_is_outstanding() {
        let mut ring = Ring::new().unwrap();
        let mut timers = Timers::default();
        let pool = BufPool::new();
        let mut b = Backends::default();
        let store: Arc<dyn BackingStore> = Arc::new(Lingering);
        let e = b.engine_for(0, &store);
        // Still configured: nothing happens.
        b.prune(&mut ring, &mut timers, &pool, |_| true);
        assert!(b.engines[usize::from(e)].is_some());
        // Gone from the configuration: shut down, but its NOP and timer are outstanding.
        b.prune(&mut ring, &mut timers, &pool, |_| false);
        assert!(
            b.engines[usize::from(e)].is_some(),
            "kept while a CQE is to come"
        );
        // Its index is not handed to another store meanwhile.
        let other: Arc<dyn BackingStore> = Arc::new(Lingering);
        assert_ne!(b.engine_for(0, &other), e);
        wait_one(&mut ring);
        let mut cqes = Vec::new();
        ring.completions(&mut cqes);
        assert_eq!(cqes.len(), 1);
        let c = cqes[0];
        let Owner::Engine { engine, tag } = c.owner else {
            panic!("an engine's CQE: {c:?}")
        };
        assert_eq!((engine, tag), (e, 7));
        b.on_cqe(
            &mut ring,
            &mut timers,
            &pool,
            engine,
            tag,
            c.token,
            c.res,
            c.flags,
        );
        b.reap();
        assert!(
            b.engines[usize::from(e)].is_some(),
            "kept while its timer is armed"
        );
        let mut due = Vec::new();
        timers.expire(u64::MAX, &mut due);
        for t in due {
            b.on_timer(&mut ring, &mut timers, &pool, t);
        }
        b.reap();
        assert!(b.engines[usize::from(e)].is_none(), "dropped once idle");
    }

    /// An engine whose in-flight count the test sets, and which records its shutdown.
    struct BusyEngine {
        busy: std::rc::Rc<std::cell::Cell<usize>>,
        shut: std::rc::Rc<std::cell::Cell<bool>>,
    }

    impl Engine for BusyEngine {
        fn start(&mut self, _op: OpId, _req: OpRequest, _r: &mut dyn Reactor) {}
        fn on_cqe(&mut self, _tag: u64, _res: i32, _flags: u32, _r: &mut dyn Reactor) {}
        fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}
        fn cancel(&mut self, _op: OpId, _r: &mut dyn Reactor) {}
        fn in_flight(&self) -> usize {
            self.busy.get()
        }
        fn shutdown(&mut self, _r: &mut dyn Reactor) {
            self.shut.set(true);
        }
    }

    #[test]
    fn engine_of_a_store_deleted_under_io_retires_when_its_io_ends() {
        let mut ring = Ring::new().unwrap();
        let mut timers = Timers::default();
        let pool = BufPool::new();
        let mut b = Backends::default();
        let busy = std::rc::Rc::new(std::cell::Cell::new(1));
        let shut = std::rc::Rc::new(std::cell::Cell::new(false));
        b.engines.push(Some(EngineSlot {
            store: Arc::new(Lingering),
            engine: Box::new(BusyEngine {
                busy: busy.clone(),
                shut: shut.clone(),
            }),
            outstanding: Outstanding::default(),
            gone: false,
            retiring: false,
        }));
        // The LU is deleted while an operation is in flight: nothing is shut down yet.
        b.prune(&mut ring, &mut timers, &pool, |_| false);
        assert!(!shut.get(), "shut down under I/O");
        b.retire_gone(&mut ring, &mut timers, &pool);
        b.reap();
        assert!(b.engines[0].is_some() && !shut.get());
        // The operation completes; no configuration change follows. The next loop turn
        // (retire_gone + reap) shuts the engine down and drops it.
        busy.set(0);
        b.retire_gone(&mut ring, &mut timers, &pool);
        assert!(shut.get(), "shut down once idle, without another prune");
        b.reap();
        assert!(b.engines[0].is_none(), "dropped once idle");
        assert!(b.is_empty());
    }

    /// An engine that connects one socket (its fd and result shared with the test).
    struct Connector {
        addr: std::net::SocketAddr,
        deadline_ns: u64,
        sock: Option<socket2::Socket>,
        result: std::rc::Rc<std::cell::Cell<Option<i32>>>,
    }

    impl Engine for Connector {
        fn start(&mut self, _op: OpId, _req: OpRequest, r: &mut dyn Reactor) {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            use std::os::fd::AsRawFd;
            let fd = s.as_raw_fd();
            self.sock = Some(s);
            r.connect(fd, self.addr.into(), r.now() + self.deadline_ns, 42);
        }
        fn on_cqe(&mut self, tag: u64, res: i32, _flags: u32, _r: &mut dyn Reactor) {
            assert_eq!(tag, 42);
            self.result.set(Some(res));
        }
        fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}
        fn cancel(&mut self, _op: OpId, _r: &mut dyn Reactor) {}
        fn in_flight(&self) -> usize {
            0
        }
    }

    #[derive(Debug)]
    struct ConnectStore;

    impl BackingStore for ConnectStore {
        fn bstype(&self) -> &'static str {
            "connect"
        }
        fn path(&self) -> &str {
            ""
        }
        fn oflags(&self) -> BsOFlags {
            BsOFlags::default()
        }
        fn size_bytes(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn caps(&self) -> BackingCaps {
            BackingCaps::default()
        }
        fn engine(&self, _env: EngineEnv) -> Box<dyn Engine> {
            unreachable!("made by the test")
        }
    }

    /// Runs a connect through the shard's machinery (ring, token table, timer heap) and
    /// returns its result.
    fn connect_result(addr: std::net::SocketAddr, deadline_ns: u64) -> i32 {
        let mut ring = Ring::new().unwrap();
        let mut timers = Timers::default();
        let pool = BufPool::new();
        let mut b = Backends::default();
        let result = std::rc::Rc::new(std::cell::Cell::new(None));
        let store: Arc<dyn BackingStore> = Arc::new(ConnectStore);
        b.engines.push(Some(EngineSlot {
            store,
            engine: Box::new(Connector {
                addr,
                deadline_ns,
                sock: None,
                result: result.clone(),
            }),
            outstanding: Outstanding::default(),
            gone: false,
            retiring: false,
        }));
        let op = OpId {
            index: 0,
            generation: 0,
        };
        let req = OpRequest {
            io: BlockIo::Flush,
            data: None,
        };
        b.with_engine(0, &mut ring, &mut timers, &pool, |e, r| e.start(op, req, r));
        let end = clock() + 10_000_000_000;
        let mut cqes = Vec::new();
        let mut due = Vec::new();
        while result.get().is_none() {
            assert!(clock() < end, "no connect result");
            ring.arm_timer(timers.next_deadline());
            wait_one(&mut ring);
            cqes.clear();
            ring.completions(&mut cqes);
            for c in &cqes {
                match c.owner {
                    Owner::Engine { engine, tag } => b.on_cqe(
                        &mut ring,
                        &mut timers,
                        &pool,
                        engine,
                        tag,
                        c.token,
                        c.res,
                        c.flags,
                    ),
                    Owner::Timer => ring.timer_fired(),
                    _ => {}
                }
            }
            timers.expire(clock(), &mut due);
            for t in due.drain(..) {
                b.on_timer(&mut ring, &mut timers, &pool, t);
            }
        }
        assert!(
            b.connects.is_empty() && timers.is_empty(),
            "deadline cleaned up"
        );
        assert_eq!(b.engines[0].as_ref().unwrap().outstanding.ring, 0);
        result.get().unwrap()
    }

    #[test]
    fn outbound_connect_succeeds_before_its_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(connect_result(l.local_addr().unwrap(), 5_000_000_000), 0);
    }

    #[test]
    fn outbound_connect_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(connect_result(addr, 5_000_000_000), -libc::ECONNREFUSED);
    }

    #[test]
    fn outbound_connect_times_out_at_its_deadline() {
        // A listener whose accept queue is full drops further SYNs, so a connect hangs.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let f =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            f.set_nonblocking(true).unwrap();
            let _ = f.connect(&addr.into());
            fillers.push(f);
        }
        let started = clock();
        assert_eq!(connect_result(addr, 300_000_000), -libc::ETIMEDOUT);
        let took = clock() - started;
        assert!(
            (250_000_000..5_000_000_000).contains(&took),
            "ended at the deadline: {took} ns"
        );
    }

    /// A store whose engine records the numbers posted to it and hands its mailbox out.
    #[derive(Debug)]
    struct Listening {
        got: Arc<std::sync::Mutex<Vec<u32>>>,
        mailbox: Arc<std::sync::Mutex<Option<Mailbox>>>,
    }

    struct ListeningEngine(Arc<std::sync::Mutex<Vec<u32>>>);

    impl Engine for ListeningEngine {
        fn start(&mut self, _op: OpId, _req: OpRequest, _r: &mut dyn Reactor) {}
        fn on_cqe(&mut self, _tag: u64, _res: i32, _flags: u32, _r: &mut dyn Reactor) {}
        fn on_timer(&mut self, _tag: u64, _r: &mut dyn Reactor) {}
        fn cancel(&mut self, _op: OpId, _r: &mut dyn Reactor) {}
        fn in_flight(&self) -> usize {
            0
        }
        fn on_message(&mut self, msg: EngineMsg, _r: &mut dyn Reactor) {
            let n = *msg.downcast::<u32>().expect("the store posts u32s");
            self.0.lock().unwrap().push(n);
        }
    }

    impl BackingStore for Listening {
        fn bstype(&self) -> &'static str {
            "listening"
        }
        fn path(&self) -> &str {
            ""
        }
        fn oflags(&self) -> BsOFlags {
            BsOFlags::default()
        }
        fn size_bytes(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn caps(&self) -> BackingCaps {
            BackingCaps::default()
        }
        fn engine(&self, env: EngineEnv) -> Box<dyn Engine> {
            *self.mailbox.lock().unwrap() = Some(env.mailbox);
            Box::new(ListeningEngine(self.got.clone()))
        }
    }

    #[test]
    fn mailbox_reaches_the_stores_engine_on_the_named_shard() {
        use super::super::msg::ShardMsg;
        let (shared, mut rxs, _ctl_rx) = super::super::test_shared(1, Default::default());
        let (rx, _fd) = rxs.remove(0);
        let mut ring = Ring::new().unwrap();
        let mut timers = Timers::default();
        let pool = BufPool::new();
        let mut b = Backends::new(shared);
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mailbox = Arc::new(std::sync::Mutex::new(None));
        let store: Arc<dyn BackingStore> = Arc::new(Listening {
            got: got.clone(),
            mailbox: mailbox.clone(),
        });
        let other: Arc<dyn BackingStore> = Arc::new(Lingering);
        b.engine_for(0, &store);
        b.engine_for(0, &other);
        // The store's control side posts from another thread.
        let mb = mailbox
            .lock()
            .unwrap()
            .clone()
            .expect("engine made with a mailbox");
        assert_eq!(mb.shards(), 1);
        std::thread::spawn(move || {
            mb.post(0, Box::new(7u32));
            mb.post(1, Box::new(8u32)); // no such shard: dropped
        })
        .join()
        .unwrap();
        let ShardMsg::Engine { store: to, msg } = rx.try_recv().expect("a message for shard 0")
        else {
            panic!("an engine message")
        };
        assert!(rx.try_recv().is_err(), "only one message");
        b.deliver(&mut ring, &mut timers, &pool, &to, msg);
        assert_eq!(*got.lock().unwrap(), vec![7]);
        // A message for a store without an engine here goes nowhere.
        let gone: Arc<dyn BackingStore> = Arc::new(Lingering);
        b.deliver(
            &mut ring,
            &mut timers,
            &pool,
            &Arc::downgrade(&gone),
            Box::new(9u32),
        );
        assert_eq!(*got.lock().unwrap(), vec![7]);
    }

    #[test]
    fn cancelled_write_same_stops_submitting_steps() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(16 << 20).unwrap();
        let store: Arc<dyn BackingStore> = Arc::new(
            crate::backing::file::FileStore::open(
                "rdwr",
                f.path().to_str().unwrap(),
                BsOFlags::default(),
            )
            .unwrap(),
        );
        let mut ring = Ring::new().unwrap();
        let mut timers = Timers::default();
        let pool = BufPool::new();
        let mut b = Backends::default();
        let e = b.engine_for(0, &store);
        let op = OpId {
            index: 3,
            generation: 1,
        };
        let req = OpRequest {
            // 16 MiB of one 512-byte block: 16 steps of 1 MiB.
            io: BlockIo::WriteSame {
                offset: 0,
                len: 16 << 20,
                block: 0..512,
                unmap: false,
                block_size: 512,
            },
            data: Some(pool.from_slice(&[0xab; 512])),
        };
        b.with_engine(e, &mut ring, &mut timers, &pool, |en, r| {
            en.start(op, req, r)
        });
        let mut cqes = Vec::new();
        let mut steps = 0;
        for _ in 0..64 {
            if !b.done.is_empty() {
                break;
            }
            wait_one(&mut ring);
            cqes.clear();
            ring.completions(&mut cqes);
            for c in &cqes {
                if let Owner::Engine { engine, tag } = c.owner {
                    steps += 1;
                    b.on_cqe(
                        &mut ring,
                        &mut timers,
                        &pool,
                        engine,
                        tag,
                        c.token,
                        c.res,
                        c.flags,
                    );
                    if steps == 1 {
                        // The initiator aborts after the first chunk was written.
                        b.with_engine(e, &mut ring, &mut timers, &pool, |en, r| en.cancel(op, r));
                    }
                }
            }
        }
        let done = b.done.pop().expect("the operation completed");
        assert_eq!(done.op, op);
        assert!(
            matches!(done.result, crate::backing::IoResult::Cancelled),
            "{:?}",
            done.result
        );
        assert!(steps <= 3, "no more steps after the cancel: {steps}");
        assert_eq!(
            b.engines[usize::from(e)].as_ref().unwrap().outstanding.ring,
            0
        );
        // The tail of the range was never written.
        let mut tail = vec![0u8; 4096];
        f.as_file()
            .read_exact_at(&mut tail, (16 << 20) - 4096)
            .unwrap();
        assert!(
            tail.iter().all(|b| *b == 0),
            "WRITE SAME went on after its cancel"
        );
        let mut head = vec![0u8; 512];
        f.as_file().read_exact_at(&mut head, 0).unwrap();
        assert!(
            head.iter().all(|b| *b == 0xab),
            "the first chunk was written"
        );
    }
}
