//! The MDS side of a volume, sans-IO: volume-management calls, the open file's session and
//! lease, and fetching the layout (segments, copyset members, sequence number) the chunk I/O
//! engine asks for (curve-tgt.md §7.2–§7.4).
//!
//! One `Mds` serves one volume and lives off the shards (a thread per volume or the control
//! thread); it publishes [`Layout`] snapshots that shards read without locks. It keeps one
//! multiplexed connection to the current MDS address (libcurve opens one per RPC; a brpc server
//! takes either) and fails over to the next address after `mds_failures_before_switch` failed
//! calls. Every call retries until its deadline, then fails with the last reason seen.
//!
//! Lease reactions (Curve `src/client/lease_executor.cpp`): RefreshSession every lease/4; kOK
//! reopens the I/O gate and takes the new sequence number and length; kFileNotExists or a
//! changed inode id closes the gate for good (I/O fails at once); kOwnerAuthFail blocks I/O and
//! keeps refreshing; an RPC failure keeps the lease until it runs out, then blocks I/O until a
//! refresh succeeds.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::auth::{now_date_us, Credentials};
use super::backoff::Jitter;
use super::config::ClientConfig;
use super::conn::{Action, Call, Conn, ConnState, Transmit, MAX_TOMBSTONES};
use super::error::{mds_status_name, MdsError};
use super::frame::{encode_request, DecodeEvent, FrameHead, Method};
use super::ids::{
    ChunkId, ChunkServerId, CopysetId, CopysetKey, CorrelationId, LogicalPoolId, OpId, PeerId,
};
use super::layout::{Geometry, IoGate, Layout, LayoutNeed, Member, Segment};
use super::proto::{mds as pb, topology};

const FS: &str = "curve.mds.CurveFSService";
const TOPO: &str = "curve.mds.topology.TopologyService";
const CLIENT_VERSION: &str = "curve-tgt";

/// A volume-management request (what Curve's `curve` CLI does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// CreateCloneFile: `path`, a clone of `source` (a volume path), `length` bytes, not yet
    /// readable (status kFileCloning) until [`AdminRequest::SetCloneStatus`].
    CreateClone {
        /// The clone's path.
        path: String,
        /// The source volume's path.
        source: String,
        /// Bytes.
        length: u64,
        /// The source's chunk size.
        chunk_size: u32,
        /// The source's sequence number.
        seq: u64,
    },
    /// SetCloneFileStatus (a `pb::FileStatus` value).
    SetCloneStatus {
        /// The clone's path.
        path: String,
        /// The new status.
        status: i32,
    },
    /// CreateFile: a page file of `length` bytes.
    Create {
        /// Path, such as `/vol1`.
        path: String,
        /// Bytes (at least 10 GiB on a default MDS).
        length: u64,
    },
    /// ExtendFile to `new_length` bytes.
    Extend {
        /// Path.
        path: String,
        /// New length.
        new_length: u64,
    },
    /// DeleteFile.
    Delete {
        /// Path.
        path: String,
        /// Delete at once instead of moving to the recycle bin.
        force: bool,
    },
    /// GetFileInfo.
    Stat {
        /// Path.
        path: String,
    },
    /// ListDir.
    List {
        /// Directory path.
        path: String,
    },
    /// CreateSnapShot.
    Snapshot {
        /// Path of the volume.
        path: String,
    },
}

/// The answer to an [`AdminRequest`], or to open/close.
#[derive(Clone, Debug, PartialEq)]
pub enum AdminReply {
    /// Done, nothing to report.
    Done,
    /// A file's information (Stat, Snapshot, Open).
    Info(Box<pb::FileInfo>),
    /// A directory's entries.
    List(Vec<pb::FileInfo>),
}

/// A finished MDS call.
#[derive(Clone, Debug, PartialEq)]
pub struct MdsCompletion {
    /// The caller's id.
    pub op: OpId,
    /// The outcome.
    pub result: Result<AdminReply, MdsError>,
}

/// The wire request of a call, re-encoded (with a fresh date) on every attempt.
#[derive(Clone, Debug)]
enum Req {
    Admin(AdminRequest),
    Open {
        path: String,
    },
    Close {
        path: String,
        session: String,
    },
    Refresh {
        path: String,
        session: String,
    },
    FileInfo {
        path: String,
    },
    Segment {
        path: String,
        offset: u64,
        allocate: bool,
    },
    Copysets {
        pool: LogicalPoolId,
        ids: Vec<CopysetId>,
    },
}

/// What a call is for, so its reply goes to the right place.
#[derive(Clone, Debug)]
enum Purpose {
    Admin(OpId),
    Open(OpId),
    Close(OpId),
    Refresh,
    Layout(LayoutNeed),
}

#[derive(Debug)]
struct MdsCall {
    req: Req,
    purpose: Purpose,
    started: Instant,
    deadline: Instant,
    attempts: u32,
    last_error: String,
    sent_at: Instant,
}

#[derive(Debug)]
struct OpenFile {
    path: String,
    session: String,
    file_id: u64,
    lease: Duration,
    lease_until: Instant,
    refresh_at: Instant,
    refresh_inflight: bool,
    refreshing: bool,
}

