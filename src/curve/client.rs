//! The whole client in one sans-IO object, for single-threaded drivers (the blocking driver,
//! the volume tool): one [`Mds`] session and one [`ChunkIo`] engine, wired together.
//!
//! A shard host wires the same two halves itself, with the `Mds` on the control thread and one
//! `ChunkIo` per shard: `ChunkIo::poll_need` → (message) → `Mds::need`; `Mds::take_layout` →
//! (the same `Arc` to every shard) → `ChunkIo::set_layout`; `Mds::poll_need_failure` →
//! `ChunkIo::layout_failed`. [`Client::route`] is exactly that glue without the messages.
//!
//! The caller feeds events (`on_connected`, `on_recv`, `on_closed`, `on_timeout`) and drains
//! what the client wants (`poll_action`, `poll_transmit`, `poll_timeout`, `poll_completion`).

use std::sync::Arc;
use std::time::Instant;

use super::auth::Credentials;
use super::chunk_io::{ChunkIo, IoCompletion, IoStats};
use super::config::ClientConfig;
use super::conn::{Action, Transmit};
use super::ids::{OpId, PeerId};
use super::layout::Layout;
use super::mds::{AdminRequest, Mds, MdsCompletion};

/// MDS peers are numbered from here; chunk-server peers from 0.
pub const MDS_PEER_BASE: u32 = 1 << 31;

/// A finished operation of either half.
#[derive(Debug)]
pub enum Completion<R> {
    /// A read or write.
    Io(IoCompletion<R>),
    /// An MDS call (open, close, volume management).
    Mds(MdsCompletion),
}

impl<R> Completion<R> {
    /// The operation's id.
    pub fn op(&self) -> OpId {
        match self {
            Completion::Io(c) => c.op,
            Completion::Mds(c) => c.op,
        }
    }
}

/// The sans-IO Curve client: MDS session plus chunk I/O.
#[derive(Debug)]
pub struct Client<R, W> {
    mds: Mds,
    io: ChunkIo<R, W>,
}

impl<R: AsMut<[u8]>, W: AsRef<[u8]> + Clone> Client<R, W> {
    /// A client acting as `creds`, talking to `cfg.mds_addrs`.
    pub fn new(cfg: ClientConfig, creds: Credentials) -> Self {
        Client {
            mds: Mds::new(cfg.clone(), creds, MDS_PEER_BASE),
            io: ChunkIo::new(cfg, 0),
        }
    }

    /// Opens a volume for I/O.
    pub fn open(&mut self, now: Instant, op: OpId, path: &str) {
        self.mds.open(now, op, path);
        self.route(now);
    }

    /// Closes the open volume.
    pub fn close(&mut self, now: Instant, op: OpId) {
        self.mds.close(now, op);
        self.route(now);
    }

    /// A volume-management call.
    pub fn admin(&mut self, now: Instant, op: OpId, req: AdminRequest) {
        self.mds.admin(now, op, req);
        self.route(now);
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&mut self, now: Instant, op: OpId, offset: u64, buf: R) {
        self.io.read(now, op, offset, buf);
        self.route(now);
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, now: Instant, op: OpId, offset: u64, data: W) {
        self.io.write(now, op, offset, data);
        self.route(now);
    }

    /// Cancels a read or write.
    pub fn cancel(&mut self, op: OpId) {
        self.io.cancel(op);
    }

    /// The driver connected `peer`.
    pub fn on_connected(&mut self, now: Instant, peer: PeerId) {
        if self.mds.owns_peer(peer) {
            self.mds.on_connected(now, peer);
        } else {
            self.io.on_connected(now, peer);
        }
        self.route(now);
    }

    /// `peer`'s connection failed or closed.
    pub fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str) {
        if self.mds.owns_peer(peer) {
            self.mds.on_closed(now, peer, reason);
        } else {
            self.io.on_closed(now, peer, reason);
        }
        self.route(now);
    }

    /// Bytes arrived from `peer`.
    pub fn on_recv(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        if self.mds.owns_peer(peer) {
            self.mds.on_recv(now, peer, bytes);
        } else {
            self.io.on_recv(now, peer, bytes);
        }
        self.route(now);
    }

    /// Time passed.
    pub fn on_timeout(&mut self, now: Instant) {
        self.mds.on_timeout(now);
        self.io.on_timeout(now);
        self.route(now);
    }

    /// A connection to open or close.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.mds.poll_action().or_else(|| self.io.poll_action())
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<W>> {
        if let Some(t) = self.mds.poll_transmit() {
            return Some(Transmit {
                peer: t.peer,
                head: t.head,
                attachment: None,
            });
        }
        self.io.poll_transmit()
    }

    /// When `on_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.mds.poll_timeout(), self.io.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// A finished operation.
    pub fn poll_completion(&mut self) -> Option<Completion<R>> {
        if let Some(c) = self.mds.poll_completion() {
            return Some(Completion::Mds(c));
        }
        self.io.poll_completion().map(Completion::Io)
    }

    /// True if a completion is waiting (without taking it).
    pub fn poll_completion_pending(&self) -> bool {
        self.mds.has_completion() || self.io.has_completion()
    }

    /// Chunk I/O counters.
    pub fn stats(&self) -> &IoStats {
        self.io.stats()
    }

    /// The layout snapshot the I/O engine uses.
    pub fn layout(&self) -> Option<&Arc<Layout>> {
        self.io.layout()
    }

    /// Moves layout requests, snapshots and failures between the two halves until quiet.
    pub fn route(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(n) = self.io.poll_need() {
                self.mds.need(now, n);
                moved = true;
            }
            while let Some(l) = self.mds.take_layout() {
                self.io.set_layout(now, l);
                moved = true;
            }
            while let Some((n, why)) = self.mds.poll_need_failure() {
                self.io.layout_failed(now, &n, &why);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
}
