//! INQUIRY (SPC-4 §6.6): standard data and the vital product data pages 00h, 80h, 83h and,
//! for disks, B0h, B1h, B2h (SBC-3 §6.6).

use super::error::CmdError;
use super::lu::{LogicalUnit, LuState};
use super::types::DeviceType;

/// Most COMPARE AND WRITE blocks (VPD B0h MAXIMUM COMPARE AND WRITE LENGTH, tgt's 128).
pub const MAX_CAW_BLOCKS: u32 = 128;
/// Most UNMAP block descriptors per command (VPD B0h), so a parameter list stays bounded.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Most logical blocks one UNMAP may deallocate (VPD B0h MAXIMUM UNMAP LBA COUNT).
pub const MAX_UNMAP_LBA_COUNT: u32 = u32::MAX;
/// Largest single READ/WRITE in bytes (VPD B0h MAXIMUM TRANSFER LENGTH, in blocks there);
/// bounds the buffer one command can make the shard allocate.
pub const MAX_XFER_BYTES: u64 = 32 << 20;

/// Peripheral qualifier 011b / type 1Fh: no logical unit at this LUN (SPC-4 §6.6.2).
pub const NO_LUN: u8 = 0x7f;

/// Version descriptors: SBC-3, iSCSI, SPC-3, as tgt claims (SPC-4 Table 150).
const VERSION_DESCRIPTORS: [u16; 3] = [0x04c0, 0x0960, 0x0300];

fn pad(out: &mut Vec<u8>, s: &str, width: usize) {
    let b = s.as_bytes();
    let n = b.len().min(width);
    out.extend_from_slice(&b[..n]);
    out.resize(out.len() + width - n, b' ');
}

/// Standard INQUIRY data (SPC-4 §6.6.2), 66 bytes like tgt's.
pub fn standard(lu: &LogicalUnit) -> Vec<u8> {
    let st = lu.lock();
    let mut d = Vec::with_capacity(66);
    d.push(lu.dev_type().code());
    d.push(if lu.removable() { 0x80 } else { 0 });
    d.push(5); // VERSION: SPC-3, as tgt.
    d.push(0x12); // HISUP, RESPONSE DATA FORMAT 2.
    d.push(66 - 5);
    d.push(0);
    d.push(0);
    d.push(0x02); // CMDQUE
    pad(&mut d, &st.vendor_id, 8);
    pad(&mut d, &st.product_id, 16);
    pad(&mut d, &st.product_rev, 4);
    d.resize(58, 0);
    for v in VERSION_DESCRIPTORS {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d.resize(66, 0);
    d
}

/// Standard INQUIRY data for a LUN with no logical unit (qualifier 011b, type 1Fh).
pub fn standard_no_lun() -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = NO_LUN;
    d[2] = 5;
    d[3] = 0x12;
    d[4] = 36 - 5;
    d[7] = 0x02;
    let mut tail = Vec::new();
    pad(&mut tail, "IET", 8);
    pad(&mut tail, "", 16);
    pad(&mut tail, "0001", 4);
    d[8..36].copy_from_slice(&tail);
    d
}

/// INQUIRY: validates the CDB and builds the page (not yet truncated to ALLOCATION LENGTH).
pub fn inquiry(lu: &LogicalUnit, evpd: bool, cmddt: bool, page: u8) -> Result<Vec<u8>, CmdError> {
    if cmddt || (!evpd && page != 0) {
        return Err(CmdError::InvalidFieldInCdb);
    }
    if !evpd {
        return Ok(standard(lu));
    }
    let pages = supported_pages(lu);
    if !pages.contains(&page) {
        return Err(CmdError::InvalidFieldInCdb);
    }
    let body = {
        let st = lu.lock();
        match page {
            0x00 => pages.to_vec(),
            0x80 => unit_serial(&st),
            0x83 => device_id(lu, &st),
            0xb0 => block_limits(lu, &st),
            0xb1 => block_characteristics(&st),
            _ => provisioning(lu),
        }
    };
    let mut d = vec![lu.dev_type().code(), page];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    Ok(d)
}

