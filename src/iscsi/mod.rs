//! iSCSI (RFC 7143), target side, ErrorRecoveryLevel 0: PDUs, negotiation, login, CHAP and the
//! per-connection state machines. Sans-IO: bytes in, actions out.

pub mod chap;
pub mod digest;
pub mod discovery;
pub mod ids;
pub mod login;
pub mod negotiate;
pub mod pdu;
pub mod redirect;
pub mod registry;
pub mod rx;
pub mod serial;
pub mod session;
pub mod stats;
pub mod target_address;
pub mod task;
pub mod text;
pub mod tx;
