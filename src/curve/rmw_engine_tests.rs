//! [`RmwEngine`] against a model: a fake inner engine that keeps a volume in memory, refuses
//! any I/O that is not whole 4096-byte blocks, applies each operation only when the test
//! chooses to complete it (in any order), and checks that no two writes of the same block
//! are ever in flight together. The outcome of a run of concurrent, overlapping, unaligned
//! operations must equal applying them one by one in arrival order.

use super::*;
use proptest::prelude::*;

const P: u64 = 4096;
const SECTORS: u64 = 40; // five physical blocks
const VOL: usize = (SECTORS * 512) as usize;

/// The fake inner engine.
struct Mem {
    vol: Vec<u8>,
    inflight: Vec<(OpId, OpRequest)>,
    unaligned: usize,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            vol: (0..VOL).map(|i| (i % 251) as u8).collect(),
            inflight: Vec::new(),
            unaligned: 0,
        }
    }

    /// Applies and completes in-flight operation `i`.
    fn complete(&mut self, i: usize, r: &mut dyn Reactor) {
        let (op, req) = self.inflight.remove(i);
        let d = req.data.as_ref().map(|d| d.as_slice().to_vec());
        let sub = |range: &Range<usize>| &d.as_ref().unwrap()[range.clone()];
        let mut data = None;
        let result = match &req.io {
            BlockIo::Read { offset, len } => {
                let at = *offset as usize;
                data = Some(r.pool().from_slice(&self.vol[at..at + *len as usize]));
                IoResult::Ok
            }
            BlockIo::Write {
                offset, data: dr, ..
            } => {
                let at = *offset as usize;
                self.vol[at..at + dr.len()].copy_from_slice(sub(dr));
                IoResult::Ok
            }
            BlockIo::WriteSame {
                offset, len, block, ..
            } => {
                let pat = sub(block).to_vec();
                for i in 0..*len as usize {
                    self.vol[*offset as usize + i] = pat[i % pat.len()];
                }
                IoResult::Ok
            }
            BlockIo::CompareAndWrite {
                offset,
                len,
                verify,
                write,
            } => {
                let at = *offset as usize;
                match compare_bytes(sub(verify), &self.vol[at..at + *len as usize]) {
                    IoResult::Ok => {
                        self.vol[at..at + *len as usize].copy_from_slice(sub(write));
                        IoResult::Ok
                    }
                    m => m,
                }
            }
            BlockIo::OrWrite {
                offset,
                len,
                data: dr,
                ..
            } => {
                let at = *offset as usize;
                for (a, b) in self.vol[at..at + *len as usize].iter_mut().zip(sub(dr)) {
                    *a |= *b;
                }
                IoResult::Ok
            }
            BlockIo::Verify {
                offset,
                len,
                compare,
            } => {
                let at = *offset as usize;
                match compare {
                    Some(c) => compare_bytes(sub(c), &self.vol[at..at + *len as usize]),
                    None => IoResult::Ok,
                }
            }
            _ => IoResult::Ok,
        };
        r.complete(Completion { op, result, data });
    }
}

fn is_write(io: &BlockIo) -> bool {
    writes(io)
}

impl Engine for Mem {
    fn start(&mut self, op: OpId, req: OpRequest, r: &mut dyn Reactor) {
        if let Some((off, len)) = extent(&req.io) {
            if !aligned(off, len, P) {
                self.unaligned += 1;
                return r.complete(Completion {
                    op,
                    result: IoResult::Err(io::Error::other("unaligned")),
                    data: None,
                });
            }
            if is_write(&req.io) {
                let mine = off..off + len;
                for (_, other) in &self.inflight {
                    if let (true, Some((o, l))) = (is_write(&other.io), extent(&other.io)) {
                        assert!(
                            o + l <= mine.start || mine.end <= o,
                            "two writes of one block in flight: {:?} and {:?}",
                            other.io,
                            req.io
                        );
                    }
                }
            }
        }
        self.inflight.push((op, req));
    }
    /// The test's hook: `tag` picks an in-flight operation to complete.
    fn on_timer(&mut self, tag: u64, r: &mut dyn Reactor) {
        if !self.inflight.is_empty() {
            let i = tag as usize % self.inflight.len();
            self.complete(i, r);
        }
    }
    fn on_cqe(&mut self, _: u64, _: i32, _: u32, _: &mut dyn Reactor) {}
    fn cancel(&mut self, op: OpId, r: &mut dyn Reactor) {
        if let Some(i) = self.inflight.iter().position(|(o, _)| *o == op) {
            let (op, _) = self.inflight.remove(i);
            r.complete(Completion {
                op,
                result: IoResult::Cancelled,
                data: None,
            });
        }
    }
    fn in_flight(&self) -> usize {
        self.inflight.len()
    }
}

