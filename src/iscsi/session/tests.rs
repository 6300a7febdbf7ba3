//! Session tests: a scripted initiator feeds PDUs to one `Session` and reads what it queued.

use super::*;
use crate::iscsi::ids::Itt;
use crate::iscsi::pdu::op;
use crate::iscsi::rx::{next_pdu, RxStep};
use crate::scsi::{DataIn, NexusId, Response, ScsiStatus};
use std::sync::Arc;

fn session(params: FfpParams) -> Session {
    let nexus = NexusState::new(NexusId {
        tid: 1,
        initiator_port: Arc::from("iqn.x,i,0x000000000001"),
    });
    Session::new(
        Kind::Normal { tid: 1 },
        Tsih(1),
        Cid(0),
        Isid::default(),
        "iqn.x".into(),
        params,
        Some(nexus),
        CmdSn(10),
        StatSn(100),
        BufPool::new(),
    )
}

fn cmd_pdu(itt: u32, cmd_sn: u32, read: bool, write: bool, edtl: u32, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; BHS_LEN];
    b[0] = op::SCSI_CMD;
    b[1] = 0x80 | if read { 0x40 } else { 0 } | if write { 0x20 } else { 0 } | 1;
    b[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    b[9] = 1;
    b[16..20].copy_from_slice(&itt.to_be_bytes());
    b[20..24].copy_from_slice(&edtl.to_be_bytes());
    b[24..28].copy_from_slice(&cmd_sn.to_be_bytes());
    b[32] = if write { 0x2a } else { 0x28 };
    b.extend_from_slice(data);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

fn data_out(itt: u32, ttt: u32, offset: u32, final_: bool, data: &[u8]) -> Vec<u8> {
    data_out_sn(itt, ttt, 0, offset, final_, data)
}

fn data_out_sn(itt: u32, ttt: u32, sn: u32, offset: u32, final_: bool, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; BHS_LEN];
    b[36..40].copy_from_slice(&sn.to_be_bytes());
    b[0] = op::DATA_OUT;
    b[1] = if final_ { 0x80 } else { 0 };
    b[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    b[16..20].copy_from_slice(&itt.to_be_bytes());
    b[20..24].copy_from_slice(&ttt.to_be_bytes());
    b[40..44].copy_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(data);
    b
}

fn feed(s: &mut Session, wire: &[u8]) {
    match next_pdu(wire, s.rx_limits()) {
        RxStep::Pdu { pdu, len } => {
            assert_eq!(len, wire.len());
            s.on_pdu(&pdu, wire, 0);
        }
        other => panic!("{other:?}"),
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn good(data: DataIn) -> Response {
    Response {
        status: ScsiStatus::Good,
        sense: Vec::new(),
        data,
        effects: Vec::new(),
    }
}

#[test]
fn read_gets_collapsed_data_in_and_window_moves() {
    let mut s = session(FfpParams {
        max_xmit_data: 4096,
        ..Default::default()
    });
    feed(&mut s, &cmd_pdu(1, 10, true, false, 8192, &[]));
    assert_eq!(s.exp_cmd_sn(), CmdSn(11));
    // One task outstanding: the window is one smaller.
    assert_eq!(s.current_max_cmd_sn(), CmdSn(11 + 511 - 1));
    let r = s.next_ready().expect("read is ready at once");
    s.finish(r, good(DataIn::Bytes(vec![7u8; 8192])), None);
    assert_eq!(s.out.len(), 2, "two Data-In PDUs of 4096");
    let first = s.out[0].bhs();
    let last = s.out[1].bhs();
    assert_eq!(first[0], op::DATA_IN);
    assert_eq!(first[1] & 0x81, 0, "first PDU: no F, no S");
    assert_eq!(last[1] & 0x81, 0x81, "last PDU: F and S (phase collapse)");
    assert_eq!(be32(last, 24), 100, "StatSN of the status-bearing PDU");
    assert_eq!(be32(last, 36), 1, "DataSN");
    assert_eq!(be32(last, 40), 4096, "buffer offset");
    assert_eq!(
        be32(last, 32),
        11 + 512 - 1,
        "MaxCmdSN reopened after completion"
    );
}

#[test]
fn the_status_pdu_carries_the_latency_mark_and_counters_follow_tgt() {
    use crate::iscsi::stats::IoDir;
    let mut s = session(FfpParams {
        max_xmit_data: 4096,
        ..Default::default()
    });
    // A read that produces two Data-In PDUs: only the last (with the status) is marked.
    feed(&mut s, &cmd_pdu(1, 10, true, false, 8192, &[]));
    let r = s.next_ready().unwrap();
    s.stats.submitted(Lun(1), true, false, 8192);
    s.finish(r, good(DataIn::Bytes(vec![0u8; 8192])), None);
    assert_eq!(s.out.len(), 2);
    assert_eq!(s.out[0].mark, None);
    let m = s.out[1].mark.expect("status PDU marked");
    assert_eq!((m.lun, m.dir), (Lun(1), IoDir::Read));
    // A write ending in CHECK CONDITION: the SCSI Response is marked, the error counted.
    s.out.clear();
    feed(&mut s, &cmd_pdu(2, 11, false, true, 512, &[0u8; 512]));
    let r = s.next_ready().unwrap();
    s.stats.submitted(Lun(1), false, true, 512);
    let check = Response {
        status: ScsiStatus::CheckCondition,
        sense: vec![0x70, 0, 5],
        data: DataIn::None,
        effects: Vec::new(),
    };
    s.finish(r, check, Some(512));
    assert_eq!(s.out.len(), 1);
    assert_eq!(s.out[0].bhs()[0], op::SCSI_RSP);
    assert_eq!(s.out[0].mark.map(|m| m.dir), Some(IoDir::Write));
    let c = s.stats.lus[0].1;
    assert_eq!((c.rd_done_bytes, c.rd_done_cmds), (8192, 1));
    assert_eq!((c.wr_done_bytes, c.wr_done_cmds, c.errs), (512, 1, 1));
    let k = s.stats.conn;
    assert_eq!((k.cmd_pdus, k.datain_pdus, k.rsp_pdus), (2, 2, 1));
    // A command to a LUN never submitted (no such LU) is neither counted nor timed.
    s.out.clear();
    let mut pdu = cmd_pdu(3, 12, true, false, 512, &[]);
    pdu[9] = 7;
    feed(&mut s, &pdu);
    let r = s.next_ready().unwrap();
    s.finish(r, good(DataIn::Bytes(vec![0u8; 512])), None);
    assert!(s.out.iter().all(|p| p.mark.is_none()));
    assert_eq!(s.stats.lus.len(), 1);
}

#[test]
fn short_read_reports_underflow_residual() {
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 10, true, false, 4096, &[]));
    let r = s.next_ready().unwrap();
    s.finish(r, good(DataIn::Bytes(vec![1u8; 512])), None);
    let b = s.out[0].bhs();
    assert_eq!(b[1] & 0x03, 0x03, "S and U bits");
    assert_eq!(be32(b, 44), 4096 - 512);
}

#[test]
fn write_with_immediate_data_then_r2t() {
    let mut s = session(FfpParams {
        max_burst: 4096,
        max_outstanding_r2t: 1,
        ..Default::default()
    });
    let imm = vec![1u8; 1024];
    feed(&mut s, &cmd_pdu(5, 10, false, true, 9216, &imm));
    assert!(s.next_ready().is_none(), "data still missing");
    assert_eq!(s.out.len(), 1);
    let r2t = s.out.pop_front().unwrap();
    let b = r2t.bhs();
    assert_eq!(b[0], op::R2T);
    assert_eq!(be32(b, 40), 1024, "R2T starts after the immediate data");
    assert_eq!(be32(b, 44), 4096, "limited by MaxBurstLength");
    let ttt = be32(b, 20);
    feed(&mut s, &data_out(5, ttt, 1024, false, &vec![2u8; 2048]));
    assert!(s.out.is_empty(), "no new R2T mid-burst");
    feed(
        &mut s,
        &data_out_sn(5, ttt, 1, 3072, true, &vec![3u8; 2048]),
    );
    let r2 = s.out.pop_front().expect("second R2T");
    assert_eq!(be32(r2.bhs(), 40), 5120);
    assert_eq!(be32(r2.bhs(), 44), 4096);
    assert_eq!(be32(r2.bhs(), 36), 1, "R2TSN");
    let ttt2 = be32(r2.bhs(), 20);
    feed(&mut s, &data_out(5, ttt2, 5120, true, &vec![4u8; 4096]));
    let r = s.next_ready().expect("all data in");
    let t = s.task(r).unwrap();
    assert_eq!(t.data_out().len(), 9216);
    assert_eq!(t.data_out()[0], 1);
    assert_eq!(t.data_out()[1024], 2);
    assert_eq!(t.data_out()[5120], 4);
    s.finish(r, good(DataIn::None), None);
    let rsp = s.out.pop_front().unwrap();
    assert_eq!(rsp.bhs()[0], op::SCSI_RSP);
    assert_eq!(rsp.bhs()[3], 0);
}

/// Issue 11 item 6: a WRITE's expected length buys it no buffer. Only arrived bytes are
/// held until the data is solicited; the full buffer comes from the shard's write budget
/// before the first R2T, and with no room the R2T waits (the writer is paced, not memory).
#[test]
fn write_buffers_come_from_the_budget_and_r2ts_wait_for_room() {
    let mut s = session(FfpParams {
        max_burst: 4096,
        ..Default::default()
    });
    let budget = WriteBudget::new(8192);
    s.set_write_budget(budget.clone());
    // A: 8 KiB, all solicited: its buffer is taken, its first R2T goes out.
    feed(&mut s, &cmd_pdu(1, 10, false, true, 8192, &[]));
    assert_eq!(budget.used_bytes(), 8192);
    let r2t = s.out.pop_front().expect("R2T for A");
    assert_eq!(be32(r2t.bhs(), 16), 1);
    // B: 4 KiB with 512 bytes of immediate data: only those are held; no room, no R2T.
    feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[9u8; 512]));
    assert_eq!(budget.used_bytes(), 8192 + 512);
    assert!(s.out.is_empty(), "B's R2T waits for room");
    assert!(s.writes_waiting());
    // C: 32 MiB expected, held behind a CmdSN gap: nothing is allocated for it.
    feed(&mut s, &cmd_pdu(3, 13, false, true, 32 << 20, &[]));
    assert_eq!(budget.used_bytes(), 8192 + 512);
    // A's data arrives and A finishes: its 8 KiB go back and B's R2T goes out.
    let ttt = be32(r2t.bhs(), 20);
    feed(&mut s, &data_out(1, ttt, 0, true, &[1u8; 4096]));
    let ttt = be32(s.out.pop_front().expect("A's second R2T").bhs(), 20);
    feed(&mut s, &data_out(1, ttt, 4096, true, &[1u8; 4096]));
    let a = s.next_ready().expect("A complete");
    s.finish(a, good(DataIn::None), Some(8192));
    assert_eq!(
        budget.used_bytes(),
        4096,
        "B's whole buffer, its 512 bytes included"
    );
    let r2t = s
        .out
        .iter()
        .find(|p| p.bhs()[0] == op::R2T)
        .expect("B's R2T after A finished");
    assert_eq!((be32(r2t.bhs(), 16), be32(r2t.bhs(), 40)), (2, 512));
    let ttt = be32(r2t.bhs(), 20);
    feed(&mut s, &data_out(2, ttt, 512, true, &[2u8; 3584]));
    let b = s.next_ready().expect("B complete");
    let data = s.task(b).unwrap().data_out();
    assert_eq!((data.len(), data[0], data[511], data[512]), (4096, 9, 9, 2));
    s.abort_everything();
    assert_eq!(
        budget.used_bytes(),
        4096,
        "B runs: its buffer stays until it completes"
    );
    assert!(s.finish(b, good(DataIn::None), Some(4096)).is_none());
    assert_eq!(budget.used_bytes(), 0, "every byte given back");
}

