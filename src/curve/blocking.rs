//! A blocking driver for the sans-IO [`Client`]: std sockets and `poll(2)` on the calling
//! thread. For the volume tool, tests and simple programs; the target's shards drive the same
//! core from their io_uring loops instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::Credentials;
use super::chunk_io::IoStats;
use super::client::{Client, Completion};
use super::config::ClientConfig;
use super::error::{IoError, MdsError};
use super::ids::OpId;
use super::mds::{AdminReply, AdminRequest};
use super::poll_driver::PollDriver;
use super::proto::mds::FileInfo;

/// Read size per socket wake-up.
const RECV_BYTES: usize = 256 << 10;
/// Longest one wait in poll(2).
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// The client driven by blocking sockets on the calling thread.
pub struct BlockingClient {
    core: Client<Vec<u8>, Bytes>,
    driver: PollDriver,
    done: HashMap<OpId, Completion<Vec<u8>>>,
    next_op: u64,
}

impl BlockingClient {
    /// A client for `cfg.mds_addrs`, acting as `creds`.
    pub fn new(cfg: ClientConfig, creds: Credentials) -> BlockingClient {
        BlockingClient {
            core: Client::new(cfg, creds),
            driver: PollDriver::new(RECV_BYTES),
            done: HashMap::new(),
            next_op: 1,
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

    /// One round of the shared poll(2) driver.
    fn turn(&mut self) {
        self.driver.turn(&mut self.core, None, MAX_SLEEP);
    }
}
