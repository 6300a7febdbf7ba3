//! The configuration as the shards see it: an immutable snapshot the control thread publishes
//! to every shard (by message) after each change. Logins and command routing read the shard's
//! current snapshot without a lock; a session looks its LUs up by tid on every command, so LU
//! additions and removals reach running sessions at the next command.

use crate::config::target_params::TargetParams;
use crate::scsi::{LogicalUnit, Lun};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A CHAP account (tgtadm `--mode account`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub secret: String,
}

/// CHAP accounts bound to a target (or globally, for discovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChapAccounts {
    /// Initiators authenticate with one of these; when empty, no CHAP is required.
    pub incoming: Vec<Account>,
    /// The target authenticates itself with this one (mutual CHAP).
    pub outgoing: Option<Account>,
}

/// One `-I` address rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclAddr {
    /// `ALL`.
    All,
    /// A single address.
    Exact(IpAddr),
    /// `addr/prefix`. tgt matches prefixes up to /31 (IPv4) and /127 (IPv6) only.
    Prefix(IpAddr, u8),
}

impl AclAddr {
    /// Whether `ip` matches this rule (IPv4-mapped IPv6 peers match IPv4 rules).
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match self {
            AclAddr::All => true,
            AclAddr::Exact(a) => *a == ip,
            AclAddr::Prefix(net, bits) => match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) if *bits <= 31 => {
                    let mask = if *bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(*bits))
                    };
                    u32::from(*n) & mask == u32::from(i) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(i)) if *bits <= 127 => {
                    let mask = if *bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(*bits))
                    };
                    u128::from(*n) & mask == u128::from(i) & mask
                }
                _ => false,
            },
        }
    }
}

/// A target's access rules: addresses (`-I`) and initiator names (`-Q`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub addrs: Vec<AclAddr>,
    pub names: Vec<String>,
}

impl Acl {
    /// tgt's rule: allowed when any address rule or any name rule matches; a target with no
    /// rules admits nobody.
    pub fn allows(&self, ip: IpAddr, initiator_name: &str) -> bool {
        self.addrs.iter().any(|a| a.matches(ip)) || self.names.iter().any(|n| n == initiator_name)
    }
}

/// How a target redirects normal-session logins (tgtadm target update Redirect*). Exists so
/// the shards see only a redirect tgt would act on: a static one needs its reason set, and a
/// callback, once set, takes the static one's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// RedirectAddress, RedirectPort (3260 when unset or not a number) and RedirectReason.
    /// The address is kept as given; the login decides whether it is numeric
    /// (`iscsi::redirect::resolve`).
    Static {
        address: String,
        port: u16,
        /// true = Permanent (login status 0x0102), false = Temporary (0x0101).
        permanent: bool,
    },
    /// RedirectCallback, split into the program and its leading arguments: run at each login
    /// with the target name and the initiator's address appended; its output says where to.
    Callback { argv: Vec<String> },
}

/// One target as the shards need it.
#[derive(Clone, Debug)]
pub struct TargetView {
    pub tid: u32,
    pub name: String,
    /// `state ready` (true) or `offline` (false): an offline target refuses logins.
    pub ready: bool,
    pub acl: Acl,
    pub chap: ChapAccounts,
    pub params: TargetParams,
    pub luns: BTreeMap<Lun, Arc<LogicalUnit>>,
    /// The keys of `luns`, ascending (REPORT LUNS).
    pub lun_list: Vec<Lun>,
    pub redirect: Option<Redirect>,
}

/// The whole configuration the shards see.
#[derive(Clone, Debug, Default)]
pub struct ConfigSnapshot {
    /// Increases with every publication.
    pub generation: u64,
    /// System state `ready` (true) or `offline` (false): offline refuses new connections.
    pub system_ready: bool,
    pub targets: BTreeMap<u32, Arc<TargetView>>,
    /// Global accounts (bound without `-t`): CHAP for discovery sessions.
    pub discovery_chap: ChapAccounts,
}

impl ConfigSnapshot {
    /// The target named `name` (iSCSI names compare case-insensitively, RFC 3722).
    pub fn target_by_name(&self, name: &str) -> Option<&Arc<TargetView>> {
        self.targets
            .values()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_rules() {
        let ip: IpAddr = "192.168.1.7".parse().unwrap();
        assert!(AclAddr::All.matches(ip));
        assert!(AclAddr::Exact(ip).matches(ip));
        assert!(AclAddr::Prefix("192.168.1.0".parse().unwrap(), 24).matches(ip));
        assert!(!AclAddr::Prefix("192.168.2.0".parse().unwrap(), 24).matches(ip));
        // tgt quirk: /32 never matches.
        assert!(!AclAddr::Prefix(ip, 32).matches(ip));
        let mapped: IpAddr = "::ffff:192.168.1.7".parse().unwrap();
        assert!(AclAddr::Exact(ip).matches(mapped));
        let acl = Acl {
            addrs: vec![],
            names: vec!["iqn.x".into()],
        };
        assert!(acl.allows(ip, "iqn.x"));
        assert!(!acl.allows(ip, "iqn.y"));
        assert!(!Acl::default().allows(ip, "iqn.x"));
    }
}
