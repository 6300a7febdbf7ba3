//! Routes one parsed tgtadm request to the configuration model, the way tgt's `usr/mgmt.c`
//! does: driver check, then mode, then operation, with tgt's payload parsing quirks (strstr
//! for ACL values, split at the first `=` for target update, split at the first `,` for
//! account new). Returns the reply text or tgt's error code.

use super::cnum::strtoull;
use super::config::{Config, Effect};
use super::ipc::{Mode, Op, Request, TgtadmError, ACCOUNT_OUTGOING, REQ_HDR_LEN};
use super::server::DataPlane;
use super::show::{self, ConnShow, SysShow};
use super::stat::{self, Gathered};
use super::stat_admission;
use crate::backing::{self, BsOFlags};
use crate::scsi::lu::{LuInit, LuParamError};
use crate::scsi::{DeviceType, LogicalUnit, Lun, UnitAttention};
use crate::stores::{self, SUPPORTED_TYPES};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The only driver this build has.
const DRIVER: &str = "iscsi";
/// Default iSCSI port for a portal given without one.
const ISCSI_PORT: u16 = 3260;

/// What a request did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The text to send back.
    pub body: String,
    /// The configuration changed: publish a new snapshot.
    pub changed: bool,
}

fn text(body: String) -> Result<Reply, TgtadmError> {
    Ok(Reply {
        body,
        changed: false,
    })
}

fn changed() -> Result<Reply, TgtadmError> {
    Ok(Reply {
        body: String::new(),
        changed: true,
    })
}

/// Executes `req` against `cfg`, sending side effects to `plane`.
pub fn execute(
    cfg: &mut Config,
    req: &Request,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    let h = &req.hdr;
    let mode = Mode::from_wire(h.mode);
    if !h.lld.is_empty()
        && (h.lld != DRIVER || (cfg.driver.name() != "ready" && mode != Some(Mode::Lld)))
    {
        return Err(TgtadmError::NoDriver);
    }
    let op = Op::from_wire(h.op);
    match mode {
        Some(Mode::System) => system(cfg, req, op, plane),
        Some(Mode::Target) => target(cfg, req, op, plane),
        Some(Mode::Device) => device(cfg, req, op, plane),
        Some(Mode::Portal) => portal(cfg, req, op, plane),
        Some(Mode::Lld) => lld(cfg, op, plane),
        Some(Mode::Session) => match op {
            Some(Op::Stats) => text(stat::session_report(cfg, &gather(plane), h.sid)?),
            _ => Err(TgtadmError::InvalidRequest),
        },
        Some(Mode::Connection) => connection(cfg, req, op, plane),
        Some(Mode::Account) => account(cfg, req, op),
        // tgt hands show of an unknown mode to the driver, which looks the target up.
        None if op == Some(Op::Show) => cfg.target(h.tid).and(Err(TgtadmError::InvalidRequest)),
        None => Err(TgtadmError::InvalidRequest),
    }
}

fn apply(plane: &dyn DataPlane, effects: Vec<Effect>) {
    for e in effects {
        match e {
            Effect::Ua { tid, lun, ua } => plane.raise_ua(tid, lun, ua),
            Effect::CloseSession { tid, tsih } => plane.close_session(tid, tsih),
        }
    }
}

/// Asks the shards for their counters (only `--op stat` does).
fn gather(plane: &dyn DataPlane) -> Gathered {
    Gathered::new(plane.stats())
}

