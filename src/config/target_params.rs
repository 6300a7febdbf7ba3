//! Per-target defaults for the iSCSI operational keys (RFC 7143 §13), with tgt's defaults and
//! ranges (`usr/iscsi/param.c`), so `tgtadm --op show --mode target --tid N` prints what tgt
//! prints and `--op update -n KEY -v VALUE` is range-checked the same way.
//!
//! Login negotiation starts from these values; the negotiated result for one session lives in
//! `iscsi::negotiate`.

use std::fmt::Write as _;

/// How a key's value is written and checked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A decimal number within `min..=max`.
    Number { min: u32, max: u32 },
    /// `Yes`/`No`.
    Bool,
    /// `None`/`CRC32C` (HeaderDigest, DataDigest).
    Digest,
    /// Marker intervals: shown as `Reject`; tgt never uses markers.
    Marker,
}

/// One operational key known to the target, in the order tgt's show lists them.
#[derive(Copy, Clone, Debug)]
pub struct KeyDef {
    /// The key name as it appears on the wire and in tgtadm.
    pub name: &'static str,
    /// The value kind and range.
    pub kind: KeyKind,
    /// tgt's default (digests: 0 = None, 1 = CRC32C; bools: 1 = Yes).
    pub default: u32,
}

const fn num(name: &'static str, default: u32, min: u32, max: u32) -> KeyDef {
    KeyDef {
        name,
        kind: KeyKind::Number { min, max },
        default,
    }
}
const fn boolean(name: &'static str, default: bool) -> KeyDef {
    KeyDef {
        name,
        kind: KeyKind::Bool,
        default: default as u32,
    }
}

/// The keys tgt shows for a target, in its order (curve-tgt.md §3.5). `MaxQueueCmd` is local
/// (never sent): the session's command window.
pub const KEYS: &[KeyDef] = &[
    num("MaxRecvDataSegmentLength", 8192, 512, 16_777_215),
    KeyDef {
        name: "HeaderDigest",
        kind: KeyKind::Digest,
        default: 0,
    },
    KeyDef {
        name: "DataDigest",
        kind: KeyKind::Digest,
        default: 0,
    },
    boolean("InitialR2T", true),
    num("MaxOutstandingR2T", 1, 1, 65535),
    boolean("ImmediateData", true),
    num("FirstBurstLength", 65536, 512, 16_777_215),
    num("MaxBurstLength", 262_144, 512, 16_777_215),
    boolean("DataPDUInOrder", true),
    boolean("DataSequenceInOrder", true),
    num("ErrorRecoveryLevel", 0, 0, 2),
    boolean("IFMarker", false),
    boolean("OFMarker", false),
    num("DefaultTime2Wait", 2, 0, 3600),
    num("DefaultTime2Retain", 20, 0, 3600),
    KeyDef {
        name: "OFMarkInt",
        kind: KeyKind::Marker,
        default: 2048,
    },
    KeyDef {
        name: "IFMarkInt",
        kind: KeyKind::Marker,
        default: 2048,
    },
    num("MaxConnections", 1, 1, 65535),
    boolean("RDMAExtensions", true),
    num("TargetRecvDataSegmentLength", 262_144, 512, 16_777_215),
    num("InitiatorRecvDataSegmentLength", 262_144, 512, 16_777_215),
    num("MaxOutstandingUnexpectedPDUs", 0, 0, u32::MAX),
    num("MaxXmitDataSegmentLength", 8192, 512, 16_777_215),
    num("MaxQueueCmd", DEFAULT_MAX_QUEUE_CMD, 1, MAX_QUEUE_CMD_LIMIT),
];

/// Default command window per session. tgt's is 128; ours is 512 so queue_depth-512
/// initiators never wait on MaxCmdSN.
pub const DEFAULT_MAX_QUEUE_CMD: u32 = 512;
/// Upper bound an admin may set for MaxQueueCmd (each slot may hold a Data-Out buffer).
pub const MAX_QUEUE_CMD_LIMIT: u32 = 2048;

/// Why a target parameter update was refused (tgtadm maps both to its error codes).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The key is not a target parameter.
    #[error("unknown parameter {0}")]
    UnknownKey(String),
    /// The value does not parse or is out of the key's range.
    #[error("invalid value {value:?} for {key}")]
    BadValue { key: String, value: String },
}

/// A target's iSCSI key defaults plus its NOP-In settings, as tgtadm shows and updates them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetParams {
    /// Values indexed like [`KEYS`].
    values: Vec<u32>,
    /// Seconds between NOP-In pings; 0 = off.
    pub nop_interval: u32,
    /// Unanswered pings tolerated before the connection is closed.
    pub nop_count: u32,
}

