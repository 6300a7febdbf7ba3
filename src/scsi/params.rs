//! tgtadm `--params` for a logical unit (tgt `usr/spc.c::lu_config`, curve-tgt.md §3.3):
//! parsed and validated completely into a list of changes, then applied, so a bad item leaves
//! the LU untouched.

use super::lu::{LogicalUnit, LuParamError, LuUpdate};

/// Field widths tgt keeps (`usr/tgtd.h`); longer values are truncated as tgt's strncpy does.
const SCSI_ID_LEN: usize = 36;
const SCSI_SN_LEN: usize = 36;
const VENDOR_ID_LEN: usize = 8;
const PRODUCT_ID_LEN: usize = 16;
const PRODUCT_REV_LEN: usize = 4;

/// One validated change.
#[derive(Debug)]
enum Change {
    ScsiId(String),
    ScsiSn(String),
    VendorId(String),
    ProductId(String),
    ProductRev(String),
    SenseDescriptor(bool),
    Lbppbe(u8),
    LaLba(u16),
    OptXferGran(u16),
    OptXferLen(u32),
    Removable(bool),
    Readonly(bool),
    Online(bool),
    Thin(bool),
    RotationRate(u16),
    ModePage {
        page: u8,
        subpage: u8,
        data: Vec<u8>,
    },
    DiskSizeAuto,
}

fn invalid(item: &str) -> LuParamError {
    LuParamError::InvalidRequest(item.to_string())
}

/// Parses an integer as C's `strtoul(s, NULL, 0)` accepts it: decimal, `0x` hex or `0` octal.
fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

fn num<T: TryFrom<u64>>(v: &str, item: &str) -> Result<T, LuParamError> {
    parse_num(v)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(item))
}

fn flag(v: &str, item: &str) -> Result<bool, LuParamError> {
    match parse_num(v) {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(invalid(item)),
    }
}

fn text(v: &str, max: usize) -> String {
    v.chars().take(max).collect()
}

/// `pcode:subpcode:len:b0:b1:...` (tgt `add_mode_page`). Missing bytes are zero.
fn mode_page(v: &str, item: &str) -> Result<Change, LuParamError> {
    let nums: Vec<u64> = v
        .split(':')
        .map(|p| parse_num(p).ok_or_else(|| invalid(item)))
        .collect::<Result<_, _>>()?;
    if nums.len() < 3 {
        return Err(invalid(item));
    }
    let page = u8::try_from(nums[0])
        .ok()
        .filter(|p| *p < 0x3f)
        .ok_or_else(|| invalid(item))?;
    let subpage = u8::try_from(nums[1]).map_err(|_| invalid(item))?;
    let len = usize::try_from(nums[2])
        .ok()
        .filter(|l| *l <= if subpage == 0 { 0xff } else { 0x200 })
        .ok_or_else(|| invalid(item))?;
    let bytes = &nums[3..];
    if bytes.len() > len {
        return Err(invalid(item));
    }
    let mut data = vec![0u8; len];
    for (d, b) in data.iter_mut().zip(bytes) {
        *d = u8::try_from(*b).map_err(|_| invalid(item))?;
    }
    Ok(Change::ModePage {
        page,
        subpage,
        data,
    })
}

