//! The data plane as the control thread sees it: starting the shards, accepting connections
//! on the portals and placing each on the least-loaded shard, and carrying configuration,
//! unit attentions and session closes to the shards by message. The control thread reaches it
//! through its `DataPlane` trait, implemented in `mgmt::shard_plane`, so the shards never import
//! the control plane.

use super::callback::CallbackRunner;
use super::cpus::pin_current_thread;
use super::event_loop::Shard;
use super::msg::{ControlEvent, ShardMsg};
use super::stats::ShardStats;
use super::zerocopy::ZcConfig;
use super::{ShardHandle, ShardOptions, Shared};
use crate::config::snapshot::ConfigSnapshot;
use crate::iscsi::registry::SessionRegistry;
use crate::scsi::{Lun, UnitAttention};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long `--op stat` waits for the shards' reports.
const STATS_WAIT: Duration = Duration::from_secs(2);

struct Portal {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The running shards and portals.
pub struct Plane {
    shared: Arc<Shared>,
    latest: Arc<Mutex<Arc<ConfigSnapshot>>>,
    portals: Mutex<HashMap<SocketAddr, Portal>>,
    shards: Mutex<Vec<JoinHandle<()>>>,
}

impl Plane {
    /// Starts one shard per CPU in `cpus`, each pinned to its CPU. Returns the plane and the
    /// receiver of session events for the control thread.
    pub fn start(
        cpus: &[usize],
        zerocopy: ZcConfig,
    ) -> io::Result<(Plane, Receiver<ControlEvent>)> {
        Plane::start_with(cpus, zerocopy, ShardOptions::default())
    }

