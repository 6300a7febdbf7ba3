//! Target `session`: the full-feature phase of one session (`iscsi::session::Session`) fed a
//! sequence of PDUs, driven as the shard drives it: every PDU goes through the receive path
//! (`rx::next_pdu`), ready tasks run against an in-memory LU (`scsi::execute`), backing I/O
//! completes when the input says (so aborts race completions), text and reset events are
//! handled, and every PDU the target queues is read back as the initiator would read it.
//!
//! The input is a [`Settings`] header (negotiated parameters, starting CmdSN/StatSN) and then
//! [`Op`]s. Sequence numbers, tags and offsets are mostly *relative* (to ExpCmdSN, to the last
//! advertised MaxCmdSN, to the R2T the target sent), so short inputs reach deep states; each
//! can also be a raw value.
//!
//! Checks (all on what the initiator sees):
//! - no panic; no task table beyond its bound;
//! - ExpCmdSN never moves backwards, MaxCmdSN ≥ ExpCmdSN − 1;
//! - [`Check::Window`]: MaxCmdSN never moves backwards (RFC 7143 §3.2.2.1), and a new command
//!   inside the advertised window with a fresh CmdSN is accepted, answered or rejected — never
//!   dropped in silence (issue 11 item 1);
//! - StatSN advances by exactly one per status-carrying PDU;
//! - no data segment longer than the initiator's MaxRecvDataSegmentLength; lengths and header
//!   digests on every PDU match what was sent;
//! - every backing-store operation lies inside the LU and its Data-Out buffer;
//! - [`Check::Order`]: once the initiator has sent every CmdSN from the first up to N, ExpCmdSN
//!   reaches N + 1 (non-immediate PDUs are consumed in CmdSN order, RFC 7143 §3.2.2.1).

use crate::checks::{enabled, Check};
use crate::input::{Reader, Writer};
use crate::scsi_cdb::{check_io, io_result, null_disk, read_buf};
use crate::wire::{be32, bhs, frame, put16, put32};
use curve_tgt::backing::{BlockIo, IoResult};
use curve_tgt::buf::BufPool;
use curve_tgt::config::snapshot::{Acl, AclAddr, ChapAccounts, ConfigSnapshot, TargetView};
use curve_tgt::config::target_params::TargetParams;
use curve_tgt::iscsi::digest;
use curve_tgt::iscsi::discovery::{TextCtx, TextReply};
use curve_tgt::iscsi::ids::{Cid, Isid, Itt, Tsih};
use curve_tgt::iscsi::login::SessionKind;
use curve_tgt::iscsi::pdu::{op, Bhs, RejectReason, BHS_LEN};
use curve_tgt::iscsi::rx::{next_pdu, RxStep};
use curve_tgt::iscsi::serial::{serial_le, serial_lt, CmdSn, StatSn};
use curve_tgt::iscsi::session::{Event, FfpParams, Kind, Session};
use curve_tgt::iscsi::task::TaskRef;
use curve_tgt::iscsi::tx::Payload;
use curve_tgt::scsi::{
    self, ExecCtx, LogicalUnit, Lun, NexusId, NexusState, Outcome, ScsiCommand, UnitAttention,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Most operations one input runs (a full 512-command window plus change).
pub const MAX_OPS: usize = 1200;
/// Largest Expected Data Transfer Length the harness sends. The target would allocate up to
/// 32 MiB per write before any budget exists (issue 11 item 6); the fuzzer's memory limit is
/// not where that is tested.
pub const MAX_EDTL: u32 = 1 << 20;

const TEMPLATE_RAW: u8 = 255;

/// CDB templates: (opcode, kind) with LBA/blocks filled from the input.
const TEMPLATES: &[(u8, CdbKind)] = &[
    (0x00, CdbKind::Six),     // TEST UNIT READY
    (0x28, CdbKind::Ten),     // READ(10)
    (0x2a, CdbKind::Ten),     // WRITE(10)
    (0x88, CdbKind::Sixteen), // READ(16)
    (0x8a, CdbKind::Sixteen), // WRITE(16)
    (0x12, CdbKind::Alloc6),  // INQUIRY
    (0xa0, CdbKind::Alloc12), // REPORT LUNS
    (0x1a, CdbKind::Alloc6),  // MODE SENSE(6)
    (0x35, CdbKind::Ten),     // SYNCHRONIZE CACHE(10)
    (0x42, CdbKind::Ten),     // UNMAP
    (0x93, CdbKind::Sixteen), // WRITE SAME(16)
    (0x89, CdbKind::Sixteen), // COMPARE AND WRITE
    (0x2e, CdbKind::Ten),     // WRITE AND VERIFY(10)
    (0x2f, CdbKind::Ten),     // VERIFY(10)
    (0x8b, CdbKind::Sixteen), // ORWRITE(16)
    (0x5e, CdbKind::Ten),     // PERSISTENT RESERVE IN
    (0x5f, CdbKind::Ten),     // PERSISTENT RESERVE OUT
    (0x16, CdbKind::Six),     // RESERVE(6)
    (0x17, CdbKind::Six),     // RELEASE(6)
    (0x25, CdbKind::Ten),     // READ CAPACITY(10)
    (0x9e, CdbKind::Sixteen), // SERVICE ACTION IN (READ CAPACITY 16)
    (0x03, CdbKind::Alloc6),  // REQUEST SENSE
    (0x15, CdbKind::Alloc6),  // MODE SELECT(6)
    (0x1b, CdbKind::Six),     // START STOP UNIT
    (0x1e, CdbKind::Six),     // PREVENT ALLOW MEDIUM REMOVAL
];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum CdbKind {
    Six,
    Ten,
    Sixteen,
    Alloc6,
    Alloc12,
}

/// A sequence number picked relative to the session's state, or raw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Sn {
    /// ExpCmdSN + n.
    Exp(u8),
    /// ExpCmdSN − 1 − n (already received).
    Behind(u8),
    /// The last advertised MaxCmdSN + n (n may be negative).
    Max(i8),
    Raw(u32),
}

