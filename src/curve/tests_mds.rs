//! Scripted-MDS tests: the test answers the client's MDS RPCs by hand, with synthetic time,
//! to check the session's lease reactions, fail-over and layout fetching.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::auth::Credentials;
use super::client::{Client, Completion};
use super::config::ClientConfig;
use super::conn::Action;
use super::error::{IoError, MdsError};
use super::frame::{encode_frame, HEADER_LEN};
use super::ids::{CorrelationId, OpId, PeerId};
use super::layout::IoGate;
use super::mds::{AdminReply, AdminRequest};
use super::proto::{common, mds as pb, topology, RpcMeta, RpcResponseMeta};

struct Rpc {
    peer: PeerId,
    cid: CorrelationId,
    method: String,
    payload: Vec<u8>,
}

struct Mh {
    c: Client<Vec<u8>, Bytes>,
    now: Instant,
    /// Addresses that refuse connections.
    down: Vec<SocketAddr>,
    connected: Vec<(PeerId, SocketAddr)>,
}

fn mds_addr(n: u16) -> SocketAddr {
    format!("10.1.0.1:{}", 6666 + n).parse().unwrap()
}

impl Mh {
    fn new(n_mds: u16, creds: Credentials) -> Mh {
        let cfg = ClientConfig {
            mds_addrs: (0..n_mds).map(mds_addr).collect(),
            ..ClientConfig::default()
        };
        Mh {
            c: Client::new(cfg, creds),
            now: Instant::now(),
            down: Vec::new(),
            connected: Vec::new(),
        }
    }

    fn rpcs(&mut self) -> Vec<Rpc> {
        let mut out = Vec::new();
        for _ in 0..50 {
            let mut progress = false;
            while let Some(a) = self.c.poll_action() {
                progress = true;
                if let Action::Connect { peer, addr } = a {
                    if self.down.contains(&addr) {
                        self.c.on_closed(self.now, peer, "connection refused");
                    } else {
                        self.connected.push((peer, addr));
                        self.c.on_connected(self.now, peer);
                    }
                }
            }
            while let Some(t) = self.c.poll_transmit() {
                progress = true;
                let h = &t.head;
                let ml = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
                let meta = RpcMeta::decode(&h[HEADER_LEN..HEADER_LEN + ml]).unwrap();
                out.push(Rpc {
                    peer: t.peer,
                    cid: CorrelationId(meta.correlation_id.unwrap() as u64),
                    method: meta.request.unwrap().method_name,
                    payload: h[HEADER_LEN + ml..].to_vec(),
                });
            }
            if !progress {
                break;
            }
        }
        out
    }

    fn reply(&mut self, r: &Rpc, body: &impl Message) {
        let meta = RpcMeta {
            response: Some(RpcResponseMeta {
                error_code: Some(0),
                error_text: None,
            }),
            compress_type: Some(0),
            correlation_id: Some(r.cid.0 as i64),
            ..Default::default()
        };
        let f = encode_frame(&meta, body, 0);
        self.c.on_recv(self.now, r.peer, &f);
    }

    fn addr_of(&self, p: PeerId) -> SocketAddr {
        self.connected.iter().rev().find(|x| x.0 == p).unwrap().1
    }

    fn advance_to_next(&mut self) {
        if let Some(t) = self.c.poll_timeout() {
            self.now = t.max(self.now);
        }
        self.c.on_timeout(self.now);
    }

    fn open(&mut self) {
        self.c.open(self.now, OpId(100), "/vol1");
        let rpcs = self.rpcs();
        assert_eq!(rpcs[0].method, "OpenFile");
        self.reply(&rpcs[0], &open_ok());
        match self.c.poll_completion() {
            Some(Completion::Mds(m)) => assert!(matches!(m.result, Ok(AdminReply::Info(_)))),
            other => panic!("{other:?}"),
        }
    }
}

fn file_info(seq: u64) -> pb::FileInfo {
    pb::FileInfo {
        id: Some(3),
        file_name: Some("vol1".into()),
        owner: Some("alice".into()),
        chunk_size: Some(16 << 20),
        segment_size: Some(1 << 30),
        length: Some(10 << 30),
        seq_num: Some(seq),
        blocksize: Some(4096),
        ..Default::default()
    }
}

fn open_ok() -> pb::OpenFileResponse {
    pb::OpenFileResponse {
        status_code: 0,
        proto_session: Some(pb::ProtoSession {
            session_id: String::new(),
            lease_time: 5_000_000,
            create_time: 1,
            session_status: 0,
        }),
        file_info: Some(file_info(1)),
        clone_source_segment: None,
    }
}

fn refresh(status: pb::StatusCode, seq: u64) -> pb::ReFreshSessionResponse {
    pb::ReFreshSessionResponse {
        status_code: status as i32,
        session_id: String::new(),
        file_info: Some(file_info(seq)),
        proto_session: None,
    }
}

