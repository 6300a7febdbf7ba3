//! Scripted-peer tests of the sans-IO client: the test plays the chunk servers (and the MDS)
//! message by message, with synthetic time, so retry rules and hostile replies are checked
//! exactly and without sockets or sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::chunk_io::{ChunkIo, IoCompletion};
use super::config::ClientConfig;
use super::conn::Action;
use super::error::IoError;
use super::frame::{encode_frame, HEADER_LEN};
use super::ids::{
    ChunkId, ChunkServerId, CopysetId, CopysetKey, CorrelationId, LogicalPoolId, OpId, PeerId,
};
use super::layout::{Geometry, Layout, LayoutNeed, Member, Segment};
use super::proto::{common, cs, RpcMeta, RpcResponseMeta};

const GIB: u64 = 1 << 30;

fn cs_addr(n: u16) -> SocketAddr {
    format!("10.0.0.{}:{}", n + 1, 8200 + n).parse().unwrap()
}

fn layout(version: u64, seq: u64) -> Arc<Layout> {
    let g = Geometry {
        file_id: 3,
        length: 10 * GIB,
        chunk_size: 16 << 20,
        segment_size: 1 << 30,
        block_size: 4096,
    };
    let mut l = Layout::new(g, seq);
    l.version = version;
    let pool = LogicalPoolId(1);
    let chunks = (0..64u64)
        .map(|i| (ChunkId(i + 1), CopysetId((i % 3) as u32 + 1)))
        .collect();
    l.segments
        .insert(0, Arc::new(Segment::Allocated { pool, chunks }));
    l.segments.insert(1, Arc::new(Segment::Unallocated));
    for c in 1..=3u32 {
        let members = (0..3u16)
            .map(|n| Member {
                id: ChunkServerId(u32::from(n) + 1),
                addr: cs_addr(n),
            })
            .collect();
        l.copysets.insert(
            CopysetKey {
                pool,
                copyset: CopysetId(c),
            },
            Arc::new(members),
        );
    }
    Arc::new(l)
}

/// A request the client sent, decoded.
#[derive(Debug)]
struct Sent {
    peer: PeerId,
    cid: CorrelationId,
    method: String,
    payload: Vec<u8>,
    attachment: Vec<u8>,
}

struct Harness {
    io: ChunkIo<Vec<u8>, Bytes>,
    now: Instant,
    peers: Vec<(PeerId, SocketAddr)>,
    closed: Vec<(PeerId, String)>,
}

