//! One shard: a thread pinned to one CPU, owning one io_uring, its connections and sessions,
//! and the backend I/O they issue. The loop is: wait for completions, apply each to the state
//! it belongs to, run the tasks that became ready, then gather each connection's queued PDUs
//! into one sendmsg and re-arm receives, so a burst of completions costs one submit.

use super::backend::{Next, PendingIo, ZeroCache};
use super::callback::CallbackResult;
use super::conn::{Conn, Phase};
use super::msg::{ConnInfo, ControlEvent, ShardMsg};
use super::reclaim::Reclaim;
use super::stats::{LatencyTable, SessionSnap, ShardStats};
use super::token::{OpKind, Token};
use super::Shared;
use crate::backing::IoResult;
use crate::buf::BufPool;
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::login::{LoginCtx, LoginOutcome, LoginSm, LoginStep, SessionKind};
use crate::iscsi::pdu::Request;
use crate::iscsi::rx::{next_pdu, RxLimits, RxStep};
use crate::iscsi::session::{Event, FfpParams, Kind, Session};
use crate::iscsi::task::TaskRef;
use crate::iscsi::tx::{Payload, TxPdu};
use crate::scsi::{
    self, Effect, ExecCtx, LogicalUnit, NexusId, NexusState, Outcome, ScsiCommand, UaScope,
    UnitAttention,
};
use crossbeam_channel::Receiver;
use io_uring::{opcode, squeue, types, IoUring};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Submission queue depth per shard.
const RING_ENTRIES: u32 = 4096;

/// Response batching (see `Shard::hold`): hold a connection's responses only while the
/// initiator has at least this many responses it has not processed yet.
const HOLD_MIN_BACKLOG: u32 = 32;
/// Longest hold per unprocessed response the initiator has (it has that much work queued).
const HOLD_NS_PER_BACKLOG: u64 = 1_000;
/// Longest hold at all.
const HOLD_MAX_NS: u64 = 500_000;
/// Send at once when this many PDUs are queued.
const HOLD_MAX_PDUS: usize = 256;
/// While every connection holds, wake for this many completions (or the deadline), so the
/// initiator's trickle of commands is gathered too instead of costing a wake-up each.
const HOLD_WAIT_EVENTS: usize = 64;
/// Before sleeping, poll the ring's task-run flag this long (no syscalls): a command that
/// arrives meanwhile is served without the wake-up of a sleeping (on a VM: halted) CPU.
/// Never while holding responses. `CURVE_TGT_POLL_US` overrides; 0 turns it off.
const POLL_NS: u64 = 50_000;
/// Poll only while some initiator has at most this many of our responses unprocessed (see
/// `Shard::worth_spinning`).
const SPIN_MAX_BACKLOG: u32 = 2;

/// A shard's event loop state.
pub struct Shard {
    id: usize,
    ring: IoUring,
    rx: Receiver<ShardMsg>,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    shared: Arc<Shared>,
    cfg: Arc<ConfigSnapshot>,
    conns: Vec<Option<Conn>>,
    generations: Vec<u16>,
    free: Vec<u16>,
    dirty: Vec<u16>,
    pool: BufPool,
    zeros: ZeroCache,
    shutting_down: bool,
    epoch: Instant,
    /// Connections holding responses back, and the earliest of their deadlines.
    holding: Vec<u16>,
    hold_deadline: Option<u64>,
    /// Live connections (login or full feature phase).
    live: usize,
    /// How long to poll for completions before sleeping (`CURVE_TGT_POLL_US`, 0 = never).
    spin_ns: u64,
    /// The 1 s keep-alive timer is armed (only while some target has nop_interval > 0).
    timer_armed: bool,
    timer_ts: Box<types::Timespec>,
    /// Per-LU read/write latency histograms (`tgtadm --op stat`).
    latency: LatencyTable,
    /// Memory to give back after connections leave (on the 1 s timer).
    reclaim: Reclaim,
}

fn entry(e: squeue::Entry, t: Token) -> squeue::Entry {
    e.user_data(t.encode())
}

