//! A SCSI task as the iSCSI layer tracks it between its command PDU and its final status:
//! where its Data-Out stands (unsolicited window, outstanding R2Ts) and whether it may run.
//!
//! Tasks live in a slab whose capacity is the session's command window at login; it grows
//! to that capacity as the queue deepens (an idle session holds no full-depth table) and then
//! the hot path never allocates a task; an R2T's Target Transfer Tag names the slab slot plus
//! a generation, so a stale tag can never reach a reused slot.

use super::ids::{Itt, Ttt};
use super::serial::CmdSn;
use crate::buf::IoBuf;
use crate::scsi::types::{Lun, TaskAttr};
use std::collections::HashMap;

/// Largest Expected Data Transfer Length accepted for a write (bytes buffered per task).
/// VPD Block Limits advertise a maximum transfer length within it.
pub const MAX_WRITE_BYTES: u32 = 32 << 20;

/// Most R2Ts outstanding per task regardless of what was negotiated (bounds the list).
pub const MAX_R2T_PER_TASK: usize = 16;

/// Where a task is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Its CmdSN is ahead of ExpCmdSN: held until the gap fills (RFC 7143 §3.2.2.1).
    WaitCmdSn,
    /// Its CmdSN is reached and data must be solicited, but the shard's write budget has no
    /// room for its buffer yet: no R2T goes out until it has (R2Ts pace the writer).
    WaitBuffer,
    /// Waiting for Data-Out.
    ReceivingData,
    /// All data here; queued for SCSI execution.
    Ready,
    /// Handed to the SCSI layer / backing store.
    Executing,
    /// Aborted by task management while executing: its completion is discarded.
    Aborted,
}

/// One outstanding R2T.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    pub ttt: Ttt,
    pub offset: u32,
    pub len: u32,
    pub received: u32,
    /// DataSN the next Data-Out of this R2T's sequence must carry (RFC 7143 §11.7.4: each
    /// R2T starts a sequence numbered from 0).
    pub next_data_sn: u32,
}

/// A task's iSCSI-level state.
#[derive(Debug)]
pub struct Task {
    pub itt: Itt,
    pub lun: Lun,
    pub cdb: [u8; 16],
    /// CDB bytes beyond 16 from an extended-CDB AHS (RFC 7143 §11.2.1.3.1).
    pub cdb_ext: Option<Box<[u8]>>,
    pub attr: TaskAttr,
    pub read: bool,
    pub write: bool,
    pub immediate: bool,
    pub expected_len: u32,
    pub cmd_sn: CmdSn,
    pub state: TaskState,
    /// Data-Out buffer (writes): the immediate data as it arrived, then `data_want` bytes
    /// once the rest of the data is solicited (taken against the shard's write budget).
    pub data: Option<IoBuf>,
    /// Bytes of the shard's write budget this task's buffer holds.
    pub buf_bytes: u32,
    /// Data-Out bytes this task will hold: min(expected_len, MAX_WRITE_BYTES) for writes.
    pub data_want: u32,
    /// Data-Out bytes received so far.
    pub data_got: u32,
    /// End of the unsolicited window (immediate data plus unsolicited Data-Out).
    pub unsolicited_end: u32,
    /// Unsolicited bytes placed so far (immediate data plus unsolicited Data-Out), in order.
    pub unsolicited_got: u32,
    /// Next offset not yet covered by an R2T or the unsolicited window.
    pub next_r2t_offset: u32,
    /// R2TSN of the next R2T.
    pub r2t_sn: u32,
    /// Outstanding R2Ts.
    pub r2ts: Vec<R2t>,
    /// DataSN the next unsolicited Data-Out must carry (RFC 7143 §11.7.4: the unsolicited
    /// sequence is numbered from 0).
    pub unsol_data_sn: u32,
    /// A Data-Out arrived out of sequence: once all data is in, the task ends with CHECK
    /// CONDITION instead of running (RFC 7143 §7.9, §7.8.2 option b).
    pub data_error: bool,
    /// Slot generation, folded into TTTs.
    pub generation: u16,
    /// When the command arrived (for in-target latency).
    pub arrived_ns: u64,
    /// Seconds this task has held write-budget bytes while waiting on the initiator (its
    /// solicited or unsolicited Data-Out, or a CmdSN gap) without progress: the Data-Out
    /// deadline (`Session::dataout_tick`) ends the connection when it reaches its limit.
    pub stalled_secs: u16,
    /// Of `buf_bytes`, those solicited (taken for its R2Ts), which count against the
    /// session's share of the budget; unsolicited bytes never wait, so they do not.
    pub share_bytes: u32,
}