/// The shard as far as the engines see it: a pool and a list of completions.
struct Shard {
    pool: BufPool,
    done: Vec<Completion>,
}

impl Reactor for Shard {
    fn now(&self) -> u64 {
        0
    }
    fn pool(&self) -> &BufPool {
        &self.pool
    }
    unsafe fn submit(&mut self, _: squeue::Entry, _: u64) -> RingToken {
        unreachable!("the fake engine submits nothing")
    }
    fn cancel(&mut self, _: RingToken) {}
    fn connect(
        &mut self,
        _: std::os::fd::RawFd,
        _: socket2::SockAddr,
        _: u64,
        _: u64,
    ) -> RingToken {
        unreachable!("the fake engine connects nothing")
    }
    fn timer(&mut self, _: u64, _: u64) -> TimerId {
        TimerId(0)
    }
    fn cancel_timer(&mut self, _: TimerId) -> bool {
        false
    }
    fn complete(&mut self, c: Completion) {
        self.done.push(c);
    }
}

fn setup() -> (RmwEngine<Mem>, Shard) {
    (
        RmwEngine::new(Mem::new(), P as u32),
        Shard {
            pool: BufPool::new(),
            done: Vec::new(),
        },
    )
}

fn id(n: u32) -> OpId {
    OpId {
        index: n,
        generation: 7,
    }
}

fn req(pool: &BufPool, io: BlockIo, data: &[u8]) -> OpRequest {
    OpRequest {
        io,
        data: (!data.is_empty()).then(|| pool.from_slice(data)),
    }
}

fn write(off: u64, len: usize) -> BlockIo {
    BlockIo::Write {
        offset: off,
        data: 0..len,
        fua: false,
    }
}

/// Completes inner operations until none is left (bounded).
fn settle(e: &mut RmwEngine<Mem>, s: &mut Shard) {
    for _ in 0..10_000 {
        if e.inner().inflight.is_empty() {
            return;
        }
        e.on_timer(0, s);
    }
    panic!("inner operations never settled");
}

fn take(s: &mut Shard, n: u32) -> Completion {
    let at = s
        .done
        .iter()
        .position(|c| c.op == id(n))
        .unwrap_or_else(|| panic!("op {n} not completed"));
    s.done.remove(at)
}

