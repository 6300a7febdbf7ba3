//! Payload-only zero-copy (`--zerocopy-payload-only 1`): a batch of PDUs is sent as a
//! sequence of *runs*, each one send: a zero-copy run is (what is left of) one Data-In payload
//! at or above the threshold; a copy run is everything between two such payloads (the
//! trailer and digest of one PDU, the headers, small payloads and statuses after it, up to
//! the next large payload's first byte). So the kernel pins only payload pages, never the
//! batch's headers and digests.
//!
//! **Byte order.** A connection keeps exactly one send in flight, as in batch mode, and every
//! send starts at the batch's first unsent byte (`Conn::tx_sent`): the next run is computed
//! from that offset only after the previous send's completion has advanced it. A short send
//! (the socket buffer filled) therefore needs no special case: `tx_sent` moves by what the
//! kernel took, and the next run [`run_at`] finds starts inside the same run (the unsent tail
//! of a payload, or of a copy run), whatever its kind. Nothing is ever queued behind a send
//! that may stop short, so no byte can overtake another. (Linked SQEs would save ring round
//! trips, but a short send in a chain cancels the links after it, and whether a cancelled
//! `SEND_ZC` still posts a notification depends on where the kernel cancelled it: not the
//! obviously correct design.)
//!
//! **Cost.** A batch of N large Data-In PDUs takes 2N sends (N payloads, N header runs)
//! instead of one, each a ring completion the loop must see before the next send goes. That
//! is why it is a switch, off by default: it pays only where pinning headers costs more than
//! those round trips (a NIC that really sends from the pages, registered buffers).

use crate::iscsi::tx::{Payload, TxPdu};

/// How a run leaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// By an ordinary send.
    Copy,
    /// By a zero-copy send of the payload of the batch's PDU number `pdu`.
    ZeroCopy { pdu: usize },
}

/// Bytes `[start, start + len)` of the batch (offsets in wire order), sent by one send.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub kind: RunKind,
    pub start: usize,
    pub len: usize,
}

/// Where a PDU's payload lies within the PDU when it goes zero-copy: a pooled read buffer
/// (never protocol-built bytes) that `eligible` accepts by its whole length.
fn zc_segment(p: &TxPdu, eligible: &impl Fn(usize) -> bool) -> Option<(usize, usize)> {
    match &p.payload {
        Payload::Buf { len, .. } if *len > 0 && eligible(*len) => {
            Some((usize::from(p.header_len), *len))
        }
        _ => None,
    }
}

/// The run that starts at byte `from` of `batch`: the rest of a zero-copy payload when
/// `from` lies inside one, else the copy run up to the next zero-copy payload (or the end of
/// the batch). `eligible(len)`: whether a Data-In payload of `len` bytes goes zero-copy (the
/// connection's policy). `None` when `from` is at or past the end.
pub fn run_at(batch: &[TxPdu], from: usize, eligible: impl Fn(usize) -> bool) -> Option<Run> {
    let mut base = 0;
    for (i, p) in batch.iter().enumerate() {
        let end = base + p.wire_len();
        if end > from {
            if let Some((off, len)) = zc_segment(p, &eligible) {
                let (s, e) = (base + off, base + off + len);
                if from >= s && from < e {
                    return Some(Run {
                        kind: RunKind::ZeroCopy { pdu: i },
                        start: from,
                        len: e - from,
                    });
                }
                if s > from {
                    return Some(Run {
                        kind: RunKind::Copy,
                        start: from,
                        len: s - from,
                    });
                }
                // `from` is in this PDU's trailer: the copy run goes on.
            }
        }
        base = end;
    }
    (base > from).then(|| Run {
        kind: RunKind::Copy,
        start: from,
        len: base - from,
    })
}

/// The largest pooled Data-In payload with bytes in `run` (for the `large` counter of a copy
/// run: a connection in copy mode still counts the large payloads it copies).
pub fn largest_payload_in(batch: &[TxPdu], run: &Run) -> usize {
    let (lo, hi) = (run.start, run.start + run.len);
    let mut base = 0;
    let mut best = 0;
    for p in batch {
        if base >= hi {
            break;
        }
        if let Payload::Buf { len, .. } = &p.payload {
            let s = base + usize::from(p.header_len);
            if s < hi && s + len > lo {
                best = best.max(*len);
            }
        }
        base += p.wire_len();
    }
    best
}

