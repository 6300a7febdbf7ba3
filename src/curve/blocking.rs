//! A blocking driver for the sans-IO [`Client`]: std sockets and `poll(2)` on the calling
//! thread. For the volume tool, tests and simple programs; the target's shards drive the same
//! core from their io_uring loops instead.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::Credentials;
use super::chunk_io::IoStats;
use super::client::{Client, Completion};
use super::config::ClientConfig;
use super::conn::Action;
use super::error::{IoError, MdsError};
use super::ids::{OpId, PeerId};
use super::mds::{AdminReply, AdminRequest};
use super::proto::mds::FileInfo;

/// How long a connect may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Read size per socket wake-up.
const RECV_BYTES: usize = 256 << 10;

struct Sock {
    stream: TcpStream,
    out: Vec<u8>,
}

/// The client driven by blocking sockets on the calling thread.
pub struct BlockingClient {
    core: Client<Vec<u8>, Bytes>,
    socks: HashMap<PeerId, Sock>,
    done: HashMap<OpId, Completion<Vec<u8>>>,
    next_op: u64,
    recv_buf: Vec<u8>,
}

impl BlockingClient {
    /// A client for `cfg.mds_addrs`, acting as `creds`.
    pub fn new(cfg: ClientConfig, creds: Credentials) -> BlockingClient {
        BlockingClient {
            core: Client::new(cfg, creds),
            socks: HashMap::new(),
            done: HashMap::new(),
            next_op: 1,
            recv_buf: vec![0; RECV_BYTES],
        }
    }

