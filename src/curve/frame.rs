//! brpc "baidu_std" framing: a 12-byte header (`PRPC`, body size and meta size, both u32
//! big-endian), then the `RpcMeta` protobuf, the request or response protobuf and the
//! attachment (brpc `src/brpc/policy/baidu_rpc_protocol.cpp`; curve-tgt.md §7.1).
//!
//! The decoder is incremental and streams attachments: meta and payload (small) are buffered
//! until complete, then the attachment is handed out in the pieces it arrived in, so a read's
//! data is copied once, from the receive buffer straight into the caller's buffer. Every length
//! is checked against [`FrameLimits`] before anything is allocated; after an error the decoder
//! stays failed (the connection must be closed), because the byte stream has lost its framing.

use prost::Message;

use super::ids::CorrelationId;
use super::proto::{RpcMeta, RpcRequestMeta};

/// The four magic bytes that open every baidu_std frame.
pub const MAGIC: [u8; 4] = *b"PRPC";
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 12;

/// The largest sizes a peer may announce. A frame over any of them fails the connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest RpcMeta.
    pub max_meta_bytes: u32,
    /// Largest request/response protobuf (an MDS ListDir reply is the largest we expect).
    pub max_payload_bytes: u32,
    /// Largest attachment (a chunk read reply carries at most one RPC's worth of data).
    pub max_attachment_bytes: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_meta_bytes: 64 << 10,
            max_payload_bytes: 16 << 20,
            max_attachment_bytes: 4 << 20,
        }
    }
}

/// How a peer broke the framing rules. Each one ends the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame did not start with `PRPC`.
    #[error("frame magic is {0:02x?}, not \"PRPC\"")]
    BadMagic([u8; 4]),
    /// meta_size exceeds body_size.
    #[error("meta size {meta} exceeds body size {body}")]
    MetaLargerThanBody {
        /// Announced meta size.
        meta: u32,
        /// Announced body size.
        body: u32,
    },
    /// meta_size is over the limit.
    #[error("meta size {meta} over the limit of {max}")]
    MetaTooLarge {
        /// Announced meta size.
        meta: u32,
        /// The limit.
        max: u32,
    },
    /// The RpcMeta did not decode.
    #[error("RpcMeta does not decode: {0}")]
    BadMeta(String),
    /// The meta's attachment_size is negative.
    #[error("negative attachment size {0}")]
    NegativeAttachment(i32),
    /// The attachment is larger than what follows the meta.
    #[error("attachment size {attachment} exceeds the {rest} bytes after the meta")]
    AttachmentLargerThanBody {
        /// Announced attachment size.
        attachment: u32,
        /// Bytes after the meta.
        rest: u32,
    },
    /// The payload is over the limit.
    #[error("payload size {payload} over the limit of {max}")]
    PayloadTooLarge {
        /// Payload size.
        payload: u32,
        /// The limit.
        max: u32,
    },
    /// The attachment is over the limit.
    #[error("attachment size {attachment} over the limit of {max}")]
    AttachmentTooLarge {
        /// Attachment size.
        attachment: u32,
        /// The limit.
        max: u32,
    },
    /// The meta has no correlation id (or a negative one).
    #[error("frame without a valid correlation id")]
    NoCorrelationId,
}

/// A frame's meta and payload, complete; its attachment (if any) follows as
/// [`DecodeEvent::Attachment`] pieces.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameHead {
    /// The decoded RpcMeta.
    pub meta: RpcMeta,
    /// The correlation id from the meta.
    pub correlation_id: CorrelationId,
    /// The request/response protobuf, not yet decoded.
    pub payload: Vec<u8>,
    /// Attachment bytes that follow.
    pub attachment_len: usize,
}

/// What the decoder found in the bytes it was fed.
#[derive(Debug, PartialEq)]
pub enum DecodeEvent<'a> {
    /// A frame's meta and payload.
    Head(FrameHead),
    /// The next piece of the current frame's attachment.
    Attachment(&'a [u8]),
    /// The current frame is complete.
    End,
}

