//! One shard: a thread pinned to one CPU, owning one io_uring, its connections and sessions,
//! the backend engines of the stores they use, and its timers. The loop is: wait for
//! completions, hand each to its owner (connection, engine, timer heap, message queue), apply
//! the timers that are due and the backend operations that completed, run the tasks that
//! became ready, then gather each connection's queued PDUs into one sendmsg and re-arm
//! receives, so a burst of completions costs one submit.
//!
//! The pieces live beside this file: [`super::ring`] (ring mechanics, the one armed timeout),
//! [`super::owners`] (tokens), [`super::slots`] (slot tables), [`super::timers`],
//! [`super::backend`] (engines and their operations), `super::hold` (response batching),
//! `super::login_glue` and `super::scsi_glue` (where the sans-IO protocol cores meet the
//! shard).

use super::backend::Backends;
use super::conn::{Conn, Phase};
use super::msg::{ControlEvent, ShardMsg};
use super::owners::{ConnOp, Cqe, Owner};
use super::reclaim::Reclaim;
use super::ring::{clock, Ring, Wait};
use super::slots::{Slab, SlotKey};
use super::spin::{SpinPolicy, WaitKind};
use super::stats::{
    LatencyTable, SessionSnap, ShardResources, ShardStats, ZcConnSnap, ZcShardSnap,
};
use super::timers::{TimerKey, TimerOwner, Timers};
use super::zerocopy::ZcConfig;
use super::zerocopy_glue::ZcShard;
use super::Shared;
use crate::backing::engine::Completion;
use crate::buf::BufPool;
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::login::{LoginCtx, LoginSm};
use crate::iscsi::session::Kind;
use crate::scsi::{Lun, UnitAttention};
use crossbeam_channel::Receiver;
use io_uring::{opcode, types};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Before sleeping, poll the ring's task-run flag this long (no syscalls): a command that
/// arrives meanwhile is served without the wake-up of a sleeping (on a VM: halted) CPU.
/// Never while holding responses. `CURVE_TGT_POLL_US` overrides; 0 turns it off.
const POLL_NS: u64 = 50_000;
/// At shutdown, how long to wait for engines' submissions to drain once every connection
/// is closed.
const SHUTDOWN_DRAIN_NS: u64 = 5_000_000_000;
/// The keep-alive tick (NOP-In decisions are counted in these).
const NOP_TICK_NS: u64 = 1_000_000_000;

/// A shard's event loop state.
pub struct Shard {
    pub(super) id: usize,
    pub(super) ring: Ring,
    rx: Receiver<ShardMsg>,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    pub(super) shared: Arc<Shared>,
    pub(super) cfg: Arc<ConfigSnapshot>,
    pub(super) conns: Slab<Conn>,
    dirty: Vec<SlotKey>,
    pub(super) pool: BufPool,
    pub(super) backends: Backends,
    pub(super) timers: Timers,
    shutting_down: bool,
    /// The bound on waiting for engines to go idle at shutdown has passed.
    shutdown_expired: bool,
    /// Check the loop's invariants at the end of every turn: debug builds, and any build
    /// run with `CURVE_TGT_CHECK_INVARIANTS=1` (the integration tests set it, so release
    /// test runs check them too).
    check: bool,
    /// Connections holding responses back, and the earliest of their deadlines.
    pub(super) holding: Vec<SlotKey>,
    pub(super) hold_deadline: Option<u64>,
    /// Whether and how long to poll for completions before sleeping (`CURVE_TGT_POLL_US`,
    /// 0 = never), learnt per kind of wait (`super::spin`).
    spin: SpinPolicy,
    /// The keep-alive tick, armed while some target has nop_interval > 0.
    nop_timer: Option<TimerKey>,
    /// Per-LU read/write latency histograms (`tgtadm --op stat`).
    pub(super) latency: LatencyTable,
    /// Memory to give back after connections leave.
    reclaim: Reclaim,
    /// Output backlog, write-buffer budget, connection tickets (`super::budget`).
    pub(super) budgets: super::budget::ShardBudgets,
    /// Scratch: this turn's completions and expired timers.
    cqes: Vec<Cqe>,
    expired: Vec<TimerOwner>,
    done: Vec<Completion>,
    /// Zero-copy Data-In: settings, kernel support, totals (`super::zerocopy_glue`).
    pub(super) zc: ZcShard,
}

