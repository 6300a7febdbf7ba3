//! A small verifying iSCSI session for resource and durability tests: login with a chosen
//! ISID (so a test can make distinct sessions or reinstate one), one command at a time
//! (WRITE(10) with all data immediate, READ(10), Logout), and every answer checked. Errors
//! are returned, not panicked, so a test can tell "the target refused" from "the connection
//! died" and count both.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Logical block size of the LUs these tests create (tgtd's default).
pub const BLOCK: usize = 512;

/// What a command came back with.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SCSI status GOOD (and, for a read, the data).
    Good(Vec<u8>),
    /// Another SCSI status, or a non-zero iSCSI response code (status, response).
    Failed(u8, u8),
}

/// One logged-in session on one connection.
pub struct Client {
    s: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
    /// The target's MaxRecvDataSegmentLength: immediate data never exceeds it.
    pub target_mrdsl: usize,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn proto(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_pdu(s: &mut TcpStream) -> io::Result<([u8; 48], Vec<u8>)> {
    let mut h = [0u8; 48];
    s.read_exact(&mut h)?;
    let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
    let ahs = usize::from(h[4]) * 4;
    let mut d = vec![0u8; ahs + len.div_ceil(4) * 4];
    s.read_exact(&mut d)?;
    Ok((h, d[ahs..ahs + len].to_vec()))
}

fn padded(mut pdu: Vec<u8>) -> Vec<u8> {
    while pdu.len() % 4 != 0 {
        pdu.push(0);
    }
    pdu
}

impl Client {
    /// Connects to 127.0.0.1:`port` and logs in to `target` as `initiator` with ISID
    /// qualifier `isid` (a second login with the same name and ISID reinstates the session,
    /// RFC 7143 §6.3.5). Reads time out after `timeout`.
    pub fn login(
        port: u16,
        target: &str,
        initiator: &str,
        isid: u16,
        timeout: Duration,
    ) -> io::Result<Client> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        let keys = format!(
            "InitiatorName={initiator}\0SessionType=Normal\0TargetName={target}\0\
             HeaderDigest=None\0DataDigest=None\0MaxRecvDataSegmentLength=262144\0\
             ImmediateData=Yes\0InitialR2T=Yes\0"
        );
        let mut target_mrdsl = 8192;
        for round in 0..4u32 {
            let data = if round == 0 { keys.as_bytes() } else { b"" };
            let mut h = vec![0u8; 48];
            h[0] = 0x43;
            h[1] = 0x80 | (1 << 2) | 3; // T, CSG operational, NSG full feature
            h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            h[8..14].copy_from_slice(&[0x80, 0, 0, 0, (isid >> 8) as u8, isid as u8]);
            h[24..28].copy_from_slice(&1u32.to_be_bytes());
            h.extend_from_slice(data);
            s.write_all(&padded(h))?;
            let (r, d) = read_pdu(&mut s)?;
            if r[0] & 0x3f != 0x23 {
                return Err(proto(format!("opcode {:#x} during login", r[0])));
            }
            if r[36] != 0 {
                return Err(proto(format!("login status {:#x}/{:#x}", r[36], r[37])));
            }
            for kv in d.split(|b| *b == 0) {
                if let Some(v) = kv.strip_prefix(b"MaxRecvDataSegmentLength=") {
                    if let Some(n) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                        target_mrdsl = n;
                    }
                }
            }
            if r[1] & 0x80 != 0 && r[1] & 3 == 3 {
                return Ok(Client {
                    s,
                    cmd_sn: be32(&r, 28),
                    exp_stat_sn: be32(&r, 24).wrapping_add(1),
                    itt: 1,
                    target_mrdsl,
                });
            }
        }
        Err(proto("no full feature phase after 4 login rounds".into()))
    }

    fn command(
        &mut self,
        cdb: &[u8; 10],
        flags: u8,
        edtl: u32,
        data: &[u8],
    ) -> io::Result<Outcome> {
        self.command_cut(cdb, flags, edtl, data, &[])
    }