/// The MDS session of one client (and one open volume, if any).
#[derive(Debug)]
pub struct Mds {
    cfg: ClientConfig,
    creds: Credentials,
    peer_base: u32,
    current: usize,
    failures: u32,
    conns: Vec<Conn<MdsCall, ()>>,
    /// Per connection, a reply head whose (unexpected) attachment is still arriving: the call
    /// is matched when the frame ends, and a connection lost before that retries it.
    heads: Vec<Option<FrameHead>>,
    next_cid: u64,
    next_log_id: i64,
    queue: VecDeque<MdsCall>,
    delayed: Vec<(Instant, MdsCall)>,
    file: Option<OpenFile>,
    layout: Option<Layout>,
    dirty: bool,
    copysets_inflight: HashSet<CopysetKey>,
    /// Segment and sequence-number fetches in flight, so shards asking again (each new
    /// layout wakes their parked pieces) do not repeat them.
    layout_inflight: HashSet<LayoutNeed>,
    need_failures: VecDeque<(LayoutNeed, String)>,
    completions: VecDeque<MdsCompletion>,
    actions: VecDeque<Action>,
    transmits: VecDeque<Transmit<()>>,
    jitter: Jitter,
}

impl Mds {
    /// An MDS session; its peers are numbered from `peer_base` (one per MDS address).
    pub fn new(cfg: ClientConfig, creds: Credentials, peer_base: u32) -> Mds {
        let conns = cfg
            .mds_addrs
            .iter()
            .map(|a| Conn::new(*a, cfg.frame_limits))
            .collect();
        let heads = vec![None; cfg.mds_addrs.len()];
        Mds {
            heads,
            cfg,
            creds,
            peer_base,
            current: 0,
            failures: 0,
            conns,
            next_cid: 1,
            next_log_id: 1,
            queue: VecDeque::new(),
            delayed: Vec::new(),
            file: None,
            layout: None,
            dirty: false,
            copysets_inflight: HashSet::new(),
            layout_inflight: HashSet::new(),
            need_failures: VecDeque::new(),
            completions: VecDeque::new(),
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
            jitter: Jitter::new(),
        }
    }

    /// True if `peer` is one of this session's MDS connections.
    pub fn owns_peer(&self, peer: PeerId) -> bool {
        peer.0 >= self.peer_base && ((peer.0 - self.peer_base) as usize) < self.conns.len()
    }

    /// Runs a volume-management call.
    pub fn admin(&mut self, now: Instant, op: OpId, req: AdminRequest) {
        self.submit(now, Req::Admin(req), Purpose::Admin(op));
    }

    /// Opens `path` (OpenFile) and starts its lease; completes with the file's info.
    pub fn open(&mut self, now: Instant, op: OpId, path: &str) {
        if self.file.is_some() {
            self.completions.push_back(MdsCompletion {
                op,
                result: Err(MdsError::Usage("a volume is already open".into())),
            });
            return;
        }
        self.submit(
            now,
            Req::Open {
                path: path.to_string(),
            },
            Purpose::Open(op),
        );
    }

    /// Closes the open volume (CloseFile) and stops the lease.
    pub fn close(&mut self, now: Instant, op: OpId) {
        let Some(f) = self.file.take() else {
            self.completions.push_back(MdsCompletion {
                op,
                result: Err(MdsError::Usage("no volume is open".into())),
            });
            return;
        };
        if let Some(l) = &mut self.layout {
            l.gate = IoGate::Closed("volume closed".into());
            self.dirty = true;
        }
        self.submit(
            now,
            Req::Close {
                path: f.path,
                session: f.session,
            },
            Purpose::Close(op),
        );
    }

    /// The chunk I/O engine needs part of the layout.
    pub fn need(&mut self, now: Instant, need: LayoutNeed) {
        let Some(f) = &self.file else {
            self.need_failures
                .push_back((need, "no volume is open".into()));
            return;
        };
        let path = f.path.clone();
        if !matches!(need, LayoutNeed::Copysets { .. })
            && !self.layout_inflight.insert(need.clone())
        {
            return;
        }
        let req = match &need {
            LayoutNeed::Segment { index, allocate } => {
                let Some(l) = &self.layout else { return };
                Req::Segment {
                    path,
                    offset: index * u64::from(l.geometry.segment_size),
                    allocate: *allocate,
                }
            }
            LayoutNeed::Copysets { pool, ids } => {
                let ids: Vec<CopysetId> = ids
                    .iter()
                    .copied()
                    .filter(|c| {
                        self.copysets_inflight.insert(CopysetKey {
                            pool: *pool,
                            copyset: *c,
                        })
                    })
                    .collect();
                if ids.is_empty() {
                    return;
                }
                Req::Copysets { pool: *pool, ids }
            }
            LayoutNeed::SeqNum => Req::FileInfo { path },
        };
        self.submit(now, req, Purpose::Layout(need));
    }