impl Sn {
    fn decode(r: &mut Reader<'_>) -> Sn {
        match r.u8() % 4 {
            0 => Sn::Exp(r.u8()),
            1 => Sn::Behind(r.u8()),
            2 => Sn::Max(r.u8() as i8),
            _ => Sn::Raw(r.u32()),
        }
    }
    fn encode(self, w: &mut Writer) {
        match self {
            Sn::Exp(n) => w.u8(0).u8(n),
            Sn::Behind(n) => w.u8(1).u8(n),
            Sn::Max(n) => w.u8(2).u8(n as u8),
            Sn::Raw(v) => w.u8(3).u32(v),
        };
    }
}

/// A task tag: one of 32 small ones (so tags collide and repeat), or raw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tag {
    Small(u8),
    Raw(u32),
}

impl Tag {
    fn decode(r: &mut Reader<'_>) -> Tag {
        match r.u8() {
            v @ 0..=0xef => Tag::Small(v % 32),
            _ => Tag::Raw(r.u32()),
        }
    }
    fn encode(self, w: &mut Writer) {
        match self {
            Tag::Small(v) => w.u8(v % 32),
            Tag::Raw(v) => w.u8(0xff).u32(v),
        };
    }
    fn value(self) -> u32 {
        match self {
            Tag::Small(v) => 0x100 + u32::from(v),
            Tag::Raw(v) => v,
        }
    }
}

/// A field the harness computes from what the target asked for, or a raw value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    Auto,
    Raw(u32),
}

impl Pick {
    fn decode(r: &mut Reader<'_>) -> Pick {
        if r.u8() & 1 == 0 {
            Pick::Auto
        } else {
            Pick::Raw(r.u32())
        }
    }
    fn encode(self, w: &mut Writer) {
        match self {
            Pick::Auto => w.u8(0),
            Pick::Raw(v) => w.u8(1).u32(v),
        };
    }
    fn or(self, auto: u32) -> u32 {
        match self {
            Pick::Auto => auto,
            Pick::Raw(v) => v,
        }
    }
}

/// The negotiated parameters and starting sequence numbers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// bit 0 HeaderDigest, 1 DataDigest, 2 InitialR2T=No, 3 ImmediateData=No.
    pub flags: u8,
    /// Index choices for MaxRecvDSL (ours), MaxRecvDSL (theirs), FirstBurst, MaxBurst.
    pub recv: u8,
    pub xmit: u8,
    pub first_burst: u8,
    pub max_burst: u8,
    pub max_r2t: u8,
    pub queue: u8,
    pub cmd_sn: u32,
    pub stat_sn: u32,
}

const DSL: [u32; 4] = [8192, 512, 65536, 262_144];
const BURST: [u32; 4] = [65536, 512, 262_144, 1 << 20];
const QUEUE: [u32; 6] = [512, 1, 2, 8, 32, 128];

impl Settings {
    fn decode(r: &mut Reader<'_>) -> Settings {
        Settings {
            flags: r.u8(),
            recv: r.u8(),
            xmit: r.u8(),
            first_burst: r.u8(),
            max_burst: r.u8(),
            max_r2t: r.u8(),
            queue: r.u8(),
            cmd_sn: r.u32(),
            stat_sn: r.u32(),
        }
    }
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.flags)
            .u8(self.recv)
            .u8(self.xmit)
            .u8(self.first_burst)
            .u8(self.max_burst)
            .u8(self.max_r2t)
            .u8(self.queue)
            .u32(self.cmd_sn)
            .u32(self.stat_sn);
    }
    fn params(&self) -> FfpParams {
        let max_burst = BURST[usize::from(self.max_burst) % 4];
        FfpParams {
            header_digest: self.flags & 1 != 0,
            data_digest: self.flags & 2 != 0,
            max_recv_data: DSL[usize::from(self.recv) % 4],
            max_xmit_data: DSL[usize::from(self.xmit) % 4],
            initial_r2t: self.flags & 4 == 0,
            immediate_data: self.flags & 8 == 0,
            // The negotiation guarantees FirstBurstLength ≤ MaxBurstLength (§13.14).
            first_burst: BURST[usize::from(self.first_burst) % 4].min(max_burst),
            max_burst,
            max_outstanding_r2t: 1 + u32::from(self.max_r2t % 4),
            max_queue_cmd: QUEUE[usize::from(self.queue) % QUEUE.len()],
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            flags: 0,
            recv: 0,
            xmit: 0,
            first_burst: 0,
            max_burst: 0,
            max_r2t: 0,
            queue: 0,
            cmd_sn: 10,
            stat_sn: 100,
        }
    }
}

/// One step of the initiator (or of the shard's clock / backing store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// SCSI Command. `flags`: bit 0 R, 1 W, 2..4 task attribute, 5 F bit clear, 6 flip R/W
    /// from the template's natural direction. `template` indexes the CDB table (255: `raw`).
    Cmd {
        immediate: bool,
        flags: u8,
        itt: Tag,
        lun: u8,
        sn: Sn,
        template: u8,
        lba: u32,
        blocks: u16,
        raw: [u8; 16],
        edtl: Pick,
        imm_data: u16,
        ext_cdb: Vec<u8>,
    },
    /// SCSI Data-Out, by default answering the task's oldest open R2T (or its unsolicited
    /// burst) exactly.
    DataOut {
        itt: Tag,
        ttt: Pick,
        offset: Pick,
        len: Pick,
        data_sn: Pick,
        final_flip: bool,
    },
    /// NOP-Out; `itt: None` answers the target's last ping.
    Nop {
        immediate: bool,
        itt: Option<Tag>,
        sn: Sn,
        data_len: u16,
    },
    /// Task Management Function Request.
    Tmf {
        immediate: bool,
        function: u8,
        lun: u8,
        ref_itt: Tag,
        sn: Sn,
        ref_sn: Sn,
    },
    Logout {
        immediate: bool,
        reason: u8,
        cid: u16,
        sn: Sn,
    },
    /// Text Request; `flags` bit 0 F, bit 1 C; `ttt` Auto echoes the target's last TTT.
    Text {
        immediate: bool,
        flags: u8,
        ttt: Pick,
        sn: Sn,
        text: Vec<u8>,
    },
    /// Raw bytes appended to the receive stream as they are.
    Raw(Vec<u8>),
    /// A backing-store I/O completes (`sel` picks which; `result` how).
    Complete { sel: u8, result: u8 },
    /// The shard's timers: 0 NOP-In ping, 1 admin asks for logout.
    Tick(u8),
    /// A PDU not valid in the full-feature phase: 0 Login, 1 SNACK.
    OutOfPhase(u8),
    /// The next PDU with data gets a bad data digest (when data digests are on).
    CorruptNext,
}