#[test]
fn data_outside_r2t_is_rejected() {
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(5, 10, false, true, 4096, &[]));
    let r2t = s.out.pop_front().unwrap();
    let ttt = be32(r2t.bhs(), 20);
    feed(&mut s, &data_out(5, ttt, 4000, true, &[0u8; 200]));
    assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
    // Unsolicited data is not allowed with InitialR2T=Yes.
    feed(&mut s, &data_out(5, 0xffff_ffff, 0, true, &[0u8; 100]));
    assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
}

/// RFC 7143 §7.9 / §7.8.2 b: a Data-Out with the wrong DataSN ends the task with CHECK
/// CONDITION, ABORTED COMMAND, 47h/05h once all its data is in; nothing reaches SCSI.
#[test]
fn wrong_data_sn_fails_the_task() {
    // (DataSN of the first PDU, of the second PDU); None: a single 1024-byte PDU.
    for sns in [
        (0u32, Some(0u32)),
        (27, None),
        (u32::MAX, None),
        (1, Some(0)),
    ] {
        let mut s = session(FfpParams::default());
        feed(&mut s, &cmd_pdu(5, 10, false, true, 1024, &[]));
        let r2t = s.out.pop_front().unwrap();
        let ttt = be32(r2t.bhs(), 20);
        match sns {
            (a, Some(b)) => {
                feed(&mut s, &data_out_sn(5, ttt, a, 0, false, &[1u8; 512]));
                assert!(s.out.is_empty(), "{sns:?}: waits for the rest of the data");
                feed(&mut s, &data_out_sn(5, ttt, b, 512, true, &[1u8; 512]));
            }
            (a, None) => feed(&mut s, &data_out_sn(5, ttt, a, 0, true, &[1u8; 1024])),
        }
        assert!(s.next_ready().is_none(), "{sns:?}: not run");
        let rsp = s.out.pop_front().expect("SCSI Response");
        let b = rsp.bhs();
        assert_eq!(b[0], op::SCSI_RSP);
        assert_eq!(b[3], ScsiStatus::CheckCondition as u8);
        let sense = &rsp.payload.bytes()[2..];
        assert_eq!((sense[2], sense[12], sense[13]), (0x0b, 0x47, 0x05));
        assert_eq!(s.task_count(), 0);
    }
    // In-sequence DataSNs (0, 1) run normally.
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(5, 10, false, true, 1024, &[]));
    let ttt = be32(s.out.pop_front().unwrap().bhs(), 20);
    feed(&mut s, &data_out_sn(5, ttt, 0, 0, false, &[1u8; 512]));
    feed(&mut s, &data_out_sn(5, ttt, 1, 512, true, &[1u8; 512]));
    assert!(s.next_ready().is_some());
}