    /// A new layout snapshot, if anything changed since the last call.
    pub fn take_layout(&mut self) -> Option<Arc<Layout>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let l = self.layout.as_mut()?;
        l.version += 1;
        Some(Arc::new(l.clone()))
    }

    /// A layout request that failed, with the reason.
    pub fn poll_need_failure(&mut self) -> Option<(LayoutNeed, String)> {
        self.need_failures.pop_front()
    }

    /// A finished call.
    pub fn poll_completion(&mut self) -> Option<MdsCompletion> {
        self.completions.pop_front()
    }

    /// True if a completion is waiting.
    pub fn has_completion(&self) -> bool {
        !self.completions.is_empty()
    }

    /// A connection to open or close.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<()>> {
        self.transmits.pop_front()
    }

    /// When `on_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for c in &self.conns {
            if let Some(d) = c.next_deadline() {
                min(d);
            }
        }
        for (d, _) in &self.delayed {
            min(*d);
        }
        for c in &self.queue {
            min(c.deadline);
        }
        if let Some(f) = &self.file {
            if f.refreshing {
                if !f.refresh_inflight {
                    min(f.refresh_at);
                }
                // The lease's end matters only while it still holds the gate open.
                if self.layout.as_ref().is_some_and(|l| l.gate == IoGate::Open) {
                    min(f.lease_until);
                }
            }
        }
        t
    }

    /// The driver connected `peer`.
    pub fn on_connected(&mut self, now: Instant, peer: PeerId) {
        let Some(i) = self.index(peer) else { return };
        if self.conns[i].state != ConnState::Connecting {
            return;
        }
        self.conns[i].state = ConnState::Connected;
        for t in self.conns[i].unsent.drain(..) {
            self.transmits.push_back(t);
        }
        self.flush(now);
    }

    /// The driver lost (or failed to open) `peer`'s connection.
    pub fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str) {
        let Some(i) = self.index(peer) else { return };
        if matches!(self.conns[i].state, ConnState::Idle { .. }) {
            return;
        }
        self.drop_conn(
            now,
            i,
            &format!("MDS {} connection: {reason}", self.conns[i].addr),
            false,
        );
    }

    /// Bytes arrived from `peer`.
    pub fn on_recv(&mut self, now: Instant, peer: PeerId, mut bytes: &[u8]) {
        let Some(i) = self.index(peer) else { return };
        if self.conns[i].state != ConnState::Connected {
            return;
        }
        loop {
            match self.conns[i].decoder.decode(&mut bytes) {
                Ok(None) => return,
                Ok(Some(DecodeEvent::Head(h))) => self.heads[i] = Some(h),
                Ok(Some(DecodeEvent::Attachment(_))) => {}
                Ok(Some(DecodeEvent::End)) => {
                    let Some(h) = self.heads[i].take() else {
                        continue;
                    };
                    let call = match self.conns[i].complete(h.correlation_id) {
                        Ok(Some(c)) => c,
                        Ok(None) => continue,
                        Err(_) => {
                            let why = format!(
                                "MDS {} replied to unknown correlation id {}",
                                self.conns[i].addr, h.correlation_id
                            );
                            self.drop_conn(now, i, &why, true);
                            return;
                        }
                    };
                    let rpc_error = h.meta.response.as_ref().and_then(|r| {
                        (r.error_code.unwrap_or(0) != 0).then(|| {
                            format!(
                                "brpc error {}: {}",
                                r.error_code.unwrap_or(0),
                                r.error_text.clone().unwrap_or_default()
                            )
                        })
                    });
                    match rpc_error {
                        Some(e) => self.retry(now, call, e, true),
                        None => {
                            self.failures = 0;
                            self.on_reply(now, call, &h.payload);
                        }
                    }
                }
                Err(e) => {
                    let why = format!("MDS {} sent a bad frame: {e}", self.conns[i].addr);
                    self.drop_conn(now, i, &why, true);
                    return;
                }
            }
        }
    }

    /// Time passed: timeouts, retries, lease refresh and expiry.
    pub fn on_timeout(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            for cid in self.conns[i].expired(now) {
                if let Some(call) = self.conns[i].abandon(cid) {
                    let why = format!(
                        "MDS {} did not answer {} within {:?}",
                        self.conns[i].addr,
                        call.req.method().method,
                        self.cfg.mds_rpc_timeout
                    );
                    self.note_failure(now);
                    self.retry(now, call, why, false);
                }
            }
            // An MDS that stays connected but silent piles up abandoned calls: start over.
            if self.conns[i].tombstones > MAX_TOMBSTONES {
                let why = format!("MDS {}: too many unanswered calls", self.conns[i].addr);
                self.drop_conn(now, i, &why, true);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, c) in due {
            self.queue.push_back(c);
        }
        self.flush(now);
        self.lease_tick(now);
        self.flush(now);
    }

    fn lease_tick(&mut self, now: Instant) {
        let Some(f) = &mut self.file else { return };
        if !f.refreshing {
            return;
        }
        if now >= f.lease_until {
            if let Some(l) = &mut self.layout {
                if l.gate == IoGate::Open {
                    l.gate = IoGate::Blocked(
                        "the MDS lease expired: no successful RefreshSession within the lease"
                            .into(),
                    );
                    self.dirty = true;
                }
            }
        }
        if now >= f.refresh_at && !f.refresh_inflight {
            f.refresh_inflight = true;
            f.refresh_at = now + f.lease / 4;
            let req = Req::Refresh {
                path: f.path.clone(),
                session: f.session.clone(),
            };
            let deadline = now + f.lease / 4;
            self.queue.push_back(MdsCall {
                req,
                purpose: Purpose::Refresh,
                started: now,
                deadline,
                attempts: 0,
                last_error: String::new(),
                sent_at: now,
            });
        }
    }

    fn index(&self, peer: PeerId) -> Option<usize> {
        self.owns_peer(peer)
            .then(|| (peer.0 - self.peer_base) as usize)
    }

    fn submit(&mut self, now: Instant, req: Req, purpose: Purpose) {
        if self.conns.is_empty() {
            let method = req.method().method;
            self.finish(
                purpose,
                Err(MdsError::Deadline {
                    method,
                    elapsed_ms: 0,
                    last: "no MDS address configured".into(),
                }),
            );
            return;
        }
        self.queue.push_back(MdsCall {
            req,
            purpose,
            started: now,
            deadline: now + self.cfg.op_deadline,
            attempts: 0,
            last_error: String::new(),
            sent_at: now,
        });
        self.flush(now);
    }

    /// Sends queued calls on the current MDS connection, connecting it if needed.
    fn flush(&mut self, now: Instant) {
        // Calls that never got a connection before their deadline fail here.
        let (late, live): (VecDeque<MdsCall>, VecDeque<MdsCall>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|c| c.deadline <= now);
        self.queue = live;
        for c in late {
            self.give_up(now, c);
        }
        if self.queue.is_empty() {
            return;
        }
        let i = self.current;
        match self.conns[i].state {
            ConnState::Connected => {}
            ConnState::Connecting => return,
            ConnState::Idle { retry_after } => {
                if retry_after.is_some_and(|t| t > now) {
                    // Wait out the hold-off: park calls briefly.
                    let t = retry_after.unwrap_or(now);
                    for c in self.queue.drain(..) {
                        self.delayed.push((t, c));
                    }
                    return;
                }
                self.conns[i].state = ConnState::Connecting;
                self.actions.push_back(Action::Connect {
                    peer: PeerId(self.peer_base + i as u32),
                    addr: self.conns[i].addr,
                });
                return;
            }
        }
        while let Some(mut call) = self.queue.pop_front() {
            if now >= call.deadline {
                self.give_up(now, call);
                continue;
            }
            call.attempts += 1;
            call.sent_at = now;
            let date = now_date_us();
            let method = call.req.method();
            let payload = call.req.encode(&self.creds, date, &self.cfg);
            let cid = CorrelationId(self.next_cid);
            self.next_cid += 1;
            let log_id = self.next_log_id;
            self.next_log_id += 1;
            let head = encode_request(cid, method, Some(log_id), &RawMessage(payload), 0);
            let timeout = self
                .cfg
                .mds_rpc_timeout
                .min(call.deadline.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            self.conns[i].calls.insert(
                cid,
                Call {
                    tag: Some(call),
                    deadline: now + timeout,
                },
            );
            self.transmits.push_back(Transmit {
                peer: PeerId(self.peer_base + i as u32),
                head,
                attachment: None,
            });
        }
    }

    fn note_failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= self.cfg.mds_failures_before_switch && self.conns.len() > 1 {
            let i = self.current;
            let calls = self.conns[i].reset(self.cfg.frame_limits, None);
            self.actions.push_back(Action::Close {
                peer: PeerId(self.peer_base + i as u32),
                reason: "switching to the next MDS".into(),
            });
            self.current = (i + 1) % self.conns.len();
            self.failures = 0;
            for c in calls {
                self.retry(now, c, "MDS switched".into(), false);
            }
        }
    }

    fn drop_conn(&mut self, now: Instant, i: usize, why: &str, close: bool) {
        let hold = Some(now + self.cfg.reconnect_holdoff);
        let calls = self.conns[i].reset(self.cfg.frame_limits, hold);
        self.heads[i] = None;
        if close {
            self.actions.push_back(Action::Close {
                peer: PeerId(self.peer_base + i as u32),
                reason: why.to_string(),
            });
        }
        self.transmits
            .retain(|t| t.peer != PeerId(self.peer_base + i as u32));
        if i == self.current {
            self.failures = self.cfg.mds_failures_before_switch.saturating_sub(1);
            self.note_failure(now);
        }
        // Calls still waiting for a connection learn why there is none.
        for c in self
            .queue
            .iter_mut()
            .chain(self.delayed.iter_mut().map(|d| &mut d.1))
        {
            c.last_error = why.to_string();
        }
        for c in calls {
            self.retry(now, c, why.to_string(), false);
        }
        self.flush(now);
    }

    /// Puts a failed call back with a delay, or gives up past its deadline.
    fn retry(&mut self, now: Instant, mut call: MdsCall, why: String, count_failure: bool) {
        if count_failure {
            self.note_failure(now);
        }
        call.last_error = why;
        if matches!(call.purpose, Purpose::Refresh) {
            // Refreshes are not retried: the next one is already scheduled.
            if let Some(f) = &mut self.file {
                f.refresh_inflight = false;
            }
            return;
        }
        let delay = self.jitter.backoff(
            self.cfg.retry_interval,
            Duration::from_secs(1),
            call.attempts,
        );
        if now + delay >= call.deadline {
            self.give_up(now, call);
            return;
        }
        self.delayed.push((now + delay, call));
    }

    fn give_up(&mut self, now: Instant, call: MdsCall) {
        let err = MdsError::Deadline {
            method: call.req.method().method,
            elapsed_ms: now.saturating_duration_since(call.started).as_millis() as u64,
            last: if call.last_error.is_empty() {
                "never sent (no MDS connection)".into()
            } else {
                call.last_error
            },
        };
        self.finish(call.purpose, Err(err));
    }

    fn finish(&mut self, purpose: Purpose, result: Result<AdminReply, MdsError>) {
        match purpose {
            Purpose::Admin(op) | Purpose::Open(op) | Purpose::Close(op) => {
                self.completions.push_back(MdsCompletion { op, result })
            }
            Purpose::Refresh => {
                if let Some(f) = &mut self.file {
                    f.refresh_inflight = false;
                }
            }
            Purpose::Layout(need) => {
                self.layout_inflight.remove(&need);
                if let (LayoutNeed::Copysets { pool, ids }, Err(_)) = (&need, &result) {
                    for c in ids {
                        self.copysets_inflight.remove(&CopysetKey {
                            pool: *pool,
                            copyset: *c,
                        });
                    }
                }
                if let Err(e) = result {
                    self.need_failures.push_back((need, e.to_string()));
                }
            }
        }
    }

    fn on_reply(&mut self, now: Instant, call: MdsCall, payload: &[u8]) {
        let method = call.req.method().method;
        let bad = |detail: String| MdsError::BadReply { method, detail };
        if let Purpose::Layout(n) = &call.purpose {
            self.layout_inflight.remove(n);
        }
        match (&call.req, call.purpose.clone()) {
            (Req::Admin(a), Purpose::Admin(op)) => {
                let r = decode_admin(a, payload).map_err(bad).and_then(|x| x);
                if retryable(&r) && now < call.deadline {
                    let status = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
                    self.retry(now, call, status, false);
                    return;
                }
                self.completions.push_back(MdsCompletion { op, result: r });
            }
            (Req::Open { path }, Purpose::Open(op)) => {
                let path = path.clone();
                let r = self.opened(now, &call, &path, payload);
                self.completions.push_back(MdsCompletion { op, result: r });
            }
            (Req::Close { .. }, Purpose::Close(op)) => {
                let r = match pb::CloseFileResponse::decode(payload) {
                    Ok(x) if x.status_code == pb::StatusCode::KOk as i32 => Ok(AdminReply::Done),
                    Ok(x) => Err(MdsError::Status {
                        method,
                        status: x.status_code,
                    }),
                    Err(e) => Err(bad(e.to_string())),
                };
                self.completions.push_back(MdsCompletion { op, result: r });
            }
            (Req::Refresh { .. }, Purpose::Refresh) => self.refreshed(&call, payload),
            (Req::FileInfo { .. }, Purpose::Layout(need)) => {
                match pb::GetFileInfoResponse::decode(payload) {
                    Ok(x) if x.status_code == pb::StatusCode::KOk as i32 => {
                        if let (Some(info), Some(l)) = (x.file_info, &mut self.layout) {
                            let sn = info.seq_num.unwrap_or(l.seq_num);
                            if sn != l.seq_num {
                                l.seq_num = sn;
                            }
                            // A volume extended since open (disksize=auto asks for this).
                            l.geometry.length = info.length.unwrap_or(l.geometry.length);
                            // Wake the pieces that waited, even if unchanged.
                            self.dirty = true;
                        }
                    }
                    Ok(x) => self.finish(
                        Purpose::Layout(need),
                        Err(MdsError::Status {
                            method,
                            status: x.status_code,
                        }),
                    ),
                    Err(e) => self.finish(Purpose::Layout(need), Err(bad(e.to_string()))),
                }
            }
            (Req::Segment { offset, .. }, Purpose::Layout(need)) => {
                let offset = *offset;
                match self.segment_reply(now, offset, payload) {
                    Ok(()) => {}
                    Err(e) => self.finish(Purpose::Layout(need), Err(e)),
                }
            }
            (Req::Copysets { pool, ids }, Purpose::Layout(need)) => {
                let pool = *pool;
                for c in ids {
                    self.copysets_inflight
                        .remove(&CopysetKey { pool, copyset: *c });
                }
                if let Err(e) = self.copysets_reply(pool, payload) {
                    self.finish(Purpose::Layout(need), Err(e));
                }
            }
            (_, purpose) => {
                self.finish(purpose, Err(bad("reply does not match its request".into())))
            }
        }
    }

    fn opened(
        &mut self,
        now: Instant,
        call: &MdsCall,
        path: &str,
        payload: &[u8],
    ) -> Result<AdminReply, MdsError> {
        let method = "OpenFile";
        let bad = |d: &str| MdsError::BadReply {
            method,
            detail: d.to_string(),
        };
        let r = pb::OpenFileResponse::decode(payload).map_err(|e| bad(&e.to_string()))?;
        if r.status_code != pb::StatusCode::KOk as i32 {
            return Err(MdsError::Status {
                method,
                status: r.status_code,
            });
        }
        let info = r.file_info.ok_or_else(|| bad("no fileInfo"))?;
        let session = r.proto_session.ok_or_else(|| bad("no protoSession"))?;
        let geometry = Geometry {
            file_id: info.id.unwrap_or(0),
            length: info.length.unwrap_or(0),
            chunk_size: info.chunk_size.unwrap_or(0),
            segment_size: info.segment_size.unwrap_or(0),
            block_size: info.blocksize.unwrap_or(4096),
        };
        if !geometry.is_sane() {
            return Err(bad(&format!("unusable geometry {geometry:?}")));
        }
        if info.stripe_count.unwrap_or(0) > 1 {
            return Err(bad("striped volumes are not supported"));
        }
        let lease = Duration::from_micros(u64::from(session.lease_time))
            .clamp(Duration::from_millis(400), Duration::from_secs(600));
        self.file = Some(OpenFile {
            path: path.to_string(),
            session: session.session_id,
            file_id: geometry.file_id,
            lease,
            lease_until: call.sent_at + lease,
            refresh_at: now + lease / 4,
            refresh_inflight: false,
            refreshing: true,
        });
        let mut layout = Layout::new(geometry, info.seq_num.unwrap_or(0));
        layout.clone = super::clone_source::CloneSource::of(&info).map(Arc::new);
        self.layout = Some(layout);
        self.dirty = true;
        Ok(AdminReply::Info(Box::new(info)))
    }

    fn refreshed(&mut self, call: &MdsCall, payload: &[u8]) {
        let Some(f) = &mut self.file else { return };
        f.refresh_inflight = false;
        let Ok(r) = pb::ReFreshSessionResponse::decode(payload) else {
            return;
        };
        let Some(l) = &mut self.layout else { return };
        let old_gate = l.gate.clone();
        match pb::StatusCode::try_from(r.status_code) {
            Ok(pb::StatusCode::KOk) => {
                f.lease_until = call.sent_at + f.lease;
                if let Some(info) = r.file_info {
                    if info.id.is_some_and(|id| id != f.file_id) {
                        l.gate = IoGate::Closed(
                            format!(
                                "volume {} was replaced (inode {} is now {:?})",
                                f.path, f.file_id, info.id
                            )
                            .into(),
                        );
                        f.refreshing = false;
                    } else {
                        if let Some(sn) = info.seq_num {
                            if sn != l.seq_num {
                                l.seq_num = sn;
                                self.dirty = true;
                            }
                        }
                        if let Some(len) = info.length {
                            if len != l.geometry.length {
                                l.geometry.length = len;
                                self.dirty = true;
                            }
                        }
                        l.gate = IoGate::Open;
                    }
                } else {
                    l.gate = IoGate::Open;
                }
            }
            Ok(pb::StatusCode::KFileNotExists) => {
                l.gate = IoGate::Closed(
                    format!(
                        "volume {} no longer exists (RefreshSession: kFileNotExists)",
                        f.path
                    )
                    .into(),
                );
                f.refreshing = false;
            }
            Ok(pb::StatusCode::KOwnerAuthFail) => {
                l.gate = IoGate::Blocked(
                    "the MDS refused the owner (RefreshSession: kOwnerAuthFail)".into(),
                );
            }
            _ => {}
        }
        if l.gate != old_gate {
            self.dirty = true;
        }
    }

    fn segment_reply(&mut self, now: Instant, offset: u64, payload: &[u8]) -> Result<(), MdsError> {
        let method = "GetOrAllocateSegment";
        let bad = |d: String| MdsError::BadReply { method, detail: d };
        let r =
            pb::GetOrAllocateSegmentResponse::decode(payload).map_err(|e| bad(e.to_string()))?;
        let Some(l) = &mut self.layout else {
            return Ok(());
        };
        let g = l.geometry;
        let index = g.segment_index(offset);
        if r.status_code == pb::StatusCode::KSegmentNotAllocated as i32 {
            l.segments.insert(index, Arc::new(Segment::Unallocated));
            self.dirty = true;
            return Ok(());
        }
        if r.status_code != pb::StatusCode::KOk as i32 {
            return Err(MdsError::Status {
                method,
                status: r.status_code,
            });
        }
        let seg = r
            .page_file_segment
            .ok_or_else(|| bad("no pageFileSegment".into()))?;
        if seg.start_offset != offset
            || seg.chunk_size != g.chunk_size
            || seg.segment_size != g.segment_size
        {
            return Err(bad(format!(
                "segment at {} with chunk size {} and segment size {} does not match the request at {offset} ({}/{})",
                seg.start_offset, seg.chunk_size, seg.segment_size, g.chunk_size, g.segment_size
            )));
        }
        if seg.chunks.len() > g.chunks_per_segment() as usize {
            return Err(bad(format!(
                "{} chunks in a segment of {}",
                seg.chunks.len(),
                g.chunks_per_segment()
            )));
        }
        let pool = LogicalPoolId(seg.logical_pool_id);
        let chunks: Vec<(ChunkId, CopysetId)> = seg
            .chunks
            .iter()
            .map(|c| (ChunkId(c.chunk_id), CopysetId(c.copyset_id)))
            .collect();
        let mut unknown: Vec<CopysetId> = chunks
            .iter()
            .map(|c| c.1)
            .filter(|c| !l.copysets.contains_key(&CopysetKey { pool, copyset: *c }))
            .collect();
        unknown.sort();
        unknown.dedup();
        l.segments
            .insert(index, Arc::new(Segment::Allocated { pool, chunks }));
        self.dirty = true;
        if !unknown.is_empty() {
            self.need(now, LayoutNeed::Copysets { pool, ids: unknown });
        }
        Ok(())
    }

    fn copysets_reply(&mut self, pool: LogicalPoolId, payload: &[u8]) -> Result<(), MdsError> {
        let method = "GetChunkServerListInCopySets";
        let bad = |d: String| MdsError::BadReply { method, detail: d };
        let r = topology::GetChunkServerListInCopySetsResponse::decode(payload)
            .map_err(|e| bad(e.to_string()))?;
        if r.status_code != 0 {
            return Err(MdsError::Status {
                method,
                status: r.status_code,
            });
        }
        let Some(l) = &mut self.layout else {
            return Ok(());
        };
        for info in r.cs_info {
            let mut members = Vec::new();
            for loc in info.cs_locs {
                let ip = loc
                    .external_ip
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&loc.host_ip);
                let addr: SocketAddr = format!("{ip}:{}", loc.port).parse().map_err(|_| {
                    bad(format!(
                        "chunk server address {ip}:{} does not parse",
                        loc.port
                    ))
                })?;
                members.push(Member {
                    id: ChunkServerId(loc.chunk_server_id),
                    addr,
                });
            }
            if members.is_empty() {
                return Err(bad(format!(
                    "copyset {} has no chunk servers",
                    info.copyset_id
                )));
            }
            l.copysets.insert(
                CopysetKey {
                    pool,
                    copyset: CopysetId(info.copyset_id),
                },
                Arc::new(members),
            );
        }
        self.dirty = true;
        Ok(())
    }
}

