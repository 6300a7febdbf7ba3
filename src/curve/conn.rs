//! What the sans-IO client asks of its driver, and the per-connection RPC bookkeeping shared by
//! the MDS session and the chunk I/O engine.
//!
//! The driver owns sockets; the client names them by [`PeerId`]. The client says which peers to
//! connect or close ([`Action`]) and what to send ([`Transmit`]: a small encoded head plus,
//! for writes, a range of the caller's own buffer, so write data is never copied into a frame).
//! Each connection multiplexes many calls, matched by correlation id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use super::frame::{FrameDecoder, FrameLimits};
use super::ids::{CorrelationId, PeerId};

/// Something the driver must do with a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` for `peer`; answer with `on_connected` or `on_closed`.
    Connect {
        /// The peer.
        peer: PeerId,
        /// Where.
        addr: SocketAddr,
    },
    /// Close the peer's connection (the client has already forgotten it; no `on_closed`).
    Close {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: String,
    },
}

/// Bytes to send on a peer's connection, in order: `head`, then the attachment range.
#[derive(Clone, Debug)]
pub struct Transmit<W> {
    /// The peer.
    pub peer: PeerId,
    /// Header, meta and protobuf payload.
    pub head: Vec<u8>,
    /// Write data: a range of the caller's buffer.
    pub attachment: Option<(W, Range<usize>)>,
}

impl<W: AsRef<[u8]>> Transmit<W> {
    /// The attachment bytes, if any.
    pub fn attachment_bytes(&self) -> &[u8] {
        match &self.attachment {
            Some((w, r)) => &w.as_ref()[r.clone()],
            None => &[],
        }
    }
}

/// A connection's lifecycle.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// No socket; `retry_after` holds off reconnecting to a peer that just failed.
    Idle {
        /// Earliest reconnect.
        retry_after: Option<Instant>,
    },
    /// Connect asked, not answered yet.
    Connecting,
    /// Usable.
    Connected,
}

/// One call on a connection: its owner's tag and when it times out. A call whose owner gave
/// up (timeout, cancel) stays as a tombstone (`tag: None`) so its late reply is recognised
/// and skipped instead of being taken for a peer error.
#[derive(Debug)]
pub struct Call<T> {
    /// The owner's tag, `None` once abandoned.
    pub tag: Option<T>,
    /// When the call times out.
    pub deadline: Instant,
}

/// A reply named a correlation id this connection never issued: the peer broke the protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reply to unknown correlation id {0}")]
pub struct UnknownCorrelation(pub CorrelationId);

/// Most abandoned calls kept per connection before it is closed and reopened instead.
pub const MAX_TOMBSTONES: usize = 4096;

/// A connection to one server and the calls in flight on it.
#[derive(Debug)]
pub struct Conn<T, W> {
    /// The server.
    pub addr: SocketAddr,
    /// Lifecycle.
    pub state: ConnState,
    /// Reply decoder (reset per connection).
    pub decoder: FrameDecoder,
    /// Calls in flight, by correlation id.
    pub calls: HashMap<CorrelationId, Call<T>>,
    /// Frames waiting for the connection to come up.
    pub unsent: Vec<Transmit<W>>,
    /// Abandoned calls in `calls`.
    pub tombstones: usize,
}

impl<T, W> Conn<T, W> {
    /// A connection not yet opened.
    pub fn new(addr: SocketAddr, limits: FrameLimits) -> Self {
        Conn {
            addr,
            state: ConnState::Idle { retry_after: None },
            decoder: FrameDecoder::new(limits),
            calls: HashMap::new(),
            unsent: Vec::new(),
            tombstones: 0,
        }
    }

    /// Forgets the socket: returns the live calls' tags (each failed by the caller), drops
    /// unsent frames and resets the decoder.
    pub fn reset(&mut self, limits: FrameLimits, retry_after: Option<Instant>) -> Vec<T> {
        self.state = ConnState::Idle { retry_after };
        self.decoder = FrameDecoder::new(limits);
        self.unsent.clear();
        self.tombstones = 0;
        self.calls.drain().filter_map(|(_, c)| c.tag).collect()
    }

    /// Marks a call abandoned; its reply will be skipped.
    pub fn abandon(&mut self, cid: CorrelationId) -> Option<T> {
        let call = self.calls.get_mut(&cid)?;
        let tag = call.tag.take();
        if tag.is_some() {
            self.tombstones += 1;
        }
        tag
    }

    /// Removes a call whose reply arrived: `Ok(Some(tag))` for a live call, `Ok(None)` for a
    /// tombstone, `Err` for a correlation id never issued here.
    pub fn complete(&mut self, cid: CorrelationId) -> Result<Option<T>, UnknownCorrelation> {
        match self.calls.remove(&cid) {
            Some(Call { tag: Some(t), .. }) => Ok(Some(t)),
            Some(Call { tag: None, .. }) => {
                self.tombstones = self.tombstones.saturating_sub(1);
                Ok(None)
            }
            None => Err(UnknownCorrelation(cid)),
        }
    }

    /// The earliest live call deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter(|c| c.tag.is_some())
            .map(|c| c.deadline)
            .min()
    }

    /// Correlation ids of live calls past their deadline.
    pub fn expired(&self, now: Instant) -> Vec<CorrelationId> {
        self.calls
            .iter()
            .filter(|(_, c)| c.tag.is_some() && c.deadline <= now)
            .map(|(k, _)| *k)
            .collect()
    }
}
