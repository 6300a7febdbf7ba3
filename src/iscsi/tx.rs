//! Outgoing PDUs as the send path sees them: a header (with its digest) and an optional
//! payload that may be a slice of a pooled read buffer, so Data-In is sent straight from the
//! buffer the backing store filled, and the buffer lives until the send (or, with zero-copy,
//! its notification) completes.

use super::digest;
use super::pdu::{Bhs, BHS_LEN};
use super::stats::LatencyMark;
use crate::buf::IoBuf;

/// A PDU's payload.
#[derive(Debug, Clone)]
pub enum Payload {
    /// No data segment.
    None,
    /// Bytes built by the protocol code (login text, sense, NOP echo).
    Owned(Vec<u8>),
    /// A window of a pooled buffer (Data-In from a read).
    Buf {
        buf: IoBuf,
        offset: usize,
        len: usize,
    },
}

impl Payload {
    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::None => &[],
            Payload::Owned(v) => v,
            Payload::Buf { buf, offset, len } => &buf.as_slice()[*offset..*offset + *len],
        }
    }
}

/// One PDU ready to be written: header bytes (with header digest), payload, padding and data
/// digest, in wire order.
#[derive(Debug, Clone)]
pub struct TxPdu {
    /// BHS plus header digest when in use.
    pub header: [u8; BHS_LEN + 4],
    /// Bytes of `header` in use (48 or 52).
    pub header_len: u8,
    /// The data segment.
    pub payload: Payload,
    /// Zero padding after the payload to a 4-byte boundary, then the data digest when in use.
    pub trailer: [u8; 8],
    /// Bytes of `trailer` in use.
    pub trailer_len: u8,
    /// Set on the PDU carrying a timed command's status: the shard records the command's
    /// latency when it hands this PDU to the socket.
    pub mark: Option<LatencyMark>,
}

impl TxPdu {
    /// Finishes a PDU: sets DataSegmentLength from the payload and computes digests.
    pub fn new(mut bhs: Bhs, payload: Payload, header_digest: bool, data_digest: bool) -> TxPdu {
        let data = payload.bytes();
        bhs.set_data_len(data.len());
        let mut header = [0u8; BHS_LEN + 4];
        header[..BHS_LEN].copy_from_slice(&bhs.0);
        let mut header_len = BHS_LEN;
        if header_digest {
            header[BHS_LEN..].copy_from_slice(&digest::to_wire(digest::crc32c(&bhs.0)));
            header_len += 4;
        }
        let pad = (4 - data.len() % 4) % 4;
        let mut trailer = [0u8; 8];
        let mut trailer_len = pad;
        if data_digest && !data.is_empty() {
            let crc = digest::crc32c_append(digest::crc32c(data), &[0u8; 3][..pad]);
            trailer[pad..pad + 4].copy_from_slice(&digest::to_wire(crc));
            trailer_len += 4;
        }
        TxPdu {
            header,
            header_len: header_len as u8,
            payload,
            trailer,
            trailer_len: trailer_len as u8,
            mark: None,
        }
    }

    /// Total bytes on the wire.
    pub fn wire_len(&self) -> usize {
        usize::from(self.header_len) + self.payload.bytes().len() + usize::from(self.trailer_len)
    }

    /// The wire bytes as up to three slices (header, payload, trailer), skipping `skip` bytes
    /// already sent. Used to build iovecs.
    pub fn slices(&self, mut skip: usize) -> impl Iterator<Item = &[u8]> {
        let parts = [
            &self.header[..usize::from(self.header_len)],
            self.payload.bytes(),
            &self.trailer[..usize::from(self.trailer_len)],
        ];
        parts.into_iter().filter_map(move |p| {
            if skip >= p.len() {
                skip -= p.len();
                None
            } else {
                let s = &p[skip..];
                skip = 0;
                Some(s)
            }
        })
    }

    /// The header as a BHS (for tests and logging).
    pub fn bhs(&self) -> &[u8; BHS_LEN] {
        self.header[..BHS_LEN].try_into().expect("48 bytes")
    }

    /// The whole PDU as one vector (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices(0).flat_map(|s| s.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::ids::Itt;
    use crate::iscsi::rx::{next_pdu, RxLimits, RxStep};

    #[test]
    fn padding_and_digests_round_trip_through_rx() {
        // A NOP-In is not an initiator PDU, so frame a NOP-Out-shaped header instead.
        let mut bhs = Bhs::nop_in(Itt(1), crate::iscsi::ids::Ttt::RESERVED, Default::default());
        bhs.0[0] = 0x40;
        let p = TxPdu::new(bhs, Payload::Owned(vec![1, 2, 3, 4, 5]), true, true);
        assert_eq!(p.wire_len(), 52 + 5 + 3 + 4);
        let wire = p.to_vec();
        let lim = RxLimits {
            header_digest: true,
            data_digest: true,
            max_data: 8192,
        };
        match next_pdu(&wire, lim) {
            RxStep::Pdu { pdu, len } => {
                assert_eq!(len, wire.len());
                assert!(!pdu.data_digest_bad);
                assert_eq!(&wire[pdu.data], &[1, 2, 3, 4, 5]);
            }
            other => panic!("{other:?}"),
        }
        let partial: Vec<u8> = p.slices(50).flat_map(|s| s.iter().copied()).collect();
        assert_eq!(partial, wire[50..]);
    }
}