impl Op {
    /// Decodes one op; `None` when the input is used up.
    pub fn decode(r: &mut Reader<'_>) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        let k = r.u8();
        Some(match k % 16 {
            0..=4 => {
                let immediate = r.bool();
                let flags = r.u8();
                let itt = Tag::decode(r);
                let lun = r.u8();
                let sn = Sn::decode(r);
                let template = r.u8();
                let mut raw = [0u8; 16];
                let (mut lba, mut blocks) = (0, 0);
                if template == TEMPLATE_RAW {
                    raw.iter_mut().for_each(|b| *b = r.u8());
                } else {
                    lba = r.u32();
                    blocks = r.u16();
                }
                let edtl = Pick::decode(r);
                let imm_data = r.u16();
                let ext_cdb = if flags & 0x80 != 0 {
                    r.bytes(64).to_vec()
                } else {
                    Vec::new()
                };
                Op::Cmd {
                    immediate,
                    flags,
                    itt,
                    lun,
                    sn,
                    template,
                    lba,
                    blocks,
                    raw,
                    edtl,
                    imm_data,
                    ext_cdb,
                }
            }
            5..=7 => Op::DataOut {
                itt: Tag::decode(r),
                ttt: Pick::decode(r),
                offset: Pick::decode(r),
                len: Pick::decode(r),
                data_sn: Pick::decode(r),
                final_flip: r.bool(),
            },
            8 => {
                let immediate = r.bool();
                let itt = if r.bool() { None } else { Some(Tag::decode(r)) };
                Op::Nop {
                    immediate,
                    itt,
                    sn: Sn::decode(r),
                    data_len: r.u16(),
                }
            }
            9 => Op::Tmf {
                immediate: r.bool(),
                function: r.u8(),
                lun: r.u8(),
                ref_itt: Tag::decode(r),
                sn: Sn::decode(r),
                ref_sn: Sn::decode(r),
            },
            10 => Op::Logout {
                immediate: r.bool(),
                reason: r.u8(),
                cid: r.u16(),
                sn: Sn::decode(r),
            },
            11 => Op::Text {
                immediate: r.bool(),
                flags: r.u8(),
                ttt: Pick::decode(r),
                sn: Sn::decode(r),
                text: r.bytes(2048).to_vec(),
            },
            12 => Op::Raw(r.bytes(1024).to_vec()),
            13 => Op::Complete {
                sel: r.u8(),
                result: r.u8(),
            },
            14 => Op::Tick(r.u8()),
            _ => {
                if k & 0x10 != 0 {
                    Op::CorruptNext
                } else {
                    Op::OutOfPhase(r.u8())
                }
            }
        })
    }

    /// Writes the op in [`Op::decode`]'s format.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::Cmd {
                immediate,
                flags,
                itt,
                lun,
                sn,
                template,
                lba,
                blocks,
                raw,
                edtl,
                imm_data,
                ext_cdb,
            } => {
                w.u8(0).bool(*immediate).u8(*flags);
                itt.encode(w);
                w.u8(*lun);
                sn.encode(w);
                w.u8(*template);
                if *template == TEMPLATE_RAW {
                    raw.iter().for_each(|b| {
                        w.u8(*b);
                    });
                } else {
                    w.u32(*lba).u16(*blocks);
                }
                edtl.encode(w);
                w.u16(*imm_data);
                if flags & 0x80 != 0 {
                    w.bytes(ext_cdb);
                }
            }
            Op::DataOut {
                itt,
                ttt,
                offset,
                len,
                data_sn,
                final_flip,
            } => {
                w.u8(5);
                itt.encode(w);
                ttt.encode(w);
                offset.encode(w);
                len.encode(w);
                data_sn.encode(w);
                w.bool(*final_flip);
            }
            Op::Nop {
                immediate,
                itt,
                sn,
                data_len,
            } => {
                w.u8(8).bool(*immediate).bool(itt.is_none());
                if let Some(t) = itt {
                    t.encode(w);
                }
                sn.encode(w);
                w.u16(*data_len);
            }
            Op::Tmf {
                immediate,
                function,
                lun,
                ref_itt,
                sn,
                ref_sn,
            } => {
                w.u8(9).bool(*immediate).u8(*function).u8(*lun);
                ref_itt.encode(w);
                sn.encode(w);
                ref_sn.encode(w);
            }
            Op::Logout {
                immediate,
                reason,
                cid,
                sn,
            } => {
                w.u8(10).bool(*immediate).u8(*reason).u16(*cid);
                sn.encode(w);
            }
            Op::Text {
                immediate,
                flags,
                ttt,
                sn,
                text,
            } => {
                w.u8(11).bool(*immediate).u8(*flags);
                ttt.encode(w);
                sn.encode(w);
                w.bytes(text);
            }
            Op::Raw(b) => {
                w.u8(12).bytes(b);
            }
            Op::Complete { sel, result } => {
                w.u8(13).u8(*sel).u8(*result);
            }
            Op::Tick(k) => {
                w.u8(14).u8(*k);
            }
            Op::OutOfPhase(k) => {
                w.u8(15).u8(*k);
            }
            Op::CorruptNext => {
                w.u8(15 | 0x10);
            }
        }
    }
}

/// An R2T as the initiator recorded it.
#[derive(Clone, Debug)]
struct R2tSeen {
    itt: u32,
    ttt: u32,
    offset: u32,
    len: u32,
    sent: u32,
    next_sn: u32,
}

/// What the initiator knows about one of its commands.
#[derive(Clone, Debug, Default)]
struct CmdSeen {
    unsol_offset: u32,
    unsol_sn: u32,
    unsol_end: u32,
}

/// A backing-store I/O the harness has not completed yet.
struct PendingIo {
    task: TaskRef,
    io: BlockIo,
    lu: Arc<LogicalUnit>,
}