#[derive(Debug)]
enum State {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Body {
        meta_len: usize,
        body_len: usize,
        /// The meta and the attachment length, once the meta is decoded (once per frame).
        decoded: Option<(RpcMeta, usize)>,
        buf: Vec<u8>,
    },
    Attachment {
        remaining: usize,
    },
    Failed(FrameError),
}

/// Incremental baidu_std frame decoder for one connection.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    state: State,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new(limits: FrameLimits) -> FrameDecoder {
        FrameDecoder {
            limits,
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// True between frames (no partial frame buffered).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Consumes bytes from the front of `input` and returns the next event, or `None` when
    /// `input` is used up without completing one. Call again until `None`.
    pub fn decode<'a>(
        &mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<DecodeEvent<'a>>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Header { buf, have } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = (HEADER_LEN - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    *input = &input[take..];
                    if *have < HEADER_LEN {
                        return Ok(None);
                    }
                    let header = *buf;
                    match self.check_header(&header) {
                        Ok((meta_len, body_len)) => {
                            self.state = State::Body {
                                meta_len,
                                body_len,
                                decoded: None,
                                // The meta first; the payload's room once its length is known.
                                buf: Vec::with_capacity(meta_len),
                            }
                        }
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                State::Body {
                    meta_len,
                    body_len,
                    decoded,
                    buf,
                } => {
                    // Only meta + payload are buffered. The attachment length (and so the
                    // payload length) is known once the meta is decoded, so fill the meta first.
                    let want = match decoded {
                        Some((_, attachment)) => *body_len - *attachment,
                        None => *meta_len,
                    };
                    if buf.len() < want {
                        if input.is_empty() {
                            return Ok(None);
                        }
                        let take = (want - buf.len()).min(input.len());
                        buf.extend_from_slice(&input[..take]);
                        *input = &input[take..];
                        continue;
                    }
                    if decoded.is_none() {
                        match self.decode_head() {
                            Ok(d) => {
                                if let State::Body { decoded, buf, .. } = &mut self.state {
                                    buf.reserve_exact(d.1);
                                    *decoded = Some(d.0);
                                }
                            }
                            Err(e) => return Err(self.fail(e)),
                        }
                        continue;
                    }
                    return match self.finish_head() {
                        Ok(head) => Ok(Some(DecodeEvent::Head(head))),
                        Err(e) => Err(self.fail(e)),
                    };
                }
                State::Attachment { remaining } => {
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; HEADER_LEN],
                            have: 0,
                        };
                        return Ok(Some(DecodeEvent::End));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = (*remaining).min(input.len());
                    *remaining -= take;
                    let (piece, rest) = input.split_at(take);
                    *input = rest;
                    return Ok(Some(DecodeEvent::Attachment(piece)));
                }
            }
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.state = State::Failed(e.clone());
        e
    }

    fn check_header(&self, h: &[u8; HEADER_LEN]) -> Result<(usize, usize), FrameError> {
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let body = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let meta = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if meta > body {
            return Err(FrameError::MetaLargerThanBody { meta, body });
        }
        if meta > self.limits.max_meta_bytes {
            return Err(FrameError::MetaTooLarge {
                meta,
                max: self.limits.max_meta_bytes,
            });
        }
        // The payload and attachment together cannot exceed both limits.
        let rest = body - meta;
        let max_rest =
            u64::from(self.limits.max_payload_bytes) + u64::from(self.limits.max_attachment_bytes);
        if u64::from(rest) > max_rest {
            return Err(FrameError::PayloadTooLarge {
                payload: rest,
                max: self.limits.max_payload_bytes,
            });
        }
        Ok((meta as usize, body as usize))
    }

    /// Decodes the buffered meta (the only time per frame) and checks the attachment and
    /// payload lengths it implies: `((meta, attachment length), payload length)`.
    fn decode_head(&self) -> Result<((RpcMeta, usize), usize), FrameError> {
        let State::Body {
            meta_len,
            body_len,
            buf,
            ..
        } = &self.state
        else {
            unreachable!("decode_head only in Body")
        };
        let meta = decode_meta(&buf[..*meta_len])?;
        let attachment = attachment_len(&meta, *body_len - *meta_len, &self.limits)?;
        let payload = *body_len - *meta_len - attachment;
        if payload > self.limits.max_payload_bytes as usize {
            return Err(FrameError::PayloadTooLarge {
                payload: payload as u32,
                max: self.limits.max_payload_bytes,
            });
        }
        Ok(((meta, attachment), payload))
    }

    fn finish_head(&mut self) -> Result<FrameHead, FrameError> {
        let State::Body {
            meta_len,
            decoded: Some((meta, attachment)),
            buf,
            ..
        } = std::mem::replace(&mut self.state, State::Attachment { remaining: 0 })
        else {
            unreachable!("finish_head only in Body with the meta decoded")
        };
        let correlation_id = match meta.correlation_id {
            Some(c) if c >= 0 => CorrelationId(c as u64),
            _ => return Err(FrameError::NoCorrelationId),
        };
        let mut payload = buf;
        payload.drain(..meta_len);
        self.state = State::Attachment {
            remaining: attachment,
        };
        Ok(FrameHead {
            meta,
            correlation_id,
            payload,
            attachment_len: attachment,
        })
    }
}

