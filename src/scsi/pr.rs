//! Persistent reservations (SPC-4 §5.7, §6.15, §6.16): registrations keyed by I_T nexus, one
//! logical-unit-scope reservation, PERSISTENT RESERVE IN and OUT.

use super::error::CmdError;
use super::lu::{LogicalUnit, LuState};
use super::{Effect, NexusId, UaScope, UnitAttention};

/// Most registrations kept per LU; REGISTER beyond it fails with INSUFFICIENT REGISTRATION
/// RESOURCES, so initiators cannot grow the table without bound.
pub const MAX_REGISTRATIONS: usize = 256;

/// Reservation types (SPC-4 §6.16.3, Table 207).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// Decodes the TYPE field; other values are INVALID FIELD IN CDB.
    pub fn from_code(code: u8) -> Option<PrType> {
        Some(match code {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// All-registrants types: every registrant is a holder (SPC-4 §5.7.9).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants-only and all-registrants types let every registrant access the medium.
    pub fn registrants_allowed(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Exclusive access types also forbid reads to those not allowed.
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// One registered I_T nexus and its reservation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub nexus: NexusId,
    pub key: u64,
}

/// The persistent reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The holder (for all-registrants types: the nexus that created it; every registrant
    /// holds it).
    pub holder: NexusId,
    pub pr_type: PrType,
}

/// Persistent reservation state of one LU.
#[derive(Clone, Debug, Default)]
pub struct PrState {
    /// PRGENERATION (SPC-4 §6.15.2): bumped by every registration change.
    pub generation: u32,
    pub registrations: Vec<Registration>,
    pub reservation: Option<Reservation>,
}

impl PrState {
    /// The key `nexus` is registered with.
    pub fn key_of(&self, nexus: &NexusId) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| &r.nexus == nexus)
            .map(|r| r.key)
    }

    /// Whether `nexus` holds the reservation (SPC-4 §5.7.9).
    pub fn is_holder(&self, nexus: &NexusId) -> bool {
        match &self.reservation {
            Some(r) if r.pr_type.all_registrants() => self.key_of(nexus).is_some(),
            Some(r) => &r.holder == nexus,
            None => false,
        }
    }

    /// Whether a command of this kind from `nexus` conflicts with the reservation
    /// (SPC-4 §5.9.1 Table 50: holders and, for registrants types, registrants may do
    /// everything; others may read under Write Exclusive types only).
    pub fn conflicts(&self, nexus: &NexusId, writes: bool) -> bool {
        let Some(r) = &self.reservation else {
            return false;
        };
        if self.is_holder(nexus) {
            return false;
        }
        if r.pr_type.registrants_allowed() && self.key_of(nexus).is_some() {
            return false;
        }
        writes || r.pr_type.exclusive_access()
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Removes `nexus`'s registration; drops the reservation when it held it (or, for
    /// all-registrants types, when it was the last registrant). Returns nexuses to notify with
    /// RESERVATIONS RELEASED (SPC-4 §5.7.11.2: registrants-only types).
    fn unregister(&mut self, nexus: &NexusId) -> Vec<NexusId> {
        self.registrations.retain(|r| &r.nexus != nexus);
        let mut notify = Vec::new();
        if let Some(r) = self.reservation.clone() {
            let released = if r.pr_type.all_registrants() {
                self.registrations.is_empty()
            } else {
                &r.holder == nexus
            };
            if released {
                self.reservation = None;
                if matches!(
                    r.pr_type,
                    PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
                ) {
                    notify = self.registrations.iter().map(|r| r.nexus.clone()).collect();
                }
            } else if r.pr_type.all_registrants() && &r.holder == nexus {
                // Another registrant stands in as the nominal holder.
                if let Some(first) = self.registrations.first() {
                    self.reservation = Some(Reservation {
                        holder: first.nexus.clone(),
                        pr_type: r.pr_type,
                    });
                }
            }
        }
        notify
    }
}

fn ua_for(nexuses: Vec<NexusId>, lu: &LogicalUnit, ua: UnitAttention) -> Vec<Effect> {
    nexuses
        .into_iter()
        .map(|n| Effect::Ua {
            scope: UaScope::Only(n),
            lun: Some(lu.lun()),
            ua,
        })
        .collect()
}

/// PERSISTENT RESERVE IN (SPC-4 §6.15).
pub fn pr_in(lu: &LogicalUnit, sa: u8, alloc: u32) -> Result<Vec<u8>, CmdError> {
    let st = lu.lock();
    let pr = &st.pr;
    let mut d = Vec::new();
    match sa {
        // READ KEYS
        0 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
            for r in &pr.registrations {
                d.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        // READ RESERVATION
        1 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            match &pr.reservation {
                None => d.extend_from_slice(&0u32.to_be_bytes()),
                Some(r) => {
                    d.extend_from_slice(&16u32.to_be_bytes());
                    let key = if r.pr_type.all_registrants() {
                        0
                    } else {
                        pr.key_of(&r.holder).unwrap_or(0)
                    };
                    d.extend_from_slice(&key.to_be_bytes());
                    d.extend_from_slice(&[0; 4]);
                    d.push(0);
                    d.push(r.pr_type as u8); // SCOPE 0h: logical unit
                    d.extend_from_slice(&[0; 2]);
                }
            }
        }
        // REPORT CAPABILITIES: CRH, ALL_TG_PT capable, TMV, types 1,3,5,6,7,8.
        2 => {
            d.extend_from_slice(&8u16.to_be_bytes());
            d.push(0x10 | 0x04);
            d.push(0x80);
            d.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
            d.push(0x01);
            d.extend_from_slice(&[0; 2]);
        }
        // READ FULL STATUS
        3 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            let budget = alloc as usize;
            for r in &pr.registrations {
                let tid = transport_id(&r.nexus);
                d.extend_from_slice(&r.key.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                let holder = pr.is_holder(&r.nexus);
                d.push(0x02 | u8::from(holder)); // ALL_TG_PT, R_HOLDER
                d.push(match (&pr.reservation, holder) {
                    (Some(res), true) => res.pr_type as u8,
                    _ => 0,
                });
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&1u16.to_be_bytes()); // RELATIVE TARGET PORT IDENTIFIER
                d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                d.extend_from_slice(&tid);
                if d.len() > budget.max(8) + 4096 {
                    // Beyond what the initiator can receive: stop building.
                    break;
                }
            }
            let add = (d.len() - 8) as u32;
            d[4..8].copy_from_slice(&add.to_be_bytes());
        }
        _ => return Err(CmdError::InvalidFieldInCdb),
    }
    Ok(d)
}

