//! The budgets the data plane enforces where input enters (issue 11), and the accept side of
//! them: how many connections each shard and each portal holds, and which shards can still
//! take connections at all.
//!
//! A connection costs a descriptor, a slot on its shard and some memory before its peer has
//! proved anything, so the number of them is capped where they arrive: the accept thread
//! places a connection only on a live shard below `conns_per_shard`, and only while its portal
//! holds fewer than `conns_per_portal`; anything more is closed at once, counted, and logged
//! through the per-peer rate limit (`crate::log::event`), so a connection flood costs neither
//! memory nor the log. Each placed connection carries a [`ConnTicket`] that gives its place
//! back when the shard frees the connection (or when it never got there).
//!
//! A shard whose thread died (a panic) is marked dead, logged once, and given no more
//! connections; before, the accept thread kept handing it connections that died unserved.

use super::msg::ShardMsg;
use super::{ShardHandle, Shared};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Default connections one shard holds at once (login phase included). Each costs a
/// descriptor and a few KiB when idle; 4096 per core is far above what initiators open (one
/// or a few sessions per host) and far below what a flood could make of memory.
pub const CONNS_PER_SHARD_DEFAULT: usize = 4096;
/// Default connections one portal holds at once, over all shards.
pub const CONNS_PER_PORTAL_DEFAULT: usize = 16384;
/// Default bytes of responses queued for one connection before its receives stop: a few
/// socket buffers' worth, so a reading initiator is never paused, and one that never reads
/// holds no more than this.
pub const CONN_BACKLOG_DEFAULT: usize = 4 << 20;
/// Default bytes of write buffers one shard's sessions hold at once (R2Ts pace writers beyond
/// it): 256 MiB is 256 writes of 1 MiB in flight per core.
pub const SHARD_WRITE_DEFAULT: u64 = 256 << 20;
/// Default share of the shard's write budget one session may hold before its next write
/// waits, in percent: a quarter (64 MiB of the default, 64 writes of 1 MiB in flight), so a
/// session cannot take all the room from the others, and a single busy initiator still has
/// far more than its queue needs.
pub const SESSION_WRITE_PCT_DEFAULT: u32 = 25;

/// The budgets every shard runs with (tgtd options).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections one shard holds at once (`tgtd --max-conns-per-shard`).
    pub conns_per_shard: usize,
    /// Connections one portal holds at once (`tgtd --max-conns-per-portal`).
    pub conns_per_portal: usize,
    /// Bytes of responses queued for one connection above which no receive is armed until
    /// they drain (`tgtd --conn-backlog-kib`).
    pub conn_backlog_bytes: usize,
    /// Bytes of write buffers one shard's sessions hold at once (`tgtd --write-buffer-mib`).
    pub shard_write_bytes: u64,
    /// Percent of those one session holds before its next write waits
    /// (`tgtd --write-buffer-session-pct`; 100: no cap).
    pub session_write_pct: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conns_per_shard: CONNS_PER_SHARD_DEFAULT,
            conns_per_portal: CONNS_PER_PORTAL_DEFAULT,
            conn_backlog_bytes: CONN_BACKLOG_DEFAULT,
            shard_write_bytes: SHARD_WRITE_DEFAULT,
            session_write_pct: SESSION_WRITE_PCT_DEFAULT,
        }
    }
}

/// Accept-side state every accept thread and shard shares: which shards are dead, and the
/// counts of connections refused or closed by a budget (`tgtadm --op stat`).
#[derive(Debug)]
pub struct Admission {
    dead: Vec<AtomicBool>,
    refused_portal: AtomicU64,
    refused_shards: AtomicU64,
    refused_no_shard: AtomicU64,
    login_deadline: AtomicU64,
    dataout_deadline: AtomicU64,
    dead_shard_sessions: AtomicU64,
}

