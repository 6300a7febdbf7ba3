//! The audit line for each tgtadm request: what an admin changed (or tried to), written after
//! the request ran, with CHAP secrets redacted. Written here rather than in `log` because it
//! reads the IPC header's own types; `log` supplies the sink and the escaping of admin text.

use super::ipc::{Mode, Op, Request, TgtadmError};
use crate::log::Untrusted;

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
    if result.is_ok() && !changes && !crate::log::debug() {
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
