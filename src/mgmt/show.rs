//! The text `tgtadm --op show` and `--op stat` print, byte for byte as tgt 1.0.85 prints it
//! (curve-tgt.md §3.4–§3.6). tgt-admin and curveadm parse this text with regular expressions,
//! so every space and newline matters.
//!
//! The formatters take plain values (built by the configuration model at request time), so
//! they are pure and tested against text captured from Debian's tgtd.

use crate::iscsi::stats::{ConnCounters, LuCounters};
use crate::scsi::lu::LuShow;
use std::fmt::Write;

const TAB1: &str = "    ";
const TAB2: &str = "        ";
const TAB3: &str = "            ";
const TAB4: &str = "                ";

/// One I_T nexus as tgt's iSCSI session info string describes it (first connection only:
/// tgt fills the string in at login).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexusShow {
    pub tsih: u16,
    pub initiator: String,
    pub alias: Option<String>,
    pub cid: u16,
    /// Numeric host, no port, no brackets.
    pub ip: String,
}

/// Everything the full target listing prints for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetShow {
    pub tid: u32,
    pub name: String,
    /// "ready" or "offline".
    pub state: &'static str,
    pub nop_interval: u32,
    pub nop_count: u32,
    pub nexuses: Vec<NexusShow>,
    pub luns: Vec<LuShow>,
    /// Incoming users in slot order.
    pub in_users: Vec<String>,
    pub out_user: Option<String>,
    /// `-I` rules as given.
    pub acl_addrs: Vec<String>,
    /// `-Q` rules as given.
    pub acl_names: Vec<String>,
}

/// tgt's `print_disksize`: an odd approximation of megabytes (10^6 bytes), computed in
/// wrapping unsigned 64-bit arithmetic exactly as the C expression does.
pub fn disksize_mb(size_bytes: u64) -> u64 {
    let s = size_bytes / 512;
    s.wrapping_sub((s / 625).wrapping_sub(974)) / 1950
}

/// `tgtadm --op show --mode target` (no tid): every target, ascending tid.
pub fn target_listing(targets: &[TargetShow]) -> String {
    let mut b = String::new();
    for t in targets {
        let _ = write!(
            b,
            "Target {}: {}\n{TAB1}System information:\n{TAB2}Driver: iscsi\n{TAB2}State: {}\n",
            t.tid, t.name, t.state
        );
        if t.nop_interval != 0 {
            let _ = write!(
                b,
                "{TAB2}Nop interval: {}\n{TAB2}Nop count: {}\n",
                t.nop_interval, t.nop_count
            );
        }
        let _ = writeln!(b, "{TAB1}I_T nexus information:");
        for n in &t.nexuses {
            let _ = write!(
                b,
                "{TAB2}I_T nexus: {}\n{TAB3}Initiator: {} alias: {}\n{TAB3}Connection: {}\n{TAB4}IP Address: {}\n",
                n.tsih,
                n.initiator,
                n.alias.as_deref().unwrap_or("none"),
                n.cid,
                n.ip
            );
        }
        let _ = writeln!(b, "{TAB1}LUN information:");
        for lu in &t.luns {
            lun_block(&mut b, lu);
        }
        let _ = writeln!(b, "{TAB1}Account information:");
        for u in &t.in_users {
            let _ = writeln!(b, "{TAB2}{u}");
        }
        if let Some(u) = &t.out_user {
            let _ = writeln!(b, "{TAB2}{u} (outgoing)");
        }
        let _ = writeln!(b, "{TAB1}ACL information:");
        for a in t.acl_addrs.iter().chain(&t.acl_names) {
            let _ = writeln!(b, "{TAB2}{a}");
        }
    }
    b
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "Yes"
    } else {
        "No"
    }
}