impl Harness {
    fn new(cfg: ClientConfig) -> Harness {
        let now = Instant::now();
        let mut io = ChunkIo::new(cfg, 0);
        io.set_layout(now, layout(1, 1));
        Harness {
            io,
            now,
            peers: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn addr(&self, peer: PeerId) -> SocketAddr {
        self.peers
            .iter()
            .find(|p| p.0 == peer)
            .map(|p| p.1)
            .expect("known peer")
    }

    /// Accepts every connect, records closes, and returns the decoded requests sent.
    fn sent(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        for _ in 0..100 {
            let mut progress = false;
            while let Some(a) = self.io.poll_action() {
                progress = true;
                match a {
                    Action::Connect { peer, addr } => {
                        self.peers.retain(|p| p.0 != peer);
                        self.peers.push((peer, addr));
                        self.io.on_connected(self.now, peer);
                    }
                    Action::Close { peer, reason } => self.closed.push((peer, reason)),
                }
            }
            while let Some(t) = self.io.poll_transmit() {
                progress = true;
                let h = &t.head;
                let meta_len = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
                let meta = RpcMeta::decode(&h[HEADER_LEN..HEADER_LEN + meta_len]).unwrap();
                let req = meta.request.unwrap();
                assert_eq!(
                    meta.attachment_size.unwrap_or(0) as usize,
                    t.attachment_bytes().len()
                );
                out.push(Sent {
                    peer: t.peer,
                    cid: CorrelationId(meta.correlation_id.unwrap() as u64),
                    method: req.method_name,
                    payload: h[HEADER_LEN + meta_len..].to_vec(),
                    attachment: t.attachment_bytes().to_vec(),
                });
            }
            if !progress {
                break;
            }
        }
        out
    }

    fn reply_bytes(cid: CorrelationId, body: &impl Message, attachment: &[u8]) -> Vec<u8> {
        let meta = RpcMeta {
            response: Some(RpcResponseMeta {
                error_code: Some(0),
                error_text: None,
            }),
            compress_type: Some(0),
            correlation_id: Some(cid.0 as i64),
            attachment_size: (!attachment.is_empty()).then_some(attachment.len() as i32),
            authentication_data: None,
            request: None,
        };
        let mut f = encode_frame(&meta, body, attachment.len());
        f.extend_from_slice(attachment);
        f
    }

    fn reply(&mut self, s: &Sent, body: &impl Message, attachment: &[u8]) {
        let f = Harness::reply_bytes(s.cid, body, attachment);
        self.io.on_recv(self.now, s.peer, &f);
    }

    fn chunk_status(&mut self, s: &Sent, status: cs::ChunkOpStatus, attachment: &[u8]) {
        let r = cs::ChunkResponse {
            status: status as i32,
            redirect: None,
            applied_index: Some(1),
        };
        self.reply(s, &r, attachment);
    }

    /// Answers every GetLeader in `sent` naming `leader`; returns the other requests.
    fn answer_leaders(&mut self, sent: Vec<Sent>, leader: SocketAddr) -> Vec<Sent> {
        let mut rest = Vec::new();
        for s in sent {
            if s.method == "GetLeader" {
                let r = cs::GetLeaderResponse2 {
                    leader: common::Peer {
                        id: None,
                        address: Some(format!("{leader}:0")),
                    },
                };
                self.reply(&s, &r, &[]);
            } else {
                rest.push(s);
            }
        }
        rest
    }

    /// Runs until the client has sent data RPCs (answering GetLeader with `leader`).
    fn data_rpcs(&mut self, leader: SocketAddr) -> Vec<Sent> {
        for _ in 0..10 {
            let s = self.sent();
            let rest = self.answer_leaders(s, leader);
            if !rest.is_empty() {
                return rest;
            }
        }
        Vec::new()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.io.on_timeout(self.now);
    }

    fn completion(&mut self) -> Option<IoCompletion<Vec<u8>>> {
        self.io.poll_completion()
    }
}

fn req(s: &Sent) -> cs::ChunkRequest {
    cs::ChunkRequest::decode(&s.payload[..]).unwrap()
}

#[test]
fn read_asks_every_member_for_the_leader_then_reads_there() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 8192, vec![0xee; 8192]);
    let sent = h.sent();
    assert_eq!(sent.len(), 3, "GetLeader to each member");
    assert!(sent.iter().all(|s| s.method == "GetLeader"));
    let rpcs = h.answer_leaders(sent, cs_addr(1));
    assert!(rpcs.is_empty());
    let rpcs = h.sent();
    assert_eq!(rpcs.len(), 1);
    assert_eq!(h.addr(rpcs[0].peer), cs_addr(1));
    let r = req(&rpcs[0]);
    assert_eq!(
        (r.chunk_id, r.copyset_id, r.offset, r.size, r.sn),
        (1, 1, Some(8192), Some(8192), None)
    );
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &data);
    let c = h.completion().unwrap();
    assert_eq!(c.result, Ok(()));
    assert_eq!(c.buf.unwrap(), data);
    // Answered at once on synthetic time: one RPC in the fastest latency bucket.
    assert_eq!(h.io.stats().rpc_latency_us_log2[0], 1);
    assert_eq!(h.io.stats().latency_us_quantile(500), Some(2));
}

#[test]
fn write_leaves_from_the_callers_buffer_split_at_64k_and_chunk_edges() {
    let mut h = Harness::new(ClientConfig::default());
    let off = (16 << 20) - 65536 - 4096;
    let data = Bytes::from((0..200_704u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    h.io.write(h.now, OpId(7), off, data.clone());
    let rpcs = h.data_rpcs(cs_addr(0));
    // 69632 bytes before the chunk edge: 65536 + 4096, then 131072 after it: 2 x 65536.
    let mut sizes: Vec<(u64, u32)> = rpcs
        .iter()
        .map(|s| (req(s).chunk_id, req(s).size.unwrap()))
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![(1, 4096), (1, 65536), (2, 65536), (2, 65536)]);
    for s in &rpcs {
        let r = req(s);
        assert_eq!((r.sn, r.file_id), (Some(1), Some(3)));
        let file_off = (r.chunk_id - 1) * (16 << 20) + u64::from(r.offset.unwrap());
        let at = (file_off - off) as usize;
        assert_eq!(s.attachment, data[at..at + r.size.unwrap() as usize]);
    }
    for s in &rpcs {
        h.chunk_status(s, cs::ChunkOpStatus::Success, &[]);
    }
    assert_eq!(h.completion().unwrap().result, Ok(()));
}

#[test]
fn redirected_without_a_redirect_field_asks_get_leader_again() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Redirected, &[]);
    let rpcs = h.data_rpcs(cs_addr(2));
    assert_eq!(rpcs.len(), 1);
    assert_eq!(h.addr(rpcs[0].peer), cs_addr(2));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[7; 4096]);
    let c = h.completion().unwrap();
    assert_eq!(c.result, Ok(()));
    assert_eq!(h.io.stats().retries_redirect, 1);
}

