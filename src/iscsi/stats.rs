//! Per-session counters for `tgtadm --op stat`: tgt's per-nexus, per-LU command and byte
//! counts (`struct lu_stat`) and its per-connection PDU counts, plus the marks that let the
//! shard time each READ and WRITE from arrival to status sent.
//!
//! The session owns them, so the one shard that runs the session is their only writer and
//! the hot path touches no shared cache line; the control thread sees them only as a
//! snapshot the shard sends when asked.

use crate::scsi::cdb::op;
use crate::scsi::Lun;

/// Most LUNs counted per session. Counters are created only for LUs that exist, so this
/// only bounds what a target with very many LUs costs.
pub const MAX_COUNTED_LUNS: usize = 1024;

/// tgt's `lu_stat` for one I_T_L nexus: what was submitted to the LU and what completed,
/// by data direction, in bytes (the Expected Data Transfer Length) and commands, and how
/// many ended with a status other than GOOD. Command counts are 32-bit and wrap, as tgt's do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LuCounters {
    pub rd_subm_bytes: u64,
    pub rd_subm_cmds: u32,
    pub rd_done_bytes: u64,
    pub rd_done_cmds: u32,
    pub wr_subm_bytes: u64,
    pub wr_subm_cmds: u32,
    pub wr_done_bytes: u64,
    pub wr_done_cmds: u32,
    pub errs: u32,
}

/// tgt's per-connection counters: bytes on the socket both ways, and PDUs by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dataout_pdus: u32,
    pub datain_pdus: u32,
    pub cmd_pdus: u32,
    pub rsp_pdus: u32,
}

/// Which latency histogram a command belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoDir {
    Read,
    Write,
}

impl IoDir {
    /// READ and WRITE (and WRITE AND VERIFY) opcodes; everything else is not timed, so a
    /// burst of INQUIRYs cannot hide what the medium costs.
    pub fn of_opcode(opcode: u8) -> Option<IoDir> {
        match opcode {
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => Some(IoDir::Read),
            op::WRITE_6
            | op::WRITE_10
            | op::WRITE_12
            | op::WRITE_16
            | op::WRITE_VERIFY_10
            | op::WRITE_VERIFY_12
            | op::WRITE_VERIFY_16 => Some(IoDir::Write),
            _ => None,
        }
    }
}

/// Rides on the PDU that carries a timed command's status, so the shard can record the
/// command's latency when that PDU is handed to the socket.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LatencyMark {
    /// Shard clock (ns) when the command PDU arrived.
    pub arrived_ns: u64,
    pub lun: Lun,
    pub dir: IoDir,
}

/// One session's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Per LU, in the order the session first used them.
    pub lus: Vec<(Lun, LuCounters)>,
    pub conn: ConnCounters,
}

impl SessionStats {
    fn entry(&mut self, lun: Lun) -> Option<&mut LuCounters> {
        let i = match self.lus.iter().position(|(l, _)| *l == lun) {
            Some(i) => i,
            None if self.lus.len() < MAX_COUNTED_LUNS => {
                self.lus.push((lun, LuCounters::default()));
                self.lus.len() - 1
            }
            None => return None,
        };
        Some(&mut self.lus[i].1)
    }

    /// A command reached an existing LU (tgt counts at `scsi_cmd_perform`).
    pub fn submitted(&mut self, lun: Lun, read: bool, write: bool, len: u32) {
        let Some(c) = self.entry(lun) else { return };
        if read {
            c.rd_subm_bytes += u64::from(len);
            c.rd_subm_cmds = c.rd_subm_cmds.wrapping_add(1);
        }
        if write {
            c.wr_subm_bytes += u64::from(len);
            c.wr_subm_cmds = c.wr_subm_cmds.wrapping_add(1);
        }
    }

    /// A submitted command completed (tgt counts at `target_cmd_io_done`). Commands to LUNs
    /// never submitted (no such LU) are not counted, as tgt has no nexus entry for them.
    /// Returns whether the LU is counted.
    pub fn done(&mut self, lun: Lun, read: bool, write: bool, len: u32, good: bool) -> bool {
        let Some(c) = self.lus.iter_mut().find(|(l, _)| *l == lun).map(|(_, c)| c) else {
            return false;
        };
        if read {
            c.rd_done_bytes += u64::from(len);
            c.rd_done_cmds = c.rd_done_cmds.wrapping_add(1);
        }
        if write {
            c.wr_done_bytes += u64::from(len);
            c.wr_done_cmds = c.wr_done_cmds.wrapping_add(1);
        }
        if !good {
            c.errs = c.errs.wrapping_add(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_submitted_lus_by_direction() {
        let mut s = SessionStats::default();
        assert!(!s.done(Lun(3), true, false, 512, true), "never submitted");
        s.submitted(Lun(1), true, false, 4096);
        s.submitted(Lun(1), false, true, 8192);
        assert!(s.done(Lun(1), true, false, 4096, true));
        assert!(s.done(Lun(1), false, true, 8192, false));
        let c = s.lus[0].1;
        assert_eq!((c.rd_subm_bytes, c.rd_subm_cmds), (4096, 1));
        assert_eq!((c.rd_done_bytes, c.rd_done_cmds), (4096, 1));
        assert_eq!((c.wr_subm_bytes, c.wr_subm_cmds), (8192, 1));
        assert_eq!((c.wr_done_bytes, c.wr_done_cmds), (8192, 1));
        assert_eq!(c.errs, 1);
        assert_eq!(s.lus.len(), 1);
    }

    #[test]
    fn the_lun_list_is_bounded() {
        let mut s = SessionStats::default();
        for l in 0..(MAX_COUNTED_LUNS as u64 + 10) {
            s.submitted(Lun(l), true, false, 1);
        }
        assert_eq!(s.lus.len(), MAX_COUNTED_LUNS);
    }

    #[test]
    fn only_reads_and_writes_are_timed() {
        assert_eq!(IoDir::of_opcode(op::READ_16), Some(IoDir::Read));
        assert_eq!(IoDir::of_opcode(op::WRITE_10), Some(IoDir::Write));
        assert_eq!(IoDir::of_opcode(op::INQUIRY), None);
        assert_eq!(IoDir::of_opcode(op::SYNC_CACHE_10), None);
    }
}