/// The session, its LU, and the initiator's view of the exchange.
pub struct Harness {
    pub s: Session,
    cfg: ConfigSnapshot,
    pool: BufPool,
    pending: Vec<PendingIo>,
    /// Window as last advertised to the initiator.
    adv_exp: u32,
    adv_max: u32,
    /// Next StatSN the initiator expects.
    next_stat_sn: u32,
    r2ts: Vec<R2tSeen>,
    cmds: HashMap<u32, CmdSeen>,
    /// Non-immediate CmdSNs the initiator has used inside the window and the target took.
    taken: HashSet<u32>,
    first_cmd_sn: u32,
    last_ping_ttt: u32,
    last_text_ttt: u32,
    corrupt_next: bool,
    /// Evidence collected while draining: ITTs answered, R2T'd or rejected.
    touched: HashSet<u32>,
    /// The connection must end (logout, fatal framing, digest error).
    pub closed: bool,
    now: u64,
}

fn target_view(lu: Arc<LogicalUnit>) -> TargetView {
    let mut luns = BTreeMap::new();
    luns.insert(Lun(0), Arc::new(LogicalUnit::controller(1)));
    luns.insert(Lun(1), lu);
    TargetView {
        tid: 1,
        name: "iqn.2026-01.fuzz:disk".into(),
        ready: true,
        acl: Acl {
            addrs: vec![AclAddr::All],
            names: vec![],
        },
        chap: ChapAccounts::default(),
        params: TargetParams::default(),
        lun_list: vec![Lun(0), Lun(1)],
        luns,
        redirect: None,
    }
}

/// A one-target configuration: LUN 0 controller, LUN 1 a 1 TiB null disk.
pub fn config() -> ConfigSnapshot {
    let mut targets = BTreeMap::new();
    let disk = Arc::new(null_disk(1, Lun(1), 512));
    targets.insert(1, Arc::new(target_view(disk)));
    ConfigSnapshot {
        generation: 1,
        system_ready: true,
        targets,
        discovery_chap: ChapAccounts::default(),
    }
}

impl Harness {
    pub fn new(st: &Settings) -> Harness {
        thread_local! {
            /// One pool for every run, as a shard keeps one: buffers are recycled instead of
            /// allocated and zeroed per input (most of a run's time otherwise).
            static POOL: BufPool = BufPool::new();
        }
        let cfg = config();
        let pool = POOL.with(BufPool::clone);
        let mut nexus = NexusState::new(NexusId {
            tid: 1,
            initiator_port: Arc::from("iqn.2026-01.fuzz:host,i,0x400001370000"),
        });
        for l in [Lun(0), Lun(1)] {
            nexus.push_ua(l, UnitAttention::PowerOnReset);
        }
        let s = Session::new(
            Kind::Normal { tid: 1 },
            Tsih(1),
            Cid(0),
            Isid([0x40, 0, 1, 0x37, 0, 0]),
            "iqn.2026-01.fuzz:host".into(),
            st.params(),
            Some(nexus),
            CmdSn(st.cmd_sn),
            StatSn(st.stat_sn),
            pool.clone(),
        );
        let adv_exp = s.exp_cmd_sn().0;
        let adv_max = s.current_max_cmd_sn().0;
        Harness {
            s,
            cfg,
            pool,
            pending: Vec::new(),
            adv_exp,
            adv_max,
            next_stat_sn: st.stat_sn,
            r2ts: Vec::new(),
            cmds: HashMap::new(),
            taken: HashSet::new(),
            first_cmd_sn: adv_exp,
            last_ping_ttt: 0xffff_ffff,
            last_text_ttt: 0xffff_ffff,
            corrupt_next: false,
            touched: HashSet::new(),
            closed: false,
            now: 0,
        }
    }

    fn sn(&self, sn: Sn) -> u32 {
        let exp = self.s.exp_cmd_sn().0;
        match sn {
            Sn::Exp(n) => exp.wrapping_add(u32::from(n)),
            Sn::Behind(n) => exp.wrapping_sub(1).wrapping_sub(u32::from(n)),
            Sn::Max(n) => self.adv_max.wrapping_add(n as i32 as u32),
            Sn::Raw(v) => v,
        }
    }

    /// Whether a non-immediate PDU with `cmd_sn` is one the target must take: inside
    /// [ExpCmdSN, advertised MaxCmdSN] and not a CmdSN already used.
    fn must_take(&self, immediate: bool, cmd_sn: u32) -> bool {
        !immediate
            && serial_le(self.s.exp_cmd_sn().0, cmd_sn)
            && serial_le(cmd_sn, self.adv_max)
            && !self.taken.contains(&cmd_sn)
    }

    /// [`Harness::must_take`] for a NOP-Out, Text or TMF request: one ahead of a CmdSN gap
    /// only counts when [`Check::OrderAhead`] is on.
    fn must_take_other(&self, immediate: bool, cmd_sn: u32) -> bool {
        self.must_take(immediate, cmd_sn)
            && (cmd_sn == self.s.exp_cmd_sn().0 || enabled(Check::OrderAhead))
    }

    /// Sends one PDU through the receive path into the session, then lets the "shard" run.
    fn send(&mut self, h: [u8; BHS_LEN], ahs: &[u8], data: &[u8]) {
        let p = self.s.params;
        let mut bytes = frame(h, ahs, data, p.header_digest, p.data_digest);
        if self.corrupt_next && !data.is_empty() && p.data_digest {
            self.corrupt_next = false;
            let last = bytes.len() - 1;
            bytes[last] ^= 0x5a;
        }
        self.feed(&bytes);
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut at = 0;
        // Bounded: each PDU consumes at least 48 bytes.
        while at < bytes.len() && !self.closed {
            match next_pdu(&bytes[at..], self.s.rx_limits()) {
                RxStep::Incomplete { .. } => return,
                RxStep::Fatal { bhs, .. } => {
                    // The shard rejects what it can and closes.
                    if let Some(b) = bhs {
                        self.s.queue(
                            Bhs::reject(RejectReason::ProtocolError),
                            Payload::Owned(b.to_vec()),
                        );
                    }
                    self.closed = true;
                    self.service();
                    return;
                }
                RxStep::Pdu { pdu, len } => {
                    self.now += 1000;
                    let slice = &bytes[at..at + len];
                    self.s.on_pdu(&pdu, slice, self.now);
                    at += len;
                    self.service();
                }
            }
        }
    }

    /// What the shard does after input: run ready tasks, handle events, send.
    fn service(&mut self) {
        let bound = self.s.params.max_queue_cmd as usize + 64;
        assert!(
            self.s.task_count() <= bound,
            "{} tasks",
            self.s.task_count()
        );
        // Bounded: each ready task runs once.
        while let Some(r) = self.s.next_ready() {
            self.exec(r);
        }
        while let Some(ev) = self.s.events.pop_front() {
            self.event(ev);
        }
        if self.s.close.is_some() {
            self.closed = true;
        }
        self.drain();
    }

