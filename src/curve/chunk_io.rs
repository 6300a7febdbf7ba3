//! The chunk I/O engine, sans-IO: splits reads and writes into chunk RPCs, sends them to copyset
//! leaders, and retries by the rules of curve-tgt.md §7.5 until each operation's deadline.
//!
//! One engine per shard: it owns its chunk-server connections, its in-flight table and its
//! leader cache, and reads the volume's [`Layout`] from an `Arc` snapshot the MDS session
//! publishes ([`ChunkIo::set_layout`]); what it lacks it asks for with [`ChunkIo::poll_need`].
//! Read data is copied once, from the receive bytes into the caller's buffer `R`; write data is
//! sent from ranges of the caller's buffer `W` (cheaply cloned, e.g. `Bytes` or an `Rc` buffer).
//!
//! Retry rules, by chunk-server status:
//! - REDIRECTED, COPYSET_NOTEXIST, connection failure or timeout: forget the leader, ask every
//!   member with CliService2.GetLeader (this Curve sends no `redirect` field), retry there;
//! - OVERLOAD: exponential backoff with ±10 % jitter;
//! - BACKWARD on a write: ask the MDS for the new sequence number, retry with it;
//! - CHUNK_NOTEXIST on a read: zeros; on a write, like INVALID_REQUEST, CHUNK_EXIST and
//!   EPOCH_TOO_OLD: fail at once;
//! - anything else: retry after a backoff.
//!
//! Each operation fails with [`IoError::Deadline`] (naming the last failure) once its deadline
//! passes; nothing retries forever.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::backoff::Jitter;
use super::config::ClientConfig;
use super::conn::{Action, Call, Conn, ConnState, Transmit, MAX_TOMBSTONES};
use super::error::IoError;
use super::frame::{encode_request, DecodeEvent, Method};
use super::ids::{CopysetKey, CorrelationId, OpId, PeerId};
use super::layout::{split, IoGate, Layout, LayoutNeed, Locate};
use super::proto::cs;

const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";
const CLI_SERVICE: &str = "curve.chunkserver.CliService2";

/// A finished read or write.
#[derive(Debug)]
pub struct IoCompletion<R> {
    /// The caller's id.
    pub op: OpId,
    /// A read's buffer, handed back whatever the outcome.
    pub buf: Option<R>,
    /// The outcome.
    pub result: Result<(), IoError>,
}

/// Counters for `tgtadm --op stat` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Chunk RPCs sent.
    pub rpcs: u64,
    /// GetLeader RPCs sent.
    pub get_leader_rpcs: u64,
    /// Retries after REDIRECTED or COPYSET_NOTEXIST.
    pub retries_redirect: u64,
    /// Retries after OVERLOAD.
    pub retries_overload: u64,
    /// Retries after BACKWARD.
    pub retries_backward: u64,
    /// Retries after a connection failure, timeout or brpc error.
    pub retries_rpc: u64,
    /// Retries after other statuses.
    pub retries_other: u64,
    /// Operations failed at their deadline.
    pub deadline_failures: u64,
    /// Replies that broke the protocol (connection dropped).
    pub bad_replies: u64,
    /// Chunk-server connections lost, dropped or refused.
    pub conns_lost: u64,
    /// Successful chunk RPC latency: bucket `i` counts replies that took [2^i, 2^(i+1)) µs
    /// (bucket 0 also takes faster ones, the last also slower ones).
    pub rpc_latency_us_log2: [u64; LATENCY_BUCKETS],
}

/// Buckets in [`IoStats::rpc_latency_us_log2`]: up to 2^23 µs (8 s, the largest RPC timeout).
pub const LATENCY_BUCKETS: usize = 24;

impl IoStats {
    fn record_latency(&mut self, d: Duration) {
        let us = d.as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.rpc_latency_us_log2[bucket] += 1;
    }

    /// The latency below which `permille`/1000 of successful RPCs finished, as a bucket's
    /// upper bound in µs (None before any RPC).
    pub fn latency_us_quantile(&self, permille: u64) -> Option<u64> {
        let total: u64 = self.rpc_latency_us_log2.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total * permille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, n) in self.rpc_latency_us_log2.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(1u64 << (i + 1));
            }
        }
        Some(1u64 << LATENCY_BUCKETS)
    }
}

#[derive(Debug)]
enum OpData<R, W> {
    Read(R),
    Write(W),
}

