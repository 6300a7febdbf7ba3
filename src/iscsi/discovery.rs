//! Text Requests in the full-feature phase (RFC 7143 §11.10, §6.2), chiefly SendTargets
//! discovery (RFC 7143 Appendix C / §13.3 in RFC 3720 terms): the target lists the targets
//! the initiator may see, each as `TargetName=` followed by `TargetAddress=<ip>:<port>,<tpgt>`.
//!
//! Long answers are split across Text Responses with the C bit and a target transfer tag;
//! the initiator fetches each next piece with an empty Text Request echoing that tag.

use super::ids::{Itt, Ttt};
use super::login::SessionKind;
use super::pdu::{Bhs, RejectReason, TextReq};
use super::target_address::format_address;
use super::text::{TextBuffer, TextError, TextPairs};
use crate::config::snapshot::{ConfigSnapshot, TargetView};
use std::net::{IpAddr, SocketAddr};

/// Smallest piece size we split into, whatever the initiator declared (RFC 7143 §13.12
/// minimum MaxRecvDataSegmentLength).
const MIN_PIECE: usize = 512;

/// The connection facts a Text Request is answered from.
#[derive(Clone, Copy, Debug)]
pub struct TextCtx<'a> {
    pub kind: &'a SessionKind,
    pub initiator_name: &'a str,
    pub peer_ip: IpAddr,
    /// The connection's local address: the portal advertised in TargetAddress.
    pub local: SocketAddr,
    /// Target portal group tag of that portal.
    pub tpgt: u16,
    pub cfg: &'a ConfigSnapshot,
    /// The initiator's MaxRecvDataSegmentLength: the largest piece we may send.
    pub max_xmit: u32,
    /// Our MaxRecvDataSegmentLength, answered to a declaration of the initiator's.
    pub max_recv: u32,
}

/// What to send for one Text Request.
#[derive(Debug, PartialEq, Eq)]
pub enum TextReply {
    /// A Text Response (StatSN/ExpCmdSN/MaxCmdSN still to be stamped by the connection).
    /// `new_max_xmit`: the initiator declared a new MaxRecvDataSegmentLength (RFC 7143
    /// §13.12 allows it in the full-feature phase); the connection adopts it for later PDUs.
    Respond {
        bhs: Bhs,
        data: Vec<u8>,
        new_max_xmit: Option<u32>,
    },
    /// A Reject PDU with this reason, carrying the request's header as its data (RFC 7143
    /// §11.17); the connection builds it with [`Bhs::reject`].
    Reject(RejectReason),
}

/// Why a Text Request was refused, naming the rule broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextReqError {
    /// The TTT names no response of ours in progress (RFC 7143 §11.10.4).
    #[error("TTT {0:#x} names no continued response")]
    UnknownTtt(u32),
    /// A request fetching the next piece carried data.
    #[error("continuation request carried data")]
    DataOnContinuation,
    /// The text itself is malformed or over a limit.
    #[error("bad text: {0}")]
    Text(#[from] TextError),
}

/// An answer being sent in pieces.
#[derive(Debug)]
struct Pending {
    itt: Itt,
    ttt: Ttt,
    rest: Vec<u8>,
}

/// Where the connection's text exchange stands.
#[derive(Debug, Default)]
enum State {
    /// No exchange in progress.
    #[default]
    Idle,
    /// The initiator is sending a request in pieces (C bit); we acknowledged with `ttt`.
    Receiving { itt: Itt, ttt: Ttt },
    /// We are sending an answer in pieces.
    Sending(Pending),
}

/// One connection's Text Request handling. Exists to keep a continued exchange (either
/// direction) and its tags across PDUs.
#[derive(Debug, Default)]
pub struct TextSm {
    state: State,
    inbuf: TextBuffer,
    last_ttt: u32,
}

impl TextSm {
    /// A connection with no text exchange in progress.
    pub fn new() -> TextSm {
        TextSm::default()
    }

    fn next_ttt(&mut self) -> Ttt {
        self.last_ttt = self.last_ttt.wrapping_add(1);
        if self.last_ttt == Ttt::RESERVED.0 {
            self.last_ttt = 1;
        }
        Ttt(self.last_ttt)
    }

    /// Answers one Text Request.
    pub fn on_text(&mut self, req: &TextReq, data: &[u8], ctx: &TextCtx<'_>) -> TextReply {
        match self.handle(req, data, ctx) {
            Ok(r) => r,
            Err(e) => {
                crate::log::event::text_rejected(ctx.peer_ip, &e);
                self.state = State::Idle;
                self.inbuf = TextBuffer::new();
                match e {
                    TextReqError::Text(_) => TextReply::Reject(RejectReason::ProtocolError),
                    _ => TextReply::Reject(RejectReason::InvalidPduField),
                }
            }
        }
    }