#[test]
fn repeated_or_skipped_data_out_cannot_complete_a_write() {
    let mut s = session(FfpParams {
        max_burst: 4096,
        ..Default::default()
    });
    feed(&mut s, &cmd_pdu(5, 10, false, true, 4096, &[]));
    let r2t = s.out.pop_front().unwrap();
    let ttt = be32(r2t.bhs(), 20);
    feed(&mut s, &data_out(5, ttt, 0, false, &[1u8; 2048]));
    // The same 2 KiB again would make the byte count whole while 2048.. stays unwritten.
    feed(&mut s, &data_out(5, ttt, 0, true, &[1u8; 2048]));
    assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
    assert!(s.next_ready().is_none(), "a write with a hole must not run");
    // Skipping ahead is refused too; the in-order PDU completes it.
    feed(&mut s, &data_out(5, ttt, 3072, true, &[2u8; 1024]));
    assert_eq!(s.out.pop_front().unwrap().bhs()[0], op::REJECT);
    let mut last = data_out(5, ttt, 2048, true, &[2u8; 2048]);
    last[36..40].copy_from_slice(&1u32.to_be_bytes()); // DataSN 1 of this R2T's sequence
    feed(&mut s, &last);
    let r = s.next_ready().expect("all 4096 bytes placed");
    assert_eq!(s.task(r).unwrap().data_out()[4095], 2);
}

#[test]
fn out_of_window_commands_are_ignored() {
    let mut s = session(FfpParams {
        max_queue_cmd: 4,
        ..Default::default()
    });
    feed(&mut s, &cmd_pdu(1, 9, true, false, 512, &[]));
    assert_eq!(s.task_count(), 0, "CmdSN below ExpCmdSN dropped");
    feed(&mut s, &cmd_pdu(2, 10 + 4, true, false, 512, &[]));
    assert_eq!(s.task_count(), 0, "CmdSN beyond MaxCmdSN dropped");
    // A CmdSN ahead of a gap is held until the gap fills.
    feed(&mut s, &cmd_pdu(3, 11, true, false, 512, &[]));
    assert_eq!(s.task_count(), 1);
    assert!(s.next_ready().is_none());
    feed(&mut s, &cmd_pdu(4, 10, true, false, 512, &[]));
    assert_eq!(s.exp_cmd_sn(), CmdSn(12));
    let a = s.next_ready().unwrap();
    let b = s.next_ready().unwrap();
    assert_eq!(s.task(a).unwrap().itt, Itt(4));
    assert_eq!(s.task(b).unwrap().itt, Itt(3));
}

