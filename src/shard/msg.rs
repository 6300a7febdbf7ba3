//! Messages between the control thread and the shards. Cores share no mutable state on the
//! data path: configuration, new connections and cross-nexus events travel as these messages
//! over crossbeam channels, with an eventfd write to wake the receiving shard's ring.

use super::callback::CallbackResult;
use crate::config::snapshot::ConfigSnapshot;
use crate::scsi::{Lun, UnitAttention};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// From the control thread (or another shard) to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A freshly accepted connection: log it in and serve it here.
    NewConnection {
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        /// Its place in the shard's and the portal's connection counts.
        ticket: super::limits::ConnTicket,
    },
    /// A new configuration to use for logins and command routing.
    Config(Arc<ConfigSnapshot>),
    /// Raise a unit attention on sessions of `tid` (on `lun`, or on every LUN when `None`),
    /// except on the nexus named by `except` (initiator port), if any.
    Ua {
        tid: u32,
        lun: Option<Lun>,
        ua: UnitAttention,
        except: Option<Arc<str>>,
        only: Option<Arc<str>>,
    },
    /// Close every connection of a session (conn delete, target delete --force, reinstatement).
    CloseSession { tid: u32, tsih: u16 },
    /// A redirect callback a login on connection `conn` (slot and generation) started has
    /// ended: a result for a connection since closed (and the slot perhaps reused) is dropped.
    CallbackDone {
        conn: super::slots::SlotKey,
        result: CallbackResult,
    },
    /// A message for `store`'s engine on this shard (posted through its
    /// [`crate::backing::engine::Mailbox`]). The `Weak` keeps the store's address from being
    /// reused by another store while the message travels.
    Engine {
        store: std::sync::Weak<dyn crate::backing::BackingStore>,
        msg: crate::backing::engine::EngineMsg,
    },
    /// Report counters and latency histograms (`tgtadm --op stat`) on this channel.
    Stats(crossbeam_channel::Sender<super::stats::ShardStats>),
    /// Stop: close every connection and end the event loop.
    Shutdown,
}

/// One connection of a session, for `tgtadm --op show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub cid: u16,
    pub peer: SocketAddr,
}

/// From a shard to the control thread: session life cycle, for show and for admin actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// A normal session finished login on shard `shard`.
    SessionUp {
        shard: usize,
        tid: u32,
        tsih: u16,
        initiator: String,
        alias: Option<String>,
        conns: Vec<ConnInfo>,
    },
    /// The session's last connection closed.
    SessionDown { tid: u32, tsih: u16 },
}