/// iSCSI TransportID, initiator port format (SPC-4 §7.6.4.6): `name,i,0x<ISID>`, NUL
/// terminated, padded to a multiple of 4.
fn transport_id(n: &NexusId) -> Vec<u8> {
    let name = n.initiator_port.as_bytes();
    let mut body = name[..name.len().min(223)].to_vec();
    body.push(0);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(body.len() as u16).to_be_bytes());
    t.extend_from_slice(&body);
    t
}

/// PERSISTENT RESERVE OUT CDB fields.
#[derive(Copy, Clone, Debug)]
pub struct OutArgs {
    pub sa: u8,
    pub scope: u8,
    pub pr_type: u8,
    pub len: u32,
}

/// PERSISTENT RESERVE OUT (SPC-4 §6.16, §5.7.7-§5.7.11).
pub fn pr_out(
    lu: &LogicalUnit,
    me: &NexusId,
    a: OutArgs,
    data_out: &[u8],
) -> Result<Vec<Effect>, CmdError> {
    const REGISTER: u8 = 0;
    const RESERVE: u8 = 1;
    const RELEASE: u8 = 2;
    const CLEAR: u8 = 3;
    const PREEMPT: u8 = 4;
    const PREEMPT_AND_ABORT: u8 = 5;
    const REGISTER_IGNORE: u8 = 6;
    if a.sa > REGISTER_IGNORE {
        // REGISTER AND MOVE and reserved service actions.
        return Err(CmdError::InvalidFieldInCdb);
    }
    // The basic parameter list is exactly 24 bytes (SPC-4 §6.16.4, SPEC_I_PT not supported).
    if a.len != 24 {
        return Err(CmdError::ParamListLength);
    }
    let p = data_out.get(..24).ok_or(CmdError::ParamListLength)?;
    let res_key = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
    let sa_key = u64::from_be_bytes(p[8..16].try_into().expect("8 bytes"));
    let flags = p[20];
    if flags & 0x08 != 0 || flags & 0x01 != 0 {
        // SPEC_I_PT and APTPL are not supported (REPORT CAPABILITIES says so).
        return Err(CmdError::InvalidFieldInParamList);
    }

    let mut guard = lu.lock();
    let st: &mut LuState = &mut guard;
    // An SPC-2 reservation by another nexus conflicts with PR OUT (SPC-4 §5.9.3).
    if st.spc2.as_ref().is_some_and(|h| h != me) {
        return Err(CmdError::ReservationConflict);
    }
    let pr = &mut st.pr;
    let mine = pr.key_of(me);
    let mut effects = Vec::new();
    match a.sa {
        REGISTER | REGISTER_IGNORE => {
            if a.sa == REGISTER && mine.unwrap_or(0) != res_key {
                return Err(CmdError::ReservationConflict);
            }
            match (mine, sa_key) {
                (None, 0) => {}
                (None, k) => {
                    if pr.registrations.len() >= MAX_REGISTRATIONS {
                        return Err(CmdError::InsufficientRegistrationResources);
                    }
                    pr.registrations.push(Registration {
                        nexus: me.clone(),
                        key: k,
                    });
                    pr.bump();
                }
                (Some(_), 0) => {
                    let notify = pr.unregister(me);
                    effects = ua_for(notify, lu, UnitAttention::ReservationsReleased);
                    pr.bump();
                }
                (Some(_), k) => {
                    if let Some(r) = pr.registrations.iter_mut().find(|r| &r.nexus == me) {
                        r.key = k;
                    }
                    pr.bump();
                }
            }
        }
        RESERVE => {
            if mine != Some(res_key) {
                return Err(CmdError::ReservationConflict);
            }
            let t = checked_type(a)?;
            match &pr.reservation {
                Some(r) if pr.is_holder(me) && r.pr_type == t => {}
                Some(_) => return Err(CmdError::ReservationConflict),
                None => {
                    pr.reservation = Some(Reservation {
                        holder: me.clone(),
                        pr_type: t,
                    })
                }
            }
        }
        RELEASE => {
            if mine != Some(res_key) {
                return Err(CmdError::ReservationConflict);
            }
            if let Some(r) = pr.reservation.clone() {
                if pr.is_holder(me) {
                    if a.scope != 0 || a.pr_type != r.pr_type as u8 {
                        return Err(CmdError::InvalidReleaseOfPr);
                    }
                    pr.reservation = None;
                    // SPC-4 §5.7.11.2: other registrants learn of the release unless the type
                    // was Write Exclusive or Exclusive Access.
                    if r.pr_type.registrants_allowed() {
                        let others = pr
                            .registrations
                            .iter()
                            .filter(|x| &x.nexus != me)
                            .map(|x| x.nexus.clone())
                            .collect();
                        effects = ua_for(others, lu, UnitAttention::ReservationsReleased);
                    }
                }
            }
        }
        CLEAR => {
            if mine != Some(res_key) {
                return Err(CmdError::ReservationConflict);
            }
            let others = pr
                .registrations
                .iter()
                .filter(|x| &x.nexus != me)
                .map(|x| x.nexus.clone())
                .collect();
            effects = ua_for(others, lu, UnitAttention::ReservationsPreempted);
            pr.registrations.clear();
            pr.reservation = None;
            pr.bump();
        }
        PREEMPT | PREEMPT_AND_ABORT => {
            if mine != Some(res_key) {
                return Err(CmdError::ReservationConflict);
            }
            effects = preempt(lu, pr, me, a, sa_key)?;
        }
        _ => return Err(CmdError::InvalidFieldInCdb),
    }
    lu.sync_reservation_flag(st);
    Ok(effects)
}

