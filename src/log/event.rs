//! The operator's event lines: one function per event that matters to whoever runs tgtd, so
//! each call site in the shards, the login code and the control thread is one line, and
//! every line of a kind reads the same. They take plain values (addresses, names, reasons as
//! `Display`), so this module imports nothing from the layers that call it; the two lines
//! built from a layer's own types are written there (a finished login in
//! `shard::login_glue`, a tgtadm request in `mgmt::audit`). Text that a peer or an admin
//! chose goes through [`Untrusted`]; lines a peer can cause without logging in (refused
//! logins, connections closed for protocol errors) go through the per-peer [`PeerLimiter`].

use super::ratelimit::{self, PeerLimiter, Suppressed, Verdict};
use super::Untrusted;
use crate::backing::BackingError;
use std::fmt::{Debug, Display};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

fn limiter() -> &'static PeerLimiter {
    static L: OnceLock<PeerLimiter> = OnceLock::new();
    L.get_or_init(|| {
        PeerLimiter::new(
            ratelimit::DEFAULT_BURST,
            ratelimit::DEFAULT_GLOBAL,
            ratelimit::DEFAULT_WINDOW,
            ratelimit::DEFAULT_MAX_PEERS,
        )
    })
}

fn report_suppressed(ended: Vec<Suppressed>) {
    for s in ended {
        match s.peer {
            Some(ip) => tracing::warn!(
                "{ip}: {} more lines from this peer suppressed in {}s",
                s.count,
                s.window.as_secs()
            ),
            None => tracing::warn!(
                "{} more lines from peers over the global log limit suppressed in {}s",
                s.count,
                s.window.as_secs()
            ),
        }
    }
}

/// Rate-limits one line caused by `peer`; true when it is to be logged.
fn allowed(peer: IpAddr) -> bool {
    let (v, ended) = limiter().check(peer, Instant::now());
    report_suppressed(ended);
    v == Verdict::Log
}

/// Logs the counts of windows that ended with suppressed lines (call now and then, e.g. from
/// the control thread, so a flood that stopped is still reported).
pub fn flush_suppressed() {
    report_suppressed(limiter().flush(Instant::now()));
}

/// A portal listens.
pub fn portal_up(addr: SocketAddr) {
    tracing::info!("portal {addr} up");
}

/// A portal stopped listening.
pub fn portal_down(addr: SocketAddr) {
    tracing::info!("portal {addr} down");
}

/// A portal could not listen.
pub fn portal_failed(addr: SocketAddr, why: &dyn Display) {
    tracing::warn!("portal {addr} can't listen: {why}");
}

/// An initiator asked to log out (the session or connection closes after the response).
pub fn logout(initiator: &str, tsih: u16, reason: &dyn Debug) {
    tracing::info!(
        "logout: initiator {}, session {tsih:#06x}, reason {reason:?}",
        Untrusted(initiator)
    );
}

/// A normal session ended (its last connection closed: logout, loss, or closed by us).
pub fn session_closed(peer: SocketAddr, initiator: &str, tid: u32, tsih: u16) {
    tracing::info!(
        "session closed: initiator {} from {peer}, tid {tid}, session {tsih:#06x}",
        Untrusted(initiator)
    );
}

/// A login was refused (rate-limited per peer: a peer can cause this without credentials).
pub fn login_refused(peer: SocketAddr, why: &dyn Display) {
    if allowed(peer.ip()) {
        tracing::warn!("login refused: {peer}: {}", Untrusted(&why.to_string()));
    }
}

/// A connection was closed for breaking the protocol (rate-limited per peer).
pub fn connection_closed(peer: SocketAddr, why: &dyn Display) {
    if allowed(peer.ip()) {
        tracing::warn!(
            "connection from {peer} closed: {}",
            Untrusted(&why.to_string())
        );
    }
}

/// A discovery Text Request was rejected (rate-limited per peer).
pub fn text_rejected(peer: IpAddr, why: &dyn Display) {
    if allowed(peer) {
        tracing::info!(
            "text request from {peer} rejected: {}",
            Untrusted(&why.to_string())
        );
    }
}

/// A logical unit could not be created because its backing store did not open.
pub fn backing_open_failed(tid: i32, lun: u64, path: &str, why: &BackingError) {
    let why: &dyn Display = match why {
        BackingError::Open { source, .. } => source,
        other => other,
    };
    tracing::warn!(
        "logical unit {lun} of tid {tid} not created: can't open backing store {}: {why}",
        Untrusted(path)
    );
}

/// A logical unit could not be created for another reason (its size, block size, ...).
pub fn lu_refused(tid: i32, lun: u64, why: &dyn Display) {
    tracing::warn!(
        "logical unit {lun} of tid {tid} not created: {}",
        Untrusted(&why.to_string())
    );
}

/// A logical unit update (`--op update --mode logicalunit --params`) was refused; the
/// request line that follows names the LU.
pub fn lu_update_refused(why: &dyn Display) {
    tracing::warn!(
        "logical unit update refused: {}",
        Untrusted(&why.to_string())
    );
}
