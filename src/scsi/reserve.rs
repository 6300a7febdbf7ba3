//! SPC-2 reservations (RESERVE(6) / RELEASE(6), SPC-2 §7.21, §7.16) and the reservation
//! conflict check every command passes (SPC-4 §5.9.1, SPC-2 §5.5.1).

use super::cdb::Cdb;
use super::error::CmdError;
use super::lu::LogicalUnit;
use super::NexusId;

/// How a command touches the medium, which decides whether a reservation blocks it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Allowed under every reservation (SPC-4 Table 50 "Allowed" in all columns).
    Free,
    /// Reads or reports medium state: blocked only by Exclusive Access types.
    Read,
    /// Changes the medium or LU state: blocked for non-holders by every type.
    Write,
}

/// The SPC-4 §5.9.1 / SBC-3 §4.17 class of a command.
pub fn access(cdb: &Cdb) -> Access {
    match cdb {
        Cdb::Inquiry { .. }
        | Cdb::ReportLuns { .. }
        | Cdb::RequestSense { .. }
        | Cdb::ReportOpcodes { .. }
        | Cdb::ReportTmf { .. }
        | Cdb::PrIn { .. }
        | Cdb::PrOut { .. }
        | Cdb::TestUnitReady
        | Cdb::ReadCapacity10 { .. }
        | Cdb::ReadCapacity16 { .. }
        | Cdb::Reserve6
        | Cdb::Release6 => Access::Free,
        Cdb::PreventAllow { prevent: 0 } => Access::Free,
        Cdb::StartStop {
            power_condition: 0,
            loej: false,
            start: true,
        } => Access::Free,
        Cdb::Read(_)
        | Cdb::Verify(_)
        | Cdb::PreFetch(_)
        | Cdb::ModeSense { .. }
        | Cdb::GetLbaStatus { .. }
        | Cdb::ReadDefectData { .. } => Access::Read,
        _ => Access::Write,
    }
}

/// Commands an SPC-2 reservation held by another nexus still lets through (SPC-2 §5.5.1).
fn spc2_allowed(cdb: &Cdb) -> bool {
    matches!(
        cdb,
        Cdb::Inquiry { .. }
            | Cdb::ReportLuns { .. }
            | Cdb::RequestSense { .. }
            | Cdb::Release6
            | Cdb::ReportOpcodes { .. }
            | Cdb::ReportTmf { .. }
    )
}

/// RESERVATION CONFLICT when a reservation held by someone else forbids `cdb` from `me`.
/// Lock-free unless a reservation exists.
pub fn check(lu: &LogicalUnit, me: &NexusId, cdb: &Cdb) -> Result<(), CmdError> {
    if !lu.reservation_held() {
        return Ok(());
    }
    let st = lu.lock();
    if let Some(holder) = &st.spc2 {
        if holder != me && !spc2_allowed(cdb) {
            return Err(CmdError::ReservationConflict);
        }
        return Ok(());
    }
    let blocked = match access(cdb) {
        Access::Free => false,
        Access::Read => st.pr.conflicts(me, false),
        Access::Write => st.pr.conflicts(me, true),
    };
    if blocked {
        Err(CmdError::ReservationConflict)
    } else {
        Ok(())
    }
}

/// RESERVE(6): while any persistent registration exists, SPC-2 reservations conflict
/// (SPC-4 §5.9.3); otherwise the first nexus to reserve holds it, and may re-reserve.
pub fn reserve6(lu: &LogicalUnit, me: &NexusId) -> Result<(), CmdError> {
    let mut st = lu.lock();
    if !st.pr.registrations.is_empty() {
        return Err(CmdError::ReservationConflict);
    }
    match &st.spc2 {
        Some(h) if h != me => return Err(CmdError::ReservationConflict),
        _ => st.spc2 = Some(me.clone()),
    }
    lu.sync_reservation_flag(&st);
    Ok(())
}

/// RELEASE(6): releases the caller's reservation; releasing someone else's (or none) is a
/// no-op that still returns GOOD (SPC-2 §7.16.2).
pub fn release6(lu: &LogicalUnit, me: &NexusId) -> Result<(), CmdError> {
    let mut st = lu.lock();
    if !st.pr.registrations.is_empty() {
        return Err(CmdError::ReservationConflict);
    }
    if st.spc2.as_ref() == Some(me) {
        st.spc2 = None;
    }
    lu.sync_reservation_flag(&st);
    Ok(())
}