fn lun_block(b: &mut String, lu: &LuShow) {
    let _ = write!(
        b,
        "{TAB2}LUN: {}\n\
         {TAB3}Type: {}\n\
         {TAB3}SCSI ID: {}\n\
         {TAB3}SCSI SN: {}\n\
         {TAB3}Size: {} MB, Block size: {}\n\
         {TAB3}Online: {}\n\
         {TAB3}Removable media: {}\n\
         {TAB3}Prevent removal: {}\n\
         {TAB3}Readonly: {}\n\
         {TAB3}SWP: {}\n\
         {TAB3}Thin-provisioning: {}\n\
         {TAB3}Backing store type: {}\n\
         {TAB3}Backing store path: {}\n\
         {TAB3}Backing store flags: {}\n",
        lu.lun.0,
        lu.type_name,
        lu.scsi_id,
        lu.scsi_sn,
        disksize_mb(lu.size_bytes),
        lu.block_size,
        yes_no(lu.online),
        yes_no(lu.removable),
        yes_no(lu.prevent_removal),
        yes_no(lu.readonly),
        yes_no(lu.swp),
        yes_no(lu.thin_provisioning),
        lu.bstype,
        lu.path,
        lu.bsflags
    );
}

/// A login redirect as `target show -t N` prints it instead of the parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectShow {
    pub address: String,
    pub port: String,
    /// "Temporary", "Permanent" or "Unknown".
    pub reason: &'static str,
    pub callback: Option<String>,
}

/// The redirect form of `target show -t N`, or `None` when the target is not redirected
/// (then the caller prints `TargetParams::show()`).
pub fn redirect(r: &RedirectShow) -> Option<String> {
    if let Some(cb) = &r.callback {
        return Some(format!("RedirectCallback={cb}\n"));
    }
    if r.address.is_empty() {
        return None;
    }
    Some(format!(
        "RedirectAddress={}\nRedirectPort={}\nRedirectReason={}\n",
        r.address, r.port, r.reason
    ))
}

/// iSNS settings, shown at the end of `sys show` (this target never talks to an iSNS
/// server; the values are remembered and shown as tgt does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsnsShow {
    pub enabled: bool,
    pub server_ip: String,
    pub server_port: i32,
    pub access_control: bool,
}

impl Default for IsnsShow {
    fn default() -> Self {
        IsnsShow {
            enabled: false,
            server_ip: String::new(),
            server_port: 3205,
            access_control: false,
        }
    }
}

/// Everything `tgtadm --mode sys --op show` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysShow {
    pub ready: bool,
    pub debug: bool,
    /// (driver name, state word).
    pub llds: Vec<(&'static str, &'static str)>,
    /// (bstype, takes sync:direct flags).
    pub backing_stores: Vec<(&'static str, bool)>,
    pub device_types: Vec<&'static str>,
    /// Global (discovery) incoming users.
    pub global_in: Vec<String>,
    pub global_out: Option<String>,
    pub isns: IsnsShow,
}

fn on_off(v: bool) -> &'static str {
    if v {
        "On"
    } else {
        "Off"
    }
}

/// `tgtadm --mode sys --op show`, including tgt's odd "Account information:" block (a
/// TAB1 heading with an extra newline, users at TAB1, printed only with incoming users).
pub fn system(s: &SysShow) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "System:\n{TAB1}State: {}\n{TAB1}debug: {}\nLLDs:\n",
        if s.ready { "ready" } else { "offline" },
        if s.debug { "on" } else { "off" }
    );
    for (name, state) in &s.llds {
        let _ = writeln!(b, "{TAB1}{name}: {state}");
    }
    let _ = writeln!(b, "Backing stores:");
    for (name, flags) in &s.backing_stores {
        if *flags {
            let _ = writeln!(b, "{TAB1}{name} (bsoflags sync:direct)");
        } else {
            let _ = writeln!(b, "{TAB1}{name}");
        }
    }
    let _ = writeln!(b, "Device types:");
    for t in &s.device_types {
        let _ = writeln!(b, "{TAB1}{t}");
    }
    if !s.global_in.is_empty() {
        let _ = write!(b, "{TAB1}Account information:\n\n");
        for u in &s.global_in {
            let _ = writeln!(b, "{TAB1}{u}");
        }
        if let Some(u) = &s.global_out {
            let _ = writeln!(b, "{TAB1}{u} (outgoing)");
        }
    }
    let _ = write!(
        b,
        "iSNS:\n{TAB1}iSNS={}\n{TAB1}iSNSServerIP={}\n{TAB1}iSNSServerPort={}\n{TAB1}iSNSAccessControl={}\n",
        on_off(s.isns.enabled),
        s.isns.server_ip,
        s.isns.server_port,
        on_off(s.isns.access_control)
    );
    b
}

/// One driver in `tgtadm --mode lld --op show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LldShow {
    pub name: &'static str,
    /// "ready", "stopped"...
    pub state: &'static str,
    /// (tid, name) of its targets.
    pub targets: Vec<(u32, String)>,
}

