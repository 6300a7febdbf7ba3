//! One blocking driver for the client's sans-IO cores: std sockets and `poll(2)` on the calling
//! thread. The volume tool's [`super::blocking::BlockingClient`] drives a whole
//! [`super::client::Client`] with it, and each served volume's MDS thread
//! ([`super::engine_volume`]) drives its [`super::mds::Mds`] session; the shards drive the
//! chunk I/O core from their io_uring loops instead.
//!
//! One [`PollDriver::turn`]: connect and close what the core asks, queue and flush what it
//! sends, sleep in `poll(2)` until a socket is ready, an extra descriptor (the MDS thread's
//! eventfd) is readable or the core's next deadline, then receive (bounded per socket, so a
//! peer that keeps its socket full cannot hold the loop) and expire timers.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::client::Client;
use super::conn::Action;
use super::ids::PeerId;
use super::mds::Mds;

/// How long a connect may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reads per socket and turn.
const MAX_READS: usize = 64;

/// What the driver needs of a sans-IO core (the methods both cores already have).
pub trait Core {
    /// A connection to open or close.
    fn poll_action(&mut self) -> Option<Action>;
    /// Hands every queued transmit to `sink` as (peer, bytes) pieces, in order.
    fn drain_transmits(&mut self, sink: &mut dyn FnMut(PeerId, &[u8]));
    /// True when a completion is waiting (the turn then does not sleep).
    fn has_completion(&self) -> bool;
    /// When `on_timeout` is next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The driver connected `peer`.
    fn on_connected(&mut self, now: Instant, peer: PeerId);
    /// `peer`'s connection failed or closed.
    fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str);
    /// Bytes from `peer`.
    fn on_recv(&mut self, now: Instant, peer: PeerId, bytes: &[u8]);
    /// A deadline passed.
    fn on_timeout(&mut self, now: Instant);
}

impl<R: AsMut<[u8]>, W: AsRef<[u8]> + Clone> Core for Client<R, W> {
    fn poll_action(&mut self) -> Option<Action> {
        Client::poll_action(self)
    }
    fn drain_transmits(&mut self, sink: &mut dyn FnMut(PeerId, &[u8])) {
        while let Some(t) = self.poll_transmit() {
            sink(t.peer, &t.head);
            sink(t.peer, t.attachment_bytes());
        }
    }
    fn has_completion(&self) -> bool {
        self.poll_completion_pending()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Client::poll_timeout(self)
    }
    fn on_connected(&mut self, now: Instant, peer: PeerId) {
        Client::on_connected(self, now, peer)
    }
    fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str) {
        Client::on_closed(self, now, peer, reason)
    }
    fn on_recv(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        Client::on_recv(self, now, peer, bytes)
    }
    fn on_timeout(&mut self, now: Instant) {
        Client::on_timeout(self, now)
    }
}

impl Core for Mds {
    fn poll_action(&mut self) -> Option<Action> {
        Mds::poll_action(self)
    }
    fn drain_transmits(&mut self, sink: &mut dyn FnMut(PeerId, &[u8])) {
        // MDS calls carry no attachment.
        while let Some(t) = self.poll_transmit() {
            sink(t.peer, &t.head);
        }
    }
    fn has_completion(&self) -> bool {
        Mds::has_completion(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Mds::poll_timeout(self)
    }
    fn on_connected(&mut self, now: Instant, peer: PeerId) {
        Mds::on_connected(self, now, peer)
    }
    fn on_closed(&mut self, now: Instant, peer: PeerId, reason: &str) {
        Mds::on_closed(self, now, peer, reason)
    }
    fn on_recv(&mut self, now: Instant, peer: PeerId, bytes: &[u8]) {
        Mds::on_recv(self, now, peer, bytes)
    }
    fn on_timeout(&mut self, now: Instant) {
        Mds::on_timeout(self, now)
    }
}

struct Sock {
    stream: TcpStream,
    out: Vec<u8>,
}

/// The sockets of one core and the buffer they are read into.
pub struct PollDriver {
    socks: HashMap<PeerId, Sock>,
    recv_buf: Vec<u8>,
}

impl PollDriver {
    /// A driver reading up to `recv_bytes` per socket read.
    pub fn new(recv_bytes: usize) -> PollDriver {
        PollDriver {
            socks: HashMap::new(),
            recv_buf: vec![0; recv_bytes],
        }
    }

    /// One round (see the module documentation). `extra` is polled for reading beside the
    /// sockets (the caller drains it); the sleep is at most `max_sleep`.
    pub fn turn(&mut self, core: &mut dyn Core, extra: Option<RawFd>, max_sleep: Duration) {
        while let Some(a) = core.poll_action() {
            match a {
                Action::Connect { peer, addr } => {
                    let now = Instant::now();
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
                        s.set_nodelay(true)?;
                        s.set_nonblocking(true)?;
                        Ok(s)
                    }) {
                        Ok(stream) => {
                            let out = Vec::new();
                            self.socks.insert(peer, Sock { stream, out });
                            core.on_connected(now, peer);
                        }
                        Err(e) => core.on_closed(now, peer, &format!("connect to {addr}: {e}")),
                    }
                }
                Action::Close { peer, reason } => {
                    tracing::debug!(peer = peer.0, %reason, "closing connection");
                    self.socks.remove(&peer);
                }
            }
        }
        // One output buffer per socket: simple, and it batches many RPCs into few writes.
        let socks = &mut self.socks;
        core.drain_transmits(&mut |peer, bytes| {
            if let Some(s) = socks.get_mut(&peer) {
                s.out.extend_from_slice(bytes);
            }
        });
        let mut failed = Vec::new();
        for (peer, s) in &mut self.socks {
            if let Err(e) = flush(s) {
                failed.push((*peer, e.to_string()));
            }
        }
        for (peer, why) in failed {
            self.socks.remove(&peer);
            core.on_closed(Instant::now(), peer, &why);
        }
        if core.has_completion() {
            return;
        }
        let now = Instant::now();
        let wait = core
            .poll_timeout()
            .map_or(max_sleep, |t| t.saturating_duration_since(now))
            .min(max_sleep);
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
        if let Some(fd) = extra {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = wait.as_millis().clamp(1, max_sleep.as_millis().max(1)) as libc::c_int;
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
                            core.on_closed(Instant::now(), *peer, &e.to_string());
                            continue;
                        }
                    }
                }
                if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.receive(core, *peer);
                }
            }
        }
        let now = Instant::now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.on_timeout(now);
        }
    }

    fn receive(&mut self, core: &mut dyn Core, peer: PeerId) {
        for _ in 0..MAX_READS {
            let Some(s) = self.socks.get_mut(&peer) else {
                return;
            };
            match s.stream.read(&mut self.recv_buf) {
                Ok(0) => {
                    self.socks.remove(&peer);
                    core.on_closed(Instant::now(), peer, "closed by the server");
                    return;
                }
                Ok(n) => {
                    core.on_recv(Instant::now(), peer, &self.recv_buf[..n]);
                    if n < self.recv_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.socks.remove(&peer);
                    core.on_closed(Instant::now(), peer, &e.to_string());
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
