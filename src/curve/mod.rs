//! A native Curve block client, sans-IO (curve-tgt.md §7): it speaks brpc baidu_std to Curve's
//! MDS and chunk servers itself, so I/O needs no libcurve, no thread hop and no lock.
//!
//! Floors, bottom up:
//! - [`proto`]: Curve's and brpc's protobuf messages, generated from `proto/*.proto`;
//! - [`ids`]: newtypes for pool, copyset, chunk, chunk-server, correlation, op and peer ids;
//! - [`frame`]: baidu_std framing, decoded incrementally with checked lengths;
//! - [`conn`]: what the client asks of its driver ([`conn::Action`], [`conn::Transmit`]) and
//!   per-connection call tables;
//! - [`auth`], [`config`], [`backoff`], [`error`]: owner signatures, settings, retry delays,
//!   the errors operations end with;
//! - [`layout`]: the immutable, `Arc`-shared layout snapshot and the I/O splitter;
//! - [`mds`]: one volume's MDS session (lease, layout fetches, volume management);
//! - [`chunk_io`]: one shard's chunk I/O engine (leaders, retries, deadlines);
//! - [`client`]: the two wired together for single-threaded drivers;
//! - [`blocking`]: a std-socket driver (the `curve-vol` tool and tests).
//!
//! How a shard host drives it (the glue the shard engine will add):
//! - per volume, one [`mds::Mds`] off the shards (control thread or a thread per volume),
//!   driven like any sans-IO object: `poll_action`/`poll_transmit`/`poll_timeout` out,
//!   `on_connected`/`on_recv`/`on_closed`/`on_timeout` in;
//! - per shard and volume, one [`chunk_io::ChunkIo`] with the shard's buffer types (`R`:
//!   where read data lands, `W`: cheaply cloned write data), its own chunk-server
//!   connections and its own in-flight table, driven from the shard's ring the same way;
//!   `Action::Connect` becomes an io_uring connect, `Transmit` a writev of `head` plus the
//!   attachment range, each completed recv one `on_recv`;
//! - shard → MDS thread: `ChunkIo::poll_need` (a segment, copysets, a fresh sequence
//!   number) → `Mds::need`; MDS thread → every shard: `Mds::take_layout` (one `Arc<Layout>`)
//!   → `ChunkIo::set_layout`, and `Mds::poll_need_failure` → `ChunkIo::layout_failed`;
//! - `ChunkIo::poll_completion` ends the SCSI command; an [`error::IoError`] says what failed
//!   (deadline with the last cause, refusal, session ended) for the sense data; ABORT TASK
//!   and connection close call `ChunkIo::cancel`.
//!
//! [`client::Client::route`] is that message glue without the messages.

pub mod auth;
pub mod backoff;
pub mod blocking;
pub mod chunk_io;
pub mod client;
pub mod clone_source;
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
pub mod poll_driver;
pub mod proto;
pub mod range_lock;
pub mod rmw;
pub mod rmw_engine;
pub mod spec;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mds;