    fn exec(&mut self, r: TaskRef) {
        let cfg = self.cfg.clone();
        let t = cfg.targets.get(&1).expect("target 1");
        let Some((task, nexus)) = self.s.task_and_nexus(r) else {
            return;
        };
        let lu = t.luns.get(&task.lun).cloned();
        let cdb = task.cdb_bytes().into_owned();
        let data_out = task.data_out().to_vec();
        let out_len = if task.write {
            lu.as_ref()
                .and_then(|l| scsi::data_out_len(&cdb, l.block_size()))
        } else {
            None
        };
        let cmd = ScsiCommand {
            cdb: &cdb,
            data_out: &data_out,
            expected_len: task.expected_len,
            read: task.read,
            write: task.write,
            attr: task.attr,
        };
        let mut ctx = ExecCtx {
            tid: 1,
            lun: task.lun,
            lu: lu.as_deref(),
            luns: &t.lun_list,
            nexus,
        };
        match scsi::execute(&mut ctx, &cmd) {
            Outcome::Done(mut resp) => {
                crate::scsi_cdb::check_response(&resp);
                resp.effects.clear();
                self.s.finish(r, resp, out_len);
            }
            Outcome::Io(io) => {
                let lu = lu.expect("I/O only for an existing LU");
                check_io(&io, &lu, data_out.len());
                self.pending.push(PendingIo { task: r, io, lu });
            }
        }
    }

