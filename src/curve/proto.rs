//! Protobuf types generated at build time from `proto/*.proto` (see `build.rs`).
//!
//! The module tree mirrors the protobuf packages, so generated cross-package references
//! (`super::super::common::Peer`) resolve: `brpc::policy` for baidu_std's RpcMeta, and
//! `curve::{common, mds, mds::topology, chunkserver}` for Curve's services.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// brpc's packages.
pub mod brpc {
    /// baidu_std RPC metadata.
    pub mod policy {
        include!(concat!(env!("OUT_DIR"), "/brpc.policy.rs"));
    }
}

/// Curve's packages.
pub mod curve {
    /// Messages shared by the MDS and chunk servers.
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/curve.common.rs"));
    }
    /// The MDS namespace service (CurveFSService).
    pub mod mds {
        include!(concat!(env!("OUT_DIR"), "/curve.mds.rs"));
        /// The MDS topology service.
        pub mod topology {
            include!(concat!(env!("OUT_DIR"), "/curve.mds.topology.rs"));
        }
    }
    /// Chunk-server services (ChunkService, CliService2).
    pub mod chunkserver {
        include!(concat!(env!("OUT_DIR"), "/curve.chunkserver.rs"));
    }
}

pub use self::brpc::policy::{RpcMeta, RpcRequestMeta, RpcResponseMeta};
pub use self::curve::chunkserver as cs;
pub use self::curve::common;
pub use self::curve::mds;
pub use self::curve::mds::topology;