#[test]
fn unaligned_read_returns_the_slice_of_the_covering_blocks() {
    let (mut e, mut s) = setup();
    let want = e.inner().vol[4096 - 512..4096 + 1024].to_vec();
    e.start(
        id(1),
        OpRequest {
            io: BlockIo::Read {
                offset: 4096 - 512,
                len: 1536,
            },
            data: None,
        },
        &mut s,
    );
    settle(&mut e, &mut s);
    let c = take(&mut s, 1);
    assert!(matches!(c.result, IoResult::Ok));
    assert_eq!(c.data.unwrap().as_slice(), &want[..]);
    assert_eq!(e.inner().unaligned, 0);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn unaligned_write_patches_the_edges_and_keeps_their_other_bytes() {
    let (mut e, mut s) = setup();
    let mut model = e.inner().vol.clone();
    let data: Vec<u8> = (0..4096 + 1024).map(|i| (i * 7 % 256) as u8).collect();
    let off = 4096 - 512;
    e.start(id(1), req(&s.pool, write(off, data.len()), &data), &mut s);
    settle(&mut e, &mut s);
    assert!(matches!(take(&mut s, 1).result, IoResult::Ok));
    model[off as usize..off as usize + data.len()].copy_from_slice(&data);
    assert_eq!(e.inner().vol, model);
    assert_eq!(e.inner().unaligned, 0);
}

#[test]
fn an_aligned_write_waits_for_an_overlapping_rmw_in_progress() {
    let (mut e, mut s) = setup();
    let small = vec![0xaa; 512];
    let big = vec![0x55; 4096];
    e.start(id(1), req(&s.pool, write(512, 512), &small), &mut s);
    assert_eq!(e.inner().inflight.len(), 1, "the RMW's read");
    e.start(id(2), req(&s.pool, write(0, 4096), &big), &mut s);
    assert_eq!(
        e.inner().inflight.len(),
        1,
        "the aligned write must not start under the RMW"
    );
    settle(&mut e, &mut s);
    assert!(matches!(take(&mut s, 1).result, IoResult::Ok));
    assert!(matches!(take(&mut s, 2).result, IoResult::Ok));
    assert!(
        e.inner().vol[..4096].iter().all(|b| *b == 0x55),
        "arrival order: the aligned write came last"
    );
}

#[test]
fn cancel_while_waiting_or_reading_writes_nothing_and_frees_the_range() {
    let (mut e, mut s) = setup();
    let before = e.inner().vol.clone();
    e.start(id(1), req(&s.pool, write(512, 512), &[1; 512]), &mut s);
    e.start(id(2), req(&s.pool, write(1024, 512), &[2; 512]), &mut s);
    e.start(id(3), req(&s.pool, write(8192, 4096), &[3; 4096]), &mut s);
    e.cancel(id(2), &mut s);
    assert!(matches!(take(&mut s, 2).result, IoResult::Cancelled));
    e.cancel(id(1), &mut s);
    assert!(matches!(take(&mut s, 1).result, IoResult::Cancelled));
    settle(&mut e, &mut s);
    assert!(matches!(take(&mut s, 3).result, IoResult::Ok));
    assert_eq!(
        e.inner().vol[..8192],
        before[..8192],
        "nothing of 1 or 2 written"
    );
    assert_eq!(e.in_flight(), 0);
    // Block 0 is free again.
    e.start(id(4), req(&s.pool, write(0, 512), &[4; 512]), &mut s);
    settle(&mut e, &mut s);
    assert!(matches!(take(&mut s, 4).result, IoResult::Ok));
    assert_eq!(e.inner().vol[..512], [4; 512]);
}

#[test]
fn compare_and_write_and_verify_report_offsets_from_the_command() {
    let (mut e, mut s) = setup();
    let off = 4096 + 1024;
    let cur = e.inner().vol[off..off + 512].to_vec();
    let mut bad = cur.clone();
    bad[100] ^= 1;
    let caw = |verify: Range<usize>, write: Range<usize>| BlockIo::CompareAndWrite {
        offset: off as u64,
        len: 512,
        verify,
        write,
    };
    let mut d = bad.clone();
    d.extend_from_slice(&[9; 512]);
    e.start(id(1), req(&s.pool, caw(0..512, 512..1024), &d), &mut s);
    settle(&mut e, &mut s);
    assert!(matches!(
        take(&mut s, 1).result,
        IoResult::Miscompare { offset: 100 }
    ));
    let mut d = cur.clone();
    d.extend_from_slice(&[9; 512]);
    e.start(id(2), req(&s.pool, caw(0..512, 512..1024), &d), &mut s);
    settle(&mut e, &mut s);
    assert!(matches!(take(&mut s, 2).result, IoResult::Ok));
    assert_eq!(e.inner().vol[off..off + 512], [9; 512]);
    let mut v = vec![9u8; 1024];
    v[700] = 0;
    let io = BlockIo::Verify {
        offset: off as u64,
        len: 1024,
        compare: Some(0..1024),
    };
    e.start(id(3), req(&s.pool, io, &v), &mut s);
    settle(&mut e, &mut s);
    let first = e.inner().vol[off..off + 1024]
        .iter()
        .zip(&v)
        .position(|(a, b)| a != b)
        .unwrap() as u64;
    assert!(first >= 512, "the first 512 bytes are the CAW's");
    assert!(matches!(
        take(&mut s, 3).result,
        IoResult::Miscompare { offset } if offset == first
    ));
    assert_eq!(e.inner().unaligned, 0);
}

/// One generated operation.
#[derive(Clone, Debug)]
enum Gen {
    Write {
        sector: u64,
        n: u64,
        seed: u8,
    },
    Same {
        sector: u64,
        n: u64,
        seed: u8,
    },
    Or {
        sector: u64,
        n: u64,
        seed: u8,
    },
    /// COMPARE AND WRITE whose compare matches the serial state when `matching`.
    Caw {
        sector: u64,
        matching: bool,
        seed: u8,
    },
}

fn gen_op() -> impl Strategy<Value = Gen> {
    let sn = (0..SECTORS).prop_flat_map(|s| (Just(s), 1..=(SECTORS - s).min(20)));
    prop_oneof![
        4 => (sn.clone(), any::<u8>()).prop_map(|((sector, n), seed)| Gen::Write { sector, n, seed }),
        1 => (sn.clone(), any::<u8>()).prop_map(|((sector, n), seed)| Gen::Same { sector, n, seed }),
        1 => (sn, any::<u8>()).prop_map(|((sector, n), seed)| Gen::Or { sector, n, seed }),
        1 => (0..SECTORS, any::<bool>(), any::<u8>())
            .prop_map(|(sector, matching, seed)| Gen::Caw { sector, matching, seed }),
    ]
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Builds the request; a CAW's compare data is the model's state in arrival order.
fn build(g: &Gen, model: &[u8], pool: &BufPool) -> OpRequest {
    match *g {
        Gen::Write { sector, n, seed } => {
            let d = bytes((n * 512) as usize, seed);
            req(pool, write(sector * 512, d.len()), &d)
        }
        Gen::Same { sector, n, seed } => req(
            pool,
            BlockIo::WriteSame {
                offset: sector * 512,
                len: n * 512,
                block: 0..512,
                unmap: false,
                block_size: 512,
            },
            &bytes(512, seed),
        ),
        Gen::Or { sector, n, seed } => req(
            pool,
            BlockIo::OrWrite {
                offset: sector * 512,
                len: (n * 512) as u32,
                data: 0..(n * 512) as usize,
                fua: false,
            },
            &bytes((n * 512) as usize, seed),
        ),
        Gen::Caw {
            sector,
            matching,
            seed,
        } => {
            let at = (sector * 512) as usize;
            let mut d = if matching {
                model[at..at + 512].to_vec()
            } else {
                bytes(512, seed ^ 0x5a)
            };
            d.extend_from_slice(&bytes(512, seed));
            req(
                pool,
                BlockIo::CompareAndWrite {
                    offset: sector * 512,
                    len: 512,
                    verify: 0..512,
                    write: 512..1024,
                },
                &d,
            )
        }
    }
}

/// Applies a write-type `g` (not a COMPARE AND WRITE, whose outcome the caller decides).
fn apply(g: &Gen, model: &mut [u8]) {
    match *g {
        Gen::Write { sector, n, seed } => {
            let at = (sector * 512) as usize;
            let d = bytes((n * 512) as usize, seed);
            model[at..at + d.len()].copy_from_slice(&d);
        }
        Gen::Same { sector, n, seed } => {
            let p = bytes(512, seed);
            for i in 0..(n * 512) as usize {
                model[(sector * 512) as usize + i] = p[i % 512];
            }
        }
        Gen::Or { sector, n, seed } => {
            let at = (sector * 512) as usize;
            for (a, b) in model[at..].iter_mut().zip(bytes((n * 512) as usize, seed)) {
                *a |= b;
            }
        }
        Gen::Caw { .. } => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Overlapping unaligned operations started together and completed in a random order
    /// (some cancelled) end in the state of the uncancelled ones applied in arrival order;
    /// COMPARE AND WRITE answers as in that order; the inner engine never sees an unaligned
    /// I/O nor two writes of one block at once.
    #[test]
    fn concurrent_unaligned_writes_equal_arrival_order(
        ops in proptest::collection::vec(gen_op(), 1..12),
        steps in proptest::collection::vec(any::<u16>(), 0..40),
        cancels in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let (mut e, mut s) = setup();
        let start = e.inner().vol.clone();
        // A CAW's compare data comes from the serial state as if nothing were cancelled
        // (so most "matching" ones match); the check below re-decides each against the
        // model, which leaves the cancelled ones out.
        let mut serial = start.clone();
        let mut reqs = Vec::new();
        let mut carried = Vec::new();
        for g in &ops {
            let r = build(g, &serial, &s.pool);
            carried.push(r.data.as_ref().map(|d| d.as_slice()[..512.min(d.len())].to_vec()));
            reqs.push(r);
            match *g {
                Gen::Caw { sector, matching: true, seed } => {
                    let at = (sector * 512) as usize;
                    serial[at..at + 512].copy_from_slice(&bytes(512, seed));
                }
                _ => apply(g, &mut serial),
            }
        }
        let mut step = steps.into_iter();
        for (i, r) in reqs.into_iter().enumerate() {
            e.start(id(i as u32), r, &mut s);
            // Some inner completions between arrivals.
            for _ in 0..2 {
                if let Some(t) = step.next() {
                    e.on_timer(u64::from(t), &mut s);
                }
            }
            if i > 0 && cancels[i] && i % 3 == 0 {
                e.cancel(id((i - 1) as u32), &mut s);
            }
        }
        for t in step {
            e.on_timer(u64::from(t), &mut s);
        }
        settle(&mut e, &mut s);
        prop_assert_eq!(e.in_flight(), 0);
        prop_assert_eq!(e.inner().unaligned, 0);
        prop_assert_eq!(s.done.len(), ops.len(), "each completed exactly once");
        // The model: arrival order, without the cancelled ones.
        let mut model = start;
        for (i, g) in ops.iter().enumerate() {
            let c = take(&mut s, i as u32);
            if matches!(c.result, IoResult::Cancelled) {
                continue;
            }
            if let Gen::Caw { sector, seed, .. } = *g {
                let at = (sector * 512) as usize;
                let same = carried[i].as_deref() == Some(&model[at..at + 512]);
                match c.result {
                    IoResult::Ok => {
                        prop_assert!(same, "CAW {} wrote though the compare differs", i);
                        model[at..at + 512].copy_from_slice(&bytes(512, seed));
                    }
                    IoResult::Miscompare { .. } => prop_assert!(!same, "CAW {} refused a match", i),
                    ref other => prop_assert!(false, "CAW {} ended {:?}", i, other),
                }
            } else {
                prop_assert!(matches!(c.result, IoResult::Ok), "op {} ended {:?}", i, c.result);
                apply(g, &mut model);
            }
        }
        prop_assert!(e.inner().vol == model, "final state differs from arrival order");
    }
}
