//! tgt's management IPC, byte for byte (curve-tgt.md §4): the 120-byte `struct tgtadm_req`
//! header, the NUL-terminated `k=v,...` payload, the 8-byte response header, and the
//! `tgtadm_errno` codes with the messages Debian's tgtadm prints for them.
//!
//! Requests are untrusted: [`ReqHeader::parse`] checks lengths once and yields a typed view;
//! nothing else reads raw request bytes.

/// Size of `struct tgtadm_req` on LP64 (no tail padding).
pub const REQ_HDR_LEN: usize = 120;
/// Size of `struct tgtadm_rsp`.
pub const RSP_HDR_LEN: usize = 8;
/// tgtd closes the connection when the payload is larger than this (`MAX_MGT_BUFSIZE`).
pub const MAX_PAYLOAD_LEN: usize = 8192;
/// Length of the `lld` name field.
pub const LLD_NAME_LEN: usize = 64;
/// The tid account bind/unbind uses for global (discovery) accounts.
pub const GLOBAL_TID: u32 = 0xffff_ffff;
/// `ac_dir` value of an outgoing account.
pub const ACCOUNT_OUTGOING: u32 = 1;

/// `enum tgtadm_mode`, the object a request acts on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    System = 0,
    Target = 1,
    Device = 2,
    Portal = 3,
    Lld = 4,
    Session = 5,
    Connection = 6,
    Account = 7,
}

impl Mode {
    /// The mode with wire value `v`, if any.
    pub fn from_wire(v: u32) -> Option<Mode> {
        use Mode::*;
        [
            System, Target, Device, Portal, Lld, Session, Connection, Account,
        ]
        .into_iter()
        .find(|m| *m as u32 == v)
    }
}

/// `enum tgtadm_op`, what to do to the object.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    New = 0,
    Delete = 1,
    Show = 2,
    Bind = 3,
    Unbind = 4,
    Update = 5,
    Stats = 6,
    Start = 7,
    Stop = 8,
}

impl Op {
    /// The operation with wire value `v`, if any.
    pub fn from_wire(v: u32) -> Option<Op> {
        use Op::*;
        [New, Delete, Show, Bind, Unbind, Update, Stats, Start, Stop]
            .into_iter()
            .find(|o| *o as u32 == v)
    }
}

/// `tgtadm_errno`: the wire value is the discriminant; the doc of each variant, and its
/// `Display`, is the text tgtadm prints after `tgtadm: `.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[repr(u32)]
pub enum TgtadmError {
    #[error("unknown error")]
    UnknownErr = 1,
    #[error("out of memory")]
    NoMem = 2,
    #[error("can't find the driver")]
    NoDriver = 3,
    #[error("can't find the target")]
    NoTarget = 4,
    #[error("can't find the logical unit")]
    NoLun = 5,
    #[error("can't find the session")]
    NoSession = 6,
    #[error("can't find the connection")]
    NoConnection = 7,
    #[error("can't find the binding")]
    NoBinding = 8,
    #[error("this target already exists")]
    TargetExist = 9,
    #[error("this logical unit number already exists")]
    LunExist = 10,
    #[error("this binding already exists")]
    BindingExist = 11,
    #[error("this access control rule already exists")]
    AclExist = 12,
    #[error("this access control rule does not exist")]
    AclNoexist = 13,
    #[error("this account already exists")]
    UserExist = 14,
    #[error("can't find the account")]
    NoUser = 15,
    #[error("too many accounts")]
    TooManyUser = 16,
    #[error("invalid request")]
    InvalidRequest = 17,
    #[error("this target already has an outgoing account")]
    OutaccountExist = 18,
    #[error("this target is still active")]
    TargetActive = 19,
    #[error("this logical unit is still active")]
    LunActive = 20,
    #[error("this driver is busy")]
    DriverActive = 21,
    #[error("this operation isn't supported")]
    UnsupportedOperation = 22,
    #[error("unknown parameter")]
    UnknownParam = 23,
    #[error("this device has Prevent Removal set")]
    PreventRemoval = 24,
}

