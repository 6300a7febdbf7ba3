//! Target `tgtadm_ipc`: the tgtadm IPC decoder (`mgmt::ipc::Request::parse`, the header's
//! length checks, payload text) and then the request itself through `mgmt::dispatch::execute`
//! on a live configuration model with a recording data plane, request after request, as
//! tgtd's control thread would run them.
//!
//! Checks: no panic; a parsed request re-encodes to bytes that parse to a request which then
//! encodes and parses stably (tgtadm's encoding is a fixed point after one normalisation);
//! the declared length is honoured (payload ≤ 8192 bytes). LU creation is only executed with
//! the null backing store, so fuzzing never opens files.

use crate::input::Reader;
use curve_tgt::mgmt::config::Config;
use curve_tgt::mgmt::dispatch;
use curve_tgt::mgmt::ipc::{Mode, Op, Request, MAX_PAYLOAD_LEN, REQ_HDR_LEN};
use curve_tgt::mgmt::server::NullPlane;

/// Whether dispatching `req` could touch the filesystem (an LU backed by a file).
fn opens_files(req: &Request) -> bool {
    let lu_new = Mode::from_wire(req.hdr.mode) == Some(Mode::Device)
        && Op::from_wire(req.hdr.op) == Some(Op::New);
    if !lu_new {
        return false;
    }
    let bstype = req
        .payload
        .split(',')
        .filter_map(|i| i.split_once('='))
        .filter(|(k, _)| *k == "bstype")
        .map(|(_, v)| v)
        .next_back();
    bstype != Some("null")
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut cfg = Config::new(vec!["127.0.0.1:3260".parse().expect("addr")], 0, 0);
    let plane = NullPlane::default();
    // Bounded: at most 32 requests.
    for _ in 0..32 {
        if r.is_empty() {
            break;
        }
        let raw = r.bytes(REQ_HDR_LEN + MAX_PAYLOAD_LEN + 16);
        let Ok(req) = Request::parse(raw) else {
            continue;
        };
        assert!(req.payload.len() <= MAX_PAYLOAD_LEN);
        assert!(!req.payload.contains('\0'));
        let once = Request::parse(&req.encode()).expect("our encoding parses");
        let twice = Request::parse(&once.encode()).expect("our encoding parses");
        assert_eq!(once, twice);
        if opens_files(&req) {
            continue;
        }
        let _ = dispatch::execute(&mut cfg, &req, &plane);
        let _ = plane.take();
    }
}
