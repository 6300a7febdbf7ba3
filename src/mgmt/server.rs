//! The control thread: serves tgt's management IPC on a Unix socket, owns the [`Config`], and
//! tells the data plane about every change. One plain thread, one request per connection,
//! requests served one after another — the same model as tgtd's main loop, and nothing on the
//! data path ever waits for it.
//!
//! Start-up is split in two so tgtd can fail fast: [`ControlSocket::bind`] takes the lock file
//! and binds the socket (a second tgtd on the same control port fails here with tgt's
//! message), then [`ControlSocket::serve`] (or [`run_control`]) blocks until `sys delete`.

use super::config::{Config, Session};
use super::dispatch;
use super::ipc::{self, IpcError, Mode, Op, ReqHeader, Request, REQ_HDR_LEN};
use crate::config::snapshot::ConfigSnapshot;
use crate::scsi::{Lun, UnitAttention};
use crate::shard::msg::ControlEvent;
use crate::shard::stats::ShardStats;
use crossbeam_channel::Receiver;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// tgt's default socket base (`TGT_IPC_NAMESPACE`).
pub const DEFAULT_SOCKET_BASE: &str = "/var/run/tgtd/socket";
/// The directory tgtd creates when `TGT_IPC_SOCKET` is unset.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/tgtd";
/// Longest path `sun_path` holds (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;
/// A client that stalls mid-request is dropped after this long, so it cannot wedge the
/// control thread.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the control thread leaves the shards' session events unread.
const EVENT_FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// What the control thread needs from the shards. Implemented by tgtd's shard set; every
/// call only sends a message and returns.
pub trait DataPlane: Send {
    /// Use this configuration from now on (sent after every change).
    fn publish(&self, snap: Arc<ConfigSnapshot>);
    /// Raise a unit attention on every nexus of `tid` (on `lun`, or every LUN when `None`).
    fn raise_ua(&self, tid: u32, lun: Option<Lun>, ua: UnitAttention);
    /// Close every connection of a session (conn delete, target delete --force).
    fn close_session(&self, tid: u32, tsih: u16);
    /// Start listening on a new portal.
    fn add_portal(&self, addr: SocketAddr) -> io::Result<()>;
    /// Stop listening on a portal.
    fn remove_portal(&self, addr: SocketAddr) -> io::Result<()>;
    /// Every shard's counters and latency histograms (`--op stat`). The control thread
    /// waits a bounded moment for the answers; the shards answer from their loops.
    fn stats(&self) -> Vec<ShardStats>;
    /// Connections refused or closed by a budget, and sessions lost with a dead shard
    /// (`--op stat --mode sys`, after tgt's lines). None by default.
    fn admission(&self) -> crate::shard::limits::AdmissionCounts {
        crate::shard::limits::AdmissionCounts::default()
    }
    /// Close everything and stop (after `sys delete`).
    fn shutdown(&self);
}

/// One call a [`NullPlane`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaneCall {
    Publish(u64),
    Ua(u32, Option<Lun>, UnitAttention),
    CloseSession(u32, u16),
    AddPortal(SocketAddr),
    RemovePortal(SocketAddr),
    Shutdown,
}

/// A data plane that only records what it was asked, for tests and for running the control
/// plane alone.
#[derive(Clone, Debug, Default)]
pub struct NullPlane {
    pub calls: Arc<Mutex<Vec<PlaneCall>>>,
}

