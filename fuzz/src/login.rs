//! Target `login`: the login state machine (`iscsi::login::LoginSm`) fed sequences of Login
//! Requests over several connections sharing one session registry, as the shard drives it:
//! each request goes through the receive path, a failed login closes its connection, a
//! redirect callback's result comes back when the input says, and a connection may be
//! dropped at any point (the next login starts a fresh one).
//!
//! The initiator side can answer a CHAP challenge correctly (the harness computes CHAP_R from
//! the target's CHAP_I/CHAP_C, optionally asking for mutual CHAP), so inputs reach the
//! operational stage and full-feature transition of a CHAP-protected target.
//!
//! Checks: no panic; every answer is a Login Response echoing the request's ITT, its
//! DataSegmentLength equal to its data, at most 8192 bytes (the initiator's default
//! MaxRecvDataSegmentLength), its data valid text; a failure carries a non-zero status class
//! and a success status 0; a finished normal login has a registered TSIH and negotiated values
//! inside RFC 7143 §13's ranges; [`Check::Registry`]: the registry holds no more entries than
//! there are live sessions (issue 11 item 8: a TSIH leaked when a connection drops during a
//! multi-piece final response).

use crate::checks::{enabled, Check};
use crate::input::{Reader, Writer};
use crate::text_negotiate::{pair, raw_text};
use crate::wire::{be32, bhs, frame, put16, put32};
use curve_tgt::config::snapshot::{
    Account, Acl, AclAddr, ChapAccounts, ConfigSnapshot, Redirect, TargetView,
};
use curve_tgt::config::target_params::TargetParams;
use curve_tgt::iscsi::chap::{decode_binary, encode_hex, ChapAlg};
use curve_tgt::iscsi::ids::Tsih;
use curve_tgt::iscsi::login::{LoginCtx, LoginSm, LoginStep, SessionKind, LOGIN_MAX_DATA};
use curve_tgt::iscsi::pdu::{op, Request};
use curve_tgt::iscsi::redirect::CallbackError;
use curve_tgt::iscsi::registry::SessionRegistry;
use curve_tgt::iscsi::rx::{next_pdu, RxLimits, RxStep};
use curve_tgt::iscsi::text::TextPairs;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const TARGET: &str = "iqn.2026-01.fuzz:disk";
pub const INITIATOR: &str = "iqn.2026-01.fuzz:host";
const USER: &str = "user";
const SECRET: &str = "secretsecret";
const MAX_OPS: usize = 256;

/// One initiator action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A Login Request. `flags`: bit 0 T, 1 C, 2..3 CSG, 4..5 NSG, 6 version_min 1, 7 change
    /// ISID. `tsih`: 0 new, 1 the last TSIH issued, else raw. `keys`: the leading keys picked
    /// by `keys` bits (0 InitiatorName, 1 TargetName, 2 SessionType=Discovery, 3 AuthMethod
    /// CHAP,None, 4 AuthMethod None, 5 CHAP_A=5) then `extra` pairs, or `raw` text.
    Login {
        flags: u8,
        tsih: u16,
        cid: u16,
        cmd_sn: u32,
        keys: u8,
        extra: Vec<(String, String)>,
        raw: Option<Vec<u8>>,
    },
    /// Answer the last CHAP challenge. `flags`: bit 0 wrong secret, 1 ask for mutual CHAP,
    /// 2 transit to the operational stage, 3 reflect the target's own challenge.
    Chap { flags: u8 },
    /// The redirect callback finishes: 0 fails, 1 prints a redirect, 2 prints nothing
    /// useful, 3 prints raw text.
    Callback { kind: u8, raw: Vec<u8> },
    /// The connection drops; the next login comes on a new one.
    Drop,
}

impl Op {
    pub fn decode(r: &mut Reader<'_>) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        let k = r.u8();
        Some(match k % 8 {
            0..=3 => {
                let flags = r.u8();
                let tsih = r.u16();
                let cid = r.u16();
                let cmd_sn = r.u32();
                let keys = r.u8();
                if keys == 0xff {
                    Op::Login {
                        flags,
                        tsih,
                        cid,
                        cmd_sn,
                        keys,
                        extra: Vec::new(),
                        raw: Some(r.bytes(9000).to_vec()),
                    }
                } else {
                    let n = r.u8() % 16;
                    let extra = (0..n).map(|_| pair(r)).collect();
                    Op::Login {
                        flags,
                        tsih,
                        cid,
                        cmd_sn,
                        keys,
                        extra,
                        raw: None,
                    }
                }
            }
            4 | 5 => Op::Chap { flags: r.u8() },
            6 => Op::Callback {
                kind: r.u8(),
                raw: r.bytes(512).to_vec(),
            },
            _ => Op::Drop,
        })
    }