/// `tgtadm --mode lld --op show`: drivers, each with its targets.
pub fn lld(llds: &[LldShow]) -> String {
    let mut b = String::from("LLDs:\n");
    for LldShow {
        name,
        state,
        targets,
    } in llds
    {
        let _ = writeln!(b, "{TAB1}{name}: {state}");
        for (tid, tname) in targets {
            let _ = writeln!(b, "{TAB2}Target {tid}: {tname}");
        }
    }
    b
}

/// `tgtadm --mode account --op show`: newest account first; nothing at all when empty.
pub fn accounts<'a>(users: impl IntoIterator<Item = &'a str>) -> String {
    let mut b = String::new();
    for u in users {
        if b.is_empty() {
            b.push_str("Account list:\n");
        }
        let _ = writeln!(b, "{TAB1}{u}");
    }
    b
}

/// `tgtadm --mode portal --op show`: `Portal: addr:port,tpgt`, IPv6 in brackets.
pub fn portals(list: &[std::net::SocketAddr]) -> String {
    let mut b = String::new();
    for p in list {
        let _ = match p {
            std::net::SocketAddr::V4(a) => writeln!(b, "Portal: {}:{},1", a.ip(), a.port()),
            std::net::SocketAddr::V6(a) => writeln!(b, "Portal: [{}]:{},1", a.ip(), a.port()),
        };
    }
    b
}

/// One connection for `tgtadm --mode conn --op show --tid N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnShow {
    pub tsih: u16,
    pub cid: u16,
    pub initiator: String,
    pub ip: String,
}

/// `tgtadm --mode conn --op show --tid N`.
pub fn connections(list: &[ConnShow]) -> String {
    let mut b = String::new();
    for c in list {
        let _ = write!(
            b,
            "Session: {}\n{TAB1}Connection: {}\n{TAB2}Initiator: {}\n{TAB2}IP Address: {}\n",
            c.tsih, c.cid, c.initiator, c.ip
        );
    }
    b
}

/// The header line of every `--op stat` listing.
pub const STAT_HEADER: &str = "tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs\n";

/// The header of the per-connection part of session and connection stat.
pub const CONN_STAT_HEADER: &str =
    "sid cid rxdata_octets txdata_octets dataout_pdus datain_pdus cmd_pdus rsp_pdus\n";

/// Per-I_T-L counters, one `--op stat` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuStatLine {
    pub tid: u32,
    pub lun: u64,
    pub sid: u64,
    pub c: LuCounters,
}

/// Per-connection counters, one line after [`CONN_STAT_HEADER`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnStatLine {
    pub tsih: u16,
    pub cid: u16,
    pub c: ConnCounters,
}

/// `--op stat` for sys, target and lu: the header then `%3d %3u %3u %12u %6u ... %4u` lines.
pub fn lu_stats(lines: &[LuStatLine]) -> String {
    let mut b = String::from(STAT_HEADER);
    for l in lines {
        let _ = writeln!(
            b,
            "{:3} {:3} {:3} {:12} {:6} {:12} {:6} {:12} {:6} {:12} {:6} {:4}",
            l.tid,
            l.lun,
            l.sid,
            l.c.rd_subm_bytes,
            l.c.rd_subm_cmds,
            l.c.rd_done_bytes,
            l.c.rd_done_cmds,
            l.c.wr_subm_bytes,
            l.c.wr_subm_cmds,
            l.c.wr_done_bytes,
            l.c.wr_done_cmds,
            l.c.errs
        );
    }
    b
}

/// `--op stat` for a session: LU lines, then (when it has connections) an empty line and
/// the connection lines.
pub fn session_stats(lus: &[LuStatLine], conns: &[ConnStatLine]) -> String {
    let mut b = lu_stats(lus);
    if !conns.is_empty() {
        b.push('\n');
        b.push_str(&conn_stats(conns));
    }
    b
}

/// `--op stat --mode conn`: the connection header and lines.
pub fn conn_stats(conns: &[ConnStatLine]) -> String {
    let mut b = String::from(CONN_STAT_HEADER);
    for c in conns {
        let _ = writeln!(
            b,
            "{:3} {:3} {:13} {:13} {:12} {:11} {:8} {:8}",
            c.tsih,
            c.cid,
            c.c.rx_bytes,
            c.c.tx_bytes,
            c.c.dataout_pdus,
            c.c.datain_pdus,
            c.c.cmd_pdus,
            c.c.rsp_pdus
        );
    }
    b
}