fn system(
    cfg: &mut Config,
    req: &Request,
    op: Option<Op>,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    match op {
        Some(Op::Update) => {
            if let Some(v) = req.payload.strip_prefix("debug=") {
                cfg.debug = if v.starts_with("on") {
                    true
                } else if v.starts_with("off") {
                    false
                } else {
                    return Err(TgtadmError::InvalidRequest);
                };
                crate::log::set_debug(cfg.debug);
                return changed();
            }
            isns_update(cfg, &req.payload)?;
            changed()
        }
        Some(Op::Show) => {
            let (global_in, global_out) = cfg.global_users();
            text(show::system(&SysShow {
                ready: cfg.system_ready,
                debug: cfg.debug,
                llds: vec![(DRIVER, cfg.driver.name())],
                backing_stores: SUPPORTED_TYPES.to_vec(),
                device_types: vec!["disk", "controller"],
                global_in,
                global_out,
                isns: cfg.isns.clone(),
            }))
        }
        Some(Op::Stats) => {
            let g = gather(plane);
            let mut out = stat::lu_report(cfg, &g, None, None);
            out.push_str(&stat_admission::section(&plane.admission()));
            out.push_str(&stat::shard_resources(&g));
            text(out)
        }
        Some(Op::Delete) if cfg.targets.is_empty() => text(String::new()),
        _ => Err(TgtadmError::InvalidRequest),
    }
}

/// tgt's `isns_update`: comma-separated items, applied here all or nothing.
fn isns_update(cfg: &mut Config, payload: &str) -> Result<(), TgtadmError> {
    let mut isns = cfg.isns.clone();
    let mut state = None;
    for item in payload.split(',').filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or(TgtadmError::InvalidRequest)?;
        match k {
            "iSNS" => {
                isns.enabled = match v {
                    "On" => true,
                    "Off" => false,
                    _ => return Err(TgtadmError::InvalidRequest),
                }
            }
            "iSNSServerIP" => isns.server_ip = v.chars().take(255).collect(),
            "iSNSServerPort" => {
                isns.server_port = v.parse().map_err(|_| TgtadmError::InvalidRequest)?
            }
            "iSNSAccessControl" => isns.access_control = v == "On",
            "State" => match v {
                "ready" | "offline" => state = Some(v == "ready"),
                _ => return Err(TgtadmError::InvalidRequest),
            },
            _ => return Err(TgtadmError::InvalidRequest),
        }
    }
    cfg.isns = isns;
    if let Some(ready) = state {
        cfg.system_ready = ready;
    }
    Ok(())
}

/// The value of `key=` in the payload, running to the end of the string (tgt's strstr).
fn strstr_value<'a>(payload: &'a str, key: &str) -> Option<&'a str> {
    payload.find(key).map(|i| &payload[i + key.len()..])
}

fn target(
    cfg: &mut Config,
    req: &Request,
    op: Option<Op>,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    let tid = req.hdr.tid;
    match op {
        Some(Op::New) => {
            let name = req
                .payload
                .split(',')
                .filter_map(|i| i.split_once('='))
                .filter(|(k, _)| *k == "targetname")
                .map(|(_, v)| v)
                .next_back()
                .ok_or(TgtadmError::InvalidRequest)?;
            cfg.target_new(tid, name)?;
            changed()
        }
        Some(Op::Delete) => {
            let effects = cfg.target_delete(tid, req.hdr.force != 0)?;
            apply(plane, effects);
            changed()
        }
        Some(op @ (Op::Bind | Op::Unbind)) => {
            let bind = op == Op::Bind;
            if req.hdr.len as usize == REQ_HDR_LEN {
                // Binding a SCSI host number is for kernel LLDs, not iSCSI.
                cfg.target(tid)?;
                return Err(TgtadmError::InvalidRequest);
            }
            let mut result = Err(TgtadmError::InvalidRequest);
            if let Some(a) = strstr_value(&req.payload, "initiator-address=") {
                result = if bind {
                    cfg.acl_add(tid, a)
                } else {
                    cfg.acl_del(tid, a)
                };
                result?;
            }
            if let Some(n) = strstr_value(&req.payload, "initiator-name=") {
                result = if bind {
                    cfg.iqn_acl_add(tid, n)
                } else {
                    cfg.iqn_acl_del(tid, n)
                };
                result?;
            }
            result.and_then(|()| changed())
        }
        Some(Op::Update) => {
            let (name, value) = req
                .payload
                .split_once('=')
                .ok_or(TgtadmError::UnsupportedOperation)?;
            if name == "state" {
                cfg.target_set_state(tid, value)?;
            } else {
                cfg.target_update(tid, name, value)?;
            }
            changed()
        }
        Some(Op::Show) if tid < 0 => {
            let list: Vec<_> = cfg
                .targets
                .iter()
                .map(|(tid, t)| cfg.target_show(*tid, t))
                .collect();
            text(show::target_listing(&list))
        }
        Some(Op::Show) => {
            let t = cfg.target(tid)?;
            text(show::redirect(&Config::redirect_show(t)).unwrap_or_else(|| t.params.show()))
        }
        Some(Op::Stats) => {
            cfg.target(tid)?;
            text(stat::lu_report(
                cfg,
                &gather(plane),
                Some(tid.unsigned_abs()),
                None,
            ))
        }
        _ => Err(TgtadmError::InvalidRequest),
    }
}

