//! The seed corpus, built from real exchanges: logins, command streams, CDBs, tgtadm
//! requests. `FUZZ_WRITE_CORPUS=1 cargo test` (scripts/fuzz.sh --seeds) writes them to
//! `fuzz/corpus/<target>/seed-*`; every run also replays the committed corpus (seeds and the
//! crash inputs kept as regressions) through the drivers, so a fix that regresses fails here.

use crate::input::Writer;
use crate::wire::{bhs, frame, put32};
use crate::{curve_frame, ipc, login, pdu_frame, scsi_cdb, session, text_negotiate};
use curve_tgt::curve::frame::{encode_frame, encode_request, Method};
use curve_tgt::curve::ids::CorrelationId;
use curve_tgt::curve::proto::{cs, RpcMeta, RpcResponseMeta};
use curve_tgt::iscsi::pdu::op;
use curve_tgt::mgmt::ipc::{Mode, Op as IpcOp, ReqHeader, Request as IpcRequest};
use std::path::PathBuf;

type Seeds = Vec<(String, Vec<u8>)>;
/// A target's name, its driver and its seeds.
type TargetSeeds = (&'static str, fn(&[u8]), Seeds);

fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in pairs {
        v.extend_from_slice(format!("{k}={val}").as_bytes());
        v.push(0);
    }
    v
}

fn operational_keys() -> Vec<u8> {
    kv(&[
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
    ])
}

fn pdu_frame_seeds() -> Seeds {
    let mut out = Seeds::new();
    let mut login = bhs(op::LOGIN, true, 0x87);
    put32(&mut login, 16, 1);
    let login_data = kv(&[
        ("InitiatorName", "iqn.1994-05.com.redhat:client"),
        ("TargetName", "iqn.2026-01.fuzz:disk"),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ]);
    let mut cmd = bhs(op::SCSI_CMD, false, 0xa1);
    put32(&mut cmd, 20, 4096);
    cmd[32] = 0x2a;
    cmd[39] = 8;
    let mut read = bhs(op::SCSI_CMD, false, 0xc1);
    put32(&mut read, 20, 512);
    read[32] = 0x28;
    read[39] = 1;
    let mut dout = bhs(op::DATA_OUT, false, 0x80);
    put32(&mut dout, 20, 0x10);
    put32(&mut dout, 40, 512);
    let nop = bhs(op::NOP_OUT, true, 0x80);
    let tmf = bhs(op::TASK_MGMT, true, 0x81);
    let logout = bhs(op::LOGOUT, true, 0x80);
    let text = bhs(op::TEXT, true, 0x80);
    let snack = bhs(op::SNACK, false, 0x80);
    let ext_cdb = [0u8, 17, 1, 0]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0xaa, 16))
        .collect::<Vec<u8>>();
    for settings in [0u8, 1, 2, 3, 4, 8, 12] {
        let (hd, dd) = (settings & 1 != 0, settings & 2 != 0);
        let pdus: Vec<(&str, Vec<u8>)> = vec![
            ("login", frame(login, &[], &login_data, hd, dd)),
            ("write-imm", frame(cmd, &[], &[0x5a; 4096], hd, dd)),
            ("read", frame(read, &[], &[], hd, dd)),
            ("ext-cdb", frame(read, &ext_cdb, &[], hd, dd)),
            ("data-out", frame(dout, &[], &[1; 511], hd, dd)),
            ("nop", frame(nop, &[], &[7; 3], hd, dd)),
            ("tmf", frame(tmf, &[], &[], hd, dd)),
            ("logout", frame(logout, &[], &[], hd, dd)),
            (
                "text",
                frame(text, &[], &kv(&[("SendTargets", "All")]), hd, dd),
            ),
            ("snack", frame(snack, &[], &[], hd, dd)),
        ];
        let mut stream = vec![settings];
        for (name, p) in &pdus {
            let mut one = vec![settings];
            one.extend_from_slice(p);
            out.push((format!("{name}-s{settings}"), one));
            stream.extend_from_slice(p);
        }
        out.push((format!("stream-s{settings}"), stream));
    }
    out
}