#[derive(Debug)]
struct Op<R, W> {
    data: OpData<R, W>,
    started: Instant,
    deadline: Instant,
    pieces_left: usize,
    pieces: Vec<PieceRef>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
struct PieceRef {
    slot: u32,
    gen: u32,
}

#[derive(Debug)]
struct Piece {
    op: OpId,
    file_offset: u64,
    op_offset: usize,
    len: u32,
    attempts: u32,
    rpc_timeouts: u32,
    last_error: String,
    at: Where,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Where {
    Ready,
    Parked,
    Delayed,
    AwaitLeader,
    InFlight {
        peer: PeerId,
        cid: CorrelationId,
        sn: u64,
        sent_at: Instant,
    },
}

/// A call on a chunk-server connection.
#[derive(Debug, Clone, Copy)]
enum CsTag {
    Chunk(PieceRef),
    GetLeader { key: CopysetKey, gen: u64 },
}

#[derive(Debug)]
struct LeaderQuery {
    gen: u64,
    outstanding: usize,
    waiting: Vec<PieceRef>,
    last_error: String,
}

/// A decoded reply.
#[derive(Debug)]
enum Reply {
    Chunk(cs::ChunkResponse),
    Leader(cs::GetLeaderResponse2),
}

/// A reply whose attachment is still arriving.
#[derive(Debug)]
struct PendingHead {
    tag: Option<CsTag>,
    reply: Result<Reply, String>,
    attachment_len: usize,
}

fn decode_reply(
    tag: Option<CsTag>,
    meta: &super::proto::RpcMeta,
    payload: &[u8],
) -> Result<Reply, String> {
    if let Some(r) = meta
        .response
        .as_ref()
        .filter(|r| r.error_code.unwrap_or(0) != 0)
    {
        return Err(format!(
            "brpc error {}: {}",
            r.error_code.unwrap_or(0),
            r.error_text.clone().unwrap_or_default()
        ));
    }
    match tag {
        Some(CsTag::GetLeader { .. }) => cs::GetLeaderResponse2::decode(payload)
            .map(Reply::Leader)
            .map_err(|e| format!("GetLeaderResponse2 does not decode: {e}")),
        _ => cs::ChunkResponse::decode(payload)
            .map(Reply::Chunk)
            .map_err(|e| format!("ChunkResponse does not decode: {e}")),
    }
}

/// Where the current frame's attachment goes.
#[derive(Debug, Clone, Copy)]
enum Sink {
    Discard,
    Read {
        piece: PieceRef,
        at: usize,
        end: usize,
    },
}

/// One shard's chunk I/O engine for one volume.
#[derive(Debug)]
pub struct ChunkIo<R, W> {
    cfg: ClientConfig,
    layout: Option<Arc<Layout>>,
    peer_base: u32,
    conns: Vec<Conn<CsTag, W>>,
    sinks: Vec<Sink>,
    heads: Vec<Option<PendingHead>>,
    by_addr: HashMap<SocketAddr, usize>,
    next_cid: u64,
    ops: HashMap<OpId, Op<R, W>>,
    slots: Vec<(u32, Option<Piece>)>,
    free: Vec<u32>,
    ready: VecDeque<PieceRef>,
    parked: Vec<PieceRef>,
    delayed: Vec<(Instant, PieceRef)>,
    leaders: HashMap<CopysetKey, SocketAddr>,
    queries: HashMap<CopysetKey, LeaderQuery>,
    next_query_gen: u64,
    needs: VecDeque<LayoutNeed>,
    needs_pending: HashSet<LayoutNeed>,
    inflight_rpcs: usize,
    actions: VecDeque<Action>,
    transmits: VecDeque<Transmit<W>>,
    completions: VecDeque<IoCompletion<R>>,
    jitter: Jitter,
    stats: IoStats,
}

impl<R: AsMut<[u8]>, W: AsRef<[u8]> + Clone> ChunkIo<R, W> {
    /// An engine with no layout yet; its peers are numbered from `peer_base`.
    pub fn new(cfg: ClientConfig, peer_base: u32) -> Self {
        ChunkIo {
            cfg,
            layout: None,
            peer_base,
            conns: Vec::new(),
            sinks: Vec::new(),
            heads: Vec::new(),
            by_addr: HashMap::new(),
            next_cid: 1,
            ops: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            parked: Vec::new(),
            delayed: Vec::new(),
            leaders: HashMap::new(),
            queries: HashMap::new(),
            next_query_gen: 1,
            needs: VecDeque::new(),
            needs_pending: HashSet::new(),
            inflight_rpcs: 0,
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
            completions: VecDeque::new(),
            jitter: Jitter::new(),
            stats: IoStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }

    /// The layout snapshot in use.
    pub fn layout(&self) -> Option<&Arc<Layout>> {
        self.layout.as_ref()
    }

    /// True if `peer` is one of this engine's chunk-server connections.
    pub fn owns_peer(&self, peer: PeerId) -> bool {
        peer.0 >= self.peer_base && ((peer.0 - self.peer_base) as usize) < self.conns.len()
    }

    /// Operations in progress.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Installs a newer layout snapshot and retries what waited for it.
    pub fn set_layout(&mut self, now: Instant, layout: Arc<Layout>) {
        if self
            .layout
            .as_ref()
            .is_some_and(|l| l.version >= layout.version)
        {
            return;
        }
        // Fail at once what a closed session can never serve.
        let closed = matches!(&layout.gate, IoGate::Closed(_));
        self.layout = Some(layout);
        self.needs_pending.clear();
        for p in std::mem::take(&mut self.parked) {
            self.set_where(p, Where::Ready);
            self.ready.push_back(p);
        }
        if closed {
            if let Some(IoGate::Closed(why)) = self.layout.as_ref().map(|l| l.gate.clone()) {
                let ids: Vec<OpId> = self.ops.keys().copied().collect();
                for id in ids {
                    self.fail_op(id, IoError::SessionEnded(why.to_string()));
                }
            }
        }
        self.pump(now);
    }

    /// The MDS could not supply `need`: what waited on it backs off and tries again.
    pub fn layout_failed(&mut self, now: Instant, need: &LayoutNeed, why: &str) {
        self.needs_pending.remove(need);
        for p in std::mem::take(&mut self.parked) {
            if let Some(piece) = self.piece_mut(p) {
                piece.last_error = why.to_string();
                piece.attempts += 1;
            }
            self.delay(now, p, false);
        }
        self.pump(now);
    }

    /// Starts a read of `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&mut self, now: Instant, op: OpId, offset: u64, buf: R) {
        self.submit(now, op, offset, OpData::Read(buf));
    }