/// The `path=`, `bstype=`, `bsopts=`, `bsoflags=`, `blocksize=` items of an LU new payload.
#[derive(Debug, Default, PartialEq, Eq)]
struct LuNewArgs<'a> {
    path: Option<&'a str>,
    bstype: Option<&'a str>,
    bsopts: Option<&'a str>,
    bsoflags: Option<&'a str>,
    blocksize: Option<&'a str>,
}

fn parse_lu_new(payload: &str) -> LuNewArgs<'_> {
    let mut a = LuNewArgs::default();
    // bsopts may itself hold commas (`mds=a:1,b:2`): a piece that is no known `key=` item
    // continues the bsopts before it.
    let mut bsopts: Option<(usize, usize)> = None;
    let mut last_was_bsopts = false;
    let mut at = 0;
    for piece in payload.split(',') {
        let start = at;
        at += piece.len() + 1;
        let known = piece
            .split_once('=')
            .filter(|(k, _)| matches!(*k, "path" | "bstype" | "bsopts" | "bsoflags" | "blocksize"));
        match known {
            Some(("bsopts", _)) => {
                bsopts = Some((start + "bsopts=".len(), start + piece.len()));
                last_was_bsopts = true;
                continue;
            }
            None if last_was_bsopts => {
                if let Some((_, end)) = &mut bsopts {
                    *end = start + piece.len();
                }
                continue;
            }
            _ => last_was_bsopts = false,
        }
        if let Some((k, v)) = known {
            match k {
                "path" => a.path = Some(v),
                "bstype" => a.bstype = Some(v),
                "bsoflags" => a.bsoflags = Some(v),
                "blocksize" => a.blocksize = Some(v),
                _ => {}
            }
        }
    }
    a.bsopts = bsopts.map(|(b, e)| &payload[b..e]);
    a
}

/// tgt accepts a power-of-two block size and ignores (with a log line) anything else; we
/// also bound it to what the SCSI layer supports.
fn block_size(arg: Option<&str>) -> u32 {
    let v = arg.map_or(0, |s| strtoull(s).0);
    if v.is_power_of_two() && (512..=1 << 20).contains(&v) {
        u32::try_from(v).unwrap_or(512)
    } else {
        512
    }
}

