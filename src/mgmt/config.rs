//! The configuration model the control thread owns: system state, targets (ACLs, bound
//! accounts, iSCSI parameters, LUs, redirect, live sessions), CHAP accounts and portals.
//!
//! Every mutation checks all of tgt's conditions first and returns tgt's error code for the
//! first one that fails, so an error changes nothing. Side effects the shards must see (unit
//! attentions, closing sessions) are returned as [`Effect`]s for the caller to send.

use super::ipc::TgtadmError;
use super::show::{IsnsShow, NexusShow, RedirectShow, TargetShow};
use crate::config::snapshot::{
    Account, Acl, AclAddr, ChapAccounts, ConfigSnapshot, Redirect, TargetView,
};
use crate::config::target_params::TargetParams;
use crate::iscsi::redirect::split_callback;
use crate::scsi::{LogicalUnit, Lun, UnitAttention};
use crate::shard::msg::ConnInfo;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// tgt allocates 16 incoming-account slots per target and doubles when full.
const DEFAULT_NR_ACCOUNT: usize = 16;

/// Something a configuration change asks of the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Raise a unit attention on every nexus of `tid` (on `lun`, or all LUNs when `None`).
    Ua {
        tid: u32,
        lun: Option<Lun>,
        ua: UnitAttention,
    },
    /// Close every connection of a session.
    CloseSession { tid: u32, tsih: u16 },
}

/// A CHAP account with tgt's account id (the lowest free id from 1, used for slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEntry {
    pub aid: u32,
    pub user: String,
    pub password: String,
}

/// Accounts bound to a target (or globally): incoming slots as tgt keeps them (an unbind
/// leaves a hole that the next bind fills) and at most one outgoing account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bindings {
    slots: Vec<Option<u32>>,
    outgoing: Option<u32>,
}

impl Default for Bindings {
    fn default() -> Self {
        Bindings {
            slots: vec![None; DEFAULT_NR_ACCOUNT],
            outgoing: None,
        }
    }
}

impl Bindings {
    fn incoming(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().flatten().copied()
    }

    fn bind(&mut self, aid: u32, outgoing: bool) -> Result<(), TgtadmError> {
        if outgoing {
            if self.outgoing.is_some() {
                return Err(TgtadmError::OutaccountExist);
            }
            self.outgoing = Some(aid);
            return Ok(());
        }
        if self.slots.contains(&Some(aid)) {
            return Err(TgtadmError::UserExist);
        }
        match self.slots.iter().position(Option::is_none) {
            Some(i) => self.slots[i] = Some(aid),
            None => {
                let old = self.slots.len();
                self.slots.resize(old * 2, None);
                self.slots[old] = Some(aid);
            }
        }
        Ok(())
    }

    fn unbind(&mut self, aid: u32, outgoing: bool) -> Result<(), TgtadmError> {
        if outgoing {
            if self.outgoing != Some(aid) {
                return Err(TgtadmError::NoUser);
            }
            self.outgoing = None;
            return Ok(());
        }
        let slot = self
            .slots
            .iter_mut()
            .find(|s| **s == Some(aid))
            .ok_or(TgtadmError::NoUser)?;
        *slot = None;
        Ok(())
    }
}

/// A login redirect as tgtadm sets it: kept as the strings given, shown back verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectInfo {
    pub address: String,
    pub port: String,
    /// `Some(true)` Permanent, `Some(false)` Temporary, `None` not set.
    pub permanent: Option<bool>,
    pub callback: Option<String>,
}

impl RedirectInfo {
    /// What logins act on (tgt `target_redirected`): a callback whenever one is set (even an
    /// empty one, which then fails every login as tgt's does), else the static redirect when it
    /// has both an address and a reason.
    pub fn for_shards(&self) -> Option<Redirect> {
        if let Some(cb) = &self.callback {
            return Some(Redirect::Callback {
                argv: split_callback(cb),
            });
        }
        let permanent = self.permanent?;
        (!self.address.is_empty()).then(|| Redirect::Static {
            address: self.address.clone(),
            port: self.port.parse().unwrap_or(3260),
            permanent,
        })
    }
}

