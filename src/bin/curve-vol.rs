//! curve-vol: manage and exercise Curve volumes with curve-tgt's own client, for hosts without
//! Curve's tools. Shaped like Curve's `curve` CLI: `curve-vol create --filename /vol1 --user
//! alice --length 10` (GiB), `extend`, `stat`, `snapshot`, `delete`, `list`, plus `write` and
//! `verify` of a seeded pattern (the same one `curve_smoke` uses) and `bench` for a rough
//! per-op latency. MDS addresses come from `--mds` or `mds.listen.addr` in `--conf`
//! (default /etc/curve/client.conf).

use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, Subcommand};

use curve_tgt::curve::auth::Credentials;
use curve_tgt::curve::blocking::BlockingClient;
use curve_tgt::curve::config::{self, ClientConfig};
use curve_tgt::curve::mds::{AdminReply, AdminRequest};
use curve_tgt::curve::pattern;
use curve_tgt::curve::proto::mds::{FileInfo, FileStatus, FileType};

const GIB: u64 = 1 << 30;

#[derive(Parser)]
#[command(
    name = "curve-vol",
    version,
    about = "Manage Curve volumes with curve-tgt's native client"
)]
struct Cli {
    /// MDS addresses, ip:port[,ip:port...] (default: mds.listen.addr from --conf).
    #[arg(long, global = true)]
    mds: Option<String>,
    /// Curve client configuration to read mds.listen.addr from.
    #[arg(long, global = true, default_value = config::DEFAULT_CLIENT_CONF)]
    conf: String,
    /// Owner of the volume.
    #[arg(long, global = true, default_value = "")]
    user: String,
    /// Root password (only for --user root).
    #[arg(long, global = true)]
    password: Option<String>,
    /// Give up on an operation after this many seconds.
    #[arg(long, global = true, default_value_t = 20)]
    deadline: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a volume of --length GiB.
    Create {
        #[arg(long)]
        filename: String,
        #[arg(long)]
        length: u64,
    },
    /// Grow a volume to --length GiB.
    Extend {
        #[arg(long)]
        filename: String,
        #[arg(long)]
        length: u64,
    },
    /// Show a volume's information.
    Stat {
        #[arg(long)]
        filename: String,
    },
    /// Take a snapshot (the file's sequence number goes up).
    Snapshot {
        #[arg(long)]
        filename: String,
    },
    /// Delete a volume.
    Delete {
        #[arg(long)]
        filename: String,
        /// Delete at once instead of moving it to the recycle bin.
        #[arg(long)]
        force: bool,
    },
    /// List a directory.
    List {
        #[arg(long, default_value = "/")]
        dir: String,
    },
    /// Write the seeded pattern over [offset, offset+len).
    Write {
        #[arg(long)]
        filename: String,
        #[arg(long, value_parser = parse_size)]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        len: u64,
        #[arg(long, default_value_t = 7)]
        seed: u32,
    },
    /// Read [offset, offset+len) and compare with the seeded pattern.
    Verify {
        #[arg(long)]
        filename: String,
        #[arg(long, value_parser = parse_size)]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        len: u64,
        #[arg(long, default_value_t = 7)]
        seed: u32,
    },
    /// Rough latency of sequential --size reads and writes at queue depth 1.
    Bench {
        #[arg(long)]
        filename: String,
        #[arg(long, value_parser = parse_size, default_value = "4K")]
        size: u64,
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
}

/// Parses `123`, `4K`, `1M`, `2G`.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (digits with an optional K, M or G)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("curve-vol: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let mds_addrs = match &cli.mds {
        Some(list) => config::parse_addr_list(list).map_err(|e| e.to_string())?,
        None => {
            let text = std::fs::read_to_string(&cli.conf)
                .map_err(|e| format!("{}: {e} (give --mds ip:port)", cli.conf))?;
            config::mds_addrs_from_client_conf(&text).map_err(|e| format!("{}: {e}", cli.conf))?
        }
    };
    if cli.user.is_empty() {
        return Err("--user is required".into());
    }
    let cfg = ClientConfig {
        mds_addrs,
        op_deadline: std::time::Duration::from_secs(cli.deadline),
        ..ClientConfig::default()
    };
    let creds = Credentials {
        owner: cli.user.clone(),
        root_password: cli.password.clone(),
    };
    let mut c = BlockingClient::new(cfg, creds);
    let admin = |c: &mut BlockingClient, r| c.admin(r).map_err(|e| e.to_string());
    match cli.cmd {
        Cmd::Create { filename, length } => {
            admin(
                &mut c,
                AdminRequest::Create {
                    path: filename,
                    length: length * GIB,
                },
            )?;
        }
        Cmd::Extend { filename, length } => {
            admin(
                &mut c,
                AdminRequest::Extend {
                    path: filename,
                    new_length: length * GIB,
                },
            )?;
        }
        Cmd::Stat { filename } => {
            if let AdminReply::Info(i) = admin(&mut c, AdminRequest::Stat { path: filename })? {
                print_info(&i);
            }
        }
        Cmd::Snapshot { filename } => {
            match admin(&mut c, AdminRequest::Snapshot { path: filename })? {
                AdminReply::Info(i) => println!("snapshot seq {} created", i.seq_num.unwrap_or(0)),
                _ => println!("snapshot created"),
            }
        }
        Cmd::Delete { filename, force } => {
            admin(
                &mut c,
                AdminRequest::Delete {
                    path: filename,
                    force,
                },
            )?;
        }
        Cmd::List { dir } => {
            if let AdminReply::List(l) = admin(&mut c, AdminRequest::List { path: dir })? {
                for i in l {
                    println!("{}", i.file_name.unwrap_or_default());
                }
            }
        }
        Cmd::Write {
            filename,
            offset,
            len,
            seed,
        } => {
            c.open(&filename).map_err(|e| e.to_string())?;
            const STEP: u64 = 4 << 20;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(STEP);
                let mut buf = vec![0u8; n as usize];
                pattern::fill(&mut buf, offset + done, seed);
                c.write(offset + done, Bytes::from(buf))
                    .map_err(|e| format!("write at {}: {e}", offset + done))?;
                done += n;
            }
            c.close().map_err(|e| e.to_string())?;
            println!("wrote {len} bytes at {offset} seed {seed}");
        }
        Cmd::Verify {
            filename,
            offset,
            len,
            seed,
        } => {
            c.open(&filename).map_err(|e| e.to_string())?;
            const STEP: u64 = 4 << 20;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(STEP);
                let buf = c
                    .read(offset + done, n as usize)
                    .map_err(|e| format!("read at {}: {e}", offset + done))?;
                if let Some(i) = pattern::first_mismatch(&buf, offset + done, seed) {
                    return Err(format!("mismatch at offset {}", offset + done + i as u64));
                }
                done += n;
            }
            c.close().map_err(|e| e.to_string())?;
            println!("verified {len} bytes at {offset} seed {seed}");
        }
        Cmd::Bench {
            filename,
            size,
            count,
        } => {
            c.open(&filename).map_err(|e| e.to_string())?;
            let data = Bytes::from(vec![0x5au8; size as usize]);
            for (name, write) in [("write", true), ("read", false)] {
                let t = Instant::now();
                let cpu0 = cpu_time();
                for i in 0..count {
                    let off = (i * size) % (1 << 30);
                    if write {
                        c.write(off, data.clone()).map_err(|e| e.to_string())?;
                    } else {
                        c.read(off, size as usize).map_err(|e| e.to_string())?;
                    }
                }
                let el = t.elapsed();
                let cpu = cpu_time() - cpu0;
                println!(
                    "{name} {size} B x {count}: {:.1} us/op wall, {:.1} us/op CPU",
                    el.as_secs_f64() * 1e6 / count as f64,
                    cpu * 1e6 / count as f64
                );
            }
            let st = c.stats();
            println!(
                "chunk RPCs {} (GetLeader {}), retries: redirect {} overload {} backward {} rpc {} other {}; RPC latency p50 < {} us, p99 < {} us",
                st.rpcs,
                st.get_leader_rpcs,
                st.retries_redirect,
                st.retries_overload,
                st.retries_backward,
                st.retries_rpc,
                st.retries_other,
                st.latency_us_quantile(500).unwrap_or(0),
                st.latency_us_quantile(990).unwrap_or(0)
            );
            c.close().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// CPU seconds used by this process (user + system).
fn cpu_time() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the valid pointer we pass.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn print_info(i: &FileInfo) {
    let ftype = i
        .file_type
        .and_then(|t| FileType::try_from(t).ok())
        .map_or("?", |t| t.as_str_name());
    let status = i
        .file_status
        .and_then(|t| FileStatus::try_from(t).ok())
        .map_or("?", |t| t.as_str_name());
    println!("id: {}", i.id.unwrap_or(0));
    println!("filename: {}", i.file_name.clone().unwrap_or_default());
    println!("filetype: {ftype}");
    println!("owner: {}", i.owner.clone().unwrap_or_default());
    println!("length(GB): {}", i.length.unwrap_or(0) / GIB);
    println!("length: {}", i.length.unwrap_or(0));
    println!("chunksize: {}", i.chunk_size.unwrap_or(0));
    println!("segmentsize: {}", i.segment_size.unwrap_or(0));
    println!("blocksize: {}", i.blocksize.unwrap_or(0));
    println!("seqnum: {}", i.seq_num.unwrap_or(0));
    println!("filestatus: {status}");
}