impl Shard {
    /// Creates the shard's ring. Runs on the shard's own thread.
    pub fn new(
        id: usize,
        rx: Receiver<ShardMsg>,
        wake_fd: RawFd,
        shared: Arc<Shared>,
    ) -> std::io::Result<Shard> {
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
        Ok(Shard {
            id,
            ring,
            rx,
            wake_fd,
            wake_buf: Box::new(0),
            shared,
            cfg: Arc::new(ConfigSnapshot::default()),
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            pool: BufPool::new(),
            zeros: ZeroCache::default(),
            shutting_down: false,
            epoch: Instant::now(),
            holding: Vec::new(),
            hold_deadline: None,
            live: 0,
            timer_armed: false,
            timer_ts: Box::new(types::Timespec::new().sec(1)),
            latency: LatencyTable::default(),
            reclaim: Reclaim::new(),
            spin_ns: std::env::var("CURVE_TGT_POLL_US")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(POLL_NS, |us| us * 1000),
        })
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry's buffers (receive buffers, iovecs, msghdr, I/O buffers) are
            // owned by a connection slot or a PendingIo that is not freed while the operation
            // is in flight (tracked by recv_inflight/send_inflight/io_inflight).
            let pushed = unsafe { self.ring.submission().push(&e) };
            if pushed.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_buf) as *mut u64 as *mut u8,
            8,
        )
        .build();
        self.push(entry(
            e,
            Token {
                kind: OpKind::Wake,
                conn: 0,
                conn_gen: 0,
                task_slot: 0,
                task_gen: 0,
            },
        ));
    }

    /// Runs until shut down.
    pub fn run(mut self) {
        self.arm_wake();
        let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(1024);
        loop {
            if self.shutting_down && self.conns.iter().all(Option::is_none) {
                break;
            }
            if let Err(e) = self.wait() {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(shard = self.id, "io_uring wait failed: {e}");
                    break;
                }
            }
            self.release_holds();
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(ud, res) in &cqes {
                let Some(t) = Token::decode(ud) else { continue };
                match t.kind {
                    OpKind::Wake => {
                        self.drain_messages();
                        self.arm_wake();
                    }
                    OpKind::Recv => self.on_recv(t, res),
                    OpKind::Send => self.on_send(t, res),
                    OpKind::Backend => self.on_backend(t, res),
                    OpKind::Timer => {
                        self.timer_armed = false;
                        self.nop_tick();
                        self.reclaim.run(self.live, &self.pool);
                    }
                }
            }
            self.service_dirty();
            self.arm_timer();
        }
    }

    /// Arms the 1 s timer while some target wants NOP-In pings or memory is to be reclaimed.
    fn arm_timer(&mut self) {
        let nop = self.cfg.targets.values().any(|t| t.params.nop_interval > 0);
        if self.timer_armed || !(nop || self.reclaim.wanted()) {
            return;
        }
        self.timer_armed = true;
        let e = opcode::Timeout::new(&*self.timer_ts as *const types::Timespec).build();
        self.push(entry(
            e,
            Token {
                kind: OpKind::Timer,
                conn: 0,
                conn_gen: 0,
                task_slot: 0,
                task_gen: 0,
            },
        ));
    }

    /// One keep-alive second: ping each full-feature session of a target with nop_interval,
    /// and close connections whose pings went unanswered more than nop_count times.
    fn nop_tick(&mut self) {
        let cfg = self.cfg.clone();
        for ci in 0..self.conns.len() {
            let Some(c) = self.conns[ci].as_mut() else {
                continue;
            };
            if c.closing {
                continue;
            }
            let Phase::Ffp(s) = &mut c.phase else {
                continue;
            };
            let Kind::Normal { tid } = s.kind else {
                continue;
            };
            let Some(t) = cfg.targets.get(&tid) else {
                continue;
            };
            let close = s.nop_tick(t.params.nop_interval, t.params.nop_count);
            if close {
                tracing::warn!(peer = %c.peer, "NOP-In pings unanswered, closing the connection");
                self.begin_close(ci as u16);
            } else {
                self.mark(ci as u16);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Submits and waits for completions; while responses are held, also for their deadline.
    fn wait(&mut self) -> std::io::Result<()> {
        let Some(d) = self.hold_deadline else {
            if self.spin_ns > 0 && self.worth_spinning() {
                // With DEFER_TASKRUN + TASKRUN_FLAG the kernel raises IORING_SQ_TASKRUN when
                // completion work is pending; sends that finished inline are already CQEs.
                self.ring.submit()?;
                let start = self.now_ns();
                loop {
                    if self.ring.submission().taskrun() || !self.ring.completion().is_empty() {
                        break;
                    }
                    if self.now_ns() - start > self.spin_ns {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            return self.ring.submit_and_wait(1).map(drop);
        };
        let now = self.now_ns();
        if d <= now {
            return self.ring.submit().map(drop);
        }
        // Only when every connection is holding may the wait outlast the next completion: a
        // connection at low queue depth must be answered at once.
        let want = if self.holding.len() >= self.live {
            HOLD_WAIT_EVENTS
        } else {
            1
        };
        let ts = types::Timespec::new().nsec((d - now) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Whether polling before sleeping can pay: some connection's initiator has processed
    /// (nearly) every response we sent, so its next command is what it is waiting to send
    /// (queue depth 1 to a few). When every initiator is behind on our responses (a deep
    /// queue, or one busy streaming Data-Out), it is the bottleneck, the next command comes
    /// when it catches up, and a poll would only burn the core.
    fn worth_spinning(&self) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| match c.peer_exp_stat_sn {
                None => true,
                Some(exp) => {
                    let backlog = c.stat_sn_sent.wrapping_add(1).wrapping_sub(exp);
                    backlog <= SPIN_MAX_BACKLOG || backlog > 1 << 20
                }
            })
    }

    /// Marks connections whose hold has expired, so `service_dirty` sends their responses.
    fn release_holds(&mut self) {
        let Some(d) = self.hold_deadline else { return };
        if d > self.now_ns() {
            return;
        }
        self.hold_deadline = None;
        for ci in std::mem::take(&mut self.holding) {
            self.mark(ci);
        }
    }

    /// Whether to hold a connection's queued responses back a little to send them in one
    /// larger batch. Only when the initiator itself is the bottleneck: its latest command's
    /// ExpStatSN shows it has not yet processed `backlog` responses we sent, so it has that
    /// much work queued and a short delay costs it nothing, while one sendmsg per few PDUs
    /// costs both sides a full TCP round of work per PDU. Never at low queue depth (an
    /// initiator at iodepth 1 has always processed every response when it sends a command).
    fn hold(&mut self, ci: u16, now: u64) -> bool {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return false;
        };
        let queued = match &c.phase {
            Phase::Ffp(s) => s.out.len(),
            Phase::Login(_) => 0,
        };
        let Some(exp) = c.peer_exp_stat_sn else {
            return false;
        };
        let hold_ns = hold_ns(c.stat_sn_sent, exp, queued);
        let Some(hold_ns) = hold_ns.filter(|_| !c.close_after_flush) else {
            c.hold_deadline = None;
            return false;
        };
        let d = *c.hold_deadline.get_or_insert(now + hold_ns);
        if now >= d {
            c.hold_deadline = None;
            return false;
        }
        if !self.holding.contains(&ci) {
            self.holding.push(ci);
        }
        self.hold_deadline = Some(self.hold_deadline.map_or(d, |x| x.min(d)));
        true
    }

    fn conn_mut(&mut self, t: Token) -> Option<&mut Conn> {
        self.conns
            .get_mut(usize::from(t.conn))?
            .as_mut()
            .filter(|c| c.generation & 0xfff == t.conn_gen)
    }

    fn mark(&mut self, ci: u16) {
        if !self.dirty.contains(&ci) {
            self.dirty.push(ci);
        }
    }

    fn drain_messages(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                ShardMsg::NewConnection {
                    stream,
                    peer,
                    local,
                } => self.add_conn(stream, peer, local),
                ShardMsg::Config(c) => {
                    self.latency.prune(&c);
                    self.cfg = c;
                }
                ShardMsg::CallbackDone {
                    conn,
                    generation,
                    result,
                } => self.callback_done(conn, generation, result),
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
                    for i in 0..self.conns.len() {
                        let hit = matches!(&self.conns[i], Some(c) if matches!(&c.phase, Phase::Ffp(s) if s.tsih.0 == tsih && s.kind == Kind::Normal { tid }));
                        if hit {
                            self.begin_close(i as u16);
                        }
                    }
                }
                ShardMsg::Shutdown => {
                    self.shutting_down = true;
                    for i in 0..self.conns.len() {
                        if self.conns[i].is_some() {
                            self.begin_close(i as u16);
                        }
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
            .flatten()
            .filter_map(|c| {
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
                })
            })
            .collect();
        ShardStats {
            sessions,
            latency: self.latency.snapshot(),
        }
    }

    fn raise_ua(
        &mut self,
        tid: u32,
        lun: Option<crate::scsi::Lun>,
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
        for c in self.conns.iter_mut().flatten() {
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
    ) {
        let _ = stream.set_nodelay(true);
        let ci = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.conns.len() >= usize::from(u16::MAX) {
                    return; // dropping the stream closes it
                }
                self.conns.push(None);
                self.generations.push(0);
                (self.conns.len() - 1) as u16
            }
        };
        let g = self.generations[usize::from(ci)].wrapping_add(1) & 0xfff;
        self.generations[usize::from(ci)] = g;
        let login = LoginSm::new(LoginCtx {
            local,
            peer,
            tpgt: 1,
            shard: self.id,
        });
        self.conns[usize::from(ci)] = Some(Conn::new(stream, peer, local, login, g));
        self.shared.shard_conns[self.id].fetch_add(1, Ordering::Relaxed);
        self.live += 1;
        self.mark(ci);
    }

    fn token(&self, kind: OpKind, ci: u16, task: Option<TaskRef>) -> Token {
        let g = self.conns[usize::from(ci)]
            .as_ref()
            .map(|c| c.generation)
            .unwrap_or(0);
        let (task_slot, task_gen) = task
            .map(|r| (r.slot as u16, r.generation))
            .unwrap_or((0, 0));
        Token {
            kind,
            conn: ci,
            conn_gen: g & 0xfff,
            task_slot,
            task_gen,
        }
    }

    fn on_recv(&mut self, t: Token, res: i32) {
        let ci = t.conn;
        let Some(c) = self.conn_mut(t) else { return };
        c.recv_inflight = false;
        if res <= 0 || c.closing {
            self.begin_close(ci);
            self.mark(ci);
            return;
        }
        c.received(res as usize);
        self.parse_pdus(ci);
        self.mark(ci);
    }

    fn parse_pdus(&mut self, ci: u16) {
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let cfg = self.cfg.clone();
        let shared = self.shared.clone();
        let shard_id = self.id;
        let pool = self.pool.clone();
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        let mut consumed = 0usize;
        let mut fatal = false;
        let mut session_up = None;
        let mut callback = None;
        while !c.closing && !c.close_after_flush && !c.callback_running {
            let lim = match &c.phase {
                Phase::Login(_) => RxLimits::default(),
                Phase::Ffp(s) => s.rx_limits(),
            };
            match next_pdu(&c.rx[consumed..c.rx_len], lim) {
                RxStep::Incomplete { need } => {
                    c.rx_reserve(need);
                    break;
                }
                RxStep::Fatal { error, bhs } => {
                    tracing::warn!(peer = %c.peer, "closing connection: {error}");
                    if let (Some(bhs), Phase::Ffp(s)) = (bhs, &mut c.phase) {
                        s.queue(
                            crate::iscsi::pdu::Bhs::reject(
                                crate::iscsi::pdu::RejectReason::ProtocolError,
                            ),
                            Payload::Owned(bhs.to_vec()),
                        );
                    }
                    fatal = true;
                    break;
                }
                RxStep::Pdu { pdu, len } => {
                    let slice = &c.rx[consumed..consumed + len];
                    if pdu.bhs[0] & 0x3f == crate::iscsi::pdu::op::SCSI_CMD {
                        c.peer_exp_stat_sn = Some(u32::from_be_bytes(
                            pdu.bhs[28..32].try_into().expect("4 bytes"),
                        ));
                    }
                    match &mut c.phase {
                        Phase::Ffp(s) => s.on_pdu(&pdu, slice, now_ns),
                        Phase::Login(sm) => {
                            let data = &slice[pdu.data.clone()];
                            match &pdu.req {
                                Request::Login(req) => {
                                    let step = sm.on_pdu(req, data, &cfg, &shared.registry);
                                    match apply_login_step(c, step, &cfg, &shared, &pool, shard_id)
                                    {
                                        AfterLogin::Nothing => {}
                                        AfterLogin::SessionUp(ev) => session_up = Some(ev),
                                        AfterLogin::RunCallback(argv) => callback = Some(argv),
                                    }
                                }
                                _ => {
                                    // RFC 7143 §6.1: only Login PDUs before full feature phase.
                                    fatal = true;
                                }
                            }
                        }
                    }
                    consumed += len;
                    if fatal {
                        break;
                    }
                }
            }
        }
        if consumed > 0 {
            c.rx.copy_within(consumed..c.rx_len, 0);
            c.rx_len -= consumed;
        }
        if fatal {
            c.close_after_flush = true;
        }
        if let Some(ev) = session_up {
            let _ = shared.control.send(ev);
        }
        if let Some(argv) = callback {
            self.start_callback(ci, argv);
        }
    }

    /// Hands a parked login's redirect callback to the runner; its result comes back as
    /// [`ShardMsg::CallbackDone`]. Refused at once (runner full, no thread): the login gets
    /// the failure now.
    fn start_callback(&mut self, ci: u16, argv: Vec<String>) {
        let Some(c) = self.conns[usize::from(ci)].as_ref() else {
            return;
        };
        let generation = c.generation;
        let (shared, shard) = (self.shared.clone(), self.id);
        let started = self.shared.callbacks.start(argv, move |result| {
            shared.send(
                shard,
                ShardMsg::CallbackDone {
                    conn: ci,
                    generation,
                    result,
                },
            )
        });
        if let Err(e) = started {
            self.callback_done(ci, generation, Err(e));
        }
    }

    /// A redirect callback's result: the parked login answers, then the PDUs that arrived
    /// behind its request are read.
    fn callback_done(&mut self, ci: u16, generation: u16, result: CallbackResult) {
        let cfg = self.cfg.clone();
        let shared = self.shared.clone();
        let pool = self.pool.clone();
        let Some(c) = self
            .conns
            .get_mut(usize::from(ci))
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation && c.callback_running && !c.closing)
        else {
            return;
        };
        c.callback_running = false;
        let Phase::Login(sm) = &mut c.phase else {
            return;
        };
        let Some(step) = sm.on_callback(result, &cfg, &shared.registry) else {
            return;
        };
        match apply_login_step(c, step, &cfg, &shared, &pool, self.id) {
            AfterLogin::Nothing => {}
            AfterLogin::SessionUp(ev) => {
                let _ = shared.control.send(ev);
            }
            AfterLogin::RunCallback(argv) => {
                self.start_callback(ci, argv);
                return;
            }
        }
        self.parse_pdus(ci);
        self.mark(ci);
    }

    fn on_send(&mut self, t: Token, res: i32) {
        let ci = t.conn;
        let Some(c) = self.conn_mut(t) else { return };
        c.send_inflight = false;
        if res < 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                self.mark(ci);
                return;
            }
            self.begin_close(ci);
            self.mark(ci);
            return;
        }
        c.tx_bytes += res as u64;
        c.sent(res as usize);
        self.mark(ci);
    }

    fn on_backend(&mut self, t: Token, res: i32) {
        let ci = t.conn;
        let pool = self.pool.clone();
        let mut zeros = std::mem::take(&mut self.zeros);
        let Some(c) = self.conn_mut(t) else {
            self.zeros = zeros;
            return;
        };
        c.io_inflight -= 1;
        let slot = usize::from(t.task_slot);
        let next = match c.pending.get_mut(slot).and_then(Option::as_mut) {
            Some(p) => p.on_cqe(res, &pool, &mut zeros),
            None => Next::Done(IoResult::Ok),
        };
        self.zeros = zeros;
        if c_pending_missing(&self.conns, ci, slot) {
            self.mark(ci);
            return;
        }
        self.after_io_step(ci, slot, next);
        self.mark(ci);
    }

    fn after_io_step(&mut self, ci: u16, slot: usize, next: Next) {
        match next {
            Next::Submit(e) => {
                let Some(c) = self.conns[usize::from(ci)].as_mut() else {
                    return;
                };
                let r = c.pending[slot].as_ref().map(|p| p.task);
                c.io_inflight += 1;
                let tok = self.token(OpKind::Backend, ci, r);
                self.push(entry(e, tok));
            }
            Next::Done(result) => {
                let Some(c) = self.conns[usize::from(ci)].as_mut() else {
                    return;
                };
                let Some(p) = c.pending[slot].take() else {
                    return;
                };
                self.complete_task(ci, p, result);
            }
        }
    }

    fn complete_task(&mut self, ci: u16, p: PendingIo, result: IoResult) {
        let cfg = self.cfg.clone();
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        let Phase::Ffp(s) = &mut c.phase else { return };
        let effects = finish_io(s, &cfg, p, result);
        self.deliver(effects);
    }

    /// Sends side effects (unit attentions for other nexuses) to every shard, this one
    /// included, by message: nexuses of a target may live on any shard.
    fn deliver(&mut self, effects: Vec<(u32, Effect)>) {
        for (tid, e) in effects {
            let Effect::Ua { scope, lun, ua } = e;
            let (except, only) = match scope {
                UaScope::OthersOf(id) => (Some(id.initiator_port), None),
                UaScope::Only(id) => (None, Some(id.initiator_port)),
            };
            self.shared.broadcast(|| ShardMsg::Ua {
                tid,
                lun,
                ua,
                except: except.clone(),
                only: only.clone(),
            });
        }
    }

    fn service_dirty(&mut self) {
        let now = self.now_ns();
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for ci in dirty {
                self.run_ready(ci);
                self.handle_events(ci);
                self.flush(ci, now);
                self.arm_recv(ci);
                self.maybe_free(ci);
            }
        }
    }

    /// Runs every task whose data is complete: inline answers are queued at once, backend
    /// I/O is submitted to the ring.
    fn run_ready(&mut self, ci: u16) {
        let cfg = self.cfg.clone();
        loop {
            let Some(c) = self.conns[usize::from(ci)].as_mut() else {
                return;
            };
            if c.closing {
                return;
            }
            let Phase::Ffp(s) = &mut c.phase else { return };
            let Some(r) = s.next_ready() else { return };
            let (io, effects) = exec_task(s, &cfg, r);
            self.deliver(effects);
            if let Some((lu, io, data)) = io {
                let slot = r.slot as usize;
                let mut p = PendingIo::new(r, lu, io, data);
                let next = p.start(&self.pool, &mut self.zeros);
                let Some(c) = self.conns[usize::from(ci)].as_mut() else {
                    return;
                };
                if c.pending.len() <= slot {
                    c.pending.resize_with(slot + 1, || None);
                }
                c.pending[slot] = Some(p);
                self.after_io_step(ci, slot, next);
            }
        }
    }

    fn handle_events(&mut self, ci: u16) {
        let cfg = self.cfg.clone();
        loop {
            let Some(c) = self.conns[usize::from(ci)].as_mut() else {
                return;
            };
            let (peer, local) = (c.peer, c.local);
            let Phase::Ffp(s) = &mut c.phase else { return };
            let Some(ev) = s.events.pop_front() else {
                return;
            };
            match ev {
                Event::Text { req, data, bhs } => {
                    text_response(s, &req, &data, &bhs, peer, local, &cfg)
                }
                Event::LunReset { lun } => {
                    if let Some(n) = &mut s.nexus {
                        let tid = n.id.tid;
                        if let Some(lu) = cfg.targets.get(&tid).and_then(|t| t.luns.get(&lun)) {
                            lu.reset();
                        }
                        // SAM-5 §6.3.3 (logical unit reset): the unit attention is for every
                        // I_T nexus, the one that asked for the reset included.
                        n.push_ua(lun, UnitAttention::LunReset);
                        let e = Effect::Ua {
                            scope: UaScope::OthersOf(n.id.clone()),
                            lun: Some(lun),
                            ua: UnitAttention::LunReset,
                        };
                        self.deliver(vec![(tid, e)]);
                    }
                }
                Event::TargetReset { .. } => {
                    if let Some(n) = &s.nexus {
                        let tid = n.id.tid;
                        if let Some(t) = cfg.targets.get(&tid) {
                            t.luns.values().for_each(|lu| lu.reset());
                        }
                        let e = Effect::Ua {
                            scope: UaScope::OthersOf(n.id.clone()),
                            lun: None,
                            ua: UnitAttention::PowerOnReset,
                        };
                        self.deliver(vec![(tid, e)]);
                    }
                }
            }
        }
    }

    /// Gathers queued PDUs into one sendmsg when none is in flight.
    fn flush(&mut self, ci: u16, now: u64) {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        if c.send_inflight || c.closing {
            return;
        }
        if c.tx_batch.is_empty() && self.hold(ci, now) {
            return;
        }
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        let fresh = c.tx_batch.is_empty();
        if !c.prepare_send() {
            if c.close_after_flush {
                self.begin_close(ci);
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
                    let t = *sent_ns.get_or_insert_with(|| self.epoch.elapsed().as_nanos() as u64);
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
        let fd = c.stream.as_raw_fd();
        let msg: *const libc::msghdr = &*c.msg;
        let e = opcode::SendMsg::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        let tok = self.token(OpKind::Send, ci, None);
        self.push(entry(e, tok));
    }

    fn arm_recv(&mut self, ci: u16) {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        if c.recv_inflight || c.closing || c.close_after_flush || c.callback_running {
            return;
        }
        // The buffer is not resized while the receive is in flight (recv_inflight guards
        // every resize path: parse_pdus runs only after the receive completed).
        let room = c.rx_room();
        let (ptr, len) = (room.as_mut_ptr(), room.len() as u32);
        c.recv_inflight = true;
        let fd = c.stream.as_raw_fd();
        let e = opcode::Recv::new(types::Fd(fd), ptr, len).build();
        let tok = self.token(OpKind::Recv, ci, None);
        self.push(entry(e, tok));
    }

    /// Starts closing a connection: no more receives, its tasks are aborted, and the socket
    /// is shut down so operations in flight complete. The slot is freed by `maybe_free`.
    fn begin_close(&mut self, ci: u16) {
        let Some(c) = self.conns[usize::from(ci)].as_mut() else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if let Phase::Ffp(s) = &mut c.phase {
            s.abort_everything();
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        self.mark(ci);
    }

    fn maybe_free(&mut self, ci: u16) {
        let Some(c) = self.conns[usize::from(ci)].as_ref() else {
            return;
        };
        if !c.closing || c.recv_inflight || c.send_inflight || c.io_inflight > 0 {
            return;
        }
        let c = self.conns[usize::from(ci)]
            .take()
            .expect("connection present");
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
                let _ = self.shared.control.send(ControlEvent::SessionDown {
                    tid,
                    tsih: s.tsih.0,
                });
            }
        }
        self.shared.shard_conns[self.id].fetch_sub(1, Ordering::Relaxed);
        self.live -= 1;
        self.reclaim.conn_freed();
        self.holding.retain(|x| *x != ci);
        self.free.push(ci);
    }
}