/// A logged-in session, as the shards reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub tsih: u16,
    pub initiator: String,
    pub alias: Option<String>,
    pub conns: Vec<ConnInfo>,
    /// The nexus's LUs in tgt's list order, which session stat prints: the target's LUs at
    /// login in descending order, then each LU added later in front (tgt `list_add`s them).
    pub lu_order: Vec<Lun>,
}

/// One target.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub ready: bool,
    /// `-I` rules, as given, in bind order.
    pub acl_addrs: Vec<String>,
    /// `-Q` rules, in bind order.
    pub acl_names: Vec<String>,
    pub bindings: Bindings,
    pub params: TargetParams,
    pub luns: BTreeMap<Lun, Arc<LogicalUnit>>,
    /// The `bstype` given for LUs created without a backing store: tgt still shows it
    /// ("Backing store type: rdwr" for a pathless `lu new`), the LU itself has none.
    pub pathless_bstype: BTreeMap<Lun, String>,
    pub redirect: RedirectInfo,
    /// Sessions in login order (tgt appends nexuses to its list).
    pub sessions: Vec<Session>,
}

/// State of the one driver this build has (`iscsi`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DriverState {
    Ready,
    Stopped,
}

impl DriverState {
    /// tgt's word for it.
    pub fn name(self) -> &'static str {
        match self {
            DriverState::Ready => "ready",
            DriverState::Stopped => "stopped",
        }
    }
}

/// Checks a target name: tgt allows only `[A-Za-z0-9:.-]`.
pub fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'-'))
}

/// Parses a `-I` rule for the login filter; rules tgt stores but can never match are `None`.
pub fn parse_acl_addr(s: &str) -> Option<AclAddr> {
    if s == "ALL" {
        return Some(AclAddr::All);
    }
    let unbracket = |a: &str| -> Option<IpAddr> {
        let a = a
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(a);
        a.parse().ok()
    };
    match s.split_once('/') {
        Some((a, bits)) => Some(AclAddr::Prefix(unbracket(a)?, bits.parse().ok()?)),
        None => Some(AclAddr::Exact(unbracket(s)?)),
    }
}

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    pub system_ready: bool,
    pub debug: bool,
    pub isns: IsnsShow,
    pub driver: DriverState,
    pub targets: BTreeMap<u32, Target>,
    /// Newest first (tgt prepends).
    pub accounts: Vec<AccountEntry>,
    /// Global (discovery) bindings.
    pub global: Bindings,
    /// Portals listened on, newest first: what `portal show` prints.
    pub portals: Vec<SocketAddr>,
    /// Portals `lld stop` closed, in `portals` order: `lld start` opens them again. tgt's
    /// driver forgets its portals at stop and prints none while stopped.
    pub stopped_portals: Vec<SocketAddr>,
    /// NOP settings new targets start with (tgtd `--iscsi nop_interval=,nop_count=`).
    pub default_nop: (u32, u32),
    generation: u64,
}

impl Config {
    /// An empty, ready system.
    pub fn new(portals: Vec<SocketAddr>, nop_interval: u32, nop_count: u32) -> Config {
        let mut portals = portals;
        portals.reverse();
        Config {
            system_ready: true,
            debug: false,
            isns: IsnsShow::default(),
            driver: DriverState::Ready,
            targets: BTreeMap::new(),
            accounts: Vec::new(),
            global: Bindings::default(),
            portals,
            stopped_portals: Vec::new(),
            default_nop: (nop_interval, nop_count),
            generation: 0,
        }
    }

    /// The target `tid`, or NO_TARGET.
    pub fn target(&self, tid: i32) -> Result<&Target, TgtadmError> {
        u32::try_from(tid)
            .ok()
            .and_then(|t| self.targets.get(&t))
            .ok_or(TgtadmError::NoTarget)
    }

    fn target_mut(&mut self, tid: i32) -> Result<&mut Target, TgtadmError> {
        u32::try_from(tid)
            .ok()
            .and_then(|t| self.targets.get_mut(&t))
            .ok_or(TgtadmError::NoTarget)
    }

    fn account_by_user(&self, user: &str) -> Option<&AccountEntry> {
        self.accounts.iter().find(|a| a.user == user)
    }

    fn user_of(&self, aid: u32) -> Option<&AccountEntry> {
        self.accounts.iter().find(|a| a.aid == aid)
    }

    // ---- targets ----