    /// Writes the op in [`Op::decode`]'s format. Extra pairs must use dictionary indices,
    /// so only raw (0x80-flagged) strings are written here.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::Login {
                flags,
                tsih,
                cid,
                cmd_sn,
                keys,
                extra,
                raw,
            } => {
                w.u8(0).u8(*flags).u16(*tsih).u16(*cid).u32(*cmd_sn);
                match raw {
                    Some(b) => {
                        w.u8(0xff).bytes(b);
                    }
                    None => {
                        w.u8(*keys).u8(extra.len() as u8);
                        for (k, v) in extra {
                            w.u8(0x80).bytes(k.as_bytes()).u8(0x80).bytes(v.as_bytes());
                        }
                    }
                }
            }
            Op::Chap { flags } => {
                w.u8(4).u8(*flags);
            }
            Op::Callback { kind, raw } => {
                w.u8(6).u8(*kind).bytes(raw);
            }
            Op::Drop => {
                w.u8(7);
            }
        }
    }
}

/// Target configuration choices: bit 0 CHAP required, 1 mutual CHAP account, 2 redirect
/// callback, 3 static redirect, 4 target offline, 5 ACL denies, 6 system offline; then
/// `params` (key, value) pairs set on the target.
fn config(bits: u8, params: TargetParams) -> ConfigSnapshot {
    let chap = ChapAccounts {
        incoming: if bits & 1 != 0 {
            vec![Account {
                user: USER.into(),
                secret: SECRET.into(),
            }]
        } else {
            vec![]
        },
        outgoing: (bits & 2 != 0).then(|| Account {
            user: "tgtuser".into(),
            secret: "tgtsecrettgt".into(),
        }),
    };
    let redirect = if bits & 4 != 0 {
        Some(Redirect::Callback {
            argv: vec!["/bin/false".into()],
        })
    } else if bits & 8 != 0 {
        Some(Redirect::Static {
            address: "10.9.9.9".into(),
            port: 3260,
            permanent: bits & 0x80 != 0,
        })
    } else {
        None
    };
    let t = TargetView {
        tid: 1,
        name: TARGET.into(),
        ready: bits & 0x10 == 0,
        acl: Acl {
            addrs: if bits & 0x20 != 0 {
                vec![AclAddr::Exact("10.1.1.1".parse().expect("ip"))]
            } else {
                vec![AclAddr::All]
            },
            names: vec![],
        },
        chap: chap.clone(),
        params,
        luns: BTreeMap::new(),
        lun_list: vec![],
        redirect,
    };
    let mut targets = BTreeMap::new();
    targets.insert(1, Arc::new(t));
    ConfigSnapshot {
        generation: 1,
        system_ready: bits & 0x40 == 0,
        targets,
        discovery_chap: chap,
    }
}

/// One connection's login as the initiator sees it.
struct Conn {
    sm: LoginSm,
    /// Keys of the last response (for CHAP).
    last_keys: TextPairs,
    isid: [u8; 6],
    cid: u16,
    tsih: u16,
    csg: u8,
    /// ITT of the request parked behind the redirect callback.
    awaiting_callback: Option<u32>,
}

struct Harness {
    cfg: ConfigSnapshot,
    reg: SessionRegistry,
    conn: Option<Conn>,
    /// Live normal sessions by TSIH (removed when reinstated).
    live: HashMap<u16, ()>,
    last_tsih: u16,
    isid_seq: u8,
}

fn ctx() -> LoginCtx {
    LoginCtx {
        local: "127.0.0.1:3260".parse().expect("addr"),
        peer: "127.0.0.2:40000".parse().expect("addr"),
        tpgt: 1,
        shard: 0,
    }
}

impl Harness {
    fn conn(&mut self) -> &mut Conn {
        let isid = [0x40, 0, 1, 0x37, 0, self.isid_seq];
        self.conn.get_or_insert_with(|| Conn {
            sm: LoginSm::new(ctx()),
            last_keys: TextPairs::new(),
            isid,
            cid: 0,
            tsih: 0,
            csg: 0,
            awaiting_callback: None,
        })
    }