fn checked_type(a: OutArgs) -> Result<PrType, CmdError> {
    if a.scope != 0 {
        return Err(CmdError::InvalidFieldInCdb);
    }
    PrType::from_code(a.pr_type).ok_or(CmdError::InvalidFieldInCdb)
}

/// PREEMPT (SPC-4 §5.7.11.4): removes the registrations with `sa_key` and, when they held the
/// reservation, takes it over with the new type.
fn preempt(
    lu: &LogicalUnit,
    pr: &mut PrState,
    me: &NexusId,
    a: OutArgs,
    sa_key: u64,
) -> Result<Vec<Effect>, CmdError> {
    let victims_of = |pr: &PrState, all_others: bool| -> Vec<NexusId> {
        pr.registrations
            .iter()
            .filter(|r| &r.nexus != me && (all_others || r.key == sa_key))
            .map(|r| r.nexus.clone())
            .collect()
    };
    let res = pr.reservation.clone();
    let (victims, take_over) = match &res {
        None => {
            if sa_key == 0 {
                return Err(CmdError::InvalidFieldInParamList);
            }
            (victims_of(pr, false), false)
        }
        Some(r) if r.pr_type.all_registrants() => {
            if sa_key == 0 {
                (victims_of(pr, true), true)
            } else {
                (victims_of(pr, false), false)
            }
        }
        Some(r) => {
            let holder_key = pr.key_of(&r.holder);
            if holder_key == Some(sa_key) {
                (victims_of(pr, false), true)
            } else if sa_key == 0 {
                return Err(CmdError::InvalidFieldInParamList);
            } else {
                (victims_of(pr, false), false)
            }
        }
    };
    if take_over {
        let t = checked_type(a)?;
        pr.reservation = Some(Reservation {
            holder: me.clone(),
            pr_type: t,
        });
    } else if victims.is_empty() && pr.registrations.iter().all(|r| r.key != sa_key) {
        return Err(CmdError::ReservationConflict);
    }
    pr.registrations.retain(|r| !victims.contains(&r.nexus));
    pr.bump();
    Ok(ua_for(victims, lu, UnitAttention::RegistrationsPreempted))
}