/// Cuts an iovec list (which starts at the run's first byte) to the run's `len` bytes.
/// Returns the number of iovecs kept.
pub fn cut_iov(iov: &mut Vec<libc::iovec>, len: usize) -> usize {
    let mut left = len;
    let mut keep = 0;
    for v in iov.iter_mut() {
        if left == 0 {
            break;
        }
        if v.iov_len > left {
            v.iov_len = left;
        }
        left -= v.iov_len;
        keep += 1;
    }
    iov.truncate(keep);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::BufPool;
    use crate::iscsi::pdu::{Bhs, RejectReason};

    fn bhs() -> Bhs {
        Bhs::reject(RejectReason::ProtocolError)
    }

    fn data_in(pool: &BufPool, n: usize, dd: bool) -> TxPdu {
        let buf = pool.alloc(n);
        TxPdu::new(
            bhs(),
            Payload::Buf {
                buf,
                offset: 0,
                len: n,
            },
            dd,
            dd,
        )
    }

    const T: usize = 10 * 1024;

    fn eligible(len: usize) -> bool {
        len >= T
    }

    /// Every run from `from` to the end, each starting where the previous ended.
    fn all_runs(batch: &[TxPdu], mut from: usize) -> Vec<Run> {
        let mut out = Vec::new();
        while let Some(r) = run_at(batch, from, eligible) {
            assert_eq!(r.start, from);
            assert!(r.len > 0);
            from += r.len;
            out.push(r);
            assert!(out.len() < 100, "runs never end");
        }
        out
    }

    #[test]
    fn a_batch_splits_into_header_runs_and_payload_runs() {
        let pool = BufPool::new();
        // Digests on: a header digest after each BHS, padding + data digest after payloads.
        let batch = vec![
            data_in(&pool, 65536, true),
            data_in(&pool, 4000, true), // small: copied with the headers around it
            data_in(&pool, 20001, true),
            TxPdu::new(bhs(), Payload::None, true, true), // a status
        ];
        let lens: Vec<usize> = batch.iter().map(|p| p.wire_len()).collect();
        assert_eq!(
            lens,
            vec![52 + 65536 + 4, 52 + 4000 + 4, 52 + 20001 + 3 + 4, 52]
        );
        let runs = all_runs(&batch, 0);
        let z = |pdu| RunKind::ZeroCopy { pdu };
        assert_eq!(
            runs,
            vec![
                Run {
                    kind: RunKind::Copy,
                    start: 0,
                    len: 52
                },
                Run {
                    kind: z(0),
                    start: 52,
                    len: 65536
                },
                // digest of 0, all of PDU 1, header of 2
                Run {
                    kind: RunKind::Copy,
                    start: 52 + 65536,
                    len: 4 + lens[1] + 52
                },
                Run {
                    kind: z(2),
                    start: lens[0] + lens[1] + 52,
                    len: 20001
                },
                // padding and digest of 2, the status
                Run {
                    kind: RunKind::Copy,
                    start: lens[0] + lens[1] + 52 + 20001,
                    len: 7 + 52
                },
            ]
        );
        let total: usize = lens.iter().sum();
        assert_eq!(runs.iter().map(|r| r.len).sum::<usize>(), total);
        assert_eq!(run_at(&batch, total, eligible), None);
        // A connection in copy mode: one run, the whole batch, and its large payloads count.
        let all = run_at(&batch, 0, |_| false).unwrap();
        assert_eq!(
            all,
            Run {
                kind: RunKind::Copy,
                start: 0,
                len: total
            }
        );
        assert_eq!(largest_payload_in(&batch, &all), 65536);
        // The copy runs between the large payloads hold only the small one.
        assert_eq!(largest_payload_in(&batch, &runs[2]), 4000);
        assert_eq!(largest_payload_in(&batch, &runs[4]), 0);
    }

    #[test]
    fn a_short_send_resumes_at_the_first_unsent_byte_of_the_same_run() {
        let pool = BufPool::new();
        let batch = vec![data_in(&pool, 65536, false), data_in(&pool, 65536, false)];
        // The first payload went out in part: the rest of it is still zero-copy.
        let r = run_at(&batch, 48 + 1000, eligible).unwrap();
        assert_eq!(
            r,
            Run {
                kind: RunKind::ZeroCopy { pdu: 0 },
                start: 1048,
                len: 65536 - 1000
            }
        );
        // A copy run cut short (inside the second header): the rest of that header.
        let r = run_at(&batch, 48 + 65536 + 10, eligible).unwrap();
        assert_eq!(
            r,
            Run {
                kind: RunKind::Copy,
                start: 48 + 65536 + 10,
                len: 38
            }
        );
        // Any offset at all: runs from it cover the rest exactly once, in order.
        let total = 2 * (48 + 65536);
        for from in [
            0,
            1,
            47,
            48,
            49,
            65583,
            65584,
            65585,
            65631,
            65632,
            total - 1,
        ] {
            let covered: usize = all_runs(&batch, from).iter().map(|r| r.len).sum();
            assert_eq!(covered, total - from, "from {from}");
        }
    }

    #[test]
    fn cutting_the_iovecs_keeps_exactly_the_runs_bytes() {
        let a = [0u8; 100];
        let iov = |n: usize| libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: n,
        };
        let mut v = vec![iov(48), iov(100), iov(4), iov(48)];
        assert_eq!(cut_iov(&mut v, 150), 3);
        let lens: Vec<usize> = v.iter().map(|v| v.iov_len).collect();
        assert_eq!(lens, vec![48, 100, 2]);
        let mut v = vec![iov(48), iov(100)];
        assert_eq!(cut_iov(&mut v, 48), 1);
        assert_eq!(v[0].iov_len, 48);
        let mut v = vec![iov(48)];
        assert_eq!(
            cut_iov(&mut v, 1000),
            1,
            "a run longer than the iovecs keeps them all"
        );
    }
}
