//! The Curve backing store's description: what `--bstype curve --backing-store
//! cbd:pool//NAME_USER_` names, and where its MDS is (curve-tgt.md §2.2, §7.6).
//!
//! Parsed as curve-tgt and libcurve do: everything from the second slash of the first `//` is
//! the libcurve file name (the pool is ignored); its last `_` ends the owner and the `_` before
//! that starts it, so `cbd:pool//iscsi_test_` is volume `/iscsi` of owner `test`. Unlike
//! curve-tgt, bad strings are refused here with a reason (curve-tgt copies into a fixed buffer
//! with overlapping memcpy and no length check). A qemu/nebd-style `:/path/client.conf` suffix
//! after the final `_` names the client configuration; any other trailing text is refused.
//! The shard-side engine that serves the LU comes with the shard host's engine interface.

use std::net::SocketAddr;

use crate::curve::config::{self, ClientConfig, ConfigError};

/// Longest libcurve file name accepted (Linux PATH_MAX, which curve-tgt's buffer assumes).
pub const MAX_NAME_BYTES: usize = 4095;

/// A parsed `cbd:` backing-store string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurveTarget {
    /// The pool text before `//` (ignored by Curve, kept for `show`).
    pub pool: String,
    /// The volume path, such as `/iscsi`.
    pub volume: String,
    /// The owner, such as `test`.
    pub owner: String,
    /// A client.conf named by a `:/path` suffix.
    pub conf_path: Option<String>,
}

/// Why a Curve backing-store string or its options were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CurvePathError {
    /// No `//` separates the pool from the volume name.
    #[error("curve backing store {0:?} has no \"//\" (expected cbd:pool//VOLUME_OWNER_)")]
    NoDoubleSlash(String),
    /// The name has fewer than two `_` (libcurve's owner delimiters).
    #[error("curve volume name {0:?} lacks the _OWNER_ suffix (expected cbd:pool//VOLUME_OWNER_)")]
    NoOwner(String),
    /// The owner between the last two `_` is empty.
    #[error("curve volume name {0:?} has an empty owner")]
    EmptyOwner(String),
    /// The volume path is empty or just `/`.
    #[error("curve volume name {0:?} has an empty volume path")]
    EmptyVolume(String),
    /// Text after the final `_` that is not a `:/conf/path`.
    #[error("curve volume name {name:?} has trailing text {rest:?} after the owner's final \"_\"")]
    Trailing {
        /// The name.
        name: String,
        /// What follows.
        rest: String,
    },
    /// Longer than PATH_MAX.
    #[error("curve volume name is {0} bytes, over the {MAX_NAME_BYTES}-byte limit")]
    TooLong(usize),
    /// A NUL or control character.
    #[error("curve volume name {0:?} contains a control character")]
    BadChar(String),
    /// An unknown or malformed `--bsopts` item.
    #[error("bad curve bsopts item {0:?} (known: mds=ip:port[,ip:port...], conf=/path)")]
    BadOpt(String),
    /// MDS addresses did not parse or were absent.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The client configuration could not be read.
    #[error("cannot read {path}: {why}")]
    ReadConf {
        /// The file.
        path: String,
        /// The error.
        why: String,
    },
}

