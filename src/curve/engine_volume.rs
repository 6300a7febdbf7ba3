//! The MDS side of one served Curve volume, off the shards: a thread per volume that owns the
//! volume's [`Mds`] session (OpenFile, the lease refreshed every lease/4 with its documented
//! reactions, CloseFile when the LU goes) and answers the shards' layout requests.
//!
//! Shards talk to it by message only. A shard's engine sends [`LayoutNeed`]s down a channel and
//! wakes the thread through an eventfd; the thread publishes each new [`Layout`] snapshot (an
//! `Arc`, never mutated) into every shard's [`Mailbox`] and writes that shard's eventfd, which
//! the engine keeps a read on in its own ring. A shard therefore reads the layout from its own
//! `Arc` on the data path, without a lock; the mailbox mutex is taken only when a snapshot or a
//! failed request is handed over.
//!
//! The thread uses plain blocking sockets and `poll(2)`: MDS traffic is a few small RPCs per
//! lease period, so it needs no ring of its own.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::config::ClientConfig;
use super::error::MdsError;
use super::ids::OpId;
use super::layout::{Layout, LayoutNeed};
use super::mds::{AdminReply, AdminRequest, Mds};
use super::poll_driver::PollDriver;
use super::proto::mds::FileInfo;

/// Read size per socket wake-up.
const RECV_BYTES: usize = 64 << 10;
/// Longest the thread sleeps without looking at its channel (a bound, not a poll interval:
/// the eventfd wakes it at once).
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How long CloseFile may take when the LU is deleted.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// An eventfd, closed when dropped.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no pointer arguments; a non-negative result is a fresh fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The descriptor (for a ring read or `poll`).
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Wakes whoever waits on it.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd. A full counter (EAGAIN) still
        // leaves the fd readable, which is all a wake-up needs.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wake-ups.
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking fd.
        unsafe { libc::read(self.raw(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What the volume thread hands one shard.
#[derive(Debug)]
pub enum ToShard {
    /// A newer layout snapshot.
    Layout(Arc<Layout>),
    /// A layout request the MDS could not answer, with the reason.
    NeedFailed(LayoutNeed, String),
}

/// One shard's inbox from the volume thread, with the eventfd that rings its ring.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<VecDeque<ToShard>>,
    efd: EventFd,
    /// Set by the engine when it goes: the thread stops delivering.
    closed: AtomicBool,
}

impl Mailbox {
    /// The eventfd the engine keeps a read on.
    pub fn fd(&self) -> RawFd {
        self.efd.raw()
    }

    /// Takes everything delivered so far.
    pub fn take(&self) -> VecDeque<ToShard> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The engine is gone; deliver nothing more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn deliver(&self, m: ToShard) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(m);
        self.efd.signal();
    }
}

/// A request to the volume thread.
enum Request {
    /// A shard (by mailbox index) needs part of the layout.
    Need(usize, LayoutNeed),
    /// GetFileInfo of the open volume (for `disksize=auto`).
    Stat(SyncSender<Result<u64, String>>),
    /// Close the volume and stop.
    Shutdown,
}

/// The shared handle on a volume's MDS thread.
#[derive(Debug)]
pub struct Volume {
    /// The volume path (`/iscsi`).
    pub path: String,
    /// What OpenFile returned.
    pub info: FileInfo,
    tx: Mutex<Sender<Request>>,
    wake: Arc<EventFd>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The newest snapshot, for engines created later.
    layout: Mutex<Option<Arc<Layout>>>,
    mailboxes: Mutex<Vec<Arc<Mailbox>>>,
}

impl Volume {
    /// Starts the thread and opens `path` as `creds`; fails with the MDS's reason (unreachable,
    /// no such volume, wrong owner) within `cfg.op_deadline`.
    pub fn open(cfg: ClientConfig, creds: Credentials, path: &str) -> Result<Volume, String> {
        let wake = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
        let (tx, rx) = mpsc::channel();
        let (open_tx, open_rx) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared::default());
        let mut t = Thread {
            mds: Mds::new(cfg.clone(), creds, 0),
            driver: PollDriver::new(RECV_BYTES),
            rx,
            wake: wake.clone(),
            shared: shared.clone(),
            waiting: HashMap::new(),
            needs: HashMap::new(),
            next_op: 1,
            published_length: 0,
            path: path.to_string(),
            open_failed: false,
        };
        let p = path.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("curve-mds{path}"))
            .spawn(move || t.run(&p, open_tx))
            .map_err(|e| format!("cannot start the volume thread: {e}"))?;
        let wait = cfg.op_deadline + Duration::from_secs(2);
        let info = match open_rx.recv_timeout(wait) {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = tx.send(Request::Shutdown);
                wake.signal();
                return Err(format!("OpenFile {path}: no answer within {wait:?}"));
            }
        };
        Ok(Volume {
            path: path.to_string(),
            info,
            tx: Mutex::new(tx),
            wake,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, r: Request) -> bool {
        let ok = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(r)
            .is_ok();
        self.wake.signal();
        ok
    }

    /// Registers a shard: its mailbox index, its mailbox, and the newest snapshot.
    pub fn attach(&self) -> io::Result<(usize, Arc<Mailbox>, Option<Arc<Layout>>)> {
        let mb = Arc::new(Mailbox {
            queue: Mutex::new(VecDeque::new()),
            efd: EventFd::new()?,
            closed: AtomicBool::new(false),
        });
        let mut list = self
            .shared
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        list.push(mb.clone());
        let idx = list.len() - 1;
        drop(list);
        let l = self
            .shared
            .layout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok((idx, mb, l))
    }

    /// Asks the MDS for part of the layout on behalf of shard mailbox `idx`.
    pub fn need(&self, idx: usize, need: LayoutNeed) {
        self.send(Request::Need(idx, need));
    }

    /// The volume's current length from the MDS (GetFileInfo), published to the shards when
    /// it changed.
    pub fn current_length(&self, wait: Duration) -> Result<u64, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.send(Request::Stat(tx)) {
            return Err("the volume's MDS thread has stopped".into());
        }
        match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(format!("GetFileInfo: no answer in {wait:?}")),
            Err(RecvTimeoutError::Disconnected) => Err("the volume's MDS thread stopped".into()),
        }
    }
}