/// How long responses may be held back, given the last StatSN we sent, the initiator's latest
/// ExpStatSN and how many PDUs are queued: `None` to send at once.
fn hold_ns(stat_sn_sent: u32, peer_exp_stat_sn: u32, queued: usize) -> Option<u64> {
    // Responses sent that the initiator had not processed (serial arithmetic; a value past
    // 2^20 means ExpStatSN is ahead of or unrelated to ours, so no hold).
    let backlog = stat_sn_sent.wrapping_add(1).wrapping_sub(peer_exp_stat_sn);
    if queued == 0 || queued >= HOLD_MAX_PDUS || !(HOLD_MIN_BACKLOG..=1 << 20).contains(&backlog) {
        return None;
    }
    Some((u64::from(backlog) * HOLD_NS_PER_BACKLOG).min(HOLD_MAX_NS))
}

/// Runs the SCSI layer for a task whose data is complete. Returns the backend I/O to start,
/// if any, and side effects for other nexuses.
#[allow(clippy::type_complexity)]
fn exec_task(
    s: &mut Session,
    cfg: &ConfigSnapshot,
    r: TaskRef,
) -> (
    Option<(
        Arc<LogicalUnit>,
        crate::backing::BlockIo,
        Option<crate::buf::IoBuf>,
    )>,
    Vec<(u32, Effect)>,
) {
    let Kind::Normal { tid } = s.kind else {
        return (None, Vec::new());
    };
    let target = cfg.targets.get(&tid);
    let luns: &[crate::scsi::Lun] = target.map(|t| &t.lun_list[..]).unwrap_or(&[]);
    let Some(t) = s.task(r) else {
        return (None, Vec::new());
    };
    let lu = target.and_then(|tv| tv.luns.get(&t.lun)).cloned();
    if lu.is_some() {
        // tgt counts a command as submitted when it reaches an existing LU.
        let (lun, read, write, len) = (t.lun, t.read, t.write, t.expected_len);
        s.stats.submitted(lun, read, write, len);
    }
    let resp = {
        let Some((task, nexus)) = s.task_and_nexus(r) else {
            return (None, Vec::new());
        };
        let cdb = task.cdb_bytes();
        let cmd = scsi_command(task, &cdb);
        let data = task.data.clone();
        let out_len = if task.write {
            lu.as_ref()
                .and_then(|l| scsi::data_out_len(&cdb, l.block_size()))
        } else {
            None
        };
        let mut ctx = ExecCtx {
            tid,
            lun: task.lun,
            lu: lu.as_deref(),
            luns,
            nexus,
        };
        match scsi::execute(&mut ctx, &cmd) {
            Outcome::Done(resp) => (resp, out_len),
            Outcome::Io(io) => match lu {
                Some(lu) => return (Some((lu, io, data)), Vec::new()),
                None => (
                    scsi::Response {
                        status: scsi::ScsiStatus::CheckCondition,
                        sense: Vec::new(),
                        data: scsi::DataIn::None,
                        effects: Vec::new(),
                    },
                    None,
                ),
            },
        }
    };
    let (mut resp, out_len) = resp;
    let effects = std::mem::take(&mut resp.effects)
        .into_iter()
        .map(|e| (tid, e))
        .collect();
    s.finish(r, resp, out_len);
    (None, effects)
}