fn lu_new(cfg: &mut Config, req: &Request, plane: &dyn DataPlane) -> Result<Reply, TgtadmError> {
    let (tid, lun) = (req.hdr.tid, req.hdr.lun);
    cfg.lu_check_new(tid, lun)?;
    let args = parse_lu_new(&req.payload);
    let bstype = args.bstype.unwrap_or("rdwr");
    let test_only = (bstype == "delay" && backing::delay::enabled()).then_some(false);
    let takes_flags = SUPPORTED_TYPES
        .iter()
        .find(|(n, _)| *n == bstype)
        .map(|(_, f)| *f)
        .or(test_only)
        .ok_or(TgtadmError::InvalidRequest)?;
    let flags = match args.bsoflags {
        Some(s) => BsOFlags::parse(s).ok_or(TgtadmError::InvalidRequest)?,
        None => BsOFlags::default(),
    };
    if flags != BsOFlags::default() && !takes_flags {
        return Err(TgtadmError::InvalidRequest);
    }
    if req.hdr.device_type != u32::from(DeviceType::Disk.code()) {
        return Err(TgtadmError::InvalidRequest);
    }
    let backing = match args.path {
        Some(p) => Some(
            stores::open_with_opts(bstype, p, flags, args.bsopts.unwrap_or("")).map_err(|e| {
                crate::log::event::backing_open_failed(tid, lun, p, &e);
                TgtadmError::InvalidRequest
            })?,
        ),
        None => None,
    };
    // A store with its own block size (a Curve volume) is served in it, or in smaller blocks
    // where the store does read-modify-write (a Curve volume: 512 on 4096).
    let native = backing.as_ref().and_then(|b| b.block_size());
    let block_size = match (native, args.blocksize) {
        (Some(n), None) => n,
        (Some(n), Some(s))
            if block_size(Some(s)) < n
                && !backing
                    .as_ref()
                    .is_some_and(|b| b.serve_block_size(block_size(Some(s)))) =>
        {
            tracing::warn!(
                "logical unit {lun} of tid {tid} not created: --blocksize {s} is below the \
                 volume's {n}-byte blocks and cannot be served by read-modify-write; use \
                 --blocksize 512, {n}, or omit it"
            );
            return Err(TgtadmError::InvalidRequest);
        }
        _ => block_size(args.blocksize),
    };
    let lu = LogicalUnit::new(LuInit {
        tid: tid.unsigned_abs(),
        lun: Lun(lun),
        dev_type: DeviceType::Disk,
        backing,
        block_size,
    })
    .map_err(|e| {
        crate::log::event::lu_refused(tid, lun, &e);
        TgtadmError::InvalidRequest
    })?;
    let pathless = args.path.is_none().then_some(bstype);
    let effects = cfg.lu_insert(tid, Arc::new(lu), pathless)?;
    apply(plane, effects);
    changed()
}

fn lu_param_error(e: LuParamError) -> TgtadmError {
    crate::log::event::lu_update_refused(&e);
    match e {
        LuParamError::InvalidRequest(_) => TgtadmError::InvalidRequest,
        LuParamError::UnknownParam(_) => TgtadmError::UnknownParam,
        LuParamError::PreventRemoval => TgtadmError::PreventRemoval,
        LuParamError::Unsupported => TgtadmError::UnsupportedOperation,
        LuParamError::Backing(_) => TgtadmError::UnknownErr,
    }
}

fn device(
    cfg: &mut Config,
    req: &Request,
    op: Option<Op>,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    let (tid, lun) = (req.hdr.tid, req.hdr.lun);
    match op {
        Some(Op::New) => lu_new(cfg, req, plane),
        Some(Op::Delete) => {
            let effects = cfg.lu_delete(tid, lun)?;
            apply(plane, effects);
            changed()
        }
        Some(Op::Update) => {
            let lu = cfg.lu(tid, lun)?;
            let upd = lu.apply_params(&req.payload).map_err(lu_param_error)?;
            if upd.capacity_changed {
                plane.raise_ua(
                    tid.unsigned_abs(),
                    Some(Lun(lun)),
                    UnitAttention::CapacityChanged,
                );
            }
            changed()
        }
        Some(Op::Stats) if req.hdr.sid == 0 => {
            cfg.lu(tid, lun)?;
            text(stat::lu_report(
                cfg,
                &gather(plane),
                Some(tid.unsigned_abs()),
                Some(Lun(lun)),
            ))
        }
        Some(Op::Stats) => text(stat::session_report(cfg, &gather(plane), req.hdr.sid)?),
        _ => Err(TgtadmError::UnsupportedOperation),
    }
}

fn connection(
    cfg: &mut Config,
    req: &Request,
    op: Option<Op>,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    let h = &req.hdr;
    match op {
        Some(Op::Show) => {
            let t = cfg.target(h.tid)?;
            let list: Vec<_> = t
                .sessions
                .iter()
                .flat_map(|s| {
                    s.conns.iter().map(|c| ConnShow {
                        tsih: s.tsih,
                        cid: c.cid,
                        initiator: s.initiator.clone(),
                        ip: c.peer.ip().to_string(),
                    })
                })
                .collect();
            text(show::connections(&list))
        }
        Some(Op::Stats) => text(stat::conn_report(cfg, &gather(plane), h.sid, h.cid)?),
        Some(Op::Delete) => {
            let e = cfg.conn_close(h.tid, h.sid, h.cid)?;
            apply(plane, vec![e]);
            changed()
        }
        _ => Err(TgtadmError::InvalidRequest),
    }
}

