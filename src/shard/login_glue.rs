//! Where received bytes meet the protocol cores: framing PDUs out of a connection's receive
//! buffer and handing them to the login state machine or the full-feature session, applying
//! login steps (responses, failure, the move to full feature phase, parked logins waiting for
//! a redirect callback) and ending the login deadline once login is done.

use super::callback::CallbackResult;
use super::conn::{Conn, Phase};
use super::event_loop::Shard;
use super::msg::{ConnInfo, ControlEvent, ShardMsg};
use super::ring::clock;
use super::slots::SlotKey;
use super::Shared;
use crate::buf::BufPool;
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::login::{LoginOutcome, LoginStep, SessionKind};
use crate::iscsi::pdu::Request;
use crate::iscsi::rx::{next_pdu, RxLimits, RxStep};
use crate::iscsi::session::{FfpParams, Kind, Session, WriteBudget};
use crate::iscsi::tx::{Payload, TxPdu};
use crate::log::Untrusted;
use crate::scsi::{NexusId, NexusState, UnitAttention};
use std::net::SocketAddr;
use std::sync::Arc;

impl Shard {
    /// Frames and handles every complete PDU in the connection's receive buffer.
    pub(super) fn parse_pdus(&mut self, k: SlotKey) {
        let now_ns = clock();
        let cfg = self.cfg.clone();
        let shared = self.shared.clone();
        let shard_id = self.id;
        let pool = self.pool.clone();
        let budget = self.budgets.write.clone();
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        let mut consumed = 0usize;
        let mut fatal = false;
        let mut session_up = None;
        let mut callback = None;
        while !c.closing && !c.close_after_flush && !c.callback_running {
            let lim = match &c.phase {
                Phase::Login(_) => RxLimits::default(),
                Phase::Ffp(s) => s.rx_limits(),
            };
            match next_pdu(&c.rx[consumed..c.rx_len], lim) {
                RxStep::Incomplete { need } => {
                    c.rx_reserve(need);
                    break;
                }
                RxStep::Fatal { error, bhs } => {
                    crate::log::event::connection_closed(c.peer, &error);
                    if let (Some(bhs), Phase::Ffp(s)) = (bhs, &mut c.phase) {
                        s.queue(
                            crate::iscsi::pdu::Bhs::reject(
                                crate::iscsi::pdu::RejectReason::ProtocolError,
                            ),
                            Payload::Owned(bhs.to_vec()),
                        );
                    }
                    fatal = true;
                    break;
                }
                RxStep::Pdu { pdu, len } => {
                    let slice = &c.rx[consumed..consumed + len];
                    if pdu.bhs[0] & 0x3f == crate::iscsi::pdu::op::SCSI_CMD {
                        c.peer_exp_stat_sn = Some(u32::from_be_bytes(
                            pdu.bhs[28..32].try_into().expect("4 bytes"),
                        ));
                    }
                    match &mut c.phase {
                        Phase::Ffp(s) => {
                            s.on_pdu(&pdu, slice, now_ns);
                            // Logout, a data digest error or TARGET COLD RESET: nothing after
                            // this PDU is read or run (RFC 7143 §11.14).
                            c.close_after_flush |= s.close.is_some();
                        }
                        Phase::Login(sm) => {
                            let data = &slice[pdu.data.clone()];
                            match &pdu.req {
                                Request::Login(req) => {
                                    let step = sm.on_pdu(req, data, &cfg, &shared.registry);
                                    let bufs = (&pool, &budget);
                                    match apply_login_step(c, step, &cfg, &shared, bufs, shard_id) {
                                        AfterLogin::Nothing => {}
                                        AfterLogin::SessionUp(ev) => session_up = Some(ev),
                                        AfterLogin::RunCallback(argv) => callback = Some(argv),
                                    }
                                }
                                _ => {
                                    // RFC 7143 §6.1: only Login PDUs before full feature phase.
                                    fatal = true;
                                }
                            }
                        }
                    }
                    consumed += len;
                    if fatal {
                        break;
                    }
                }
            }
        }
        if consumed > 0 {
            c.rx.copy_within(consumed..c.rx_len, 0);
            c.rx_len -= consumed;
        }
        if fatal {
            c.close_after_flush = true;
        }
        self.end_login_deadline(k);
        if let Some(ev) = session_up {
            let _ = shared.control.send(ev);
        }
        if let Some(argv) = callback {
            self.start_callback(k, argv);
        }
    }

    /// Once in full feature phase, the login deadline no longer applies.
    fn end_login_deadline(&mut self, k: SlotKey) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        if matches!(c.phase, Phase::Ffp(_)) {
            if let Some(t) = c.login_timer.take() {
                self.timers.cancel(t);
            }
        }
    }

    /// Hands a parked login's redirect callback to the runner; its result comes back as
    /// [`ShardMsg::CallbackDone`]. Refused at once (runner full, no thread): the login gets
    /// the failure now.
    fn start_callback(&mut self, k: SlotKey, argv: Vec<String>) {
        let (shared, shard) = (self.shared.clone(), self.id);
        let started = self.shared.callbacks.start(argv, move |result| {
            shared.send(shard, ShardMsg::CallbackDone { conn: k, result })
        });
        if let Err(e) = started {
            self.callback_done(k, Err(e));
        }
    }

    /// A redirect callback's result: the parked login answers, then the PDUs that arrived
    /// behind its request are read.
    pub(super) fn callback_done(&mut self, k: SlotKey, result: CallbackResult) {
        let cfg = self.cfg.clone();
        let shared = self.shared.clone();
        let pool = self.pool.clone();
        let budget = self.budgets.write.clone();
        let Some(c) = self
            .conns
            .get_mut(k)
            .filter(|c| c.callback_running && !c.closing)
        else {
            return;
        };
        c.callback_running = false;
        let Phase::Login(sm) = &mut c.phase else {
            return;
        };
        let Some(step) = sm.on_callback(result, &cfg, &shared.registry) else {
            return;
        };
        match apply_login_step(c, step, &cfg, &shared, (&pool, &budget), self.id) {
            AfterLogin::Nothing => {}
            AfterLogin::SessionUp(ev) => {
                let _ = shared.control.send(ev);
            }
            AfterLogin::RunCallback(argv) => {
                self.start_callback(k, argv);
                return;
            }
        }
        self.parse_pdus(k);
        self.mark(k);
    }
}