impl Shard {
    /// Creates the shard's ring. Runs on the shard's own thread.
    pub fn new(
        id: usize,
        rx: Receiver<ShardMsg>,
        wake_fd: RawFd,
        shared: Arc<Shared>,
        zerocopy: ZcConfig,
    ) -> std::io::Result<Shard> {
        let budgets = super::budget::ShardBudgets::new(&shared.options.limits);
        let mailboxes = shared.clone();
        let mut ring = Ring::new()?;
        let pool = BufPool::new();
        let zc = ZcShard::new(id, zerocopy, &mut ring, &pool);
        Ok(Shard {
            id,
            ring,
            rx,
            wake_fd,
            wake_buf: Box::new(0),
            shared,
            cfg: Arc::new(ConfigSnapshot::default()),
            conns: Slab::default(),
            dirty: Vec::new(),
            pool,
            backends: Backends::new(mailboxes),
            timers: Timers::default(),
            shutting_down: false,
            shutdown_expired: false,
            check: cfg!(debug_assertions)
                || std::env::var("CURVE_TGT_CHECK_INVARIANTS").is_ok_and(|v| v == "1"),
            holding: Vec::new(),
            hold_deadline: None,
            nop_timer: None,
            latency: LatencyTable::default(),
            reclaim: Reclaim::new(),
            budgets,
            spin: SpinPolicy::new(
                std::env::var("CURVE_TGT_POLL_US")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(POLL_NS, |us| us * 1000),
            ),
            cqes: Vec::with_capacity(1024),
            expired: Vec::new(),
            done: Vec::new(),
            zc,
        })
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_buf) as *mut u64 as *mut u8,
            8,
        )
        .build();
        // SAFETY: `wake_buf` is a box owned by the shard for its whole life.
        unsafe { self.ring.push(e, Owner::Wake) };
    }

    /// Runs until shut down.
    pub fn run(mut self) {
        self.arm_wake();
        let mut cqes = std::mem::take(&mut self.cqes);
        loop {
            if self.shutting_down && (self.conns.is_empty() || self.shutdown_expired) {
                // Engines may still have submissions in the kernel (a remote store's
                // sockets): retire them and wait, bounded, until nothing points into them.
                self.backends
                    .prune(&mut self.ring, &mut self.timers, &self.pool, |_| false);
                if self.backends.is_empty() || self.shutdown_expired {
                    self.abandon_at_shutdown();
                    break;
                }
            }
            let kind = self.wait_kind();
            let how = self.wait_mode(kind);
            let judged = matches!(how, Wait::One | Wait::SpinThenOne(_));
            let waited_from = clock();
            let waited = self.ring.wait(how);
            if judged {
                self.spin.record(kind, clock() - waited_from);
            }
            if let Err(e) = waited {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(shard = self.id, "io_uring wait failed: {e}");
                    break;
                }
            }
            self.release_holds();
            cqes.clear();
            self.ring.completions(&mut cqes);
            for c in &cqes {
                match c.owner {
                    Owner::Wake => {
                        self.drain_messages();
                        self.arm_wake();
                    }
                    Owner::Timer => self.ring.timer_fired(),
                    Owner::Conn {
                        conn,
                        op: ConnOp::Recv,
                    } => self.on_recv(conn, c.res),
                    Owner::Conn {
                        conn,
                        op: ConnOp::Send,
                    } => self.on_send(conn, c),
                    Owner::Conn {
                        conn,
                        op: ConnOp::SendZc { id },
                    } if c.notif() => self.on_zc_notif(conn, id, c.res),
                    Owner::Conn {
                        conn,
                        op: ConnOp::SendZc { .. },
                    } => self.on_send(conn, c),
                    Owner::Conn {
                        conn,
                        op: ConnOp::ErrQueue,
                    } => self.on_errqueue(conn, c.res),
                    Owner::Engine { engine, tag } => self.backends.on_cqe(
                        &mut self.ring,
                        &mut self.timers,
                        &self.pool,
                        engine,
                        tag,
                        c.token,
                        c.res,
                        c.flags,
                    ),
                    Owner::Cancel => {}
                }
            }
            self.expire_timers();
            self.apply_completions();
            self.service_dirty();
            self.backends
                .retire_gone(&mut self.ring, &mut self.timers, &self.pool);
            self.backends.reap();
            self.ring.arm_timer(self.timers.next_deadline());
            if self.check {
                self.check_invariants();
            }
        }
    }

    /// Past the shutdown bound, connections still busy (a zero-copy notification that never
    /// came keeps its slot for good; an engine that never completes a cancelled operation)
    /// and engines with submissions outstanding must not stop the shard from ending, nor be
    /// freed while the kernel may still read or write their buffers: they are leaked.
    fn abandon_at_shutdown(&mut self) {
        if self.conns.is_empty() && self.backends.is_empty() {
            return;
        }
        tracing::error!(
            shard = self.id,
            connections = self.conns.len(),
            "shutdown: connections or engines still busy past the drain bound, leaving them"
        );
        std::mem::forget(std::mem::take(&mut self.conns));
        std::mem::forget(std::mem::take(&mut self.backends));
    }

    /// What the shard waits for: a backend's reply while some operation is outstanding.
    fn wait_kind(&self) -> WaitKind {
        if self.backends.ops.is_empty() {
            WaitKind::Initiator
        } else {
            WaitKind::Backend
        }
    }

    fn wait_mode(&self, kind: WaitKind) -> Wait {
        match self.hold_deadline {
            Some(deadline) => Wait::Until {
                deadline,
                want: self.hold_wait_events(),
            },
            None if self.spin.should_spin(kind) && self.worth_spinning() => {
                Wait::SpinThenOne(self.spin.window_ns())
            }
            None => Wait::One,
        }
    }

    /// Applies every timer that is due.
    fn expire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expire(clock(), &mut expired);
        for t in expired.drain(..) {
            match t {
                TimerOwner::NopTick => {
                    self.nop_timer = None;
                    self.nop_tick();
                    self.arm_nop();
                }
                TimerOwner::LoginDeadline { conn } => self.login_deadline(conn),
                TimerOwner::Reclaim => {
                    self.reclaim.run(self.conns.len(), &self.pool);
                    // Trimmed buffers that were registered: unpin them now.
                    super::zerocopy::fixed::FixedBufs::clear_freed(&mut self.ring, &self.pool);
                }
                TimerOwner::ShutdownDeadline => self.shutdown_expired = true,
                TimerOwner::ZcDrainTick => self.zc_drain_tick(),
                other => {
                    self.backends
                        .on_timer(&mut self.ring, &mut self.timers, &self.pool, other)
                }
            }
        }
        self.expired = expired;
    }

    /// Applies backend operations that completed (inline answers included): their tasks
    /// finish, or, for a connection that is closing, they only release their slot.
    fn apply_completions(&mut self) {
        loop {
            std::mem::swap(&mut self.done, &mut self.backends.done);
            if self.done.is_empty() {
                return;
            }
            let mut done = std::mem::take(&mut self.done);
            for c in done.drain(..) {
                self.complete_op(c);
            }
            self.done = done;
        }
    }

    /// Keeps the one-second session tick armed while some target wants NOP-In pings, or
    /// while the Data-Out deadline is on and the shard has connections.
    fn arm_nop(&mut self) {
        let wanted = self.cfg.targets.values().any(|t| t.params.nop_interval > 0)
            || (self.shared.options.dataout_timeout_secs > 0 && !self.conns.is_empty());
        match (wanted, self.nop_timer) {
            (true, None) => {
                let k = self
                    .timers
                    .insert(clock() + NOP_TICK_NS, TimerOwner::NopTick);
                self.nop_timer = Some(k);
            }
            (false, Some(k)) => {
                self.timers.cancel(k);
                self.nop_timer = None;
            }
            _ => {}
        }
    }

    /// One session second: close connections whose writes missed the Data-Out deadline,
    /// ping each full-feature session of a target with nop_interval, and close connections
    /// whose pings went unanswered more than nop_count times.
    fn nop_tick(&mut self) {
        let cfg = self.cfg.clone();
        let dataout_limit = self.shared.options.dataout_timeout_secs;
        for k in self.conns.keys() {
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            if c.closing {
                continue;
            }
            let Phase::Ffp(s) = &mut c.phase else {
                continue;
            };
            if let Some(st) = s.dataout_tick(dataout_limit) {
                crate::log::event::connection_closed(c.peer, &st);
                self.shared.admission.count_dataout_deadline();
                self.begin_close(k);
                continue;
            }
            let Kind::Normal { tid } = s.kind else {
                continue;
            };
            let Some(t) = cfg.targets.get(&tid) else {
                continue;
            };
            let close = s.nop_tick(t.params.nop_interval, t.params.nop_count);
            if close {
                tracing::warn!(peer = %c.peer, "NOP-In pings unanswered, closing the connection");
                self.begin_close(k);
            } else {
                self.mark(k);
            }
        }
    }

    pub(super) fn mark(&mut self, k: SlotKey) {
        if !self.dirty.contains(&k) {
            self.dirty.push(k);
        }
    }

    fn drain_messages(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                ShardMsg::NewConnection {
                    stream,
                    peer,
                    local,
                    ticket,
                } => self.add_conn(stream, peer, local, ticket),
                ShardMsg::Config(c) => {
                    self.latency.prune(&c);
                    self.cfg = c;
                    self.arm_nop();
                    let cfg = self.cfg.clone();
                    self.backends
                        .prune(&mut self.ring, &mut self.timers, &self.pool, |store| {
                            cfg.targets.values().any(|t| {
                                t.luns
                                    .values()
                                    .any(|lu| lu.backing().is_some_and(|b| Arc::ptr_eq(b, store)))
                            })
                        });
                }
                ShardMsg::CallbackDone { conn, result } => self.callback_done(conn, result),
                ShardMsg::Engine { store, msg } => {
                    self.backends
                        .deliver(&mut self.ring, &mut self.timers, &self.pool, &store, msg)
                }
                ShardMsg::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                ShardMsg::Ua {
                    tid,
                    lun,
                    ua,
                    except,
                    only,
                } => self.raise_ua(tid, lun, ua, except, only),
                ShardMsg::CloseSession { tid, tsih } => {
                    for k in self.conns.keys() {
                        let hit = matches!(self.conns.get(k), Some(c) if matches!(&c.phase, Phase::Ffp(s) if s.tsih.0 == tsih && s.kind == Kind::Normal { tid }));
                        if hit {
                            self.begin_close(k);
                        }
                    }
                }
                ShardMsg::Shutdown => {
                    self.shutting_down = true;
                    self.timers
                        .insert(clock() + SHUTDOWN_DRAIN_NS, TimerOwner::ShutdownDeadline);
                    for k in self.conns.keys() {
                        self.begin_close(k);
                    }
                }
            }
        }
    }

    /// This shard's counters and histograms, for the control thread.
    fn stats(&self) -> ShardStats {
        let sessions = self
            .conns
            .iter()
            .filter_map(|(_, c)| {
                let Phase::Ffp(s) = &c.phase else { return None };
                let Kind::Normal { tid } = s.kind else {
                    return None;
                };
                let mut conn = s.stats.conn;
                conn.rx_bytes = c.rx_bytes;
                conn.tx_bytes = c.tx_bytes;
                Some(SessionSnap {
                    tid,
                    tsih: s.tsih.0,
                    cid: s.cid.0,
                    lus: s.stats.lus.clone(),
                    conn,
                    zc: ZcConnSnap {
                        mode: c.zc.policy.mode(),
                        counters: c.zc.policy.counters,
                        outstanding: c.zc.inflight.outstanding(),
                        held: c.zc.inflight.held(),
                    },
                })
            })
            .collect();
        let pool = self.pool.counters();
        ShardStats {
            sessions,
            latency: self.latency.snapshot(),
            zc: ZcShardSnap {
                closed: self.zc.closed,
                pool_buffers_out: pool.in_use as usize,
                draining: self.zc.draining,
                fixed: self.zc.fixed.snap(&self.pool),
            },
            resources: ShardResources {
                buffers_in_use: pool.in_use,
                buffer_bytes_in_use: pool.in_use_bytes,
                backend_ops: self.backends.ops.len() as u64,
                connections: self.conns.len() as u64,
                timers: self.timers.len() as u64,
                write_budget_bytes: self.budgets.write.used_bytes(),
                backlog_pauses: self.budgets.paused,
            },
        }
    }

    fn raise_ua(
        &mut self,
        tid: u32,
        lun: Option<Lun>,
        ua: UnitAttention,
        except: Option<Arc<str>>,
        only: Option<Arc<str>>,
    ) {
        let luns = self
            .cfg
            .targets
            .get(&tid)
            .map(|t| t.lun_list.clone())
            .unwrap_or_default();
        for k in self.conns.keys() {
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            let Phase::Ffp(s) = &mut c.phase else {
                continue;
            };
            let Some(n) = s.nexus.as_mut() else { continue };
            if n.id.tid != tid {
                continue;
            }
            if except.as_ref().is_some_and(|e| **e == *n.id.initiator_port) {
                continue;
            }
            if only.as_ref().is_some_and(|o| **o != *n.id.initiator_port) {
                continue;
            }
            match lun {
                Some(l) => n.push_ua(l, ua),
                None => luns.iter().for_each(|l| n.push_ua(*l, ua)),
            }
        }
    }

    fn add_conn(
        &mut self,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
        ticket: super::limits::ConnTicket,
    ) {
        let _ = stream.set_nodelay(true);
        let login = LoginSm::new(LoginCtx {
            local,
            peer,
            tpgt: 1,
            shard: self.id,
        });
        let placeholder = SlotKey::new(0, 0);
        let zc = self.zc.link(&stream, peer);
        let k = self
            .conns
            .insert(Conn::new(stream, peer, local, login, placeholder, zc));
        let deadline = clock() + self.shared.options.login_timeout.as_nanos() as u64;
        let t = self
            .timers
            .insert(deadline, TimerOwner::LoginDeadline { conn: k });
        if let Some(c) = self.conns.get_mut(k) {
            c.key = k;
            c.login_timer = Some(t);
        }
        self.budgets.conn_added(k, ticket);
        self.mark(k);
        self.arm_nop();
    }

    /// The login deadline passed: a connection still logging in is closed.
    fn login_deadline(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.login_timer = None;
        if matches!(c.phase, Phase::Login(_)) && !c.closing {
            tracing::warn!(peer = %c.peer, "login not finished in time, closing the connection");
            self.shared.admission.count_login_deadline();
            self.begin_close(k);
        }
    }

    fn on_recv(&mut self, k: SlotKey, res: i32) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.recv_inflight = false;
        if (res == -libc::EAGAIN || res == -libc::EINTR) && !c.closing {
            // A receive woken by the error queue's POLLERR (MSG_ZEROCOPY notifications) too
            // often gives up with EAGAIN: nothing is wrong, receive again.
            self.mark(k);
            return;
        }
        if res <= 0 || c.closing {
            self.begin_close(k);
            self.mark(k);
            return;
        }
        c.received(res as usize);
        self.parse_pdus(k);
        if self.recv_rest_now(k) {
            self.parse_pdus(k);
        }
        self.mark(k);
    }

    /// After a receive that ended inside a PDU, takes what has arrived since with one
    /// non-blocking `recv`, so a PDU the peer wrote in two pieces (libiscsi writes a SCSI
    /// Command's BHS and its immediate data with two calls) is usually whole in this loop
    /// turn instead of the next: a ring receive for the rest costs a poll arm, a wakeup and a
    /// turn. Only bytes are taken here; an error or end of stream is left for the ring
    /// receive armed next, which sees it again. Returns whether bytes were taken.
    fn recv_rest_now(&mut self, k: SlotKey) -> bool {
        match self.conns.get(k) {
            Some(c) if c.wants_rest_now() => {}
            _ => return false,
        }
        if self.backlog_over(k) {
            return false;
        }
        let Some(c) = self.conns.get_mut(k) else {
            return false;
        };
        c.recv_now()
    }

    fn on_send(&mut self, k: SlotKey, cqe: &Cqe) {
        if self.zc_send_done(k, cqe) {
            return;
        }
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.send_inflight = false;
        let res = cqe.res;
        if res < 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                self.mark(k);
                return;
            }
            self.begin_close(k);
            self.mark(k);
            return;
        }
        c.tx_bytes += res as u64;
        c.sent(res as usize);
        self.mark(k);
    }

    fn service_dirty(&mut self) {
        let now = clock();
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for k in dirty {
                self.run_ready(k);
                self.handle_events(k);
                self.apply_completions();
                self.flush(k, now);
                self.arm_recv(k);
                self.maybe_free(k);
                self.note_write_waiter(k);
            }
            self.admit_write_waiters();
        }
    }

    /// Gathers queued PDUs into one sendmsg when none is in flight.
    fn flush(&mut self, k: SlotKey, now: u64) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.send_inflight || c.closing {
            return;
        }
        if c.tx_batch.is_empty() && self.hold(k, now) {
            return;
        }
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        let fresh = c.tx_batch.is_empty();
        if !c.prepare_send() {
            if c.close_after_flush {
                self.begin_close(k);
            }
            return;
        }
        c.send_inflight = true;
        if let (true, Phase::Ffp(s)) = (fresh, &c.phase) {
            // The statuses in this batch are handed to the socket now: their commands'
            // in-target latency ends here.
            if let Kind::Normal { tid } = s.kind {
                let mut sent_ns = None;
                for m in c.tx_batch.iter().filter_map(|p| p.mark) {
                    let t = *sent_ns.get_or_insert_with(clock);
                    let ns = t.saturating_sub(m.arrived_ns);
                    self.latency.record(&self.cfg, tid, m.lun, m.dir, ns);
                }
            }
        }
        if let (Phase::Ffp(_), Some(p)) = (&c.phase, c.tx_batch.last()) {
            let b = crate::iscsi::pdu::Bhs(*p.bhs());
            let sn = u32::from_be_bytes(b.0[24..28].try_into().expect("4 bytes"));
            c.stat_sn_sent = if b.consumes_stat_sn() {
                sn
            } else {
                sn.wrapping_sub(1)
            };
        }
        let Some((e, owner)) = self.zc_send_entry(k) else {
            return;
        };
        // SAFETY: the msghdr, iovecs and the PDUs they point to belong to the connection,
        // which is not freed (nor its batch changed) while `send_inflight` is set, and whose
        // batch is kept past the send until every zero-copy notification before it
        // (`zc.inflight`, `Conn::busy`).
        unsafe { self.ring.push(e, owner) };
    }

    fn arm_recv(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.recv_inflight || c.closing || c.close_after_flush || c.callback_running {
            return;
        }
        if self.backlog_full(k) {
            return;
        }
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        let room = c.rx_room(clock());
        let (ptr, len) = (room.as_mut_ptr(), room.len() as u32);
        c.recv_inflight = true;
        let fd = c.stream.as_raw_fd();
        let e = opcode::Recv::new(types::Fd(fd), ptr, len).build();
        let owner = Owner::Conn {
            conn: k,
            op: ConnOp::Recv,
        };
        // SAFETY: the buffer is not resized while the receive is in flight (recv_inflight
        // guards every resize path: parse_pdus runs only after the receive completed), and
        // the connection is not freed while it is.
        unsafe { self.ring.push(e, owner) };
    }

    /// Starts closing a connection: no more receives, its tasks are aborted and their backend
    /// operations cancelled, and the socket is shut down so operations in flight complete.
    /// The slot is freed by `maybe_free`.
    pub(super) fn begin_close(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if let Some(t) = c.login_timer.take() {
            self.timers.cancel(t);
        }
        if let Phase::Ffp(s) = &mut c.phase {
            s.abort_everything();
            s.events.clear();
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        let ops: Vec<_> = c.ops.iter().flatten().copied().collect();
        for op in ops {
            self.backends
                .cancel(&mut self.ring, &mut self.timers, &self.pool, op);
        }
        self.mark(k);
    }

    fn maybe_free(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get(k) else {
            return;
        };
        if !c.closing {
            return;
        }
        if c.busy() {
            if !c.recv_inflight && !c.send_inflight && c.ops_inflight == 0 {
                // Only zero-copy notifications hold it: drain them, bounded.
                self.zc_closing(k);
            }
            return;
        }
        let c = self.conns.remove(k).expect("connection present");
        self.zc_freed(&c.zc);
        if let Phase::Ffp(s) = &c.phase {
            if let Kind::Normal { tid } = s.kind {
                // The nexus ends with its last connection (logout, loss, reset) unless a
                // reinstating login already took it over, which released it then.
                if self.shared.registry.lookup(tid, s.tsih).is_some() {
                    if let (Some(n), Some(t)) = (&s.nexus, self.cfg.targets.get(&tid)) {
                        t.luns.values().for_each(|lu| lu.nexus_lost(&n.id));
                    }
                }
                self.shared.registry.unregister(tid, s.tsih);
                crate::log::event::session_closed(c.peer, &s.initiator_name, tid, s.tsih.0);
                let _ = self.shared.control.send(ControlEvent::SessionDown {
                    tid,
                    tsih: s.tsih.0,
                });
            }
        }
        self.budgets.conn_freed(k);
        self.holding.retain(|x| *x != k);
        self.reclaim.conn_freed(&mut self.timers);
    }

    /// What must hold at the end of every loop turn (checked when `check` is set). A failure is a bug in the
    /// shard (never peer input), so it panics where it is found rather than later in the
    /// kernel's hands.
    fn check_invariants(&self) {
        use std::collections::HashMap;
        // Ring submissions per connection; none for a connection that is gone (a stale
        // generation would route a completion to the slot's next occupant).
        // (receives, plain sends, io_uring zero-copy sends, error-queue reads)
        let mut per_conn: HashMap<SlotKey, (u32, u32, u32, u32)> = HashMap::new();
        for o in self.ring.owners.iter() {
            if let Owner::Conn { conn, op } = o {
                assert!(
                    self.conns.get(*conn).is_some(),
                    "ring op for a freed connection"
                );
                let e = per_conn.entry(*conn).or_default();
                match op {
                    ConnOp::Recv => e.0 += 1,
                    ConnOp::Send => e.1 += 1,
                    ConnOp::SendZc { .. } => e.2 += 1,
                    ConnOp::ErrQueue => e.3 += 1,
                }
            }
        }
        let mut counted = 0usize;
        for (k, c) in self.conns.iter() {
            assert_eq!(c.key, k, "connection slot holds a stale generation");
            let (recvs, sends, zc_sends, errq) = per_conn.get(&k).copied().unwrap_or_default();
            assert_eq!(recvs, u32::from(c.recv_inflight), "receives in flight");
            // A SENDMSG_ZC keeps its ring entry until its notification, and its number stays
            // in `zc.inflight` as long (uring engine; MSG_ZEROCOPY numbers have no entry).
            let uring_zc = c.zc.engine == super::zerocopy::Engine::Uring;
            let plain_in_flight = c.send_inflight
                && !matches!(c.zc.send, super::zerocopy::link::SendKind::ZeroCopy { .. } if uring_zc);
            assert_eq!(sends, u32::from(plain_in_flight), "plain sends in flight");
            let outstanding = if uring_zc {
                c.zc.inflight.outstanding()
            } else {
                0
            };
            assert_eq!(
                zc_sends as usize, outstanding,
                "zero-copy sends and notifications in flight"
            );
            assert_eq!(
                errq,
                u32::from(c.zc.errq_inflight),
                "error-queue reads in flight"
            );
            let ops = c.ops.iter().flatten().count();
            assert_eq!(ops as u32, c.ops_inflight, "connection op count");
            counted += ops;
            if let Phase::Ffp(s) = &c.phase {
                // The command window never exceeds what was negotiated (RFC 7143 §4.2.2.1).
                let open = s
                    .current_max_cmd_sn()
                    .0
                    .wrapping_sub(s.exp_cmd_sn().0)
                    .wrapping_add(1);
                assert!(
                    open <= s.params.max_queue_cmd,
                    "window {open} over MaxQueueCmd"
                );
            }
        }
        // Backend operations: the table, the connections and the engines agree.
        assert_eq!(counted, self.backends.ops.len(), "ops table vs connections");
        for (op, e) in self.backends.ops.iter() {
            let c = self.conns.get(e.conn).expect("op for a freed connection");
            let id = crate::backing::engine::OpId {
                index: op.index,
                generation: op.generation,
            };
            assert_eq!(
                c.ops.get(e.task.slot as usize),
                Some(&Some(id)),
                "op by task slot"
            );
        }
        assert_eq!(
            self.backends.engines_in_flight(),
            self.backends.ops.len(),
            "engines' in-flight ops vs the ops table"
        );
        assert!(self.backends.done.is_empty(), "completions left unapplied");
        // Held responses belong to live connections.
        assert!(self.holding.iter().all(|k| self.conns.get(*k).is_some()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::zerocopy::Engine as ZcEngine;
    use super::*;
    use std::time::Duration;

    /// Shutdown ends within its bound (SHUTDOWN_DRAIN_NS) even when a connection never
    /// becomes free: here a `MSG_ZEROCOPY` send whose notification never comes, which keeps
    /// the slot until the drain gives up (32 s). Before, the shard waited for every
    /// connection to be freed, and tgtd's shutdown (which joins the shards) hung for ever.
    #[test]
    fn shutdown_is_bounded_when_a_connection_never_frees() {
        let (shared, mut rxs, _ctl_rx) = super::super::test_shared(1, Default::default());
        let (rx, fd) = rxs.remove(0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        std::thread::spawn(move || {
            let zc = ZcConfig {
                engine: ZcEngine::Msg,
                ..ZcConfig::default()
            };
            let mut shard = Shard::new(0, rx, fd, sh.clone(), zc).unwrap();
            let stream = std::net::TcpStream::connect(addr).unwrap();
            let ticket = super::super::limits::ConnTicket::for_test(&sh, 0);
            shard.add_conn(stream, addr, addr, ticket);
            let k = shard.conns.keys()[0];
            shard.conns.get_mut(k).unwrap().zc.inflight.issue();
            sh.send(0, ShardMsg::Shutdown);
            shard.run();
            let _ = done_tx.send(());
        });
        let stopped = done_rx.recv_timeout(Duration::from_secs(20));
        assert!(stopped.is_ok(), "the shard did not stop within 20 s");
        drop(listener);
    }

    /// A closed connection whose zero-copy notification never comes is freed once its drain
    /// gives up (REVIEW.md item 5's second half): before, it kept its slot for as long as the
    /// process lived. The buffers of the never-notified send are leaked, not returned to the
    /// pool (the kernel may still read them), and a late notification finds no owner.
    #[test]
    fn a_drain_that_gives_up_frees_the_slot_and_leaks_the_held_buffers() {
        use super::super::owners::CQE_F_NOTIF;
        use super::super::zerocopy::link::Drain;
        use crate::iscsi::tx::{Payload, TxPdu};
        let (shared, mut rxs, _ctl_rx) = super::super::test_shared(1, Default::default());
        let (rx, fd) = rxs.remove(0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut shard = Shard::new(0, rx, fd, shared.clone(), ZcConfig::default()).unwrap();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let ticket = super::super::limits::ConnTicket::for_test(&shared, 0);
        shard.add_conn(stream, addr, addr, ticket);
        let k = shard.conns.keys()[0];
        // A uring zero-copy send whose notification is still to come, and its batch.
        let pool = crate::buf::BufPool::new();
        let buf = pool.alloc(65536);
        let bhs = crate::iscsi::pdu::Bhs::reject(crate::iscsi::pdu::RejectReason::ProtocolError);
        let payload = Payload::Buf {
            buf: buf.clone(),
            offset: 0,
            len: 65536,
        };
        let c = shard.conns.get_mut(k).unwrap();
        let id = c.zc.inflight.issue();
        let batch = vec![TxPdu::new(bhs, payload, false, false)];
        assert!(c.zc.inflight.retire(batch, true).is_none(), "held");
        let late = shard.ring.owners.register(Owner::Conn {
            conn: k,
            op: ConnOp::SendZc { id },
        });
        shard.begin_close(k);
        shard.service_dirty();
        shard.check_invariants();
        let c = shard
            .conns
            .get_mut(k)
            .expect("kept while the notification is out");
        assert!(matches!(c.zc.drain, Some(Drain::Waiting { .. })));
        assert_eq!(shard.zc.draining, 1);
        // Past both deadlines (the shard clock is CLOCK_MONOTONIC: boot is long ago).
        c.zc.drain = Some(Drain::Reset { at_ns: 0 });
        shard.zc_drain_tick();
        shard.service_dirty();
        shard.check_invariants();
        assert!(shard.conns.get(k).is_none(), "the slot is freed");
        assert_eq!(shard.zc.draining, 0);
        assert_eq!(
            (shard.zc.abandoned_conns, shard.zc.abandoned_batches),
            (1, 1)
        );
        assert_eq!(
            buf.handles(),
            2,
            "the held buffer is leaked, never back in the pool"
        );
        assert!(
            shard.ring.owners.resolve(late, 0, CQE_F_NOTIF).is_none(),
            "a late notification finds no owner"
        );
        drop(listener);
    }
}
