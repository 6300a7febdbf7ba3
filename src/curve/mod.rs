//! A native Curve block client, sans-IO (curve-tgt.md §7).
//!
//! - [`frame`]: brpc baidu_std framing, decoded incrementally with checked lengths;
//! - [`proto`]: Curve's and brpc's protobuf messages, generated from `proto/*.proto`;
//! - [`ids`]: newtypes for pool, copyset, chunk, chunk-server, correlation and op ids.

pub mod auth;
pub mod backoff;
pub mod blocking;
pub mod chunk_io;
pub mod client;
pub mod config;
pub mod conn;
pub mod engine;
pub mod engine_stats;
pub mod engine_stats_text;
pub mod engine_store;
pub mod engine_volume;
pub mod error;
pub mod frame;
pub mod ids;
pub mod layout;
pub mod mds;
pub mod pattern;
pub mod proto;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mds;
