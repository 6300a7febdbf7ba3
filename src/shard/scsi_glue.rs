//! Where tasks meet the SCSI layer and the backends: a task whose data is complete is run by
//! `scsi::execute`; an inline answer is queued at once, a medium access becomes a backend
//! operation on the LU's engine, whose completion goes back through `scsi::complete` into the
//! session. Task-management events (LUN/target reset, an aborted task whose operation must be
//! cancelled) and text requests are handled here too, as are side effects for other nexuses.

use super::conn::Phase;
use super::event_loop::Shard;
use super::slots::SlotKey;
use crate::backing::engine::Completion;
use crate::backing::IoResult;
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::login::SessionKind;
use crate::iscsi::session::{Event, Kind, Session};
use crate::iscsi::task::TaskRef;
use crate::iscsi::tx::Payload;
use crate::scsi::{
    self, Effect, ExecCtx, LogicalUnit, Outcome, ScsiCommand, UaScope, UnitAttention,
};
use std::sync::Arc;

/// What running a task asks of the shard.
enum Exec {
    /// Answered (or nothing to do).
    Done,
    /// Start this backend operation.
    Io(
        Arc<LogicalUnit>,
        crate::backing::BlockIo,
        Option<crate::buf::IoBuf>,
    ),
}

impl Shard {
    /// Runs every task whose data is complete: inline answers are queued at once, backend
    /// operations are started on their LU's engine.
    pub(super) fn run_ready(&mut self, k: SlotKey) {
        let cfg = self.cfg.clone();
        loop {
            let Some(c) = self.conns.get_mut(k) else {
                return;
            };
            if c.closing {
                return;
            }
            let Phase::Ffp(s) = &mut c.phase else { return };
            let Some(r) = s.next_ready() else { return };
            let (exec, effects) = exec_task(s, &cfg, r);
            self.deliver(effects);
            if let Exec::Io(lu, io, data) = exec {
                let started = self.backends.start(
                    self.id,
                    &mut self.ring,
                    &mut self.timers,
                    &self.pool,
                    k,
                    r,
                    lu,
                    io,
                    data,
                );
                match (started, self.conns.get_mut(k)) {
                    (Some(op), Some(c)) => c.add_op(r.slot as usize, op),
                    (None, Some(c)) => {
                        // No store behind the LU after all (it went offline meanwhile).
                        if let Phase::Ffp(s) = &mut c.phase {
                            let resp = scsi::Response::error(
                                scsi::error::CmdError::MediumNotPresent,
                                false,
                            );
                            s.finish(r, resp, None);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A backend operation ended: its task finishes (unless it was aborted, or its connection
    /// is closing), and the connection forgets it.
    pub(super) fn complete_op(&mut self, c: Completion) {
        let Some(entry) = self.backends.finish(c.op) else {
            return;
        };
        let cfg = self.cfg.clone();
        let Some(conn) = self.conns.get_mut(entry.conn) else {
            return;
        };
        conn.remove_op(entry.task.slot as usize, c.op);
        let k = conn.key;
        if let Phase::Ffp(s) = &mut conn.phase {
            let effects = finish_io(s, &cfg, &entry.lu, &entry.io, entry.task, c.result, c.data);
            self.deliver(effects);
        }
        self.mark(k);
    }

    /// Cancels the backend operation of an aborted task, if it has one in flight.
    fn cancel_task(&mut self, k: SlotKey, task: TaskRef) {
        let Some(op) = self
            .conns
            .get(k)
            .and_then(|c| c.ops.get(task.slot as usize).copied().flatten())
        else {
            return;
        };
        self.backends
            .cancel(&mut self.ring, &mut self.timers, &self.pool, op);
    }

    /// Sends side effects (unit attentions for other nexuses) to every shard, this one
    /// included, by message: nexuses of a target may live on any shard.
    pub(super) fn deliver(&mut self, effects: Vec<(u32, Effect)>) {
        for (tid, e) in effects {
            let Effect::Ua { scope, lun, ua } = e;
            let (except, only) = match scope {
                UaScope::OthersOf(id) => (Some(id.initiator_port), None),
                UaScope::Only(id) => (None, Some(id.initiator_port)),
            };
            self.shared.broadcast(|| crate::shard::msg::ShardMsg::Ua {
                tid,
                lun,
                ua,
                except: except.clone(),
                only: only.clone(),
            });
        }
    }

    /// Handles what the session asked of its owner besides PDUs.
    pub(super) fn handle_events(&mut self, k: SlotKey) {
        let cfg = self.cfg.clone();
        loop {
            let Some(c) = self.conns.get_mut(k) else {
                return;
            };
            let (peer, local) = (c.peer, c.local);
            let Phase::Ffp(s) = &mut c.phase else { return };
            let Some(ev) = s.events.pop_front() else {
                return;
            };
            match ev {
                Event::Text { req, data, bhs } => {
                    text_response(s, &req, &data, &bhs, peer, local, &cfg)
                }
                Event::Cancel { task } => self.cancel_task(k, task),
                Event::LunReset { lun } => {
                    if let Some(n) = &mut s.nexus {
                        let tid = n.id.tid;
                        if let Some(lu) = cfg.targets.get(&tid).and_then(|t| t.luns.get(&lun)) {
                            lu.reset();
                        }
                        // SAM-5 §6.3.3 (logical unit reset): the unit attention is for every
                        // I_T nexus, the one that asked for the reset included.
                        n.push_ua(lun, UnitAttention::LunReset);
                        let e = Effect::Ua {
                            scope: UaScope::OthersOf(n.id.clone()),
                            lun: Some(lun),
                            ua: UnitAttention::LunReset,
                        };
                        self.deliver(vec![(tid, e)]);
                    }
                }
                Event::TargetReset { .. } => {
                    if let Some(n) = &s.nexus {
                        let tid = n.id.tid;
                        if let Some(t) = cfg.targets.get(&tid) {
                            t.luns.values().for_each(|lu| lu.reset());
                        }
                        let e = Effect::Ua {
                            scope: UaScope::OthersOf(n.id.clone()),
                            lun: None,
                            ua: UnitAttention::PowerOnReset,
                        };
                        self.deliver(vec![(tid, e)]);
                    }
                }
            }
        }
    }
}

/// Runs the SCSI layer for a task whose data is complete: the answer is queued, or the
/// backend operation to start is returned; with side effects for other nexuses.
fn exec_task(s: &mut Session, cfg: &ConfigSnapshot, r: TaskRef) -> (Exec, Vec<(u32, Effect)>) {
    let Kind::Normal { tid } = s.kind else {
        return (Exec::Done, Vec::new());
    };
    let target = cfg.targets.get(&tid);
    let luns: &[crate::scsi::Lun] = target.map(|t| &t.lun_list[..]).unwrap_or(&[]);
    let Some(t) = s.task(r) else {
        return (Exec::Done, Vec::new());
    };
    let lu = target.and_then(|tv| tv.luns.get(&t.lun)).cloned();
    if lu.is_some() {
        // tgt counts a command as submitted when it reaches an existing LU.
        let (lun, read, write, len) = (t.lun, t.read, t.write, t.expected_len);
        s.stats.submitted(lun, read, write, len);
    }
    let resp = {
        let Some((task, nexus)) = s.task_and_nexus(r) else {
            return (Exec::Done, Vec::new());
        };
        let cdb = task.cdb_bytes();
        let cmd = scsi_command(task, &cdb);
        let data = task.data.clone();
        let out_len = if task.write {
            lu.as_ref()
                .and_then(|l| scsi::data_out_len(&cdb, l.block_size()))
        } else {
            None
        };
        let mut ctx = ExecCtx {
            tid,
            lun: task.lun,
            lu: lu.as_deref(),
            luns,
            nexus,
        };
        match scsi::execute(&mut ctx, &cmd) {
            Outcome::Done(resp) => (resp, out_len),
            Outcome::Io(io) => match lu {
                Some(lu) => return (Exec::Io(lu, io, data), Vec::new()),
                None => (
                    scsi::Response {
                        status: scsi::ScsiStatus::CheckCondition,
                        sense: Vec::new(),
                        data: scsi::DataIn::None,
                        effects: Vec::new(),
                    },
                    None,
                ),
            },
        }
    };
    let (mut resp, out_len) = resp;
    let effects = std::mem::take(&mut resp.effects)
        .into_iter()
        .map(|e| (tid, e))
        .collect();
    s.finish(r, resp, out_len);
    (Exec::Done, effects)
}

/// Completes a task after its backend operation.
fn finish_io(
    s: &mut Session,
    cfg: &ConfigSnapshot,
    lu: &Arc<LogicalUnit>,
    io: &crate::backing::BlockIo,
    r: TaskRef,
    result: IoResult,
    read_buf: Option<crate::buf::IoBuf>,
) -> Vec<(u32, Effect)> {
    let Kind::Normal { tid } = s.kind else {
        return Vec::new();
    };
    let luns: &[crate::scsi::Lun] = cfg
        .targets
        .get(&tid)
        .map(|t| &t.lun_list[..])
        .unwrap_or(&[]);
    let (mut resp, out_len) = {
        let Some((task, nexus)) = s.task_and_nexus(r) else {
            return Vec::new();
        };
        let cdb = task.cdb_bytes();
        let cmd = scsi_command(task, &cdb);
        let out_len = if task.write {
            scsi::data_out_len(&cdb, lu.block_size())
        } else {
            None
        };
        let mut ctx = ExecCtx {
            tid,
            lun: task.lun,
            lu: Some(lu),
            luns,
            nexus,
        };
        (
            scsi::complete(&mut ctx, &cmd, io, result, read_buf),
            out_len,
        )
    };
    let effects = std::mem::take(&mut resp.effects)
        .into_iter()
        .map(|e| (tid, e))
        .collect();
    s.finish(r, resp, out_len);
    effects
}

/// Answers a Text Request (SendTargets discovery and key negotiation).
fn text_response(
    s: &mut Session,
    req: &crate::iscsi::pdu::TextReq,
    data: &[u8],
    req_bhs: &[u8; crate::iscsi::pdu::BHS_LEN],
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    cfg: &ConfigSnapshot,
) {
    use crate::iscsi::discovery::{TextCtx, TextReply};
    let kind = match s.kind {
        Kind::Discovery => SessionKind::Discovery,
        Kind::Normal { tid } => SessionKind::Normal { tid },
    };
    let name = s.initiator_name.clone();
    let ctx = TextCtx {
        kind: &kind,
        initiator_name: &name,
        peer_ip: peer.ip(),
        local,
        tpgt: 1,
        cfg,
        max_xmit: s.params.max_xmit_data,
        max_recv: s.params.max_recv_data,
    };
    match s.text.on_text(req, data, &ctx) {
        TextReply::Respond {
            bhs,
            data,
            new_max_xmit,
        } => {
            if let Some(m) = new_max_xmit {
                s.params.max_xmit_data = m;
            }
            s.send_text(bhs, data);
        }
        TextReply::Reject(reason) => {
            s.queue(
                crate::iscsi::pdu::Bhs::reject(reason),
                Payload::Owned(req_bhs.to_vec()),
            );
        }
    }
}

/// The SCSI layer's view of a task whose data is complete.
fn scsi_command<'a>(task: &'a crate::iscsi::task::Task, cdb: &'a [u8]) -> ScsiCommand<'a> {
    ScsiCommand {
        cdb,
        data_out: task.data_out(),
        expected_len: task.expected_len,
        read: task.read,
        write: task.write,
        attr: task.attr,
    }
}
