//! A private real CurveBS cluster for the curve tests (`../shared/curve/cluster.sh`: etcd, one
//! MDS, three chunk servers, Curve's own client `curve_smoke`), on free loopback ports with its
//! own run directory, stopped by the script (which stops by PID) when dropped, even when a step
//! panics. Also what the script cannot do: kill the MDS with SIGKILL and start it again with
//! the same command line, environment and working directory it ran with.
//!
//! Clusters are heavy for a 2-core machine, so one test at a time holds one: [`Cluster::start`]
//! waits for the previous holder to drop its cluster.
//!
//! Without the cluster kit (no `../shared/curve/cluster.sh`, or `CURVE_CLUSTER_SH` pointing
//! nowhere) [`Cluster::start`] says so and returns `None`, and the test passes.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The owner of the tests' volumes (`cbd:pool//NAME_ctest_`).
pub const OWNER: &str = "ctest";

/// Serialises the cluster tests of this process (see the module doc).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How to run `cluster.sh` against one cluster: cheap to clone into a fault thread.
#[derive(Clone, Debug)]
pub struct ClusterCtl {
    pub script: PathBuf,
    pub env: Vec<(String, String)>,
    /// The run directory (`CURVE_RUN`): pid files, logs, data.
    pub run: PathBuf,
    /// The MDS's `ip:port`.
    pub mds: String,
}

/// A running private cluster; stopped when dropped.
pub struct Cluster {
    ctl: ClusterCtl,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Cluster {
    type Target = ClusterCtl;
    fn deref(&self) -> &ClusterCtl {
        &self.ctl
    }
}

/// The MDS as it ran: what [`ClusterCtl::restart_mds`] starts again.
#[derive(Clone, Debug)]
pub struct MdsImage {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

fn script() -> Option<PathBuf> {
    let p = std::env::var_os("CURVE_CLUSTER_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/curve/cluster.sh")
        });
    p.exists().then_some(p)
}

