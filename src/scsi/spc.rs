//! Primary commands (SPC-4 §6) that are neither INQUIRY, mode nor reservations: TEST UNIT
//! READY, REQUEST SENSE, REPORT LUNS, REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT
//! FUNCTIONS, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, SEND DIAGNOSTIC.

use super::cdb::op;
use super::error::CmdError;
use super::lu::LogicalUnit;
use super::sense::{Sense, SenseKey};
use super::types::{DeviceType, Lun};
use super::{ua, NexusId, NexusState};

/// TEST UNIT READY (SPC-4 §6.37).
pub fn test_unit_ready(lu: &LogicalUnit) -> Result<(), CmdError> {
    if lu.dev_type() == DeviceType::Disk {
        super::sbc::require_medium(lu)?;
    }
    Ok(())
}

/// REQUEST SENSE (SPC-4 §6.29): reports (and clears) the oldest pending unit attention, else
/// NO SENSE, in the format the DESC bit asks for.
pub fn request_sense(
    nexus: &mut NexusState,
    lun: Lun,
    lu: Option<&LogicalUnit>,
    desc: bool,
) -> Vec<u8> {
    let sense = match lu {
        None => CmdError::LunNotSupported.sense(),
        Some(_) => ua::take(nexus, lun).and_then(|u| CmdError::UnitAttention(u).sense()),
    };
    sense
        .unwrap_or(Sense::new(SenseKey::NoSense, 0, 0))
        .encode(desc)
}

/// REPORT LUNS (SPC-4 §6.33): SELECT REPORT 0 and 2 list every LUN, 1 (well-known LUNs only)
/// lists none. ALLOCATION LENGTH below 16 is invalid.
pub fn report_luns(luns: &[Lun], select: u8, alloc: u32) -> Result<Vec<u8>, CmdError> {
    if alloc < 16 || select > 2 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    let list: &[Lun] = if select == 1 { &[] } else { luns };
    let mut d = Vec::with_capacity(8 + list.len() * 8);
    d.extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for l in list {
        d.extend_from_slice(&l.to_wire());
    }
    Ok(d)
}

/// One supported command for REPORT SUPPORTED OPERATION CODES.
struct OpInfo {
    opcode: u8,
    sa: Option<u8>,
    cdb_len: u8,
}

const fn o(opcode: u8, sa: Option<u8>, cdb_len: u8) -> OpInfo {
    OpInfo {
        opcode,
        sa,
        cdb_len,
    }
}

/// Every command a disk LU implements (the dispatcher's table).
const DISK_OPS: &[OpInfo] = &[
    o(op::TEST_UNIT_READY, None, 6),
    o(op::REQUEST_SENSE, None, 6),
    o(op::FORMAT_UNIT, None, 6),
    o(op::READ_6, None, 6),
    o(op::WRITE_6, None, 6),
    o(op::INQUIRY, None, 6),
    o(op::MODE_SELECT_6, None, 6),
    o(op::RESERVE_6, None, 6),
    o(op::RELEASE_6, None, 6),
    o(op::MODE_SENSE_6, None, 6),
    o(op::START_STOP_UNIT, None, 6),
    o(op::SEND_DIAGNOSTIC, None, 6),
    o(op::PREVENT_ALLOW, None, 6),
    o(op::READ_CAPACITY_10, None, 10),
    o(op::READ_10, None, 10),
    o(op::WRITE_10, None, 10),
    o(op::WRITE_VERIFY_10, None, 10),
    o(op::VERIFY_10, None, 10),
    o(op::PRE_FETCH_10, None, 10),
    o(op::SYNC_CACHE_10, None, 10),
    o(op::READ_DEFECT_DATA_10, None, 10),
    o(op::WRITE_SAME_10, None, 10),
    o(op::UNMAP, None, 10),
    o(op::MODE_SELECT_10, None, 10),
    o(op::MODE_SENSE_10, None, 10),
    o(op::PR_IN, Some(0), 10),
    o(op::PR_IN, Some(1), 10),
    o(op::PR_IN, Some(2), 10),
    o(op::PR_IN, Some(3), 10),
    o(op::PR_OUT, Some(0), 10),
    o(op::PR_OUT, Some(1), 10),
    o(op::PR_OUT, Some(2), 10),
    o(op::PR_OUT, Some(3), 10),
    o(op::PR_OUT, Some(4), 10),
    o(op::PR_OUT, Some(5), 10),
    o(op::PR_OUT, Some(6), 10),
    o(op::READ_16, None, 16),
    o(op::COMPARE_AND_WRITE, None, 16),
    o(op::WRITE_16, None, 16),
    o(op::ORWRITE_16, None, 16),
    o(op::WRITE_VERIFY_16, None, 16),
    o(op::VERIFY_16, None, 16),
    o(op::PRE_FETCH_16, None, 16),
    o(op::SYNC_CACHE_16, None, 16),
    o(op::WRITE_SAME_16, None, 16),
    o(op::SERVICE_ACTION_IN_16, Some(op::SAI_READ_CAPACITY_16), 16),
    o(op::SERVICE_ACTION_IN_16, Some(op::SAI_GET_LBA_STATUS), 16),
    o(op::REPORT_LUNS, None, 12),
    o(op::MAINTENANCE_IN, Some(op::MI_REPORT_OPCODES), 12),
    o(op::MAINTENANCE_IN, Some(op::MI_REPORT_TMF), 12),
    o(op::READ_12, None, 12),
    o(op::WRITE_12, None, 12),
    o(op::WRITE_VERIFY_12, None, 12),
    o(op::VERIFY_12, None, 12),
    o(op::READ_DEFECT_DATA_12, None, 12),
];