impl TgtadmError {
    const ALL: [TgtadmError; 24] = {
        use TgtadmError::*;
        [
            UnknownErr,
            NoMem,
            NoDriver,
            NoTarget,
            NoLun,
            NoSession,
            NoConnection,
            NoBinding,
            TargetExist,
            LunExist,
            BindingExist,
            AclExist,
            AclNoexist,
            UserExist,
            NoUser,
            TooManyUser,
            InvalidRequest,
            OutaccountExist,
            TargetActive,
            LunActive,
            DriverActive,
            UnsupportedOperation,
            UnknownParam,
            PreventRemoval,
        ]
    };

    /// The wire value.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The error with wire value `v` (0 is success, not an error).
    pub fn from_code(v: u32) -> Option<TgtadmError> {
        Self::ALL.into_iter().find(|e| e.code() == v)
    }

    /// What tgtadm prints for any wire value, including success and unknown codes.
    pub fn message_for(v: u32) -> String {
        match v {
            0 => "success".to_string(),
            v => match Self::from_code(v) {
                Some(e) => e.to_string(),
                None => "(unknown tgtadm_errno)".to_string(),
            },
        }
    }
}

/// Why a request was dropped without a reply (tgtd simply closes the connection).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpcError {
    /// Fewer than 120 bytes arrived.
    #[error("short request header ({0} bytes)")]
    ShortHeader(usize),
    /// `len` is below the header size, so the payload length would be negative.
    #[error("request length {0} is below the header size")]
    LengthBelowHeader(u32),
    /// The payload is larger than tgtd accepts.
    #[error("request payload of {0} bytes exceeds {MAX_PAYLOAD_LEN}")]
    PayloadTooLarge(usize),
}

/// The typed view of a `struct tgtadm_req`. Modes and ops stay raw numbers here because an
/// unknown value is a tgt error code, not a malformed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReqHeader {
    pub mode: u32,
    pub op: u32,
    /// `lld` up to its first NUL (tgtd forces byte 63 to NUL).
    pub lld: String,
    /// 120 + payload length (the payload counts its NUL).
    pub len: u32,
    /// -1 when not given; `GLOBAL_TID` reads as -1 too.
    pub tid: i32,
    pub sid: u64,
    /// `u64::MAX` when not given.
    pub lun: u64,
    pub cid: u32,
    pub host_no: u32,
    pub device_type: u32,
    pub ac_dir: u32,
    pub pack: u32,
    pub force: u32,
}

fn u32_at(b: &[u8; REQ_HDR_LEN], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8; REQ_HDR_LEN], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

impl ReqHeader {
    /// A header with tgtadm's defaults (tid -1, lun `u64::MAX`, everything else 0).
    pub fn new(mode: Mode, op: Op) -> ReqHeader {
        ReqHeader {
            mode: mode as u32,
            op: op as u32,
            len: REQ_HDR_LEN as u32,
            tid: -1,
            lun: u64::MAX,
            ..ReqHeader::default()
        }
    }