/// Completes a task after its backend I/O.
fn finish_io(
    s: &mut Session,
    cfg: &ConfigSnapshot,
    p: PendingIo,
    result: IoResult,
) -> Vec<(u32, Effect)> {
    let Kind::Normal { tid } = s.kind else {
        return Vec::new();
    };
    let luns: &[crate::scsi::Lun] = cfg
        .targets
        .get(&tid)
        .map(|t| &t.lun_list[..])
        .unwrap_or(&[]);
    let (mut resp, out_len) = {
        let Some((task, nexus)) = s.task_and_nexus(p.task) else {
            return Vec::new();
        };
        let cdb = task.cdb_bytes();
        let cmd = scsi_command(task, &cdb);
        let out_len = if task.write {
            scsi::data_out_len(&cdb, p.lu.block_size())
        } else {
            None
        };
        let mut ctx = ExecCtx {
            tid,
            lun: task.lun,
            lu: Some(&p.lu),
            luns,
            nexus,
        };
        (
            scsi::complete(&mut ctx, &cmd, &p.io, result, p.read_buf),
            out_len,
        )
    };
    let effects = std::mem::take(&mut resp.effects)
        .into_iter()
        .map(|e| (tid, e))
        .collect();
    s.finish(p.task, resp, out_len);
    effects
}

