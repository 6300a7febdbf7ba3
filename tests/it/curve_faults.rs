//! Faults the real cluster cannot make on cue, from a fixture of our own
//! (`common::curve_fixture`: a fake MDS and a fake chunk server speaking baidu_std over real
//! sockets), driven by a script of faults (OVERLOAD, garbage frames, slow replies, truncated
//! attachments, replies to unknown correlation ids).
//! Our blocking client must ride through each one without an I/O error and without corrupting
//! data, or, when the fault never ends, fail the op at its deadline saying why.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::curve_fixture::{fixture, Fault, Fixture, CHUNK};
use curve_tgt::curve::auth::Credentials;
use curve_tgt::curve::blocking::BlockingClient;
use curve_tgt::curve::config::ClientConfig;
use curve_tgt::curve::error::IoError;
use curve_tgt::curve::pattern;

fn client(f: &Fixture, deadline: Duration) -> BlockingClient {
    let cfg = ClientConfig {
        mds_addrs: vec![f.mds],
        op_deadline: deadline,
        ..ClientConfig::default()
    };
    BlockingClient::new(cfg, Credentials::user("u"))
}

#[test]
fn io_rides_through_overload_garbage_slow_truncated_and_misaddressed_replies() {
    let f = fixture();
    let mut c = client(&f, Duration::from_secs(15));
    c.open("/f").unwrap();
    let off = CHUNK - 65536;
    let len = 4 * 65536u64;
    let mut data = vec![0u8; len as usize];
    pattern::fill(&mut data, off, 3);
    f.faults.lock().unwrap().extend([
        Fault::Overload,
        Fault::Overload,
        Fault::Garbage,
        Fault::Slow(1500),
        Fault::UnknownCid,
    ]);
    c.write(off, Bytes::from(data.clone())).unwrap();
    f.faults
        .lock()
        .unwrap()
        .extend([Fault::Truncate, Fault::Overload, Fault::Garbage]);
    let got = c.read(off, len as usize).unwrap();
    assert_eq!(pattern::first_mismatch(&got, off, 3), None, "data intact");
    let s = c.stats().clone();
    eprintln!("{s:?}");
    assert!(s.retries_overload >= 3, "{s:?}");
    assert!(s.bad_replies >= 3, "garbage x2 + unknown cid: {s:?}");
    assert!(
        s.retries_rpc >= 2,
        "slow reply timed out, truncated reply lost: {s:?}"
    );
    c.close().unwrap();
}

#[test]
fn endless_overload_fails_the_op_at_its_deadline_saying_why() {
    let f = fixture();
    let mut c = client(&f, Duration::from_secs(3));
    c.open("/f").unwrap();
    *f.always_overload.lock().unwrap() = true;
    let t = Instant::now();
    let e = c.write(0, Bytes::from(vec![1u8; 4096])).unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
    match e {
        IoError::Deadline { last, .. } => assert!(last.contains("overloaded"), "{last}"),
        other => panic!("{other}"),
    }
}