/// Issue 11 item 1: 257 commands held ahead of a gap must not shrink the window below
/// what was advertised, and every one of them runs once the gap fills.
#[test]
fn held_commands_keep_the_advertised_window() {
    let mut s = session(FfpParams::default());
    let advertised = s.current_max_cmd_sn();
    assert_eq!(advertised, CmdSn(10 + 511));
    for i in 1..=257u32 {
        feed(&mut s, &cmd_pdu(i, 10 + i, true, false, 512, &[]));
        assert_eq!(
            s.current_max_cmd_sn(),
            advertised,
            "MaxCmdSN after {i} held"
        );
    }
    // The last advertised CmdSN is still taken; one beyond it is not.
    feed(&mut s, &cmd_pdu(600, 10 + 511, true, false, 512, &[]));
    feed(&mut s, &cmd_pdu(601, 10 + 512, true, false, 512, &[]));
    assert_eq!(s.task_count(), 258);
    feed(&mut s, &cmd_pdu(0, 10, true, false, 512, &[]));
    let mut itts = Vec::new();
    while let Some(r) = s.next_ready() {
        itts.push(s.task(r).unwrap().itt.0);
    }
    assert_eq!(itts, (0..=257).collect::<Vec<_>>(), "in CmdSN order");
    assert_eq!(s.exp_cmd_sn(), CmdSn(10 + 258));
    assert_eq!(s.current_max_cmd_sn(), advertised, "never backwards");
}

/// RFC 7143 §3.2.2.1: a non-immediate duplicate within the window is silently ignored,
/// whether the first copy is held or already ran.
#[test]
fn duplicate_cmd_sns_are_ignored() {
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 11, true, false, 512, &[]));
    feed(&mut s, &cmd_pdu(2, 11, true, false, 512, &[]));
    assert_eq!(s.task_count(), 1, "held duplicate dropped");
    feed(&mut s, &cmd_pdu(3, 10, true, false, 512, &[]));
    feed(&mut s, &cmd_pdu(4, 10, true, false, 512, &[]));
    assert_eq!(s.task_count(), 2, "duplicate of a running command dropped");
    assert_eq!(s.exp_cmd_sn(), CmdSn(12));
    assert!(s.out.is_empty(), "silently: no Reject");
    // An aborted held command leaves no gap behind it.
    feed(&mut s, &cmd_pdu(5, 13, true, false, 512, &[]));
    s.abort_everything();
    feed(&mut s, &cmd_pdu(6, 12, true, false, 512, &[]));
    assert_eq!(s.exp_cmd_sn(), CmdSn(14));
}

