//! curve-tgt: a thread-per-core io_uring iSCSI target.
//!
//! The crate is laid out as the architecture is (see ARCHITECTURE.md):
//! - [`iscsi`]: RFC 7143 PDUs, login and text negotiation, CHAP, per-connection state machines;
//! - [`scsi`]: SPC-4/SBC-3 command execution for disk and controller logical units;
//! - [`backing`]: the backing-store trait and its null and file implementations;
//! - [`buf`]: per-shard pooled, page-aligned, reference-counted I/O buffers;
//! - [`config`]: the configuration snapshot the shards read, and per-target iSCSI key defaults;
//! - [`curve`]: the native Curve client (baidu_std RPC, MDS session, chunk I/O), sans-IO;
//! - [`shard`]: the per-core io_uring event loops that own connections and backend I/O;
//! - [`mgmt`]: the control thread, tgt's management IPC, the configuration model and `show` text.
//! - [`stores`]: the `--bstype` names and the store each opens (above `backing` and `curve`);
//! - [`log`]: where log lines go (stderr or syslog), escaping of peer text, per-peer rate limits.
//!
//! Everything that parses initiator bytes is sans-IO, so it is unit tested without sockets.

pub mod backing;
pub mod buf;
pub mod config;
pub mod curve;
pub mod iscsi;
pub mod log;
pub mod mgmt;
pub mod scsi;
pub mod service;
pub mod shard;
pub mod stores;
