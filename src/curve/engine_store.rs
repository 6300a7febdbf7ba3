//! The shared half of a curve LU (`--bstype curve --backing-store cbd:pool//NAME_USER_`): a
//! [`BackingStore`] that opens the volume through its MDS thread ([`Volume`]), reports the
//! volume's size and block size, and hands each shard a [`CurveEngine`].
//!
//! What it advertises is what Curve does: SYNCHRONIZE CACHE completes at once (acknowledged
//! Curve writes are replicated, curve-tgt.md §2.3), no UNMAP and no GET LBA STATUS (the engine
//! does not discard), and the volume's own logical block size (4096 on default volumes)
//! unless `--blocksize` asks for smaller blocks (512): then each shard's engine is wrapped in
//! an [`RmwEngine`] that reads the covering 4 KiB blocks and does read-modify-write of
//! partial ones, where curve-tgt passed unaligned I/O to libcurve, which refused it (§2.6).

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::auth::Credentials;
use super::config::{ClientConfig, DEFAULT_CLIENT_CONF};
use super::engine::CurveEngine;
use super::engine_stats::EngineStats;
use super::engine_volume::Volume;
use super::rmw_engine::RmwEngine;
use super::spec::CurveStoreSpec;
use crate::backing::engine::{Completion, Engine, OpId, OpRequest, Reactor};
use crate::backing::{BackingCaps, BackingError, BackingStore, BsOFlags, IoResult};

/// Environment variable naming the client.conf used instead of `/etc/curve/client.conf`
/// when neither `--bsopts` nor the backing-store string names one (for tests and packagers).
pub const CLIENT_CONF_ENV: &str = "CURVE_TGT_CLIENT_CONF";

/// How long MDS calls made while creating or resizing an LU may retry: short, because
/// tgtadm waits for the answer.
const MDS_DEADLINE: Duration = Duration::from_secs(5);

/// Largest WRITE SAME served (written block by block through the chunk servers).
const MAX_WRITE_SAME_BYTES: u64 = 64 << 20;

/// Tells engines of successive stores apart in their ring tags.
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// A served Curve volume.
#[derive(Debug)]
pub struct CurveStore {
    path: String,
    oflags: BsOFlags,
    cfg: ClientConfig,
    vol: Arc<Volume>,
    stats: Arc<EngineStats>,
    /// The LU's logical block size when smaller than the volume's (0: the volume's own).
    logical: AtomicU32,
}

impl CurveStore {
    /// Parses `path` and `bsopts`, reads the client configuration, and opens the volume
    /// (OpenFile); fails with the reason when the string is bad or the MDS refuses or cannot
    /// be reached.
    pub fn open(path: &str, oflags: BsOFlags, bsopts: &str) -> Result<CurveStore, BackingError> {
        let refuse = |why: String| BackingError::Open {
            path: path.to_string(),
            source: io::Error::other(why),
        };
        let conf_override = std::env::var(CLIENT_CONF_ENV).ok();
        let spec = CurveStoreSpec::new(path, bsopts, |p| {
            let p = match (&conf_override, p == DEFAULT_CLIENT_CONF) {
                (Some(o), true) => o.as_str(),
                _ => p,
            };
            std::fs::read_to_string(p)
        })
        .map_err(|e| refuse(e.to_string()))?;
        let cfg = spec.client.clone();
        let mds_cfg = ClientConfig {
            op_deadline: MDS_DEADLINE,
            ..cfg.clone()
        };
        let creds = Credentials::user(&spec.target.owner);
        let vol = Volume::open(mds_cfg, creds, &spec.target.volume)
            .map_err(|e| refuse(format!("curve volume {}: {e}", spec.target.volume)))?;
        tracing::info!(
            volume = %spec.target.volume,
            owner = %spec.target.owner,
            length = vol.info.length.unwrap_or(0),
            block_size = vol.info.blocksize.unwrap_or(4096),
            "curve volume opened"
        );
        Ok(CurveStore {
            path: path.to_string(),
            oflags,
            cfg,
            vol: Arc::new(vol),
            stats: Arc::new(EngineStats::default()),
            logical: AtomicU32::new(0),
        })
    }

    /// The counters the engines keep.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
}

impl BackingStore for CurveStore {
    fn bstype(&self) -> &'static str {
        "curve"
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn oflags(&self) -> BsOFlags {
        self.oflags
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.vol
            .current_length(MDS_DEADLINE + Duration::from_secs(1))
            .map_err(io::Error::other)
    }
    fn caps(&self) -> BackingCaps {
        // No discard (UNMAP not advertised); WRITE SAME writes every block, so it is bounded.
        BackingCaps {
            max_write_same_bytes: Some(MAX_WRITE_SAME_BYTES),
            ..BackingCaps::default()
        }
    }
    fn block_size(&self) -> Option<u32> {
        Some(self.vol.info.blocksize.unwrap_or(4096))
    }
    fn serve_block_size(&self, bs: u32) -> bool {
        let native = self.block_size().unwrap_or(4096);
        let ok = bs.is_power_of_two() && bs >= 512 && bs < native && native % bs == 0;
        if ok {
            self.logical.store(bs, Ordering::Relaxed);
        }
        ok
    }
    fn stat_lines(&self) -> Option<String> {
        Some(super::engine_stats_text::render(&self.stats))
    }
    fn engine(&self, env: crate::backing::engine::EngineEnv) -> Box<dyn Engine> {
        // The volume thread reaches this engine through its own mailbox and eventfd, not
        // the shard's generic one.
        let shard = env.shard;
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        match CurveEngine::new(
            self.cfg.clone(),
            self.vol.clone(),
            shard,
            instance,
            self.stats.clone(),
        ) {
            Ok(e) => match self.logical.load(Ordering::Relaxed) {
                0 => Box::new(e),
                _ => Box::new(RmwEngine::new(e, self.block_size().unwrap_or(4096))),
            },
            Err(e) => {
                tracing::error!(shard, error = %e, "curve engine cannot start; its I/O fails");
                Box::new(Broken)
            }
        }
    }
}

/// The engine of a shard that could not attach to the volume thread: every operation fails.
struct Broken;

impl Engine for Broken {
    fn start(&mut self, op: OpId, _req: OpRequest, r: &mut dyn Reactor) {
        r.complete(Completion {
            op,
            result: IoResult::Err(io::Error::other("curve engine not started")),
            data: None,
        });
    }
    fn on_cqe(&mut self, _: u64, _: i32, _: u32, _: &mut dyn Reactor) {}
    fn on_timer(&mut self, _: u64, _: &mut dyn Reactor) {}
    fn cancel(&mut self, _: OpId, _: &mut dyn Reactor) {}
    fn in_flight(&self) -> usize {
        0
    }
}