    /// target new: tgt checks the name, then the tid, then the name's uniqueness.
    pub fn target_new(&mut self, tid: i32, name: &str) -> Result<(), TgtadmError> {
        if !valid_target_name(name) {
            return Err(TgtadmError::InvalidRequest);
        }
        let tid_u = u32::try_from(tid)
            .ok()
            .filter(|t| *t != 0)
            .ok_or(TgtadmError::InvalidRequest)?;
        if self.targets.contains_key(&tid_u) || self.targets.values().any(|t| t.name == name) {
            return Err(TgtadmError::TargetExist);
        }
        let mut params = TargetParams::default();
        params.nop_interval = self.default_nop.0;
        params.nop_count = self.default_nop.1;
        let mut luns = BTreeMap::new();
        luns.insert(Lun(0), Arc::new(LogicalUnit::controller(tid_u)));
        self.targets.insert(
            tid_u,
            Target {
                name: name.to_string(),
                ready: true,
                acl_addrs: Vec::new(),
                acl_names: Vec::new(),
                bindings: Bindings::default(),
                params,
                luns,
                pathless_bstype: BTreeMap::new(),
                redirect: RedirectInfo::default(),
                sessions: Vec::new(),
            },
        );
        Ok(())
    }

    /// target delete: refused with sessions unless forced; forcing closes them.
    pub fn target_delete(&mut self, tid: i32, force: bool) -> Result<Vec<Effect>, TgtadmError> {
        let t = self.target(tid)?;
        if !force && !t.sessions.is_empty() {
            return Err(TgtadmError::TargetActive);
        }
        let tid_u = tid.unsigned_abs();
        let effects = t
            .sessions
            .iter()
            .map(|s| Effect::CloseSession {
                tid: tid_u,
                tsih: s.tsih,
            })
            .collect();
        self.targets.remove(&tid_u);
        Ok(effects)
    }

    /// target update state=ready|offline.
    pub fn target_set_state(&mut self, tid: i32, value: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        t.ready = match value {
            "ready" => true,
            "offline" => false,
            _ => return Err(TgtadmError::InvalidRequest),
        };
        Ok(())
    }

    /// target update for the iSCSI driver: redirect keys (matched by prefix, as tgt does),
    /// NOP settings, then session keys.
    pub fn target_update(&mut self, tid: i32, name: &str, value: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        if name.starts_with("RedirectAddress") {
            t.redirect.address = value.chars().take(63).collect();
        } else if name.starts_with("RedirectPort") {
            t.redirect.port = value.chars().take(15).collect();
        } else if name.starts_with("RedirectReason") {
            t.redirect.permanent = if value.starts_with("Temporary") {
                Some(false)
            } else if value.starts_with("Permanent") {
                Some(true)
            } else {
                return Err(TgtadmError::InvalidRequest);
            };
        } else if name.starts_with("RedirectCallback") {
            t.redirect.callback = Some(value.to_string());
        } else if name.starts_with("nop_count") || name.starts_with("nop_interval") {
            let key = if name.starts_with("nop_count") {
                "nop_count"
            } else {
                "nop_interval"
            };
            // tgt uses atoi: junk reads as 0, negatives are refused.
            let v = atoi(value);
            let v = u32::try_from(v).map_err(|_| TgtadmError::InvalidRequest)?;
            t.params
                .set(key, &v.to_string())
                .map_err(|_| TgtadmError::InvalidRequest)?;
        } else {
            t.params
                .set(name, value)
                .map_err(|_| TgtadmError::InvalidRequest)?;
        }
        Ok(())
    }

    /// target bind -I.
    pub fn acl_add(&mut self, tid: i32, addr: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        if t.acl_addrs.iter().any(|a| a == addr) {
            return Err(TgtadmError::AclExist);
        }
        t.acl_addrs.push(addr.to_string());
        Ok(())
    }

    /// target unbind -I.
    pub fn acl_del(&mut self, tid: i32, addr: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        let i = t
            .acl_addrs
            .iter()
            .position(|a| a == addr)
            .ok_or(TgtadmError::AclNoexist)?;
        t.acl_addrs.remove(i);
        Ok(())
    }

    /// target bind -Q.
    pub fn iqn_acl_add(&mut self, tid: i32, name: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        if t.acl_names.iter().any(|a| a == name) {
            return Err(TgtadmError::AclExist);
        }
        t.acl_names.push(name.to_string());
        Ok(())
    }