impl Default for TargetParams {
    fn default() -> Self {
        TargetParams {
            values: KEYS.iter().map(|k| k.default).collect(),
            nop_interval: 0,
            nop_count: 0,
        }
    }
}

fn index_of(name: &str) -> Option<usize> {
    KEYS.iter().position(|k| k.name.eq_ignore_ascii_case(name))
}

impl TargetParams {
    /// The numeric value of a key (digests: 0 None, 1 CRC32C; bools: 0/1).
    pub fn get(&self, name: &str) -> Option<u32> {
        index_of(name).map(|i| self.values[i])
    }

    /// Sets a key from its text form, range-checked (tgtadm target update).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ParamError> {
        let bad = || ParamError::BadValue {
            key: name.to_string(),
            value: value.to_string(),
        };
        if name == "nop_interval" || name == "nop_count" {
            let v: u32 = value.parse().map_err(|_| bad())?;
            if name == "nop_interval" {
                self.nop_interval = v;
            } else {
                self.nop_count = v;
            }
            return Ok(());
        }
        let i = index_of(name).ok_or_else(|| ParamError::UnknownKey(name.to_string()))?;
        let v = match KEYS[i].kind {
            KeyKind::Number { min, max } => {
                let v: u32 = value.parse().map_err(|_| bad())?;
                if v < min || v > max {
                    return Err(bad());
                }
                v
            }
            KeyKind::Bool => match value {
                v if v.eq_ignore_ascii_case("yes") => 1,
                v if v.eq_ignore_ascii_case("no") => 0,
                _ => return Err(bad()),
            },
            KeyKind::Digest => match value {
                v if v.eq_ignore_ascii_case("none") => 0,
                v if v.eq_ignore_ascii_case("crc32c") => 1,
                // "CRC32C,None" and "None,CRC32C": the preference list form.
                v if v.to_ascii_lowercase().starts_with("crc32c,") => 1,
                v if v.to_ascii_lowercase().starts_with("none,") => 0,
                _ => return Err(bad()),
            },
            KeyKind::Marker => return Err(bad()),
        };
        self.values[i] = v;
        Ok(())
    }

    /// The command window per session (MaxCmdSN - ExpCmdSN + 1).
    pub fn max_queue_cmd(&self) -> u32 {
        self.get("MaxQueueCmd").unwrap_or(DEFAULT_MAX_QUEUE_CMD)
    }

    /// Text of `tgtadm --op show --mode target --tid N`, byte for byte as tgt prints it.
    pub fn show(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "nop_interval={}", self.nop_interval);
        let _ = writeln!(out, "nop_count={}", self.nop_count);
        for (k, v) in KEYS.iter().zip(&self.values) {
            let _ = match k.kind {
                KeyKind::Number { .. } => writeln!(out, "{}={}", k.name, v),
                KeyKind::Bool => writeln!(out, "{}={}", k.name, if *v != 0 { "Yes" } else { "No" }),
                KeyKind::Digest => writeln!(
                    out,
                    "{}={}",
                    k.name,
                    if *v != 0 { "CRC32C" } else { "None" }
                ),
                KeyKind::Marker => writeln!(out, "{}=Reject", k.name),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_matches_tgt_defaults_except_queue() {
        let p = TargetParams::default();
        let s = p.show();
        assert!(s.starts_with(
            "nop_interval=0\nnop_count=0\nMaxRecvDataSegmentLength=8192\nHeaderDigest=None\n"
        ));
        assert!(s.contains("\nOFMarkInt=Reject\nIFMarkInt=Reject\n"));
        assert!(s.ends_with("MaxXmitDataSegmentLength=8192\nMaxQueueCmd=512\n"));
    }

    #[test]
    fn set_is_range_checked() {
        let mut p = TargetParams::default();
        p.set("MaxRecvDataSegmentLength", "65536").unwrap();
        assert_eq!(p.get("MaxRecvDataSegmentLength"), Some(65536));
        assert!(p.set("MaxRecvDataSegmentLength", "100").is_err());
        assert!(p.set("InitialR2T", "maybe").is_err());
        assert!(matches!(
            p.set("Bogus", "1"),
            Err(ParamError::UnknownKey(_))
        ));
        p.set("HeaderDigest", "CRC32C").unwrap();
        assert_eq!(p.get("HeaderDigest"), Some(1));
    }
}
