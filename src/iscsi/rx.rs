//! Splits a connection's received byte stream into PDUs, checking framing limits and digests
//! before anything is trusted. The parsed PDU borrows from the receive buffer: no copy until a
//! Data-Out payload is placed into its task's buffer.

use super::digest;
use super::pdu::{Frame, PduError, Request, BHS_LEN};
use std::ops::Range;

/// Digest and size settings that framing depends on; they change when login completes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RxLimits {
    /// CRC32C header digest in effect.
    pub header_digest: bool,
    /// CRC32C data digest in effect.
    pub data_digest: bool,
    /// Largest data segment accepted (our MaxRecvDataSegmentLength; 8192 during login, RFC
    /// 7143 §13.12 default).
    pub max_data: u32,
}

impl Default for RxLimits {
    fn default() -> Self {
        RxLimits {
            header_digest: false,
            data_digest: false,
            max_data: 8192,
        }
    }
}

/// One received PDU: its typed header and where its AHS and data lie in the buffer.
#[derive(Debug)]
pub struct InPdu {
    /// The typed header.
    pub req: Request,
    /// The raw 48-byte header (echoed in a Reject).
    pub bhs: [u8; BHS_LEN],
    /// AHS bytes within the buffer passed to [`next_pdu`].
    pub ahs: Range<usize>,
    /// Data segment bytes (unpadded) within that buffer.
    pub data: Range<usize>,
    /// The data digest did not match: the PDU must be rejected and its data discarded
    /// (RFC 7143 §7.8; the framing is intact so the connection carries on).
    pub data_digest_bad: bool,
}

/// Outcome of looking at the front of the receive buffer.
#[derive(Debug)]
pub enum RxStep {
    /// A whole PDU of `len` bytes is at the front.
    Pdu { pdu: InPdu, len: usize },
    /// More bytes are needed; at least `need` in total.
    Incomplete { need: usize },
    /// The stream is unusable (bad header digest, lengths beyond limits, unknown opcode):
    /// reject if possible and close. `bhs` is the offending header when it was complete.
    Fatal {
        error: PduError,
        bhs: Option<[u8; BHS_LEN]>,
    },
}

/// Looks for one PDU at the front of `buf`.
pub fn next_pdu(buf: &[u8], lim: RxLimits) -> RxStep {
    if buf.len() < BHS_LEN {
        return RxStep::Incomplete { need: BHS_LEN };
    }
    let bhs: [u8; BHS_LEN] = buf[..BHS_LEN].try_into().expect("48 bytes");
    let frame = match Frame::parse(&bhs, lim.max_data) {
        Ok(f) => f,
        Err(error) => {
            return RxStep::Fatal {
                error,
                bhs: Some(bhs),
            }
        }
    };
    let total = frame.total_len(lim.header_digest, lim.data_digest);
    if buf.len() < total {
        return RxStep::Incomplete { need: total };
    }
    let mut at = BHS_LEN + frame.ahs_len;
    let ahs = BHS_LEN..at;
    if lim.header_digest {
        let want = digest::crc32c(&buf[..at]);
        let got = digest::from_wire(buf[at..at + 4].try_into().expect("4 bytes"));
        if want != got {
            return RxStep::Fatal {
                error: PduError::HeaderDigest,
                bhs: Some(bhs),
            };
        }
        at += 4;
    }
    let data = at..at + frame.data_len;
    let mut data_digest_bad = false;
    if frame.data_len > 0 && lim.data_digest {
        let padded = at + frame.padded_data_len();
        let want = digest::crc32c(&buf[at..padded]);
        let got = digest::from_wire(buf[padded..padded + 4].try_into().expect("4 bytes"));
        data_digest_bad = want != got;
    }
    let req = match Request::parse(&bhs) {
        Ok(r) => r,
        Err(error) => {
            return RxStep::Fatal {
                error,
                bhs: Some(bhs),
            }
        }
    };
    RxStep::Pdu {
        pdu: InPdu {
            req,
            bhs,
            ahs,
            data,
            data_digest_bad,
        },
        len: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::pdu::op;

    fn nop_out(data_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; BHS_LEN];
        b[0] = 0x40 | op::NOP_OUT;
        b[1] = 0x80;
        b[7] = data_len as u8;
        b.extend(std::iter::repeat_n(0xab, data_len));
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn needs_whole_pdu() {
        let b = nop_out(5);
        assert!(matches!(
            next_pdu(&b[..20], RxLimits::default()),
            RxStep::Incomplete { need: 48 }
        ));
        assert!(matches!(
            next_pdu(&b[..50], RxLimits::default()),
            RxStep::Incomplete { need: 56 }
        ));
        match next_pdu(&b, RxLimits::default()) {
            RxStep::Pdu { pdu, len } => {
                assert_eq!(len, 56);
                assert_eq!(pdu.data, 48..53);
                assert!(matches!(pdu.req, Request::NopOut(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checks_digests() {
        let mut b = nop_out(4);
        let lim = RxLimits {
            header_digest: true,
            data_digest: true,
            max_data: 8192,
        };
        let hd = digest::to_wire(digest::crc32c(&b[..48]));
        let dd = digest::to_wire(digest::crc32c(&b[48..52]));
        let mut wire = b[..48].to_vec();
        wire.extend_from_slice(&hd);
        wire.extend_from_slice(&b[48..52]);
        wire.extend_from_slice(&dd);
        match next_pdu(&wire, lim) {
            RxStep::Pdu { pdu, len } => {
                assert_eq!(len, 60);
                assert_eq!(pdu.data, 52..56);
                assert!(!pdu.data_digest_bad);
            }
            other => panic!("{other:?}"),
        }
        let last = wire.len() - 1;
        wire[last] ^= 1;
        match next_pdu(&wire, lim) {
            RxStep::Pdu { pdu, .. } => assert!(pdu.data_digest_bad),
            other => panic!("{other:?}"),
        }
        wire[48] ^= 1;
        assert!(matches!(
            next_pdu(&wire, lim),
            RxStep::Fatal {
                error: PduError::HeaderDigest,
                ..
            }
        ));
        b[7] = 0;
        b[5] = 1;
        assert!(matches!(
            next_pdu(&b, RxLimits::default()),
            RxStep::Fatal {
                error: PduError::DataSegmentTooLong { .. },
                ..
            }
        ));
    }
}