/// A non-immediate NOP-Out ahead of a CmdSN gap is answered at once and its CmdSN counted
/// as used: once the gap fills, ExpCmdSN passes it (before, it was never counted and the
/// session stalled at that CmdSN). A second NOP-Out with the same CmdSN is a duplicate.
#[test]
fn requests_ahead_of_a_gap_leave_no_hole() {
    let mut s = session(FfpParams::default());
    let mut nop = vec![0u8; BHS_LEN];
    nop[0] = op::NOP_OUT;
    nop[1] = 0x80;
    nop[16..20].copy_from_slice(&9u32.to_be_bytes());
    nop[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    nop[24..28].copy_from_slice(&11u32.to_be_bytes());
    feed(&mut s, &nop);
    assert_eq!(s.out.pop_front().expect("echoed").bhs()[0], op::NOP_IN);
    feed(&mut s, &nop);
    assert!(s.out.is_empty(), "duplicate CmdSN ignored");
    feed(&mut s, &cmd_pdu(1, 10, true, false, 512, &[]));
    assert_eq!(
        s.exp_cmd_sn(),
        CmdSn(12),
        "past the command and the NOP-Out"
    );
    feed(&mut s, &cmd_pdu(2, 12, true, false, 512, &[]));
    assert_eq!(s.task_count(), 2);
}

#[test]
fn queue_depth_512_never_closes_the_window_early() {
    let mut s = session(FfpParams::default());
    for i in 0..512u32 {
        feed(&mut s, &cmd_pdu(i, 10 + i, true, false, 4096, &[]));
    }
    assert_eq!(s.task_count(), 512);
    assert_eq!(
        s.current_max_cmd_sn(),
        CmdSn(10 + 512 - 1),
        "window closed only when full"
    );
    let r = s.next_ready().unwrap();
    s.finish(r, good(DataIn::Bytes(vec![0; 4096])), None);
    assert_eq!(s.current_max_cmd_sn(), CmdSn(10 + 512), "one slot reopens");
}

#[test]
fn nop_out_is_echoed_and_abort_task_works() {
    let mut s = session(FfpParams::default());
    let mut nop = vec![0u8; BHS_LEN];
    nop[0] = 0x40 | op::NOP_OUT;
    nop[1] = 0x80;
    nop[7] = 4;
    nop[16..20].copy_from_slice(&9u32.to_be_bytes());
    nop[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    nop.extend_from_slice(b"ping");
    feed(&mut s, &nop);
    let r = s.out.pop_front().unwrap();
    assert_eq!(r.bhs()[0], op::NOP_IN);
    assert_eq!(be32(r.bhs(), 16), 9);
    assert_eq!(r.payload.bytes(), b"ping");

    feed(&mut s, &cmd_pdu(7, 10, false, true, 4096, &[]));
    s.out.clear();
    let mut tmf = vec![0u8; BHS_LEN];
    tmf[0] = 0x40 | op::TASK_MGMT;
    tmf[1] = 0x80 | 1;
    tmf[9] = 1;
    tmf[16..20].copy_from_slice(&20u32.to_be_bytes());
    tmf[20..24].copy_from_slice(&7u32.to_be_bytes());
    tmf[24..28].copy_from_slice(&11u32.to_be_bytes());
    feed(&mut s, &tmf);
    let r = s.out.pop_front().unwrap();
    assert_eq!(r.bhs()[0], op::TASK_MGMT_RSP);
    assert_eq!(r.bhs()[2], 0, "function complete");
    assert_eq!(s.task_count(), 0);
    // Aborting it again: the tag no longer exists.
    tmf[16..20].copy_from_slice(&21u32.to_be_bytes());
    tmf[32..36].copy_from_slice(&(11u32 + 2000).to_be_bytes());
    feed(&mut s, &tmf);
    assert_eq!(
        s.out.pop_front().unwrap().bhs()[2],
        1,
        "task does not exist"
    );
    // A command that already finished (RefCmdSN below ExpCmdSN): does not exist.
    tmf[32..36].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &tmf);
    assert_eq!(s.out.pop_front().unwrap().bhs()[2], 1, "finished task");
    // A command not received yet (RefCmdSN == ExpCmdSN, below the immediate TMF's
    // CmdSN): considered received, function complete.
    tmf[24..28].copy_from_slice(&(s.exp_cmd_sn().0 + 1).to_be_bytes());
    tmf[32..36].copy_from_slice(&s.exp_cmd_sn().0.to_be_bytes());
    feed(&mut s, &tmf);
    assert_eq!(s.out.pop_front().unwrap().bhs()[2], 0, "lost command");
}

#[test]
fn unanswered_pings_close_the_connection() {
    let mut s = session(FfpParams::default());
    // interval 2 s, tolerate 1 unanswered ping.
    assert!(!s.nop_tick(2, 1));
    assert!(s.out.is_empty());
    assert!(!s.nop_tick(2, 1));
    let ping = s.out.pop_front().expect("a ping after 2 s");
    assert_eq!(ping.bhs()[0], op::NOP_IN);
    assert_eq!(be32(ping.bhs(), 16), 0xffff_ffff, "ITT reserved");
    let ttt = be32(ping.bhs(), 20);
    assert_ne!(ttt, 0xffff_ffff, "a TTT to echo");
    // The initiator answers: the count resets.
    let mut nop = vec![0u8; BHS_LEN];
    nop[0] = 0x40 | op::NOP_OUT;
    nop[1] = 0x80;
    nop[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    nop[20..24].copy_from_slice(&ttt.to_be_bytes());
    feed(&mut s, &nop);
    assert_eq!(s.pings_unanswered, 0);
    // Two pings go unanswered; at the third interval the connection must close.
    for _ in 0..4 {
        assert!(!s.nop_tick(2, 1));
    }
    assert_eq!(s.pings_unanswered, 2);
    assert!(!s.nop_tick(2, 1));
    assert!(s.nop_tick(2, 1), "more than nop_count unanswered");
    assert!(!s.nop_tick(0, 1), "interval 0 turns pings off");
}

#[test]
fn logout_closes_after_response() {
    let mut s = session(FfpParams::default());
    let mut l = vec![0u8; BHS_LEN];
    l[0] = 0x40 | op::LOGOUT;
    l[1] = 0x80;
    l[16..20].copy_from_slice(&3u32.to_be_bytes());
    l[24..28].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &l);
    let r = s.out.pop_front().unwrap();
    assert_eq!(r.bhs()[0], op::LOGOUT_RSP);
    assert_eq!(r.bhs()[2], 0);
    assert_eq!(s.close, Some(CloseAfter::Flush));
}

#[test]
fn check_condition_carries_sense_in_response() {
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 10, true, false, 512, &[]));
    let r = s.next_ready().unwrap();
    let sense = vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    s.finish(
        r,
        Response {
            status: ScsiStatus::CheckCondition,
            sense: sense.clone(),
            data: DataIn::None,
            effects: Vec::new(),
        },
        None,
    );
    let p = s.out.pop_front().unwrap();
    assert_eq!(p.bhs()[0], op::SCSI_RSP);
    assert_eq!(p.bhs()[3], 2);
    assert_eq!(&p.payload.bytes()[..2], &(sense.len() as u16).to_be_bytes());
    assert_eq!(&p.payload.bytes()[2..], &sense[..]);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any arrival order of the CmdSNs of an advertised window, with duplicates mixed in:
        /// every command runs exactly once and in CmdSN order, none is refused, MaxCmdSN never
        /// moves back, and the window is whole again once all have finished.
        #[test]
        fn any_order_inside_the_window_runs_everything_once(
            order in proptest::sample::subsequence((0u32..48).collect::<Vec<_>>(), 48)
                .prop_shuffle(),
            dups in proptest::collection::vec(0usize..48, 0..16),
            finish_every in 1usize..8,
        ) {
            let depth = 48u32;
            let mut s = session(FfpParams { max_queue_cmd: depth, ..Default::default() });
            let mut max = s.current_max_cmd_sn();
            let mut ran = Vec::new();
            let mut fed = 0usize;
            for (k, &i) in order.iter().enumerate() {
                feed(&mut s, &cmd_pdu(i, 10 + i, true, false, 512, &[]));
                fed += 1;
                // Duplicates of CmdSNs already sent, under ITTs of their own.
                if let Some(&d) = dups.get(k).filter(|&&d| d < k) {
                    let j = order[d];
                    feed(&mut s, &cmd_pdu(1000 + j, 10 + j, true, false, 512, &[]));
                }
                prop_assert!(s.out.iter().all(|p| p.bhs()[0] != op::REJECT), "no Reject");
                prop_assert!(!s.current_max_cmd_sn().lt(max), "MaxCmdSN went back");
                max = s.current_max_cmd_sn();
                if fed % finish_every == 0 {
                    while let Some(r) = s.next_ready() {
                        ran.push(s.task(r).unwrap().itt.0);
                        s.finish(r, good(DataIn::Bytes(vec![0; 512])), None);
                        prop_assert!(!s.current_max_cmd_sn().lt(max));
                        max = s.current_max_cmd_sn();
                    }
                }
            }
            while let Some(r) = s.next_ready() {
                ran.push(s.task(r).unwrap().itt.0);
                s.finish(r, good(DataIn::Bytes(vec![0; 512])), None);
            }
            prop_assert_eq!(ran, (0..depth).collect::<Vec<_>>());
            prop_assert_eq!(s.task_count(), 0);
            prop_assert_eq!(s.exp_cmd_sn(), CmdSn(10 + depth));
            prop_assert_eq!(s.current_max_cmd_sn(), CmdSn(10 + depth + depth - 1));
        }
    }
}