#[test]
fn a_redirect_field_naming_a_member_is_followed_directly() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    let r = cs::ChunkResponse {
        status: cs::ChunkOpStatus::Redirected as i32,
        redirect: Some(format!("{}:0", cs_addr(1))),
        applied_index: None,
    };
    h.reply(&rpcs[0], &r, &[]);
    let rpcs = h.sent();
    assert_eq!(rpcs.len(), 1, "no GetLeader round");
    assert_eq!(
        (rpcs[0].method.as_str(), h.addr(rpcs[0].peer)),
        ("ReadChunk", cs_addr(1))
    );
}

#[test]
fn members_redirecting_to_each_other_get_backoff_not_a_tight_loop() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let mut rpcs = h.data_rpcs(cs_addr(0));
    let redirect_to = |n: u16| cs::ChunkResponse {
        status: cs::ChunkOpStatus::Redirected as i32,
        redirect: Some(format!("{}:0", cs_addr(n))),
        applied_index: None,
    };
    // The first redirect is followed at once.
    h.reply(&rpcs[0], &redirect_to(1), &[]);
    rpcs = h.sent();
    assert_eq!(h.addr(rpcs[0].peer), cs_addr(1));
    // The second, back to the first member, waits.
    h.reply(&rpcs[0], &redirect_to(0), &[]);
    assert!(
        h.sent().is_empty(),
        "no immediate retry after a second redirect"
    );
    let wait = h.io.poll_timeout().unwrap() - h.now;
    assert!(wait >= Duration::from_millis(50), "{wait:?}");
    h.advance(wait);
    let rpcs = h.sent();
    assert_eq!(
        (rpcs.len(), h.addr(rpcs[0].peer)),
        (1, cs_addr(0)),
        "retried at the named member after the backoff"
    );
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[1; 4096]);
    assert_eq!(h.completion().unwrap().result, Ok(()));
    assert_eq!(h.io.stats().retries_redirect, 2);
}

#[test]
fn overload_backs_off_about_100ms_then_retries() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Overload, &[]);
    assert!(h.sent().is_empty(), "no immediate retry");
    let wait = h.io.poll_timeout().unwrap() - h.now;
    assert!(
        wait >= Duration::from_millis(90) && wait <= Duration::from_millis(110),
        "{wait:?}"
    );
    h.advance(wait);
    let rpcs = h.sent();
    assert_eq!(rpcs.len(), 1);
    // A second OVERLOAD doubles the wait.
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Overload, &[]);
    let wait = h.io.poll_timeout().unwrap() - h.now;
    assert!(
        wait >= Duration::from_millis(180) && wait <= Duration::from_millis(220),
        "{wait:?}"
    );
    h.advance(wait);
    let rpcs = h.sent();
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[1; 4096]);
    assert_eq!(h.completion().unwrap().result, Ok(()));
    assert_eq!(h.io.stats().retries_overload, 2);
}

#[test]
fn garbage_frames_drop_the_connection_and_the_read_is_retried() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    let peer = rpcs[0].peer;
    h.io.on_recv(h.now, peer, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let _ = h.sent();
    assert_eq!(h.closed.len(), 1);
    assert!(h.closed[0].1.contains("bad frame"), "{}", h.closed[0].1);
    assert_eq!(h.io.stats().bad_replies, 1);
    // The leader is forgotten; after the reconnect hold-off the read goes through.
    for _ in 0..20 {
        h.advance(Duration::from_millis(100));
        let rpcs = h.data_rpcs(cs_addr(1));
        if let Some(s) = rpcs.first() {
            h.chunk_status(s, cs::ChunkOpStatus::Success, &[9; 4096]);
            break;
        }
    }
    let c = h.completion().expect("read completes");
    assert_eq!(c.result, Ok(()));
    assert_eq!(c.buf.unwrap(), vec![9; 4096]);
}