fn decode_meta(bytes: &[u8]) -> Result<RpcMeta, FrameError> {
    RpcMeta::decode(bytes).map_err(|e| FrameError::BadMeta(e.to_string()))
}

fn attachment_len(meta: &RpcMeta, rest: usize, limits: &FrameLimits) -> Result<usize, FrameError> {
    let a = meta.attachment_size.unwrap_or(0);
    if a < 0 {
        return Err(FrameError::NegativeAttachment(a));
    }
    let a = a as u32;
    if a > limits.max_attachment_bytes {
        return Err(FrameError::AttachmentTooLarge {
            attachment: a,
            max: limits.max_attachment_bytes,
        });
    }
    if a as usize > rest {
        return Err(FrameError::AttachmentLargerThanBody {
            attachment: a,
            rest: rest as u32,
        });
    }
    Ok(a as usize)
}

/// What names the remote method of a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// Full service name, such as `curve.chunkserver.ChunkService`.
    pub service: &'static str,
    /// Method name, such as `ReadChunk`.
    pub method: &'static str,
}

/// Encodes a request's header, meta and payload; `attachment_len` bytes of attachment are sent
/// right after it by the caller (so write data is never copied into the frame).
pub fn encode_request(
    cid: CorrelationId,
    method: Method,
    log_id: Option<i64>,
    payload: &impl Message,
    attachment_len: usize,
) -> Vec<u8> {
    let meta = RpcMeta {
        request: Some(RpcRequestMeta {
            service_name: method.service.to_string(),
            method_name: method.method.to_string(),
            log_id,
            timeout_ms: None,
        }),
        response: None,
        compress_type: Some(0),
        correlation_id: Some(cid.0 as i64),
        attachment_size: (attachment_len > 0).then_some(attachment_len as i32),
        authentication_data: None,
    };
    encode_frame(&meta, payload, attachment_len)
}

