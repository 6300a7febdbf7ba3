//! Sense data (SPC-4 §4.5): the bytes that tell an initiator why a command ended in CHECK
//! CONDITION. Built in fixed (70h) or descriptor (72h) format, as the LU's `sense_format` asks.

/// SENSE KEY values (SPC-4 §4.5.6, Table 51) this target reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x00,
    NotReady = 0x02,
    MediumError = 0x03,
    IllegalRequest = 0x05,
    UnitAttention = 0x06,
    DataProtect = 0x07,
    AbortedCommand = 0x0b,
    Miscompare = 0x0e,
}

/// One sense condition: key, additional sense code and qualifier, and the INFORMATION field
/// when the rule that failed names a position (MISCOMPARE offset).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// INFORMATION field (VALID bit set when present).
    pub info: Option<u64>,
    /// Field pointer (SPC-4 §4.5.2.4.2): the CDB byte at fault, for ILLEGAL REQUEST.
    pub cdb_field: Option<u16>,
}

impl Sense {
    /// The three sense-key specific bytes: SKSV, C/D = 1 (a CDB byte), the field pointer.
    fn sks(&self) -> Option<[u8; 3]> {
        let b = self.cdb_field?.to_be_bytes();
        Some([0x80 | 0x40, b[0], b[1]])
    }

    /// A condition without INFORMATION.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            cdb_field: None,
        }
    }

    /// Encodes in descriptor format when `descriptor`, else fixed format.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.descriptor()
        } else {
            self.fixed()
        }
    }

    /// Fixed format (SPC-4 §4.5.3): 18 bytes; a 64-bit INFORMATION value that does not fit the
    /// 4-byte field is reported without the VALID bit, as the standard requires.
    pub fn fixed(&self) -> Vec<u8> {
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        s[2] = self.key as u8;
        if let Some(info) = self.info {
            if let Ok(info) = u32::try_from(info) {
                s[0] |= 0x80;
                s[3..7].copy_from_slice(&info.to_be_bytes());
            }
        }
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(sks) = self.sks() {
            s[15..18].copy_from_slice(&sks);
        }
        s
    }

    /// Descriptor format (SPC-4 §4.5.2), with an Information descriptor (§4.5.2.2) when set.
    pub fn descriptor(&self) -> Vec<u8> {
        let mut s = vec![0u8; 8];
        s[0] = 0x72;
        s[1] = self.key as u8;
        s[2] = self.asc;
        s[3] = self.ascq;
        if let Some(info) = self.info {
            s.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            s.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sks() {
            // Sense key specific sense data descriptor (SPC-4 §4.5.2.3).
            s.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            s.extend_from_slice(&sks);
            s.push(0);
        }
        s[7] = (s.len() - 8) as u8;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_descriptor_layouts() {
        let s = Sense::new(SenseKey::IllegalRequest, 0x24, 0);
        let f = s.fixed();
        assert_eq!(f.len(), 18);
        assert_eq!((f[0], f[2], f[7], f[12], f[13]), (0x70, 5, 10, 0x24, 0));
        let d = s.descriptor();
        assert_eq!(d, vec![0x72, 5, 0x24, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn information_field() {
        let s = Sense {
            info: Some(513),
            ..Sense::new(SenseKey::Miscompare, 0x1d, 0)
        };
        let f = s.fixed();
        assert_eq!(f[0], 0xf0);
        assert_eq!(&f[3..7], &513u32.to_be_bytes());
        let d = s.descriptor();
        assert_eq!(d[7], 12);
        assert_eq!(&d[8..12], &[0, 0x0a, 0x80, 0]);
        assert_eq!(&d[12..20], &513u64.to_be_bytes());
        // Too large for fixed format: VALID stays clear.
        let big = Sense {
            info: Some(1 << 40),
            ..s
        };
        assert_eq!(big.fixed()[0], 0x70);
    }

    #[test]
    fn field_pointer() {
        let s = Sense {
            cdb_field: Some(2),
            ..Sense::new(SenseKey::IllegalRequest, 0x24, 0)
        };
        assert_eq!(&s.fixed()[15..18], &[0xc0, 0, 2]);
        let d = s.descriptor();
        assert_eq!(d[7], 8);
        assert_eq!(&d[8..16], &[0x02, 0x06, 0, 0, 0xc0, 0, 2, 0]);
    }
}