impl CurveTarget {
    /// Parses `cbd:pool//VOLUME_OWNER_[:/conf/path]`.
    pub fn parse(s: &str) -> Result<CurveTarget, CurvePathError> {
        if s.len() > MAX_NAME_BYTES {
            return Err(CurvePathError::TooLong(s.len()));
        }
        if s.chars().any(char::is_control) {
            return Err(CurvePathError::BadChar(s.to_string()));
        }
        let at = s
            .find("//")
            .ok_or_else(|| CurvePathError::NoDoubleSlash(s.to_string()))?;
        let pool = s[..at].strip_prefix("cbd:").unwrap_or(&s[..at]).to_string();
        // From the second slash on, as curve-tgt's tgt_curvedev_get_path keeps it.
        let name = &s[at + 1..];
        let (name, conf_path) = split_conf_suffix(name)?;
        let user_end = name
            .rfind('_')
            .ok_or_else(|| CurvePathError::NoOwner(name.to_string()))?;
        let user_begin = name[..user_end]
            .rfind('_')
            .ok_or_else(|| CurvePathError::NoOwner(name.to_string()))?;
        let volume = &name[..user_begin];
        let owner = &name[user_begin + 1..user_end];
        if owner.is_empty() {
            return Err(CurvePathError::EmptyOwner(name.to_string()));
        }
        if volume.len() <= 1 {
            return Err(CurvePathError::EmptyVolume(name.to_string()));
        }
        Ok(CurveTarget {
            pool,
            volume: volume.to_string(),
            owner: owner.to_string(),
            conf_path,
        })
    }
}

/// Splits off a `:/path` configuration suffix that follows the final `_`.
fn split_conf_suffix(name: &str) -> Result<(&str, Option<String>), CurvePathError> {
    let Some(last) = name.rfind('_') else {
        return Ok((name, None));
    };
    let rest = &name[last + 1..];
    if rest.is_empty() {
        return Ok((name, None));
    }
    match rest.strip_prefix(':') {
        Some(path) if path.starts_with('/') && !path.contains('_') => {
            Ok((&name[..=last], Some(path.to_string())))
        }
        _ => Err(CurvePathError::Trailing {
            name: name.to_string(),
            rest: rest.to_string(),
        }),
    }
}

/// `--bsopts` for a curve LU: `mds=ip:port[,ip:port...]` and/or `conf=/path`, `;`-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurveBsOpts {
    /// MDS addresses given directly.
    pub mds: Option<Vec<SocketAddr>>,
    /// The client.conf to read MDS addresses from.
    pub conf: Option<String>,
}

impl CurveBsOpts {
    /// Parses the bsopts string (empty is fine).
    pub fn parse(s: &str) -> Result<CurveBsOpts, CurvePathError> {
        let mut o = CurveBsOpts::default();
        for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("mds", v)) => o.mds = Some(config::parse_addr_list(v)?),
                Some(("conf", v)) if v.starts_with('/') => o.conf = Some(v.to_string()),
                _ => return Err(CurvePathError::BadOpt(item.to_string())),
            }
        }
        Ok(o)
    }
}

/// Everything needed to open a Curve LU: the target, and a client configuration whose MDS
/// addresses come from bsopts `mds=`, else from the client.conf named by bsopts `conf=`, the
/// path suffix, or `/etc/curve/client.conf`.
#[derive(Clone, Debug)]
pub struct CurveStoreSpec {
    /// The parsed backing-store string.
    pub target: CurveTarget,
    /// Client settings (MDS addresses filled in).
    pub client: ClientConfig,
}

