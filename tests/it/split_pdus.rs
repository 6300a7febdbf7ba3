//! PDUs that arrive in pieces: an initiator may write a SCSI Command's BHS and its immediate
//! data with separate calls (libiscsi does), or a PDU may be cut anywhere by TCP. The target
//! takes whatever has arrived after a receive that ended inside a PDU (`recv_rest_now` in
//! `shard/event_loop.rs`), so these check that every way of cutting a write yields the same
//! blocks on the medium, and that a PDU cut short by the peer closing writes nothing.

use crate::common;
use common::client::{pattern_block, Client, Outcome, BLOCK};
use common::Tgtd;
use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

const IQN: &str = "iqn.2026-11.io.curve-tgt:split";
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const LU_BLOCKS: u32 = 2048;
/// Blocks per write: 4 KiB, as fio's 4 KiB writes.
const WRITE_BLOCKS: u32 = 8;

fn start_with_file_lu() -> Tgtd {
    let t = Tgtd::start();
    let path = t.sparse_file("lu.img", u64::from(LU_BLOCKS) * BLOCK as u64);
    t.add_target(1, IQN);
    t.add_lun(1, 1, "rdwr", &path);
    t
}

fn login(t: &Tgtd, isid: u16) -> Client {
    let mut c = Client::login(t.port, IQN, "iqn.2026-11.test:split", isid, IO_TIMEOUT).unwrap();
    c.clear_unit_attentions().unwrap();
    c
}

/// The 4 KiB of blocks write number `i` puts at its LBA.
fn blocks_of(i: u32) -> (u32, Vec<u8>) {
    let lba = i * WRITE_BLOCKS;
    let mut data = Vec::new();
    for b in 0..WRITE_BLOCKS {
        data.extend_from_slice(&pattern_block(lba + b, 1, i));
    }
    (lba, data)
}

#[test]
fn writes_cut_anywhere_land_whole() {
    let t = start_with_file_lu();
    let mut c = login(&t, 1);
    let len = 48 + (WRITE_BLOCKS as usize) * BLOCK;
    let every_7: Vec<usize> = (1..len).step_by(7).collect();
    let cuts: Vec<Vec<usize>> = vec![
        vec![48],                   // BHS, then the data: libiscsi's way
        vec![1],                    // one byte, then the rest
        vec![47],                   // all but the BHS's last byte
        vec![48, 48 + 512],         // BHS, one block, the rest
        vec![24, 48, 100, len - 1], // inside the BHS, at its end, inside the data, one byte short
        vec![len - 1],              // everything but the last byte
        every_7,                    // 7 bytes at a time
    ];
    for (i, cut) in cuts.iter().enumerate() {
        let (lba, data) = blocks_of(i as u32);
        let out = c.write_cut(lba, &data, cut).unwrap();
        assert_eq!(out, Outcome::Good(vec![]), "write {i} cut at {cut:?}");
    }
    // Read back on a second session, so nothing on the first connection is reused.
    let mut r = login(&t, 2);
    for (i, cut) in cuts.iter().enumerate() {
        let (lba, want) = blocks_of(i as u32);
        match r.read(lba, WRITE_BLOCKS as u16).unwrap() {
            Outcome::Good(got) => {
                assert!(got == want, "blocks of write {i} (cut at {cut:?}) differ")
            }
            other => panic!("read of write {i}: {other:?}"),
        }
    }
    c.logout().unwrap();
    r.logout().unwrap();
}

#[test]
fn a_write_cut_short_by_the_peer_closing_writes_nothing() {
    let t = start_with_file_lu();
    let mut c = login(&t, 3);
    let (lba, data) = blocks_of(40);
    // The BHS of a 4 KiB WRITE(10) with all its data immediate, then half the data, then the
    // initiator stops sending.
    let mut h = vec![0u8; 48];
    h[0] = 0x01;
    h[1] = 0x80 | 0x20 | 1;
    h[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    h[9] = 1;
    h[16..20].copy_from_slice(&0x1234u32.to_be_bytes());
    h[20..24].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[24..28].copy_from_slice(&c.cmd_sn().to_be_bytes());
    h[32] = 0x2a;
    h[34..38].copy_from_slice(&lba.to_be_bytes());
    h[39..41].copy_from_slice(&(WRITE_BLOCKS as u16).to_be_bytes());
    let s = c.stream();
    std::io::Write::write_all(s, &h).unwrap();
    std::io::Write::write_all(s, &data[..data.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    // The target closes the connection without answering (bounded: the read timeout).
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the target neither answered nor closed: {e}"),
        }
    }
    assert!(
        rest.is_empty(),
        "the target answered a PDU it never got whole: {rest:?}"
    );
    let mut r = login(&t, 4);
    match r.read(lba, WRITE_BLOCKS as u16).unwrap() {
        Outcome::Good(got) => assert!(
            got.iter().all(|b| *b == 0),
            "half a write reached the medium"
        ),
        other => panic!("read back: {other:?}"),
    }
    r.logout().unwrap();
}
