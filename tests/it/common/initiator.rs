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
    login_with(s, target, initiator, "DataDigest=None")
}

/// As [`login`], with `digest` (`DataDigest=None` or `DataDigest=CRC32C`) offered.
pub fn login_with(
    s: &mut TcpStream,
    target: &str,
    initiator: &str,
    digest: &str,
) -> (u32, u32, u32) {
    let keys = format!(
        "InitiatorName={initiator}\0SessionType=Normal\0TargetName={target}\0HeaderDigest=None\0\
         {digest}\0MaxRecvDataSegmentLength=262144\0ImmediateData=Yes\0InitialR2T=Yes\0"
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

/// A SCSI Command PDU (no digests): `flags` is byte 1 without the F bit (0x40 read, 0x20
/// write, low bits the task attribute), `data` its immediate data, LUN 1.
pub fn scsi_cmd(itt: u32, cmd_sn: u32, flags: u8, edtl: u32, cdb: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x01;
    h[1] = 0x80 | flags;
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&edtl.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h[32..32 + cdb.len()].copy_from_slice(cdb);
    h.extend_from_slice(data);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

/// TEST UNIT READY with this ITT and CmdSN.
pub fn test_unit_ready(itt: u32, cmd_sn: u32) -> Vec<u8> {
    scsi_cmd(itt, cmd_sn, 1, 0, &[0u8; 6], &[])
}

/// WRITE(10) of `data` at `lba` (512-byte blocks), all of it as immediate data.
pub fn write10_immediate(itt: u32, cmd_sn: u32, lba: u32, data: &[u8]) -> Vec<u8> {
    let blocks = (data.len() / 512) as u16;
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    scsi_cmd(itt, cmd_sn, 0x20 | 1, data.len() as u32, &cdb, data)
}

/// A Logout Request closing the session (reason 0), immediate.
pub fn logout_session(itt: u32, cmd_sn: u32) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40 | 0x06;
    h[1] = 0x80;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h
}

/// An immediate Task Management Function Request: `function` (RFC 7143 §11.5.1), LUN 1.
pub fn task_mgmt(itt: u32, cmd_sn: u32, function: u8) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40 | 0x02;
    h[1] = 0x80 | function;
    h[9] = 1;
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h
}

/// A Text Request carrying `text`: `cont` sets the C bit (more follows, F clear), `ttt`
/// echoes the target's tag on a continuation (0xffffffff for a new exchange). Immediate.
pub fn text_req(itt: u32, cmd_sn: u32, ttt: u32, cont: bool, text: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0] = 0x40 | 0x04;
    h[1] = if cont { 0x40 } else { 0x80 };
    h[5..8].copy_from_slice(&(text.len() as u32).to_be_bytes()[1..]);
    h[16..20].copy_from_slice(&itt.to_be_bytes());
    h[20..24].copy_from_slice(&ttt.to_be_bytes());
    h[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    h.extend_from_slice(text);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    h
}

/// Reads PDUs until the target closes the connection (bounded in count and by the socket's
/// read timeout). Returns the headers seen; panics if the target neither closes nor answers.
pub fn read_until_close(s: &mut TcpStream, max_pdus: usize) -> Vec<[u8; 48]> {
    let mut seen = Vec::new();
    for _ in 0..max_pdus {
        match read_pdu(s) {
            Ok((h, _)) => seen.push(h),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return seen,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Err(e) => panic!("target neither answered nor closed: {e} after {seen:?}"),
        }
    }
    panic!("target kept sending after {max_pdus} PDUs");
}