    fn complete(&mut self, sel: u8, result: u8) {
        if self.pending.is_empty() {
            return;
        }
        let p = self.pending.remove(usize::from(sel) % self.pending.len());
        let cfg = self.cfg.clone();
        let t = cfg.targets.get(&1).expect("target 1");
        let result = io_result(result, &p.io);
        let buf = match result {
            IoResult::Ok => read_buf(&self.pool, &p.io),
            _ => None,
        };
        let Some((task, nexus)) = self.s.task_and_nexus(p.task) else {
            return;
        };
        let cdb = task.cdb_bytes().into_owned();
        let data_out = task.data_out().to_vec();
        let out_len = if task.write {
            scsi::data_out_len(&cdb, p.lu.block_size())
        } else {
            None
        };
        let cmd = ScsiCommand {
            cdb: &cdb,
            data_out: &data_out,
            expected_len: task.expected_len,
            read: task.read,
            write: task.write,
            attr: task.attr,
        };
        let mut ctx = ExecCtx {
            tid: 1,
            lun: task.lun,
            lu: Some(&p.lu),
            luns: &t.lun_list,
            nexus,
        };
        let mut resp = scsi::complete(&mut ctx, &cmd, &p.io, result, buf);
        crate::scsi_cdb::check_response(&resp);
        resp.effects.clear();
        self.s.finish(p.task, resp, out_len);
        self.service();
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Text { req, data, bhs } => {
                let cfg = self.cfg.clone();
                let kind = SessionKind::Normal { tid: 1 };
                let name = self.s.initiator_name.clone();
                let ctx = TextCtx {
                    kind: &kind,
                    initiator_name: &name,
                    peer_ip: "127.0.0.2".parse().expect("ip"),
                    local: "127.0.0.1:3260".parse().expect("addr"),
                    tpgt: 1,
                    cfg: &cfg,
                    max_xmit: self.s.params.max_xmit_data,
                    max_recv: self.s.params.max_recv_data,
                };
                match self.s.text.on_text(&req, &data, &ctx) {
                    TextReply::Respond {
                        bhs,
                        data,
                        new_max_xmit,
                    } => {
                        if let Some(m) = new_max_xmit {
                            assert!((512..=16_777_215).contains(&m), "MaxRecvDSL {m}");
                            self.s.params.max_xmit_data = m;
                        }
                        self.s.send_text(bhs, data);
                    }
                    TextReply::Reject(reason) => {
                        self.s
                            .queue(Bhs::reject(reason), Payload::Owned(bhs.to_vec()));
                    }
                }
            }
            Event::LunReset { lun } => {
                if let Some(lu) = self.cfg.targets.get(&1).and_then(|t| t.luns.get(&lun)) {
                    lu.reset();
                }
                if let Some(n) = self.s.nexus.as_mut() {
                    n.push_ua(lun, UnitAttention::LunReset);
                }
            }
            Event::TargetReset { .. } => {
                if let Some(t) = self.cfg.targets.get(&1) {
                    t.luns.values().for_each(|lu| lu.reset());
                }
            }
            // A shard asks the engine to stop the operation; it still completes exactly
            // once, which this harness's out-of-order completions already model.
            Event::Cancel { .. } => {}
        }
    }

    /// Reads every queued PDU as the initiator would and checks it.
    fn drain(&mut self) {
        let p = self.s.params;
        while let Some(pdu) = self.s.out.pop_front() {
            let h = *pdu.bhs();
            let payload = pdu.payload.bytes();
            let opcode = h[0] & 0x3f;
            let dl = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
            assert_eq!(dl, payload.len(), "DataSegmentLength of opcode {opcode:#x}");
            assert!(
                payload.len() <= p.max_xmit_data as usize,
                "opcode {opcode:#x}: {} bytes over the initiator's MaxRecvDataSegmentLength {}",
                payload.len(),
                p.max_xmit_data
            );
            if p.header_digest {
                assert_eq!(usize::from(pdu.header_len), BHS_LEN + 4);
                let want = digest::to_wire(digest::crc32c(&h));
                assert_eq!(&pdu.header[BHS_LEN..], &want[..]);
            }
            assert_eq!(pdu.wire_len(), pdu.to_vec().len());
            let stat_sn = be32(&h, 24);
            let exp = be32(&h, 28);
            let max = be32(&h, 32);
            assert!(
                serial_le(self.adv_exp, exp),
                "ExpCmdSN went back from {} to {exp}",
                self.adv_exp
            );
            assert!(
                serial_le(exp.wrapping_sub(1), max),
                "MaxCmdSN {max} below ExpCmdSN {exp} - 1"
            );
            if enabled(Check::Window) {
                assert!(
                    serial_le(self.adv_max, max),
                    "MaxCmdSN went back from {} to {max} (ExpCmdSN {exp})",
                    self.adv_max
                );
            }
            self.adv_exp = exp;
            if serial_lt(self.adv_max, max) || !enabled(Check::Window) {
                self.adv_max = max;
            }
            if Bhs(h).consumes_stat_sn() {
                assert_eq!(stat_sn, self.next_stat_sn, "StatSN of opcode {opcode:#x}");
                self.next_stat_sn = self.next_stat_sn.wrapping_add(1);
            }
            let itt = be32(&h, 16);
            match opcode {
                op::SCSI_RSP => {
                    self.touched.insert(itt);
                    self.forget(itt);
                }
                op::DATA_IN => {
                    self.touched.insert(itt);
                    if h[1] & 0x01 != 0 {
                        self.forget(itt);
                    }
                }
                op::R2T => {
                    self.touched.insert(itt);
                    let len = be32(&h, 44);
                    assert!(len > 0, "empty R2T");
                    assert!(
                        len <= p.max_burst.max(512),
                        "R2T of {len} over MaxBurstLength"
                    );
                    self.r2ts.push(R2tSeen {
                        itt,
                        ttt: be32(&h, 20),
                        offset: be32(&h, 40),
                        len,
                        sent: 0,
                        next_sn: 0,
                    });
                }
                op::REJECT => {
                    assert_eq!(payload.len(), BHS_LEN, "a Reject carries the header");
                    let ritt = be32(payload, 16);
                    self.touched.insert(ritt);
                }
                op::NOP_IN if itt == 0xffff_ffff => self.last_ping_ttt = be32(&h, 20),
                op::TEXT_RSP => self.last_text_ttt = be32(&h, 20),
                op::LOGOUT_RSP | op::TASK_MGMT_RSP | op::NOP_IN | op::ASYNC => {}
                other => panic!("target sent opcode {other:#x}"),
            }
        }
    }

    fn forget(&mut self, itt: u32) {
        self.cmds.remove(&itt);
        self.r2ts.retain(|r| r.itt != itt);
    }

    /// Records a non-immediate command's CmdSN as used when the target took it. A command
    /// rejected on arrival (Task in progress, immediate-data rules, no task slot) uses its
    /// CmdSN too (`Session::use_cmd_sn`: the Reject is its delivery).
    fn took(&mut self, must: bool, cmd_sn: u32, _itt: u32) {
        if must {
            self.taken.insert(cmd_sn);
        }
    }

    /// Records the CmdSN of a non-immediate NOP-Out, Text, task management or Logout
    /// request inside the window: the target takes its CmdSN before it looks at the rest,
    /// so even one it then rejects (a Text the text handler refuses) has used it.
    fn took_other(&mut self, must: bool, cmd_sn: u32) {
        if must {
            self.taken.insert(cmd_sn);
        }
    }

    pub fn apply(&mut self, op: &Op) {
        if self.closed {
            return;
        }
        self.touched.clear();
        match op {
            Op::Cmd { .. } => self.cmd(op),
            Op::DataOut {
                itt,
                ttt,
                offset,
                len,
                data_sn,
                final_flip,
            } => {
                let itt = itt.value();
                let p = self.s.params;
                let open = self
                    .r2ts
                    .iter()
                    .position(|r| r.itt == itt && r.sent < r.len);
                let (a_ttt, a_off, a_len, a_sn, a_fin) = match open {
                    Some(i) if *ttt != Pick::Raw(0xffff_ffff) => {
                        let r = &self.r2ts[i];
                        let n = (r.len - r.sent).min(p.max_recv_data);
                        (r.ttt, r.offset + r.sent, n, r.next_sn, r.sent + n == r.len)
                    }
                    _ => {
                        let c = self.cmds.get(&itt).cloned().unwrap_or_default();
                        let n = c
                            .unsol_end
                            .saturating_sub(c.unsol_offset)
                            .min(p.max_recv_data);
                        (
                            0xffff_ffff,
                            c.unsol_offset,
                            n,
                            c.unsol_sn,
                            c.unsol_offset + n >= c.unsol_end,
                        )
                    }
                };
                let (t, o) = (ttt.or(a_ttt), offset.or(a_off));
                let n = len.or(a_len) % (p.max_recv_data + 1);
                let sn = data_sn.or(a_sn);
                let fin = a_fin ^ final_flip;
                if let Some(r) = self
                    .r2ts
                    .iter_mut()
                    .find(|r| r.itt == itt && r.ttt == t && r.offset + r.sent == o)
                {
                    r.sent += n;
                    r.next_sn = r.next_sn.wrapping_add(1);
                } else if t == 0xffff_ffff {
                    if let Some(c) = self.cmds.get_mut(&itt) {
                        if c.unsol_offset == o {
                            c.unsol_offset += n;
                            c.unsol_sn = c.unsol_sn.wrapping_add(1);
                        }
                    }
                }
                let mut h = bhs(op::DATA_OUT, false, if fin { 0x80 } else { 0 });
                h[8..16].copy_from_slice(&Lun(1).to_wire());
                put32(&mut h, 16, itt);
                put32(&mut h, 20, t);
                put32(&mut h, 28, self.next_stat_sn);
                put32(&mut h, 36, sn);
                put32(&mut h, 40, o);
                let data = pattern(n as usize, o);
                self.send(h, &[], &data);
            }
            Op::Nop {
                immediate,
                itt,
                sn,
                data_len,
            } => {
                let cmd_sn = self.sn(*sn);
                let (itt, ttt) = match itt {
                    None => (0xffff_ffff, self.last_ping_ttt),
                    Some(t) => (t.value(), 0xffff_ffff),
                };
                let must = itt != 0xffff_ffff && self.must_take_other(*immediate, cmd_sn);
                let mut h = bhs(op::NOP_OUT, *immediate, 0x80);
                put32(&mut h, 16, itt);
                put32(&mut h, 20, ttt);
                put32(&mut h, 24, cmd_sn);
                put32(&mut h, 28, self.next_stat_sn);
                let n = usize::from(*data_len) % (self.s.params.max_recv_data as usize + 1);
                let data = pattern(n.min(4096), 0);
                self.send(h, &[], &data);
                self.took_other(must, cmd_sn);
            }
            Op::Tmf {
                immediate,
                function,
                lun,
                ref_itt,
                sn,
                ref_sn,
            } => {
                let cmd_sn = self.sn(*sn);
                let must = self.must_take_other(*immediate, cmd_sn);
                let itt = 0x8000_0000 | u32::from(*function);
                let mut h = bhs(op::TASK_MGMT, *immediate, 0x80 | (function % 10));
                h[8..16].copy_from_slice(&lun_of(*lun).to_wire());
                put32(&mut h, 16, itt);
                put32(&mut h, 20, ref_itt.value());
                put32(&mut h, 24, cmd_sn);
                put32(&mut h, 28, self.next_stat_sn);
                put32(&mut h, 32, self.sn(*ref_sn));
                self.send(h, &[], &[]);
                self.took_other(must, cmd_sn);
            }
            Op::Logout {
                immediate,
                reason,
                cid,
                sn,
            } => {
                let cmd_sn = self.sn(*sn);
                // A Logout that does not end the session (CID not found, recovery not
                // supported) still uses its CmdSN: record it like any other request.
                let must = self.must_take_other(*immediate, cmd_sn);
                let itt = 0x9000_0000;
                let mut h = bhs(op::LOGOUT, *immediate, 0x80 | (reason % 4));
                put32(&mut h, 16, itt);
                put16(&mut h, 20, cid % 3);
                put32(&mut h, 24, cmd_sn);
                put32(&mut h, 28, self.next_stat_sn);
                self.send(h, &[], &[]);
                self.took_other(must, cmd_sn);
            }
            Op::Text {
                immediate,
                flags,
                ttt,
                sn,
                text,
            } => {
                let cmd_sn = self.sn(*sn);
                let must = self.must_take_other(*immediate, cmd_sn);
                let f = (if flags & 1 != 0 { 0x80 } else { 0 })
                    | (if flags & 2 != 0 { 0x40 } else { 0 });
                let itt = 0xa000_0000 | u32::from(flags >> 4);
                let mut h = bhs(op::TEXT, *immediate, f);
                put32(&mut h, 16, itt);
                put32(&mut h, 20, ttt.or(self.last_text_ttt));
                put32(&mut h, 24, cmd_sn);
                put32(&mut h, 28, self.next_stat_sn);
                let n = text.len().min(self.s.params.max_recv_data as usize);
                self.send(h, &[], &text[..n]);
                self.took_other(must, cmd_sn);
            }
            Op::Raw(b) => {
                let b = b.clone();
                self.feed(&b);
            }
            Op::Complete { sel, result } => self.complete(*sel, *result),
            Op::Tick(k) => {
                if k & 1 == 0 {
                    let _ = self.s.nop_tick(1, u32::from(k >> 1) % 4);
                } else {
                    self.s.request_logout();
                }
                self.service();
            }
            Op::OutOfPhase(k) => {
                let opcode = if k & 1 == 0 { op::LOGIN } else { op::SNACK };
                let mut h = bhs(opcode, true, 0x80 | 0x04 | 0x03);
                put32(&mut h, 16, 0xb000_0000);
                put32(&mut h, 24, self.s.exp_cmd_sn().0);
                self.send(h, &[], &[]);
            }
            Op::CorruptNext => self.corrupt_next = true,
        }
    }

    fn cmd(&mut self, op: &Op) {
        let Op::Cmd {
            immediate,
            flags,
            itt,
            lun,
            sn,
            template,
            lba,
            blocks,
            raw,
            edtl,
            imm_data,
            ext_cdb,
        } = op
        else {
            return;
        };
        let p = self.s.params;
        let (cdb, natural_write, natural_len) = build_cdb(*template, *lba, *blocks, raw);
        let mut write = natural_write;
        if flags & 0x40 != 0 {
            write = !write;
        }
        let read = !write || flags & 1 != 0;
        let edtl = edtl.or(natural_len) % (MAX_EDTL + 1);
        let cmd_sn = self.sn(*sn);
        let itt = itt.value();
        // Fresh: the target holds no live task with this ITT (else it answers Task in
        // progress). Asked of the session, not of `cmds`: a task aborted by task management
        // ends without a response, so the initiator's record of it can outlive it.
        let had_task = self.s.has_task(Itt(itt));
        // In the window and fresh: the target uses this CmdSN up whatever it makes of the
        // command, a Reject for a live task's ITT included (`Session::use_cmd_sn`).
        let in_window = self.must_take(*immediate, cmd_sn);
        let must = !had_task && in_window;
        let imm_len = if write && p.immediate_data {
            (u32::from(*imm_data) % (p.first_burst + 1))
                .min(edtl)
                .min(p.max_recv_data)
        } else if *imm_data == 0xffff {
            // A protocol error: immediate data where none is allowed.
            16.min(p.max_recv_data)
        } else {
            0
        };
        let unsol_end = if !write {
            0
        } else if p.initial_r2t {
            imm_len
        } else {
            p.first_burst.min(edtl).max(imm_len)
        };
        let mut f = if flags & 0x20 != 0 { 0 } else { 0x80 };
        if read {
            f |= 0x40;
        }
        if write {
            f |= 0x20;
        }
        f |= (flags >> 2) & 0x07;
        let mut h = bhs(op::SCSI_CMD, *immediate, f);
        h[8..16].copy_from_slice(&lun_of(*lun).to_wire());
        put32(&mut h, 16, itt);
        put32(&mut h, 20, edtl);
        put32(&mut h, 24, cmd_sn);
        put32(&mut h, 28, self.next_stat_sn);
        h[32..48].copy_from_slice(&cdb);
        let ahs = ext_cdb_ahs(ext_cdb);
        let data = pattern(imm_len as usize, 0);
        // Evidence that the target took the command: an answer naming its ITT (R2T, Data-In,
        // response, Reject), or a live task with its ITT that was not there before. Not the
        // task count: the command can release held tasks that finish at once, so the count
        // may stay level while the new task waits for its I/O. A command reusing a live
        // task's ITT leaves that task's record alone.
        if !had_task {
            self.cmds.insert(
                itt,
                CmdSeen {
                    unsol_offset: imm_len,
                    unsol_sn: 0,
                    unsol_end,
                },
            );
        }
        self.send(h, &ahs, &data);
        let evidence = self.touched.contains(&itt) || (!had_task && self.s.has_task(Itt(itt)));
        if must && !self.closed && enabled(Check::Window) {
            assert!(
                evidence,
                "command ITT {itt:#x} CmdSN {cmd_sn} inside the window [{}, {}] was dropped",
                self.s.exp_cmd_sn().0,
                self.adv_max
            );
        }
        if !evidence && !had_task {
            self.cmds.remove(&itt);
        }
        self.took((must && evidence) || (in_window && had_task), cmd_sn, itt);
    }

    /// End of input: let every I/O complete, then check that the CmdSN stream was consumed
    /// in order.
    pub fn finish(&mut self) {
        // Bounded: each round removes one pending I/O.
        while !self.pending.is_empty() && !self.closed {
            self.complete(0, 7);
        }
        if self.closed || !enabled(Check::Order) {
            return;
        }
        let mut x = self.first_cmd_sn;
        let mut n = 0;
        while self.taken.contains(&x) && n < 1 << 16 {
            x = x.wrapping_add(1);
            n += 1;
        }
        assert!(
            serial_le(x, self.s.exp_cmd_sn().0),
            "every CmdSN from {} to {} was sent, but ExpCmdSN is {}",
            self.first_cmd_sn,
            x.wrapping_sub(1),
            self.s.exp_cmd_sn().0
        );
    }
}