impl Task {
    /// The whole CDB.
    pub fn cdb_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.cdb_ext {
            None => std::borrow::Cow::Borrowed(&self.cdb[..]),
            Some(ext) => {
                let mut v = self.cdb.to_vec();
                v.extend_from_slice(ext);
                std::borrow::Cow::Owned(v)
            }
        }
    }

    /// The Data-Out bytes received.
    pub fn data_out(&self) -> &[u8] {
        match &self.data {
            Some(b) => {
                let s = b.as_slice();
                &s[..(self.data_got as usize).min(s.len())]
            }
            None => &[],
        }
    }
}

/// A slab handle: slot index plus generation, so a completion for a freed task is detected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub slot: u32,
    pub generation: u16,
}

/// The session's tasks: a bounded slab indexed by slot, and an ITT index.
#[derive(Debug)]
pub struct TaskTable {
    slots: Vec<Option<Task>>,
    generations: Vec<u16>,
    free: Vec<u32>,
    /// ITT → slot. Keyed with foldhash's per-process random seed: the ITT is the
    /// initiator's choice, so the hash stays keyed, and the table is bounded by the command
    /// window anyway; SipHash (std's default) was about 10 % of the shard's user CPU at
    /// 4 KiB reads, qd512, on the null LU (bench/results/20261130T2130-perio-ab-qd512).
    by_itt: HashMap<u32, u32, foldhash::fast::RandomState>,
    /// Emptied R2T lists of finished tasks, reused so a write that needs R2Ts does not
    /// allocate (at most one per slot).
    spare_r2ts: Vec<Vec<R2t>>,
    /// Most slots: `slots` grows up to this as the queue deepens, so an idle session does
    /// not hold a full-depth table (about 70 KiB at the default depth).
    capacity: usize,
}

impl TaskTable {
    /// A table for at most `capacity` live tasks.
    pub fn new(capacity: usize) -> TaskTable {
        TaskTable {
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_itt: HashMap::default(),
            spare_r2ts: Vec::new(),
            capacity,
        }
    }

    /// Live tasks.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when no task is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a live task already uses `itt`.
    pub fn has_itt(&self, itt: Itt) -> bool {
        self.by_itt.contains_key(&itt.0)
    }

