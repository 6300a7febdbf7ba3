//! `--blocksize 512` on a curve LU (issue 9): 512-byte logical blocks on the volume's 4 KiB
//! blocks, through our target on the real CurveBS cluster from `../shared/curve/`.
//!
//! READ CAPACITY says 512 logical / 4096 physical; unaligned reads return exactly what
//! Curve's own client wrote; unaligned writes at chunk and segment edges keep the bytes
//! around them (read back through us, and with libcurve); several overlapping unaligned
//! WRITEs in flight at once in one session end in the state of some serial order of them;
//! WRITE SAME and COMPARE AND WRITE on unaligned ranges do what SBC-3 says.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::common::curve::{add_curve_lu, Cluster, OWNER};
use crate::common::{self, initiator as ini};
use curve_tgt::curve::pattern;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CHUNK: u64 = 16 * MIB;
const IQN: &str = "iqn.2026-11.org.curve-tgt:curve-rmw";
const INI: &str = "iqn.2026-11.org.curve-tgt:curve-rmw-initiator";
/// Largest write sent as immediate data (the target's default MaxRecvDataSegmentLength).
const IMMEDIATE: usize = 8192;

fn pat(off: u64, len: u64, seed: u32) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    pattern::fill(&mut v, off, seed);
    v
}

/// A session speaking 512-byte-block commands, writes as immediate data, so several can be
/// in flight before their responses are read.
struct S {
    s: TcpStream,
    itt: u32,
    cmd_sn: u32,
}

/// Status, sense (key, ASC, ASCQ) and Data-In of one command.
#[derive(Debug)]
struct Reply {
    status: u8,
    sense: Option<(u8, u8, u8)>,
    data: Vec<u8>,
}

fn cdb16(op: u8, off: u64, len: usize) -> [u8; 16] {
    assert_eq!((off % 512, len % 512), (0, 0));
    let mut c = [0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&(off / 512).to_be_bytes());
    c[10..14].copy_from_slice(&((len / 512) as u32).to_be_bytes());
    c
}

impl S {
    fn login(port: u16) -> S {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        s.set_nodelay(true).unwrap();
        let (_, cmd_sn, _) = ini::login(&mut s, IQN, INI);
        S { s, itt: 1, cmd_sn }
    }

    /// Sends a command with `data` as immediate data; returns its ITT.
    fn send(&mut self, cdb: &[u8], edtl: u32, read: bool, data: &[u8]) -> u32 {
        assert!(data.len() <= IMMEDIATE);
        self.itt += 1;
        let flags = if read {
            0x40
        } else if data.is_empty() {
            0
        } else {
            0x20
        } | 1;
        let pdu = ini::scsi_cmd(self.itt, self.cmd_sn, flags, edtl, cdb, data);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.s.write_all(&pdu).expect("send command");
        self.itt
    }

    /// Reads PDUs until the response of `itt` (bounded), answering NOP-In pings; responses
    /// of other commands seen on the way are returned too, by ITT.
    fn collect(&mut self, want: &[u32]) -> Vec<(u32, Reply)> {
        let mut done: Vec<(u32, Reply)> = Vec::new();
        let mut data: Vec<(u32, Vec<u8>)> = Vec::new();
        for _ in 0..8192 {
            if want.iter().all(|w| done.iter().any(|(i, _)| i == w)) {
                return done;
            }
            let (h, d) = ini::read_pdu(&mut self.s).expect("reply");
            let itt = ini::be32(&h, 16);
            match h[0] & 0x3f {
                0x20 => {
                    let ttt = ini::be32(&h, 20);
                    if ttt != 0xffff_ffff {
                        let p = ini::nop_out_reply(ttt, self.cmd_sn);
                        self.s.write_all(&p).unwrap();
                    }
                }
                0x25 => {
                    match data.iter_mut().find(|(i, _)| *i == itt) {
                        Some((_, v)) => v.extend_from_slice(&d),
                        None => data.push((itt, d)),
                    }
                    if h[1] & 1 != 0 {
                        let got = data
                            .iter()
                            .position(|(i, _)| *i == itt)
                            .map(|p| data.remove(p).1)
                            .unwrap_or_default();
                        let r = Reply {
                            status: h[3],
                            sense: None,
                            data: got,
                        };
                        done.push((itt, r));
                    }
                }
                0x21 => {
                    let sense = (d.len() >= 2).then(|| {
                        let n = usize::from(u16::from_be_bytes([d[0], d[1]]));
                        d[2..(2 + n).min(d.len())].to_vec()
                    });
                    let triple = sense.and_then(|s| match s.first()? & 0x7f {
                        0x70 | 0x71 if s.len() >= 14 => Some((s[2] & 0xf, s[12], s[13])),
                        0x72 | 0x73 if s.len() >= 4 => Some((s[1] & 0xf, s[2], s[3])),
                        _ => None,
                    });
                    let got = data
                        .iter()
                        .position(|(i, _)| *i == itt)
                        .map(|p| data.remove(p).1)
                        .unwrap_or_default();
                    let r = Reply {
                        status: h[3],
                        sense: triple,
                        data: got,
                    };
                    done.push((itt, r));
                }
                other => panic!("unexpected PDU opcode {other:#x}"),
            }
        }
        panic!("responses to {want:?} never came");
    }

