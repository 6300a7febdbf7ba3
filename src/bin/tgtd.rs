//! `tgtd`: the curve-tgt target daemon. Command line as tgt's tgtd (see `tgtd --help`), plus
//! `--cores` and `--tcp_zerocopy`. Wiring only: the work is in the library.

use clap::Parser;
use curve_tgt::log;
use curve_tgt::mgmt::server::{socket_base_from_env, ControlOptions, ControlSocket};
use curve_tgt::shard::cpus;
use curve_tgt::shard::limits;
use curve_tgt::shard::plane::Plane;
use curve_tgt::shard::zerocopy::{Engine, ZcConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The iSCSI target daemon. Command line as tgt's tgtd (tgtd(8)), plus this product's own
/// options; configured at run time with tgtadm(8) or tgt-admin(8).
#[derive(Parser, Debug)]
#[command(
    name = "tgtd",
    disable_version_flag = true,
    about = concat!(
        "curve-tgt ",
        env!("CARGO_PKG_VERSION"),
        ": Linux SCSI target daemon (iSCSI), compatible with tgt 1.0.85"
    ),
    long_about = concat!(
        "curve-tgt ",
        env!("CARGO_PKG_VERSION"),
        ": tgtd, the SCSI target daemon (compatible with tgt 1.0.85)\n\n\
Serves SCSI logical units over iSCSI. One io_uring event loop (a shard) runs on each CPU; \
every connection lives on one shard. Targets, logical units, ACLs and CHAP accounts are \
configured at run time through the management socket with tgtadm(8), or from \
/etc/tgt/targets.conf with tgt-admin(8); Debian's tgtadm and tgt-admin work unchanged."
    ),
    after_help = "\
ISCSI DRIVER OPTIONS (--iscsi k=v[,k=v...]):
  portal=ADDR[:PORT]    listen on ADDR:PORT (default port 3260); IPv6 as [ADDR]:PORT;
                        :PORT means every address. Repeat the item for several portals.
                        Default: the wildcard address, IPv4 and IPv6, port 3260.
  nop_interval=SECONDS  default NOP-In interval for new targets (0 = off)
  nop_count=N           default number of unanswered NOP-Ins before closing a connection
                        (both are stored per target and shown by tgtadm; this build does
                        not send NOP-In pings yet)
  The value is a separate word (--iscsi portal=..., not --iscsi=portal=...); only the last
  --iscsi counts.

BACKING STORES (tgtadm --bstype): rdwr (files and block devices), aio, null.

MANAGEMENT SOCKET:
  ${TGT_IPC_SOCKET:-/var/run/tgtd/socket}.<control port>, with a .lock file that stops a
  second tgtd on the same control port. Only the tgtd user (same uid and gid) is served.

SIGNALS AND STOPPING:
  SIGTERM is ignored, as in tgt. Stop tgtd with
      tgtadm --op delete --mode target --tid N [--force]     (each target)
      tgtadm --op delete --mode system

EXAMPLES:
  tgtd                                          daemonize, portal 0.0.0.0:3260 and [::]:3260
  tgtd -f --iscsi portal=127.0.0.1:3260         foreground, logging to stderr
  tgtd -f -C 1 --iscsi portal=:13260            second instance: tgtadm -C 1 ...
  taskset -c 2,3 tgtd -f                        shards on CPUs 2 and 3 (or --cores 2,3)

SEE ALSO: tgtadm(8), tgt-admin(8), targets.conf(5)"
)]
struct Args {
    /// Run in the foreground, logging to stderr (no daemon, no logger process).
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Run in the foreground with the logger (tgt's -D); this build logs to stderr too.
    #[arg(short = 'D', long = "nodaemonize")]
    nodaemonize: bool,
    /// Use port NNNN for the management channel: the socket becomes <socket>.NNNN, so several
    /// tgtd can run side by side. tgtadm and tgt-admin take the same -C.
    #[arg(
        short = 'C',
        long = "control-port",
        value_name = "NNNN",
        default_value_t = 0
    )]
    control_port: u16,
    /// Number of I/O threads per LU in tgt. Accepted for compatibility and ignored: I/O runs
    /// on the shards.
    #[arg(
        short = 't',
        long = "nr_iothreads",
        value_name = "NNNN",
        default_value_t = 16
    )]
    nr_iothreads: u32,
    /// Write the daemon's PID to this file (when daemonizing).
    #[arg(short = 'p', long = "pid-file", value_name = "FILENAME")]
    pid_file: Option<PathBuf>,
    /// Debug level 0 or 1: 1 prints debugging information. Can also be changed at run time
    /// with `tgtadm --op update --mode sys --name debug --value on|off`.
    #[arg(short = 'd', long = "debug", value_name = "DEBUGLEVEL", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    debug: u8,
    /// Print this product's version (and the tgt version it is compatible with) and exit.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// iSCSI driver options: portal=ADDR[:PORT], nop_interval=SECONDS, nop_count=N (see
    /// below).
    #[arg(long = "iscsi", value_name = "k=v,...")]
    iscsi: Vec<String>,
    /// Zero-copy Data-In sends: 1 (default) or 0 for plain copies. (This product's own.)
    #[arg(long = "tcp_zerocopy", value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    tcp_zerocopy: u8,
    /// Zero-copy interface: uring (io_uring SENDMSG_ZC, default) or msg (sendmsg
    /// MSG_ZEROCOPY). (This product's own.)
    #[arg(long = "zerocopy-engine", value_name = "uring|msg", default_value = "uring", value_parser = ["uring", "msg"])]
    zerocopy_engine: String,
    /// Data-In payloads of at least this many bytes go zero-copy; smaller ones are copied.
    /// (This product's own.)
    #[arg(long = "zerocopy-threshold", value_name = "BYTES", default_value_t = curve_tgt::shard::zerocopy::DEFAULT_THRESHOLD_BYTES)]
    zerocopy_threshold: usize,
    /// 1: only Data-In payloads go zero-copy, headers and digests by ordinary sends (one send
    /// per run); 0 (default): a batch with a large payload is one zero-copy send. (This
    /// product's own.)
    #[arg(long = "zerocopy-payload-only", value_name = "0|1", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    zerocopy_payload_only: u8,
    /// 1 (default): with --zerocopy-payload-only 1 and the uring engine, send payloads from
    /// buffers registered with io_uring (fixed buffers); 0: never register. (This product's
    /// own.)
    #[arg(long = "zerocopy-fixed-buffers", value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    zerocopy_fixed_buffers: u8,
    /// CPUs to run shards on, e.g. 0,2-3; default: every CPU in the affinity mask (so
    /// `taskset` works too). (This product's own.)
    #[arg(long = "cores", value_name = "LIST")]
    cores: Option<String>,
    /// Close a connection that has not finished login this many seconds after it was
    /// accepted (a stalled or half-done login must not hold a slot). (This product's own.)
    #[arg(long = "login-timeout", value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=3600))]
    login_timeout: u32,
    /// Most connections one shard holds at once, login phase included; more are closed at
    /// accept (counted, logged rate-limited). (This product's own.)
    #[arg(long = "max-conns-per-shard", value_name = "N", default_value_t = limits::CONNS_PER_SHARD_DEFAULT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_conns_per_shard: u32,
    /// Most connections one portal holds at once, over all shards. (This product's own.)
    #[arg(long = "max-conns-per-portal", value_name = "N", default_value_t = limits::CONNS_PER_PORTAL_DEFAULT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_conns_per_portal: u32,
    /// Responses queued for one connection, in KiB, above which tgtd stops reading from it
    /// until the initiator reads them (an initiator that never reads cannot grow memory).
    /// (This product's own.)
    #[arg(long = "conn-backlog-kib", value_name = "KIB", default_value_t = (limits::CONN_BACKLOG_DEFAULT >> 10) as u32, value_parser = clap::value_parser!(u32).range(64..=1 << 20))]
    conn_backlog_kib: u32,
    /// Write buffers all sessions of one shard hold at once, in MiB; beyond it, WRITEs wait
    /// for their R2Ts until buffers are freed. (This product's own.)
    #[arg(long = "write-buffer-mib", value_name = "MIB", default_value_t = (limits::SHARD_WRITE_DEFAULT >> 20) as u32, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    write_buffer_mib: u32,
    /// Percent of --write-buffer-mib one session may hold before its next WRITE waits for
    /// its R2T (a session holding nothing always gets one write); 100 turns the cap off.
    /// (This product's own.)
    #[arg(long = "write-buffer-session-pct", value_name = "PCT", default_value_t = limits::SESSION_WRITE_PCT_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=100))]
    write_buffer_session_pct: u32,
    /// Close a connection whose write holds write-buffer room and has received no Data-Out
    /// for this many seconds (an initiator that takes R2Ts and goes silent must not stall
    /// the shard's other writers); 0 never closes. (This product's own.)
    #[arg(long = "dataout-timeout", value_name = "SECONDS", default_value_t = curve_tgt::shard::DATAOUT_TIMEOUT_DEFAULT_SECS, value_parser = clap::value_parser!(u32).range(0..=3600))]
    dataout_timeout: u32,
}

