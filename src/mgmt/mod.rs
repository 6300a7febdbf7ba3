//! The management plane: the control thread, tgt's IPC, the configuration model and the text
//! `tgtadm --op show` prints. It never touches the data path; it reaches shards by message.

pub mod audit;
pub mod cli;
pub mod cnum;
pub mod config;
pub mod dispatch;
pub mod ipc;
pub mod server;
pub mod shard_plane;
pub mod show;
pub mod stat;
pub mod stat_admission;
pub mod stat_zerocopy;
pub mod targets_conf;
