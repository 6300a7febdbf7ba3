//! The login phase of one connection (RFC 7143 §6), target side: an explicit state machine
//! that takes Login Request PDUs and answers each with a Login Response, through the
//! security stage (AuthMethod, CHAP), the operational stage (key negotiation) and into the
//! full-feature phase. Sans-IO: the connection code feeds it PDUs and sends what it returns.
//!
//! Every bad input gets a Login Response with the status class and detail of RFC 7143
//! §11.13.5 (tgt's choice where tgt differs from the obvious one), never a silent close.
//!
//! Usage, per connection (see [`LoginStep`]):
//! ```text
//! let mut sm = LoginSm::new(LoginCtx { local, peer, tpgt, shard });
//! loop {
//!     read a PDU; it must be a Login Request (else: close)
//!     match sm.on_pdu(&req, &data, &cfg, &registry) {
//!         Continue { bhs, data } => send, keep reading login PDUs,
//!         Done { bhs, data, session } => send, close `session.reinstate` if any, enter FFP,
//!         Fail { bhs, data } => send, then close the connection,
//!         RunCallback { argv } => run the target's redirect callback off this thread, read
//!             no more PDUs; its result goes to `sm.on_callback(result, &cfg, &registry)`,
//!             which answers like `on_pdu` (`None`: no callback was awaited, nothing to do),
//!     }
//! }
//! ```

use super::chap::{ChapError, ChapServer, ChapStep};
use super::ids::{Cid, Isid, Tsih};
use super::negotiate::{is_security_key, NegotiationError, Negotiator, SessionParams};
use super::pdu::{Bhs, LoginReq, SeqFields, Stage};
use super::redirect::{self, CallbackError, RedirectTo};
use super::registry::{initiator_port, SessionRegistry};
use super::serial::{CmdSn, StatSn};
use super::text::{TextBuffer, TextError, TextPairs};
use crate::config::snapshot::{ChapAccounts, ConfigSnapshot, Redirect, TargetView};
use crate::config::target_params::TargetParams;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest login response data segment: the initiator's MaxRecvDataSegmentLength is its
/// default of 8192 until the login completes (RFC 7143 §13.12).
pub const LOGIN_MAX_DATA: usize = 8192;
/// Longest iSCSI name accepted (RFC 7143 §4.2.7.1: 223 bytes).
pub const MAX_NAME_LEN: usize = 223;
/// Most Login Requests one login may take; a bound on an initiator that never finishes.
pub const MAX_LOGIN_PDUS: u32 = 64;

/// Login Response status classes and details (RFC 7143 §11.13.5).
pub mod status {
    /// Target moved temporarily (redirect).
    pub const TARGET_MOVED_TEMPORARILY: (u8, u8) = (0x01, 0x01);
    /// Target moved permanently (redirect).
    pub const TARGET_MOVED_PERMANENTLY: (u8, u8) = (0x01, 0x02);
    /// Miscellaneous initiator error.
    pub const INITIATOR_ERROR: (u8, u8) = (0x02, 0x00);
    /// Authentication failed.
    pub const AUTH_FAILED: (u8, u8) = (0x02, 0x01);
    /// Authorization failure.
    pub const FORBIDDEN: (u8, u8) = (0x02, 0x02);
    /// Target not found.
    pub const NOT_FOUND: (u8, u8) = (0x02, 0x03);
    /// Unsupported version.
    pub const UNSUPPORTED_VERSION: (u8, u8) = (0x02, 0x05);
    /// Too many connections on this session.
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (0x02, 0x06);
    /// Missing parameter.
    pub const MISSING_PARAMETER: (u8, u8) = (0x02, 0x07);
    /// Session type not supported.
    pub const SESSION_TYPE_UNSUPPORTED: (u8, u8) = (0x02, 0x09);
    /// Session does not exist.
    pub const SESSION_DOES_NOT_EXIST: (u8, u8) = (0x02, 0x0a);
    /// Invalid request during login.
    pub const INVALID_DURING_LOGIN: (u8, u8) = (0x02, 0x0b);
    /// Target error.
    pub const TARGET_ERROR: (u8, u8) = (0x03, 0x00);
    /// Service unavailable.
    pub const SERVICE_UNAVAILABLE: (u8, u8) = (0x03, 0x01);
    /// Out of resources.
    pub const OUT_OF_RESOURCES: (u8, u8) = (0x03, 0x02);
}

