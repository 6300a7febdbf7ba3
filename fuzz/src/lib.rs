//! Drivers behind curve-tgt's fuzz targets. Each `fuzz_targets/<name>.rs` is one line calling
//! `<module>::run(data)`, so the drivers build and test without libFuzzer (`cargo test` here
//! also checks every committed seed and regression input still runs clean).
//!
//! Structured targets (login, session) decode their input with [`input::Reader`], a small
//! hand-written "arbitrary"-style format whose inverse ([`input::Writer`]) lets the seed corpus
//! be written from real PDU sequences (see `corpus.rs`).

pub mod checks;
pub mod curve_frame;
pub mod input;
pub mod ipc;
pub mod login;
pub mod pdu_frame;
pub mod scsi_cdb;
pub mod session;
pub mod text_negotiate;
pub mod wire;

#[cfg(test)]
mod corpus;