    /// `command`, with the PDU written in pieces: one write per stretch between the byte
    /// offsets in `cuts` (ascending), as an initiator that writes a BHS and its data with
    /// separate calls does.
    fn command_cut(
        &mut self,
        cdb: &[u8; 10],
        flags: u8,
        edtl: u32,
        data: &[u8],
        cuts: &[usize],
    ) -> io::Result<Outcome> {
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1) & 0x7fff_ffff;
        let mut h = vec![0u8; 48];
        h[0] = 0x01;
        h[1] = 0x80 | flags | 1; // F, R/W, simple task
        h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        h[9] = 1; // LUN 1
        h[16..20].copy_from_slice(&itt.to_be_bytes());
        h[20..24].copy_from_slice(&edtl.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        h[32..42].copy_from_slice(cdb);
        h.extend_from_slice(data);
        let pdu = padded(h);
        let mut from = 0;
        for &cut in cuts.iter().chain([pdu.len()].iter()) {
            self.s.write_all(&pdu[from..cut])?;
            from = cut;
        }
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        let mut got = vec![0u8; if flags & 0x40 != 0 { edtl as usize } else { 0 }];
        // Bounded: one Data-In per 512 bytes at the very least, plus pings and the status.
        for _ in 0..(edtl as usize / 512 + 64) {
            let (r, d) = read_pdu(&mut self.s)?;
            match r[0] & 0x3f {
                0x25 => {
                    if be32(&r, 16) != itt {
                        return Err(proto("Data-In for another task".into()));
                    }
                    let off = be32(&r, 40) as usize;
                    let end = off + d.len();
                    if end > got.len() {
                        return Err(proto(format!("Data-In beyond the buffer: {end}")));
                    }
                    got[off..end].copy_from_slice(&d);
                    if r[1] & 0x01 != 0 {
                        self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                        return Ok(match r[3] {
                            0 => Outcome::Good(got),
                            st => Outcome::Failed(st, 0),
                        });
                    }
                }
                0x21 => {
                    if be32(&r, 16) != itt {
                        return Err(proto("SCSI Response for another task".into()));
                    }
                    self.exp_stat_sn = be32(&r, 24).wrapping_add(1);
                    return Ok(if r[2] == 0 && r[3] == 0 {
                        Outcome::Good(got)
                    } else {
                        Outcome::Failed(r[3], r[2])
                    });
                }
                0x20 => {
                    // NOP-In: answer a ping (TTT set), ignore the rest.
                    let ttt = be32(&r, 20);
                    if ttt != 0xffff_ffff {
                        let mut n = vec![0u8; 48];
                        n[0] = 0x40;
                        n[1] = 0x80;
                        n[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
                        n[20..24].copy_from_slice(&ttt.to_be_bytes());
                        n[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
                        self.s.write_all(&n)?;
                    }
                }
                op => return Err(proto(format!("unexpected opcode {op:#x}"))),
            }
        }
        Err(proto("no status after the bounded number of PDUs".into()))
    }

    /// WRITE(10) of `data` (whole blocks, at most the target's MaxRecvDataSegmentLength and
    /// 64 KiB, all as immediate data) at `lba`; `fua` sets Force Unit Access.
    pub fn write(&mut self, lba: u32, data: &[u8], fua: bool) -> io::Result<Outcome> {
        assert!(data.len() % BLOCK == 0 && data.len() <= self.target_mrdsl.min(65536));
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[1] = if fua { 0x08 } else { 0 };
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&((data.len() / BLOCK) as u16).to_be_bytes());
        self.command(&cdb, 0x20, data.len() as u32, data)
    }

    /// `write`, with the PDU written in pieces cut at the byte offsets `cuts` (ascending,
    /// inside the PDU: 48 is the end of the BHS).
    pub fn write_cut(&mut self, lba: u32, data: &[u8], cuts: &[usize]) -> io::Result<Outcome> {
        assert!(data.len() % BLOCK == 0 && data.len() <= self.target_mrdsl.min(65536));
        assert!(cuts.windows(2).all(|w| w[0] < w[1]) && cuts.iter().all(|c| *c < 48 + data.len()));
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&((data.len() / BLOCK) as u16).to_be_bytes());
        self.command_cut(&cdb, 0x20, data.len() as u32, data, cuts)
    }

    /// READ(10) of `blocks` blocks at `lba`.
    pub fn read(&mut self, lba: u32, blocks: u16) -> io::Result<Outcome> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(&cdb, 0x40, u32::from(blocks) * BLOCK as u32, &[])
    }

    /// TEST UNIT READY until GOOD (at most 8 tries): a new session first sees the unit
    /// attentions a restart or a reinstatement raised (SAM-5 §5.14), as CHECK CONDITION.
    pub fn clear_unit_attentions(&mut self) -> io::Result<()> {
        for _ in 0..8 {
            if self.command(&[0u8; 10], 0, 0, &[])? == Outcome::Good(vec![]) {
                return Ok(());
            }
        }
        Err(proto("TEST UNIT READY never GOOD".into()))
    }

    /// Logs out (close the session) and waits for the Logout Response and the close.
    pub fn logout(mut self) -> io::Result<()> {
        let mut h = vec![0u8; 48];
        h[0] = 0x40 | 0x06;
        h[1] = 0x80;
        h[16..20].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        self.s.write_all(&h)?;
        for _ in 0..16 {
            let (r, _) = read_pdu(&mut self.s)?;
            if r[0] & 0x3f == 0x26 {
                if r[2] != 0 {
                    return Err(proto(format!("logout response {:#x}", r[2])));
                }
                return Ok(());
            }
        }
        Err(proto("no Logout Response".into()))
    }

    /// The CmdSN the next command would carry (the target's ExpCmdSN when nothing is queued).
    pub fn cmd_sn(&self) -> u32 {
        self.cmd_sn
    }

    /// The connection, for tests that misbehave on purpose after login.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.s
    }
}

/// A block whose every byte follows from (lba, generation, writer): a reader can tell which
/// write put it there, and that it is whole.
pub fn pattern_block(lba: u32, generation: u32, writer: u32) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[0..4].copy_from_slice(&lba.to_be_bytes());
    b[4..8].copy_from_slice(&generation.to_be_bytes());
    b[8..12].copy_from_slice(&writer.to_be_bytes());
    let mut x = (u64::from(lba) << 32 | u64::from(generation)) ^ u64::from(writer) << 17;
    for chunk in b[12..].chunks_mut(8) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        chunk.copy_from_slice(&x.to_be_bytes()[..chunk.len()]);
    }
    b
}

/// The (lba, generation, writer) a block read back carries, if it is a whole pattern block.
pub fn parse_block(b: &[u8]) -> Option<(u32, u32, u32)> {
    let (lba, generation, writer) = (be32(b, 0), be32(b, 4), be32(b, 8));
    (pattern_block(lba, generation, writer)[..] == b[..BLOCK]).then_some((lba, generation, writer))
}