/// The counts of [`Admission`] at one moment: connections refused at accept (by cause),
/// connections closed by a deadline, and sessions dropped with a dead shard.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    /// Refused: the portal held `--max-conns-per-portal`.
    pub refused_portal: u64,
    /// Refused: every live shard held `--max-conns-per-shard`.
    pub refused_shards: u64,
    /// Refused: no shard was alive.
    pub refused_no_shard: u64,
    /// Closed: login not finished by `--login-timeout`.
    pub login_deadline: u64,
    /// Closed: a write's Data-Out made no progress for `--dataout-timeout`.
    pub dataout_deadline: u64,
    /// Sessions whose shard died, removed from the session table.
    pub dead_shard_sessions: u64,
    /// Shards that died.
    pub dead_shards: u64,
}

impl AdmissionCounts {
    /// Whether nothing was ever refused, closed or lost (the stat section is then left out).
    pub fn is_idle(&self) -> bool {
        *self == AdmissionCounts::default()
    }
}

impl Admission {
    /// State for `shards` shards, all alive.
    pub fn new(shards: usize) -> Admission {
        Admission {
            dead: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            refused_portal: AtomicU64::new(0),
            refused_shards: AtomicU64::new(0),
            refused_no_shard: AtomicU64::new(0),
            login_deadline: AtomicU64::new(0),
            dataout_deadline: AtomicU64::new(0),
            dead_shard_sessions: AtomicU64::new(0),
        }
    }

    /// Whether shard `i` died.
    pub fn is_dead(&self, i: usize) -> bool {
        self.dead.get(i).is_some_and(|d| d.load(Ordering::Acquire))
    }

    /// Marks shard `i` dead; logs it the first time. Returns whether this call marked it.
    pub fn mark_dead(&self, i: usize, why: &str) -> bool {
        if let Some(d) = self.dead.get(i) {
            if !d.swap(true, Ordering::AcqRel) {
                tracing::error!("shard {i} died ({why}): no more connections are placed on it");
                return true;
            }
        }
        false
    }

    /// Connections refused so far (caps reached, or no live shard).
    pub fn refused(&self) -> u64 {
        let c = self.counts();
        c.refused_portal + c.refused_shards + c.refused_no_shard
    }