impl NullPlane {
    fn record(&self, c: PlaneCall) {
        if let Ok(mut v) = self.calls.lock() {
            v.push(c);
        }
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Vec<PlaneCall> {
        self.calls
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl DataPlane for NullPlane {
    fn publish(&self, snap: Arc<ConfigSnapshot>) {
        self.record(PlaneCall::Publish(snap.generation));
    }
    fn raise_ua(&self, tid: u32, lun: Option<Lun>, ua: UnitAttention) {
        self.record(PlaneCall::Ua(tid, lun, ua));
    }
    fn close_session(&self, tid: u32, tsih: u16) {
        self.record(PlaneCall::CloseSession(tid, tsih));
    }
    fn add_portal(&self, addr: SocketAddr) -> io::Result<()> {
        self.record(PlaneCall::AddPortal(addr));
        Ok(())
    }
    fn remove_portal(&self, addr: SocketAddr) -> io::Result<()> {
        self.record(PlaneCall::RemovePortal(addr));
        Ok(())
    }
    fn stats(&self) -> Vec<ShardStats> {
        Vec::new()
    }
    fn shutdown(&self) {
        self.record(PlaneCall::Shutdown);
    }
}

/// How tgtd configured the control plane.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// tgtd `-C`.
    pub control_port: u16,
    /// `$TGT_IPC_SOCKET`, or [`DEFAULT_SOCKET_BASE`] (see [`socket_base_from_env`]).
    pub socket_base: PathBuf,
    /// Portals listened on at start-up (shown by `portal show`).
    pub portals: Vec<SocketAddr>,
    /// NOP-In defaults for new targets (`--iscsi nop_interval=`).
    pub nop_interval: u32,
    /// `--iscsi nop_count=`.
    pub nop_count: u32,
}

/// `$TGT_IPC_SOCKET` or tgt's default; tgtd and tgtadm both use this.
pub fn socket_base_from_env() -> PathBuf {
    std::env::var_os("TGT_IPC_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_BASE))
}

/// `<base>.<port>`: the socket path.
pub fn socket_path(base: &Path, port: u16) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{port}"));
    PathBuf::from(s)
}

/// Why the control socket could not be set up; the `Display` text is what tgtd logs.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The lock file is held: another tgtd serves this control port.
    #[error("another tgtd is using {0}")]
    AnotherTgtd(String),
    /// The lock file could not be opened or locked.
    #[error("unable to get lock of management IPC: {path} ({source})")]
    Lock { path: String, source: io::Error },
    /// The socket path does not fit in `sun_path`.
    #[error("managment path too long: {0}")]
    PathTooLong(String),
    /// bind/listen failed.
    #[error("can't bind a socket, {0}")]
    Bind(io::Error),
}

/// The bound, locked management socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    _lock: File,
}