    fn cmd(&mut self, cdb: &[u8], edtl: u32, read: bool, data: &[u8]) -> Reply {
        let itt = self.send(cdb, edtl, read, data);
        let mut r = self.collect(&[itt]);
        r.pop().expect("one reply").1
    }

    fn read(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for at in (0..len).step_by(64 * 1024) {
            let n = (len - at).min(64 * 1024);
            let r = self.cmd(&cdb16(0x88, off + at as u64, n), n as u32, true, &[]);
            assert_eq!(
                (r.status, r.sense),
                (0, None),
                "READ {n} at {}",
                off + at as u64
            );
            assert_eq!(r.data.len(), n);
            out.extend_from_slice(&r.data);
        }
        out
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        for (i, piece) in data.chunks(IMMEDIATE).enumerate() {
            let at = off + (i * IMMEDIATE) as u64;
            let r = self.cmd(
                &cdb16(0x8a, at, piece.len()),
                piece.len() as u32,
                false,
                piece,
            );
            assert_eq!((r.status, r.sense), (0, None), "WRITE at {at}");
        }
    }
}

/// A deterministic generator for the concurrent rounds.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Heap's algorithm over the indices `0..n`, calling `f` with each order until it says stop.
fn permutations(n: usize, mut f: impl FnMut(&[usize]) -> bool) -> bool {
    let mut a: Vec<usize> = (0..n).collect();
    let mut c = vec![0usize; n];
    if f(&a) {
        return true;
    }
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                a.swap(0, i);
            } else {
                a.swap(c[i], i);
            }
            if f(&a) {
                return true;
            }
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    false
}