/// The connection facts the login needs. `shard` is the owning event loop's index, recorded
/// in the session registry so a reinstating login elsewhere can reach this session.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LoginCtx {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Target portal group tag of the portal the connection came in on (tgt: always 1).
    pub tpgt: u16,
    pub shard: usize,
}

/// Which kind of session a login created (RFC 7143 §13.6 SessionType).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// SendTargets only; no LUs.
    Discovery,
    /// A session on target `tid`.
    Normal { tid: u32 },
}

/// What a successful login hands to the full-feature phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    pub kind: SessionKind,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// `"<InitiatorName>,i,0x<isid>"`, the SCSI initiator port (reservations, registry).
    pub initiator_port: String,
    pub isid: Isid,
    /// The session's TSIH; unregister it from the registry when the session ends (normal
    /// sessions only; discovery sessions get the dummy TSIH 1 and are not registered, as in
    /// tgt).
    pub tsih: Tsih,
    pub cid: Cid,
    pub params: SessionParams,
    /// The CmdSN the first full-feature command carries (the login's CmdSN: login PDUs are
    /// immediate, RFC 7143 §6.1).
    pub exp_cmd_sn: CmdSn,
    /// The StatSN of the next response on this connection.
    pub next_stat_sn: StatSn,
    /// An old session of the same initiator port that this login reinstates (RFC 7143
    /// §6.3.5): (shard, tid, tsih). Its shard must close it, without a Logout Response.
    pub reinstate: Option<(usize, u32, Tsih)>,
}

/// What to do with one Login Request's answer.
#[derive(Debug)]
pub enum LoginStep {
    /// Send; keep reading Login Requests.
    Continue { bhs: Bhs, data: Vec<u8> },
    /// Send; the connection is in the full-feature phase with this session.
    Done {
        bhs: Bhs,
        data: Vec<u8>,
        session: Box<LoginOutcome>,
    },
    /// Send; then close the connection.
    Fail { bhs: Bhs, data: Vec<u8> },
    /// Nothing to send yet: run the target's redirect callback (execv semantics: `argv[0]` is
    /// a path, no shell) and hand its output to [`LoginSm::on_callback`]. The login is parked
    /// until then; the connection must not feed it more PDUs.
    RunCallback { argv: Vec<String> },
}

impl LoginStep {
    /// The response header (none while a callback runs).
    pub fn bhs(&self) -> Option<&Bhs> {
        match self {
            LoginStep::Continue { bhs, .. }
            | LoginStep::Done { bhs, .. }
            | LoginStep::Fail { bhs, .. } => Some(bhs),
            LoginStep::RunCallback { .. } => None,
        }
    }
    /// The response data segment.
    pub fn data(&self) -> &[u8] {
        match self {
            LoginStep::Continue { data, .. }
            | LoginStep::Done { data, .. }
            | LoginStep::Fail { data, .. } => data,
            LoginStep::RunCallback { .. } => &[],
        }
    }
}