/// A write waiting for room in the write budget gets its R2T when an aborted task gives its
/// buffer back, not only when a task finishes: otherwise the writer waits for ever (its
/// session may have nothing else running to finish).
#[test]
fn aborting_a_write_admits_the_write_waiting_for_its_room() {
    let mut s = session(FfpParams {
        max_burst: 8192,
        ..Default::default()
    });
    let budget = WriteBudget::new(8192);
    s.set_write_budget(budget.clone());
    feed(&mut s, &cmd_pdu(1, 10, false, true, 8192, &[]));
    assert_eq!(s.out.pop_front().expect("A's R2T").bhs()[0], op::R2T);
    feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[]));
    assert!(s.writes_waiting(), "B waits for room");
    assert!(s.out.is_empty());
    // ABORT TASK A (immediate).
    let mut tmf = vec![0u8; BHS_LEN];
    tmf[0] = 0x40 | op::TASK_MGMT;
    tmf[1] = 0x80 | 1;
    tmf[9] = 1;
    tmf[16..20].copy_from_slice(&20u32.to_be_bytes());
    tmf[20..24].copy_from_slice(&1u32.to_be_bytes());
    tmf[24..28].copy_from_slice(&12u32.to_be_bytes());
    tmf[32..36].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &tmf);
    assert!(!s.writes_waiting(), "B admitted once A's buffer is back");
    assert_eq!(budget.used_bytes(), 4096, "only B's buffer is held");
    let r2t = s
        .out
        .iter()
        .find(|p| p.bhs()[0] == op::R2T)
        .expect("B's R2T after A was aborted");
    assert_eq!(be32(r2t.bhs(), 16), 2);
    let rsp = s
        .out
        .iter()
        .find(|p| p.bhs()[0] == op::TASK_MGMT_RSP)
        .expect("TMF response");
    assert_eq!(rsp.bhs()[2], 0, "function complete");
}

/// RFC 7143 §11.4.8: a SCSI Response after Data-In carries ExpDataSN, the number of Data-In
/// PDUs sent. PDUs are also cut at every MaxBurstLength boundary, so when MaxBurstLength is
/// not a multiple of the initiator's MaxRecvDataSegmentLength there are more of them than
/// len / MaxRecvDataSegmentLength.
#[test]
fn exp_data_sn_counts_the_data_in_pdus_sent() {
    let mut s = session(FfpParams {
        max_xmit_data: 8192,
        max_burst: 12288,
        ..Default::default()
    });
    feed(&mut s, &cmd_pdu(1, 10, true, false, 24576, &[]));
    let r = s.next_ready().expect("read is ready at once");
    let resp = Response {
        status: ScsiStatus::CheckCondition,
        sense: vec![0x70, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0],
        data: DataIn::Bytes(vec![5u8; 24576]),
        effects: Vec::new(),
    };
    s.finish(r, resp, None);
    let data_ins = s.out.iter().filter(|p| p.bhs()[0] == op::DATA_IN).count();
    assert_eq!(data_ins, 4, "8192 + 4096 (burst end) + 8192 + 4096");
    let rsp = s.out.back().expect("SCSI Response");
    assert_eq!(rsp.bhs()[0], op::SCSI_RSP);
    assert_eq!(be32(rsp.bhs(), 36), 4, "ExpDataSN");
}
#[test]
fn an_r2t_never_advertises_a_smaller_max_cmd_sn() {
    // Found by the `session` fuzz target: the R2T for an in-order write was stamped before
    // ExpCmdSN moved past the write, so its MaxCmdSN was one below the previous PDU's.
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 10, false, false, 0, &[]));
    let r = s.next_ready().unwrap();
    s.finish(r, good(DataIn::None), None);
    let rsp = s.out.pop_front().unwrap();
    let max_before = be32(rsp.bhs(), 32);
    feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[]));
    let r2t = s.out.pop_front().expect("R2T");
    assert_eq!(r2t.bhs()[0], op::R2T);
    assert_eq!(be32(r2t.bhs(), 28), 12, "ExpCmdSN already past the write");
    assert!(be32(r2t.bhs(), 32) >= max_before, "MaxCmdSN stepped back");
}

#[test]
fn a_nop_out_filling_a_cmd_sn_gap_starts_the_commands_behind_it() {
    // Found by the `session` fuzz target: ExpCmdSN moved past a NOP-Out without looking
    // at held commands, so the one queued at the next CmdSN never started.
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 11, false, false, 0, &[]));
    assert!(s.next_ready().is_none(), "CmdSN 11 waits for 10");
    let mut nop = vec![0u8; BHS_LEN];
    nop[0] = op::NOP_OUT;
    nop[1] = 0x80;
    nop[16..20].copy_from_slice(&7u32.to_be_bytes());
    nop[20..24].copy_from_slice(&[0xff; 4]);
    nop[24..28].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &nop);
    assert_eq!(s.exp_cmd_sn(), CmdSn(12));
    let r = s.next_ready().expect("the held command started");
    assert_eq!(s.task(r).unwrap().cmd_sn, CmdSn(11));
}

