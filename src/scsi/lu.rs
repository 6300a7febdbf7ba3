//! A logical unit: its identity, attributes and the state every nexus shares (reservations,
//! prevent-removal, mode pages).
//!
//! Shared by all shards as `Arc<LogicalUnit>`. What READ and WRITE consult on every command
//! (online, readonly, size, block size, "is any reservation held") are atomics, read without a
//! lock; the rest (strings, mode pages, persistent reservations) sits behind a mutex that only
//! rare commands (INQUIRY, MODE SELECT, PERSISTENT RESERVE…) and tgtadm take.

use super::types::{DeviceType, Lun};
use crate::backing::BackingStore;
use std::io;
use std::sync::Arc;

/// What tgtadm needs to create a logical unit.
#[derive(Debug)]
pub struct LuInit {
    /// Target id (for the default SCSI ID/SN and the NAA identifier).
    pub tid: u32,
    /// The LUN.
    pub lun: Lun,
    /// Disk or controller.
    pub dev_type: DeviceType,
    /// The backing store; `None` creates an offline, removable LU without medium (tgt's rule
    /// for an LU created without a path) — and the LUN 0 controller.
    pub backing: Option<Arc<dyn BackingStore>>,
    /// Logical block size in bytes (tgtadm `-y`, default 512; power of two 512..=4096... tgt
    /// accepts 512..=1 MiB powers of two).
    pub block_size: u32,
}

/// Why an LU `--params` update was refused; mgmt maps these to tgtadm error codes.
#[derive(Debug, thiserror::Error)]
pub enum LuParamError {
    /// Unknown key, or a value that does not parse (tgt: INVALID_REQUEST).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// `disksize=` with a value other than `auto` (tgt: UNKNOWN_PARAM).
    #[error("unknown parameter: {0}")]
    UnknownParam(String),
    /// Going offline while a PREVENT ALLOW MEDIUM REMOVAL lock is held (tgt: PREVENT_REMOVAL).
    #[error("prevent removal is set")]
    PreventRemoval,
    /// The backing store cannot do it (tgt: UNSUPPORTED_OPERATION).
    #[error("unsupported operation")]
    Unsupported,
    /// Reading the backing store failed (tgt: UNKNOWN_ERR).
    #[error("backing store: {0}")]
    Backing(io::Error),
}

/// What changed in an LU update that nexuses must be told about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LuUpdate {
    /// The capacity changed: raise CAPACITY DATA HAS CHANGED on every nexus.
    pub capacity_changed: bool,
}

/// Every field `tgtadm --op show --mode target` prints for an LU (curve-tgt.md §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuShow {
    pub lun: Lun,
    /// "disk" or "controller".
    pub type_name: &'static str,
    pub scsi_id: String,
    pub scsi_sn: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub online: bool,
    pub removable: bool,
    pub prevent_removal: bool,
    pub readonly: bool,
    pub swp: bool,
    pub thin_provisioning: bool,
    /// "null", "rdwr", "aio".
    pub bstype: String,
    /// The path, or "None".
    pub path: String,
    /// "", "sync", "direct", "sync:direct".
    pub bsflags: String,
}

/// A logical unit shared by every shard.
#[derive(Debug)]
pub struct LogicalUnit {
    lun: Lun,
    _init: LuInit,
}

impl LogicalUnit {
    /// Creates an LU, reading the backing store's size.
    pub fn new(init: LuInit) -> io::Result<LogicalUnit> {
        Ok(LogicalUnit {
            lun: init.lun,
            _init: init,
        })
    }

    /// tgt's automatic LUN 0 of every target: type controller, no backing store.
    pub fn controller(tid: u32) -> LogicalUnit {
        LogicalUnit::new(LuInit {
            tid,
            lun: Lun(0),
            dev_type: DeviceType::Controller,
            backing: None,
            block_size: 1,
        })
        .expect("controller LU has no backing store to fail")
    }

    /// The LUN.
    pub fn lun(&self) -> Lun {
        self.lun
    }

    /// The backing store, if any.
    pub fn backing(&self) -> Option<&Arc<dyn BackingStore>> {
        self._init.backing.as_ref()
    }

    /// Applies tgtadm `--params k=v,...` (curve-tgt.md §3.3), all or nothing.
    pub fn apply_params(&self, params: &str) -> Result<LuUpdate, LuParamError> {
        let _ = params;
        todo!("LogicalUnit::apply_params")
    }

    /// The fields tgtadm's show prints.
    pub fn show(&self) -> LuShow {
        todo!("LogicalUnit::show")
    }
}