    /// target unbind -Q.
    pub fn iqn_acl_del(&mut self, tid: i32, name: &str) -> Result<(), TgtadmError> {
        let t = self.target_mut(tid)?;
        let i = t
            .acl_names
            .iter()
            .position(|a| a == name)
            .ok_or(TgtadmError::AclNoexist)?;
        t.acl_names.remove(i);
        Ok(())
    }

    // ---- logical units ----

    /// Checks that `lun` can be added to `tid` (before the backing store is opened).
    pub fn lu_check_new(&self, tid: i32, lun: u64) -> Result<(), TgtadmError> {
        let t = self.target(tid)?;
        if t.luns.contains_key(&Lun(lun)) {
            return Err(TgtadmError::LunExist);
        }
        if lun > Lun::MAX {
            return Err(TgtadmError::InvalidRequest);
        }
        Ok(())
    }

    /// Adds a created LU; existing nexuses get REPORTED LUNS DATA HAS CHANGED.
    pub fn lu_insert(
        &mut self,
        tid: i32,
        lu: Arc<LogicalUnit>,
        pathless_bstype: Option<&str>,
    ) -> Result<Vec<Effect>, TgtadmError> {
        self.lu_check_new(tid, lu.lun().0)?;
        let t = self.target_mut(tid)?;
        match pathless_bstype {
            Some(b) => t.pathless_bstype.insert(lu.lun(), b.to_string()),
            None => t.pathless_bstype.remove(&lu.lun()),
        };
        for s in &mut t.sessions {
            s.lu_order.insert(0, lu.lun());
        }
        t.luns.insert(lu.lun(), lu);
        Ok(luns_changed(tid, t))
    }

    /// lu delete: LUN 0 is refused.
    pub fn lu_delete(&mut self, tid: i32, lun: u64) -> Result<Vec<Effect>, TgtadmError> {
        let t = self.target_mut(tid)?;
        if !t.luns.contains_key(&Lun(lun)) {
            return Err(TgtadmError::NoLun);
        }
        if lun == 0 {
            return Err(TgtadmError::InvalidRequest);
        }
        t.luns.remove(&Lun(lun));
        t.pathless_bstype.remove(&Lun(lun));
        for s in &mut t.sessions {
            s.lu_order.retain(|l| *l != Lun(lun));
        }
        Ok(luns_changed(tid, t))
    }

    /// The LU `lun` of `tid`.
    pub fn lu(&self, tid: i32, lun: u64) -> Result<&Arc<LogicalUnit>, TgtadmError> {
        self.target(tid)?
            .luns
            .get(&Lun(lun))
            .ok_or(TgtadmError::NoLun)
    }

    // ---- accounts ----

    /// account new.
    pub fn account_add(&mut self, user: &str, password: &str) -> Result<(), TgtadmError> {
        if self.account_by_user(user).is_some() {
            return Err(TgtadmError::UserExist);
        }
        let aid = (1..u32::MAX)
            .find(|id| self.user_of(*id).is_none())
            .ok_or(TgtadmError::TooManyUser)?;
        self.accounts.insert(
            0,
            AccountEntry {
                aid,
                user: user.to_string(),
                password: password.to_string(),
            },
        );
        Ok(())
    }

    /// account delete: unbinds it everywhere first.
    pub fn account_del(&mut self, user: &str) -> Result<(), TgtadmError> {
        let aid = self.account_by_user(user).ok_or(TgtadmError::NoUser)?.aid;
        for b in self
            .targets
            .values_mut()
            .map(|t| &mut t.bindings)
            .chain(std::iter::once(&mut self.global))
        {
            let _ = b.unbind(aid, false);
            let _ = b.unbind(aid, true);
        }
        self.accounts.retain(|a| a.aid != aid);
        Ok(())
    }

    /// account bind/unbind; `tid` -1 (GLOBAL_TID on the wire) is the global binding.
    pub fn account_ctl(
        &mut self,
        tid: i32,
        user: &str,
        outgoing: bool,
        bind: bool,
    ) -> Result<(), TgtadmError> {
        if tid != -1 {
            self.target(tid)?;
        }
        let aid = self.account_by_user(user).ok_or(TgtadmError::NoUser)?.aid;
        let b = if tid == -1 {
            &mut self.global
        } else {
            &mut self.target_mut(tid)?.bindings
        };
        if bind {
            b.bind(aid, outgoing)
        } else {
            b.unbind(aid, outgoing)
        }
    }

