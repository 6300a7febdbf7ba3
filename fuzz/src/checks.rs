//! Invariant checks that can be switched off while a known, separately tracked bug is open, so
//! the rest of a target keeps fuzzing. `CURVE_FUZZ_SKIP=window,burst` names the checks to skip;
//! scripts/fuzz.sh sets it only for bugs whose fix has not merged yet.

use std::sync::OnceLock;

/// Named invariant groups.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Issue 11 item 1: MaxCmdSN never moves backwards, and a command inside the advertised
    /// window is accepted, answered or rejected, never silently dropped.
    Window,
    /// Issue 11 item 8: FirstBurstLength is never answered larger than MaxBurstLength.
    Burst,
    /// Non-immediate PDUs are consumed in CmdSN order: once every CmdSN up to N was sent,
    /// ExpCmdSN passes N (RFC 7143 §3.2.2.1).
    Order,
    /// The session registry holds no entry for a login that never completed (issue 11 item
    /// 8: a TSIH leaked when a connection drops during a multi-piece final response).
    Registry,
    /// A non-immediate NOP-Out, Text or Task Management request whose CmdSN is ahead of a
    /// gap is held until the gap fills, like a command (RFC 7143 §3.2.2.1); the target now
    /// runs it at once and never consumes its CmdSN, so the session stalls at that CmdSN.
    OrderAhead,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Window => "window",
            Check::Burst => "burst",
            Check::Order => "order",
            Check::Registry => "registry",
            Check::OrderAhead => "order-ahead",
        }
    }
}

fn skipped() -> &'static [String] {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("CURVE_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Whether the check runs.
pub fn enabled(c: Check) -> bool {
    !skipped().iter().any(|s| s == c.name())
}
