//! Newtypes for the numbers Curve's protocol carries, so a chunk id is never passed where a
//! copyset id belongs.

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A logical pool (`logicPoolId`): copyset ids are unique only within one.
    LogicalPoolId(u32)
);
id!(
    /// A copyset (raft group of chunk servers) within a logical pool.
    CopysetId(u32)
);
id!(
    /// A chunk (`chunkId`), unique in the cluster.
    ChunkId(u64)
);
id!(
    /// A chunk server, as the MDS topology numbers it.
    ChunkServerId(u32)
);
id!(
    /// brpc's correlation id: the key that matches a reply to its request on one connection.
    CorrelationId(u64)
);
id!(
    /// The caller's name for one submitted operation (read, write or volume-management call).
    OpId(u64)
);
id!(
    /// A connection endpoint the driver owns: the core says which peer to connect, send to
    /// and close, the driver maps it to a socket.
    PeerId(u32)
);

/// A copyset named in full: (logical pool, copyset).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CopysetKey {
    /// The logical pool.
    pub pool: LogicalPoolId,
    /// The copyset within it.
    pub copyset: CopysetId,
}

impl fmt::Display for CopysetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.pool, self.copyset)
    }
}