fn lun_of(sel: u8) -> Lun {
    match sel % 4 {
        0 => Lun(0),
        1 => Lun(7),
        _ => Lun(1),
    }
}

/// Data bytes that say where they belong (offset-stamped), so misplaced data is visible.
fn pattern(n: usize, offset: u32) -> Vec<u8> {
    (0..n)
        .map(|i| (offset as usize + i).wrapping_mul(31) as u8)
        .collect()
}

/// The extended-CDB AHS (RFC 7143 §11.3.4: type 1, length = CDB bytes + 1 reserved byte).
fn ext_cdb_ahs(ext: &[u8]) -> Vec<u8> {
    if ext.is_empty() {
        return Vec::new();
    }
    let mut v = Vec::with_capacity(4 + ext.len());
    v.extend_from_slice(&((ext.len() + 1) as u16).to_be_bytes());
    v.push(1);
    v.push(0);
    v.extend_from_slice(ext);
    v
}

/// The 16 CDB bytes, whether the command naturally writes, and its natural transfer length.
fn build_cdb(template: u8, lba: u32, blocks: u16, raw: &[u8; 16]) -> ([u8; 16], bool, u32) {
    let mut c = [0u8; 16];
    let Some(&(opcode, kind)) = TEMPLATES.get(usize::from(template) % (TEMPLATES.len() + 1)) else {
        return (*raw, raw[0] & 0x02 != 0, 0);
    };
    if template == TEMPLATE_RAW {
        return (*raw, raw[0] & 0x02 != 0, 0);
    }
    c[0] = opcode;
    // Keep LBAs mostly near the start or the end of the 1 TiB LU.
    let lba64 = if lba & 0x8000_0000 != 0 {
        (1u64 << 31) - u64::from(lba & 0xffff)
    } else {
        u64::from(lba)
    };
    let writes = matches!(
        opcode,
        0x2a | 0x8a | 0x42 | 0x93 | 0x89 | 0x2e | 0x8b | 0x5f | 0x15
    );
    // At most 2 MiB per command: large transfers only cost time here (a raw CDB still can).
    let blocks = blocks % 4097;
    let mut len = u32::from(blocks) * 512;
    match kind {
        CdbKind::Six => {
            c[4] = blocks as u8;
            len = 0;
        }
        CdbKind::Alloc6 => {
            c[4] = blocks as u8;
            len = u32::from(blocks as u8);
        }
        CdbKind::Alloc12 => {
            c[6..10].copy_from_slice(&u32::from(blocks).to_be_bytes());
            len = u32::from(blocks);
        }
        CdbKind::Ten => {
            c[2..6].copy_from_slice(&(lba64 as u32).to_be_bytes());
            c[7..9].copy_from_slice(&blocks.to_be_bytes());
            if matches!(opcode, 0x42 | 0x5e | 0x5f) {
                // UNMAP / PR IN / PR OUT: a parameter list length, not blocks.
                c[2..6].fill(0);
                c[1] = (lba as u8) & 0x1f;
                c[2] = (lba >> 8) as u8 & 0x0f;
                len = u32::from(blocks);
            }
        }
        CdbKind::Sixteen => {
            c[2..10].copy_from_slice(&lba64.to_be_bytes());
            c[10..14].copy_from_slice(&u32::from(blocks).to_be_bytes());
            if opcode == 0x89 {
                c[13] = blocks as u8;
                len = 2 * u32::from(blocks as u8) * 512;
            }
            if opcode == 0x93 {
                len = 512;
            }
            if opcode == 0x9e {
                c[1] = 0x10;
                len = u32::from(blocks);
            }
        }
    }
    if opcode == 0x1a || opcode == 0x12 {
        c[2] = (lba >> 8) as u8;
        c[1] = lba as u8 & 0x01;
    }
    (c, writes, len)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let st = Settings::decode(&mut r);
    let mut h = Harness::new(&st);
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        h.apply(&op);
        if h.closed {
            break;
        }
    }
    h.finish();
}

/// The bytes of an input made of `st` and `ops` (for the seed corpus and tests).
pub fn encode(st: &Settings, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    st.encode(&mut w);
    for op in ops {
        op.encode(&mut w);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints the settings and operations of the input named by FUZZ_INPUT (for triage):
    /// `FUZZ_INPUT=path cargo test --lib show_session_input -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn show_session_input() {
        let data = std::fs::read(std::env::var("FUZZ_INPUT").unwrap()).unwrap();
        let mut r = Reader::new(&data);
        println!(
            "{:?} {:?}",
            Settings::decode(&mut r),
            Settings::decode(&mut Reader::new(&data)).params()
        );
        let mut h = Harness::new(&Settings::decode(&mut Reader::new(&data)));
        while let Some(op) = Op::decode(&mut r) {
            println!("{op:?}");
            h.apply(&op);
            let mut taken: Vec<_> = h.taken.iter().copied().collect();
            taken.sort();
            println!(
                "    -> exp {} tasks {} pending {} taken {taken:?} closed {}",
                h.s.exp_cmd_sn().0,
                h.s.task_count(),
                h.pending.len(),
                h.closed
            );
        }
        run(&data);
    }
}