#[test]
fn requests_carry_owner_date_and_an_empty_signature() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.c.open(h.now, OpId(1), "/vol1");
    let rpcs = h.rpcs();
    let r = pb::OpenFileRequest::decode(&rpcs[0].payload[..]).unwrap();
    assert_eq!(
        (
            r.file_name.as_str(),
            r.owner.as_str(),
            r.signature.as_deref()
        ),
        ("/vol1", "alice", Some(""))
    );
    assert!(r.date > 1_700_000_000_000_000, "date in microseconds");
}

#[test]
fn root_requests_are_signed() {
    let creds = Credentials {
        owner: "root".into(),
        root_password: Some("root_password".into()),
    };
    let mut h = Mh::new(1, creds);
    h.c.admin(h.now, OpId(1), AdminRequest::Stat { path: "/v".into() });
    let rpcs = h.rpcs();
    let r = pb::GetFileInfoRequest::decode(&rpcs[0].payload[..]).unwrap();
    assert_eq!(
        r.signature.unwrap(),
        super::auth::root_signature("root_password", r.date, "root")
    );
}

#[test]
fn refresh_every_quarter_lease_takes_the_new_sequence_number() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    assert_eq!(h.c.layout().unwrap().seq_num, 1);
    let t0 = h.now;
    h.advance_to_next();
    assert_eq!(h.now - t0, Duration::from_millis(1250));
    let rpcs = h.rpcs();
    assert_eq!(rpcs.len(), 1);
    assert_eq!(rpcs[0].method, "RefreshSession");
    h.reply(&rpcs[0], &refresh(pb::StatusCode::KOk, 2));
    assert_eq!(h.c.layout().unwrap().seq_num, 2);
}

