//! The configuration model the shards read: the immutable snapshot the control thread
//! publishes (targets, LUs, accounts, ACLs, redirects) and the per-target iSCSI key defaults.
//!
//! It sits below `iscsi/` and `mgmt/` so imports run one way: the protocol core reads the
//! configuration, and the control plane builds it, without either depending on the other.

pub mod snapshot;
pub mod target_params;