/// Parsed `--iscsi` options.
struct IscsiOpts {
    portals: Vec<SocketAddr>,
    nop_interval: u32,
    nop_count: u32,
}

fn parse_portal(v: &str) -> Result<Vec<SocketAddr>, String> {
    // ADDR, ADDR:PORT, [V6]:PORT, :PORT (wildcard).
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad portal {v:?}"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else if v.matches(':').count() > 1 {
        (v.to_string(), "")
    } else {
        match v.split_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (v.to_string(), ""),
        }
    };
    let port: u16 = if port.is_empty() {
        3260
    } else {
        port.parse()
            .map_err(|_| format!("bad portal port in {v:?}"))?
    };
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from(([0u16; 8], port)),
        ]);
    }
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("bad portal address in {v:?}"))?;
    Ok(vec![SocketAddr::new(ip, port)])
}

fn parse_iscsi(list: Option<&String>) -> Result<IscsiOpts, String> {
    let mut o = IscsiOpts {
        portals: Vec::new(),
        nop_interval: 0,
        nop_count: 0,
    };
    if let Some(s) = list {
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("bad iscsi option {item:?}"))?;
            match k {
                "portal" => o.portals.extend(parse_portal(v)?),
                "nop_interval" => {
                    o.nop_interval = v.parse().map_err(|_| format!("bad nop_interval {v:?}"))?
                }
                "nop_count" => {
                    o.nop_count = v.parse().map_err(|_| format!("bad nop_count {v:?}"))?
                }
                _ => return Err(format!("unknown iscsi option {k:?}")),
            }
        }
    }
    if o.portals.is_empty() {
        o.portals = parse_portal(":3260")?;
    }
    Ok(o)
}