/// Commands of tgt's LUN 0 controller.
const CONTROLLER_OPS: &[OpInfo] = &[
    o(op::TEST_UNIT_READY, None, 6),
    o(op::REQUEST_SENSE, None, 6),
    o(op::INQUIRY, None, 6),
    o(op::REPORT_LUNS, None, 12),
    o(op::MAINTENANCE_IN, Some(op::MI_REPORT_OPCODES), 12),
    o(op::MAINTENANCE_IN, Some(op::MI_REPORT_TMF), 12),
];

fn ops_of(dev: DeviceType) -> &'static [OpInfo] {
    match dev {
        DeviceType::Disk => DISK_OPS,
        DeviceType::Controller => CONTROLLER_OPS,
    }
}

/// Whether the device type implements `opcode` at all (others get INVALID OPCODE).
pub fn implemented(dev: DeviceType, opcode: u8) -> bool {
    ops_of(dev).iter().any(|i| i.opcode == opcode)
}

/// Command timeouts descriptor (SPC-4 §6.35.4): no recommended timeouts.
fn timeouts(d: &mut Vec<u8>) {
    d.extend_from_slice(&0x0au16.to_be_bytes());
    d.extend_from_slice(&[0; 10]);
}

/// CDB usage bitmap (SPC-4 §6.35.3): the opcode, the service action, every other field
/// possibly used, the CONTROL byte's NACA/link bits.
fn usage(i: &OpInfo) -> Vec<u8> {
    let n = usize::from(i.cdb_len);
    let mut u = vec![0xffu8; n];
    u[0] = i.opcode;
    if let Some(sa) = i.sa {
        u[1] = 0xe0 | sa;
    }
    u[n - 1] = 0x07;
    u
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), reporting options 0 to 3.
pub fn report_opcodes(
    dev: DeviceType,
    rctd: bool,
    options: u8,
    opcode: u8,
    sa: u16,
) -> Result<Vec<u8>, CmdError> {
    let ops = ops_of(dev);
    let mut d = Vec::new();
    if options == 0 {
        d.extend_from_slice(&[0; 4]);
        for i in ops {
            d.push(i.opcode);
            d.push(0);
            d.extend_from_slice(&u16::from(i.sa.unwrap_or(0)).to_be_bytes());
            d.push(0);
            d.push(if rctd { 0x02 } else { 0 } | u8::from(i.sa.is_some()));
            d.extend_from_slice(&u16::from(i.cdb_len).to_be_bytes());
            if rctd {
                timeouts(&mut d);
            }
        }
        let len = (d.len() - 4) as u32;
        d[0..4].copy_from_slice(&len.to_be_bytes());
        return Ok(d);
    }
    let has_sa = ops.iter().any(|i| i.opcode == opcode && i.sa.is_some());
    // SPC-4 §6.35.1: REPORTING OPTIONS 001b for an opcode with service actions, or 010b for
    // one without, is an invalid REPORTING OPTIONS field (CDB byte 2). The field pointer tells
    // the initiator it is that field and not the command itself that is unsupported (libiscsi
    // reads a MAINTENANCE IN INVALID FIELD IN CDB without one as "not implemented").
    let bad_options = CmdError::InvalidFieldInCdbAt(2);
    let found = match options {
        1 if has_sa => return Err(bad_options),
        1 => ops.iter().find(|i| i.opcode == opcode),
        2 if !has_sa && implemented(dev, opcode) => return Err(bad_options),
        2 => ops
            .iter()
            .find(|i| i.opcode == opcode && i.sa.map(u16::from) == Some(sa)),
        3 => ops
            .iter()
            .find(|i| i.opcode == opcode && (i.sa.is_none() || i.sa.map(u16::from) == Some(sa))),
        _ => return Err(bad_options),
    };
    d.push(0);
    match found {
        None => {
            d.push(if rctd { 0x80 } else { 0 } | 0x01); // SUPPORT 001b: not supported
            d.extend_from_slice(&0u16.to_be_bytes());
        }
        Some(i) => {
            d.push(if rctd { 0x80 } else { 0 } | 0x03); // SUPPORT 011b: per standard
            d.extend_from_slice(&u16::from(i.cdb_len).to_be_bytes());
            d.extend_from_slice(&usage(i));
        }
    }
    if rctd {
        timeouts(&mut d);
    }
    Ok(d)
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36): ABORT TASK, ABORT TASK SET,
/// CLEAR TASK SET, LOGICAL UNIT RESET, QUERY TASK, TARGET RESET (the iSCSI layer's set).
pub fn report_tmf(repd: bool) -> Vec<u8> {
    let mut d = vec![0u8; if repd { 16 } else { 4 }];
    d[0] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // ATS ATSS CACAS LURS TRS
    d[1] = 0x01; // QTS
    if repd {
        d[3] = 0x0c;
    }
    d
}