fn supported_pages(lu: &LogicalUnit) -> &'static [u8] {
    match lu.dev_type() {
        DeviceType::Disk => &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2],
        DeviceType::Controller => &[0x00, 0x80, 0x83],
    }
}

/// Unit Serial Number (SPC-4 §7.8.15): tgt right-aligns the serial in a 36-byte field.
fn unit_serial(st: &LuState) -> Vec<u8> {
    let sn = st.scsi_sn.as_bytes();
    let n = sn.len().min(36);
    let mut d = vec![b' '; 36 - n];
    d.extend_from_slice(&sn[sn.len() - n..]);
    d
}

/// Device Identification (SPC-4 §7.8.6), tgt's three designators: T10 vendor ID with the
/// SCSI ID, NAA locally assigned `(tid << 32) | lun`, and NAA IEEE registered extended built
/// from the hex digits of the SCSI ID (tgt `update_vpd_83`).
fn device_id(lu: &LogicalUnit, st: &LuState) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + 36 + 4 + 8 + 4 + 16);
    // T10 vendor identification, ASCII, associated with the LU.
    d.extend_from_slice(&[0x02, 0x01, 0x00, 36]);
    let id = st.scsi_id.as_bytes();
    let mut field = [0u8; 36];
    let n = id.len().min(36);
    field[..n].copy_from_slice(&id[..n]);
    d.extend_from_slice(&field);
    // NAA locally assigned (3h).
    d.extend_from_slice(&[0x01, 0x03, 0x00, 8]);
    let numeric = (u64::from(lu.tid()) << 32) | lu.lun().0;
    let mut naa = numeric.to_be_bytes();
    naa[0] = (naa[0] & 0x0f) | 0x30;
    d.extend_from_slice(&naa);
    // NAA IEEE registered extended (6h): the SCSI ID's characters as hex digits, right
    // aligned in 128 bits (non-hex characters count as 0, as strtoul gives).
    d.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
    let mut v: u128 = 0;
    for ch in st.scsi_id.chars() {
        v = (v << 4) | u128::from(ch.to_digit(16).unwrap_or(0));
    }
    let mut ext = v.to_be_bytes();
    ext[0] = (ext[0] & 0x0f) | 0x60;
    d.extend_from_slice(&ext);
    d
}

/// Block Limits (SBC-3 §6.6.4).
fn block_limits(lu: &LogicalUnit, st: &LuState) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    d[1] = MAX_CAW_BLOCKS as u8;
    d[2..4].copy_from_slice(&st.opt_xfer_gran.to_be_bytes());
    let max_xfer = u32::try_from(MAX_XFER_BYTES >> lu.blk_shift()).unwrap_or(u32::MAX);
    d[4..8].copy_from_slice(&max_xfer.to_be_bytes());
    d[8..12].copy_from_slice(&st.opt_xfer_len.to_be_bytes());
    if lu.lbp_enabled() {
        d[16..20].copy_from_slice(&MAX_UNMAP_LBA_COUNT.to_be_bytes());
        d[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
    }
    // A store that bounds WRITE SAME (a Curve volume): WSNZ and MAXIMUM WRITE SAME LENGTH.
    if let Some(m) = lu.backing().and_then(|b| b.caps().max_write_same_bytes) {
        d[0] |= 0x01;
        d[32..40].copy_from_slice(&(m >> lu.blk_shift()).to_be_bytes());
    }
    d
}

/// Block Device Characteristics (SBC-3 §6.6.2): MEDIUM ROTATION RATE.
fn block_characteristics(st: &LuState) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    d[0..2].copy_from_slice(&st.rotation_rate.to_be_bytes());
    d
}

/// Logical Block Provisioning (SBC-3 §6.6.5): LBPU, LBPWS, LBPWS10, LBPRZ, thin type, only when
/// provisioning really works.
fn provisioning(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if lu.lbp_enabled() {
        d[1] = 0x80 | 0x40 | 0x20 | if lu.lbprz() { 0x04 } else { 0 };
        d[2] = 0x02;
    }
    d
}