/// One row of the latency table: a direction of one LU, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyLine {
    pub tid: u32,
    pub lun: u64,
    pub op: &'static str,
    pub cmds: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Title of the latency table that follows tgt's stat lines.
pub const LATENCY_TITLE: &str =
    "In-target latency (us), from command arrival to status sent, since the LU was created:\n";

/// The latency table (this target's addition to `--op stat`): a title, a header, a row per
/// LU and direction.
pub fn latency_table(lines: &[LatencyLine]) -> String {
    let mut b = String::from(LATENCY_TITLE);
    let _ = writeln!(
        b,
        "{:>3} {:>3} {:<5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "tgt", "lun", "op", "cmds", "mean", "p50", "p90", "p99", "p99.9", "max"
    );
    for l in lines {
        let _ = writeln!(
            b,
            "{:>3} {:>3} {:<5} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            l.tid,
            l.lun,
            l.op,
            l.cmds,
            l.mean_us,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::Lun;

    fn lu(lun: u64, size: u64) -> LuShow {
        LuShow {
            lun: Lun(lun),
            type_name: if lun == 0 { "controller" } else { "disk" },
            scsi_id: format!("IET     0001{lun:04x}"),
            scsi_sn: format!("beaf1{lun}"),
            size_bytes: size,
            block_size: if lun == 0 { 1 } else { 512 },
            online: true,
            removable: false,
            prevent_removal: false,
            readonly: false,
            swp: false,
            thin_provisioning: false,
            bstype: if lun == 0 { "null" } else { "rdwr" }.into(),
            path: if lun == 0 {
                "None".into()
            } else {
                "/tmp/mgmtor/disk1".into()
            },
            bsflags: String::new(),
        }
    }

    /// Captured from Debian tgtd 1.0.85 (target 1 with a 64 MiB file LUN, two accounts and
    /// three ACL rules).
    const DEBIAN_TARGET_SHOW: &str = "Target 1: iqn.2022-01.org.x:t1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 67 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/mgmtor/disk1
            Backing store flags: 
    Account information:
        inuser
        outuser (outgoing)
    ACL information:
        ALL
        192.168.1.0/24
        iqn.1994-05.com.redhat:abc
";

    fn sample_target() -> TargetShow {
        TargetShow {
            tid: 1,
            name: "iqn.2022-01.org.x:t1".into(),
            state: "ready",
            nop_interval: 0,
            nop_count: 0,
            nexuses: vec![],
            luns: vec![lu(0, 0), lu(1, 64 << 20)],
            in_users: vec!["inuser".into()],
            out_user: Some("outuser".into()),
            acl_addrs: vec!["ALL".into(), "192.168.1.0/24".into()],
            acl_names: vec!["iqn.1994-05.com.redhat:abc".into()],
        }
    }

    #[test]
    fn target_listing_matches_debian() {
        assert_eq!(target_listing(&[sample_target()]), DEBIAN_TARGET_SHOW);
        assert_eq!(target_listing(&[]), "");
    }

    #[test]
    fn nop_and_nexus_lines() {
        let mut t = sample_target();
        t.nop_interval = 5;
        t.nop_count = 3;
        t.state = "offline";
        t.nexuses.push(NexusShow {
            tsih: 1,
            initiator: "iqn.2004-10.com.example:init1".into(),
            alias: None,
            cid: 0,
            ip: "127.0.0.1".into(),
        });
        let s = target_listing(&[t]);
        assert!(s.starts_with(
            "Target 1: iqn.2022-01.org.x:t1\n    System information:\n        Driver: iscsi\n        State: offline\n        Nop interval: 5\n        Nop count: 3\n    I_T nexus information:\n        I_T nexus: 1\n            Initiator: iqn.2004-10.com.example:init1 alias: none\n            Connection: 0\n                IP Address: 127.0.0.1\n    LUN information:\n"
        ));
    }

    #[test]
    fn disksize_formula() {
        assert_eq!(disksize_mb(0), 0);
        assert_eq!(disksize_mb(64 << 20), 67);
        assert_eq!(disksize_mb(1 << 30), 1074);
        assert_eq!(disksize_mb(10 << 30), 10737);
        assert_eq!(disksize_mb(1 << 40), 1_099_512);
    }

    /// Captured from Debian tgtd 1.0.85 with one global incoming account, except the
    /// backing-store, LLD and device-type lists, which are this build's.
    #[test]
    fn system_show_with_global_account() {
        let s = SysShow {
            ready: true,
            debug: false,
            llds: vec![("iscsi", "ready")],
            backing_stores: vec![("null", false), ("rdwr", true), ("aio", true)],
            device_types: vec!["disk", "controller"],
            global_in: vec!["inuser".into()],
            global_out: None,
            isns: IsnsShow::default(),
        };
        assert_eq!(
            system(&s),
            "System:\n    State: ready\n    debug: off\nLLDs:\n    iscsi: ready\nBacking stores:\n    null\n    rdwr (bsoflags sync:direct)\n    aio (bsoflags sync:direct)\nDevice types:\n    disk\n    controller\n    Account information:\n\n    inuser\niSNS:\n    iSNS=Off\n    iSNSServerIP=\n    iSNSServerPort=3205\n    iSNSAccessControl=Off\n"
        );
    }

    #[test]
    fn small_listings() {
        assert_eq!(
            accounts(["outuser", "inuser"]),
            "Account list:\n    outuser\n    inuser\n"
        );
        assert_eq!(accounts([]), "");
        assert_eq!(
            portals(&[
                "127.0.0.1:13261".parse().unwrap(),
                "[::1]:3260".parse().unwrap()
            ]),
            "Portal: 127.0.0.1:13261,1\nPortal: [::1]:3260,1\n"
        );
        assert_eq!(
            lld(&[LldShow {
                name: "iscsi",
                state: "ready",
                targets: vec![(1, "iqn.2022-01.org.x:t1".into())]
            }]),
            "LLDs:\n    iscsi: ready\n        Target 1: iqn.2022-01.org.x:t1\n"
        );
        assert_eq!(
            connections(&[ConnShow {
                tsih: 1,
                cid: 0,
                initiator: "iqn.x".into(),
                ip: "127.0.0.1".into()
            }]),
            "Session: 1\n    Connection: 0\n        Initiator: iqn.x\n        IP Address: 127.0.0.1\n"
        );
        assert_eq!(
            redirect(&RedirectShow {
                address: "10.0.0.1".into(),
                port: "3260".into(),
                reason: "Permanent",
                callback: None
            })
            .unwrap(),
            "RedirectAddress=10.0.0.1\nRedirectPort=3260\nRedirectReason=Permanent\n"
        );
        assert_eq!(redirect(&RedirectShow::default()), None);
    }

    #[test]
    fn stat_lines() {
        assert_eq!(lu_stats(&[]), STAT_HEADER);
        let l = LuStatLine {
            tid: 1,
            lun: 1,
            sid: 2,
            c: LuCounters {
                rd_subm_bytes: 4096,
                rd_subm_cmds: 1,
                ..LuCounters::default()
            },
        };
        assert_eq!(
            lu_stats(&[l]).lines().nth(1).unwrap(),
            "  1   1   2         4096      1            0      0            0      0            0      0    0"
        );
        let c = ConnStatLine {
            tsih: 2,
            ..ConnStatLine::default()
        };
        let t = latency_table(&[LatencyLine {
            tid: 1,
            lun: 2,
            op: "read",
            cmds: 7,
            mean_us: 20.04,
            p50_us: 19.5,
            p90_us: 25.0,
            p99_us: 31.0,
            p999_us: 40.0,
            max_us: 1234.5,
        }]);
        let mut rows = t.lines();
        assert_eq!(rows.next().unwrap(), LATENCY_TITLE.trim_end());
        assert_eq!(
            rows.next().unwrap(),
            "tgt lun op          cmds      mean       p50       p90       p99     p99.9       max"
        );
        assert_eq!(
            rows.next().unwrap(),
            "  1   2 read           7      20.0      19.5      25.0      31.0      40.0    1234.5"
        );
        assert_eq!(
            session_stats(&[], &[c]),
            format!(
                "{STAT_HEADER}\n{CONN_STAT_HEADER}  2   0             0             0            0           0        0        0\n"
            )
        );
    }
}
