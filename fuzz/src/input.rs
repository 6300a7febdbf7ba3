//! A tiny structured-input format for the sequence targets: fixed-width little-endian fields
//! read front to back, zero once the input runs out, and length-prefixed byte strings with a
//! cap. [`Writer`] is its exact inverse, so seeds can be built from real protocol exchanges.

/// Reads fields from fuzz input; never fails (missing bytes read as zero).
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let v = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A byte string: u16 length (reduced modulo `max + 1`), then that many bytes (fewer if
    /// the input ends).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        let start = self.at.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.at += n;
        &self.data[start..end]
    }
}

/// Writes fields in [`Reader`]'s format.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A byte string; `b.len()` must not exceed the reader's `max`.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u16(u16::try_from(b.len()).expect("short string"));
        self.out.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_is_readers_inverse_and_reader_never_fails() {
        let mut w = Writer::new();
        w.u8(7)
            .bool(true)
            .u16(0x1234)
            .u32(0xdead_beef)
            .bytes(b"abc");
        let mut r = Reader::new(&w.out);
        assert_eq!(r.u8(), 7);
        assert!(r.bool());
        assert_eq!(r.u16(), 0x1234);
        assert_eq!(r.u32(), 0xdead_beef);
        assert_eq!(r.bytes(16), b"abc");
        assert!(r.is_empty());
        assert_eq!(r.u32(), 0);
        assert_eq!(r.bytes(16), b"");
    }
}