    fn count_refusal(&self, why: Refusal) {
        let n = match why {
            Refusal::PortalFull { .. } => &self.refused_portal,
            Refusal::ShardsFull { .. } => &self.refused_shards,
            Refusal::NoShard => &self.refused_no_shard,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed because its login did not finish in time.
    pub fn count_login_deadline(&self) {
        self.login_deadline.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed because a write's Data-Out did not progress in time.
    pub fn count_dataout_deadline(&self) {
        self.dataout_deadline.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` sessions were dropped with their dead shard.
    pub fn count_dead_shard_sessions(&self, n: u64) {
        self.dead_shard_sessions.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> AdmissionCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AdmissionCounts {
            refused_portal: get(&self.refused_portal),
            refused_shards: get(&self.refused_shards),
            refused_no_shard: get(&self.refused_no_shard),
            login_deadline: get(&self.login_deadline),
            dataout_deadline: get(&self.dataout_deadline),
            dead_shard_sessions: get(&self.dead_shard_sessions),
            dead_shards: self
                .dead
                .iter()
                .filter(|d| d.load(Ordering::Relaxed))
                .count() as u64,
        }
    }
}

/// A placed connection's hold on its shard's and its portal's counts; dropping it (when the
/// shard frees the connection, or when the connection never reached the shard) gives both
/// back.
pub struct ConnTicket {
    shared: Arc<Shared>,
    shard: usize,
    portal: Arc<AtomicUsize>,
}

impl ConnTicket {
    /// A ticket for a connection a test hands a shard directly (no accept thread): it counts
    /// the connection on `shard` as `place` would.
    #[cfg(test)]
    pub(crate) fn for_test(shared: &Arc<Shared>, shard: usize) -> ConnTicket {
        shared.shard_conns[shard].fetch_add(1, Ordering::Relaxed);
        ConnTicket {
            shared: shared.clone(),
            shard,
            portal: Arc::new(AtomicUsize::new(1)),
        }
    }
}

impl std::fmt::Debug for ConnTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnTicket(shard {})", self.shard)
    }
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.shared.shard_conns[self.shard].fetch_sub(1, Ordering::Relaxed);
        self.portal.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ShardHandle {
    /// Queues a message and wakes the shard; the message comes back when the shard is gone
    /// (its receiving end dropped).
    fn try_send(&self, m: ShardMsg) -> Result<(), ShardMsg> {
        self.tx.send(m).map_err(|e| e.0)?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The portal holds `conns_per_portal` connections.
    PortalFull { limit: usize },
    /// Every live shard holds `conns_per_shard` connections.
    ShardsFull { limit: usize },
    /// No shard is alive.
    NoShard,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PortalFull { limit } => {
                write!(
                    f,
                    "refused: the portal holds its limit of {limit} connections"
                )
            }
            Refusal::ShardsFull { limit } => {
                write!(
                    f,
                    "refused: every shard holds its limit of {limit} connections"
                )
            }
            Refusal::NoShard => write!(f, "refused: no shard is running"),
        }
    }
}

/// Places an accepted connection on the live shard with the fewest connections, within the
/// caps; a refused connection is closed here, counted and logged (rate-limited per peer).
pub fn place(
    shared: &Arc<Shared>,
    portal: &Arc<AtomicUsize>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<usize, Refusal> {
    let limits = shared.options.limits;
    let adm = &shared.admission;
    let refuse = |why: Refusal| {
        adm.count_refusal(why);
        crate::log::event::connection_closed(peer, &why);
        Err(why)
    };
    if portal.fetch_add(1, Ordering::Relaxed) >= limits.conns_per_portal {
        portal.fetch_sub(1, Ordering::Relaxed);
        return refuse(Refusal::PortalFull {
            limit: limits.conns_per_portal,
        });
    }
    let mut msg_stream = Some(stream);
    loop {
        let pick = shared
            .shard_conns
            .iter()
            .enumerate()
            .filter(|(i, _)| !adm.is_dead(*i))
            .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
            .min_by_key(|(_, n)| *n);
        let Some((shard, n)) = pick else {
            portal.fetch_sub(1, Ordering::Relaxed);
            return refuse(Refusal::NoShard);
        };
        if n >= limits.conns_per_shard {
            portal.fetch_sub(1, Ordering::Relaxed);
            return refuse(Refusal::ShardsFull {
                limit: limits.conns_per_shard,
            });
        }
        shared.shard_conns[shard].fetch_add(1, Ordering::Relaxed);
        let ticket = ConnTicket {
            shared: shared.clone(),
            shard,
            portal: portal.clone(),
        };
        let m = ShardMsg::NewConnection {
            stream: msg_stream.take().expect("stream present"),
            peer,
            local,
            ticket,
        };
        match shared.handles[shard].try_send(m) {
            Ok(()) => return Ok(shard),
            Err(ShardMsg::NewConnection { stream, ticket, .. }) => {
                // The shard is gone: its count goes back with the ticket, but the portal's
                // must stay taken for the next try.
                portal.fetch_add(1, Ordering::Relaxed);
                drop(ticket);
                adm.mark_dead(shard, "its message channel is closed");
                msg_stream = Some(stream);
            }
            Err(_) => unreachable!("try_send returns the message it was given"),
        }
    }
}

/// Held by a shard's thread while it runs: when the thread ends by a panic, the shard is
/// marked dead (and logged) at once, so no connection is placed on it meanwhile, and the
/// sessions it owned are cleaned up as their shard would have on close: dropped from the
/// session table (their TSIHs free, a login naming one told it is gone), their nexuses'
/// SPC-2 reservations and prevent locks released (in `cfg`, the latest configuration), and
/// the control thread told each is down, so `--op show` no longer lists them.
pub struct ShardLife {
    pub shared: Arc<Shared>,
    pub shard: usize,
    pub cfg: Arc<std::sync::Mutex<Arc<crate::config::snapshot::ConfigSnapshot>>>,
}

impl ShardLife {
    /// The shard died: drops what the session table and the LUs still hold for it.
    fn clean_up(&self) {
        let gone = self.shared.registry.drop_shard(self.shard);
        if gone.is_empty() {
            return;
        }
        let cfg = self
            .cfg
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        for (tid, e) in &gone {
            if let Some(t) = cfg.targets.get(tid) {
                let id = crate::scsi::NexusId {
                    tid: *tid,
                    initiator_port: e.initiator_port.as_str().into(),
                };
                t.luns.values().for_each(|lu| lu.nexus_lost(&id));
            }
            let _ = self
                .shared
                .control
                .send(super::msg::ControlEvent::SessionDown {
                    tid: *tid,
                    tsih: e.tsih.0,
                });
        }
        self.shared
            .admission
            .count_dead_shard_sessions(gone.len() as u64);
        tracing::error!(
            "shard {}: {} sessions lost with it were removed",
            self.shard,
            gone.len()
        );
    }
}

impl Drop for ShardLife {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared
                .admission
                .mark_dead(self.shard, "its thread panicked");
            self.clean_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardOptions;
    use crossbeam_channel::Receiver;

    fn shared(shards: usize, limits: Limits) -> (Arc<Shared>, Vec<Receiver<ShardMsg>>) {
        let (s, rxs, _) = shared_ctl(shards, limits);
        (s, rxs)
    }

    /// As `shared`, with the control thread's receiver of session events.
    fn shared_ctl(
        shards: usize,
        limits: Limits,
    ) -> (
        Arc<Shared>,
        Vec<Receiver<ShardMsg>>,
        Receiver<super::super::msg::ControlEvent>,
    ) {
        let options = ShardOptions {
            limits,
            ..ShardOptions::default()
        };
        let (s, rxs, control_rx) = super::super::test_shared(shards, options);
        (s, rxs.into_iter().map(|(rx, _)| rx).collect(), control_rx)
    }

    fn conn() -> (TcpStream, SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (TcpStream::connect(a).unwrap(), a)
    }

    fn tickets(rx: &Receiver<ShardMsg>) -> Vec<ConnTicket> {
        rx.try_iter()
            .map(|m| match m {
                ShardMsg::NewConnection { ticket, .. } => ticket,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn caps_refuse_and_tickets_give_places_back() {
        let limits = Limits {
            conns_per_shard: 2,
            conns_per_portal: 3,
            ..Limits::default()
        };
        let (sh, rxs) = shared(2, limits);
        let portal = Arc::new(AtomicUsize::new(0));
        let mut placed = Vec::new();
        for _ in 0..3 {
            let (s, a) = conn();
            placed.push(place(&sh, &portal, s, a, a).expect("placed"));
        }
        // Least loaded first: both shards used.
        assert!(placed.contains(&0) && placed.contains(&1), "{placed:?}");
        let (s, a) = conn();
        assert_eq!(
            place(&sh, &portal, s, a, a),
            Err(Refusal::PortalFull { limit: 3 })
        );
        assert_eq!(portal.load(Ordering::Relaxed), 3);
        assert_eq!(sh.admission.refused(), 1);
        // A second portal sees the shard cap: 2 + 2 places, 3 taken.
        let other = Arc::new(AtomicUsize::new(0));
        let (s, a) = conn();
        assert!(place(&sh, &other, s, a, a).is_ok());
        let (s, a) = conn();
        assert_eq!(
            place(&sh, &other, s, a, a),
            Err(Refusal::ShardsFull { limit: 2 })
        );
        assert_eq!(
            other.load(Ordering::Relaxed),
            1,
            "refused ones hold nothing"
        );
        // Freed connections give their places back.
        let all: Vec<ConnTicket> = rxs.iter().flat_map(tickets).collect();
        assert_eq!(all.len(), 4);
        drop(all);
        assert_eq!(portal.load(Ordering::Relaxed), 0);
        assert_eq!(other.load(Ordering::Relaxed), 0);
        assert!(sh
            .shard_conns
            .iter()
            .all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn a_dead_shard_gets_no_connections() {
        let (sh, mut rxs) = shared(2, Limits::default());
        // Shard 0 dies: its receiver is gone (as when its thread unwinds).
        let rx1 = rxs.pop().unwrap();
        drop(rxs);
        let portal = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let (s, a) = conn();
            assert_eq!(
                place(&sh, &portal, s, a, a),
                Ok(1),
                "placed on the live shard"
            );
        }
        assert!(sh.admission.is_dead(0));
        assert!(!sh.admission.is_dead(1));
        assert_eq!(sh.shard_conns[0].load(Ordering::Relaxed), 0);
        assert_eq!(tickets(&rx1).len(), 4);
        assert_eq!(portal.load(Ordering::Relaxed), 0, "tickets dropped");
        // With every shard dead, connections are refused.
        drop(rx1);
        let (s, a) = conn();
        assert_eq!(place(&sh, &portal, s, a, a), Err(Refusal::NoShard));
        assert_eq!(portal.load(Ordering::Relaxed), 0);
    }

    fn no_config() -> Arc<std::sync::Mutex<Arc<crate::config::snapshot::ConfigSnapshot>>> {
        Arc::default()
    }

    #[test]
    fn a_panicking_shard_thread_is_marked_dead() {
        let (sh, _rxs) = shared(2, Limits::default());
        let s2 = sh.clone();
        let r = std::thread::spawn(move || {
            let _life = ShardLife {
                shared: s2,
                shard: 1,
                cfg: no_config(),
            };
            panic!("shard bug");
        })
        .join();
        assert!(r.is_err());
        assert!(sh.admission.is_dead(1));
        assert!(!sh.admission.is_dead(0));
        assert_eq!(sh.admission.counts().dead_shards, 1);
    }

    #[test]
    fn a_dead_shards_sessions_leave_the_table_and_the_control_side() {
        use super::super::msg::ControlEvent;
        use crate::iscsi::ids::Tsih;
        let (sh, _rxs, control) = shared_ctl(2, Limits::default());
        let reg = &sh.registry;
        let live = reg.register(1, "iqn.live,i,0x1", 0).unwrap().tsih;
        let a = reg.register(1, "iqn.a,i,0x1", 1).unwrap().tsih;
        let b = reg.register(2, "iqn.b,i,0x1", 1).unwrap().tsih;
        // A shard that ends normally (shutdown) leaves the table alone.
        let s2 = sh.clone();
        std::thread::spawn(move || {
            let _life = ShardLife {
                shared: s2,
                shard: 1,
                cfg: no_config(),
            };
        })
        .join()
        .unwrap();
        assert_eq!(reg.len(), 3);
        let s2 = sh.clone();
        let r = std::thread::spawn(move || {
            let _life = ShardLife {
                shared: s2,
                shard: 1,
                cfg: no_config(),
            };
            panic!("shard bug");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(reg.len(), 1, "only the live shard's session is left");
        assert!(reg.lookup(1, live).is_some());
        assert!(reg.lookup(1, a).is_none() && reg.lookup(2, b).is_none());
        let mut downs: Vec<(u32, u16)> = control
            .try_iter()
            .map(|e| match e {
                ControlEvent::SessionDown { tid, tsih } => (tid, tsih),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        downs.sort();
        assert_eq!(downs, vec![(1, a.0), (2, b.0)]);
        assert_eq!(sh.admission.counts().dead_shard_sessions, 2);
        // The same initiator port now logs in as a new session on a live shard.
        let again = reg.register(1, "iqn.a,i,0x1", 0).unwrap();
        assert_eq!(again.replaced, None);
        assert_ne!(again.tsih, Tsih(0));
    }
}
