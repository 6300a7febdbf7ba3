//! Builds initiator PDUs as wire bytes (BHS, AHS, padded data, digests), so every structured
//! target also runs the real receive path (`rx::next_pdu`) before the state machines.

use curve_tgt::iscsi::digest;
use curve_tgt::iscsi::pdu::BHS_LEN;

/// A header with opcode, immediate bit and flags byte set; everything else zero.
pub fn bhs(opcode: u8, immediate: bool, flags: u8) -> [u8; BHS_LEN] {
    let mut b = [0u8; BHS_LEN];
    b[0] = opcode | if immediate { 0x40 } else { 0 };
    b[1] = flags;
    b
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The whole PDU on the wire: lengths filled in, AHS padded to words, data padded to 4 bytes,
/// CRC32C digests appended when enabled.
pub fn frame(mut h: [u8; BHS_LEN], ahs: &[u8], data: &[u8], hd: bool, dd: bool) -> Vec<u8> {
    let ahs_words = ahs.len().div_ceil(4).min(255);
    h[4] = ahs_words as u8;
    let dl = data.len().min(0xff_ffff);
    h[5] = (dl >> 16) as u8;
    h[6] = (dl >> 8) as u8;
    h[7] = dl as u8;
    let mut v = h.to_vec();
    v.extend_from_slice(ahs);
    v.resize(BHS_LEN + ahs_words * 4, 0);
    if hd {
        let d = digest::to_wire(digest::crc32c(&v));
        v.extend_from_slice(&d);
    }
    if dl > 0 {
        let start = v.len();
        v.extend_from_slice(&data[..dl]);
        v.resize(start + dl.div_ceil(4) * 4, 0);
        if dd {
            let d = digest::to_wire(digest::crc32c(&v[start..]));
            v.extend_from_slice(&d);
        }
    }
    v
}