fn c_pending_missing(conns: &[Option<Conn>], ci: u16, slot: usize) -> bool {
    conns[usize::from(ci)]
        .as_ref()
        .is_none_or(|c| c.pending.get(slot).is_none_or(Option::is_none))
}

/// Answers a Text Request (SendTargets discovery and key negotiation).
fn text_response(
    s: &mut Session,
    req: &crate::iscsi::pdu::TextReq,
    data: &[u8],
    req_bhs: &[u8; crate::iscsi::pdu::BHS_LEN],
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    cfg: &ConfigSnapshot,
) {
    use crate::iscsi::discovery::{TextCtx, TextReply};
    let kind = match s.kind {
        Kind::Discovery => SessionKind::Discovery,
        Kind::Normal { tid } => SessionKind::Normal { tid },
    };
    let name = s.initiator_name.clone();
    let ctx = TextCtx {
        kind: &kind,
        initiator_name: &name,
        peer_ip: peer.ip(),
        local,
        tpgt: 1,
        cfg,
        max_xmit: s.params.max_xmit_data,
        max_recv: s.params.max_recv_data,
    };
    match s.text.on_text(req, data, &ctx) {
        TextReply::Respond {
            bhs,
            data,
            new_max_xmit,
        } => {
            if let Some(m) = new_max_xmit {
                s.params.max_xmit_data = m;
            }
            s.send_text(bhs, data);
        }
        TextReply::Reject(reason) => {
            s.queue(
                crate::iscsi::pdu::Bhs::reject(reason),
                Payload::Owned(req_bhs.to_vec()),
            );
        }
    }
}