    /// Parses the first 120 bytes of a request.
    pub fn parse(bytes: &[u8]) -> Result<ReqHeader, IpcError> {
        let b: &[u8; REQ_HDR_LEN] = bytes
            .get(..REQ_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(IpcError::ShortHeader(bytes.len()))?;
        let lld_raw = &b[8..8 + LLD_NAME_LEN - 1];
        let lld_end = lld_raw
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(lld_raw.len());
        Ok(ReqHeader {
            mode: u32_at(b, 0),
            op: u32_at(b, 4),
            lld: String::from_utf8_lossy(&lld_raw[..lld_end]).into_owned(),
            len: u32_at(b, 72),
            tid: i32::from_ne_bytes(u32_at(b, 76).to_ne_bytes()),
            sid: u64_at(b, 80),
            lun: u64_at(b, 88),
            cid: u32_at(b, 96),
            host_no: u32_at(b, 100),
            device_type: u32_at(b, 104),
            ac_dir: u32_at(b, 108),
            pack: u32_at(b, 112),
            force: u32_at(b, 116),
        })
    }

    /// How many payload bytes follow the header, checked against tgtd's limit.
    pub fn payload_len(&self) -> Result<usize, IpcError> {
        let len = usize::try_from(self.len).map_err(|_| IpcError::LengthBelowHeader(self.len))?;
        let body = len
            .checked_sub(REQ_HDR_LEN)
            .ok_or(IpcError::LengthBelowHeader(self.len))?;
        if body > MAX_PAYLOAD_LEN {
            return Err(IpcError::PayloadTooLarge(body));
        }
        Ok(body)
    }

    /// The 120 bytes tgtadm writes (`lld` is `strncpy`'d: truncated to 64 bytes).
    pub fn encode(&self) -> [u8; REQ_HDR_LEN] {
        let mut b = [0u8; REQ_HDR_LEN];
        let put32 = |b: &mut [u8; REQ_HDR_LEN], off: usize, v: u32| {
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes())
        };
        put32(&mut b, 0, self.mode);
        put32(&mut b, 4, self.op);
        let lld = self.lld.as_bytes();
        let n = lld.len().min(LLD_NAME_LEN);
        b[8..8 + n].copy_from_slice(&lld[..n]);
        put32(&mut b, 72, self.len);
        b[76..80].copy_from_slice(&self.tid.to_ne_bytes());
        b[80..88].copy_from_slice(&self.sid.to_ne_bytes());
        b[88..96].copy_from_slice(&self.lun.to_ne_bytes());
        put32(&mut b, 96, self.cid);
        put32(&mut b, 100, self.host_no);
        put32(&mut b, 104, self.device_type);
        put32(&mut b, 108, self.ac_dir);
        put32(&mut b, 112, self.pack);
        put32(&mut b, 116, self.force);
        b
    }
}

/// The request payload as tgtd reads it: a C string (up to the first NUL, or the end).
pub fn payload_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A whole request: header plus payload text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub hdr: ReqHeader,
    /// Empty when there was no payload.
    pub payload: String,
}

impl Request {
    /// Parses a complete request (header and exactly `len - 120` payload bytes).
    pub fn parse(bytes: &[u8]) -> Result<Request, IpcError> {
        let hdr = ReqHeader::parse(bytes)?;
        let n = hdr.payload_len()?;
        let body = bytes
            .get(REQ_HDR_LEN..REQ_HDR_LEN + n)
            .ok_or(IpcError::ShortHeader(bytes.len()))?;
        Ok(Request {
            payload: payload_text(body),
            hdr,
        })
    }

    /// The bytes tgtadm sends: header with `len` filled in, then the payload plus NUL (no
    /// payload at all when it is empty).
    pub fn encode(&self) -> Vec<u8> {
        let mut hdr = self.hdr.clone();
        let body_len = if self.payload.is_empty() {
            0
        } else {
            self.payload.len() + 1
        };
        hdr.len = u32::try_from(REQ_HDR_LEN + body_len).unwrap_or(u32::MAX);
        let mut out = hdr.encode().to_vec();
        if body_len > 0 {
            out.extend_from_slice(self.payload.as_bytes());
            out.push(0);
        }
        out
    }
}

/// The reply: an 8-byte header `{err, len}`, then on success the text plus its NUL.
pub fn encode_response(result: &Result<String, TgtadmError>) -> Vec<u8> {
    match result {
        Ok(body) if body.is_empty() => rsp_header(0, RSP_HDR_LEN),
        Ok(body) => {
            let mut out = rsp_header(0, RSP_HDR_LEN + body.len() + 1);
            out.extend_from_slice(body.as_bytes());
            out.push(0);
            out
        }
        Err(e) => rsp_header(e.code(), RSP_HDR_LEN),
    }
}