impl CurveStoreSpec {
    /// Builds the spec; `read_conf` reads a file (injected so tests need no files).
    pub fn new(
        backing_store: &str,
        bsopts: &str,
        read_conf: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<CurveStoreSpec, CurvePathError> {
        let target = CurveTarget::parse(backing_store)?;
        let opts = CurveBsOpts::parse(bsopts)?;
        let mds_addrs = match opts.mds {
            Some(a) => a,
            None => {
                let path = opts
                    .conf
                    .or_else(|| target.conf_path.clone())
                    .unwrap_or_else(|| config::DEFAULT_CLIENT_CONF.to_string());
                let text = read_conf(&path).map_err(|e| CurvePathError::ReadConf {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                config::mds_addrs_from_client_conf(&text)?
            }
        };
        Ok(CurveStoreSpec {
            target,
            client: ClientConfig {
                mds_addrs,
                ..ClientConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> (String, String) {
        let t = CurveTarget::parse(s).unwrap();
        (t.volume, t.owner)
    }

    #[test]
    fn parses_as_curve_tgt_and_libcurve_do() {
        assert_eq!(t("cbd:pool//iscsi_test_"), ("/iscsi".into(), "test".into()));
        assert_eq!(t("cbd:pool//vol1_alice_"), ("/vol1".into(), "alice".into()));
        // curveadm's form: cbd:pool/${volume}_${user}_ with volume starting with '/'.
        assert_eq!(
            t("cbd:pool//cinder/volume-6f30_a_cinder_"),
            ("/cinder/volume-6f30_a".into(), "cinder".into())
        );
        // The pool is ignored, and so is a missing cbd: prefix (curve-tgt only looks for //).
        assert_eq!(t("other//v_u_"), ("/v".into(), "u".into()));
        let x = CurveTarget::parse("cbd:rbd//v_u_").unwrap();
        assert_eq!(x.pool, "rbd");
    }

    #[test]
    fn accepts_a_conf_suffix() {
        let x = CurveTarget::parse("cbd:pool//vol_user_:/etc/curve/client.conf").unwrap();
        assert_eq!((x.volume.as_str(), x.owner.as_str()), ("/vol", "user"));
        assert_eq!(x.conf_path.as_deref(), Some("/etc/curve/client.conf"));
    }

    #[test]
    fn refuses_bad_strings_with_a_reason() {
        use CurvePathError as E;
        assert!(matches!(
            CurveTarget::parse("cbd:pool/vol_user_"),
            Err(E::NoDoubleSlash(_))
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//vol"),
            Err(E::NoOwner(_))
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//vol_"),
            Err(E::NoOwner(_))
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//vol__"),
            Err(E::EmptyOwner(_))
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//_user_"),
            Err(E::EmptyVolume(_))
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//vol_user_junk"),
            Err(E::Trailing { .. })
        ));
        assert!(matches!(
            CurveTarget::parse("cbd:pool//vol\0_user_"),
            Err(E::BadChar(_))
        ));
        assert!(matches!(CurveTarget::parse(""), Err(E::NoDoubleSlash(_))));
        let long = format!("cbd:pool//{}_u_", "a".repeat(5000));
        assert!(matches!(CurveTarget::parse(&long), Err(E::TooLong(_))));
        let e = CurveTarget::parse("cbd:pool//vol").unwrap_err().to_string();
        assert!(e.contains("VOLUME_OWNER_"), "{e}");
    }

    #[test]
    fn mds_addresses_from_bsopts_or_client_conf() {
        let no_file = |p: &str| -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.to_string(),
            ))
        };
        let s = CurveStoreSpec::new(
            "cbd:pool//v_u_",
            "mds=127.0.0.1:6666,127.0.0.1:6667",
            no_file,
        )
        .unwrap();
        assert_eq!(s.client.mds_addrs.len(), 2);
        let conf = |p: &str| -> std::io::Result<String> {
            assert_eq!(p, "/etc/curve/client.conf");
            Ok("mds.listen.addr=10.0.0.1:6666\n".into())
        };
        let s = CurveStoreSpec::new("cbd:pool//v_u_", "", conf).unwrap();
        assert_eq!(s.client.mds_addrs, vec!["10.0.0.1:6666".parse().unwrap()]);
        let e = CurveStoreSpec::new("cbd:pool//v_u_", "", no_file).unwrap_err();
        assert!(matches!(e, CurvePathError::ReadConf { .. }), "{e}");
        let custom = |p: &str| -> std::io::Result<String> {
            assert_eq!(p, "/srv/c.conf");
            Ok("mds.listen.addr=10.0.0.2:6666".into())
        };
        CurveStoreSpec::new("cbd:pool//v_u_:/srv/c.conf", "", custom).unwrap();
        CurveStoreSpec::new("cbd:pool//v_u_", "conf=/srv/c.conf", custom).unwrap();
        assert!(matches!(
            CurveBsOpts::parse("speed=fast"),
            Err(CurvePathError::BadOpt(_))
        ));
        assert!(matches!(
            CurveBsOpts::parse("mds=nowhere"),
            Err(CurvePathError::Config(_))
        ));
    }
}