#[test]
fn an_aborted_held_command_still_lets_exp_cmd_sn_pass() {
    // Found by the `session` fuzz target: ABORT TASK SET removed a command held behind a
    // CmdSN gap, and when the gap filled ExpCmdSN stopped at the aborted command's CmdSN,
    // so every later command waited for ever.
    let mut s = session(FfpParams::default());
    feed(&mut s, &cmd_pdu(1, 11, false, false, 0, &[]));
    let mut tmf = vec![0u8; BHS_LEN];
    tmf[0] = 0x40 | op::TASK_MGMT;
    tmf[1] = 0x80 | 2;
    tmf[9] = 1;
    tmf[16..20].copy_from_slice(&20u32.to_be_bytes());
    tmf[24..28].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &tmf);
    assert_eq!(s.task_count(), 0, "aborted");
    feed(&mut s, &cmd_pdu(2, 10, false, false, 0, &[]));
    assert_eq!(s.exp_cmd_sn(), CmdSn(12), "past the aborted CmdSN 11");
    feed(&mut s, &cmd_pdu(3, 12, false, false, 0, &[]));
    let mut cmd_sns = Vec::new();
    while let Some(r) = s.next_ready() {
        cmd_sns.push(s.task(r).unwrap().cmd_sn);
    }
    assert_eq!(cmd_sns, vec![CmdSn(10), CmdSn(12)]);
}

/// A full window is closed (MaxCmdSN = ExpCmdSN - 1): a command carrying CmdSN = ExpCmdSN
/// is then outside [ExpCmdSN, MaxCmdSN] and silently ignored (RFC 7143 §3.2.2.1), not run
/// beyond MaxQueueCmd. Found by the session fuzz target with MaxQueueCmd 1.
#[test]
fn a_closed_window_ignores_the_command_at_exp_cmd_sn() {
    let mut s = session(FfpParams {
        max_queue_cmd: 1,
        ..Default::default()
    });
    feed(&mut s, &cmd_pdu(1, 10, true, false, 512, &[]));
    let a = s.next_ready().expect("first command runs");
    assert_eq!(s.exp_cmd_sn(), CmdSn(11));
    assert_eq!(s.current_max_cmd_sn(), CmdSn(10), "closed: ExpCmdSN - 1");
    feed(&mut s, &cmd_pdu(2, 11, true, false, 512, &[]));
    assert_eq!(s.task_count(), 1, "CmdSN 11 beyond MaxCmdSN 10 dropped");
    assert_eq!(s.exp_cmd_sn(), CmdSn(11), "and not consumed");
    assert!(s.out.is_empty(), "silently");
    s.finish(a, good(DataIn::Bytes(vec![0u8; 512])), None);
    assert_eq!(s.current_max_cmd_sn(), CmdSn(11), "reopened");
    feed(&mut s, &cmd_pdu(3, 11, true, false, 512, &[]));
    let b = s
        .next_ready()
        .expect("the resent command runs once the window opens");
    assert_eq!(s.task(b).unwrap().itt, Itt(3));
    assert_eq!(s.exp_cmd_sn(), CmdSn(12));
}

/// Issue 11, the Data-Out deadline: a write that took its buffer and its R2T but gets no
/// Data-Out is reported once it has waited the limit without progress; one whose data keeps
/// coming is not, however long it takes; one waiting for budget room holds nothing and is
/// never reported; the deadline off (0) reports nothing.
#[test]
fn the_dataout_deadline_counts_seconds_without_progress_only() {
    let mut s = session(FfpParams {
        max_burst: 4096,
        ..Default::default()
    });
    let budget = WriteBudget::new(8192);
    s.set_write_budget(budget.clone());
    // A: 8 KiB, solicited 4 KiB at a time; B: waits for room (no R2T, holds nothing).
    feed(&mut s, &cmd_pdu(1, 10, false, true, 8192, &[]));
    feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[]));
    assert_eq!(budget.used_bytes(), 8192);
    assert!(s.writes_waiting());
    let ttt = be32(s.out.pop_front().expect("A's R2T").bhs(), 20);
    assert_eq!(s.dataout_tick(0), None, "off");
    // Two seconds of silence; then A's first burst arrives: the count starts again.
    assert_eq!(s.dataout_tick(3), None);
    assert_eq!(s.dataout_tick(3), None);
    feed(&mut s, &data_out(1, ttt, 0, true, &[1u8; 4096]));
    let ttt = be32(s.out.pop_front().expect("A's second R2T").bhs(), 20);
    assert_eq!(s.dataout_tick(3), None);
    assert_eq!(s.dataout_tick(3), None);
    // The third second without progress reports A (and never B, which holds no budget).
    let st = s.dataout_tick(3).expect("A stalled");
    assert_eq!((st.itt, st.held_bytes, st.secs), (Itt(1), 8192, 3));
    assert!(st.to_string().contains("Data-Out deadline"), "{st}");
    // Progress again: not reported; and once complete, nothing waits on the initiator.
    feed(&mut s, &data_out(1, ttt, 4096, true, &[1u8; 4096]));
    assert_eq!(s.dataout_tick(1), None);
    let a = s.next_ready().expect("A complete");
    for _ in 0..5 {
        assert_eq!(
            s.dataout_tick(1),
            None,
            "A runs on the medium, not on the initiator"
        );
    }
    s.finish(a, good(DataIn::None), Some(8192));
    // B was admitted when A's buffer came back: its own R2T starts its own count.
    assert_eq!(budget.used_bytes(), 4096);
    assert_eq!(s.dataout_tick(2), None);
    assert_eq!(s.dataout_tick(2).map(|st| st.itt), Some(Itt(2)));
}