fn rsp_header(err: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&err.to_ne_bytes());
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out
}

/// The parsed 8-byte response header (client side).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RspHeader {
    pub err: u32,
    pub len: u32,
}

impl RspHeader {
    /// Parses the response header.
    pub fn parse(b: [u8; RSP_HDR_LEN]) -> RspHeader {
        RspHeader {
            err: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            len: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn captured_target_new_bytes() {
        let mut h = ReqHeader::new(Mode::Target, Op::New);
        h.tid = 1;
        let req = Request {
            hdr: h,
            payload: "targetname=iqn.2022-01.org.x:t1".into(),
        };
        let bytes = req.encode();
        assert_eq!(bytes.len(), 152);
        assert_eq!(&bytes[72..76], &152u32.to_ne_bytes());
        assert_eq!(&bytes[88..96], &u64::MAX.to_ne_bytes());
        assert_eq!(*bytes.last().unwrap(), 0);
        let back = Request::parse(&bytes).unwrap();
        assert_eq!(back.payload, req.payload);
        assert_eq!(back.hdr.tid, 1);
        assert_eq!(back.hdr.len, 152);
    }

    #[test]
    fn error_messages_and_codes() {
        assert_eq!(TgtadmError::InvalidRequest.code(), 17);
        assert_eq!(TgtadmError::message_for(4), "can't find the target");
        assert_eq!(TgtadmError::message_for(0), "success");
        assert_eq!(TgtadmError::message_for(99), "(unknown tgtadm_errno)");
        assert_eq!(
            TgtadmError::from_code(24),
            Some(TgtadmError::PreventRemoval)
        );
    }

    #[test]
    fn response_layout() {
        assert_eq!(
            encode_response(&Ok(String::new())),
            [0, 0, 0, 0, 8, 0, 0, 0]
        );
        assert_eq!(
            encode_response(&Err(TgtadmError::NoTarget)),
            [4, 0, 0, 0, 8, 0, 0, 0]
        );
        let r = encode_response(&Ok("ab\n".into()));
        assert_eq!(r, [0, 0, 0, 0, 12, 0, 0, 0, b'a', b'b', b'\n', 0]);
    }

    #[test]
    fn length_checks() {
        let mut h = ReqHeader::new(Mode::System, Op::Show);
        h.len = 100;
        assert_eq!(h.payload_len(), Err(IpcError::LengthBelowHeader(100)));
        h.len = (REQ_HDR_LEN + MAX_PAYLOAD_LEN + 1) as u32;
        assert!(matches!(h.payload_len(), Err(IpcError::PayloadTooLarge(_))));
        h.len = (REQ_HDR_LEN + MAX_PAYLOAD_LEN) as u32;
        assert_eq!(h.payload_len(), Ok(MAX_PAYLOAD_LEN));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Request::parse(&bytes);
            if let Ok(h) = ReqHeader::parse(&bytes) {
                let _ = h.payload_len();
                prop_assert_eq!(&h.encode()[..8], &bytes[..8]);
            }
        }

        #[test]
        fn header_round_trip(mode in 0u32..8, op in 0u32..9, tid in any::<i32>(), sid in any::<u64>(),
                             lun in any::<u64>(), cid in any::<u32>(), force in 0u32..2,
                             lld in "[a-z]{0,20}", payload in "[ -~]{0,200}") {
            let hdr = ReqHeader { mode, op, lld, tid, sid, lun, cid, force, ..ReqHeader::default() };
            let req = Request { hdr, payload };
            let back = Request::parse(&req.encode()).unwrap();
            prop_assert_eq!(back.payload, req.payload.clone());
            let mut expect = req.hdr.clone();
            expect.len = back.hdr.len;
            prop_assert_eq!(back.hdr, expect);
        }
    }
}