    fn op(&mut self) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        id
    }

    /// A volume-management call, waited for.
    pub fn admin(&mut self, req: AdminRequest) -> Result<AdminReply, MdsError> {
        let op = self.op();
        self.core.admin(Instant::now(), op, req);
        self.wait_mds(op)
    }

    /// Opens `path` for I/O; returns its info.
    pub fn open(&mut self, path: &str) -> Result<FileInfo, MdsError> {
        let op = self.op();
        self.core.open(Instant::now(), op, path);
        match self.wait_mds(op)? {
            AdminReply::Info(i) => Ok(*i),
            other => Err(MdsError::BadReply {
                method: "OpenFile",
                detail: format!("unexpected {other:?}"),
            }),
        }
    }

    /// Closes the open volume.
    pub fn close(&mut self) -> Result<(), MdsError> {
        let op = self.op();
        self.core.close(Instant::now(), op);
        self.wait_mds(op).map(|_| ())
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, IoError> {
        let op = self.submit_read(offset, len);
        self.wait_io(op)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: Bytes) -> Result<(), IoError> {
        let op = self.submit_write(offset, data);
        self.wait_io(op).map(|_| ())
    }

    /// Starts a read without waiting; see [`BlockingClient::wait_io`].
    pub fn submit_read(&mut self, offset: u64, len: usize) -> OpId {
        let op = self.op();
        self.core.read(Instant::now(), op, offset, vec![0; len]);
        op
    }

    /// Starts a write without waiting.
    pub fn submit_write(&mut self, offset: u64, data: Bytes) -> OpId {
        let op = self.op();
        self.core.write(Instant::now(), op, offset, data);
        op
    }

    /// Waits for a read or write; a read returns its data, a write an empty vector.
    pub fn wait_io(&mut self, op: OpId) -> Result<Vec<u8>, IoError> {
        match self.wait(op) {
            Completion::Io(c) => c.result.map(|()| c.buf.unwrap_or_default()),
            Completion::Mds(c) => Err(IoError::Refused(format!(
                "op {} completed as an MDS call: {:?}",
                c.op, c.result
            ))),
        }
    }

    /// The chunk I/O counters.
    pub fn stats(&self) -> &IoStats {
        self.core.stats()
    }

    /// Current volume length as the layout knows it.
    pub fn length(&self) -> Option<u64> {
        self.core.layout().map(|l| l.geometry.length)
    }

    /// The file sequence number writes carry now.
    pub fn seq_num(&self) -> Option<u64> {
        self.core.layout().map(|l| l.seq_num)
    }

    fn wait_mds(&mut self, op: OpId) -> Result<AdminReply, MdsError> {
        match self.wait(op) {
            Completion::Mds(c) => c.result,
            Completion::Io(c) => Err(MdsError::Usage(format!("op {} completed as I/O", c.op))),
        }
    }

    /// Drives the client until `op` completes (other completions are kept for later waits).
    fn wait(&mut self, op: OpId) -> Completion<Vec<u8>> {
        loop {
            while let Some(c) = self.core.poll_completion() {
                self.done.insert(c.op(), c);
            }
            if let Some(c) = self.done.remove(&op) {
                return c;
            }
            self.turn();
        }
    }

    /// One round: act, send, wait for sockets or the next deadline, receive, expire.
    fn turn(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Connect { peer, addr } => {
                    let now = Instant::now();
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
                        s.set_nodelay(true)?;
                        s.set_nonblocking(true)?;
                        Ok(s)
                    }) {
                        Ok(stream) => {
                            self.socks.insert(
                                peer,
                                Sock {
                                    stream,
                                    out: Vec::new(),
                                },
                            );
                            self.core.on_connected(now, peer);
                        }
                        Err(e) => {
                            self.core
                                .on_closed(now, peer, &format!("connect to {addr}: {e}"))
                        }
                    }
                }
                Action::Close { peer, reason } => {
                    tracing::debug!(peer = peer.0, %reason, "closing connection");
                    self.socks.remove(&peer);
                }
            }
        }
        while let Some(t) = self.core.poll_transmit() {
            // This driver copies into one output buffer per socket (simple, and it batches
            // many RPCs into few writes); the shard glue sends head and attachment by writev.
            if let Some(s) = self.socks.get_mut(&t.peer) {
                s.out.extend_from_slice(&t.head);
                s.out.extend_from_slice(t.attachment_bytes());
            }
        }
        let mut failed = Vec::new();
        for (peer, s) in &mut self.socks {
            if let Err(e) = flush(s) {
                failed.push((*peer, e.to_string()));
            }
        }
        for (peer, why) in failed {
            self.socks.remove(&peer);
            self.core.on_closed(Instant::now(), peer, &why);
        }
        if self.core.poll_completion_pending() {
            return;
        }
        let now = Instant::now();
        let wait = self
            .core
            .poll_timeout()
            .map_or(Duration::from_millis(500), |t| {
                t.saturating_duration_since(now)
            })
            .min(Duration::from_millis(500));
        let peers: Vec<PeerId> = self.socks.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = peers
            .iter()
            .map(|p| {
                let s = &self.socks[p];
                libc::pollfd {
                    fd: s.stream.as_raw_fd(),
                    events: libc::POLLIN | if s.out.is_empty() { 0 } else { libc::POLLOUT },
                    revents: 0,
                }
            })
            .collect();
        let ms = wait.as_millis().min(500) as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd entries that lives
        // across the call; poll only writes their `revents` fields.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n > 0 {
            for (pfd, peer) in fds.iter().zip(&peers) {
                if pfd.revents == 0 {
                    continue;
                }
                if pfd.revents & libc::POLLOUT != 0 {
                    if let Some(s) = self.socks.get_mut(peer) {
                        if let Err(e) = flush(s) {
                            self.socks.remove(peer);
                            self.core.on_closed(Instant::now(), *peer, &e.to_string());
                            continue;
                        }
                    }
                }
                if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.receive(*peer);
                }
            }
        }
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.on_timeout(now);
        }
    }

    fn receive(&mut self, peer: PeerId) {
        // Bounded, as the volume thread's loop is: a server that keeps the socket full is
        // read again at the next poll instead of holding this loop.
        for _ in 0..64 {
            let Some(s) = self.socks.get_mut(&peer) else {
                return;
            };
            match s.stream.read(&mut self.recv_buf) {
                Ok(0) => {
                    self.socks.remove(&peer);
                    self.core
                        .on_closed(Instant::now(), peer, "closed by the server");
                    return;
                }
                Ok(n) => {
                    let bytes = &self.recv_buf[..n];
                    self.core.on_recv(Instant::now(), peer, bytes);
                    if n < self.recv_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.socks.remove(&peer);
                    self.core.on_closed(Instant::now(), peer, &e.to_string());
                    return;
                }
            }
        }
    }
}

fn flush(s: &mut Sock) -> io::Result<()> {
    let mut off = 0;
    while off < s.out.len() {
        match s.stream.write(&s.out[off..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    s.out.drain(..off);
    Ok(())
}