impl ControlSocket {
    /// Takes `<path>.lock` with `lockf(F_TLOCK)`, unlinks a stale socket and binds a new one.
    /// Creates `/var/run/tgtd` (0755) only for the default base, as tgtd does.
    pub fn bind(opts: &ControlOptions) -> Result<ControlSocket, ControlError> {
        if opts.socket_base == Path::new(DEFAULT_SOCKET_BASE)
            && !Path::new(DEFAULT_SOCKET_DIR).exists()
        {
            let _ = std::fs::DirBuilder::new()
                .mode(0o755)
                .create(DEFAULT_SOCKET_DIR);
        }
        let path = socket_path(&opts.socket_base, opts.control_port);
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_str = lock_path.to_string_lossy().into_owned();
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|source| ControlError::Lock {
                path: lock_str.clone(),
                source,
            })?;
        // SAFETY: lockf on a descriptor we own; it only takes a record lock.
        let rc = unsafe { libc::lockf(lock.as_raw_fd(), libc::F_TLOCK, 1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EACCES | libc::EAGAIN) => ControlError::AnotherTgtd(lock_str),
                _ => ControlError::Lock {
                    path: lock_str,
                    source: e,
                },
            });
        }
        if path.as_os_str().len() > SUN_PATH_MAX {
            return Err(ControlError::PathTooLong(path.display().to_string()));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(ControlError::Bind)?;
        Ok(ControlSocket {
            listener,
            path,
            _lock: lock,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until a successful `sys delete`; then closes the socket (so tgtadm's
    /// reconnect loop sees ECONNREFUSED), releases the lock, shuts the data plane down and
    /// returns.
    pub fn serve(
        self,
        opts: &ControlOptions,
        plane: Box<dyn DataPlane>,
        events: Receiver<ControlEvent>,
    ) -> io::Result<()> {
        let mut cfg = Config::new(opts.portals.clone(), opts.nop_interval, opts.nop_count);
        plane.publish(Arc::new(cfg.snapshot()));
        loop {
            // Shards report sessions coming and going whether or not anyone runs tgtadm: fold
            // their events in at least once a second, or a daemon nobody manages queues them
            // (a few hundred bytes per login) for ever.
            if !readable_within(&self.listener, EVENT_FOLD_INTERVAL) {
                while let Ok(ev) = events.try_recv() {
                    apply_event(&mut cfg, ev);
                }
                continue;
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("can't accept a new connection, {e}");
                    continue;
                }
            };
            if !peer_allowed(&stream) {
                tracing::warn!("permission error");
                continue;
            }
            while let Ok(ev) = events.try_recv() {
                apply_event(&mut cfg, ev);
            }
            if handle(stream, &mut cfg, &*plane) == Handled::SystemDeleted {
                break;
            }
        }
        drop(self.listener);
        plane.shutdown();
        Ok(())
    }
}

/// Binds the socket and serves until `sys delete` (for callers that need no fast failure).
pub fn run_control(
    opts: ControlOptions,
    plane: Box<dyn DataPlane>,
    events: Receiver<ControlEvent>,
) -> io::Result<()> {
    let sock = ControlSocket::bind(&opts).map_err(|e| io::Error::other(e.to_string()))?;
    sock.serve(&opts, plane, events)
}

/// Folds a shard's session event into the model.
pub fn apply_event(cfg: &mut Config, ev: ControlEvent) {
    match ev {
        ControlEvent::SessionUp {
            tid,
            tsih,
            initiator,
            alias,
            conns,
            ..
        } => cfg.session_up(
            tid,
            Session {
                tsih,
                initiator,
                alias,
                conns,
                lu_order: Vec::new(),
            },
        ),
        ControlEvent::SessionDown { tid, tsih } => cfg.session_down(tid, tsih),
    }
}

/// Whether `listener` has a connection to accept within `wait` (true on a poll error, so the
/// caller's accept reports it).
fn readable_within(listener: &UnixListener, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
    n != 0
}

/// tgt's `ipc_perm`: the peer's uid and gid must both be ours.
fn peer_allowed(s: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is a ucred.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    rc == 0 && cred.uid == uid && cred.gid == gid
}

#[derive(Debug, PartialEq, Eq)]
enum Handled {
    Served,
    Dropped,
    SystemDeleted,
}

/// Reads a whole request (header, then exactly its payload).
fn read_request(stream: &mut UnixStream) -> Result<Request, IpcError> {
    let mut hdr = [0u8; REQ_HDR_LEN];
    read_full(stream, &mut hdr)?;
    let h = ReqHeader::parse(&hdr)?;
    let mut body = vec![0u8; h.payload_len()?];
    read_full(stream, &mut body)?;
    Ok(Request {
        hdr: h,
        payload: ipc::payload_text(&body),
    })
}

fn read_full(stream: &mut UnixStream, buf: &mut [u8]) -> Result<(), IpcError> {
    let mut done = 0;
    while done < buf.len() {
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(IpcError::ShortHeader(done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(IpcError::ShortHeader(done)),
        }
    }
    Ok(())
}

fn handle(mut stream: UnixStream, cfg: &mut Config, plane: &dyn DataPlane) -> Handled {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("dropping management request: {e}");
            return Handled::Dropped;
        }
    };
    let result = dispatch::execute(cfg, &req, plane);
    super::audit::admin_request(&req, &result);
    if let Ok(r) = &result {
        if r.changed {
            plane.publish(Arc::new(cfg.snapshot()));
        }
    }
    let deleted = result.is_ok()
        && Mode::from_wire(req.hdr.mode) == Some(Mode::System)
        && Op::from_wire(req.hdr.op) == Some(Op::Delete);
    let reply = ipc::encode_response(&result.map(|r| r.body));
    let _ = stream.write_all(&reply);
    if deleted {
        Handled::SystemDeleted
    } else {
        Handled::Served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::ipc::{RspHeader, TgtadmError, RSP_HDR_LEN};
    use crate::shard::msg::ConnInfo;

    fn opts(dir: &Path) -> ControlOptions {
        ControlOptions {
            control_port: 7,
            socket_base: dir.join("socket"),
            portals: vec!["127.0.0.1:3260".parse().unwrap()],
            nop_interval: 0,
            nop_count: 0,
        }
    }

    fn call(path: &Path, mode: Mode, op: Op, tid: i32, payload: &str) -> (u32, String) {
        let mut hdr = ReqHeader::new(mode, op);
        hdr.tid = tid;
        let req = Request {
            hdr,
            payload: payload.into(),
        };
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(&req.encode()).unwrap();
        let mut h = [0u8; RSP_HDR_LEN];
        s.read_exact(&mut h).unwrap();
        let h = RspHeader::parse(h);
        let mut body = vec![0u8; h.len as usize - RSP_HDR_LEN];
        s.read_exact(&mut body).unwrap();
        if let Some(0) = body.last() {
            body.pop();
        }
        (h.err, String::from_utf8(body).unwrap())
    }

    #[test]
    fn serves_over_a_real_socket_until_sys_delete() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let sock = ControlSocket::bind(&o).unwrap();
        let path = sock.path().to_path_buf();
        // lockf locks belong to the process, so "another tgtd" can only be seen from a
        // second process (tests/mgmt_interop.sh checks it against Debian's tgtd).
        let plane = NullPlane::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let p2 = plane.clone();
        let o2 = o.clone();
        let th = std::thread::spawn(move || sock.serve(&o2, Box::new(p2), rx));

        assert_eq!(
            call(&path, Mode::Target, Op::Show, -1, ""),
            (0, String::new())
        );
        assert_eq!(
            call(&path, Mode::Target, Op::New, 1, "targetname=iqn.x:t1"),
            (0, String::new())
        );
        assert_eq!(
            call(&path, Mode::Target, Op::New, 1, "targetname=iqn.x:t1").0,
            TgtadmError::TargetExist.code()
        );
        tx.send(ControlEvent::SessionUp {
            shard: 0,
            tid: 1,
            tsih: 3,
            initiator: "iqn.i".into(),
            alias: None,
            conns: vec![ConnInfo {
                cid: 0,
                peer: "127.0.0.1:4000".parse().unwrap(),
            }],
        })
        .unwrap();
        assert_eq!(
            call(&path, Mode::Connection, Op::Show, 1, ""),
            (
                0,
                "Session: 3\n    Connection: 0\n        Initiator: iqn.i\n        IP Address: 127.0.0.1\n"
                    .into()
            )
        );
        assert_eq!(
            call(&path, Mode::Target, Op::Delete, 1, "").0,
            TgtadmError::TargetActive.code()
        );
        let mut lu = ReqHeader::new(Mode::Device, Op::New);
        lu.tid = 1;
        lu.lun = 1;
        let req = Request {
            hdr: lu,
            payload: "path=/dev/null,bstype=null".into(),
        };
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&req.encode()).unwrap();
        let mut h = [0u8; RSP_HDR_LEN];
        s.read_exact(&mut h).unwrap();
        assert_eq!(RspHeader::parse(h), RspHeader { err: 0, len: 8 });
        tx.send(ControlEvent::SessionDown { tid: 1, tsih: 3 })
            .unwrap();
        assert_eq!(call(&path, Mode::Target, Op::Delete, 1, "").0, 0);
        // An oversized request is dropped without a reply.
        let mut big = ReqHeader::new(Mode::System, Op::Show);
        big.len = (REQ_HDR_LEN + ipc::MAX_PAYLOAD_LEN + 1) as u32;
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&big.encode()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(s.read_to_end(&mut buf).unwrap(), 0);

        assert_eq!(
            call(&path, Mode::System, Op::Delete, -1, ""),
            (0, String::new())
        );
        th.join().unwrap().unwrap();
        let err = UnixStream::connect(&path).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
        let calls = plane.take();
        assert_eq!(calls.first(), Some(&PlaneCall::Publish(1)));
        assert!(calls.contains(&PlaneCall::Ua(1, None, UnitAttention::ReportedLunsChanged)));
        assert_eq!(calls.last(), Some(&PlaneCall::Shutdown));
        // The lock is released: a new tgtd can bind.
        ControlSocket::bind(&o).unwrap();
    }
}
