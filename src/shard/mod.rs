//! Per-core event loops. Each shard is a thread pinned to one CPU that owns one io_uring, the
//! connections and sessions placed on it, and the backend I/O they issue.

pub mod buf;
pub mod msg;