impl Drop for Volume {
    /// CloseFile happens on the volume thread, which then exits; nobody waits for it here (the
    /// last reference may go on a shard thread).
    fn drop(&mut self) {
        self.send(Request::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            drop(t); // detached: it ends within CLOSE_WAIT
        }
    }
}

/// What a finished MDS call answers.
enum Waiter {
    Open(SyncSender<Result<FileInfo, String>>),
    Stat(SyncSender<Result<u64, String>>),
    Close,
}

struct Thread {
    mds: Mds,
    driver: PollDriver,
    rx: Receiver<Request>,
    wake: Arc<EventFd>,
    shared: Arc<Shared>,
    waiting: HashMap<OpId, Waiter>,
    /// Which shards asked for each outstanding need, so a failure goes back to them.
    needs: HashMap<LayoutNeed, Vec<usize>>,
    next_op: u64,
    published_length: u64,
    path: String,
    open_failed: bool,
}

impl Thread {
    fn op(&mut self) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        id
    }

    fn run(&mut self, path: &str, open_tx: SyncSender<Result<FileInfo, String>>) {
        let op = self.op();
        self.mds.open(Instant::now(), op, path);
        self.waiting.insert(op, Waiter::Open(open_tx));
        let mut closing: Option<Instant> = None;
        loop {
            self.route();
            if !self.drain_requests(&mut closing) && closing.is_none() {
                // Every sender is gone without a Shutdown: close anyway.
                closing = Some(self.start_close());
            }
            if let Some(since) = closing {
                let close_done = !self.waiting.values().any(|w| matches!(w, Waiter::Close));
                if close_done || since.elapsed() > CLOSE_WAIT {
                    break;
                }
            }
            // Stop once the open failed: nothing to serve.
            if self.open_failed {
                break;
            }
            self.turn();
        }
        tracing::info!(volume = path, "curve volume thread stopped");
    }

    fn start_close(&mut self) -> Instant {
        let op = self.op();
        self.mds.close(Instant::now(), op);
        self.waiting.insert(op, Waiter::Close);
        Instant::now()
    }

    /// Takes requests off the channel; false when every sender is gone.
    fn drain_requests(&mut self, closing: &mut Option<Instant>) -> bool {
        self.wake.drain();
        loop {
            match self.rx.try_recv() {
                Ok(Request::Need(idx, need)) => {
                    let who = self.needs.entry(need.clone()).or_default();
                    if !who.contains(&idx) {
                        who.push(idx);
                    }
                    self.mds.need(Instant::now(), need);
                }
                Ok(Request::Stat(reply)) => {
                    let op = self.op();
                    let path = self.path.clone();
                    self.mds
                        .admin(Instant::now(), op, AdminRequest::Stat { path });
                    self.waiting.insert(op, Waiter::Stat(reply));
                }
                Ok(Request::Shutdown) => {
                    if closing.is_none() {
                        *closing = Some(self.start_close());
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Moves completions, snapshots and failures to whoever waits for them.
    fn route(&mut self) {
        // Snapshots first: a shard attached once OpenFile is answered must find the layout.
        if let Some(l) = self.mds.take_layout() {
            self.published_length = l.geometry.length;
            *self.shared.layout.lock().unwrap_or_else(|p| p.into_inner()) = Some(l.clone());
            let boxes = self
                .shared
                .mailboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for b in boxes {
                b.deliver(ToShard::Layout(l.clone()));
            }
            // A snapshot answers every outstanding need.
            self.needs.clear();
        }
        while let Some(c) = self.mds.poll_completion() {
            let Some(w) = self.waiting.remove(&c.op) else {
                continue;
            };
            match w {
                Waiter::Open(tx) => {
                    let r = match c.result {
                        Ok(AdminReply::Info(i)) => Ok(*i),
                        Ok(other) => Err(format!("OpenFile: unexpected reply {other:?}")),
                        Err(e) => Err(open_error(&e)),
                    };
                    self.open_failed = r.is_err();
                    let _ = tx.send(r);
                    if self.open_failed {
                        return;
                    }
                }
                Waiter::Stat(tx) => {
                    let r = match c.result {
                        Ok(AdminReply::Info(i)) => {
                            i.length.ok_or_else(|| "GetFileInfo: no length".to_string())
                        }
                        Ok(other) => Err(format!("GetFileInfo: unexpected reply {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Ok(len) = r {
                        if len != self.published_length {
                            // Refresh the snapshot so shards accept the new range now.
                            self.mds.need(Instant::now(), LayoutNeed::SeqNum);
                        }
                    }
                    let _ = tx.send(r);
                }
                Waiter::Close => {
                    if let Err(e) = c.result {
                        tracing::warn!(error = %e, "curve CloseFile failed");
                    }
                }
            }
        }
        while let Some((need, why)) = self.mds.poll_need_failure() {
            let who = self.needs.remove(&need).unwrap_or_default();
            let boxes = self
                .shared
                .mailboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for i in who {
                if let Some(b) = boxes.get(i) {
                    b.deliver(ToShard::NeedFailed(need.clone(), why.clone()));
                }
            }
        }
    }

    /// One round of the shared poll(2) driver; the eventfd wakes it for the shards' requests.
    fn turn(&mut self) {
        self.driver
            .turn(&mut self.mds, Some(self.wake.raw()), MAX_SLEEP);
    }
}

/// Says why OpenFile failed in the words an admin needs.
fn open_error(e: &MdsError) -> String {
    use super::proto::mds::StatusCode as S;
    match e.status() {
        Some(S::KFileNotExists) => format!("{e} (no such volume)"),
        Some(S::KOwnerAuthFail) => format!("{e} (the owner in the name is not the volume's)"),
        _ => match e {
            MdsError::Deadline { .. } => format!("{e} (MDS unreachable?)"),
            _ => e.to_string(),
        },
    }
}
