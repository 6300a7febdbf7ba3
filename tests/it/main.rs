//! All integration tests in one test crate, so `cargo test` compiles and links one binary
//! instead of one per file (on 2 cores that was most of `scripts/test.sh`'s time).
//!
//! One module per topic; run one with `cargo test --test it <module>::` (e.g.
//! `cargo test --test it admin_live::`). To add a topic: write `tests/it/<topic>.rs`, reach
//! the shared harnesses as `use crate::common;` / `use crate::admin;` (not `mod common;`),
//! and add `mod <topic>;` below, in alphabetical order.

// Shared harnesses.
mod admin;
mod common;

// Topics.
mod admin_interop;
mod admin_live;
mod admin_resize;
mod admin_tgt_admin;
mod budgets;
mod churn;
mod curve_clone;
mod curve_cluster;
mod curve_drill;
mod curve_faults;
mod curve_lu;
mod curve_rmw;
mod delay_engine;
mod durability;
mod e2e_libiscsi;
mod hostile;
mod hostile_dead_shard;
mod hostile_session;
mod hostile_soak;
mod lba_status_direct;
mod logging;
mod login_deadline;
mod memory_file;
mod mgmt_server;
mod nop_ping;
mod op_stat;
mod package;
mod qd512;
mod redirect_callback;
mod split_pdus;
mod tgt_admin_corpus;
mod zerocopy;