fn text_seeds() -> Seeds {
    let mut out = Seeds::new();
    let mut w = Writer::new();
    w.u8(0).u8(0).bytes(&operational_keys());
    out.push(("operational".into(), w.out));
    let mut w = Writer::new();
    w.u8(1).u8(0).bytes(&kv(&[
        ("MaxRecvDataSegmentLength", "65536"),
        ("HeaderDigest", "None"),
    ]));
    out.push(("discovery".into(), w.out));
    let mut w = Writer::new();
    // Target parameters changed first (FirstBurstLength above MaxBurstLength's offer).
    w.u8(2 << 1).u8(6).u8(10).u8(7).u8(9);
    w.u8(2).bytes(&kv(&[
        ("FirstBurstLength", "262144"),
        ("MaxBurstLength", "4096"),
    ]));
    w.u8(4).bytes(&kv(&[("InitialR2T", "No")]));
    out.push(("burst".into(), w.out));
    let mut w = Writer::new();
    w.u8(0).u8(2).bytes(&operational_keys());
    out.push(("continued".into(), w.out));
    let mut w = Writer::new();
    w.u8(0).u8(0).bytes(&kv(&[
        ("HeaderDigest", "CRC32C"),
        ("HeaderDigest", "None"),
        ("X-foo", "bar"),
    ]));
    w.u8(0).bytes(b"NoSeparator\0=empty\0Key=\0");
    w.u8(0).bytes(&kv(&[
        ("MaxBurstLength", "Reject"),
        ("ErrorRecoveryLevel", "2"),
    ]));
    out.push(("odd".into(), w.out));
    out
}

fn lflags(t: bool, c: bool, csg: u8, nsg: u8) -> u8 {
    u8::from(t) | u8::from(c) << 1 | csg << 2 | nsg << 4
}

fn login_seeds() -> Seeds {
    use login::Op;
    let lo = |flags: u8, keys: u8, extra: &[(&str, &str)]| Op::Login {
        flags,
        tsih: 0,
        cid: 0,
        cmd_sn: 1,
        keys,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        raw: None,
    };
    let op_keys: Vec<(&str, &str)> = vec![
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("MaxBurstLength", "262144"),
    ];
    let mut out = Seeds::new();
    // No authentication: security → operational → full feature.
    let plain = vec![
        lo(lflags(true, false, 0, 1), 1 | 2 | 0x10, &[]),
        lo(lflags(true, false, 1, 3), 0, &op_keys),
    ];
    out.push(("plain".into(), login::encode(0, &plain)));
    // Straight to the operational stage.
    let direct = vec![lo(lflags(true, false, 1, 3), 1 | 2, &op_keys)];
    out.push(("operational-only".into(), login::encode(0, &direct)));
    // CHAP, one-way and mutual.
    for (name, bits, chap_flags) in [
        ("chap", 1u8, 4u8),
        ("chap-mutual", 3, 6),
        ("chap-wrong", 1, 5),
    ] {
        let ops = vec![
            lo(lflags(false, false, 0, 0), 1 | 2 | 8, &[]),
            lo(lflags(false, false, 0, 0), 0x20, &[]),
            Op::Chap { flags: chap_flags },
            lo(lflags(true, false, 1, 3), 0, &op_keys),
        ];
        out.push((name.into(), login::encode(bits, &ops)));
    }
    // Discovery, then a second connection.
    let disc = vec![
        lo(lflags(true, false, 1, 3), 1 | 4, &[]),
        lo(lflags(true, false, 0, 1), 1 | 2 | 0x10, &[]),
        lo(lflags(true, false, 1, 3), 0, &[]),
    ];
    out.push(("discovery".into(), login::encode(0, &disc)));
    // Reinstatement and a non-leading login naming the session.
    let mut again = plain.clone();
    again.extend(plain.clone());
    again.push(Op::Login {
        flags: lflags(true, false, 1, 3),
        tsih: 1,
        cid: 1,
        cmd_sn: 1,
        keys: 1 | 2,
        extra: vec![],
        raw: None,
    });
    out.push(("reinstate".into(), login::encode(0, &again)));
    // Continued text (C bit) and a drop mid-login.
    let cont = vec![
        lo(lflags(false, true, 0, 0), 1, &[]),
        lo(lflags(true, false, 0, 1), 2 | 0x10, &[]),
        Op::Drop,
        lo(lflags(true, false, 1, 3), 1 | 2, &op_keys),
    ];
    out.push(("continued".into(), login::encode(0, &cont)));
    // Redirect callback, answered three ways.
    for kind in 0..3u8 {
        let ops = vec![
            lo(lflags(true, false, 0, 1), 1 | 2 | 0x10, &[]),
            Op::Callback { kind, raw: vec![] },
            lo(lflags(true, false, 1, 3), 0, &[]),
        ];
        out.push((format!("callback-{kind}"), login::encode(4, &ops)));
    }
    out.push((
        "static-redirect".into(),
        login::encode(8, &[lo(lflags(true, false, 0, 1), 3, &[])]),
    ));
    out.push((
        "raw".into(),
        login::encode(
            0,
            &[Op::Login {
                flags: lflags(true, false, 1, 3),
                tsih: 0,
                cid: 0,
                cmd_sn: 0,
                keys: 0xff,
                extra: vec![],
                raw: Some(kv(&[
                    ("InitiatorName", "iqn.x"),
                    ("TargetName", login::TARGET),
                ])),
            }],
        ),
    ));
    out
}