/// MDS statuses worth retrying until the deadline (the MDS's storage had a hiccup).
fn retryable(r: &Result<AdminReply, MdsError>) -> bool {
    matches!(r, Err(e) if matches!(e.status(), Some(pb::StatusCode::KStorageError | pb::StatusCode::KInternalError)))
}

fn status_ok(method: &'static str, status: i32) -> Result<(), MdsError> {
    if status == pb::StatusCode::KOk as i32 {
        Ok(())
    } else {
        Err(MdsError::Status { method, status })
    }
}

type Decoded = Result<Result<AdminReply, MdsError>, String>;

fn decode_admin(req: &AdminRequest, payload: &[u8]) -> Decoded {
    let e = |x: prost::DecodeError| x.to_string();
    Ok(match req {
        AdminRequest::Create { .. } => status_ok(
            "CreateFile",
            pb::CreateFileResponse::decode(payload)
                .map_err(e)?
                .status_code,
        )
        .map(|()| AdminReply::Done),
        AdminRequest::Extend { .. } => status_ok(
            "ExtendFile",
            pb::ExtendFileResponse::decode(payload)
                .map_err(e)?
                .status_code,
        )
        .map(|()| AdminReply::Done),
        AdminRequest::Delete { .. } => status_ok(
            "DeleteFile",
            pb::DeleteFileResponse::decode(payload)
                .map_err(e)?
                .status_code,
        )
        .map(|()| AdminReply::Done),
        AdminRequest::Stat { .. } => {
            let r = pb::GetFileInfoResponse::decode(payload).map_err(e)?;
            status_ok("GetFileInfo", r.status_code).and_then(|()| {
                r.file_info
                    .map(|i| AdminReply::Info(Box::new(i)))
                    .ok_or(MdsError::BadReply {
                        method: "GetFileInfo",
                        detail: "no fileInfo".into(),
                    })
            })
        }
        AdminRequest::List { .. } => {
            let r = pb::ListDirResponse::decode(payload).map_err(e)?;
            status_ok("ListDir", r.status_code).map(|()| AdminReply::List(r.file_info))
        }
        AdminRequest::CreateClone { .. } => {
            let r = pb::CreateCloneFileResponse::decode(payload).map_err(e)?;
            status_ok("CreateCloneFile", r.status_code).map(|()| match r.file_info {
                Some(i) => AdminReply::Info(Box::new(i)),
                None => AdminReply::Done,
            })
        }
        AdminRequest::SetCloneStatus { .. } => status_ok(
            "SetCloneFileStatus",
            pb::SetCloneFileStatusResponse::decode(payload)
                .map_err(e)?
                .status_code,
        )
        .map(|()| AdminReply::Done),
        AdminRequest::Snapshot { .. } => {
            let r = pb::CreateSnapShotResponse::decode(payload).map_err(e)?;
            status_ok("CreateSnapShot", r.status_code).map(|()| match r.snap_shot_file_info {
                Some(i) => AdminReply::Info(Box::new(i)),
                None => AdminReply::Done,
            })
        }
    })
}