/// START STOP UNIT (SBC-3 §5.20): on removable LUs LOEJ ejects (START=0) or loads (START=1)
/// the medium; power conditions are accepted and ignored, as tgt does.
pub fn start_stop(
    lu: &LogicalUnit,
    power_condition: u8,
    loej: bool,
    start: bool,
) -> Result<(), CmdError> {
    if power_condition != 0 || !loej || !lu.removable() {
        return Ok(());
    }
    // SBC-3 §5.25 with §5.10: while any nexus prevents medium removal, the load/eject
    // mechanism is locked: LOEJ fails with MEDIUM REMOVAL PREVENTED for an eject and, as in
    // tgt, for a load too (libiscsi's PreventAllow.Eject expects both).
    let st = lu.lock();
    if !st.prevent.is_empty() {
        return Err(CmdError::MediumRemovalPrevented);
    }
    if start {
        if lu.backing().is_some() {
            lu.set_online(true);
        }
        return Ok(());
    }
    lu.set_online(false);
    Ok(())
}

/// PREVENT ALLOW MEDIUM REMOVAL (SBC-3 §5.10): the lock is per I_T nexus; medium removal is
/// prevented while any nexus holds one.
pub fn prevent_allow(lu: &LogicalUnit, me: &NexusId, prevent: u8) -> Result<(), CmdError> {
    let mut st = lu.lock();
    match prevent {
        0 => st.prevent.retain(|n| n != me),
        1 => {
            if !st.prevent.contains(me) {
                st.prevent.push(me.clone());
            }
        }
        _ => return Err(CmdError::InvalidFieldInCdb),
    }
    Ok(())
}

/// SEND DIAGNOSTIC (SPC-4 §6.32): the default self-test passes; nothing else is supported.
pub fn send_diagnostic(
    self_test_code: u8,
    self_test: bool,
    param_len: u32,
) -> Result<(), CmdError> {
    if self_test && self_test_code != 0 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    if !self_test && (self_test_code != 0 || param_len != 0) {
        return Err(CmdError::InvalidFieldInCdb);
    }
    Ok(())
}