fn session_seeds() -> Seeds {
    use session::{Op, Pick, Settings, Sn, Tag};
    let cmd = |itt: u8, sn: Sn, template: u8, lba: u32, blocks: u16, imm: u16| Op::Cmd {
        immediate: false,
        flags: 0,
        itt: Tag::Small(itt),
        lun: 2,
        sn,
        template,
        lba,
        blocks,
        raw: [0; 16],
        edtl: Pick::Auto,
        imm_data: imm,
        ext_cdb: vec![],
    };
    let dout = |itt: u8| Op::DataOut {
        itt: Tag::Small(itt),
        ttt: Pick::Auto,
        offset: Pick::Auto,
        len: Pick::Auto,
        data_sn: Pick::Auto,
        final_flip: false,
    };
    let done = Op::Complete { sel: 0, result: 7 };
    let st = Settings::default();
    let mut out = Seeds::new();
    // TEST UNIT READY ×3 (the first gets the power-on unit attention), INQUIRY, REPORT LUNS.
    let basic = vec![
        cmd(0, Sn::Exp(0), 0, 0, 0, 0),
        cmd(1, Sn::Exp(0), 0, 0, 0, 0),
        cmd(2, Sn::Exp(0), 5, 0, 96, 0),
        cmd(3, Sn::Exp(0), 6, 0, 256, 0),
        cmd(4, Sn::Exp(0), 19, 0, 8, 0),
        done.clone(),
    ];
    out.push(("basic".into(), session::encode(&st, &basic)));
    // A write solicited by R2T in two bursts, then a read back.
    let write = vec![
        cmd(0, Sn::Exp(0), 0, 0, 0, 0),
        cmd(1, Sn::Exp(0), 2, 8, 16, 0),
        dout(1),
        dout(1),
        done.clone(),
        cmd(2, Sn::Exp(0), 1, 8, 16, 0),
        done.clone(),
    ];
    out.push(("write-r2t".into(), session::encode(&st, &write)));
    let small = Settings {
        recv: 1,
        max_burst: 1,
        first_burst: 1,
        max_r2t: 2,
        ..st
    };
    out.push(("write-small-bursts".into(), session::encode(&small, &write)));
    // Immediate data and unsolicited Data-Out (InitialR2T=No), with digests.
    let unsol = Settings {
        flags: 1 | 2 | 4,
        ..st
    };
    let imm = vec![
        cmd(1, Sn::Exp(0), 2, 0, 64, 4096),
        dout(1),
        dout(1),
        dout(1),
        done.clone(),
        cmd(2, Sn::Exp(0), 4, 100, 1, 512),
        done.clone(),
        Op::CorruptNext,
        cmd(3, Sn::Exp(0), 2, 0, 1, 512),
    ];
    out.push(("unsolicited-digests".into(), session::encode(&unsol, &imm)));
    // Out of order: CmdSN +2, +1, then the gap filled.
    let ooo = vec![
        cmd(2, Sn::Exp(2), 0, 0, 0, 0),
        cmd(1, Sn::Exp(1), 0, 0, 0, 0),
        cmd(0, Sn::Exp(0), 0, 0, 0, 0),
        cmd(3, Sn::Behind(0), 0, 0, 0, 0),
        cmd(4, Sn::Max(1), 0, 0, 0, 0),
    ];
    out.push(("out-of-order".into(), session::encode(&st, &ooo)));
    // Issue 11 item 1's shape: E+1 … E+n held, then E.
    let mut window = Vec::new();
    for i in 1..=40u8 {
        window.push(cmd(i % 32, Sn::Exp(i), 0, 0, 0, 0));
    }
    window.push(cmd(31, Sn::Exp(0), 0, 0, 0, 0));
    let narrow = Settings { queue: 4, ..st };
    out.push(("window-held".into(), session::encode(&narrow, &window)));
    // Task management: abort a write waiting for data, LUN reset, target cold reset.
    let tmf = vec![
        cmd(1, Sn::Exp(0), 2, 0, 64, 0),
        Op::Tmf {
            immediate: true,
            function: 1,
            lun: 2,
            ref_itt: Tag::Small(1),
            sn: Sn::Exp(0),
            ref_sn: Sn::Behind(0),
        },
        cmd(2, Sn::Exp(0), 1, 0, 64, 0),
        Op::Tmf {
            immediate: false,
            function: 5,
            lun: 2,
            ref_itt: Tag::Raw(0xffff_ffff),
            sn: Sn::Exp(0),
            ref_sn: Sn::Exp(0),
        },
        done.clone(),
        Op::Tmf {
            immediate: true,
            function: 7,
            lun: 0,
            ref_itt: Tag::Raw(0xffff_ffff),
            sn: Sn::Exp(0),
            ref_sn: Sn::Exp(0),
        },
    ];
    out.push(("tmf".into(), session::encode(&st, &tmf)));
    // NOP-Out ping, target ping answered, SendTargets in pieces, logout.
    let misc = vec![
        Op::Nop {
            immediate: false,
            itt: Some(Tag::Small(9)),
            sn: Sn::Exp(0),
            data_len: 100,
        },
        Op::Tick(0),
        Op::Nop {
            immediate: true,
            itt: None,
            sn: Sn::Exp(0),
            data_len: 0,
        },
        Op::Text {
            immediate: false,
            flags: 2,
            ttt: Pick::Raw(0xffff_ffff),
            sn: Sn::Exp(0),
            text: b"SendTar".to_vec(),
        },
        Op::Text {
            immediate: false,
            flags: 1,
            ttt: Pick::Auto,
            sn: Sn::Exp(0),
            text: b"gets=All\0".to_vec(),
        },
        Op::Text {
            immediate: true,
            flags: 1,
            ttt: Pick::Raw(0xffff_ffff),
            sn: Sn::Exp(0),
            text: b"MaxRecvDataSegmentLength=1024\0".to_vec(),
        },
        Op::OutOfPhase(0),
        Op::OutOfPhase(1),
        Op::Tick(1),
        Op::Logout {
            immediate: false,
            reason: 0,
            cid: 0,
            sn: Sn::Exp(0),
        },
        cmd(5, Sn::Exp(0), 0, 0, 0, 0),
    ];
    out.push(("misc".into(), session::encode(&st, &misc)));
    // Raw bytes into the stream: a truncated header, then an unknown opcode.
    let mut junk = vec![0x3e; 48];
    junk[5] = 0;
    let raw = vec![cmd(0, Sn::Exp(0), 0, 0, 0, 0), Op::Raw(junk)];
    out.push(("raw".into(), session::encode(&st, &raw)));
    // Every CDB template once, reads and writes with data.
    let mut all = Vec::new();
    for t in 0..26u8 {
        all.push(cmd(t % 32, Sn::Exp(0), t, 16, 4, 2048));
        all.push(dout(t % 32));
        all.push(done.clone());
    }
    out.push(("templates".into(), session::encode(&unsol, &all)));
    out
}