impl Req {
    fn method(&self) -> Method {
        let m = |method| Method {
            service: FS,
            method,
        };
        match self {
            Req::Admin(AdminRequest::Create { .. }) => m("CreateFile"),
            Req::Admin(AdminRequest::Extend { .. }) => m("ExtendFile"),
            Req::Admin(AdminRequest::Delete { .. }) => m("DeleteFile"),
            Req::Admin(AdminRequest::Stat { .. }) | Req::FileInfo { .. } => m("GetFileInfo"),
            Req::Admin(AdminRequest::List { .. }) => m("ListDir"),
            Req::Admin(AdminRequest::Snapshot { .. }) => m("CreateSnapShot"),
            Req::Admin(AdminRequest::CreateClone { .. }) => m("CreateCloneFile"),
            Req::Admin(AdminRequest::SetCloneStatus { .. }) => m("SetCloneFileStatus"),
            Req::Open { .. } => m("OpenFile"),
            Req::Close { .. } => m("CloseFile"),
            Req::Refresh { .. } => m("RefreshSession"),
            Req::Segment { .. } => m("GetOrAllocateSegment"),
            Req::Copysets { .. } => Method {
                service: TOPO,
                method: "GetChunkServerListInCopySets",
            },
        }
    }

    /// The protobuf payload, dated `date` (µs) and signed for `creds`.
    fn encode(&self, creds: &Credentials, date: u64, cfg: &ClientConfig) -> Vec<u8> {
        let owner = creds.owner.clone();
        let signature = Some(creds.signature(date));
        match self {
            Req::Admin(AdminRequest::Create { path, length }) => pb::CreateFileRequest {
                file_name: path.clone(),
                owner,
                file_type: pb::FileType::InodePagefile as i32,
                file_length: Some(*length),
                signature,
                date,
                stripe_unit: Some(0),
                stripe_count: Some(0),
                poolset: Some(String::new()),
            }
            .encode_to_vec(),
            Req::Admin(AdminRequest::Extend { path, new_length }) => pb::ExtendFileRequest {
                file_name: path.clone(),
                owner,
                new_size: *new_length,
                signature,
                date,
            }
            .encode_to_vec(),
            Req::Admin(AdminRequest::Delete { path, force }) => pb::DeleteFileRequest {
                file_name: path.clone(),
                owner,
                signature,
                date,
                file_id: None,
                force_delete: Some(*force),
            }
            .encode_to_vec(),
            Req::Admin(AdminRequest::Stat { path }) | Req::FileInfo { path } => {
                pb::GetFileInfoRequest {
                    file_name: path.clone(),
                    owner,
                    signature,
                    date,
                }
                .encode_to_vec()
            }
            Req::Admin(AdminRequest::List { path }) => pb::ListDirRequest {
                file_name: path.clone(),
                owner,
                signature,
                date,
            }
            .encode_to_vec(),
            Req::Admin(AdminRequest::CreateClone {
                path,
                source,
                length,
                chunk_size,
                seq,
            }) => pb::CreateCloneFileRequest {
                file_name: path.clone(),
                file_type: pb::FileType::InodePagefile as i32,
                file_length: *length,
                seq: *seq,
                chunksize: *chunk_size,
                owner,
                signature,
                date,
                clone_source: source.clone(),
                stripe_unit: None,
                stripe_count: None,
                poolset: None,
            }
            .encode_to_vec(),
            Req::Admin(AdminRequest::SetCloneStatus { path, status }) => {
                pb::SetCloneFileStatusRequest {
                    file_name: path.clone(),
                    file_id: None,
                    file_status: *status,
                    owner,
                    signature,
                    date,
                }
                .encode_to_vec()
            }
            Req::Admin(AdminRequest::Snapshot { path }) => pb::CreateSnapShotRequest {
                filename: path.clone(),
                owner,
                signature,
                date,
            }
            .encode_to_vec(),
            Req::Open { path } => pb::OpenFileRequest {
                file_name: path.clone(),
                owner,
                signature,
                date,
                client_version: Some(CLIENT_VERSION.into()),
            }
            .encode_to_vec(),
            Req::Close { path, session } => pb::CloseFileRequest {
                file_name: path.clone(),
                session_id: session.clone(),
                owner,
                signature,
                date,
                client_ip: Some(cfg.client_ip.clone()),
                client_port: Some(cfg.client_port),
            }
            .encode_to_vec(),
            Req::Refresh { path, session } => pb::ReFreshSessionRequest {
                file_name: path.clone(),
                session_id: session.clone(),
                owner,
                date,
                signature,
                client_version: Some(CLIENT_VERSION.into()),
                client_ip: Some(cfg.client_ip.clone()),
                client_port: Some(cfg.client_port),
            }
            .encode_to_vec(),
            Req::Segment {
                path,
                offset,
                allocate,
            } => pb::GetOrAllocateSegmentRequest {
                file_name: path.clone(),
                owner,
                offset: *offset,
                allocate_if_not_exist: *allocate,
                seq_num: None,
                signature,
                date,
                epoch: None,
            }
            .encode_to_vec(),
            Req::Copysets { pool, ids } => topology::GetChunkServerListInCopySetsRequest {
                logical_pool_id: pool.0,
                copyset_id: ids.iter().map(|c| c.0).collect(),
            }
            .encode_to_vec(),
        }
    }
}

/// An already-encoded protobuf, so `encode_request` can frame it.
#[derive(Clone, PartialEq, Default)]
struct RawMessage(Vec<u8>);

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawMessage({} bytes)", self.0.len())
    }
}

impl Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Encode-only: never decoded into; skip anything offered.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The name for an MDS status in log lines.
pub fn status_text(code: i32) -> String {
    mds_status_name(code)
}