    fn handle(
        &mut self,
        req: &TextReq,
        data: &[u8],
        ctx: &TextCtx<'_>,
    ) -> Result<TextReply, TextReqError> {
        let piece = ctx.max_xmit.max(MIN_PIECE as u32) as usize;
        match std::mem::take(&mut self.state) {
            State::Sending(p) if req.ttt != Ttt::RESERVED => {
                if req.ttt != p.ttt || req.itt != p.itt {
                    return Err(TextReqError::UnknownTtt(req.ttt.0));
                }
                if !data.is_empty() {
                    return Err(TextReqError::DataOnContinuation);
                }
                return Ok(self.send(req.itt, p.rest, piece, None));
            }
            State::Receiving { itt, ttt }
                if req.ttt != Ttt::RESERVED && (req.ttt != ttt || req.itt != itt) =>
            {
                return Err(TextReqError::UnknownTtt(req.ttt.0));
            }
            State::Receiving { .. } => {}
            // RFC 7143 §11.10.4: a request with the reserved TTT starts a new exchange and
            // ends any answer of ours still in pieces.
            State::Idle | State::Sending(_) if req.ttt == Ttt::RESERVED => {
                self.inbuf = TextBuffer::new()
            }
            State::Idle | State::Sending(_) => return Err(TextReqError::UnknownTtt(req.ttt.0)),
        }
        if req.continue_ {
            self.inbuf.push(data)?;
            let ttt = self.next_ttt();
            self.state = State::Receiving { itt: req.itt, ttt };
            let mut bhs = Bhs::text_response(req.itt, ttt, false, false);
            bhs.set_data_len(0);
            return Ok(TextReply::Respond {
                bhs,
                data: Vec::new(),
                new_max_xmit: None,
            });
        }
        let keys = self.inbuf.finish(data)?;
        let (out, new_max_xmit) = answer(&keys, ctx);
        Ok(self.send(req.itt, out.encode(), piece, new_max_xmit))
    }

    fn send(
        &mut self,
        itt: Itt,
        mut text: Vec<u8>,
        piece: usize,
        new_max_xmit: Option<u32>,
    ) -> TextReply {
        let (bhs, data) = if text.len() > piece {
            let rest = text.split_off(piece);
            let ttt = self.next_ttt();
            self.state = State::Sending(Pending { itt, ttt, rest });
            (Bhs::text_response(itt, ttt, false, true), text)
        } else {
            self.state = State::Idle;
            (Bhs::text_response(itt, Ttt::RESERVED, true, false), text)
        };
        let mut bhs = bhs;
        bhs.set_data_len(data.len());
        TextReply::Respond {
            bhs,
            data,
            new_max_xmit,
        }
    }
}

/// The answer to a complete set of keys.
fn answer(keys: &TextPairs, ctx: &TextCtx<'_>) -> (TextPairs, Option<u32>) {
    let mut out = TextPairs::new();
    let mut new_max_xmit = None;
    for (k, v) in keys.iter() {
        match k {
            "SendTargets" => send_targets(v, ctx, &mut out),
            "MaxRecvDataSegmentLength" => match v.parse::<u32>() {
                Ok(n) if (512..=16_777_215).contains(&n) && new_max_xmit.is_none() => {
                    new_max_xmit = Some(n);
                    out.push(k, &ctx.max_recv.to_string());
                }
                _ => out.push(k, "Reject"),
            },
            // Leading-only operational keys cannot change once the session runs.
            _ if crate::config::target_params::KEYS
                .iter()
                .any(|d| d.name == k) =>
            {
                out.push(k, "Reject")
            }
            _ => out.push(k, "NotUnderstood"),
        }
    }
    (out, new_max_xmit)
}

fn visible(t: &TargetView, ctx: &TextCtx<'_>) -> bool {
    t.acl.allows(ctx.peer_ip, ctx.initiator_name)
}

