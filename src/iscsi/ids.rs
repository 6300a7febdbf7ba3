//! Newtypes for iSCSI identifiers, so tags, session handles and connection ids are not
//! interchangeable integers.

/// Initiator Task Tag (RFC 7143 §11.2.1.8): the initiator's name for a task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Itt(pub u32);

impl Itt {
    /// The reserved tag 0xffffffff: unsolicited PDUs and NOP-Outs that want no answer.
    pub const RESERVED: Itt = Itt(0xffff_ffff);
}

/// Target Transfer Tag (RFC 7143 §11.7.4): the target's name for an R2T or a NOP-In ping.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ttt(pub u32);

impl Ttt {
    /// The reserved tag 0xffffffff: "no transfer tag".
    pub const RESERVED: Ttt = Ttt(0xffff_ffff);
}

/// Target Session Identifying Handle (RFC 7143 §11.12.4); 0 in a leading login means "new".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tsih(pub u16);

/// Initiator Session ID (RFC 7143 §11.12.5), 6 bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// The 12 hex digits used in initiator port names (`iqn…,i,0x<isid>`).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Connection ID (RFC 7143 §11.12.6).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cid(pub u16);
