//! The operator's event lines: one function per event that matters to whoever runs tgtd, so
//! each call site in the shards, the login code and the control thread is one line, and
//! every line of a kind reads the same. Text that a peer or an admin chose goes through
//! [`Untrusted`]; lines a peer can cause without logging in (refused logins, connections
//! closed for protocol errors) go through the per-peer [`PeerLimiter`].

use super::ratelimit::{self, PeerLimiter, Suppressed, Verdict};
use super::Untrusted;
use crate::backing::BackingError;
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::login::{LoginOutcome, SessionKind};
use crate::mgmt::ipc::{Mode, Op, Request, TgtadmError};
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

/// A login finished (and, when it replaced an older session of the same initiator port, a
/// second line for the reinstatement, RFC 7143 §6.3.5).
pub fn login(peer: SocketAddr, o: &LoginOutcome, cfg: &ConfigSnapshot) {
    let initiator = Untrusted(&o.initiator_name);
    let tsih = o.tsih.0;
    match o.kind {
        SessionKind::Normal { tid } => {
            let name = cfg.targets.get(&tid).map_or("", |t| t.name.as_str());
            tracing::info!(
                "login: initiator {initiator} from {peer} to target {} (tid {tid}, session {tsih:#06x})",
                Untrusted(name)
            );
        }
        SessionKind::Discovery => {
            tracing::info!("discovery login: initiator {initiator} from {peer}")
        }
    }
    tracing::debug!(
        "session {tsih:#06x} of {initiator}: negotiated {:?}",
        o.params
    );
    if let Some((_, tid, old)) = o.reinstate {
        tracing::info!(
            "session reinstatement: initiator {initiator} from {peer} on tid {tid}: session {:#06x} replaced by {tsih:#06x}",
            old.0
        );
    }
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

fn op_name(op: Option<Op>) -> &'static str {
    match op {
        Some(Op::New) => "new",
        Some(Op::Delete) => "delete",
        Some(Op::Show) => "show",
        Some(Op::Bind) => "bind",
        Some(Op::Unbind) => "unbind",
        Some(Op::Update) => "update",
        Some(Op::Stats) => "stat",
        Some(Op::Start) => "start",
        Some(Op::Stop) => "stop",
        None => "unknown-op",
    }
}

fn mode_name(mode: Option<Mode>) -> &'static str {
    match mode {
        Some(Mode::System) => "system",
        Some(Mode::Target) => "target",
        Some(Mode::Device) => "logicalunit",
        Some(Mode::Portal) => "portal",
        Some(Mode::Lld) => "lld",
        Some(Mode::Session) => "session",
        Some(Mode::Connection) => "connection",
        Some(Mode::Account) => "account",
        None => "unknown-mode",
    }
}

/// The payload with every password's value replaced (account new and target update carry
/// CHAP secrets).
fn redacted(payload: &str) -> String {
    payload
        .split(',')
        .map(|item| match item.split_once('=') {
            Some((k, _)) if k.contains("password") || k.contains("secret") => {
                format!("{k}=***")
            }
            _ => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One tgtadm request, after it ran: a line for each change (new, delete, bind, unbind,
/// update, start, stop) and for each refusal, with tgtadm's reason; show and stat only as
/// debugging lines.
pub fn admin_request<T>(req: &Request, result: &Result<T, TgtadmError>) {
    let op = Op::from_wire(req.hdr.op);
    let changes = !matches!(op, Some(Op::Show) | Some(Op::Stats));
    if result.is_ok() && !changes && !super::debug() {
        return;
    }
    let h = &req.hdr;
    // Only the ids tgtadm filled in (it sends -1 / all ones / 0 for the others).
    let mut what = format!(
        "tgtadm --op {} --mode {}",
        op_name(op),
        mode_name(Mode::from_wire(h.mode))
    );
    if h.tid != -1 {
        what += &format!(" tid={}", h.tid);
    }
    if h.lun != u64::MAX {
        what += &format!(" lun={}", h.lun);
    }
    if h.sid != 0 {
        what += &format!(" sid={}", h.sid);
    }
    if h.cid != 0 {
        what += &format!(" cid={}", h.cid);
    }
    if !req.payload.is_empty() {
        what += &format!(" params={}", Untrusted(&redacted(&req.payload)));
    }
    match result {
        Ok(_) if !changes => tracing::debug!("{what}: done"),
        Ok(_) => tracing::info!("{what}: done"),
        Err(e) => tracing::warn!("{what}: refused: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redacted("user=u1,password=s3cret"), "user=u1,password=***");
        assert_eq!(redacted("path=/a,bstype=rdwr"), "path=/a,bstype=rdwr");
    }
}