/// The SCSI layer's view of a task whose data is complete.
fn scsi_command<'a>(task: &'a crate::iscsi::task::Task, cdb: &'a [u8]) -> ScsiCommand<'a> {
    ScsiCommand {
        cdb,
        data_out: task.data_out(),
        expected_len: task.expected_len,
        read: task.read,
        write: task.write,
        attr: task.attr,
    }
}

fn payload(data: Vec<u8>) -> Payload {
    if data.is_empty() {
        Payload::None
    } else {
        Payload::Owned(data)
    }
}

/// What the shard must do after a login step was applied to its connection.
enum AfterLogin {
    Nothing,
    /// A normal session is up: tell the control thread.
    SessionUp(ControlEvent),
    /// The login is parked: run the target's redirect callback.
    RunCallback(Vec<String>),
}

/// Applies one login step to its connection: queues the response, closes after it on
/// failure, enters the full feature phase on success (ending a reinstated session's nexus
/// first), or parks the connection while a redirect callback runs.
fn apply_login_step(
    c: &mut Conn,
    step: LoginStep,
    cfg: &ConfigSnapshot,
    shared: &Shared,
    pool: &BufPool,
    shard_id: usize,
) -> AfterLogin {
    match step {
        LoginStep::Continue { bhs, data } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            AfterLogin::Nothing
        }
        LoginStep::Fail { bhs, data } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            c.close_after_flush = true;
            AfterLogin::Nothing
        }
        LoginStep::RunCallback { argv } => {
            c.callback_running = true;
            AfterLogin::RunCallback(argv)
        }
        LoginStep::Done { bhs, data, session } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            let mut s = build_session(&session, cfg, pool.clone());
            if let Some((shard, tid, tsih)) = session.reinstate {
                // Reinstatement ends the old I_T nexus (RFC 7143 §6.3.5): its SPC-2
                // reservations and removal locks go before the new session issues a command.
                if let (Some(n), Some(t)) = (&s.nexus, cfg.targets.get(&tid)) {
                    t.luns.values().for_each(|lu| lu.nexus_lost(&n.id));
                }
                shared.send(shard, ShardMsg::CloseSession { tid, tsih: tsih.0 });
            }
            let up = match s.kind {
                Kind::Normal { tid } => AfterLogin::SessionUp(ControlEvent::SessionUp {
                    shard: shard_id,
                    tid,
                    tsih: s.tsih.0,
                    initiator: s.initiator_name.clone(),
                    alias: session.initiator_alias.clone(),
                    conns: vec![ConnInfo {
                        cid: s.cid.0,
                        peer: c.peer,
                    }],
                }),
                Kind::Discovery => AfterLogin::Nothing,
            };
            // Move the login responses ahead of anything FFP queues.
            let mut q = std::mem::take(&mut c.login_out);
            q.extend(s.out.drain(..));
            s.out = q;
            c.phase = Phase::Ffp(Box::new(s));
            up
        }
    }
}

