//! Text key=value data segments (RFC 7143 §6.1): the format of Login and Text Request and
//! Response data. Parsing checks every limit the initiator controls before anything is kept;
//! building writes pairs in the order they were added.
//!
//! Continued PDUs (C bit, RFC 7143 §6.2 / §11.10.2 / §11.12.2) are joined in a
//! [`TextBuffer`] and parsed once the final PDU of the set arrived, so a pair may span PDUs.

/// Longest key name accepted (RFC 7143 §6.1: "key-name ... up to 63 bytes").
pub const MAX_KEY_LEN: usize = 63;
/// Longest value accepted for most keys (RFC 7143 §6.1: 255 bytes unless a key says otherwise).
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value accepted for the keys that carry large binary or list values (CHAP
/// challenges and responses, which libiscsi may send as 1024 bytes hex-encoded).
pub const MAX_LONG_VALUE_LEN: usize = 8192;
/// Most pairs accepted in one set of (possibly continued) PDUs.
pub const MAX_PAIRS: usize = 256;
/// Most bytes accepted in one set of continued PDUs.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Why a text data segment was refused. Each variant names the rule of RFC 7143 §6.1 (or one
/// of this target's limits) that the initiator broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A pair has no `=` separating key and value.
    #[error("pair {index} has no '=' separator")]
    MissingSeparator { index: usize },
    /// A key is empty.
    #[error("pair {index} has an empty key")]
    EmptyKey { index: usize },
    /// A key is longer than 63 bytes.
    #[error("key of {len} bytes exceeds {MAX_KEY_LEN}")]
    KeyTooLong { len: usize },
    /// A key holds a character outside RFC 7143 §6.1's key-name set.
    #[error("key contains an invalid character")]
    InvalidKeyChar,
    /// A value is longer than the key allows.
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    /// Key or value is not UTF-8 (RFC 7143 §6.1: text is UTF-8).
    #[error("text is not UTF-8")]
    NotUtf8,
    /// More than [`MAX_PAIRS`] pairs.
    #[error("more than {MAX_PAIRS} key=value pairs")]
    TooManyPairs,
    /// More than [`MAX_TEXT_BYTES`] across continued PDUs.
    #[error("text longer than {MAX_TEXT_BYTES} bytes")]
    TooLong,
    /// The final PDU of a set ended in the middle of a pair (no terminating NUL).
    #[error("last pair is not NUL-terminated")]
    Unterminated,
}

/// The value limit for one key: long for the keys whose values are binary blobs or lists.
pub fn max_value_len(key: &str) -> usize {
    if key.starts_with("CHAP_") || key == "SendTargets" || key == "TargetAddress" {
        MAX_LONG_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

fn valid_key_char(c: u8) -> bool {
    // RFC 7143 §6.1: letters, digits, '.', '-', '+', '@', '_'.
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_')
}

/// An ordered list of key=value pairs, as received or to be sent. Order matters: responses
/// answer keys in the order offered, and some keys (TargetName/TargetAddress) are grouped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextPairs {
    pairs: Vec<(String, String)>,
}

impl TextPairs {
    /// An empty list.
    pub fn new() -> TextPairs {
        TextPairs::default()
    }

    /// Parses one complete text segment. Empty strings between NULs (padding some initiators
    /// leave in) are skipped; the last pair must be NUL-terminated.
    pub fn parse(data: &[u8]) -> Result<TextPairs, TextError> {
        if data.len() > MAX_TEXT_BYTES {
            return Err(TextError::TooLong);
        }
        let mut pairs = Vec::new();
        let mut rest = data;
        let mut index = 0;
        while !rest.is_empty() {
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                return Err(TextError::Unterminated);
            };
            let item = &rest[..nul];
            rest = &rest[nul + 1..];
            if item.is_empty() {
                continue;
            }
            if pairs.len() == MAX_PAIRS {
                return Err(TextError::TooManyPairs);
            }
            let eq = item
                .iter()
                .position(|&b| b == b'=')
                .ok_or(TextError::MissingSeparator { index })?;
            let (k, v) = (&item[..eq], &item[eq + 1..]);
            if k.is_empty() {
                return Err(TextError::EmptyKey { index });
            }
            if k.len() > MAX_KEY_LEN {
                return Err(TextError::KeyTooLong { len: k.len() });
            }
            if !k.iter().copied().all(valid_key_char) {
                return Err(TextError::InvalidKeyChar);
            }
            let key = std::str::from_utf8(k).map_err(|_| TextError::NotUtf8)?;
            let max = max_value_len(key);
            if v.len() > max {
                return Err(TextError::ValueTooLong {
                    key: key.to_string(),
                    len: v.len(),
                    max,
                });
            }
            let value = std::str::from_utf8(v).map_err(|_| TextError::NotUtf8)?;
            pairs.push((key.to_string(), value.to_string()));
            index += 1;
        }
        Ok(TextPairs { pairs })
    }

    /// Appends a pair.
    pub fn push(&mut self, key: &str, value: &str) {
        self.pairs.push((key.to_string(), value.to_string()));
    }

    /// The first value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Replaces the value of the first `key`; false when there is none.
    pub fn set(&mut self, key: &str, value: &str) -> bool {
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => {
                *v = value.to_string();
                true
            }
            None => false,
        }
    }

    /// How many times `key` occurs.
    pub fn count(&self, key: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| k == key).count()
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Appends all pairs of `other`.
    pub fn extend(&mut self, other: TextPairs) {
        self.pairs.extend(other.pairs);
    }

    /// The wire form: `key=value\0` for each pair.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
        for (k, v) in &self.pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }
}