    /// Inserts a task; `None` when the table is full.
    pub fn insert(&mut self, mut task: Task) -> Option<TaskRef> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < self.capacity => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let generation = self.generations[slot as usize].wrapping_add(1);
        self.generations[slot as usize] = generation;
        task.generation = generation;
        if task.r2ts.capacity() == 0 {
            if let Some(v) = self.spare_r2ts.pop() {
                task.r2ts = v;
            }
        }
        self.by_itt.insert(task.itt.0, slot);
        self.slots[slot as usize] = Some(task);
        Some(TaskRef { slot, generation })
    }

    /// The live task behind a handle.
    pub fn get(&self, r: TaskRef) -> Option<&Task> {
        self.slots
            .get(r.slot as usize)?
            .as_ref()
            .filter(|t| t.generation == r.generation)
    }

    /// The live task behind a handle, mutably.
    pub fn get_mut(&mut self, r: TaskRef) -> Option<&mut Task> {
        self.slots
            .get_mut(r.slot as usize)?
            .as_mut()
            .filter(|t| t.generation == r.generation)
    }

    /// Finds a task by ITT.
    pub fn find_itt(&self, itt: Itt) -> Option<TaskRef> {
        let slot = *self.by_itt.get(&itt.0)?;
        let t = self.slots[slot as usize].as_ref()?;
        Some(TaskRef {
            slot,
            generation: t.generation,
        })
    }

    /// Removes a task, returning it.
    pub fn remove(&mut self, r: TaskRef) -> Option<Task> {
        self.get(r)?;
        let mut t = self.slots[r.slot as usize].take()?;
        if self.by_itt.get(&t.itt.0) == Some(&r.slot) {
            self.by_itt.remove(&t.itt.0);
        }
        self.free.push(r.slot);
        if t.r2ts.capacity() > 0 && self.spare_r2ts.len() < self.slots.len() {
            let mut v = std::mem::take(&mut t.r2ts);
            v.clear();
            self.spare_r2ts.push(v);
        }
        Some(t)
    }

    /// The first live task (in slot order) matching `pred`, without allocating.
    pub fn find(&self, pred: impl Fn(&Task) -> bool) -> Option<TaskRef> {
        self.slots.iter().enumerate().find_map(|(i, t)| {
            t.as_ref().filter(|t| pred(t)).map(|t| TaskRef {
                slot: i as u32,
                generation: t.generation,
            })
        })
    }

    /// Every live task, mutably (slot order, no allocation).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.slots.iter_mut().flatten()
    }

    /// Handles of every live task.
    pub fn refs(&self) -> Vec<TaskRef> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.as_ref().map(|t| TaskRef {
                    slot: i as u32,
                    generation: t.generation,
                })
            })
            .collect()
    }

    /// The TTT naming an R2T of this task: slot in the low 16 bits... (slot < 2^16), the
    /// generation in the high 16. Never 0xffffffff.
    pub fn ttt_for(r: TaskRef) -> Ttt {
        let v = (u32::from(r.generation) << 16) | (r.slot & 0xffff);
        Ttt(if v == 0xffff_ffff { 0x7fff_ffff } else { v })
    }

    /// The task an R2T's TTT names, if still live.
    pub fn from_ttt(&self, ttt: Ttt) -> Option<TaskRef> {
        let r = TaskRef {
            slot: ttt.0 & 0xffff,
            generation: (ttt.0 >> 16) as u16,
        };
        self.get(r).map(|_| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn task(itt: u32) -> Task {
        Task {
            itt: Itt(itt),
            lun: Lun(1),
            cdb: [0; 16],
            cdb_ext: None,
            attr: TaskAttr::Simple,
            read: true,
            write: false,
            immediate: false,
            expected_len: 0,
            cmd_sn: CmdSn(0),
            state: TaskState::Ready,
            data: None,
            buf_bytes: 0,
            data_want: 0,
            data_got: 0,
            unsolicited_end: 0,
            unsolicited_got: 0,
            next_r2t_offset: 0,
            r2t_sn: 0,
            r2ts: Vec::new(),
            unsol_data_sn: 0,
            data_error: false,
            generation: 0,
            arrived_ns: 0,
            stalled_secs: 0,
            share_bytes: 0,
        }
    }

    #[test]
    fn r2t_lists_are_reused_not_reallocated() {
        let mut t = TaskTable::new(4);
        let a = t.insert(task(1)).unwrap();
        t.get_mut(a).unwrap().r2ts.reserve(4);
        let removed = t.remove(a).unwrap();
        assert_eq!(removed.r2ts.capacity(), 0, "the list stayed with the table");
        let b = t.insert(task(2)).unwrap();
        let v = &t.get(b).unwrap().r2ts;
        assert!(v.is_empty() && v.capacity() >= 4);
    }

    #[test]
    fn slab_reuse_bumps_generation() {
        let mut t = TaskTable::new(2);
        let a = t.insert(task(1)).unwrap();
        let b = t.insert(task(2)).unwrap();
        assert!(t.insert(task(3)).is_none(), "capacity bounds live tasks");
        assert_eq!(t.find_itt(Itt(2)), Some(b));
        let ttt = TaskTable::ttt_for(a);
        assert_eq!(t.from_ttt(ttt), Some(a));
        t.remove(a).unwrap();
        assert!(t.get(a).is_none());
        assert!(t.from_ttt(ttt).is_none(), "stale TTT is not resolved");
        let c = t.insert(task(4)).unwrap();
        assert_eq!(c.slot, a.slot);
        assert_ne!(c.generation, a.generation);
        assert_eq!(t.len(), 2);
    }
}
