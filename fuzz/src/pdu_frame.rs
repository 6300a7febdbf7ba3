//! Target `pdu_frame`: the receive path's framing (`rx::next_pdu`: `Frame::parse`, digests,
//! `Request::parse`) over an arbitrary byte stream, as a connection's receive buffer sees it.
//!
//! Input: one settings byte (header digest, data digest, which MaxRecvDataSegmentLength),
//! then the stream. Checks, for every step: no panic; a PDU lies inside the buffer, its AHS
//! before its data, its data no longer than the limit; a shorter buffer holding the same PDU
//! is "incomplete", never a different answer; "incomplete" asks for more than is there and
//! never more than the largest legal PDU; a parsed header re-parses to the same request.

use curve_tgt::iscsi::pdu::{Request, BHS_LEN, MAX_AHS_WORDS};
use curve_tgt::iscsi::rx::{next_pdu, RxLimits, RxStep};

const MAX_DATA_CHOICES: [u32; 4] = [8192, 512, 65536, 262_144];

/// Largest PDU a peer can make us wait for under `lim`.
fn largest_pdu(lim: RxLimits) -> usize {
    BHS_LEN + usize::from(MAX_AHS_WORDS) * 4 + 4 + (lim.max_data as usize).div_ceil(4) * 4 + 4
}

pub fn run(data: &[u8]) {
    let Some((&settings, mut rest)) = data.split_first() else {
        return;
    };
    let lim = RxLimits {
        header_digest: settings & 1 != 0,
        data_digest: settings & 2 != 0,
        max_data: MAX_DATA_CHOICES[usize::from(settings >> 2) & 3],
    };
    // Bounded: each PDU consumes at least 48 bytes.
    loop {
        match next_pdu(rest, lim) {
            RxStep::Incomplete { need } => {
                assert!(
                    need > rest.len(),
                    "incomplete with {} of {need}",
                    rest.len()
                );
                assert!(need <= largest_pdu(lim), "waits for {need} bytes");
                return;
            }
            RxStep::Fatal { bhs, .. } => {
                if rest.len() >= BHS_LEN {
                    assert_eq!(bhs.as_ref().map(|b| &b[..]), Some(&rest[..BHS_LEN]));
                }
                return;
            }
            RxStep::Pdu { pdu, len } => {
                assert!(len >= BHS_LEN && len <= rest.len());
                assert!(len <= largest_pdu(lim));
                assert_eq!(&pdu.bhs[..], &rest[..BHS_LEN]);
                assert!(pdu.ahs.start == BHS_LEN && pdu.ahs.end <= pdu.data.start);
                assert!(pdu.data.end <= len);
                assert!(pdu.data.len() <= lim.max_data as usize);
                let dl = (usize::from(rest[5]) << 16)
                    | (usize::from(rest[6]) << 8)
                    | usize::from(rest[7]);
                assert_eq!(pdu.data.len(), dl);
                assert_eq!(Request::parse(&pdu.bhs).ok(), Some(pdu.req.clone()));
                if len > BHS_LEN {
                    assert!(matches!(
                        next_pdu(&rest[..len - 1], lim),
                        RxStep::Incomplete { .. }
                    ));
                }
                rest = &rest[len..];
            }
        }
    }
}
