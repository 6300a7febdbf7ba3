//! Logging for operators: where tgtd's lines go, how much it says, and the lines themselves.
//!
//! - Destination ([`init`]): in the foreground (`-f`), stderr, coloured only when stderr is a
//!   terminal; as a daemon (and with `-D`, as tgt), the system logger ([`syslog`]), facility
//!   `daemon`, since a daemon's stderr is /dev/null.
//! - Level: informational lines always; debugging lines with `-d 1` or, at run time,
//!   `tgtadm --op update --mode sys --name debug --value on` ([`set_debug`]), as in tgt.
//!   `RUST_LOG` (an `EnvFilter`) overrides both for developers.
//! - Lines ([`event`]): one function per operator event, so call sites stay one line.
//! - Defences: [`Untrusted`] escapes every string a peer (or an admin) chose;
//!   [`ratelimit`] bounds what a peer can make us write before it logs in.

pub mod escape;
pub mod event;
pub mod ratelimit;
pub mod syslog;

pub use escape::Untrusted;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// Debugging lines on (tgt's `-d 1`, `--name debug --value on`).
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// stderr (foreground).
    Stderr,
    /// The syslog socket at this path (`/dev/log` unless `TGT_SYSLOG_SOCKET` says otherwise).
    Syslog(PathBuf),
}

impl Destination {
    /// tgt's rule: `-f` logs to stderr; otherwise (daemon, or `-D`) to syslog.
    pub fn for_tgtd(foreground: bool) -> Destination {
        if foreground {
            Destination::Stderr
        } else {
            Destination::Syslog(syslog::socket_path_from_env())
        }
    }
}

/// Turns debugging lines on or off at run time.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debugging lines are on.
pub fn debug() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Installs the process's logger; call once, before starting threads. `ident` is the
/// program name in syslog lines.
pub fn init(dest: Destination, ident: &str, debug_on: bool) {
    set_debug(debug_on);
    let env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok());
    let level = filter_fn(|m| *m.level() <= tracing::Level::INFO || debug())
        .with_max_level_hint(LevelFilter::DEBUG);
    let registry = tracing_subscriber::registry();
    let result = match dest {
        Destination::Stderr => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false);
            match env {
                Some(f) => registry.with(layer.with_filter(f)).try_init(),
                None => registry.with(layer.with_filter(level)).try_init(),
            }
        }
        Destination::Syslog(path) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(syslog::Syslog::new(&path, ident))
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_level(false);
            match env {
                Some(f) => registry.with(layer.with_filter(f)).try_init(),
                None => registry.with(layer.with_filter(level)).try_init(),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("{ident}: can't install the logger: {e}");
        return;
    }
    // Report a flood's suppressed-line count when its window ends, even if the flood
    // stopped and no further line comes to carry it.
    let _ = std::thread::Builder::new()
        .name(format!("{ident}/log"))
        .spawn(|| loop {
            std::thread::sleep(ratelimit::DEFAULT_WINDOW);
            event::flush_suppressed();
        });
}
