//! Zero-copy Data-In: what decides, per connection, whether a READ's payload leaves the target
//! by `SEND_ZC`/`SENDMSG_ZC` on the shard's ring or by `sendmsg(MSG_ZEROCOPY)` (notifications
//! read from the socket's error queue through the same ring), or by an ordinary copy.
//!
//! The decisions are sans-IO so they can be driven by synthetic events in unit tests:
//! [`policy`] holds a connection's mode, counters and fallback rules, [`errqueue`] parses the
//! kernel's `MSG_ZEROCOPY` notifications, [`inflight`] keeps sent batches (and the pooled
//! buffers they reference) until the kernel says it no longer reads them, and [`probe`] says
//! what this kernel supports. [`link`] is what a connection slot carries (those pieces, the
//! error-queue buffers, the close-drain state) and builds its ring entries; the few syscalls
//! outside the ring (`SO_ZEROCOPY`, the close path's non-blocking error-queue read and TCP
//! reset) are there too. The shard's side is `shard/zerocopy_glue.rs`.

pub mod errqueue;
pub mod fixed;
pub mod inflight;
pub mod link;
pub mod policy;
pub mod probe;
pub mod runs;

/// The kernel's documented break-even for `MSG_ZEROCOPY` (Documentation/networking/
/// msg_zerocopy.rst: "likely only effective at writes over around 10 KB").
pub const DEFAULT_THRESHOLD_BYTES: usize = 10 * 1024;

/// Which kernel interface carries zero-copy sends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// io_uring `IORING_OP_SENDMSG_ZC` (6.1+): the notification is a second CQE on the ring.
    Uring,
    /// `sendmsg(MSG_ZEROCOPY)` on an `SO_ZEROCOPY` socket (4.14+), submitted on the ring; the
    /// notifications are read with `recvmsg(MSG_ERRQUEUE)`, also on the ring.
    Msg,
}

impl Engine {
    /// The `--zerocopy-engine` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Msg => "msg",
        }
    }

    /// Parses `--zerocopy-engine`.
    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "uring" => Some(Engine::Uring),
            "msg" => Some(Engine::Msg),
            _ => None,
        }
    }
}

/// The process-wide zero-copy settings every shard starts connections with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ZcConfig {
    /// `--tcp_zerocopy 1`: try zero-copy at all.
    pub enabled: bool,
    pub engine: Engine,
    /// Payloads shorter than this are always copied.
    pub threshold_bytes: usize,
    /// `--zerocopy-payload-only 1`: only Data-In payloads go zero-copy, headers and digests by
    /// ordinary sends, one send per run ([`runs`]); else (default) a batch carrying a large
    /// payload is one zero-copy send, headers included.
    pub payload_only: bool,
    /// `--zerocopy-fixed-buffers 1` (default): with `payload_only` on the `uring` engine, send
    /// payloads from the pool's buffers registered with the ring (`IORING_RECVSEND_FIXED_BUF`),
    /// so a send does not pin its pages one by one. Falls back to unregistered sends when the
    /// kernel refuses the registration (see `shard/zerocopy/fixed.rs`).
    pub fixed_buffers: bool,
    /// Test-only (`CURVE_TGT_ZEROCOPY_FORCE=1`): keep zero-copy on a connection whose
    /// notifications say the kernel copied (loopback always does), so tests over 127.0.0.1
    /// exercise the zero-copy send path and buffer lifetimes. Never for production: it pays
    /// twice for every byte.
    pub keep_when_copied: bool,
}

impl Default for ZcConfig {
    fn default() -> Self {
        ZcConfig {
            enabled: true,
            engine: Engine::Uring,
            threshold_bytes: DEFAULT_THRESHOLD_BYTES,
            payload_only: false,
            fixed_buffers: true,
            keep_when_copied: false,
        }
    }
}

impl ZcConfig {
    /// Copy mode everywhere (`--tcp_zerocopy 0`).
    pub fn off() -> ZcConfig {
        ZcConfig {
            enabled: false,
            ..ZcConfig::default()
        }
    }

    /// Reads the test-only override from the environment.
    pub fn with_env(mut self) -> ZcConfig {
        self.keep_when_copied = std::env::var("CURVE_TGT_ZEROCOPY_FORCE").is_ok_and(|v| v == "1");
        self
    }
}