fn prepare_process() {
    // As tgt: never the OOM killer's first choice, and as many descriptors as allowed.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    if let Ok(max) = std::fs::read_to_string("/proc/sys/fs/nr_open") {
        if let Ok(n) = max.trim().parse::<u64>() {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit reads a valid rlimit struct.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        }
    }
    // SIGPIPE: sends use MSG_NOSIGNAL, but be safe. SIGTERM is ignored as tgt does: tgtd
    // stops through `tgtadm --op delete --mode system`, so scripts that rely on that keep working.
    // SAFETY: installing SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        // Debian's tgtd prints "1.0.85"; ours names the product, then the tgt it follows.
        println!(
            "curve-tgt {} (tgtd, compatible with tgt 1.0.85)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let iscsi = match parse_iscsi(args.iscsi.last()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tgtd: {e}");
            return ExitCode::from(1);
        }
    };
    let cpus = match &args.cores {
        Some(l) => cpus::parse_list(l),
        None => cpus::allowed_cpus().map_err(|e| e.to_string()),
    };
    let cpus = match cpus {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tgtd: --cores: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = args.nr_iothreads;
    let zerocopy = ZcConfig {
        enabled: args.tcp_zerocopy == 1,
        engine: Engine::parse(&args.zerocopy_engine).unwrap_or(Engine::Uring),
        threshold_bytes: args.zerocopy_threshold,
        payload_only: args.zerocopy_payload_only == 1,
        fixed_buffers: args.zerocopy_fixed_buffers == 1,
        keep_when_copied: false,
    }
    .with_env();
    if !args.foreground && !args.nodaemonize {
        // SAFETY: daemon() forks before any thread exists, so the child is a full copy.
        if unsafe { libc::daemon(0, 0) } != 0 {
            eprintln!("tgtd: can't daemonize: {}", std::io::Error::last_os_error());
            return ExitCode::from(1);
        }
        if let Some(p) = &args.pid_file {
            let _ = std::fs::write(p, format!("{}\n", std::process::id()));
        }
    }
    // As tgt: -f logs to stderr; a daemon (or -D) logs to syslog, its stderr being /dev/null.
    log::init(
        log::Destination::for_tgtd(args.foreground),
        "tgtd",
        args.debug == 1,
    );
    prepare_process();
    let opts = ControlOptions {
        control_port: args.control_port,
        socket_base: socket_base_from_env(),
        portals: iscsi.portals.clone(),
        nop_interval: iscsi.nop_interval,
        nop_count: iscsi.nop_count,
    };
    let sock = match ControlSocket::bind(&opts) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("tgtd: {e}");
            return ExitCode::from(1);
        }
    };
    let shard_opts = curve_tgt::shard::ShardOptions {
        login_timeout: std::time::Duration::from_secs(u64::from(args.login_timeout)),
        limits: limits::Limits {
            conns_per_shard: args.max_conns_per_shard as usize,
            conns_per_portal: args.max_conns_per_portal as usize,
            conn_backlog_bytes: args.conn_backlog_kib as usize * 1024,
            shard_write_bytes: u64::from(args.write_buffer_mib) << 20,
            session_write_pct: args.write_buffer_session_pct,
        },
        dataout_timeout_secs: args.dataout_timeout,
    };
    let (plane, events) = match Plane::start_with(&cpus, zerocopy, shard_opts) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("tgtd: can't start shards: {e}");
            return ExitCode::from(1);
        }
    };
    for p in &iscsi.portals {
        if let Err(e) = plane.add_portal(*p) {
            // tgt carries on when one address family is unavailable (e.g. no IPv6).
            log::event::portal_failed(*p, &e);
        }
    }
    tracing::info!(shards = cpus.len(), ?cpus, control = %sock.path().display(), "tgtd ready");
    curve_tgt::service::notify_ready();
    match sock.serve(&opts, Box::new(plane), events) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("tgtd: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_forms() {
        assert_eq!(
            parse_portal("127.0.0.1:13260").unwrap(),
            vec!["127.0.0.1:13260".parse().unwrap()]
        );
        assert_eq!(
            parse_portal("127.0.0.1").unwrap(),
            vec!["127.0.0.1:3260".parse().unwrap()]
        );
        assert_eq!(
            parse_portal("[::1]:3261").unwrap(),
            vec!["[::1]:3261".parse().unwrap()]
        );
        assert_eq!(parse_portal(":3251").unwrap().len(), 2);
        assert!(parse_portal("nonsense:1").is_err());
        let o = parse_iscsi(Some(
            &"portal=127.0.0.1:1,nop_interval=5,nop_count=3".to_string(),
        ))
        .unwrap();
        assert_eq!((o.nop_interval, o.nop_count, o.portals.len()), (5, 3, 1));
        assert!(parse_iscsi(Some(&"bogus=1".to_string())).is_err());
    }
}