    // ---- system ----

    /// sys update State=.
    pub fn set_system_state(&mut self, v: &str) -> Result<(), TgtadmError> {
        self.system_ready = match v {
            "ready" => true,
            "offline" => false,
            _ => return Err(TgtadmError::InvalidRequest),
        };
        Ok(())
    }

    // ---- sessions (from shard events) ----

    /// A session finished login.
    pub fn session_up(&mut self, tid: u32, mut s: Session) {
        if let Some(t) = self.targets.get_mut(&tid) {
            s.lu_order = t.luns.keys().rev().copied().collect();
            t.sessions.retain(|x| x.tsih != s.tsih);
            t.sessions.push(s);
        }
    }

    /// A session ended.
    pub fn session_down(&mut self, tid: u32, tsih: u16) {
        if let Some(t) = self.targets.get_mut(&tid) {
            t.sessions.retain(|x| x.tsih != tsih);
        }
    }

    /// conn delete: asks the shard to close the session; the model forgets it now so that
    /// show reflects it at once.
    pub fn conn_close(&mut self, tid: i32, sid: u64, cid: u32) -> Result<Effect, TgtadmError> {
        let t = self.target_mut(tid)?;
        let i = t
            .sessions
            .iter()
            .position(|s| u64::from(s.tsih) == sid)
            .ok_or(TgtadmError::NoSession)?;
        if !t.sessions[i].conns.iter().any(|c| u32::from(c.cid) == cid) {
            return Err(TgtadmError::NoConnection);
        }
        let s = t.sessions.remove(i);
        Ok(Effect::CloseSession {
            tid: tid.unsigned_abs(),
            tsih: s.tsih,
        })
    }

    /// The session with TSIH `sid` on any target (tgt looks sessions up globally).
    pub fn session_by_tsih(&self, sid: u64) -> Option<(u32, &Session)> {
        self.targets.iter().find_map(|(tid, t)| {
            t.sessions
                .iter()
                .find(|s| u64::from(s.tsih) == sid)
                .map(|s| (*tid, s))
        })
    }

    // ---- views ----

    /// What the full listing prints for one target (calls `LogicalUnit::show`).
    pub fn target_show(&self, tid: u32, t: &Target) -> TargetShow {
        let user = |aid: u32| self.user_of(aid).map(|a| a.user.clone());
        TargetShow {
            tid,
            name: t.name.clone(),
            state: if t.ready { "ready" } else { "offline" },
            nop_interval: t.params.nop_interval,
            nop_count: t.params.nop_count,
            nexuses: t
                .sessions
                .iter()
                .map(|s| NexusShow {
                    tsih: s.tsih,
                    initiator: s.initiator.clone(),
                    alias: s.alias.clone(),
                    cid: s.conns.first().map_or(0, |c| c.cid),
                    ip: s
                        .conns
                        .first()
                        .map_or_else(String::new, |c| c.peer.ip().to_string()),
                })
                .collect(),
            luns: t
                .luns
                .values()
                .map(|lu| {
                    let mut s = lu.show();
                    if s.path == "None" {
                        if let Some(b) = t.pathless_bstype.get(&lu.lun()) {
                            s.bstype.clone_from(b);
                        }
                    }
                    s
                })
                .collect(),
            in_users: t.bindings.incoming().filter_map(user).collect(),
            out_user: t.bindings.outgoing.and_then(user),
            acl_addrs: t.acl_addrs.clone(),
            acl_names: t.acl_names.clone(),
        }
    }

    /// The redirect part of `target show -t N`.
    pub fn redirect_show(t: &Target) -> RedirectShow {
        RedirectShow {
            address: t.redirect.address.clone(),
            port: t.redirect.port.clone(),
            reason: match t.redirect.permanent {
                Some(true) => "Permanent",
                Some(false) => "Temporary",
                None => "Unknown",
            },
            callback: t.redirect.callback.clone(),
        }
    }

