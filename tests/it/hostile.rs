//! Hostile initiators: malformed PDUs end only their own connection, never the shard, and
//! other initiators keep working on the same target.

use crate::common;
use common::{require_tool, run, Tgtd};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:hostile";

/// Sends `bytes`, then reads until the target closes the connection (bounded by a timeout).
/// Returns what the target sent before closing.
fn send_and_drain(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("target neither answered nor closed: {e}"),
        }
    }
    panic!("target kept sending");
}

fn login_pdu(data_len_field: u32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x43;
    h[1] = 0x87;
    h[5..8].copy_from_slice(&data_len_field.to_be_bytes()[1..]);
    h[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 9]);
    h.extend_from_slice(data);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

#[test]
fn malformed_pdus_close_only_their_connection() {
    require_tool("iscsi-inq");
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let f = t.sparse_file("lun.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &f);

    // 1. A data segment length far beyond what login allows: closed without allocating it.
    let _ = send_and_drain(t.port, &login_pdu(0xff_ffff, b""));
    // 2. A SCSI command before login: a protocol error, the connection ends.
    let mut cmd = vec![0u8; 48];
    cmd[0] = 0x01;
    cmd[1] = 0xc1;
    let _ = send_and_drain(t.port, &cmd);
    // 3. Garbage: an unknown opcode and random bytes.
    let mut junk = vec![0x3eu8; 48];
    junk.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let _ = send_and_drain(t.port, &junk);
    // 4. Login text that is not key=value pairs gets a login reject, then a close.
    let bad = login_pdu(12, b"garbage\0\0\0\0\0");
    let reply = send_and_drain(t.port, &bad);
    if reply.len() >= 48 {
        assert_eq!(reply[0] & 0x3f, 0x23, "a login response");
        assert_ne!(reply[36], 0, "login must not succeed on garbage text");
    }
    // 5. Half a header, then hang up.
    drop(
        TcpStream::connect(("127.0.0.1", t.port))
            .unwrap()
            .write_all(&[0x43; 20]),
    );

    // The target still serves a well-behaved initiator.
    let (ok, out, err) = run("iscsi-inq", &[&t.url(IQN, 1)]);
    assert!(ok, "target stopped serving after hostile input: {err}");
    assert!(out.contains("Vendor:IET"));
    let (ok, out, _) = run("iscsi-ls", &[&format!("iscsi://127.0.0.1:{}", t.port)]);
    assert!(ok && out.contains(IQN));
}