#[test]
fn refresh_not_exist_ends_io_at_once() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    h.advance_to_next();
    let rpcs = h.rpcs();
    h.reply(&rpcs[0], &refresh(pb::StatusCode::KFileNotExists, 1));
    assert!(matches!(h.c.layout().unwrap().gate, IoGate::Closed(_)));
    h.c.read(h.now, OpId(5), 0, vec![0; 4096]);
    match h.c.poll_completion() {
        Some(Completion::Io(c)) => {
            assert!(
                matches!(&c.result, Err(IoError::SessionEnded(m)) if m.contains("no longer exists")),
                "{:?}",
                c.result
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_mds_blocks_io_after_the_lease_and_io_fails_at_its_deadline() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    h.down.push(mds_addr(0));
    // The open connection drops; refreshes fail from now on.
    let peer = h.connected[0].0;
    h.c.on_closed(h.now, peer, "reset");
    let start = h.now;
    for _ in 0..200 {
        h.advance_to_next();
        let _ = h.rpcs();
        if h.now - start > Duration::from_secs(6) {
            break;
        }
    }
    let gate = h.c.layout().unwrap().gate.clone();
    assert!(
        matches!(&gate, IoGate::Blocked(m) if m.contains("lease expired")),
        "{gate:?}"
    );
    h.c.read(h.now, OpId(9), 0, vec![0; 4096]);
    let t = h.now;
    let mut done = None;
    for _ in 0..2000 {
        if let Some(c) = h.c.poll_completion() {
            done = Some(c);
            break;
        }
        h.advance_to_next();
        let _ = h.rpcs();
    }
    match done {
        Some(Completion::Io(c)) => {
            assert!(
                matches!(&c.result, Err(IoError::Deadline { last, .. }) if last.contains("lease expired")),
                "{:?}",
                c.result
            );
            assert!(h.now - t <= Duration::from_millis(20_100));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_mds_is_failed_over() {
    let mut h = Mh::new(2, Credentials::user("alice"));
    h.down.push(mds_addr(0));
    h.c.admin(
        h.now,
        OpId(1),
        AdminRequest::Stat {
            path: "/vol1".into(),
        },
    );
    let mut answered = false;
    for _ in 0..50 {
        let rpcs = h.rpcs();
        if let Some(r) = rpcs.first() {
            assert_eq!(h.addr_of(r.peer), mds_addr(1));
            h.reply(
                r,
                &pb::GetFileInfoResponse {
                    status_code: 0,
                    file_info: Some(file_info(1)),
                },
            );
            answered = true;
            break;
        }
        h.advance_to_next();
    }
    assert!(answered);
    match h.c.poll_completion() {
        Some(Completion::Mds(m)) => assert!(m.result.is_ok()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mds_errors_are_reported_by_name() {
    let mut h = Mh::new(1, Credentials::user("bob"));
    h.c.admin(
        h.now,
        OpId(1),
        AdminRequest::Stat {
            path: "/vol1".into(),
        },
    );
    let rpcs = h.rpcs();
    h.reply(
        &rpcs[0],
        &pb::GetFileInfoResponse {
            status_code: pb::StatusCode::KOwnerAuthFail as i32,
            file_info: None,
        },
    );
    match h.c.poll_completion() {
        Some(Completion::Mds(m)) => {
            let e = m.result.unwrap_err();
            assert_eq!(e.to_string(), "MDS GetFileInfo: kOwnerAuthFail");
            assert!(matches!(e, MdsError::Status { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_read_fetches_its_segment_and_copysets_then_reads() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    h.c.read(h.now, OpId(2), 0, vec![0; 4096]);
    let rpcs = h.rpcs();
    assert_eq!(rpcs[0].method, "GetOrAllocateSegment");
    let r = pb::GetOrAllocateSegmentRequest::decode(&rpcs[0].payload[..]).unwrap();
    assert_eq!((r.offset, r.allocate_if_not_exist), (0, false));
    let seg = pb::PageFileSegment {
        logical_pool_id: 1,
        start_offset: 0,
        segment_size: 1 << 30,
        chunk_size: 16 << 20,
        chunks: (0..64)
            .map(|i| pb::PageFileChunkInfo {
                copyset_id: i % 2 + 1,
                chunk_id: u64::from(i) + 1,
            })
            .collect(),
        origin_file_id: None,
    };
    h.reply(
        &rpcs[0],
        &pb::GetOrAllocateSegmentResponse {
            status_code: 0,
            page_file_segment: Some(seg),
        },
    );
    let rpcs = h.rpcs();
    assert_eq!(rpcs.len(), 1, "one topology call for the unknown copysets");
    assert_eq!(rpcs[0].method, "GetChunkServerListInCopySets");
    let q = topology::GetChunkServerListInCopySetsRequest::decode(&rpcs[0].payload[..]).unwrap();
    assert_eq!(q.copyset_id, vec![1, 2]);
    let loc = |n: u32| common::ChunkServerLocation {
        chunk_server_id: n,
        host_ip: "127.0.0.1".into(),
        port: 8200 + n,
        external_ip: Some("127.0.0.1".into()),
    };
    let info = |c: u32| topology::CopySetServerInfo {
        copyset_id: c,
        cs_locs: vec![loc(0), loc(1), loc(2)],
    };
    h.reply(
        &rpcs[0],
        &topology::GetChunkServerListInCopySetsResponse {
            status_code: 0,
            cs_info: vec![info(1), info(2)],
        },
    );
    let rpcs = h.rpcs();
    assert_eq!(rpcs.len(), 3);
    assert!(rpcs.iter().all(|r| r.method == "GetLeader"));
}

#[test]
fn a_garbage_mds_reply_drops_the_connection_and_the_call_is_retried() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.c.admin(
        h.now,
        OpId(1),
        AdminRequest::Stat {
            path: "/vol1".into(),
        },
    );
    let rpcs = h.rpcs();
    h.c.on_recv(h.now, rpcs[0].peer, b"PRPC\xff\xff\xff\xff\x00\x00\x00\x01");
    let mut answered = false;
    for _ in 0..50 {
        h.advance_to_next();
        let rpcs = h.rpcs();
        if let Some(r) = rpcs.first() {
            h.reply(
                r,
                &pb::GetFileInfoResponse {
                    status_code: 0,
                    file_info: Some(file_info(1)),
                },
            );
            answered = true;
            break;
        }
    }
    assert!(answered, "the call was sent again");
    assert!(matches!(h.c.poll_completion(), Some(Completion::Mds(m)) if m.result.is_ok()));
}

#[test]
fn a_segment_is_fetched_once_however_often_it_is_asked_for() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    h.c.read(h.now, OpId(2), 0, vec![0; 4096]);
    h.c.read(h.now, OpId(3), 65536, vec![0; 4096]);
    let first = h.rpcs();
    assert_eq!(
        first
            .iter()
            .filter(|r| r.method == "GetOrAllocateSegment")
            .count(),
        1
    );
    // A refresh publishes a new layout, which wakes the parked reads: still no second fetch.
    h.advance_to_next();
    let rpcs = h.rpcs();
    let refresh_rpc = rpcs.iter().find(|r| r.method == "RefreshSession").unwrap();
    let (peer, cid) = (refresh_rpc.peer, refresh_rpc.cid);
    h.reply(
        &Rpc {
            peer,
            cid,
            method: String::new(),
            payload: Vec::new(),
        },
        &refresh(pb::StatusCode::KOk, 5),
    );
    assert_eq!(h.c.layout().unwrap().seq_num, 5);
    assert!(h.rpcs().iter().all(|r| r.method != "GetOrAllocateSegment"));
}

#[test]
fn owner_auth_failure_blocks_io_until_a_refresh_succeeds() {
    let mut h = Mh::new(1, Credentials::user("alice"));
    h.open();
    h.advance_to_next();
    let rpcs = h.rpcs();
    h.reply(&rpcs[0], &refresh(pb::StatusCode::KOwnerAuthFail, 1));
    let gate = h.c.layout().unwrap().gate.clone();
    assert!(
        matches!(&gate, IoGate::Blocked(m) if m.contains("kOwnerAuthFail")),
        "{gate:?}"
    );
    // Refreshing goes on; the next success reopens the gate.
    h.advance_to_next();
    let rpcs = h.rpcs();
    assert_eq!(rpcs[0].method, "RefreshSession");
    h.reply(&rpcs[0], &refresh(pb::StatusCode::KOk, 1));
    assert_eq!(h.c.layout().unwrap().gate, IoGate::Open);
}