fn cdb_seeds() -> Seeds {
    let mut out = Seeds::new();
    let cdbs: Vec<(&str, Vec<u8>, u8, Vec<u8>)> = vec![
        ("tur", vec![0; 6], 0x10, vec![]),
        ("inquiry", vec![0x12, 0, 0, 0, 96, 0], 0x11, vec![]),
        (
            "inquiry-vpd83",
            vec![0x12, 1, 0x83, 0, 255, 0],
            0x11,
            vec![],
        ),
        (
            "inquiry-vpdb0",
            vec![0x12, 1, 0xb0, 0, 255, 0],
            0x11,
            vec![],
        ),
        (
            "read10",
            vec![0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0],
            0x11,
            vec![],
        ),
        (
            "write10",
            vec![0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0],
            0x12,
            vec![0xab; 512],
        ),
        (
            "read16-end",
            vec![
                0x88, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0,
            ],
            0x11,
            vec![],
        ),
        (
            "readcap16",
            vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            0x11,
            vec![],
        ),
        ("modesense", vec![0x1a, 0, 0x3f, 0, 255, 0], 0x11, vec![]),
        (
            "reportluns",
            vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            0x01,
            vec![],
        ),
        ("sync", vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0x10, vec![]),
        ("unmap", vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 0x12, {
            let mut d = vec![0, 22, 0, 16, 0, 0, 0, 0];
            d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 0]);
            d
        }),
        (
            "writesame16",
            vec![0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
            0x12,
            vec![0; 512],
        ),
        (
            "caw",
            vec![0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            0x12,
            vec![0; 1024],
        ),
        (
            "pr-in",
            vec![0x5e, 0, 0, 0, 0, 0, 0, 0x20, 0, 0],
            0x11,
            vec![],
        ),
        (
            "pr-out-register",
            vec![0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            0x12,
            {
                let mut d = vec![0u8; 24];
                d[15] = 1;
                d
            },
        ),
        ("reserve6", vec![0x16, 0, 0, 0, 0, 0], 0x10, vec![]),
        ("release6", vec![0x17, 0, 0, 0, 0, 0], 0x10, vec![]),
        ("modeselect", vec![0x15, 0x10, 0, 0, 24, 0], 0x12, {
            let mut d = vec![0u8; 24];
            d[3] = 8;
            d[12] = 0x08;
            d[13] = 10;
            d
        }),
        ("requestsense", vec![0x03, 0, 0, 0, 252, 0], 0x11, vec![]),
        (
            "getlbastatus",
            vec![0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            0x11,
            vec![],
        ),
        ("startstop", vec![0x1b, 0, 0, 0, 1, 0], 0x10, vec![]),
        (
            "verify16",
            vec![0x8f, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            0x12,
            vec![0; 512],
        ),
        (
            "orwrite",
            vec![0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            0x12,
            vec![0xf0; 512],
        ),
    ];
    let mut all = Writer::new();
    all.bool(false);
    for (name, cdb, op, data) in &cdbs {
        let mut w = Writer::new();
        w.bool(false);
        for wr in [&mut w, &mut all] {
            // Disk LUN (op bits 3..4 = 2), nexus 0; flags = R/W bits.
            wr.u8(op & 0x07 | 2 << 3);
            wr.bytes(cdb).u8(op & 0x03).u32(1 << 16).bytes(data).u8(7);
        }
        out.push((name.to_string(), w.out));
    }
    // Parameter updates and a reset between commands, from the other nexus.
    all.u8(6).bytes(b"readonly=1");
    all.u8(7 | 0x10);
    all.u8(0x80 | 2 << 3)
        .bytes(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        .u8(2)
        .u32(512)
        .bytes(&[1; 512])
        .u8(7);
    out.push(("sequence".into(), all.out));
    out
}

fn ipc_seeds() -> Seeds {
    let req = |mode: Mode, op: IpcOp, tid: i32, lun: u64, payload: &str| {
        let mut hdr = ReqHeader::new(mode, op);
        hdr.lld = "iscsi".into();
        hdr.tid = tid;
        hdr.lun = lun;
        IpcRequest {
            hdr,
            payload: payload.to_string(),
        }
        .encode()
    };
    let reqs: Vec<(&str, Vec<u8>)> = vec![
        (
            "target-new",
            req(
                Mode::Target,
                IpcOp::New,
                1,
                u64::MAX,
                "targetname=iqn.2026-01.fuzz:disk",
            ),
        ),
        (
            "lu-new",
            req(Mode::Device, IpcOp::New, 1, 1, "path=/dev/null,bstype=null"),
        ),
        (
            "bind-all",
            req(
                Mode::Target,
                IpcOp::Bind,
                1,
                u64::MAX,
                "initiator-address=ALL",
            ),
        ),
        (
            "bind-name",
            req(
                Mode::Target,
                IpcOp::Bind,
                1,
                u64::MAX,
                "initiator-name=iqn.x",
            ),
        ),
        (
            "update",
            req(
                Mode::Target,
                IpcOp::Update,
                1,
                u64::MAX,
                "MaxRecvDataSegmentLength=65536",
            ),
        ),
        (
            "state",
            req(Mode::Target, IpcOp::Update, 1, u64::MAX, "state=offline"),
        ),
        (
            "lu-update",
            req(Mode::Device, IpcOp::Update, 1, 1, "params=readonly=1"),
        ),
        (
            "account-new",
            req(Mode::Account, IpcOp::New, -1, u64::MAX, "user=u,password=p"),
        ),
        (
            "account-bind",
            req(Mode::Account, IpcOp::Bind, 1, u64::MAX, "user=u"),
        ),
        (
            "target-show",
            req(Mode::Target, IpcOp::Show, -1, u64::MAX, ""),
        ),
        ("sys-show", req(Mode::System, IpcOp::Show, -1, u64::MAX, "")),
        ("stat", req(Mode::Target, IpcOp::Stats, 1, u64::MAX, "")),
        (
            "portal-new",
            req(
                Mode::Portal,
                IpcOp::New,
                -1,
                u64::MAX,
                "portal=127.0.0.1:3261",
            ),
        ),
        (
            "conn-show",
            req(Mode::Connection, IpcOp::Show, 1, u64::MAX, ""),
        ),
        ("lu-delete", req(Mode::Device, IpcOp::Delete, 1, 1, "")),
        (
            "target-delete",
            req(Mode::Target, IpcOp::Delete, 1, u64::MAX, ""),
        ),
        ("sys-stop", req(Mode::System, IpcOp::Stop, -1, u64::MAX, "")),
    ];
    let mut out = Seeds::new();
    let mut all = Writer::new();
    for (name, bytes) in &reqs {
        let mut w = Writer::new();
        w.bytes(bytes);
        all.bytes(bytes);
        out.push((name.to_string(), w.out));
    }
    out.push(("sequence".into(), all.out));
    out
}

/// Every target's seeds: (target, runner, seeds).
pub fn all_seeds() -> Vec<TargetSeeds> {
    vec![
        ("pdu_frame", pdu_frame::run as fn(&[u8]), pdu_frame_seeds()),
        ("text_negotiate", text_negotiate::run, text_seeds()),
        ("login", login::run, login_seeds()),
        ("session", session::run, session_seeds()),
        ("scsi_cdb", scsi_cdb::run, cdb_seeds()),
        ("tgtadm_ipc", ipc::run, ipc_seeds()),
        ("curve_frame", curve_frame::run, curve_frame_seeds()),
    ]
}

/// baidu_std frames shaped as the real cluster sends them (`curve-wire-samples.txt`): chunk
/// requests with and without attachments, replies with an error code, several frames in one
/// stream, and a frame cut short. The first byte picks the piece size the driver feeds.
fn curve_frame_seeds() -> Seeds {
    let read = Method {
        service: "curve.chunkserver.ChunkService",
        method: "ReadChunk",
    };
    let write = Method {
        service: "curve.chunkserver.ChunkService",
        method: "WriteChunk",
    };
    let req = cs::ChunkRequest {
        op_type: cs::ChunkOpType::ChunkOpRead as i32,
        logic_pool_id: 1,
        copyset_id: 3,
        chunk_id: 42,
        offset: Some(65536),
        size: Some(4096),
        ..Default::default()
    };
    let with_data = |mut f: Vec<u8>, n: usize| {
        f.extend((0..n).map(|i| i as u8));
        f
    };
    let reply = |cid: u64, code: i32, attachment: usize| {
        let meta = RpcMeta {
            response: Some(RpcResponseMeta {
                error_code: Some(code),
                error_text: None,
            }),
            correlation_id: Some(cid as i64),
            attachment_size: (attachment > 0).then_some(attachment as i32),
            ..Default::default()
        };
        let rsp = cs::ChunkResponse {
            status: 0,
            ..Default::default()
        };
        with_data(encode_frame(&meta, &rsp, attachment), attachment)
    };
    let r1 = encode_request(CorrelationId(1), read, None, &req, 0);
    let w1 = with_data(encode_request(CorrelationId(2), write, None, &req, 4096), 4096);
    let mds = encode_request(
        CorrelationId(8589934594),
        Method {
            service: "curve.mds.CurveFSService",
            method: "GetFileInfo",
        },
        Some(7),
        &req,
        0,
    );
    let two = [reply(1, 0, 4096), reply(2, 0, 0)].concat();
    let mut cut = reply(3, 0, 8192);
    cut.truncate(cut.len() / 2);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("read-request", r1),
        ("write-request", w1),
        ("mds-request", mds),
        ("read-reply", reply(1, 0, 4096)),
        ("error-reply", reply(9, 1008, 0)),
        ("two-replies", two),
        ("cut-short", cut),
    ];
    let mut seeds = Seeds::new();
    for (i, (name, f)) in frames.into_iter().enumerate() {
        // Vary the piece-size selector so every pattern starts with a seed.
        seeds.push((name.to_string(), [vec![i as u8], f].concat()));
    }
    seeds
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn seeds_run_clean_and_are_written_on_request() {
    let write = std::env::var_os("FUZZ_WRITE_CORPUS").is_some();
    for (target, run, seeds) in all_seeds() {
        assert!(seeds.len() >= 5, "{target} has {} seeds", seeds.len());
        for (name, bytes) in &seeds {
            if write {
                let dir = corpus_dir(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
            }
            let r = std::panic::catch_unwind(|| run(bytes));
            assert!(r.is_ok(), "{target} seed {name} panicked");
        }
    }
}

#[test]
fn committed_corpus_and_regressions_run_clean() {
    let mut n = 0;
    for (target, run, _) in all_seeds() {
        let Ok(dir) = std::fs::read_dir(corpus_dir(target)) else {
            continue;
        };
        for e in dir {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| run(&bytes));
            assert!(r.is_ok(), "{} panicked", p.display());
            n += 1;
        }
    }
    assert!(
        n > 0 || std::env::var_os("FUZZ_WRITE_CORPUS").is_some(),
        "no corpus found"
    );
}