    /// Global (discovery) users, for `sys show`.
    pub fn global_users(&self) -> (Vec<String>, Option<String>) {
        (
            self.global
                .incoming()
                .filter_map(|a| self.user_of(a).map(|e| e.user.clone()))
                .collect(),
            self.global
                .outgoing
                .and_then(|a| self.user_of(a).map(|e| e.user.clone())),
        )
    }

    fn chap(&self, b: &Bindings) -> ChapAccounts {
        let acct = |aid: u32| {
            self.user_of(aid).map(|a| Account {
                user: a.user.clone(),
                secret: a.password.clone(),
            })
        };
        ChapAccounts {
            incoming: b.incoming().filter_map(acct).collect(),
            outgoing: b.outgoing.and_then(acct),
        }
    }

    /// A fresh snapshot for the shards; each call bumps the generation.
    pub fn snapshot(&mut self) -> ConfigSnapshot {
        self.generation += 1;
        let targets = self
            .targets
            .iter()
            .map(|(tid, t)| {
                let redirect = t.redirect.for_shards();
                let view = TargetView {
                    tid: *tid,
                    name: t.name.clone(),
                    ready: t.ready,
                    acl: Acl {
                        addrs: t
                            .acl_addrs
                            .iter()
                            .filter_map(|a| parse_acl_addr(a))
                            .collect(),
                        names: t.acl_names.clone(),
                    },
                    chap: self.chap(&t.bindings),
                    params: t.params.clone(),
                    luns: t.luns.clone(),
                    lun_list: t.luns.keys().copied().collect(),
                    redirect,
                };
                (*tid, Arc::new(view))
            })
            .collect();
        ConfigSnapshot {
            generation: self.generation,
            system_ready: self.system_ready,
            targets,
            discovery_chap: self.chap(&self.global),
        }
    }
}

fn luns_changed(tid: i32, t: &Target) -> Vec<Effect> {
    if t.sessions.is_empty() {
        return Vec::new();
    }
    vec![Effect::Ua {
        tid: tid.unsigned_abs(),
        lun: None,
        ua: UnitAttention::ReportedLunsChanged,
    }]
}