/// Parses `portal=ip[:port]` (IPv6 as `[ip]:port`) out of a `portalOps ...,` payload.
pub fn parse_portal(payload: &str) -> Option<SocketAddr> {
    let list = payload.strip_prefix("portalOps ").unwrap_or(payload);
    let v = list.split(',').find_map(|i| i.strip_prefix("portal="))?;
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa);
    }
    if let Ok(ip) = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, ISCSI_PORT));
    }
    let (host, port) = v.rsplit_once(':')?;
    Some(SocketAddr::new(host.parse().ok()?, port.parse().ok()?))
}

fn portal(
    cfg: &mut Config,
    req: &Request,
    op: Option<Op>,
    plane: &dyn DataPlane,
) -> Result<Reply, TgtadmError> {
    match op {
        Some(Op::Show) => text(show::portals(&cfg.portals)),
        Some(Op::New) => {
            let addr = parse_portal(&req.payload).ok_or(TgtadmError::InvalidRequest)?;
            if cfg.portals.contains(&addr) {
                return Err(TgtadmError::InvalidRequest);
            }
            plane
                .add_portal(addr)
                .map_err(|_| TgtadmError::UnknownErr)?;
            cfg.portals.insert(0, addr);
            changed()
        }
        Some(Op::Delete) => {
            let addr = parse_portal(&req.payload).ok_or(TgtadmError::InvalidRequest)?;
            let i = cfg
                .portals
                .iter()
                .position(|p| *p == addr)
                .ok_or(TgtadmError::InvalidRequest)?;
            plane
                .remove_portal(addr)
                .map_err(|_| TgtadmError::UnknownErr)?;
            cfg.portals.remove(i);
            changed()
        }
        _ => Err(TgtadmError::InvalidRequest),
    }
}

/// `lld start|stop|show`. As tgt's iSCSI driver (mgmt.c `lld_mgmt`, iscsi_tcp.c
/// `iscsi_tcp_exit`/`iscsi_tcp_init`): stop, refused while targets exist, closes every
/// listening portal, so `portal show` prints none and connects are refused; start opens them
/// again, in front of any `portal new` added meanwhile. Where tgt reopens only the portals of
/// its command line, this reopens every portal stop closed, those added by `portal new` too.
fn lld(cfg: &mut Config, op: Option<Op>, plane: &dyn DataPlane) -> Result<Reply, TgtadmError> {
    use super::config::DriverState;
    match op {
        Some(Op::Start) => {
            if cfg.driver == DriverState::Stopped {
                let mut reopened = Vec::new();
                for addr in std::mem::take(&mut cfg.stopped_portals) {
                    if cfg.portals.contains(&addr) {
                        continue; // opened by portal new while stopped
                    }
                    // tgt's start succeeds whether or not its portals bind.
                    match plane.add_portal(addr) {
                        Ok(()) => reopened.push(addr),
                        Err(e) => tracing::warn!("lld start: cannot reopen portal {addr}: {e}"),
                    }
                }
                reopened.append(&mut cfg.portals);
                cfg.portals = reopened;
                cfg.driver = DriverState::Ready;
            }
            changed()
        }
        Some(Op::Stop) => {
            if cfg.driver == DriverState::Ready {
                if !cfg.targets.is_empty() {
                    return Err(TgtadmError::DriverActive);
                }
                for addr in &cfg.portals {
                    // Only NotFound can come back, and then the portal is closed already.
                    let _ = plane.remove_portal(*addr);
                }
                cfg.stopped_portals = std::mem::take(&mut cfg.portals);
                cfg.driver = DriverState::Stopped;
            }
            changed()
        }
        Some(Op::Show) => {
            let targets = cfg
                .targets
                .iter()
                .map(|(tid, t)| (*tid, t.name.clone()))
                .collect();
            text(show::lld(&[show::LldShow {
                name: DRIVER,
                state: cfg.driver.name(),
                targets,
            }]))
        }
        _ => Err(TgtadmError::InvalidRequest),
    }
}