/// Encodes any frame's header, meta and payload (servers in test fixtures use it for replies).
pub fn encode_frame(meta: &RpcMeta, payload: &impl Message, attachment_len: usize) -> Vec<u8> {
    let meta_len = meta.encoded_len();
    let payload_len = payload.encoded_len();
    let body = meta_len + payload_len + attachment_len;
    let mut out = Vec::with_capacity(HEADER_LEN + meta_len + payload_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&(meta_len as u32).to_be_bytes());
    meta.encode(&mut out).expect("Vec grows as needed");
    payload.encode(&mut out).expect("Vec grows as needed");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::proto::{cs, RpcResponseMeta};
    use proptest::prelude::*;

    /// Decodes a whole byte stream, fed in pieces of `step` bytes, into (head, attachment).
    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<(FrameHead, Vec<u8>)>, FrameError> {
        let mut d = FrameDecoder::new(FrameLimits::default());
        let mut out = Vec::new();
        let mut cur: Option<(FrameHead, Vec<u8>)> = None;
        for chunk in bytes.chunks(step.max(1)) {
            let mut input = chunk;
            while let Some(ev) = d.decode(&mut input)? {
                match ev {
                    DecodeEvent::Head(h) => cur = Some((h, Vec::new())),
                    DecodeEvent::Attachment(a) => cur.as_mut().unwrap().1.extend_from_slice(a),
                    DecodeEvent::End => out.push(cur.take().unwrap()),
                }
            }
        }
        // A frame without attachment ends on the next decode call.
        let mut empty: &[u8] = &[];
        while let Some(ev) = d.decode(&mut empty)? {
            if ev == DecodeEvent::End {
                out.push(cur.take().unwrap());
            }
        }
        Ok(out)
    }

    fn reply(cid: u64, status: i32, attachment: &[u8]) -> Vec<u8> {
        let meta = RpcMeta {
            response: Some(RpcResponseMeta {
                error_code: Some(0),
                error_text: None,
            }),
            compress_type: Some(0),
            correlation_id: Some(cid as i64),
            attachment_size: (!attachment.is_empty()).then_some(attachment.len() as i32),
            ..Default::default()
        };
        let body = cs::ChunkResponse {
            status,
            redirect: None,
            applied_index: Some(2),
        };
        let mut f = encode_frame(&meta, &body, attachment.len());
        f.extend_from_slice(attachment);
        f
    }

    #[test]
    fn decodes_the_captured_write_reply() {
        // curve-wire-samples.txt #910: WriteChunk reply from a real chunk server.
        let meta = hex("1202080018002082808080902100");
        let meta = &meta[..meta.len() - 1];
        let payload = hex("08001802");
        let mut f = b"PRPC".to_vec();
        f.extend_from_slice(&((meta.len() + payload.len()) as u32).to_be_bytes());
        f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        f.extend_from_slice(meta);
        f.extend_from_slice(&payload);
        let frames = decode_all(&f, 5).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0.correlation_id, CorrelationId(1138166333442));
        let r = cs::ChunkResponse::decode(&frames[0].0.payload[..]).unwrap();
        assert_eq!(r.status, cs::ChunkOpStatus::Success as i32);
        assert_eq!(r.applied_index, Some(2));
    }

    #[test]
    fn request_meta_matches_the_captured_read_request() {
        // curve-wire-samples.txt #911: the RpcMeta of a ReadChunk request, byte for byte.
        let req = cs::ChunkRequest {
            op_type: cs::ChunkOpType::ChunkOpRead as i32,
            logic_pool_id: 1,
            copyset_id: 2,
            chunk_id: 1,
            offset: Some(0),
            size: Some(4096),
            ..Default::default()
        };
        let f = encode_request(
            CorrelationId(2199023255554),
            Method {
                service: "curve.chunkserver.ChunkService",
                method: "ReadChunk",
            },
            None,
            &req,
            0,
        );
        let meta_len = u32::from_be_bytes(f[8..12].try_into().unwrap()) as usize;
        assert_eq!(
            &f[12..12 + meta_len],
            &hex("0a2b0a1e63757276652e6368756e6b7365727665722e4368756e6b536572766963651209526561644368756e6b180020828080808040")[..]
        );
        assert_eq!(&f[12 + meta_len..], &hex("08011001180220013000388020")[..]);
    }

    #[test]
    fn attachment_is_streamed_in_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let f = reply(7, 0, &data);
        let frames = decode_all(&f, 1000).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1, data);
        assert_eq!(frames[0].0.attachment_len, data.len());
    }

    #[test]
    fn bad_magic_fails_and_stays_failed() {
        let mut f = reply(1, 0, b"");
        f[0] = b'H';
        let mut d = FrameDecoder::new(FrameLimits::default());
        let mut input = &f[..];
        let e = d.decode(&mut input).unwrap_err();
        assert!(matches!(e, FrameError::BadMagic(_)), "{e}");
        let mut more = &reply(2, 0, b"")[..];
        assert_eq!(d.decode(&mut more).unwrap_err(), e);
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocation() {
        let mut f = b"PRPC".to_vec();
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        f.extend_from_slice(&16u32.to_be_bytes());
        let e = decode_all(&f, 64).unwrap_err();
        assert!(matches!(e, FrameError::PayloadTooLarge { .. }), "{e}");
        let mut f = b"PRPC".to_vec();
        f.extend_from_slice(&10u32.to_be_bytes());
        f.extend_from_slice(&20u32.to_be_bytes());
        let e = decode_all(&f, 64).unwrap_err();
        assert_eq!(e, FrameError::MetaLargerThanBody { meta: 20, body: 10 });
    }

    #[test]
    fn attachment_larger_than_body_is_refused() {
        let meta = RpcMeta {
            correlation_id: Some(1),
            attachment_size: Some(100),
            ..Default::default()
        };
        let f = encode_frame(&meta, &cs::ChunkResponse::default(), 10);
        let mut f2 = f.clone();
        f2.extend_from_slice(&[0; 10]);
        let e = decode_all(&f2, 64).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::AttachmentLargerThanBody {
                    attachment: 100,
                    ..
                }
            ),
            "{e}"
        );
        let meta = RpcMeta {
            correlation_id: Some(1),
            attachment_size: Some(-5),
            ..Default::default()
        };
        let f = encode_frame(&meta, &cs::ChunkResponse::default(), 0);
        assert_eq!(
            decode_all(&f, 64).unwrap_err(),
            FrameError::NegativeAttachment(-5)
        );
    }

    #[test]
    fn missing_correlation_id_is_refused() {
        let meta = RpcMeta::default();
        let f = encode_frame(&meta, &cs::ChunkResponse::default(), 0);
        assert_eq!(decode_all(&f, 64).unwrap_err(), FrameError::NoCorrelationId);
    }

    #[test]
    fn garbage_meta_is_refused() {
        let mut f = b"PRPC".to_vec();
        f.extend_from_slice(&4u32.to_be_bytes());
        f.extend_from_slice(&4u32.to_be_bytes());
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_all(&f, 64).unwrap_err(),
            FrameError::BadMeta(_)
        ));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    proptest! {
        /// Any sequence of frames, split at any points, decodes to exactly what was encoded.
        #[test]
        fn roundtrip_any_split(
            frames in proptest::collection::vec((any::<u32>(), 0i32..13, proptest::collection::vec(any::<u8>(), 0..3000)), 1..6),
            step in 1usize..5000,
        ) {
            let mut stream = Vec::new();
            for (cid, status, att) in &frames {
                stream.extend(reply(u64::from(*cid), *status, att));
            }
            let got = decode_all(&stream, step).unwrap();
            prop_assert_eq!(got.len(), frames.len());
            for ((head, att), (cid, status, want)) in got.iter().zip(&frames) {
                prop_assert_eq!(head.correlation_id, CorrelationId(u64::from(*cid)));
                let r = cs::ChunkResponse::decode(&head.payload[..]).unwrap();
                prop_assert_eq!(r.status, *status);
                prop_assert_eq!(att, want);
            }
        }

        /// Arbitrary bytes never panic the decoder, and it never yields more attachment bytes
        /// than a head announced.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000), step in 1usize..300) {
            let mut d = FrameDecoder::new(FrameLimits::default());
            let mut announced = 0usize;
            let mut seen = 0usize;
            'outer: for chunk in bytes.chunks(step) {
                let mut input = chunk;
                loop {
                    match d.decode(&mut input) {
                        Ok(Some(DecodeEvent::Head(h))) => { announced += h.attachment_len; }
                        Ok(Some(DecodeEvent::Attachment(a))) => { seen += a.len(); }
                        Ok(Some(DecodeEvent::End)) => {}
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
            prop_assert!(seen <= announced);
        }

        /// A valid frame with its prefix starting with "PRPC" still errors or waits cleanly
        /// when a length field is corrupted.
        #[test]
        fn corrupted_lengths_fail_cleanly(pos in 4usize..12, val in any::<u8>()) {
            let mut f = reply(3, 0, &[1, 2, 3, 4]);
            f[pos] = val;
            let _ = decode_all(&f, 7);
        }
    }
}