#[test]
fn a_reply_to_an_unknown_correlation_id_drops_the_connection() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    let bogus = Sent {
        peer: rpcs[0].peer,
        cid: CorrelationId(999_999),
        method: String::new(),
        payload: Vec::new(),
        attachment: Vec::new(),
    };
    h.chunk_status(&bogus, cs::ChunkOpStatus::Success, &[0; 4096]);
    let _ = h.sent();
    assert!(
        h.closed
            .iter()
            .any(|c| c.1.contains("unknown correlation id 999999")),
        "{:?}",
        h.closed
    );
    assert!(h.completion().is_none(), "the op is retried, not failed");
}

#[test]
fn a_short_read_attachment_is_not_taken_as_data() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 8192]);
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[5; 4096]);
    assert!(h.completion().is_none());
    assert_eq!(h.io.stats().bad_replies, 1);
    let wait = h.io.poll_timeout().unwrap() - h.now;
    h.advance(wait);
    let rpcs = h.sent();
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[6; 8192]);
    assert_eq!(h.completion().unwrap().buf.unwrap(), vec![6; 8192]);
}

#[test]
fn a_connection_lost_mid_attachment_retries_without_corrupting_data() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 8192]);
    let rpcs = h.data_rpcs(cs_addr(0));
    let f = Harness::reply_bytes(
        rpcs[0].cid,
        &cs::ChunkResponse {
            status: 0,
            redirect: None,
            applied_index: None,
        },
        &[3; 8192],
    );
    h.io.on_recv(h.now, rpcs[0].peer, &f[..f.len() - 100]);
    h.io.on_closed(h.now, rpcs[0].peer, "reset by peer");
    assert!(h.completion().is_none());
    let rpcs = h.data_rpcs(cs_addr(1));
    assert_eq!(rpcs.len(), 1);
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[4; 8192]);
    assert_eq!(h.completion().unwrap().buf.unwrap(), vec![4; 8192]);
}

#[test]
fn silence_fails_the_op_at_its_deadline_saying_why() {
    let cfg = ClientConfig {
        op_deadline: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.io.write(h.now, OpId(1), 0, Bytes::from(vec![1; 4096]));
    let _ = h.data_rpcs(cs_addr(0));
    let start = h.now;
    let mut done = None;
    for _ in 0..1000 {
        let Some(t) = h.io.poll_timeout() else { break };
        h.now = t.max(h.now);
        h.io.on_timeout(h.now);
        let sent = h.sent();
        let _ = h.answer_leaders(sent, cs_addr(0)); // leaders answer; data RPCs never do
        if let Some(c) = h.completion() {
            done = Some(c);
            break;
        }
    }
    let c = done.expect("completes");
    let Err(IoError::Deadline { elapsed_ms, last }) = c.result else {
        panic!("{:?}", c.result)
    };
    assert!((5000..5100).contains(&elapsed_ms), "{elapsed_ms}");
    assert!(last.contains("did not answer"), "{last}");
    assert!(h.now - start <= Duration::from_millis(5100));
    assert_eq!(h.io.ops_in_flight(), 0);
}

#[test]
fn cancel_returns_the_buffer_and_ignores_the_late_reply() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0xaa; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    h.io.cancel(OpId(1));
    let c = h.completion().unwrap();
    assert_eq!(c.result, Err(IoError::Cancelled));
    assert_eq!(c.buf.unwrap(), vec![0xaa; 4096]);
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[1; 4096]);
    let _ = h.sent();
    assert!(h.closed.is_empty(), "a late reply is not a protocol error");
    assert!(h.completion().is_none());
}

#[test]
fn missing_chunks_and_unallocated_segments_read_as_zeros() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), GIB, vec![0xff; 65536]);
    assert_eq!(h.completion().unwrap().buf.unwrap(), vec![0; 65536]);
    assert!(h.sent().is_empty(), "no RPC for an unallocated segment");
    h.io.read(h.now, OpId(2), 0, vec![0xff; 4096]);
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::ChunkNotexist, &[]);
    assert_eq!(h.completion().unwrap().buf.unwrap(), vec![0; 4096]);
}

#[test]
fn a_write_to_an_unallocated_segment_asks_for_allocation() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.write(h.now, OpId(1), GIB, Bytes::from(vec![1; 4096]));
    assert_eq!(
        h.io.poll_need(),
        Some(LayoutNeed::Segment {
            index: 1,
            allocate: true
        })
    );
    h.io.read(h.now, OpId(2), 2 * GIB, vec![0; 4096]);
    assert_eq!(
        h.io.poll_need(),
        Some(LayoutNeed::Segment {
            index: 2,
            allocate: false
        })
    );
}

