//! A logical unit: its identity, attributes and the state every nexus shares (reservations,
//! prevent-removal, mode pages).
//!
//! Shared by all shards as `Arc<LogicalUnit>`. What READ and WRITE consult on every command
//! (online, readonly, size, block size, "is any reservation held") are atomics, read without a
//! lock; the rest (strings, mode pages, persistent reservations) sits behind a mutex that only
//! rare commands (INQUIRY, MODE SELECT, PERSISTENT RESERVE…) and tgtadm take.

use super::mode::ModePages;
use super::pr::PrState;
use super::types::{DeviceType, Lun};
use super::NexusId;
use crate::backing::BackingStore;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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

/// The cold part of an LU: identity strings, tunables, mode pages and reservation state. Only
/// taken by non-I/O commands, by I/O commands while a reservation is held, and by tgtadm.
#[derive(Debug)]
pub(crate) struct LuState {
    pub scsi_id: String,
    pub scsi_sn: String,
    pub vendor_id: String,
    pub product_id: String,
    pub product_rev: String,
    /// Logical blocks per physical block exponent set by tgtadm; `None` derives it.
    pub lbppbe: Option<u8>,
    pub la_lba: u16,
    pub opt_xfer_gran: u16,
    pub opt_xfer_len: u32,
    pub rotation_rate: u16,
    pub mode: ModePages,
    /// Nexuses holding a PREVENT ALLOW MEDIUM REMOVAL lock (SPC-4 §6.13: per I_T nexus).
    pub prevent: Vec<NexusId>,
    /// SPC-2 RESERVE(6) holder.
    pub spc2: Option<NexusId>,
    /// Persistent reservations (SPC-4 §5.7).
    pub pr: PrState,
}

/// A logical unit shared by every shard.
#[derive(Debug)]
pub struct LogicalUnit {
    tid: u32,
    lun: Lun,
    dev_type: DeviceType,
    backing: Option<Arc<dyn BackingStore>>,
    online: AtomicBool,
    readonly: AtomicBool,
    swp: AtomicBool,
    removable: AtomicBool,
    thin: AtomicBool,
    sense_descriptor: AtomicBool,
    /// True while an SPC-2 or persistent reservation exists, so READ/WRITE take the lock only
    /// then.
    reservation_held: AtomicBool,
    size_bytes: AtomicU64,
    blk_shift: AtomicU32,
    state: Mutex<LuState>,
}

/// Largest block size tgt accepts (1 MiB).
const MAX_BLOCK_SIZE: u32 = 1 << 20;

