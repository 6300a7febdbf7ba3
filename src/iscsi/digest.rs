//! CRC32C header and data digests (RFC 7143 §13.1, Castagnoli polynomial; computed over the
//! header with its AHS, and over the data segment with its padding). The digest is sent in the
//! same little-endian byte order the Linux and libiscsi initiators use.

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC32C continued over more bytes (for a data segment that is split across buffers).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The 4 bytes of a digest as they appear on the wire.
pub fn to_wire(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// Reads a wire digest.
pub fn from_wire(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 Appendix B.4: 32 bytes of zeros -> 0x8a9136aa.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        // 32 bytes of 0xff -> 0x62a8ab43.
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let all: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&all), 0x46dd_794e);
        assert_eq!(crc32c_append(crc32c(&all[..10]), &all[10..]), 0x46dd_794e);
    }
}