    /// Sends one Login Request through the receive path.
    fn login(&mut self, flags: u8, tsih: u16, cid: u16, cmd_sn: u32, data: &[u8]) {
        let last_tsih = self.last_tsih;
        if flags & 0x80 != 0 {
            self.isid_seq = self.isid_seq.wrapping_add(1);
        }
        let c = self.conn();
        if c.awaiting_callback.is_some() {
            // The shard reads no PDUs while the callback runs.
            return;
        }
        let mut h = bhs(op::LOGIN, true, 0);
        h[1] = (flags & 1) << 7 | (flags & 2) << 5 | ((flags >> 2) & 3) << 2 | ((flags >> 4) & 3);
        h[3] = (flags >> 6) & 1;
        h[8..14].copy_from_slice(&c.isid);
        let t = match tsih {
            0 => 0,
            1 => last_tsih,
            v => v,
        };
        put16(&mut h, 14, t);
        put32(&mut h, 16, 0x1000 + u32::from(flags));
        put16(&mut h, 20, cid % 3);
        put32(&mut h, 24, cmd_sn);
        put32(&mut h, 28, 0);
        c.tsih = t;
        c.cid = cid % 3;
        c.csg = (flags >> 2) & 3;
        let bytes = frame(h, &[], data, false, false);
        let (req, data) = match next_pdu(&bytes, RxLimits::default()) {
            RxStep::Pdu { pdu, .. } => match pdu.req {
                Request::Login(l) => (l, bytes[pdu.data.clone()].to_vec()),
                other => panic!("built a login, parsed {other:?}"),
            },
            // Framing the shard refuses (too long, bad stage bits): the connection closes.
            _ => {
                self.conn = None;
                return;
            }
        };
        let cfg = self.cfg.clone();
        let step = {
            let c = self.conn.as_mut().expect("connection");
            c.sm.on_pdu(&req, &data, &cfg, &self.reg)
        };
        self.step(step, req.itt.0);
    }

    fn step(&mut self, step: LoginStep, itt: u32) {
        if let Some(b) = step.bhs() {
            assert_eq!(b.0[0] & 0x3f, op::LOGIN_RSP, "answer is a Login Response");
            assert_eq!(be32(&b.0, 16), itt, "ITT echoed");
            assert_eq!(b.data_len(), step.data().len(), "DataSegmentLength");
            assert!(
                step.data().len() <= LOGIN_MAX_DATA,
                "{} bytes",
                step.data().len()
            );
        }
        let status = step.bhs().map(|b| (b.0[36], b.0[37]));
        match step {
            LoginStep::Continue { data, .. } => {
                assert_eq!(status, Some((0, 0)));
                let keys = TextPairs::parse(&data).expect("our response text parses");
                if let Some(c) = self.conn.as_mut() {
                    c.last_keys = keys;
                }
            }
            LoginStep::Fail { .. } => {
                let (class, _) = status.expect("a failure has a response");
                assert_ne!(class, 0, "a failed login answers a non-zero status class");
                self.conn = None;
            }
            LoginStep::RunCallback { .. } => {
                if let Some(c) = self.conn.as_mut() {
                    c.awaiting_callback = Some(itt);
                }
            }
            LoginStep::Done { bhs, data, session } => {
                assert_eq!(status, Some((0, 0)));
                assert_eq!(bhs.0[1] & 0x83, 0x83, "T=1, NSG=full feature");
                TextPairs::parse(&data).expect("our response text parses");
                let p = &session.params;
                let dsl = 512..=16_777_215;
                assert!(dsl.contains(&p.max_recv_data_segment_length), "{p:?}");
                assert!(dsl.contains(&p.max_xmit_data_segment_length), "{p:?}");
                assert!(p.first_burst_length <= p.max_burst_length, "{p:?}");
                assert!(p.max_outstanding_r2t >= 1 && p.max_queue_cmd >= 1, "{p:?}");
                if let SessionKind::Normal { tid } = session.kind {
                    assert_ne!(session.tsih, Tsih(0));
                    assert!(
                        self.reg.lookup(tid, session.tsih).is_some(),
                        "TSIH registered"
                    );
                    if let Some((_, _, old)) = session.reinstate {
                        self.live.remove(&old.0);
                    }
                    self.live.insert(session.tsih.0, ());
                    self.last_tsih = session.tsih.0;
                }
                self.conn = None;
            }
        }
    }

