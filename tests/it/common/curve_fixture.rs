//! A fixture of our own for faults the real cluster cannot make on cue: a fake Curve MDS and a
//! fake chunk server speaking baidu_std over real loopback sockets. The MDS serves one 10 GiB
//! volume (any name, any owner) whose chunks all sit in one copyset on the fake chunk server;
//! the chunk server keeps what is written (per chunk, in memory) and, driven by a queue of
//! faults, answers a data RPC with OVERLOAD, garbage, a slow reply, a truncated attachment or a
//! reply to an unknown correlation id. A test fixture only, never the product's engine.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use prost::Message;

use curve_tgt::curve::frame::{encode_frame, DecodeEvent, FrameDecoder, FrameHead, FrameLimits};
use curve_tgt::curve::proto::{common, cs, mds as pb, topology, RpcMeta, RpcResponseMeta};

/// The volume's chunk size.
pub const CHUNK: u64 = 16 << 20;

/// What the fake chunk server does with the next data RPC.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Status OVERLOAD (the client backs off and retries).
    Overload,
    /// Bytes that are no frame (the connection is lost).
    Garbage,
    /// The right reply after this many milliseconds (this connection waits meanwhile).
    Slow(u64),
    /// Half the announced attachment, then the connection closes.
    Truncate,
    /// The right reply under a correlation id nobody asked with.
    UnknownCid,
}

/// What a handler wants done with a request.
enum Out {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send these bytes, then hang up.
    SendAndClose(Vec<u8>),
}

type Handler = Arc<dyn Fn(FrameHead, Vec<u8>) -> Out + Send + Sync>;

/// Calls `handle` for each request frame on each connection.
fn serve(listener: TcpListener, handle: Handler) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let handle = handle.clone();
            thread::spawn(move || {
                let mut dec = FrameDecoder::new(FrameLimits::default());
                let mut buf = vec![0u8; 1 << 20];
                let mut head: Option<FrameHead> = None;
                let mut att = Vec::new();
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut input = &buf[..n];
                    loop {
                        match dec.decode(&mut input) {
                            Ok(Some(DecodeEvent::Head(h))) => head = Some(h),
                            Ok(Some(DecodeEvent::Attachment(a))) => att.extend_from_slice(a),
                            Ok(Some(DecodeEvent::End)) => {
                                let h = head.take().unwrap();
                                match handle(h, std::mem::take(&mut att)) {
                                    Out::Send(out) => {
                                        if s.write_all(&out).is_err() {
                                            return;
                                        }
                                    }
                                    Out::SendAndClose(out) => {
                                        let _ = s.write_all(&out);
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                }
            });
        }
    });
}

fn reply(cid: i64, body: &impl Message, attachment: &[u8]) -> Vec<u8> {
    let meta = RpcMeta {
        response: Some(RpcResponseMeta {
            error_code: Some(0),
            error_text: None,
        }),
        compress_type: Some(0),
        correlation_id: Some(cid),
        attachment_size: (!attachment.is_empty()).then_some(attachment.len() as i32),
        ..Default::default()
    };
    let mut f = encode_frame(&meta, body, attachment.len());
    f.extend_from_slice(attachment);
    f
}

pub struct Fixture {
    /// The fake MDS (it names the fake chunk server in its replies).
    pub mds: SocketAddr,
    /// Faults for the next data RPCs, one each, in order.
    pub faults: Arc<Mutex<VecDeque<Fault>>>,
    /// Every data RPC answered OVERLOAD while set.
    pub always_overload: Arc<Mutex<bool>>,
}