    /// Starts a write of `data` at `offset`.
    pub fn write(&mut self, now: Instant, op: OpId, offset: u64, data: W) {
        self.submit(now, op, offset, OpData::Write(data));
    }

    /// Cancels an operation: it completes at once with [`IoError::Cancelled`]; RPCs already
    /// sent are left to finish and their replies ignored.
    pub fn cancel(&mut self, op: OpId) {
        self.fail_op(op, IoError::Cancelled);
    }

    /// A connection to open or close.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<W>> {
        self.transmits.pop_front()
    }

    /// A finished operation.
    pub fn poll_completion(&mut self) -> Option<IoCompletion<R>> {
        self.completions.pop_front()
    }

    /// True if a completion is waiting.
    pub fn has_completion(&self) -> bool {
        !self.completions.is_empty()
    }

    /// Something to ask the MDS session for.
    pub fn poll_need(&mut self) -> Option<LayoutNeed> {
        self.needs.pop_front()
    }

    /// When `on_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.ops.values().map(|o| o.deadline).min();
        let b = self.delayed.iter().map(|d| d.0).min();
        let c = self.conns.iter().filter_map(|c| c.next_deadline()).min();
        [a, b, c].into_iter().flatten().min()
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
        self.pump(now);
    }

    /// The driver lost (or could not open) `peer`'s connection.
    pub fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str) {
        let Some(i) = self.index(peer) else { return };
        if matches!(self.conns[i].state, ConnState::Idle { .. }) {
            return;
        }
        let why = format!("chunk server {}: {reason}", self.conns[i].addr);
        self.drop_conn(now, i, &why, false);
        self.pump(now);
    }

    /// Bytes arrived from `peer`.
    pub fn on_recv(&mut self, now: Instant, peer: PeerId, mut bytes: &[u8]) {
        let Some(i) = self.index(peer) else { return };
        if self.conns[i].state != ConnState::Connected {
            return;
        }
        loop {
            let ev = match self.conns[i].decoder.decode(&mut bytes) {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    self.stats.bad_replies += 1;
                    let why = format!("chunk server {} sent a bad frame: {e}", self.conns[i].addr);
                    self.drop_conn(now, i, &why, true);
                    break;
                }
            };
            match ev {
                DecodeEvent::Head(h) => {
                    let tag = match self.conns[i].complete(h.correlation_id) {
                        Ok(t) => t,
                        Err(_) => {
                            self.stats.bad_replies += 1;
                            let why = format!(
                                "chunk server {} replied to unknown correlation id {}",
                                self.conns[i].addr, h.correlation_id
                            );
                            self.drop_conn(now, i, &why, true);
                            break;
                        }
                    };
                    if matches!(tag, Some(CsTag::Chunk(_))) {
                        self.inflight_rpcs = self.inflight_rpcs.saturating_sub(1);
                    }
                    let reply = decode_reply(tag, &h.meta, &h.payload);
                    // Route the attachment straight into the read's buffer when this is the
                    // successful reply of a live read piece carrying exactly the asked length.
                    self.sinks[i] = Sink::Discard;
                    if let (Some(CsTag::Chunk(p)), Ok(Reply::Chunk(r))) = (tag, &reply) {
                        if r.status == cs::ChunkOpStatus::Success as i32 {
                            if let Some(piece) = self.piece(p) {
                                let is_read = matches!(
                                    self.ops.get(&piece.op).map(|o| &o.data),
                                    Some(OpData::Read(_))
                                );
                                if is_read && h.attachment_len == piece.len as usize {
                                    self.sinks[i] = Sink::Read {
                                        piece: p,
                                        at: piece.op_offset,
                                        end: piece.op_offset + piece.len as usize,
                                    };
                                }
                            }
                        }
                    }
                    self.heads[i] = Some(PendingHead {
                        tag,
                        reply,
                        attachment_len: h.attachment_len,
                    });
                }
                DecodeEvent::Attachment(a) => {
                    if let Sink::Read { piece, at, end } = self.sinks[i] {
                        let n = a.len().min(end - at);
                        if let Some(op) = self.piece(piece).map(|p| p.op) {
                            if let Some(Op {
                                data: OpData::Read(buf),
                                ..
                            }) = self.ops.get_mut(&op)
                            {
                                buf.as_mut()[at..at + n].copy_from_slice(&a[..n]);
                            }
                        }
                        self.sinks[i] = Sink::Read {
                            piece,
                            at: at + n,
                            end,
                        };
                    }
                }
                DecodeEvent::End => {
                    let sink = std::mem::replace(&mut self.sinks[i], Sink::Discard);
                    let Some(head) = self.heads[i].take() else {
                        continue;
                    };
                    match head.tag {
                        None => {}
                        Some(CsTag::Chunk(p)) => {
                            let filled = matches!(sink, Sink::Read { .. });
                            self.chunk_reply(now, p, i, head.reply, head.attachment_len, filled);
                        }
                        Some(CsTag::GetLeader { key, gen }) => {
                            let r = head.reply.and_then(|r| match r {
                                Reply::Leader(l) => Ok(l),
                                Reply::Chunk(_) => {
                                    Err("GetLeader reply of the wrong type".to_string())
                                }
                            });
                            self.leader_reply(now, key, gen, i, r);
                        }
                    }
                }
            }
        }
        if self.conns[i].tombstones > MAX_TOMBSTONES {
            let why = format!(
                "chunk server {}: too many abandoned calls",
                self.conns[i].addr
            );
            self.drop_conn(now, i, &why, true);
        }
        self.pump(now);
    }

    /// Time passed: RPC timeouts, backoffs and operation deadlines.
    pub fn on_timeout(&mut self, now: Instant) {
        // Operation deadlines first: an op past its deadline fails with the last reason.
        let late: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in late {
            let Some(op) = self.ops.get(&id) else {
                continue;
            };
            let last = op
                .pieces
                .iter()
                .filter_map(|p| self.piece(*p))
                .map(|p| p.last_error.clone())
                .find(|e| !e.is_empty())
                .unwrap_or_else(|| "no reply in time".into());
            let elapsed_ms = now.saturating_duration_since(op.started).as_millis() as u64;
            self.stats.deadline_failures += 1;
            self.fail_op(id, IoError::Deadline { elapsed_ms, last });
        }
        for i in 0..self.conns.len() {
            for cid in self.conns[i].expired(now) {
                let addr = self.conns[i].addr;
                match self.conns[i].abandon(cid) {
                    Some(CsTag::Chunk(p)) => {
                        self.inflight_rpcs = self.inflight_rpcs.saturating_sub(1);
                        self.stats.retries_rpc += 1;
                        if let Some(piece) = self.piece_mut(p) {
                            piece.rpc_timeouts += 1;
                            piece.last_error =
                                format!("chunk server {addr} did not answer in time");
                        }
                        self.forget_leader_at(addr);
                        self.retry_via_leader(now, p);
                    }
                    Some(CsTag::GetLeader { key, gen }) => {
                        self.leader_reply(
                            now,
                            key,
                            gen,
                            i,
                            Err(format!("GetLeader to {addr} timed out")),
                        );
                    }
                    None => {}
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, p) in due {
            if self.piece(p).is_some() {
                self.set_where(p, Where::Ready);
                self.ready.push_back(p);
            }
        }
        self.pump(now);
    }
}

/// Parses braft's `ip:port:index` (or `ip:port`) peer address.
pub fn parse_peer_address(s: &str) -> Option<SocketAddr> {
    let mut parts = s.rsplitn(3, ':').collect::<Vec<_>>();
    parts.reverse();
    match parts.as_slice() {
        [ip, port, idx] => {
            idx.parse::<u32>().ok()?;
            format!("{ip}:{port}").parse().ok()
        }
        [ip, port] => format!("{ip}:{port}").parse().ok(),
        _ => None,
    }
}

impl<R: AsMut<[u8]>, W: AsRef<[u8]> + Clone> ChunkIo<R, W> {
    fn index(&self, peer: PeerId) -> Option<usize> {
        self.owns_peer(peer)
            .then(|| (peer.0 - self.peer_base) as usize)
    }

    fn piece(&self, p: PieceRef) -> Option<&Piece> {
        match self.slots.get(p.slot as usize) {
            Some((gen, Some(piece))) if *gen == p.gen => Some(piece),
            _ => None,
        }
    }

    fn piece_mut(&mut self, p: PieceRef) -> Option<&mut Piece> {
        match self.slots.get_mut(p.slot as usize) {
            Some((gen, Some(piece))) if *gen == p.gen => Some(piece),
            _ => None,
        }
    }

    fn set_where(&mut self, p: PieceRef, at: Where) {
        if let Some(piece) = self.piece_mut(p) {
            piece.at = at;
        }
    }

    fn alloc_piece(&mut self, piece: Piece) -> PieceRef {
        if let Some(slot) = self.free.pop() {
            let e = &mut self.slots[slot as usize];
            e.0 = e.0.wrapping_add(1);
            e.1 = Some(piece);
            PieceRef { slot, gen: e.0 }
        } else {
            self.slots.push((0, Some(piece)));
            PieceRef {
                slot: (self.slots.len() - 1) as u32,
                gen: 0,
            }
        }
    }

    fn free_piece(&mut self, p: PieceRef) -> Option<Piece> {
        let e = self.slots.get_mut(p.slot as usize)?;
        if e.0 != p.gen {
            return None;
        }
        let piece = e.1.take()?;
        e.0 = e.0.wrapping_add(1);
        self.free.push(p.slot);
        Some(piece)
    }

    fn submit(&mut self, now: Instant, id: OpId, offset: u64, data: OpData<R, W>) {
        let mut data = data;
        let len = match &mut data {
            OpData::Read(b) => b.as_mut().len(),
            OpData::Write(w) => w.as_ref().len(),
        };
        let reject = |s: &mut Self, data: OpData<R, W>, e: IoError| {
            let buf = match data {
                OpData::Read(b) => Some(b),
                OpData::Write(_) => None,
            };
            s.completions.push_back(IoCompletion {
                op: id,
                buf,
                result: Err(e),
            });
        };
        if self.ops.contains_key(&id) {
            return reject(self, data, IoError::DuplicateOp(id.0));
        }
        let Some(layout) = self.layout.clone() else {
            return reject(self, data, IoError::NotOpen);
        };
        if let IoGate::Closed(why) = &layout.gate {
            return reject(self, data, IoError::SessionEnded(why.to_string()));
        }
        let g = layout.geometry;
        let block = u64::from(g.block_size);
        if offset % block != 0 || len as u64 % block != 0 {
            return reject(
                self,
                data,
                IoError::NotAligned {
                    offset,
                    len,
                    block_size: g.block_size,
                },
            );
        }
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > g.length)
        {
            return reject(
                self,
                data,
                IoError::OutOfRange {
                    offset,
                    len,
                    length: g.length,
                },
            );
        }
        if len == 0 {
            let buf = match data {
                OpData::Read(b) => Some(b),
                OpData::Write(_) => None,
            };
            self.completions.push_back(IoCompletion {
                op: id,
                buf,
                result: Ok(()),
            });
            return;
        }
        let spans = split(g.chunk_size, offset, len, self.cfg.max_rpc_bytes.max(4096));
        let mut refs = Vec::with_capacity(spans.len());
        for s in &spans {
            let r = self.alloc_piece(Piece {
                op: id,
                file_offset: s.file_offset,
                op_offset: s.op_offset,
                len: s.len,
                attempts: 0,
                rpc_timeouts: 0,
                last_error: String::new(),
                at: Where::Ready,
            });
            refs.push(r);
            self.ready.push_back(r);
        }
        self.ops.insert(
            id,
            Op {
                data,
                started: now,
                deadline: now + self.cfg.op_deadline,
                pieces_left: refs.len(),
                pieces: refs,
            },
        );
        self.pump(now);
    }

    fn fail_op(&mut self, id: OpId, err: IoError) {
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        for p in &op.pieces {
            if let Some(piece) = self.free_piece(*p) {
                if let Where::InFlight { peer, cid, .. } = piece.at {
                    if let Some(i) = self.index(peer) {
                        if self.conns[i].abandon(cid).is_some() {
                            self.inflight_rpcs = self.inflight_rpcs.saturating_sub(1);
                        }
                    }
                }
            }
        }
        let buf = match op.data {
            OpData::Read(b) => Some(b),
            OpData::Write(_) => None,
        };
        self.completions.push_back(IoCompletion {
            op: id,
            buf,
            result: Err(err),
        });
    }

    fn complete_piece(&mut self, p: PieceRef) {
        let Some(piece) = self.free_piece(p) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&piece.op) else {
            return;
        };
        op.pieces_left -= 1;
        if op.pieces_left == 0 {
            if let Some(op_done) = self.ops.remove(&piece.op) {
                let buf = match op_done.data {
                    OpData::Read(b) => Some(b),
                    OpData::Write(_) => None,
                };
                self.completions.push_back(IoCompletion {
                    op: piece.op,
                    buf,
                    result: Ok(()),
                });
            }
        }
    }

    fn zero_fill(&mut self, p: PieceRef) {
        let Some(piece) = self.piece(p) else { return };
        let (op, at, len) = (piece.op, piece.op_offset, piece.len as usize);
        if let Some(Op {
            data: OpData::Read(buf),
            ..
        }) = self.ops.get_mut(&op)
        {
            buf.as_mut()[at..at + len].fill(0);
        }
        self.complete_piece(p);
    }

    fn need(&mut self, n: LayoutNeed) {
        if self.needs_pending.insert(n.clone()) {
            self.needs.push_back(n);
        }
    }

    fn park(&mut self, p: PieceRef) {
        self.set_where(p, Where::Parked);
        self.parked.push(p);
    }

    /// Retries a piece after a backoff (OVERLOAD: up to `retry_interval_max`; others: 1 s).
    fn delay(&mut self, now: Instant, p: PieceRef, overload: bool) {
        let Some(piece) = self.piece(p) else { return };
        let cap = if overload {
            self.cfg.retry_interval_max
        } else {
            Duration::from_secs(1)
        };
        let d = self
            .jitter
            .backoff(self.cfg.retry_interval, cap, piece.attempts.max(1));
        self.set_where(p, Where::Delayed);
        self.delayed.push((now + d, p));
    }

    /// Retries a piece once its copyset's leader is known again: at once the first few times,
    /// then with a backoff so a dead leader that survivors still name does not spin.
    fn retry_via_leader(&mut self, now: Instant, p: PieceRef) {
        let Some(piece) = self.piece_mut(p) else {
            return;
        };
        piece.attempts += 1;
        if piece.attempts > 3 {
            self.delay(now, p, false);
        } else {
            self.set_where(p, Where::Ready);
            self.ready.push_back(p);
        }
    }

    fn forget_leader_at(&mut self, addr: SocketAddr) {
        self.leaders.retain(|_, a| *a != addr);
    }

    fn ensure_conn(&mut self, addr: SocketAddr) -> usize {
        if let Some(i) = self.by_addr.get(&addr) {
            return *i;
        }
        self.conns.push(Conn::new(addr, self.cfg.frame_limits));
        self.sinks.push(Sink::Discard);
        self.heads.push(None);
        let i = self.conns.len() - 1;
        self.by_addr.insert(addr, i);
        i
    }

    /// The hold-off end if the connection may not be (re)opened now.
    fn held_off(&self, i: usize, now: Instant) -> Option<Instant> {
        match self.conns[i].state {
            ConnState::Idle {
                retry_after: Some(t),
            } if t > now => Some(t),
            _ => None,
        }
    }

    fn take_cid(&mut self) -> CorrelationId {
        let cid = CorrelationId(self.next_cid);
        self.next_cid += 1;
        cid
    }

    /// Queues a call's frame (connecting first if needed) and records it as in flight.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: Instant,
        i: usize,
        cid: CorrelationId,
        tag: CsTag,
        head: Vec<u8>,
        attachment: Option<(W, std::ops::Range<usize>)>,
        timeout: Duration,
    ) -> PeerId {
        let peer = PeerId(self.peer_base + i as u32);
        let t = Transmit {
            peer,
            head,
            attachment,
        };
        match self.conns[i].state {
            ConnState::Connected => self.transmits.push_back(t),
            ConnState::Connecting => self.conns[i].unsent.push(t),
            ConnState::Idle { .. } => {
                self.conns[i].state = ConnState::Connecting;
                self.conns[i].unsent.push(t);
                self.actions.push_back(Action::Connect {
                    peer,
                    addr: self.conns[i].addr,
                });
            }
        }
        self.conns[i].calls.insert(
            cid,
            Call {
                tag: Some(tag),
                deadline: now + timeout,
            },
        );
        peer
    }

    fn drop_conn(&mut self, now: Instant, i: usize, why: &str, close: bool) {
        let peer = PeerId(self.peer_base + i as u32);
        let addr = self.conns[i].addr;
        self.stats.conns_lost += 1;
        let mut tags = self.conns[i].reset(
            self.cfg.frame_limits,
            Some(now + self.cfg.reconnect_holdoff),
        );
        self.sinks[i] = Sink::Discard;
        // A reply cut off mid-attachment was already taken off the call table: retry it too.
        if let Some(PendingHead { tag: Some(tag), .. }) = self.heads[i].take() {
            if let CsTag::Chunk(_) = tag {
                self.inflight_rpcs += 1; // undone below with the other lost calls
            }
            tags.push(tag);
        }
        self.transmits.retain(|t| t.peer != peer);
        if close {
            self.actions.push_back(Action::Close {
                peer,
                reason: why.to_string(),
            });
        }
        self.forget_leader_at(addr);
        for tag in tags {
            match tag {
                CsTag::Chunk(p) => {
                    self.inflight_rpcs = self.inflight_rpcs.saturating_sub(1);
                    self.stats.retries_rpc += 1;
                    if let Some(piece) = self.piece_mut(p) {
                        piece.last_error = why.to_string();
                    }
                    self.retry_via_leader(now, p);
                }
                CsTag::GetLeader { key, gen } => {
                    self.leader_reply(now, key, gen, i, Err(why.to_string()))
                }
            }
        }
    }

    fn pump(&mut self, now: Instant) {
        while let Some(p) = self.ready.pop_front() {
            match self.piece(p) {
                Some(piece) if piece.at == Where::Ready => {}
                _ => continue,
            }
            if self.inflight_rpcs >= self.cfg.max_inflight_rpcs {
                self.ready.push_front(p);
                break;
            }
            self.dispatch(now, p);
        }
    }

    fn dispatch(&mut self, now: Instant, p: PieceRef) {
        let Some(layout) = self.layout.clone() else {
            return self.park(p);
        };
        let Some(piece) = self.piece(p) else { return };
        let (op_id, file_offset, op_offset, len) =
            (piece.op, piece.file_offset, piece.op_offset, piece.len);
        let Some(op) = self.ops.get(&op_id) else {
            self.free_piece(p);
            return;
        };
        let is_write = matches!(op.data, OpData::Write(_));
        let write_data = match &op.data {
            OpData::Write(w) => Some(w.clone()),
            OpData::Read(_) => None,
        };
        match &layout.gate {
            IoGate::Open => {}
            IoGate::Blocked(why) => {
                if let Some(piece) = self.piece_mut(p) {
                    piece.last_error = why.to_string();
                }
                return self.park(p);
            }
            IoGate::Closed(why) => {
                return self.fail_op(op_id, IoError::SessionEnded(why.to_string()))
            }
        }
        let g = layout.geometry;
        let chunk_start = file_offset - file_offset % u64::from(g.chunk_size);
        // A lazy clone's chunk: named with its source, and read through the chunk servers even
        // where the clone's segment is not allocated yet (clone_source.rs).
        let source = layout.clone.as_ref().and_then(|c| c.for_chunk(chunk_start));
        let (chunk, key) = match layout.locate(file_offset) {
            Locate::SegmentUnknown => {
                self.need(LayoutNeed::Segment {
                    index: g.segment_index(file_offset),
                    allocate: is_write || source.is_some(),
                });
                return self.park(p);
            }
            Locate::Unallocated if !is_write && source.is_none() => return self.zero_fill(p),
            Locate::Unallocated => {
                self.need(LayoutNeed::Segment {
                    index: g.segment_index(file_offset),
                    allocate: true,
                });
                return self.park(p);
            }
            Locate::SegmentShort => {
                return self.fail_op(
                    op_id,
                    IoError::Refused(format!(
                        "the MDS segment map has no chunk for offset {file_offset}"
                    )),
                );
            }
            Locate::Chunk { chunk, key } => (chunk, key),
        };
        if !layout.copysets.contains_key(&key) {
            self.need(LayoutNeed::Copysets {
                pool: key.pool,
                ids: vec![key.copyset],
            });
            return self.park(p);
        }
        let Some(leader) = self.leaders.get(&key).copied() else {
            self.set_where(p, Where::AwaitLeader);
            return self.ask_leader(now, key, p, &layout);
        };
        let i = self.ensure_conn(leader);
        if let Some(until) = self.held_off(i, now) {
            self.leaders.remove(&key);
            if let Some(piece) = self.piece_mut(p) {
                piece.last_error = format!("chunk server {leader} is unreachable");
            }
            self.set_where(p, Where::Delayed);
            self.delayed.push((until, p));
            return;
        }
        let sn = layout.seq_num;
        let req = cs::ChunkRequest {
            op_type: if is_write {
                cs::ChunkOpType::ChunkOpWrite
            } else {
                cs::ChunkOpType::ChunkOpRead
            } as i32,
            logic_pool_id: key.pool.0,
            copyset_id: key.copyset.0,
            chunk_id: chunk.0,
            offset: Some((file_offset % u64::from(g.chunk_size)) as u32),
            size: Some(len),
            sn: is_write.then_some(sn),
            file_id: is_write.then_some(g.file_id),
            clone_file_offset: source.as_ref().map(|s| s.1),
            clone_file_source: source.map(|s| s.0),
            ..Default::default()
        };
        let attachment = write_data.map(|w| (w, op_offset..op_offset + len as usize));
        let method = Method {
            service: CHUNK_SERVICE,
            method: if is_write { "WriteChunk" } else { "ReadChunk" },
        };
        let timeouts = self.piece(p).map_or(0, |x| x.rpc_timeouts);
        let timeout = self
            .cfg
            .rpc_timeout
            .saturating_mul(1 << timeouts.min(8))
            .min(self.cfg.rpc_timeout_max);
        let cid = self.take_cid();
        let head = encode_request(
            cid,
            method,
            None,
            &req,
            if is_write { len as usize } else { 0 },
        );
        let peer = self.send(now, i, cid, CsTag::Chunk(p), head, attachment, timeout);
        self.set_where(
            p,
            Where::InFlight {
                peer,
                cid,
                sn,
                sent_at: now,
            },
        );
        self.inflight_rpcs += 1;
        self.stats.rpcs += 1;
    }

    fn ask_leader(&mut self, now: Instant, key: CopysetKey, p: PieceRef, layout: &Layout) {
        if let Some(q) = self.queries.get_mut(&key) {
            q.waiting.push(p);
            return;
        }
        let members = layout.copysets.get(&key).cloned().unwrap_or_default();
        let gen = self.next_query_gen;
        self.next_query_gen += 1;
        self.queries.insert(
            key,
            LeaderQuery {
                gen,
                outstanding: 0,
                waiting: vec![p],
                last_error: String::new(),
            },
        );
        let mut sent = 0;
        for m in members.iter() {
            let i = self.ensure_conn(m.addr);
            if self.held_off(i, now).is_some() {
                continue;
            }
            let req = cs::GetLeaderRequest2 {
                logic_pool_id: key.pool.0,
                copyset_id: key.copyset.0,
                peer: None,
            };
            let cid = self.take_cid();
            let head = encode_request(
                cid,
                Method {
                    service: CLI_SERVICE,
                    method: "GetLeader",
                },
                None,
                &req,
                0,
            );
            self.send(
                now,
                i,
                cid,
                CsTag::GetLeader { key, gen },
                head,
                None,
                self.cfg.rpc_timeout,
            );
            self.stats.get_leader_rpcs += 1;
            sent += 1;
        }
        if let Some(q) = self.queries.get_mut(&key) {
            q.outstanding = sent;
            if sent == 0 {
                q.last_error = format!("no member of copyset {key} is reachable");
            }
        }
        if sent == 0 {
            self.end_query(now, key);
        }
    }

    fn leader_reply(
        &mut self,
        now: Instant,
        key: CopysetKey,
        gen: u64,
        _i: usize,
        r: Result<cs::GetLeaderResponse2, String>,
    ) {
        let Some(q) = self.queries.get_mut(&key) else {
            return;
        };
        if q.gen != gen {
            return;
        }
        q.outstanding = q.outstanding.saturating_sub(1);
        let members = self
            .layout
            .as_ref()
            .and_then(|l| l.copysets.get(&key).cloned())
            .unwrap_or_default();
        let found = match r {
            Ok(resp) => {
                let addr = resp.leader.address.as_deref().unwrap_or("");
                match parse_peer_address(addr) {
                    Some(a) if members.iter().any(|m| m.addr == a) => Some(a),
                    Some(a) => {
                        q.last_error =
                            format!("GetLeader named {a}, not a member of copyset {key}");
                        None
                    }
                    None if addr.is_empty() => {
                        q.last_error = format!("copyset {key} has no leader now");
                        None
                    }
                    None => {
                        q.last_error = format!("GetLeader named an unparsable leader {addr:?}");
                        None
                    }
                }
            }
            Err(e) => {
                q.last_error = e;
                None
            }
        };
        if let Some(a) = found {
            self.leaders.insert(key, a);
            if let Some(q) = self.queries.remove(&key) {
                for p in q.waiting {
                    if self.piece(p).is_some_and(|x| x.at == Where::AwaitLeader) {
                        self.set_where(p, Where::Ready);
                        self.ready.push_back(p);
                    }
                }
            }
            self.pump(now);
        } else if self.queries.get(&key).is_some_and(|q| q.outstanding == 0) {
            self.end_query(now, key);
        }
    }

    /// A leader query found nobody: its pieces back off and try again.
    fn end_query(&mut self, now: Instant, key: CopysetKey) {
        let Some(q) = self.queries.remove(&key) else {
            return;
        };
        for p in q.waiting {
            let Some(piece) = self.piece_mut(p) else {
                continue;
            };
            if piece.at != Where::AwaitLeader {
                continue;
            }
            piece.attempts += 1;
            piece.last_error = format!("no leader for copyset {key}: {}", q.last_error);
            self.delay(now, p, false);
        }
    }

    fn chunk_reply(
        &mut self,
        now: Instant,
        p: PieceRef,
        i: usize,
        reply: Result<Reply, String>,
        attachment_len: usize,
        filled: bool,
    ) {
        let Some(piece) = self.piece(p) else { return };
        let Where::InFlight { sn, sent_at, .. } = piece.at else {
            return;
        };
        let (op_id, file_offset, len) = (piece.op, piece.file_offset, piece.len);
        let Some(op) = self.ops.get(&op_id) else {
            self.free_piece(p);
            return;
        };
        let is_write = matches!(op.data, OpData::Write(_));
        let addr = self.conns[i].addr;
        let r = match reply {
            Ok(Reply::Chunk(r)) => r,
            Ok(Reply::Leader(_)) | Err(_) => {
                let why = match reply {
                    Err(e) => e,
                    Ok(_) => "reply of the wrong type".into(),
                };
                self.stats.retries_rpc += 1;
                if let Some(piece) = self.piece_mut(p) {
                    piece.last_error = format!("chunk server {addr}: {why}");
                }
                self.forget_leader_at(addr);
                return self.retry_via_leader(now, p);
            }
        };
        let key = match self.layout.as_ref().map(|l| l.locate(file_offset)) {
            Some(Locate::Chunk { key, .. }) => Some(key),
            _ => None,
        };
        let status = cs::ChunkOpStatus::try_from(r.status);
        let name = status
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| format!("status {}", r.status));
        let set_err = |s: &mut Self, e: String| {
            if let Some(piece) = s.piece_mut(p) {
                piece.last_error = e;
            }
        };
        use cs::ChunkOpStatus as S;
        match status {
            Ok(S::Success) => {
                if !is_write && !filled {
                    self.stats.bad_replies += 1;
                    set_err(self, format!("chunk server {addr} answered a {len}-byte read with {attachment_len} bytes"));
                    if let Some(piece) = self.piece_mut(p) {
                        piece.attempts += 1;
                    }
                    return self.delay(now, p, false);
                }
                self.stats
                    .record_latency(now.saturating_duration_since(sent_at));
                self.complete_piece(p);
            }
            Ok(S::Redirected) | Ok(S::CopysetNotexist) => {
                self.stats.retries_redirect += 1;
                set_err(self, format!("chunk server {addr} answered {name}"));
                let target = r.redirect.as_deref().and_then(parse_peer_address);
                let members = key
                    .and_then(|k| {
                        self.layout
                            .as_ref()
                            .and_then(|l| l.copysets.get(&k).cloned())
                    })
                    .unwrap_or_default();
                match (key, target) {
                    (Some(k), Some(a)) if a != addr && members.iter().any(|m| m.addr == a) => {
                        self.leaders.insert(k, a);
                        // Followed at once the first time; two members that keep naming each
                        // other get backoff instead of one RPC per round trip.
                        let again = self.piece_mut(p).is_some_and(|piece| {
                            piece.attempts += 1;
                            piece.attempts > 1
                        });
                        if again {
                            self.delay(now, p, false);
                        } else {
                            self.set_where(p, Where::Ready);
                            self.ready.push_back(p);
                        }
                    }
                    (Some(k), _) => {
                        if self.leaders.get(&k) == Some(&addr) {
                            self.leaders.remove(&k);
                        }
                        self.retry_via_leader(now, p);
                    }
                    (None, _) => self.retry_via_leader(now, p),
                }
            }
            Ok(S::ChunkNotexist) if !is_write => self.zero_fill(p),
            Ok(S::ChunkNotexist | S::InvalidRequest | S::ChunkExist | S::EpochTooOld) => {
                self.fail_op(
                    op_id,
                    IoError::Refused(format!(
                        "chunk server {addr} answered {name} at offset {file_offset}"
                    )),
                );
            }
            Ok(S::Overload) => {
                self.stats.retries_overload += 1;
                set_err(self, format!("chunk server {addr} is overloaded"));
                if let Some(piece) = self.piece_mut(p) {
                    piece.attempts += 1;
                }
                self.delay(now, p, true);
            }
            Ok(S::Backward) if is_write => {
                self.stats.retries_backward += 1;
                set_err(
                    self,
                    format!(
                        "chunk server {addr} answered BACKWARD to sn {sn} (a snapshot was taken)"
                    ),
                );
                let retried = self.piece_mut(p).is_some_and(|piece| {
                    piece.attempts += 1;
                    piece.attempts > 1
                });
                let newer = self.layout.as_ref().is_some_and(|l| l.seq_num > sn);
                if !newer {
                    self.need(LayoutNeed::SeqNum);
                }
                if retried {
                    // A server that keeps answering BACKWARD, even to the sequence number
                    // just fetched, gets backoff, not a tight loop of RPCs (and MDS calls)
                    // until the deadline.
                    self.delay(now, p, false);
                } else if newer {
                    self.set_where(p, Where::Ready);
                    self.ready.push_back(p);
                } else {
                    self.park(p);
                }
            }
            _ => {
                self.stats.retries_other += 1;
                set_err(self, format!("chunk server {addr} answered {name}"));
                if let Some(piece) = self.piece_mut(p) {
                    piece.attempts += 1;
                }
                self.delay(now, p, false);
            }
        }
    }
}