    fn chap(&mut self, flags: u8) {
        let Some(c) = self.conn.as_mut() else { return };
        let keys = &c.last_keys;
        let (Some(id), Some(chal), Some(alg)) = (
            keys.get("CHAP_I").and_then(|v| v.parse::<u8>().ok()),
            keys.get("CHAP_C").and_then(decode_binary),
            keys.get("CHAP_A").and_then(ChapAlg::select),
        ) else {
            return;
        };
        let secret = if flags & 1 != 0 {
            "wrongwrongwrong"
        } else {
            SECRET
        };
        let mut out = TextPairs::new();
        out.push("CHAP_N", USER);
        out.push(
            "CHAP_R",
            &encode_hex(&alg.response(id, secret.as_bytes(), &chal)),
        );
        if flags & 2 != 0 {
            out.push("CHAP_I", "7");
            let c2 = if flags & 8 != 0 {
                chal.clone()
            } else {
                vec![0x5a; 16]
            };
            out.push("CHAP_C", &encode_hex(&c2));
        }
        let (tsih, cid) = (c.tsih, c.cid);
        let transit = flags & 4 != 0;
        // CSG security; T and NSG operational when transiting.
        let lflags = u8::from(transit) | if transit { 1 << 4 } else { 0 };
        self.login(
            lflags,
            if tsih == 0 { 0 } else { 2 + tsih },
            cid,
            1,
            &out.encode(),
        );
    }

    fn callback(&mut self, kind: u8, raw: &[u8]) {
        let Some(c) = self.conn.as_mut() else { return };
        let result = match kind % 4 {
            0 => Err(CallbackError::Timeout(1000)),
            1 => Ok(b"10.2.2.2:3260:Temporary\n".to_vec()),
            2 => Ok(Vec::new()),
            _ => Ok(raw.to_vec()),
        };
        let cfg = self.cfg.clone();
        let Some(step) = c.sm.on_callback(result, &cfg, &self.reg) else {
            return;
        };
        let itt = c.awaiting_callback.take().expect("a callback was awaited");
        self.step(step, itt);
    }
}

fn leading_keys(keys: u8, extra: &[(String, String)]) -> Vec<u8> {
    let mut v = Vec::new();
    if keys & 1 != 0 {
        v.push(("InitiatorName".to_string(), INITIATOR.to_string()));
    }
    if keys & 2 != 0 {
        v.push(("TargetName".to_string(), TARGET.to_string()));
    }
    if keys & 4 != 0 {
        v.push(("SessionType".to_string(), "Discovery".to_string()));
    }
    if keys & 8 != 0 {
        v.push(("AuthMethod".to_string(), "CHAP,None".to_string()));
    }
    if keys & 0x10 != 0 {
        v.push(("AuthMethod".to_string(), "None".to_string()));
    }
    if keys & 0x20 != 0 {
        v.push(("CHAP_A".to_string(), "5".to_string()));
    }
    v.extend(extra.iter().cloned());
    raw_text(&v)
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let bits = r.u8();
    let nparams = r.u8() % 8;
    let mut params = TargetParams::default();
    for _ in 0..nparams {
        let (k, v) = pair(&mut r);
        let _ = params.set(&k, &v);
    }
    let mut h = Harness {
        cfg: config(bits, params),
        reg: SessionRegistry::new(),
        conn: None,
        live: HashMap::new(),
        last_tsih: 0,
        isid_seq: 0,
    };
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        match op {
            Op::Login {
                flags,
                tsih,
                cid,
                cmd_sn,
                keys,
                extra,
                raw,
            } => {
                let data = raw.unwrap_or_else(|| leading_keys(keys, &extra));
                h.login(flags, tsih, cid, cmd_sn, &data);
            }
            Op::Chap { flags } => h.chap(flags),
            Op::Callback { kind, raw } => h.callback(kind, &raw),
            Op::Drop => h.conn = None,
        }
        if enabled(Check::Registry) {
            let in_login = usize::from(h.conn.is_some());
            assert!(
                h.reg.len() <= h.live.len() + in_login,
                "{} registry entries for {} live sessions",
                h.reg.len(),
                h.live.len()
            );
        }
    }
}

/// The bytes of an input: configuration bits, no parameter changes, then `ops`.
pub fn encode(bits: u8, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(bits).u8(0);
    for op in ops {
        op.encode(&mut w);
    }
    w.out
}