fn parse_item(item: &str) -> Result<Change, LuParamError> {
    let (key, v) = item.split_once('=').ok_or_else(|| invalid(item))?;
    Ok(match key.trim() {
        "scsi_id" => Change::ScsiId(text(v, SCSI_ID_LEN)),
        "scsi_sn" => Change::ScsiSn(text(v, SCSI_SN_LEN)),
        "vendor_id" => Change::VendorId(text(v, VENDOR_ID_LEN)),
        "product_id" => Change::ProductId(text(v, PRODUCT_ID_LEN)),
        "product_rev" => Change::ProductRev(text(v, PRODUCT_REV_LEN)),
        "sense_format" => Change::SenseDescriptor(flag(v, item)?),
        "lbppbe" => Change::Lbppbe(num::<u8>(v, item).and_then(|n| {
            if n <= 15 {
                Ok(n)
            } else {
                Err(invalid(item))
            }
        })?),
        "la_lba" => Change::LaLba(num::<u16>(v, item).and_then(|n| {
            if n <= 0x3fff {
                Ok(n)
            } else {
                Err(invalid(item))
            }
        })?),
        "optimal_xfer_gran" => Change::OptXferGran(num(v, item)?),
        "optimal_xfer_len" => Change::OptXferLen(num(v, item)?),
        "removable" => Change::Removable(flag(v, item)?),
        "readonly" => Change::Readonly(flag(v, item)?),
        "online" => Change::Online(flag(v, item)?),
        "thin_provisioning" => Change::Thin(flag(v, item)?),
        "rotation_rate" => Change::RotationRate(num(v, item)?),
        "mode_page" => mode_page(v, item)?,
        "path" => return Err(LuParamError::Unsupported),
        "disksize" => {
            if v.trim().eq_ignore_ascii_case("auto") {
                Change::DiskSizeAuto
            } else {
                return Err(LuParamError::UnknownParam(item.to_string()));
            }
        }
        _ => return Err(invalid(item)),
    })
}

/// Parses and applies `params` to `lu`.
pub(crate) fn apply(lu: &LogicalUnit, params: &str) -> Result<LuUpdate, LuParamError> {
    let params = params.strip_prefix("targetOps ").unwrap_or(params);
    let changes: Vec<Change> = params
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(parse_item)
        .collect::<Result<_, _>>()?;

    let mut st = lu.lock();
    // Checks that depend on state, before anything changes.
    let mut new_size = None;
    for c in &changes {
        match c {
            Change::Online(false) if !st.prevent.is_empty() => {
                return Err(LuParamError::PreventRemoval)
            }
            Change::Online(true) if lu.backing().is_none() => {
                return Err(LuParamError::Unsupported)
            }
            Change::ModePage { page, subpage, .. } if !st.mode.settable(*page, *subpage) => {
                return Err(LuParamError::InvalidRequest(format!(
                    "mode_page={page}:{subpage}"
                )))
            }
            Change::DiskSizeAuto => {
                let b = lu.backing().ok_or(LuParamError::Unsupported)?;
                new_size = Some(b.size_bytes().map_err(LuParamError::Backing)?);
            }
            _ => {}
        }
    }
    let mut update = LuUpdate::default();
    for c in changes {
        match c {
            Change::ScsiId(s) => st.scsi_id = s,
            Change::ScsiSn(s) => st.scsi_sn = s,
            Change::VendorId(s) => st.vendor_id = s,
            Change::ProductId(s) => st.product_id = s,
            Change::ProductRev(s) => st.product_rev = s,
            Change::SenseDescriptor(d) => lu.set_sense_descriptor(d),
            Change::Lbppbe(n) => st.lbppbe = Some(n),
            Change::LaLba(n) => st.la_lba = n,
            Change::OptXferGran(n) => st.opt_xfer_gran = n,
            Change::OptXferLen(n) => st.opt_xfer_len = n,
            Change::Removable(v) => lu.set_removable(v),
            Change::Readonly(v) => lu.set_readonly(v),
            Change::Online(v) => lu.set_online(v),
            Change::Thin(v) => lu.set_thin(v),
            Change::RotationRate(n) => st.rotation_rate = n,
            Change::ModePage {
                page,
                subpage,
                data,
            } => {
                st.mode.set(page, subpage, data);
                if page == 0x0a && subpage == 0 {
                    lu.set_swp(st.mode.swp());
                }
            }
            Change::DiskSizeAuto => {
                if let Some(size) = new_size.take() {
                    if size != lu.size_bytes() {
                        lu.set_size_bytes(size);
                        update.capacity_changed = true;
                    }
                }
            }
        }
    }
    Ok(update)
}