#[test]
fn curve_lu_512_reads_and_writes_partial_blocks_in_order() {
    let Some(c) = Cluster::start("curve_rmw") else {
        return;
    };
    let (ok, out) = c.sh(&["vol", "create", "/rmw", OWNER, "10"]);
    assert!(ok, "vol create: {out}");
    // Curve's own client writes the surroundings: at a chunk edge and a segment edge.
    let theirs = [
        (CHUNK - 128 * 1024, 256 * 1024),
        (GIB - 128 * 1024, 256 * 1024),
    ];
    for (off, len) in theirs {
        let (ok, out) = c.smoke("write", "/rmw", off, len, 31);
        assert!(ok, "libcurve write at {off}: {out}");
    }

    let t = common::Tgtd::start_logged();
    t.add_target(1, IQN);
    let o = add_curve_lu(
        &t,
        "cbd:pool//rmw_ctest_",
        &format!("mds={}", c.mds),
        &["--blocksize", "512"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let show = t.tgtadm_ok(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    assert!(show.contains("Block size: 512"), "{show}");

    let mut s = S::login(t.port);
    for _ in 0..8 {
        if s.cmd(&[0u8; 6], 0, false, &[]).status == 0 {
            break;
        }
    }
    // READ CAPACITY(16): 512-byte logical blocks, 2^3 per physical block (SBC-3 §5.16.2).
    let mut rc = [0u8; 16];
    rc[0] = 0x9e;
    rc[1] = 0x10;
    rc[13] = 32;
    let r = s.cmd(&rc, 32, true, &[]);
    assert_eq!(r.status, 0, "{r:?}");
    let last = u64::from_be_bytes(r.data[0..8].try_into().unwrap());
    assert_eq!(last + 1, 10 * GIB / 512);
    assert_eq!(ini::be32(&r.data, 8), 512);
    assert_eq!(
        r.data[13] & 0x0f,
        3,
        "LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT"
    );

    // Unaligned reads of libcurve's pattern, across the chunk and the segment edge.
    for (edge, _) in theirs {
        let edge = edge + 128 * 1024;
        for (back, len) in [(1536u64, 3584usize), (512, 1024), (4096 + 512, 512)] {
            let off = edge - back;
            let got = s.read(off, len);
            assert_eq!(
                pattern::first_mismatch(&got, off, 31),
                None,
                "read {len} at edge-{back}"
            );
        }
    }

    // Unaligned writes at the edges keep the bytes around them.
    for (edge, _) in theirs {
        let edge = edge + 128 * 1024;
        for (back, len, seed) in [
            (2560u64, 5120usize, 41u32),
            (512, 1024, 42),
            (3584, 512, 43),
        ] {
            let off = edge - back;
            s.write(off, &pat(off, len as u64, seed));
            let (lo, hi) = (edge - 16 * 1024, edge + 16 * 1024);
            let got = s.read(lo, (hi - lo) as usize);
            let at = (off - lo) as usize;
            assert_eq!(
                pattern::first_mismatch(&got[at..at + len], off, seed),
                None,
                "our write at edge-{back}"
            );
            let mut around = got.clone();
            around[at..at + len].copy_from_slice(&pat(off, len as u64, 31));
            assert_eq!(
                pattern::first_mismatch(&around, lo, 31),
                None,
                "bytes around our write at edge-{back} changed"
            );
            // Put libcurve's pattern back for the next write.
            s.write(off, &pat(off, len as u64, 31));
        }
    }
    // Libcurve reads back what we left (its pattern, rewritten by us in 512-byte pieces).
    for (off, len) in theirs {
        let (ok, out) = c.smoke("verify", "/rmw", off, len, 31);
        assert!(ok, "libcurve verify at {off}: {out}");
    }
    // And what we write unaligned, libcurve verifies in whole 4 KiB blocks.
    let off = 3 * CHUNK - 4096 - 512;
    s.write(off, &pat(off, 8192 + 1024, 44));
    let (ok, out) = c.smoke("verify", "/rmw", off + 512, 8192, 44);
    assert!(ok, "libcurve verify of our unaligned write: {out}");

    // Concurrent overlapping unaligned WRITEs in one session: the end state is that of
    // some serial order of them (on one shard, the order they arrived in).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = 2 * GIB - 8192;
    for round in 0..12u32 {
        let region = 3 * 4096u64;
        let before = s.read(base, region as usize);
        let mut writes = Vec::new();
        for k in 0..5u32 {
            let sector = rng.next(region / 512 - 1);
            let max = (region / 512 - sector).min(IMMEDIATE as u64 / 512);
            let n = 1 + rng.next(max);
            // Round 0..: one in five is a whole aligned 4 KiB block.
            let (off, len) = if k == 4 && round % 2 == 0 {
                (base + rng.next(3) * 4096, 4096)
            } else {
                (base + sector * 512, n * 512)
            };
            let seed = 1000 + round * 10 + k;
            writes.push((off, pat(off, len, seed)));
        }
        let itts: Vec<u32> = writes
            .iter()
            .map(|(off, d)| s.send(&cdb16(0x8a, *off, d.len()), d.len() as u32, false, d))
            .collect();
        for (itt, r) in s.collect(&itts) {
            assert_eq!((r.status, r.sense), (0, None), "round {round} itt {itt}");
        }
        let after = s.read(base, region as usize);
        let serial = permutations(writes.len(), |order| {
            let mut m = before.clone();
            for &i in order {
                let (off, d) = &writes[i];
                let at = (off - base) as usize;
                m[at..at + d.len()].copy_from_slice(d);
            }
            m == after
        });
        assert!(
            serial,
            "round {round}: the result is no serial order of the writes"
        );
    }

    // WRITE SAME(16) over an unaligned range: every 512-byte block is the pattern, the
    // neighbours stay.
    let off = 4 * CHUNK - 1536;
    let before = s.read(off - 4096, 16384);
    let block: Vec<u8> = (0..512).map(|i| (i % 7) as u8 + 1).collect();
    let mut ws = cdb16(0x93, off, 512 * 9);
    ws[1] = 0;
    let r = s.cmd(&ws, 512, false, &block);
    assert_eq!((r.status, r.sense), (0, None), "WRITE SAME: {r:?}");
    let got = s.read(off - 4096, 16384);
    let mut want = before.clone();
    for b in 0..9 {
        let at = 4096 + b * 512;
        want[at..at + 512].copy_from_slice(&block);
    }
    assert!(got == want, "WRITE SAME over an unaligned range");

    // COMPARE AND WRITE of one unaligned block: a match writes, a mismatch reports
    // MISCOMPARE (SBC-3 §5.2) and writes nothing.
    let off = 5 * CHUNK + 1024;
    let cur = s.read(off, 512);
    let new = pat(off, 512, 55);
    let mut caw = cdb16(0x89, off, 0);
    caw[13] = 1;
    let mut d = cur.clone();
    d.extend_from_slice(&new);
    let r = s.cmd(&caw, 1024, false, &d);
    assert_eq!((r.status, r.sense), (0, None), "COMPARE AND WRITE: {r:?}");
    assert_eq!(s.read(off, 512), new);
    let r = s.cmd(&caw, 1024, false, &d);
    assert_eq!(r.status, 2, "{r:?}");
    assert_eq!(r.sense.map(|t| (t.0, t.1)), Some((0x0e, 0x1d)), "{r:?}");
    assert_eq!(s.read(off, 512), new);
}