fn account(cfg: &mut Config, req: &Request, op: Option<Op>) -> Result<Reply, TgtadmError> {
    let h = &req.hdr;
    match op {
        Some(op @ (Op::New | Op::Delete | Op::Bind | Op::Unbind)) => {
            let user = strstr_value(&req.payload, "user=").ok_or(TgtadmError::InvalidRequest)?;
            match op {
                Op::New => {
                    let (user, rest) = user.split_once(',').ok_or(TgtadmError::InvalidRequest)?;
                    // tgt skips strlen("password=") bytes without looking at them.
                    let password = rest.get(9..).ok_or(TgtadmError::InvalidRequest)?;
                    cfg.account_add(user, password)?;
                }
                Op::Delete => cfg.account_del(user)?,
                _ => cfg.account_ctl(h.tid, user, h.ac_dir == ACCOUNT_OUTGOING, op == Op::Bind)?,
            }
            changed()
        }
        Some(Op::Show) => text(show::accounts(cfg.accounts.iter().map(|a| a.user.as_str()))),
        _ => Err(TgtadmError::UnsupportedOperation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::ipc::ReqHeader;
    use crate::mgmt::server::NullPlane;

    #[test]
    fn lu_new_keeps_commas_inside_bsopts() {
        let a = parse_lu_new(
            "path=cbd:pool//v_u_,bstype=curve,bsopts=mds=127.0.0.1:1,127.0.0.1:2,bsoflags=sync,blocksize=4096",
        );
        assert_eq!(a.bsopts, Some("mds=127.0.0.1:1,127.0.0.1:2"));
        assert_eq!(
            (a.path, a.bstype, a.bsoflags, a.blocksize),
            (
                Some("cbd:pool//v_u_"),
                Some("curve"),
                Some("sync"),
                Some("4096")
            )
        );
        let a = parse_lu_new("path=/f,bsopts=,bstype=rdwr");
        assert_eq!((a.bsopts, a.bstype), (Some(""), Some("rdwr")));
        let a = parse_lu_new("path=/f,unknown=1");
        assert_eq!((a.path, a.bsopts), (Some("/f"), None));
    }

    fn req(mode: Mode, op: Op, tid: i32, payload: &str) -> Request {
        let mut hdr = ReqHeader::new(mode, op);
        hdr.tid = tid;
        hdr.len = (REQ_HDR_LEN
            + if payload.is_empty() {
                0
            } else {
                payload.len() + 1
            }) as u32;
        Request {
            hdr,
            payload: payload.into(),
        }
    }

    fn run(cfg: &mut Config, r: Request) -> Result<String, TgtadmError> {
        execute(cfg, &r, &NullPlane::default()).map(|r| r.body)
    }

    #[test]
    fn target_and_acl_flow() {
        let mut c = Config::new(vec![], 0, 0);
        let p = NullPlane::default();
        let r = execute(
            &mut c,
            &req(Mode::Target, Op::New, 1, "targetname=iqn.x:t1"),
            &p,
        )
        .unwrap();
        assert!(r.changed);
        assert_eq!(
            run(&mut c, req(Mode::Target, Op::New, 2, "targetname=iqn.x:t1")),
            Err(TgtadmError::TargetExist)
        );
        run(
            &mut c,
            req(Mode::Target, Op::Bind, 1, "initiator-address=ALL"),
        )
        .unwrap();
        assert_eq!(
            run(
                &mut c,
                req(Mode::Target, Op::Bind, 1, "initiator-address=ALL")
            ),
            Err(TgtadmError::AclExist)
        );
        run(
            &mut c,
            req(Mode::Target, Op::Bind, 1, "initiator-name=iqn.a"),
        )
        .unwrap();
        assert_eq!(
            run(
                &mut c,
                req(Mode::Target, Op::Unbind, 1, "initiator-name=iqn.b")
            ),
            Err(TgtadmError::AclNoexist)
        );
        assert_eq!(
            run(&mut c, req(Mode::Target, Op::Update, 1, "noequals")),
            Err(TgtadmError::UnsupportedOperation)
        );
        let s = run(&mut c, req(Mode::Target, Op::Show, 1, "")).unwrap();
        assert!(s.starts_with("nop_interval=0\nnop_count=0\nMaxRecvDataSegmentLength=8192\n"));
        assert_eq!(
            run(&mut c, req(Mode::Target, Op::Show, 5, "")),
            Err(TgtadmError::NoTarget)
        );
        assert_eq!(
            run(&mut c, req(Mode::System, Op::Delete, -1, "")),
            Err(TgtadmError::InvalidRequest)
        );
        run(&mut c, req(Mode::Target, Op::Delete, 1, "")).unwrap();
        assert_eq!(
            run(&mut c, req(Mode::Target, Op::Show, -1, "")),
            Ok(String::new())
        );
        assert_eq!(
            run(&mut c, req(Mode::System, Op::Delete, -1, "")),
            Ok(String::new())
        );
    }

    #[test]
    fn lu_new_errors() {
        let mut c = Config::new(vec![], 0, 0);
        run(&mut c, req(Mode::Target, Op::New, 1, "targetname=iqn.x:t1")).unwrap();
        let mut lu = |payload: &str, lun: u64| {
            let mut r = req(Mode::Device, Op::New, 1, payload);
            r.hdr.lun = lun;
            run(&mut c, r)
        };
        assert_eq!(
            lu("path=/nonexistent/x", 1),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(
            lu("path=/dev/null,bstype=bogus", 1),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(
            lu("path=/dev/null,bstype=null,bsoflags=sync", 1),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(
            lu("path=/dev/null,bsoflags=junk", 1),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(
            lu("path=/dev/null,bstype=null", 0),
            Err(TgtadmError::LunExist)
        );
        lu("path=/dev/null,bstype=null", 1).unwrap();
        assert_eq!(
            lu("path=/dev/null,bstype=null", 1),
            Err(TgtadmError::LunExist)
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let p = format!("path={},bsoflags=sync,blocksize=4096", f.path().display());
        lu(&p, 2).unwrap();
        assert_eq!(c.targets[&1].luns.len(), 3);
        let mut d = req(Mode::Device, Op::Delete, 1, "");
        d.hdr.lun = 0;
        assert_eq!(run(&mut c, d), Err(TgtadmError::InvalidRequest));
    }

    #[test]
    fn accounts_and_system() {
        let mut c = Config::new(vec!["127.0.0.1:3260".parse().unwrap()], 0, 0);
        assert_eq!(
            run(&mut c, req(Mode::Account, Op::New, -1, "user=u1")),
            Err(TgtadmError::InvalidRequest)
        );
        run(
            &mut c,
            req(Mode::Account, Op::New, -1, "user=u1,password=p1"),
        )
        .unwrap();
        run(
            &mut c,
            req(Mode::Account, Op::New, -1, "user=u2,password=p2"),
        )
        .unwrap();
        assert_eq!(
            run(&mut c, req(Mode::Account, Op::Show, -1, "")).unwrap(),
            "Account list:\n    u2\n    u1\n"
        );
        run(&mut c, req(Mode::Account, Op::Bind, -1, "user=u1")).unwrap();
        let s = run(&mut c, req(Mode::System, Op::Show, -1, "")).unwrap();
        assert!(s.contains("    Account information:\n\n    u1\niSNS:\n"));
        run(&mut c, req(Mode::System, Op::Update, -1, "debug=on")).unwrap();
        run(&mut c, req(Mode::System, Op::Update, -1, "State=offline")).unwrap();
        assert_eq!(
            run(&mut c, req(Mode::System, Op::Update, -1, "Bogus=1")),
            Err(TgtadmError::InvalidRequest)
        );
        let s = run(&mut c, req(Mode::System, Op::Show, -1, "")).unwrap();
        assert!(s.starts_with("System:\n    State: offline\n    debug: on\n"));
        assert_eq!(
            run(&mut c, req(Mode::Portal, Op::Show, -1, "")).unwrap(),
            "Portal: 127.0.0.1:3260,1\n"
        );
        run(
            &mut c,
            req(Mode::Portal, Op::New, -1, "portalOps portal=[::1]:3261,"),
        )
        .unwrap();
        assert_eq!(
            run(&mut c, req(Mode::Portal, Op::Show, -1, "")).unwrap(),
            "Portal: [::1]:3261,1\nPortal: 127.0.0.1:3260,1\n"
        );
        assert_eq!(
            run(&mut c, req(Mode::Session, Op::Show, 1, "")),
            Err(TgtadmError::InvalidRequest)
        );
        let mut bad_lld = req(Mode::System, Op::Show, -1, "");
        bad_lld.hdr.lld = "iser".into();
        assert_eq!(run(&mut c, bad_lld), Err(TgtadmError::NoDriver));
        assert_eq!(
            run(&mut c, req(Mode::Lld, Op::Show, -1, "")).unwrap(),
            "LLDs:\n    iscsi: ready\n"
        );
    }

    #[test]
    fn lld_stop_closes_the_portals_and_start_reopens_them() {
        use crate::mgmt::server::PlaneCall::{AddPortal, RemovePortal};
        let (p1, p2, p3): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.0.1:3260".parse().unwrap(),
            "[::1]:3261".parse().unwrap(),
            "127.0.0.1:3262".parse().unwrap(),
        );
        let mut c = Config::new(vec![p1, p2], 0, 0);
        let plane = NullPlane::default();
        let exec = |c: &mut Config, r: Request| execute(c, &r, &plane).map(|r| r.body);
        let iscsi = |mut r: Request| {
            r.hdr.lld = DRIVER.into();
            r
        };
        let show = req(Mode::Portal, Op::Show, -1, "");
        // Refused while a target exists, and nothing closes.
        exec(&mut c, req(Mode::Target, Op::New, 1, "targetname=iqn.x:t1")).unwrap();
        assert_eq!(
            exec(&mut c, iscsi(req(Mode::Lld, Op::Stop, -1, ""))),
            Err(TgtadmError::DriverActive)
        );
        exec(&mut c, req(Mode::Target, Op::Delete, 1, "")).unwrap();
        assert_eq!(plane.take(), vec![]);
        // Stop closes every portal; portal show then prints none, as tgt's.
        exec(&mut c, iscsi(req(Mode::Lld, Op::Stop, -1, ""))).unwrap();
        assert_eq!(plane.take(), vec![RemovePortal(p2), RemovePortal(p1)]);
        assert_eq!(exec(&mut c, show.clone()), Ok(String::new()));
        assert_eq!(
            exec(&mut c, iscsi(show.clone())),
            Err(TgtadmError::NoDriver)
        );
        exec(&mut c, iscsi(req(Mode::Lld, Op::Stop, -1, ""))).unwrap();
        assert_eq!(
            exec(&mut c, req(Mode::Lld, Op::Show, -1, "")).unwrap(),
            "LLDs:\n    iscsi: stopped\n"
        );
        // While stopped, a closed portal cannot be deleted, and portal new listens at once
        // (both as tgt).
        assert_eq!(
            exec(
                &mut c,
                req(
                    Mode::Portal,
                    Op::Delete,
                    -1,
                    "portalOps portal=127.0.0.1:3260,"
                )
            ),
            Err(TgtadmError::InvalidRequest)
        );
        exec(
            &mut c,
            req(
                Mode::Portal,
                Op::New,
                -1,
                "portalOps portal=127.0.0.1:3262,",
            ),
        )
        .unwrap();
        assert_eq!(plane.take(), vec![AddPortal(p3)]);
        // Start reopens the closed portals, in front of the new one; a second start is a no-op.
        exec(&mut c, iscsi(req(Mode::Lld, Op::Start, -1, ""))).unwrap();
        exec(&mut c, iscsi(req(Mode::Lld, Op::Start, -1, ""))).unwrap();
        assert_eq!(plane.take(), vec![AddPortal(p2), AddPortal(p1)]);
        assert_eq!(
            exec(&mut c, show).unwrap(),
            "Portal: [::1]:3261,1\nPortal: 127.0.0.1:3260,1\nPortal: 127.0.0.1:3262,1\n"
        );
    }
}