/// Builds the full-feature-phase session from a finished login.
fn build_session(o: &LoginOutcome, cfg: &ConfigSnapshot, pool: BufPool) -> Session {
    let p = &o.params;
    let params = FfpParams {
        header_digest: p.header_digest,
        data_digest: p.data_digest,
        max_recv_data: p.max_recv_data_segment_length,
        max_xmit_data: p.max_xmit_data_segment_length,
        initial_r2t: p.initial_r2t,
        immediate_data: p.immediate_data,
        first_burst: p.first_burst_length,
        max_burst: p.max_burst_length,
        max_outstanding_r2t: p.max_outstanding_r2t,
        max_queue_cmd: p.max_queue_cmd,
    };
    let (kind, nexus) = match o.kind {
        SessionKind::Discovery => (Kind::Discovery, None),
        SessionKind::Normal { tid } => {
            let port: Arc<str> = Arc::from(format!("{},i,0x{}", o.initiator_name, o.isid.hex()));
            let mut n = NexusState::new(NexusId {
                tid,
                initiator_port: port,
            });
            // A new I_T nexus starts with POWER ON, RESET OCCURRED on every LU (SAM-5 §6.3.1).
            if let Some(t) = cfg.targets.get(&tid) {
                for l in &t.lun_list {
                    n.push_ua(*l, UnitAttention::PowerOnReset);
                }
            }
            (Kind::Normal { tid }, Some(n))
        }
    };
    Session::new(
        kind,
        o.tsih,
        o.cid,
        o.isid,
        o.initiator_name.clone(),
        params,
        nexus,
        o.exp_cmd_sn,
        o.next_stat_sn,
        pool,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_held_only_behind_an_initiator_backlog() {
        // iodepth 1: the initiator has processed everything we sent.
        assert_eq!(hold_ns(100, 101, 1), None);
        // A backlog below the threshold: send at once.
        assert_eq!(hold_ns(100, 101 - HOLD_MIN_BACKLOG + 1, 4), None);
        // At the threshold: hold, longer for a longer backlog, bounded.
        assert_eq!(
            hold_ns(100, 101 - HOLD_MIN_BACKLOG, 4),
            Some(u64::from(HOLD_MIN_BACKLOG) * HOLD_NS_PER_BACKLOG)
        );
        assert_eq!(hold_ns(5000, 1, 4), Some(HOLD_MAX_NS));
        // Across the StatSN wrap.
        assert_eq!(
            hold_ns(10, 10u32.wrapping_sub(99), 4),
            Some(100 * HOLD_NS_PER_BACKLOG)
        );
        // Nothing queued, or a full batch: no hold.
        assert_eq!(hold_ns(5000, 1, 0), None);
        assert_eq!(hold_ns(5000, 1, HOLD_MAX_PDUS), None);
        // ExpStatSN ahead of ours (or garbage): no hold.
        assert_eq!(hold_ns(100, 200, 4), None);
    }
}