/// The first of `n` consecutive free ports, below the ephemeral range (32768+) so that
/// outgoing connections of other tests cannot take them meanwhile.
fn free_base(n: u16, tag: &str) -> u16 {
    let seed = tag.bytes().fold(u64::from(std::process::id()), |h, b| {
        h.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    for k in 0..500u64 {
        let base =
            20000 + ((seed.wrapping_mul(2654435761).wrapping_add(k * 7919 + 13)) % 12000) as u16;
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

impl Cluster {
    /// Starts a fresh cluster (run directory named after `tag` and this process), or `None`
    /// without the kit.
    pub fn start(tag: &str) -> Option<Cluster> {
        let Some(script) = script() else {
            eprintln!(
                "SKIP: no Curve cluster kit (../shared/curve/cluster.sh or CURVE_CLUSTER_SH)"
            );
            return None;
        };
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let run = std::env::temp_dir().join(format!("{tag}-cluster-{}", std::process::id()));
        // One run of 8 free ports: etcd (3), MDS (2), chunk servers (3).
        let base = free_base(8, tag);
        let (etcd, mds, cs) = (base, base + 3, base + 5);
        let env = vec![
            ("CURVE_RUN".to_string(), run.display().to_string()),
            ("CURVE_ETCD_PORT".to_string(), etcd.to_string()),
            ("CURVE_MDS_PORT".to_string(), mds.to_string()),
            ("CURVE_CS_PORT".to_string(), cs.to_string()),
        ];
        let c = Cluster {
            ctl: ClusterCtl {
                script,
                env,
                mds: format!("127.0.0.1:{mds}"),
                run,
            },
            _turn: turn,
        };
        // Curve's chunk server now and then aborts while starting (glibc "unaligned tcache
        // chunk", bench/run.sh saw it too): one more try from scratch before failing.
        let (mut ok, mut out) = c.sh(&["start"]);
        if !ok {
            eprintln!("cluster start failed, trying once more:\n{out}");
            c.sh(&["stop"]);
            (ok, out) = c.sh(&["start"]);
        }
        assert!(ok, "cluster start failed twice:\n{out}");
        Some(c)
    }

    /// A handle for threads.
    pub fn ctl(&self) -> ClusterCtl {
        self.ctl.clone()
    }
}

impl ClusterCtl {
    /// Runs `cluster.sh ARGS`; (success, stdout + stderr).
    pub fn sh(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run cluster.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Curve's own client: `vol write|verify PATH OWNER OFF LEN SEED` (volumes of [`OWNER`]);
    /// a verify succeeds only on MATCH.
    pub fn smoke(&self, cmd: &str, path: &str, off: u64, len: u64, seed: u32) -> (bool, String) {
        let (ok, out) = self.sh(&[
            "vol",
            cmd,
            path,
            OWNER,
            &off.to_string(),
            &len.to_string(),
            &seed.to_string(),
        ]);
        let ok = ok && (cmd != "verify" || (out.contains("MATCH") && !out.contains("MISMATCH")));
        (ok, out)
    }

    fn mds_pid_file(&self) -> PathBuf {
        self.run.join("pids/mds.pid")
    }

    /// The running MDS's PID (from the script's pid file).
    pub fn mds_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.mds_pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the MDS with SIGKILL (a crash, not a shutdown) and waits (bounded) until it is
    /// gone; returns what it ran as, for [`ClusterCtl::restart_mds`].
    pub fn kill_mds(&self) -> MdsImage {
        let pid = self.mds_pid().expect("no MDS pid file");
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let nul_split = |p: &Path| -> Vec<String> {
            std::fs::read(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let argv = nul_split(&proc.join("cmdline"));
        assert!(
            argv.first().is_some_and(|a| a.ends_with("curvemds")),
            "pid {pid} is not the MDS: {argv:?}"
        );
        let env = nul_split(&proc.join("environ"))
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let cwd = std::fs::read_link(proc.join("cwd")).expect("MDS cwd");
        // SAFETY: kill(2) has no pointer arguments; the PID is the MDS this cluster started.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -KILL {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for its reaper.
        while std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        }) {
            assert!(
                Instant::now() < deadline,
                "MDS {pid} still alive after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        MdsImage { argv, env, cwd }
    }

    /// Starts the MDS again as it ran (same command line, environment, working directory,
    /// output appended to its log), detached as the script starts it, records its PID in the
    /// script's pid file (so `cluster.sh stop` stops it), and waits (bounded) until it accepts
    /// connections. Returns how long that took.
    pub fn restart_mds(&self, img: &MdsImage) -> Duration {
        let started = Instant::now();
        let log = self.run.join("logs/mds.out");
        // `sh` backgrounds the MDS and exits, so the MDS is not our child (no zombie).
        let out = Command::new("sh")
            .arg("-c")
            .arg("log=$1; shift; \"$@\" >>\"$log\" 2>&1 </dev/null & echo $!")
            .arg("sh")
            .arg(&log)
            .args(&img.argv)
            .env_clear()
            .envs(img.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&img.cwd)
            .stderr(Stdio::inherit())
            .output()
            .expect("start the MDS");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && pid.parse::<u32>().is_ok(),
            "MDS restart: {out:?}"
        );
        std::fs::write(self.mds_pid_file(), format!("{pid}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&self.mds).is_err() {
            assert!(
                Instant::now() < deadline,
                "the restarted MDS does not listen after 60 s (see {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (_, out) = self.sh(&["stop"]);
        eprintln!("{out}");
        if std::thread::panicking() {
            eprintln!("cluster logs kept in {}", self.run.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.run);
        }
    }
}

/// `tgtadm --op new --mode logicalunit` for LUN 1 of target 1 on a curve backing store, with
/// `--bsopts` when not empty and any `extra` arguments; the tgtadm output as it came.
pub fn add_curve_lu(
    t: &super::Tgtd,
    backing: &str,
    bsopts: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--lld",
        "iscsi",
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "--bstype",
        "curve",
        "--backing-store",
        backing,
    ];
    if !bsopts.is_empty() {
        args.extend_from_slice(&["--bsopts", bsopts]);
    }
    args.extend_from_slice(extra);
    t.tgtadm(&args)
}
