//! A minimal scripted iSCSI initiator for PDU-level tests: login without digests or CHAP, then
//! raw PDUs in and out, so a test can do what libiscsi's tools cannot (hold 512 commands,
//! ignore NOP-In pings).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

/// Reads a big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reads one PDU (no digests): header and unpadded data.
pub fn read_pdu(s: &mut TcpStream) -> std::io::Result<([u8; 48], Vec<u8>)> {
    let mut h = [0u8; 48];
    s.read_exact(&mut h)?;
    let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
    let ahs = usize::from(h[4]) * 4;
    let mut d = vec![0u8; ahs + len.div_ceil(4) * 4];
    s.read_exact(&mut d)?;
    Ok((h, d[ahs..ahs + len].to_vec()))
}

/// Logs in to `target` (operational stage straight to full feature phase). Returns
/// (StatSN, ExpCmdSN, MaxCmdSN) of the final login response.
pub fn login(s: &mut TcpStream, target: &str, initiator: &str) -> (u32, u32, u32) {
    let keys = format!(
        "InitiatorName={initiator}\0SessionType=Normal\0TargetName={target}\0HeaderDigest=None\0\
         DataDigest=None\0MaxRecvDataSegmentLength=262144\0ImmediateData=Yes\0InitialR2T=Yes\0"
    );
    for round in 0..4u32 {
        let data = if round == 0 { keys.as_str() } else { "" };
        s.write_all(&login_pdu(data)).unwrap();
        let (r, _) = read_pdu(s).expect("login response");
        assert_eq!(r[0] & 0x3f, 0x23, "login response");
        assert_eq!(r[36], 0, "login status class {:#x}/{:#x}", r[36], r[37]);
        if r[1] & 0x80 != 0 && r[1] & 3 == 3 {
            return (be32(&r, 24), be32(&r, 28), be32(&r, 32));
        }
    }
    panic!("target never moved to full feature phase");
}

/// A Login Request from the operational stage asking for full feature phase, with `keys`
/// (NUL-separated `key=value` text) as its data.
pub fn login_pdu(keys: &str) -> Vec<u8> {
    let data = keys.as_bytes();
    let mut h = [0u8; 48];
    h[0] = 0x43;
    h[1] = 0x80 | (1 << 2) | 3;
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 7]);
    h[24..28].copy_from_slice(&1u32.to_be_bytes());
    let mut pdu = h.to_vec();
    pdu.extend_from_slice(data);
    while pdu.len() % 4 != 0 {
        pdu.push(0);
    }
    pdu
}

/// The first Login Request of a normal session to `target`, without reading the answer.
pub fn send_leading_login(s: &mut TcpStream, target: &str, initiator: &str) {
    let keys = format!("InitiatorName={initiator}\0SessionType=Normal\0TargetName={target}\0");
    s.write_all(&login_pdu(&keys)).unwrap();
}

/// A Login Response's status class and detail.
pub fn login_status(h: &[u8; 48]) -> (u8, u8) {
    assert_eq!(h[0] & 0x3f, 0x23, "login response");
    (h[36], h[37])
}

/// The value of `key` in NUL-separated text.
pub fn text_value(data: &[u8], key: &str) -> Option<String> {
    data.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// A NOP-Out answering a NOP-In ping: ITT reserved, the ping's TTT echoed (RFC 7143 §11.18).
pub fn nop_out_reply(ttt: u32, cmd_sn: u32) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40;
    h[1] = 0x80;
    h[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    h[20..24].copy_from_slice(&ttt.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h
}