/// Starts a fake MDS and chunk server on free loopback ports (threads that live as long as
/// the test process; their listeners are private to this fixture).
pub fn fixture() -> Fixture {
    let cs_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let cs_addr = cs_l.local_addr().unwrap();
    let mds_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mds = mds_l.local_addr().unwrap();
    let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
    let always_overload: Arc<Mutex<bool>> = Arc::default();
    let store: Arc<Mutex<HashMap<u64, Vec<u8>>>> = Arc::default(); // chunk id -> bytes

    let info = pb::FileInfo {
        id: Some(9),
        file_name: Some("f".into()),
        owner: Some("u".into()),
        chunk_size: Some(CHUNK as u32),
        segment_size: Some(1 << 30),
        length: Some(10 << 30),
        seq_num: Some(1),
        blocksize: Some(4096),
        ..Default::default()
    };
    serve(
        mds_l,
        Arc::new(move |h: FrameHead, _att| {
            let cid = h.meta.correlation_id.unwrap();
            let method = h.meta.request.as_ref().unwrap().method_name.clone();
            Out::Send(match method.as_str() {
                "OpenFile" => reply(
                    cid,
                    &pb::OpenFileResponse {
                        status_code: 0,
                        proto_session: Some(pb::ProtoSession {
                            session_id: String::new(),
                            lease_time: 5_000_000,
                            create_time: 0,
                            session_status: 0,
                        }),
                        file_info: Some(info.clone()),
                        clone_source_segment: None,
                    },
                    &[],
                ),
                "RefreshSession" => reply(
                    cid,
                    &pb::ReFreshSessionResponse {
                        status_code: 0,
                        session_id: String::new(),
                        file_info: Some(info.clone()),
                        proto_session: None,
                    },
                    &[],
                ),
                "GetFileInfo" => reply(
                    cid,
                    &pb::GetFileInfoResponse {
                        status_code: 0,
                        file_info: Some(info.clone()),
                    },
                    &[],
                ),
                "CloseFile" => reply(cid, &pb::CloseFileResponse { status_code: 0 }, &[]),
                "GetOrAllocateSegment" => {
                    let r = pb::GetOrAllocateSegmentRequest::decode(&h.payload[..]).unwrap();
                    reply(
                        cid,
                        &pb::GetOrAllocateSegmentResponse {
                            status_code: 0,
                            page_file_segment: Some(pb::PageFileSegment {
                                logical_pool_id: 1,
                                start_offset: r.offset,
                                segment_size: 1 << 30,
                                chunk_size: CHUNK as u32,
                                chunks: (0..64)
                                    .map(|i| pb::PageFileChunkInfo {
                                        copyset_id: 1,
                                        chunk_id: r.offset / CHUNK + i + 1,
                                    })
                                    .collect(),
                                origin_file_id: None,
                            }),
                        },
                        &[],
                    )
                }
                "GetChunkServerListInCopySets" => reply(
                    cid,
                    &topology::GetChunkServerListInCopySetsResponse {
                        status_code: 0,
                        cs_info: vec![topology::CopySetServerInfo {
                            copyset_id: 1,
                            cs_locs: vec![common::ChunkServerLocation {
                                chunk_server_id: 1,
                                host_ip: "127.0.0.1".into(),
                                port: u32::from(cs_addr.port()),
                                external_ip: None,
                            }],
                        }],
                    },
                    &[],
                ),
                _ => return Out::SendAndClose(Vec::new()),
            })
        }),
    );

    let (f2, o2) = (faults.clone(), always_overload.clone());
    serve(
        cs_l,
        Arc::new(move |h: FrameHead, att: Vec<u8>| {
            let cid = h.meta.correlation_id.unwrap();
            let method = h.meta.request.as_ref().unwrap().method_name.clone();
            if method == "GetLeader" {
                let r = cs::GetLeaderResponse2 {
                    leader: common::Peer {
                        id: None,
                        address: Some(format!("{cs_addr}:0")),
                    },
                };
                return Out::Send(reply(cid, &r, &[]));
            }
            let ok = |status: cs::ChunkOpStatus, a: &[u8]| {
                reply(
                    cid,
                    &cs::ChunkResponse {
                        status: status as i32,
                        redirect: None,
                        applied_index: None,
                    },
                    a,
                )
            };
            if *o2.lock().unwrap() {
                return Out::Send(ok(cs::ChunkOpStatus::Overload, &[]));
            }
            let fault = f2.lock().unwrap().pop_front();
            let req = cs::ChunkRequest::decode(&h.payload[..]).unwrap();
            let (chunk, at) = (req.chunk_id, req.offset.unwrap() as usize);
            let size = req.size.unwrap() as usize;
            let perform = || -> Vec<u8> {
                let mut st = store.lock().unwrap();
                let data = st.entry(chunk).or_insert_with(|| vec![0u8; CHUNK as usize]);
                let end = (at + size).min(data.len());
                if method == "WriteChunk" {
                    let n = att.len().min(data.len().saturating_sub(at));
                    data[at..at + n].copy_from_slice(&att[..n]);
                    Vec::new()
                } else {
                    data[at.min(end)..end].to_vec()
                }
            };
            match fault {
                None => {
                    let data = perform();
                    Out::Send(ok(cs::ChunkOpStatus::Success, &data))
                }
                Some(Fault::Overload) => Out::Send(ok(cs::ChunkOpStatus::Overload, &[])),
                Some(Fault::Garbage) => Out::Send(b"GARBAGE GARBAGE GARBAGE".to_vec()),
                Some(Fault::Slow(ms)) => {
                    thread::sleep(Duration::from_millis(ms));
                    let data = perform();
                    Out::Send(ok(cs::ChunkOpStatus::Success, &data))
                }
                Some(Fault::Truncate) => {
                    // Announce the data (wrong bytes), send half of it, then hang up: none of
                    // it may reach the caller's buffer.
                    let data = vec![0xEE; size.max(2)];
                    let mut f = ok(cs::ChunkOpStatus::Success, &data);
                    f.truncate(f.len() - data.len() / 2);
                    Out::SendAndClose(f)
                }
                Some(Fault::UnknownCid) => {
                    let data = perform();
                    let r = cs::ChunkResponse {
                        status: 0,
                        redirect: None,
                        applied_index: None,
                    };
                    Out::Send(reply(cid + 1_000_000, &r, &data))
                }
            }
        }),
    );
    Fixture {
        mds,
        faults,
        always_overload,
    }
}
