//! tgtadm's backing-store types (`--bstype`): the one place that turns a type name, a path,
//! `--bsoflags` and `--bsopts` into a store. It sits above both `backing` (the store interface,
//! files, null) and `curve` (Curve volumes), so neither has to import the other to be opened
//! by name.

use crate::backing::{delay, file, null, BackingError, BackingStore, BsOFlags};
use std::sync::Arc;

/// Opens a store by tgt type name: `rdwr` and `aio` are files or block devices through
/// io_uring, `null` reads zeros and drops writes. `delay` (an in-memory store whose engine
/// completes out of order after a delay, for tests) exists only when tgtd runs with
/// `CURVE_TGT_TEST_ENGINES=1` (see [`crate::backing::delay`]).
pub fn open(
    bstype: &str,
    path: &str,
    oflags: BsOFlags,
) -> Result<Arc<dyn BackingStore>, BackingError> {
    match bstype {
        "null" => Ok(Arc::new(null::NullStore::new(path, oflags)?)),
        "rdwr" | "aio" => Ok(Arc::new(file::FileStore::open(bstype, path, oflags)?)),
        "delay" if delay::enabled() => Ok(Arc::new(delay::DelayStore::open(path, oflags)?)),
        "curve" => open_with_opts(bstype, path, oflags, ""),
        other => Err(BackingError::UnknownType(other.to_string())),
    }
}

/// [`open`] with tgtadm's `--bsopts` (only `curve` takes any: `mds=ip:port[,...]`,
/// `conf=/path`).
pub fn open_with_opts(
    bstype: &str,
    path: &str,
    oflags: BsOFlags,
    bsopts: &str,
) -> Result<Arc<dyn BackingStore>, BackingError> {
    match bstype {
        "curve" => Ok(Arc::new(crate::curve::engine_store::CurveStore::open(
            path, oflags, bsopts,
        )?)),
        other => open(other, path, oflags),
    }
}

/// Backing-store types this build supports, in the order `tgtadm --mode sys --op show` lists
/// them, with the flags each accepts.
pub const SUPPORTED_TYPES: &[(&str, bool)] = &[
    ("curve", true),
    ("null", false),
    ("rdwr", true),
    ("aio", true),
];