/// Why a login failed; each maps to one status (see [`LoginError::status`]) and names the
/// rule broken, for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("version range {min}..={max} excludes 0")]
    UnsupportedVersion { min: u8, max: u8 },
    #[error("bad text: {0}")]
    Text(#[from] TextError),
    #[error("negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    #[error("{0} missing from the leading login")]
    MissingKey(&'static str),
    #[error("login key {0} given twice")]
    DuplicateLoginKey(&'static str),
    #[error("iSCSI name too long")]
    NameTooLong,
    #[error("SessionType {0:?} is neither Discovery nor Normal")]
    BadSessionType(String),
    #[error("system is offline")]
    SystemOffline,
    #[error("no target named {0}")]
    TargetNotFound(String),
    #[error("target is offline")]
    TargetOffline,
    #[error("ACL refuses the initiator")]
    AclDenied,
    #[error("redirected to {address}")]
    Redirected { permanent: bool, address: String },
    #[error("redirect callback failed: {0}")]
    Callback(CallbackError),
    #[error("Login Request while the redirect callback runs")]
    CallbackPending,
    #[error("CHAP is required but not offered")]
    AuthRequired,
    #[error("no acceptable AuthMethod in {0:?}")]
    NoAuthMethod(String),
    #[error("TSIH {0:?} names no session of this initiator")]
    NoSuchSession(Tsih),
    #[error("adding a connection to a session (MaxConnections=1)")]
    TooManyConnections,
    #[error("CSG {got:?} where {expected:?} was expected")]
    WrongStage { expected: Stage, got: Stage },
    #[error("invalid stage transition")]
    BadTransition,
    #[error("C and T bits both set")]
    ContinueWithTransit,
    #[error("ISID, TSIH or CID changed within the login")]
    IdentityChanged,
    #[error("security key {0} outside the security stage")]
    SecurityKeyOutOfStage(String),
    #[error("data sent while the target continues its response")]
    UnexpectedData,
    #[error("too many login PDUs")]
    TooManyPdus,
    #[error("login already finished")]
    Finished,
    #[error("no free TSIH")]
    OutOfSessions,
}

impl From<RedirectTo> for LoginError {
    fn from(to: RedirectTo) -> LoginError {
        LoginError::Redirected {
            permanent: to.permanent,
            address: to.address,
        }
    }
}

impl LoginError {
    /// The Login Response status class and detail (RFC 7143 §11.13.5).
    pub fn status(&self) -> (u8, u8) {
        use status::*;
        match self {
            LoginError::UnsupportedVersion { .. } => UNSUPPORTED_VERSION,
            LoginError::Chap(e) => e.status(),
            LoginError::MissingKey(_) => MISSING_PARAMETER,
            LoginError::BadSessionType(_) => SESSION_TYPE_UNSUPPORTED,
            LoginError::SystemOffline | LoginError::TargetOffline => SERVICE_UNAVAILABLE,
            // tgt: a callback that cannot be run or whose answer does not parse.
            LoginError::Callback(_) => TARGET_ERROR,
            // tgt answers "not found" for refused ACLs too, so a refused initiator cannot
            // probe which targets exist.
            LoginError::TargetNotFound(_) | LoginError::AclDenied => NOT_FOUND,
            LoginError::Redirected {
                permanent: true, ..
            } => TARGET_MOVED_PERMANENTLY,
            LoginError::Redirected {
                permanent: false, ..
            } => TARGET_MOVED_TEMPORARILY,
            LoginError::AuthRequired | LoginError::NoAuthMethod(_) => AUTH_FAILED,
            LoginError::NoSuchSession(_) => SESSION_DOES_NOT_EXIST,
            LoginError::TooManyConnections => TOO_MANY_CONNECTIONS,
            LoginError::Finished => INVALID_DURING_LOGIN,
            LoginError::OutOfSessions => OUT_OF_RESOURCES,
            _ => INITIATOR_ERROR,
        }
    }
}

/// Where authentication stands.
#[derive(Clone, Debug)]
enum Auth {
    /// AuthMethod not negotiated yet.
    Unknown,
    /// AuthMethod=None agreed (no incoming accounts).
    None,
    /// AuthMethod=CHAP agreed; the exchange runs.
    Chap(ChapServer),
    /// CHAP succeeded.
    ChapDone,
}

impl Auth {
    fn complete(&self) -> bool {
        matches!(self, Auth::None | Auth::ChapDone)
    }
}

/// The facts fixed by the leading Login Request.
#[derive(Clone, Debug)]
struct Leading {
    isid: Isid,
    tsih: Tsih,
    cid: Cid,
}

/// What the first complete text established.
#[derive(Clone, Debug)]
struct Session {
    kind: SessionKind,
    initiator_name: String,
    initiator_alias: Option<String>,
    accounts: ChapAccounts,
    neg: Negotiator,
}

/// A response too long for one PDU, being sent in pieces (RFC 7143 §6.2, C bit).
#[derive(Debug)]
struct Pending {
    rest: Vec<u8>,
    /// The header flags of the last piece.
    transit: bool,
    csg: Stage,
    nsg: Stage,
    outcome: Option<Box<LoginOutcome>>,
}

/// A Login Request parked while the target's redirect callback runs: everything needed to
/// answer it once the callback's result arrives.
#[derive(Debug)]
struct Parked {
    req: LoginReq,
    keys: TextPairs,
    stage: Stage,
    nsg: Option<Stage>,
    /// The target's configured name. After the callback the target is looked up again, in
    /// the configuration current then, so a target deleted or taken offline meanwhile is
    /// refused rather than logged in to from a stale view.
    target: String,
}

/// How the first complete text of a login ended.
enum Started {
    /// The initiator may go on (authentication and negotiation next).
    Admitted,
    /// The target's redirect callback must run first.
    Callback { argv: Vec<String>, target: String },
}

/// The login's stage (RFC 7143 §6.3), explicit.
#[derive(Debug)]
enum State {
    /// No Login Request seen yet.
    Start,
    /// In a stage, reading (possibly continued) requests.
    In(Stage),
    /// Sending the pieces of a long response.
    Sending(Pending),
    /// The target's redirect callback runs; the request that started the login waits here.
    AwaitingCallback(Box<Parked>),
    /// Done or failed: nothing more is accepted.
    Finished,
}

/// One connection's login. Exists so each PDU is checked against what came before (stage,
/// identity, continuation) in one place.
#[derive(Debug)]
pub struct LoginSm {
    ctx: LoginCtx,
    state: State,
    leading: Option<Leading>,
    session: Option<Session>,
    auth: Auth,
    inbuf: TextBuffer,
    stat_sn: StatSn,
    exp_cmd_sn: CmdSn,
    window: u32,
    pdus: u32,
    sent_tpgt: bool,
}

impl LoginSm {
    /// A login on a new connection.
    pub fn new(ctx: LoginCtx) -> LoginSm {
        LoginSm {
            ctx,
            state: State::Start,
            leading: None,
            session: None,
            auth: Auth::Unknown,
            inbuf: TextBuffer::new(),
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            window: 1,
            pdus: 0,
            sent_tpgt: false,
        }
    }

    /// Takes one Login Request (header and its data segment) and returns the response.
    pub fn on_pdu(
        &mut self,
        req: &LoginReq,
        data: &[u8],
        cfg: &ConfigSnapshot,
        reg: &SessionRegistry,
    ) -> LoginStep {
        if matches!(self.state, State::Start) {
            // RFC 7143 §11.13.4: the target chooses the first StatSN; we continue from the
            // initiator's ExpStatSN, which is what it expects.
            self.stat_sn = req.exp_stat_sn;
            self.leading = Some(Leading {
                isid: req.isid,
                tsih: req.tsih,
                cid: req.cid,
            });
        }
        self.exp_cmd_sn = req.cmd_sn;
        match self.step(req, data, cfg, reg) {
            Ok(step) => step,
            Err(e) => self.fail(req, e),
        }
    }

    fn step(
        &mut self,
        req: &LoginReq,
        data: &[u8],
        cfg: &ConfigSnapshot,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        self.pdus += 1;
        if self.pdus > MAX_LOGIN_PDUS {
            return Err(LoginError::TooManyPdus);
        }
        // RFC 7143 §11.12.4: version 0 is the only one.
        if req.version_min > 0 {
            return Err(LoginError::UnsupportedVersion {
                min: req.version_min,
                max: req.version_max,
            });
        }
        let l = self.leading.as_ref().expect("set on the first PDU");
        if (l.isid, l.tsih, l.cid) != (req.isid, req.tsih, req.cid) {
            return Err(LoginError::IdentityChanged);
        }
        if req.continue_ && req.transit {
            // RFC 7143 §11.12.2: a request with C=1 MUST have T=0.
            return Err(LoginError::ContinueWithTransit);
        }
        let stage = match std::mem::replace(&mut self.state, State::Finished) {
            State::Start => match req.csg {
                Stage::Security | Stage::Operational => req.csg,
                got => {
                    return Err(LoginError::WrongStage {
                        expected: Stage::Security,
                        got,
                    })
                }
            },
            State::In(stage) => stage,
            State::Sending(p) => return self.send_more(req, data, p, reg),
            State::AwaitingCallback(_) => return Err(LoginError::CallbackPending),
            State::Finished => return Err(LoginError::Finished),
        };
        if req.csg != stage {
            return Err(LoginError::WrongStage {
                expected: stage,
                got: req.csg,
            });
        }
        let nsg = if req.transit {
            match req.nsg {
                Some(n) if n > stage => Some(n),
                _ => return Err(LoginError::BadTransition),
            }
        } else {
            None
        };
        if req.continue_ {
            // RFC 7143 §6.2: answer each continued piece with an empty response.
            self.inbuf.push(data)?;
            self.state = State::In(stage);
            return self.respond(req, stage, None, Vec::new(), None, reg);
        }
        let keys = self.inbuf.finish(data)?;
        if self.session.is_none() {
            if let Started::Callback { argv, target } = self.start(req, &keys, cfg, reg)? {
                self.state = State::AwaitingCallback(Box::new(Parked {
                    req: req.clone(),
                    keys,
                    stage,
                    nsg,
                    target,
                }));
                return Ok(LoginStep::RunCallback { argv });
            }
        }
        self.answer(req, &keys, stage, nsg, reg)
    }

    /// Takes the result of the redirect callback [`LoginStep::RunCallback`] asked for (its
    /// output, or why there is none) and answers the parked Login Request: a redirect, a
    /// target error (0x0300, as tgt when the callback fails or its output does not parse), or
    /// the login carrying on as if the target had no redirect. `None` when no callback was
    /// awaited (a stale result): nothing to send.
    pub fn on_callback(
        &mut self,
        result: Result<Vec<u8>, CallbackError>,
        cfg: &ConfigSnapshot,
        reg: &SessionRegistry,
    ) -> Option<LoginStep> {
        let p = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingCallback(p) => p,
            other => {
                self.state = other;
                return None;
            }
        };
        let Parked {
            req,
            keys,
            stage,
            nsg,
            target,
        } = *p;
        Some(
            match self.resume(&req, &keys, stage, nsg, &target, result, cfg, reg) {
                Ok(step) => step,
                Err(e) => self.fail(&req, e),
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn resume(
        &mut self,
        req: &LoginReq,
        keys: &TextPairs,
        stage: Stage,
        nsg: Option<Stage>,
        target: &str,
        result: Result<Vec<u8>, CallbackError>,
        cfg: &ConfigSnapshot,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        let out = result.map_err(LoginError::Callback)?;
        let a = redirect::parse_answer(&out).map_err(|e| LoginError::Callback(e.into()))?;
        if let Some(to) = redirect::resolve(&a.address, a.port, a.permanent, self.ctx.peer.ip()) {
            return Err(to.into());
        }
        if !cfg.system_ready {
            return Err(LoginError::SystemOffline);
        }
        let t = cfg
            .target_by_name(target)
            .ok_or_else(|| LoginError::TargetNotFound(target.to_string()))?;
        self.admit(req, keys, t, reg)?;
        self.answer(req, keys, stage, nsg, reg)
    }

    /// Answers a complete text once the login has started: the stage's keys, and the move
    /// to the next stage.
    fn answer(
        &mut self,
        req: &LoginReq,
        keys: &TextPairs,
        stage: Stage,
        nsg: Option<Stage>,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        let mut out = TextPairs::new();
        if !self.sent_tpgt {
            self.sent_tpgt = true;
            out.push("TargetPortalGroupTag", &self.ctx.tpgt.to_string());
        }
        let next = match stage {
            Stage::Security => self.security(keys, nsg, &mut out)?,
            Stage::Operational => self.operational(keys, nsg, &mut out)?,
            Stage::FullFeature => unreachable!("never a current stage"),
        };
        match next {
            None => {
                self.state = State::In(stage);
                self.respond(req, stage, None, out.encode(), None, reg)
            }
            Some(Stage::FullFeature) => {
                let outcome = self.outcome(req);
                self.respond(
                    req,
                    stage,
                    Some(Stage::FullFeature),
                    out.encode(),
                    Some(outcome),
                    reg,
                )
            }
            Some(n) => {
                self.state = State::In(n);
                self.respond(req, stage, Some(n), out.encode(), None, reg)
            }
        }
    }

    /// The first complete text: who the initiator is and what it wants (tgt `login_start`).
    fn start(
        &mut self,
        req: &LoginReq,
        keys: &TextPairs,
        cfg: &ConfigSnapshot,
        reg: &SessionRegistry,
    ) -> Result<Started, LoginError> {
        for k in [
            "InitiatorName",
            "TargetName",
            "SessionType",
            "InitiatorAlias",
        ] {
            if keys.count(k) > 1 {
                return Err(LoginError::DuplicateLoginKey(k));
            }
        }
        let name = keys
            .get("InitiatorName")
            .filter(|n| !n.is_empty())
            .ok_or(LoginError::MissingKey("InitiatorName"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(LoginError::NameTooLong);
        }
        let discovery = match keys.get("SessionType") {
            None | Some("Normal") => false,
            Some("Discovery") => true,
            Some(other) => return Err(LoginError::BadSessionType(other.to_string())),
        };
        if !cfg.system_ready {
            return Err(LoginError::SystemOffline);
        }
        if discovery {
            if req.tsih.0 != 0 {
                return Err(LoginError::NoSuchSession(req.tsih));
            }
            self.begin(
                SessionKind::Discovery,
                keys,
                cfg.discovery_chap.clone(),
                &TargetParams::default(),
            );
            return Ok(Started::Admitted);
        }
        let tname = keys
            .get("TargetName")
            .filter(|n| !n.is_empty())
            .ok_or(LoginError::MissingKey("TargetName"))?;
        let t: &Arc<TargetView> = cfg
            .target_by_name(tname)
            .ok_or_else(|| LoginError::TargetNotFound(tname.to_string()))?;
        // tgt's order: redirect, then state, then ACL (iscsid.c login_start), for every
        // login of a normal session, leading or not.
        match &t.redirect {
            Some(Redirect::Callback { argv }) => {
                return Ok(Started::Callback {
                    argv: redirect::callback_argv(argv, &t.name, self.ctx.peer.ip()),
                    target: t.name.clone(),
                })
            }
            Some(Redirect::Static {
                address,
                port,
                permanent,
            }) => {
                if let Some(to) = redirect::resolve(address, *port, *permanent, self.ctx.peer.ip())
                {
                    return Err(to.into());
                }
            }
            None => {}
        }
        self.admit(req, keys, t, reg)?;
        Ok(Started::Admitted)
    }

    /// The checks of a normal session's login after the redirect: the target's state, its
    /// ACL, and (for a login that names a session) whether connections may be added.
    fn admit(
        &mut self,
        req: &LoginReq,
        keys: &TextPairs,
        t: &TargetView,
        reg: &SessionRegistry,
    ) -> Result<(), LoginError> {
        let name = keys.get("InitiatorName").unwrap_or_default();
        if !t.ready {
            return Err(LoginError::TargetOffline);
        }
        if !t.acl.allows(self.ctx.peer.ip(), name) {
            return Err(LoginError::AclDenied);
        }
        if req.tsih.0 != 0 {
            // A non-leading login: adding a connection to a session. We run one
            // connection per session (MaxConnections=1).
            let port = initiator_port(name, req.isid);
            return Err(match reg.lookup(t.tid, req.tsih) {
                Some(e) if e.initiator_port.eq_ignore_ascii_case(&port) => {
                    LoginError::TooManyConnections
                }
                _ => LoginError::NoSuchSession(req.tsih),
            });
        }
        self.begin(
            SessionKind::Normal { tid: t.tid },
            keys,
            t.chap.clone(),
            &t.params,
        );
        Ok(())
    }

    /// Records who logs in to what; authentication and negotiation follow.
    fn begin(
        &mut self,
        kind: SessionKind,
        keys: &TextPairs,
        accounts: ChapAccounts,
        params: &TargetParams,
    ) {
        let discovery = kind == SessionKind::Discovery;
        self.window = params.max_queue_cmd();
        self.session = Some(Session {
            kind,
            initiator_name: keys.get("InitiatorName").unwrap_or_default().to_string(),
            initiator_alias: keys.get("InitiatorAlias").map(str::to_string),
            accounts,
            neg: Negotiator::new(params, discovery),
        });
    }

    /// Security stage text (RFC 7143 §6.3.1, §12). Returns the stage to move to, if any.
    fn security(
        &mut self,
        keys: &TextPairs,
        nsg: Option<Stage>,
        out: &mut TextPairs,
    ) -> Result<Option<Stage>, LoginError> {
        // RFC 7143 §6.2: a key may be offered once. Two AuthMethod or CHAP_R values in one
        // text would let an initiator try two answers where the exchange allows one.
        if let Some((k, _)) = keys
            .iter()
            .find(|(k, _)| is_security_key(k) && keys.count(k) > 1)
        {
            return Err(NegotiationError::Duplicate(k.to_string()).into());
        }
        let s = self.session.as_mut().expect("started");
        let chap_required = !s.accounts.incoming.is_empty();
        match &mut self.auth {
            Auth::Unknown => match keys.get("AuthMethod") {
                Some(offer) => {
                    // tgt's rule: the first offered method that matches the configuration.
                    let pick = offer.split(',').find(|m| match *m {
                        "None" => !chap_required,
                        "CHAP" => chap_required,
                        _ => false,
                    });
                    match pick {
                        Some("CHAP") => {
                            out.push("AuthMethod", "CHAP");
                            self.auth = Auth::Chap(ChapServer::new());
                            if keys.get("CHAP_A").is_some() {
                                self.chap(keys, out)?;
                            }
                        }
                        Some(_) => {
                            out.push("AuthMethod", "None");
                            self.auth = Auth::None;
                        }
                        None => return Err(LoginError::NoAuthMethod(offer.to_string())),
                    }
                }
                None if chap_required => return Err(LoginError::AuthRequired),
                // Lenient: an initiator that names no method gets none, when none is needed.
                None => self.auth = Auth::None,
            },
            Auth::Chap(_) if keys.get("AuthMethod").is_some() => {
                // AuthMethod was settled when CHAP was chosen (RFC 7143 §6.2).
                return Err(NegotiationError::Duplicate("AuthMethod".into()).into());
            }
            Auth::Chap(_) => self.chap(keys, out)?,
            Auth::None | Auth::ChapDone => {
                if let Some((k, _)) = keys.iter().find(|(k, _)| is_security_key(k)) {
                    return Err(NegotiationError::Duplicate(k.to_string()).into());
                }
            }
        }
        // Operational keys offered in the security stage (RFC 7143 §6.3: allowed once the
        // security negotiation is settled; we accept them at any point of it).
        let s = self.session.as_mut().expect("started");
        out.extend(s.neg.negotiate(keys)?);
        let Some(nsg) = nsg else { return Ok(None) };
        if !self.auth.complete() {
            // CHAP still running: stay (RFC 7143 §6.2: the target may answer T=0).
            return Ok(None);
        }
        if nsg == Stage::FullFeature {
            out.extend(s.neg.declarations());
            if s.neg.awaiting_answers() {
                // Our offers need answers: go to the operational stage instead.
                return Ok(Some(Stage::Operational));
            }
        }
        Ok(Some(nsg))
    }

    fn chap(&mut self, keys: &TextPairs, out: &mut TextPairs) -> Result<(), LoginError> {
        let s = self.session.as_ref().expect("started");
        let Auth::Chap(server) = &mut self.auth else {
            unreachable!("only called during CHAP")
        };
        match server.step(keys, &s.accounts)? {
            ChapStep::Continue(k) => out.extend(k),
            ChapStep::Authenticated(k) => {
                out.extend(k);
                self.auth = Auth::ChapDone;
            }
        }
        Ok(())
    }

    /// Operational stage text (RFC 7143 §6.3.2).
    fn operational(
        &mut self,
        keys: &TextPairs,
        nsg: Option<Stage>,
        out: &mut TextPairs,
    ) -> Result<Option<Stage>, LoginError> {
        if !self.auth.complete() {
            // Entered without a security stage: allowed only when no CHAP is required.
            let s = self.session.as_ref().expect("started");
            if !s.accounts.incoming.is_empty() {
                return Err(LoginError::AuthRequired);
            }
            self.auth = Auth::None;
        }
        if let Some((k, _)) = keys.iter().find(|(k, _)| is_security_key(k)) {
            return Err(LoginError::SecurityKeyOutOfStage(k.to_string()));
        }
        let s = self.session.as_mut().expect("started");
        out.extend(s.neg.negotiate(keys)?);
        out.extend(s.neg.declarations());
        if nsg.is_some() && !s.neg.awaiting_answers() {
            return Ok(nsg);
        }
        Ok(None)
    }

    /// Builds the outcome; a normal session's TSIH comes from [`LoginSm::register`] when the
    /// last response piece goes out.
    fn outcome(&mut self, req: &LoginReq) -> Box<LoginOutcome> {
        let s = self.session.as_ref().expect("started");
        let port = initiator_port(&s.initiator_name, req.isid);
        // Discovery sessions get tgt's dummy TSIH 1 and are not registered.
        let (tsih, reinstate) = (Tsih(1), None);
        Box::new(LoginOutcome {
            kind: s.kind.clone(),
            initiator_name: s.initiator_name.clone(),
            initiator_alias: s.initiator_alias.clone(),
            initiator_port: port,
            isid: req.isid,
            tsih,
            cid: req.cid,
            params: s.neg.session_params(),
            exp_cmd_sn: req.cmd_sn,
            next_stat_sn: StatSn(0), // set when the last response is stamped
            reinstate,
        })
    }

    /// Registers a normal session in the registry, as its final Login Response is built and
    /// not before: a connection lost while a long final response is still going out in
    /// pieces must leave no TSIH behind (nobody would ever unregister it).
    fn register(&self, o: &mut LoginOutcome, reg: &SessionRegistry) -> Result<(), LoginError> {
        if let SessionKind::Normal { tid } = o.kind {
            let r = reg
                .register(tid, &o.initiator_port, self.ctx.shard)
                .map_err(|_| LoginError::OutOfSessions)?;
            o.tsih = r.tsih;
            o.reinstate = r.replaced;
        }
        Ok(())
    }

    fn seq(&mut self) -> SeqFields {
        let s = SeqFields {
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.exp_cmd_sn.plus(self.window.max(1) - 1),
        };
        self.stat_sn = self.stat_sn.next();
        s
    }

    /// Builds a response, splitting text beyond [`LOGIN_MAX_DATA`] across PDUs with the C
    /// bit; `outcome` completes the login when the last piece goes.
    fn respond(
        &mut self,
        req: &LoginReq,
        csg: Stage,
        nsg: Option<Stage>,
        mut data: Vec<u8>,
        outcome: Option<Box<LoginOutcome>>,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        if data.len() > LOGIN_MAX_DATA {
            let rest = data.split_off(LOGIN_MAX_DATA);
            self.state = State::Sending(Pending {
                rest,
                transit: nsg.is_some(),
                csg,
                nsg: nsg.unwrap_or(csg),
                outcome,
            });
            let mut bhs = self.header(req, false, csg, csg, (0, 0));
            bhs.0[1] |= 0x40; // C: more text follows
            bhs.set_data_len(data.len());
            return Ok(LoginStep::Continue { bhs, data });
        }
        self.last_piece(
            req,
            nsg.is_some(),
            csg,
            nsg.unwrap_or(csg),
            data,
            outcome,
            reg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn last_piece(
        &mut self,
        req: &LoginReq,
        transit: bool,
        csg: Stage,
        nsg: Stage,
        data: Vec<u8>,
        mut outcome: Option<Box<LoginOutcome>>,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        if let Some(o) = outcome.as_mut() {
            self.register(o, reg)?;
        }
        let tsih = outcome.as_ref().map_or(req.tsih, |o| o.tsih);
        let mut bhs = Bhs::login_response(transit, csg, nsg, req.isid, tsih, req.itt, 0, 0);
        bhs.set_seq(self.seq());
        bhs.set_data_len(data.len());
        match outcome {
            Some(mut session) => {
                self.state = State::Finished;
                session.next_stat_sn = self.stat_sn;
                Ok(LoginStep::Done { bhs, data, session })
            }
            None => Ok(LoginStep::Continue { bhs, data }),
        }
    }

    fn header(
        &mut self,
        req: &LoginReq,
        transit: bool,
        csg: Stage,
        nsg: Stage,
        st: (u8, u8),
    ) -> Bhs {
        let mut bhs =
            Bhs::login_response(transit, csg, nsg, req.isid, req.tsih, req.itt, st.0, st.1);
        bhs.set_seq(self.seq());
        bhs
    }

    /// The next piece of a long response (the initiator sends empty requests for them).
    fn send_more(
        &mut self,
        req: &LoginReq,
        data: &[u8],
        mut p: Pending,
        reg: &SessionRegistry,
    ) -> Result<LoginStep, LoginError> {
        if !data.is_empty() || req.transit || req.continue_ {
            return Err(LoginError::UnexpectedData);
        }
        if req.csg != p.csg {
            return Err(LoginError::WrongStage {
                expected: p.csg,
                got: req.csg,
            });
        }
        if p.rest.len() > LOGIN_MAX_DATA {
            let rest = p.rest.split_off(LOGIN_MAX_DATA);
            let piece = std::mem::replace(&mut p.rest, rest);
            let csg = p.csg;
            self.state = State::Sending(p);
            let mut bhs = self.header(req, false, csg, csg, (0, 0));
            bhs.0[1] |= 0x40;
            bhs.set_data_len(piece.len());
            return Ok(LoginStep::Continue { bhs, data: piece });
        }
        if p.outcome.is_none() {
            self.state = State::In(if p.transit { p.nsg } else { p.csg });
        }
        self.last_piece(req, p.transit, p.csg, p.nsg, p.rest, p.outcome, reg)
    }

    fn fail(&mut self, req: &LoginReq, e: LoginError) -> LoginStep {
        crate::log::event::login_refused(self.ctx.peer, &e);
        self.state = State::Finished;
        let mut text = TextPairs::new();
        if let LoginError::Redirected { address, .. } = &e {
            text.push("TargetAddress", address);
        }
        let data = text.encode();
        let csg = match req.csg {
            Stage::FullFeature => Stage::Security,
            s => s,
        };
        let mut bhs = self.header(req, false, csg, csg, e.status());
        bhs.set_data_len(data.len());
        LoginStep::Fail { bhs, data }
    }
}

#[cfg(test)]
mod tests;