#[test]
fn backward_reloads_the_sequence_number_and_retries_with_it() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.write(h.now, OpId(1), 0, Bytes::from(vec![1; 4096]));
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Backward, &[]);
    assert_eq!(h.io.poll_need(), Some(LayoutNeed::SeqNum));
    assert!(h.sent().is_empty());
    h.io.set_layout(h.now, layout(2, 2));
    let rpcs = h.sent();
    assert_eq!(rpcs.len(), 1);
    assert_eq!(req(&rpcs[0]).sn, Some(2));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[]);
    assert_eq!(h.completion().unwrap().result, Ok(()));
}

#[test]
fn refusals_fail_at_once() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.write(h.now, OpId(1), 0, Bytes::from(vec![1; 4096]));
    let rpcs = h.data_rpcs(cs_addr(0));
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::InvalidRequest, &[]);
    let c = h.completion().unwrap();
    assert!(
        matches!(&c.result, Err(IoError::Refused(m)) if m.contains("INVALID_REQUEST")),
        "{:?}",
        c.result
    );
}

#[test]
fn a_leader_outside_the_copyset_is_not_believed() {
    let mut h = Harness::new(ClientConfig::default());
    h.io.read(h.now, OpId(1), 0, vec![0; 4096]);
    let sent = h.sent();
    let rest = h.answer_leaders(sent, "192.0.2.1:9999".parse().unwrap());
    assert!(rest.is_empty());
    assert!(h.sent().is_empty(), "no RPC to a stranger");
    // The pieces back off and ask again; a real member then answers.
    let wait = h.io.poll_timeout().unwrap() - h.now;
    h.advance(wait);
    let rpcs = h.data_rpcs(cs_addr(2));
    assert_eq!(h.addr(rpcs[0].peer), cs_addr(2));
}

#[test]
fn in_flight_rpcs_are_capped() {
    let cfg = ClientConfig {
        max_inflight_rpcs: 4,
        ..ClientConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.io.read(h.now, OpId(1), 0, vec![0; 1 << 20]);
    let rpcs = h.data_rpcs(cs_addr(0));
    assert_eq!(rpcs.len(), 4);
    h.chunk_status(&rpcs[0], cs::ChunkOpStatus::Success, &[0; 65536]);
    assert_eq!(h.sent().len(), 1, "one completes, one more goes out");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever statuses the chunk servers answer, every op completes (success or a
        /// reported error) by its deadline, and never panics.
        #[test]
        fn any_replies_end_every_op_by_the_deadline(statuses in proptest::collection::vec(0i32..14, 1..60), len_blocks in 1usize..40, write in any::<bool>()) {
            let cfg = ClientConfig { op_deadline: Duration::from_secs(3), ..ClientConfig::default() };
            let mut h = Harness::new(cfg);
            let start = h.now;
            let len = len_blocks * 4096;
            let off = (16u64 << 20) - 8192;
            if write {
                h.io.write(h.now, OpId(1), off, Bytes::from(vec![1; len]));
            } else {
                h.io.read(h.now, OpId(1), off, vec![0; len]);
            }
            let mut k = 0;
            let mut done = None;
            for _ in 0..2000 {
                if let Some(c) = h.completion() { done = Some(c); break; }
                let sent = h.sent();
                let rest = h.answer_leaders(sent, cs_addr((k % 3) as u16));
                for s in &rest {
                    let st = statuses[k % statuses.len()];
                    k += 1;
                    let size = req(s).size.unwrap_or(0) as usize;
                    let att = if st == 0 && s.method == "ReadChunk" { vec![2u8; size] } else { Vec::new() };
                    let r = cs::ChunkResponse { status: st, redirect: None, applied_index: None };
                    h.reply(s, &r, &att);
                }
                if rest.is_empty() {
                    if let Some(n) = h.io.poll_need() {
                        prop_assert_eq!(n, LayoutNeed::SeqNum);
                        h.io.set_layout(h.now, layout(2 + k as u64, 2 + k as u64));
                        continue;
                    }
                    if let Some(t) = h.io.poll_timeout() {
                        h.now = t.max(h.now);
                        h.io.on_timeout(h.now);
                    }
                }
            }
            let c = done.expect("op completed");
            prop_assert!(h.now - start <= Duration::from_millis(3100));
            if !write {
                prop_assert_eq!(c.buf.as_ref().map(Vec::len), Some(len));
            }
        }
    }
}