    /// As [`Plane::start`], with these shard settings.
    pub fn start_with(
        cpus: &[usize],
        zerocopy: ZcConfig,
        options: ShardOptions,
    ) -> io::Result<(Plane, Receiver<ControlEvent>)> {
        let (ctl_tx, ctl_rx): (Sender<ControlEvent>, Receiver<ControlEvent>) = unbounded();
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for _ in cpus {
            let (tx, rx) = unbounded();
            // SAFETY: eventfd returns a new descriptor or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a freshly created descriptor we own.
            let wake = unsafe { OwnedFd::from_raw_fd(fd) };
            receivers.push((rx, wake.as_raw_fd()));
            handles.push(ShardHandle { tx, wake });
        }
        let shared = Arc::new(Shared {
            shard_conns: cpus.iter().map(|_| AtomicUsize::new(0)).collect(),
            handles,
            registry: SessionRegistry::default(),
            control: ctl_tx,
            callbacks: CallbackRunner::from_env(),
            options,
            admission: super::limits::Admission::new(cpus.len()),
        });
        let latest = Arc::new(Mutex::new(Arc::new(ConfigSnapshot::default())));
        let mut threads = Vec::new();
        for (i, ((rx, wake_fd), cpu)) in receivers.into_iter().zip(cpus.iter().copied()).enumerate()
        {
            let shared = shared.clone();
            let cfg = latest.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let t = std::thread::Builder::new()
                .name(format!("tgtd/shard{i}"))
                .spawn(move || {
                    if let Err(e) = pin_current_thread(cpu) {
                        tracing::warn!("shard {i}: cannot pin to CPU {cpu}: {e}");
                    }
                    let _life = super::limits::ShardLife {
                        shared: shared.clone(),
                        shard: i,
                        cfg,
                    };
                    match Shard::new(i, rx, wake_fd, shared, zerocopy) {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s.run();
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("shard thread died"))??;
            threads.push(t);
        }
        Ok((
            Plane {
                shared,
                latest,
                portals: Mutex::new(HashMap::new()),
                shards: Mutex::new(threads),
            },
            ctl_rx,
        ))
    }

    /// Waits for every shard thread to end (after `shutdown`).
    pub fn join(&self) {
        let threads = std::mem::take(&mut *self.shards.lock().expect("shards lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Accepts on one portal until stopped, placing each connection on the live shard with the
/// fewest, within the connection caps (`super::limits::place`).
fn accept_loop(
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    latest: Arc<Mutex<Arc<ConfigSnapshot>>>,
) {
    let portal_conns = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM)
                ) {
                    // Out of descriptors: back off briefly instead of spinning.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                continue;
            }
        };
        {
            let cfg = latest.lock().expect("config lock");
            // tgt drops new connections while the system is offline or has no targets.
            if !cfg.system_ready || cfg.targets.is_empty() {
                continue;
            }
        }
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let _ = super::limits::place(&shared, &portal_conns, stream, peer, local);
    }
}

impl Plane {
    /// Uses this configuration from now on: for new connections' placement and on every shard.
    pub fn publish(&self, snap: Arc<ConfigSnapshot>) {
        *self.latest.lock().expect("config lock") = snap.clone();
        self.shared.broadcast(|| ShardMsg::Config(snap.clone()));
    }

    /// Raises a unit attention on every nexus of `tid` (on `lun`, or every LUN when `None`).
    pub fn raise_ua(&self, tid: u32, lun: Option<Lun>, ua: UnitAttention) {
        self.shared.broadcast(|| ShardMsg::Ua {
            tid,
            lun,
            ua,
            except: None,
            only: None,
        });
    }

    /// Closes every connection of a session, on whichever shard holds it.
    pub fn close_session(&self, tid: u32, tsih: u16) {
        self.shared
            .broadcast(|| ShardMsg::CloseSession { tid, tsih });
    }

    /// Starts listening on a new portal, with its own accept thread.
    pub fn add_portal(&self, addr: SocketAddr) -> io::Result<()> {
        let mut portals = self.portals.lock().expect("portals lock");
        if portals.contains_key(&addr) {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        sock.set_reuse_address(true)?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(libc::SOMAXCONN)?;
        let listener = Arc::new(TcpListener::from(sock));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, sh, lt) = (
            listener.clone(),
            stop.clone(),
            self.shared.clone(),
            self.latest.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("tgtd/accept {addr}"))
            .spawn(move || accept_loop(l, s, sh, lt))?;
        portals.insert(
            addr,
            Portal {
                listener,
                stop,
                thread: Some(thread),
            },
        );
        crate::log::event::portal_up(addr);
        Ok(())
    }

    /// Stops listening on a portal and joins its accept thread.
    pub fn remove_portal(&self, addr: SocketAddr) -> io::Result<()> {
        let mut p = self
            .portals
            .lock()
            .expect("portals lock")
            .remove(&addr)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        p.stop.store(true, Ordering::Release);
        // SAFETY: shutdown on a listening socket we own wakes its blocked accept (EINVAL).
        unsafe { libc::shutdown(p.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = p.thread.take() {
            let _ = t.join();
        }
        crate::log::event::portal_down(addr);
        Ok(())
    }

    /// Connections refused or closed by a budget, and sessions lost with a dead shard.
    pub fn admission(&self) -> super::limits::AdmissionCounts {
        self.shared.admission.counts()
    }

    /// Every shard's counters and histograms; a shard that does not answer within
    /// `STATS_WAIT` (2 s) is left out.
    pub fn stats(&self) -> Vec<ShardStats> {
        let n = self.shared.handles.len();
        let (tx, rx) = crossbeam_channel::bounded(n);
        self.shared.broadcast(|| ShardMsg::Stats(tx.clone()));
        drop(tx);
        // A shard answers between two turns of its loop; one that has not answered by the
        // deadline (stuck in a long completion burst) is left out rather than waited for.
        let deadline = Instant::now() + STATS_WAIT;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match rx.recv_deadline(deadline) {
                Ok(s) => out.push(s),
                Err(_) => {
                    tracing::warn!("stat: {} of {n} shards answered in time", out.len());
                    break;
                }
            }
        }
        out
    }

    /// Closes every portal, stops every shard and joins them.
    pub fn shutdown(&self) {
        let addrs: Vec<SocketAddr> = self
            .portals
            .lock()
            .expect("portals lock")
            .keys()
            .copied()
            .collect();
        for a in addrs {
            let _ = self.remove_portal(a);
        }
        self.shared.broadcast(|| ShardMsg::Shutdown);
        self.join();
    }
}
