//! Unit attention reporting (SAM-5 §5.14, SPC-4 §5.12): which commands see a pending unit
//! attention, and which one is reported first.

use super::cdb::op;
use super::types::Lun;
use super::{NexusState, UnitAttention};

/// INQUIRY, REPORT LUNS and REQUEST SENSE run despite a pending unit attention
/// (SAM-5 §5.14; REQUEST SENSE reports it as its parameter data instead).
pub fn exempt(opcode: u8) -> bool {
    matches!(opcode, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE)
}

/// Removes and returns the oldest unit attention pending for `lun` on this nexus.
pub fn take(nexus: &mut NexusState, lun: Lun) -> Option<UnitAttention> {
    let q = nexus.ua.get_mut(&lun)?;
    let ua = q.pop_front();
    if q.is_empty() {
        nexus.ua.remove(&lun);
    }
    ua
}