/// C `atoi`: optional whitespace and sign, then digits; anything else ends the number.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for c in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::new(vec![], 0, 0);
        c.target_new(1, "iqn.2022-01.org.x:t1").unwrap();
        c
    }

    #[test]
    fn target_rules() {
        let mut c = cfg();
        assert_eq!(c.target_new(1, "iqn.x:t2"), Err(TgtadmError::TargetExist));
        assert_eq!(
            c.target_new(2, "iqn.2022-01.org.x:t1"),
            Err(TgtadmError::TargetExist)
        );
        assert_eq!(
            c.target_new(3, "iqn.bad_name"),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(c.targets[&1].luns.len(), 1);
        assert_eq!(c.target_delete(9, false), Err(TgtadmError::NoTarget));
        c.session_up(
            1,
            Session {
                tsih: 1,
                initiator: "iqn.i".into(),
                alias: None,
                conns: vec![ConnInfo {
                    cid: 0,
                    peer: "127.0.0.1:5000".parse().unwrap(),
                }],
                lu_order: Vec::new(),
            },
        );
        assert_eq!(c.target_delete(1, false), Err(TgtadmError::TargetActive));
        assert_eq!(
            c.target_delete(1, true).unwrap(),
            vec![Effect::CloseSession { tid: 1, tsih: 1 }]
        );
        assert!(c.targets.is_empty());
    }

    #[test]
    fn acl_rules() {
        let mut c = cfg();
        c.acl_add(1, "ALL").unwrap();
        assert_eq!(c.acl_add(1, "ALL"), Err(TgtadmError::AclExist));
        assert_eq!(c.acl_del(1, "10.0.0.1"), Err(TgtadmError::AclNoexist));
        c.iqn_acl_add(1, "iqn.a").unwrap();
        let snap = c.snapshot();
        assert_eq!(snap.generation, 1);
        assert_eq!(snap.targets[&1].acl.addrs, vec![AclAddr::All]);
        assert_eq!(
            parse_acl_addr("[::1]/64"),
            Some(AclAddr::Prefix("::1".parse().unwrap(), 64))
        );
        assert_eq!(parse_acl_addr("junk"), None);
    }

    #[test]
    fn account_rules() {
        let mut c = cfg();
        c.account_add("inuser", "s1").unwrap();
        c.account_add("outuser", "s2").unwrap();
        assert_eq!(c.account_add("inuser", "x"), Err(TgtadmError::UserExist));
        assert_eq!(c.accounts[0].user, "outuser");
        c.account_ctl(1, "inuser", false, true).unwrap();
        assert_eq!(
            c.account_ctl(1, "inuser", false, true),
            Err(TgtadmError::UserExist)
        );
        c.account_ctl(1, "outuser", true, true).unwrap();
        assert_eq!(
            c.account_ctl(1, "inuser", true, true),
            Err(TgtadmError::OutaccountExist)
        );
        assert_eq!(
            c.account_ctl(1, "nouser", false, true),
            Err(TgtadmError::NoUser)
        );
        assert_eq!(
            c.account_ctl(7, "inuser", false, true),
            Err(TgtadmError::NoTarget)
        );
        c.account_ctl(-1, "inuser", false, true).unwrap();
        let snap = c.snapshot();
        assert_eq!(snap.targets[&1].chap.incoming[0].secret, "s1");
        assert_eq!(
            snap.targets[&1].chap.outgoing.as_ref().unwrap().user,
            "outuser"
        );
        assert_eq!(snap.discovery_chap.incoming.len(), 1);
        c.account_del("inuser").unwrap();
        assert_eq!(c.global_users().0, Vec::<String>::new());
        assert_eq!(
            c.account_ctl(1, "outuser", false, false),
            Err(TgtadmError::NoUser)
        );
        // Slots: a hole left by unbind is refilled first; growth past 16 works.
        for i in 0..20 {
            c.account_add(&format!("u{i}"), "p").unwrap();
            c.account_ctl(1, &format!("u{i}"), false, true).unwrap();
        }
        assert_eq!(c.targets[&1].bindings.incoming().count(), 20);
    }

    #[test]
    fn target_update_keys() {
        let mut c = cfg();
        c.target_update(1, "MaxRecvDataSegmentLength", "65536")
            .unwrap();
        assert_eq!(
            c.target_update(1, "MaxRecvDataSegmentLength", "100"),
            Err(TgtadmError::InvalidRequest)
        );
        assert_eq!(
            c.target_update(1, "Bogus", "1"),
            Err(TgtadmError::InvalidRequest)
        );
        c.target_update(1, "nop_interval", "5").unwrap();
        assert_eq!(c.targets[&1].params.nop_interval, 5);
        c.target_set_state(1, "offline").unwrap();
        assert_eq!(
            c.target_set_state(1, "bad"),
            Err(TgtadmError::InvalidRequest)
        );
        c.target_update(1, "RedirectAddress", "10.0.0.1").unwrap();
        c.target_update(1, "RedirectPort", "3261").unwrap();
        assert_eq!(
            c.target_update(1, "RedirectReason", "Maybe"),
            Err(TgtadmError::InvalidRequest)
        );
        // No reason yet: tgt does not redirect.
        assert_eq!(c.snapshot().targets[&1].redirect, None);
        c.target_update(1, "RedirectReason", "Permanent").unwrap();
        let snap = c.snapshot();
        assert_eq!(
            snap.targets[&1].redirect,
            Some(Redirect::Static {
                address: "10.0.0.1".into(),
                port: 3261,
                permanent: true
            })
        );
        assert!(!snap.targets[&1].ready);
        // A callback takes the static redirect's place.
        c.target_update(1, "RedirectCallback", "/usr/bin/pick  -x")
            .unwrap();
        assert_eq!(
            c.snapshot().targets[&1].redirect,
            Some(Redirect::Callback {
                argv: vec!["/usr/bin/pick".into(), "-x".into()]
            })
        );
    }

    #[test]
    fn lu_rules() {
        let mut c = cfg();
        assert_eq!(c.lu_delete(1, 0), Err(TgtadmError::InvalidRequest));
        assert_eq!(c.lu_delete(1, 5), Err(TgtadmError::NoLun));
        assert_eq!(c.lu_check_new(1, 0), Err(TgtadmError::LunExist));
        assert_eq!(c.lu_check_new(2, 1), Err(TgtadmError::NoTarget));
        assert_eq!(atoi(" 12ab"), 12);
        assert_eq!(atoi("-3"), -3);
        assert_eq!(atoi("x"), 0);
    }
}