impl LogicalUnit {
    /// Creates an LU, reading the backing store's size.
    pub fn new(init: LuInit) -> io::Result<LogicalUnit> {
        let is_disk = init.dev_type == DeviceType::Disk;
        let bs = if !is_disk {
            1
        } else if init.block_size.is_power_of_two()
            && (512..=MAX_BLOCK_SIZE).contains(&init.block_size)
        {
            init.block_size
        } else {
            // tgt ignores an invalid block size (with a log line) and uses the default.
            tracing::warn!(
                block_size = init.block_size,
                "invalid block size, using 512"
            );
            512
        };
        let size = match &init.backing {
            Some(b) if is_disk => b.size_bytes()?,
            _ => 0,
        };
        // tgt: an LU without a backing store is a removable drive with no medium in it.
        let no_medium = is_disk && init.backing.is_none();
        let mode = if is_disk {
            ModePages::disk()
        } else {
            ModePages::default()
        };
        let state = LuState {
            scsi_id: format!("IET     {:04x}{:04x}", init.tid, init.lun.0),
            scsi_sn: format!("beaf{}{}", init.tid, init.lun.0),
            vendor_id: "IET".to_string(),
            product_id: if is_disk {
                "VIRTUAL-DISK"
            } else {
                "Controller"
            }
            .to_string(),
            product_rev: "0001".to_string(),
            lbppbe: None,
            la_lba: 0,
            opt_xfer_gran: 0,
            opt_xfer_len: 0,
            rotation_rate: 0,
            mode,
            prevent: Vec::new(),
            spc2: None,
            pr: PrState::default(),
        };
        Ok(LogicalUnit {
            tid: init.tid,
            lun: init.lun,
            dev_type: init.dev_type,
            backing: init.backing,
            online: AtomicBool::new(!no_medium),
            readonly: AtomicBool::new(false),
            swp: AtomicBool::new(false),
            removable: AtomicBool::new(no_medium),
            thin: AtomicBool::new(false),
            sense_descriptor: AtomicBool::new(false),
            reservation_held: AtomicBool::new(false),
            size_bytes: AtomicU64::new(size),
            blk_shift: AtomicU32::new(bs.trailing_zeros()),
            state: Mutex::new(state),
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

    /// The target id.
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Disk or controller.
    pub fn dev_type(&self) -> DeviceType {
        self.dev_type
    }

    /// The backing store, if any.
    pub fn backing(&self) -> Option<&Arc<dyn BackingStore>> {
        self.backing.as_ref()
    }

    /// Whether the medium is present and the LU accepts media-access commands.
    pub fn online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// tgtadm `readonly=1`.
    pub fn readonly(&self) -> bool {
        self.readonly.load(Ordering::Acquire)
    }

    /// Software write protect (control mode page SWP bit).
    pub fn swp(&self) -> bool {
        self.swp.load(Ordering::Acquire)
    }

    /// True when writes must fail with DATA PROTECT (readonly or SWP).
    pub fn write_protected(&self) -> bool {
        self.readonly() || self.swp()
    }

    /// Removable medium (INQUIRY RMB).
    pub fn removable(&self) -> bool {
        self.removable.load(Ordering::Acquire)
    }

    /// tgtadm `thin_provisioning=1`.
    pub fn thin(&self) -> bool {
        self.thin.load(Ordering::Acquire)
    }

    /// Logical block provisioning is advertised and enforced: thin provisioning is on AND the
    /// backing store really deallocates (SBC-3 §4.7.3.1, LBPME).
    pub fn lbp_enabled(&self) -> bool {
        self.thin() && self.backing.as_ref().is_some_and(|b| b.caps().unmap)
    }

    /// Deallocated blocks read as zeros (LBPRZ).
    pub fn lbprz(&self) -> bool {
        self.lbp_enabled()
            && self
                .backing
                .as_ref()
                .is_some_and(|b| b.caps().unmap_reads_zero)
    }

    /// Descriptor-format sense (tgtadm `sense_format=1`).
    pub fn sense_descriptor(&self) -> bool {
        self.sense_descriptor.load(Ordering::Acquire)
    }

    /// Whether any SPC-2 or persistent reservation exists (READ/WRITE take the lock only then).
    pub fn reservation_held(&self) -> bool {
        self.reservation_held.load(Ordering::Acquire)
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    /// log2 of the logical block size.
    pub fn blk_shift(&self) -> u32 {
        self.blk_shift.load(Ordering::Acquire)
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.blk_shift()
    }

    /// Number of logical blocks.
    pub fn nr_blocks(&self) -> u64 {
        self.size_bytes() >> self.blk_shift()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LuState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than refusing service would, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_online(&self, v: bool) {
        self.online.store(v, Ordering::Release);
    }
    pub(crate) fn set_readonly(&self, v: bool) {
        self.readonly.store(v, Ordering::Release);
    }
    pub(crate) fn set_swp(&self, v: bool) {
        self.swp.store(v, Ordering::Release);
    }
    pub(crate) fn set_removable(&self, v: bool) {
        self.removable.store(v, Ordering::Release);
    }
    pub(crate) fn set_thin(&self, v: bool) {
        self.thin.store(v, Ordering::Release);
    }
    pub(crate) fn set_sense_descriptor(&self, v: bool) {
        self.sense_descriptor.store(v, Ordering::Release);
    }
    pub(crate) fn set_size_bytes(&self, v: u64) {
        self.size_bytes.store(v, Ordering::Release);
    }

    /// Recomputes the lock-free "reservation held" flag; call with the state lock held after
    /// any reservation change.
    pub(crate) fn sync_reservation_flag(&self, st: &LuState) {
        let held = st.spc2.is_some() || st.pr.reservation.is_some();
        self.reservation_held.store(held, Ordering::Release);
    }

    /// An I_T nexus ended (logout, connection loss without reinstatement): drop its SPC-2
    /// reservation and prevent-removal lock (SPC-2 §5.5.1; SPC-4 §6.13). Persistent
    /// reservations survive.
    pub fn nexus_lost(&self, id: &NexusId) {
        let mut st = self.lock();
        if st.spc2.as_ref() == Some(id) {
            st.spc2 = None;
        }
        st.prevent.retain(|n| n != id);
        self.sync_reservation_flag(&st);
    }

    /// LOGICAL UNIT RESET or target reset (SAM-5 §6.6): SPC-2 reservations and prevent locks
    /// are cleared; persistent reservations survive. The caller queues the LunReset UA.
    pub fn reset(&self) {
        let mut st = self.lock();
        st.spc2 = None;
        st.prevent.clear();
        self.sync_reservation_flag(&st);
    }

    /// Applies tgtadm `--params k=v,...` (curve-tgt.md §3.3), all or nothing.
    pub fn apply_params(&self, params: &str) -> Result<LuUpdate, LuParamError> {
        super::params::apply(self, params)
    }

    /// The fields tgtadm's show prints.
    pub fn show(&self) -> LuShow {
        let st = self.lock();
        let (bstype, path, bsflags) = match &self.backing {
            Some(b) if self.dev_type == DeviceType::Disk => (
                b.bstype().to_string(),
                b.path().to_string(),
                b.oflags().show().to_string(),
            ),
            _ => ("null".to_string(), "None".to_string(), String::new()),
        };
        LuShow {
            lun: self.lun,
            type_name: match self.dev_type {
                DeviceType::Disk => "disk",
                DeviceType::Controller => "controller",
            },
            scsi_id: st.scsi_id.clone(),
            scsi_sn: st.scsi_sn.clone(),
            size_bytes: self.size_bytes(),
            block_size: self.block_size(),
            online: self.online(),
            removable: self.removable(),
            prevent_removal: !st.prevent.is_empty(),
            readonly: self.readonly(),
            swp: self.swp(),
            thin_provisioning: self.thin(),
            bstype,
            path,
            bsflags,
        }
    }
}