/// Joins the data segments of continued PDUs (C bit) until the final one, with the
/// [`MAX_TEXT_BYTES`] limit checked as each piece arrives.
#[derive(Clone, Debug, Default)]
pub struct TextBuffer {
    bytes: Vec<u8>,
}

impl TextBuffer {
    /// An empty buffer.
    pub fn new() -> TextBuffer {
        TextBuffer::default()
    }

    /// Adds one PDU's data segment.
    pub fn push(&mut self, data: &[u8]) -> Result<(), TextError> {
        if self.bytes.len() + data.len() > MAX_TEXT_BYTES {
            return Err(TextError::TooLong);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Adds the final piece and parses the whole set; the buffer is left empty.
    pub fn finish(&mut self, data: &[u8]) -> Result<TextPairs, TextError> {
        self.push(data)?;
        let all = std::mem::take(&mut self.bytes);
        TextPairs::parse(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_in_order() {
        let p = TextPairs::parse(b"InitiatorName=iqn.x\0SessionType=Normal\0\0\0").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("InitiatorName"), Some("iqn.x"));
        assert_eq!(p.iter().nth(1), Some(("SessionType", "Normal")));
        assert_eq!(TextPairs::parse(b"").unwrap().len(), 0);
        assert_eq!(TextPairs::parse(b"K=\0").unwrap().get("K"), Some(""));
        assert_eq!(TextPairs::parse(b"K=a=b\0").unwrap().get("K"), Some("a=b"));
    }

    #[test]
    fn encodes_round_trip() {
        let mut p = TextPairs::new();
        p.push("A", "1");
        p.push("B", "x,y");
        let bytes = p.encode();
        assert_eq!(bytes, b"A=1\0B=x,y\0");
        assert_eq!(TextPairs::parse(&bytes).unwrap(), p);
    }

    #[test]
    fn every_limit_is_named() {
        assert_eq!(
            TextPairs::parse(b"Key\0"),
            Err(TextError::MissingSeparator { index: 0 })
        );
        assert_eq!(
            TextPairs::parse(b"=v\0"),
            Err(TextError::EmptyKey { index: 0 })
        );
        let long_key = format!("{}=1\0", "K".repeat(64));
        assert_eq!(
            TextPairs::parse(long_key.as_bytes()),
            Err(TextError::KeyTooLong { len: 64 })
        );
        assert!(TextPairs::parse(format!("{}=1\0", "K".repeat(63)).as_bytes()).is_ok());
        assert_eq!(TextPairs::parse(b"K y=1\0"), Err(TextError::InvalidKeyChar));
        let long_val = format!("InitiatorAlias={}\0", "v".repeat(256));
        assert!(matches!(
            TextPairs::parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        let chap = format!("CHAP_C=0x{}\0", "ab".repeat(1024));
        assert!(TextPairs::parse(chap.as_bytes()).is_ok());
        let chap = format!("CHAP_C=0x{}\0", "ab".repeat(4096));
        assert!(matches!(
            TextPairs::parse(chap.as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
        assert_eq!(TextPairs::parse(b"K=\xff\0"), Err(TextError::NotUtf8));
        assert_eq!(TextPairs::parse(b"K=1"), Err(TextError::Unterminated));
        let many: Vec<u8> = (0..=MAX_PAIRS)
            .flat_map(|i| format!("K{i}=1\0").into_bytes())
            .collect();
        assert_eq!(TextPairs::parse(&many), Err(TextError::TooManyPairs));
        assert_eq!(
            TextPairs::parse(&vec![0u8; MAX_TEXT_BYTES + 1]),
            Err(TextError::TooLong)
        );
    }

    #[test]
    fn buffer_joins_continued_pdus() {
        let mut b = TextBuffer::new();
        b.push(b"Initiator").unwrap();
        b.push(b"Name=iq").unwrap();
        let p = b.finish(b"n.x\0").unwrap();
        assert_eq!(p.get("InitiatorName"), Some("iqn.x"));
        assert!(b.is_empty());
        let chunk = vec![b'a'; 8192];
        for _ in 0..8 {
            b.push(&chunk).unwrap();
        }
        assert_eq!(b.push(b"x"), Err(TextError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn random_segments_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = TextPairs::parse(&bytes);
        }

        #[test]
        fn generated_pairs_parse_back(pairs in proptest::collection::vec(("[A-Za-z][A-Za-z0-9._-]{0,20}", "[ -~]{0,40}"), 0..20)) {
            let mut p = TextPairs::new();
            for (k, v) in &pairs {
                p.push(k, v);
            }
            proptest::prop_assert_eq!(TextPairs::parse(&p.encode()).unwrap(), p);
        }
    }
}