fn payload(data: Vec<u8>) -> Payload {
    if data.is_empty() {
        Payload::None
    } else {
        Payload::Owned(data)
    }
}

/// What the shard must do after a login step was applied to its connection.
enum AfterLogin {
    Nothing,
    /// A normal session is up: tell the control thread.
    SessionUp(ControlEvent),
    /// The login is parked: run the target's redirect callback.
    RunCallback(Vec<String>),
}

/// Applies one login step to its connection: queues the response, closes after it on
/// failure, enters the full feature phase on success (ending a reinstated session's nexus
/// first), or parks the connection while a redirect callback runs.
fn apply_login_step(
    c: &mut Conn,
    step: LoginStep,
    cfg: &ConfigSnapshot,
    shared: &Shared,
    (pool, budget): (&BufPool, &WriteBudget),
    shard_id: usize,
) -> AfterLogin {
    match step {
        LoginStep::Continue { bhs, data } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            AfterLogin::Nothing
        }
        LoginStep::Fail { bhs, data } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            c.close_after_flush = true;
            AfterLogin::Nothing
        }
        LoginStep::RunCallback { argv } => {
            c.callback_running = true;
            AfterLogin::RunCallback(argv)
        }
        LoginStep::Done { bhs, data, session } => {
            c.login_out
                .push_back(TxPdu::new(bhs, payload(data), false, false));
            let mut s = build_session(&session, cfg, pool.clone());
            s.set_write_budget(budget.clone());
            log_login(c.peer, &session, cfg);
            if let Some((shard, tid, tsih)) = session.reinstate {
                // Reinstatement ends the old I_T nexus (RFC 7143 §6.3.5): its SPC-2
                // reservations and removal locks go before the new session issues a command.
                if let (Some(n), Some(t)) = (&s.nexus, cfg.targets.get(&tid)) {
                    t.luns.values().for_each(|lu| lu.nexus_lost(&n.id));
                }
                shared.send(shard, ShardMsg::CloseSession { tid, tsih: tsih.0 });
            }
            let up = match s.kind {
                Kind::Normal { tid } => AfterLogin::SessionUp(ControlEvent::SessionUp {
                    shard: shard_id,
                    tid,
                    tsih: s.tsih.0,
                    initiator: s.initiator_name.clone(),
                    alias: session.initiator_alias.clone(),
                    conns: vec![ConnInfo {
                        cid: s.cid.0,
                        peer: c.peer,
                    }],
                }),
                Kind::Discovery => AfterLogin::Nothing,
            };
            // Move the login responses ahead of anything FFP queues.
            let mut q = std::mem::take(&mut c.login_out);
            q.extend(s.out.drain(..));
            s.out = q;
            c.phase = Phase::Ffp(Box::new(s));
            up
        }
    }
}

/// Builds the full-feature-phase session from a finished login.
fn build_session(o: &LoginOutcome, cfg: &ConfigSnapshot, pool: BufPool) -> Session {
    let p = &o.params;
    let params = FfpParams {
        header_digest: p.header_digest,
        data_digest: p.data_digest,
        max_recv_data: p.max_recv_data_segment_length,
        max_xmit_data: p.max_xmit_data_segment_length,
        initial_r2t: p.initial_r2t,
        immediate_data: p.immediate_data,
        first_burst: p.first_burst_length,
        max_burst: p.max_burst_length,
        max_outstanding_r2t: p.max_outstanding_r2t,
        max_queue_cmd: p.max_queue_cmd,
    };
    let (kind, nexus) = match o.kind {
        SessionKind::Discovery => (Kind::Discovery, None),
        SessionKind::Normal { tid } => {
            let port: Arc<str> = Arc::from(format!("{},i,0x{}", o.initiator_name, o.isid.hex()));
            let mut n = NexusState::new(NexusId {
                tid,
                initiator_port: port,
            });
            // A new I_T nexus starts with POWER ON, RESET OCCURRED on every LU (SAM-5 §6.3.1).
            if let Some(t) = cfg.targets.get(&tid) {
                for l in &t.lun_list {
                    n.push_ua(*l, UnitAttention::PowerOnReset);
                }
            }
            (Kind::Normal { tid }, Some(n))
        }
    };
    Session::new(
        kind,
        o.tsih,
        o.cid,
        o.isid,
        o.initiator_name.clone(),
        params,
        nexus,
        o.exp_cmd_sn,
        o.next_stat_sn,
        pool,
    )
}

/// A login finished (and, when it replaced an older session of the same initiator port, a
/// second line for the reinstatement, RFC 7143 §6.3.5).
fn log_login(peer: SocketAddr, o: &LoginOutcome, cfg: &ConfigSnapshot) {
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