/// Issue 11 (minor): a SCSI command inside the window that is answered with a Reject still
/// uses up its CmdSN, at ExpCmdSN and ahead of it; otherwise every later command waits
/// behind a gap the initiator never fills. The Reject already carries the advanced ExpCmdSN.
#[test]
fn a_rejected_command_uses_up_its_cmd_sn() {
    let mut s = session(FfpParams::default());
    // CmdSN 10 = ExpCmdSN: a READ with immediate data breaks §13.10 and is rejected.
    feed(&mut s, &cmd_pdu(1, 10, true, false, 512, &[1u8; 512]));
    let rej = s.out.pop_front().expect("Reject");
    assert_eq!(rej.bhs()[0], op::REJECT);
    assert_eq!(
        be32(rej.bhs(), 28),
        11,
        "the Reject's ExpCmdSN passed the rejected one"
    );
    assert_eq!(s.exp_cmd_sn(), CmdSn(11));
    // The next command runs.
    feed(&mut s, &cmd_pdu(2, 11, true, false, 512, &[]));
    assert!(
        s.next_ready().is_some(),
        "the command after the Reject runs"
    );
    assert_eq!(s.exp_cmd_sn(), CmdSn(12));
    // Ahead of ExpCmdSN: CmdSN 13 is rejected (its ITT is in use), then 12 arrives:
    // ExpCmdSN passes both.
    feed(&mut s, &cmd_pdu(2, 13, true, false, 512, &[]));
    assert_eq!(s.out.pop_front().expect("Reject").bhs()[0], op::REJECT);
    feed(&mut s, &cmd_pdu(3, 12, true, false, 512, &[]));
    assert_eq!(
        s.exp_cmd_sn(),
        CmdSn(14),
        "the rejected CmdSN ahead was used up"
    );
    // A rejected CmdSN is used: the same CmdSN again is a duplicate, silently ignored.
    feed(&mut s, &cmd_pdu(9, 13, true, false, 512, &[]));
    assert!(s.out.is_empty() && !s.has_task(Itt(9)));
}

/// Issue 11 (minor): RFC 7143 §11.14.1 reserves Logout reason codes above 2: such a Logout
/// gets a Reject (Protocol Error), not a Logout Response, and the session carries on with
/// its CmdSN used.
#[test]
fn a_reserved_logout_reason_is_rejected_and_the_session_stays() {
    let mut s = session(FfpParams::default());
    let mut l = vec![0u8; BHS_LEN];
    l[0] = op::LOGOUT;
    l[1] = 0x80 | 3;
    l[16..20].copy_from_slice(&3u32.to_be_bytes());
    l[24..28].copy_from_slice(&10u32.to_be_bytes());
    feed(&mut s, &l);
    let r = s.out.pop_front().expect("an answer");
    assert_eq!(r.bhs()[0], op::REJECT);
    assert_eq!(r.bhs()[2], 0x04, "Protocol Error");
    assert!(s.out.is_empty(), "no Logout Response");
    assert_eq!(s.close, None, "the session carries on");
    assert_eq!(s.exp_cmd_sn(), CmdSn(11));
    feed(&mut s, &cmd_pdu(1, 11, true, false, 512, &[]));
    assert!(s.next_ready().is_some());
}

/// A command refused for want of a task slot gives back the write-budget bytes its
/// immediate data took.
#[test]
fn a_command_refused_for_want_of_a_slot_gives_its_budget_back() {
    let mut s = session(FfpParams {
        max_queue_cmd: 1,
        ..Default::default()
    });
    let budget = WriteBudget::new(1 << 20);
    s.set_write_budget(budget.clone());
    // Fill every slot (the window plus the extra ones) with immediate commands.
    let mut itt = 100;
    while s.task_count() < 1 + EXTRA_TASK_SLOTS {
        let mut p = cmd_pdu(itt, 10, true, false, 512, &[]);
        p[0] |= 0x40;
        feed(&mut s, &p);
        itt += 1;
    }
    let before = budget.used_bytes();
    let mut p = cmd_pdu(1, 10, false, true, 4096, &[7u8; 512]);
    p[0] |= 0x40;
    feed(&mut s, &p);
    assert_eq!(
        s.out.pop_back().expect("Reject").bhs()[2],
        0x0a,
        "Out of Resources"
    );
    assert_eq!(
        budget.used_bytes(),
        before,
        "its immediate data's bytes came back"
    );
}

/// Issue 11, the per-session share: two writes of one session waiting with immediate data,
/// each larger than the session's share, are solicited one after the other. (Counting their
/// unsolicited bytes in the share would make each wait for the other for ever.)
#[test]
fn writes_over_the_share_with_immediate_data_go_one_at_a_time() {
    let params = FfpParams {
        max_burst: 8192,
        ..Default::default()
    };
    let budget = WriteBudget::new(8192);
    budget.set_session_share_pct(25);
    // Another session takes the whole budget first.
    let mut other = session(params);
    other.set_write_budget(budget.clone());
    feed(&mut other, &cmd_pdu(9, 10, false, true, 8192, &[]));
    let ttt = be32(other.out.pop_front().expect("R2T").bhs(), 20);
    let mut s = session(params);
    s.set_write_budget(budget.clone());
    feed(&mut s, &cmd_pdu(1, 10, false, true, 4096, &[1u8; 512]));
    feed(&mut s, &cmd_pdu(2, 11, false, true, 4096, &[2u8; 512]));
    assert!(s.out.is_empty() && s.writes_waiting(), "both wait for room");
    // The other session's write completes: its buffer returns.
    feed(&mut other, &data_out(9, ttt, 0, true, &[9u8; 8192]));
    let r = other.next_ready().expect("complete");
    other.finish(r, good(DataIn::None), Some(8192));
    assert_eq!(budget.used_bytes(), 1024, "the two immediate parts");
    assert_eq!(
        s.admit_waiting_writes(),
        Err(NoRoom::Share),
        "one write, then the share"
    );
    let r2t = s.out.pop_front().expect("the first write's R2T");
    assert_eq!(be32(r2t.bhs(), 16), 1);
    assert!(s.out.is_empty());
    feed(
        &mut s,
        &data_out(1, be32(r2t.bhs(), 20), 512, true, &[1u8; 3584]),
    );
    let a = s.next_ready().expect("first complete");
    s.finish(a, good(DataIn::None), Some(4096));
    let r2t = s
        .out
        .iter()
        .find(|p| p.bhs()[0] == op::R2T)
        .expect("the second write's R2T once the first finished");
    assert_eq!(be32(r2t.bhs(), 16), 2);
    assert!(!s.writes_waiting());
}