/// SendTargets (RFC 7143 §13.3 of RFC 3720 / Appendix C): `All` in discovery sessions lists
/// every target the ACL shows this initiator; a name lists that target; empty, in a normal
/// session, lists the session's own target.
fn send_targets(value: &str, ctx: &TextCtx<'_>, out: &mut TextPairs) {
    let address = format!(
        "{},{}",
        format_address(ctx.local.ip(), ctx.local.port()),
        ctx.tpgt
    );
    let mut list = |t: &TargetView| {
        if visible(t, ctx) {
            out.push("TargetName", &t.name);
            out.push("TargetAddress", &address);
        }
    };
    match (value, ctx.kind) {
        ("All", SessionKind::Discovery) => ctx.cfg.targets.values().for_each(|t| list(t)),
        ("All", SessionKind::Normal { .. }) => out.push("SendTargets", "Reject"),
        ("", SessionKind::Normal { tid }) => {
            if let Some(t) = ctx.cfg.targets.get(tid) {
                list(t);
            }
        }
        ("", SessionKind::Discovery) => {}
        (name, _) => {
            if let Some(t) = ctx.cfg.target_by_name(name) {
                list(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::{Acl, AclAddr, ChapAccounts};
    use crate::config::target_params::TargetParams;
    use crate::iscsi::serial::{CmdSn, StatSn};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn target(tid: u32, name: &str, acl: Acl) -> Arc<TargetView> {
        Arc::new(TargetView {
            tid,
            name: name.into(),
            ready: true,
            acl,
            chap: ChapAccounts::default(),
            params: TargetParams::default(),
            luns: BTreeMap::new(),
            lun_list: vec![],
            redirect: None,
        })
    }

    fn cfg() -> ConfigSnapshot {
        let all = Acl {
            addrs: vec![AclAddr::All],
            names: vec![],
        };
        let mut targets = BTreeMap::new();
        targets.insert(1, target(1, "iqn.t1", all.clone()));
        targets.insert(2, target(2, "iqn.t2", Acl::default()));
        targets.insert(
            3,
            target(
                3,
                "iqn.t3",
                Acl {
                    addrs: vec![],
                    names: vec!["iqn.host".into()],
                },
            ),
        );
        for tid in 10..100 {
            targets.insert(
                tid,
                target(
                    tid,
                    &format!("iqn.2024-01.com.example:many.{tid}"),
                    all.clone(),
                ),
            );
        }
        ConfigSnapshot {
            generation: 1,
            system_ready: true,
            targets,
            discovery_chap: ChapAccounts::default(),
        }
    }

    fn req(ttt: Ttt) -> TextReq {
        TextReq {
            immediate: true,
            final_: true,
            continue_: false,
            itt: Itt(9),
            ttt,
            cmd_sn: CmdSn(1),
            exp_stat_sn: StatSn(1),
        }
    }

    fn ctx<'a>(
        kind: &'a SessionKind,
        cfg: &'a ConfigSnapshot,
        local: &str,
        max_xmit: u32,
    ) -> TextCtx<'a> {
        TextCtx {
            kind,
            initiator_name: "iqn.host",
            peer_ip: "10.0.0.2".parse().unwrap(),
            local: local.parse().unwrap(),
            tpgt: 1,
            cfg,
            max_xmit,
            max_recv: 8192,
        }
    }

    fn kv(k: &str, v: &str) -> Vec<u8> {
        let mut p = TextPairs::new();
        p.push(k, v);
        p.encode()
    }

    fn respond(r: TextReply) -> (Bhs, Vec<u8>, Option<u32>) {
        match r {
            TextReply::Respond {
                bhs,
                data,
                new_max_xmit,
            } => (bhs, data, new_max_xmit),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn send_targets_all_filters_by_acl_and_continues() {
        let c = cfg();
        let kind = SessionKind::Discovery;
        let x = ctx(&kind, &c, "10.0.0.1:3260", 1024);
        let mut sm = TextSm::new();
        let (bhs, mut text, _) =
            respond(sm.on_text(&req(Ttt::RESERVED), &kv("SendTargets", "All"), &x));
        assert_eq!(bhs.data_len(), text.len());
        assert_eq!(bhs.0[1] & 0xc0, 0x40, "C set, F clear");
        let mut ttt = Ttt(u32::from_be_bytes(bhs.0[20..24].try_into().unwrap()));
        assert_ne!(ttt, Ttt::RESERVED);
        let first_ttt = ttt;
        loop {
            let (b, d, _) = respond(sm.on_text(&req(ttt), &[], &x));
            ttt = Ttt(u32::from_be_bytes(b.0[20..24].try_into().unwrap()));
            assert!(d.len() <= 1024);
            text.extend_from_slice(&d);
            if b.0[1] & 0x80 != 0 {
                assert_eq!(&b.0[20..24], &[0xff; 4]);
                break;
            }
        }
        let p = TextPairs::parse(&text).unwrap();
        let names: Vec<&str> = p
            .iter()
            .filter(|(k, _)| *k == "TargetName")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(names.len(), 2 + 90);
        assert_eq!(names[..2], ["iqn.t1", "iqn.t3"]);
        assert!(!names.contains(&"iqn.t2"));
        assert_eq!(p.get("TargetAddress"), Some("10.0.0.1:3260,1"));
        // A stale TTT afterwards is rejected.
        assert_eq!(
            sm.on_text(&req(first_ttt), &[], &x),
            TextReply::Reject(RejectReason::InvalidPduField)
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let c = cfg();
        let kind = SessionKind::Discovery;
        let x = ctx(&kind, &c, "[fd00::1%2]:3260", 1 << 20);
        let (_, text, _) =
            respond(TextSm::new().on_text(&req(Ttt::RESERVED), &kv("SendTargets", "iqn.t1"), &x));
        let p = TextPairs::parse(&text).unwrap();
        assert_eq!(p.get("TargetName"), Some("iqn.t1"));
        assert_eq!(p.get("TargetAddress"), Some("[fd00::1]:3260,1"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn normal_session_forms() {
        let c = cfg();
        let kind = SessionKind::Normal { tid: 3 };
        let x = ctx(&kind, &c, "10.0.0.1:3260", 8192);
        let mut sm = TextSm::new();
        let (_, text, _) = respond(sm.on_text(&req(Ttt::RESERVED), &kv("SendTargets", ""), &x));
        assert_eq!(
            TextPairs::parse(&text).unwrap().get("TargetName"),
            Some("iqn.t3")
        );
        let (_, text, _) = respond(sm.on_text(&req(Ttt::RESERVED), &kv("SendTargets", "All"), &x));
        assert_eq!(
            TextPairs::parse(&text).unwrap().get("SendTargets"),
            Some("Reject")
        );
        let (_, text, _) =
            respond(sm.on_text(&req(Ttt::RESERVED), &kv("SendTargets", "iqn.t2"), &x));
        assert!(text.is_empty(), "hidden by ACL");
    }

    #[test]
    fn other_keys() {
        let c = cfg();
        let kind = SessionKind::Normal { tid: 1 };
        let x = ctx(&kind, &c, "10.0.0.1:3260", 8192);
        let mut sm = TextSm::new();
        let mut p = TextPairs::new();
        p.push("MaxRecvDataSegmentLength", "65536");
        p.push("MaxBurstLength", "512");
        p.push("X-vendor", "1");
        let (bhs, text, new) = respond(sm.on_text(&req(Ttt::RESERVED), &p.encode(), &x));
        assert_eq!(bhs.0[1], 0x80);
        assert_eq!(new, Some(65536));
        let a = TextPairs::parse(&text).unwrap();
        assert_eq!(a.get("MaxRecvDataSegmentLength"), Some("8192"));
        assert_eq!(a.get("MaxBurstLength"), Some("Reject"));
        assert_eq!(a.get("X-vendor"), Some("NotUnderstood"));
        assert_eq!(
            sm.on_text(&req(Ttt::RESERVED), b"garbage", &x),
            TextReply::Reject(RejectReason::ProtocolError)
        );
    }

    #[test]
    fn continued_requests_are_joined() {
        let c = cfg();
        let kind = SessionKind::Discovery;
        let x = ctx(&kind, &c, "10.0.0.1:3260", 1 << 20);
        let mut sm = TextSm::new();
        let mut r = req(Ttt::RESERVED);
        r.continue_ = true;
        r.final_ = false;
        let (bhs, d, _) = respond(sm.on_text(&r, b"SendTar", &x));
        assert!(d.is_empty());
        assert_eq!(bhs.0[1] & 0x80, 0);
        let ttt = Ttt(u32::from_be_bytes(bhs.0[20..24].try_into().unwrap()));
        let (_, d, _) = respond(sm.on_text(&req(ttt), b"gets=iqn.t1\0", &x));
        assert_eq!(
            TextPairs::parse(&d).unwrap().get("TargetName"),
            Some("iqn.t1")
        );
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(
            steps in proptest::collection::vec((proptest::num::u32::ANY, proptest::bool::ANY,
                proptest::collection::vec(proptest::num::u8::ANY, 0..64)), 1..6),
            max_xmit in 0u32..20000,
        ) {
            let c = cfg();
            let kind = SessionKind::Discovery;
            let x = ctx(&kind, &c, "10.0.0.1:3260", max_xmit);
            let mut sm = TextSm::new();
            let mut first = true;
            for (ttt, cont, data) in steps {
                let mut r = req(if first { Ttt::RESERVED } else { Ttt(ttt) });
                r.continue_ = cont;
                let mut d = if first { kv("SendTargets", "All") } else { Vec::new() };
                d.extend_from_slice(&data);
                first = false;
                if let TextReply::Respond { bhs, data, .. } = sm.on_text(&r, &d, &x) {
                    proptest::prop_assert_eq!(bhs.data_len(), data.len());
                    proptest::prop_assert!(data.len() <= (max_xmit as usize).max(MIN_PIECE));
                }
            }
        }
    }
}
