//! Target `curve_frame`: Curve's brpc
//! baidu_std frame decoder (`curve::frame::FrameDecoder::decode`) over a byte stream cut into
//! the pieces a socket might deliver.
//!
//! Input: one byte choosing the piece size pattern, then the stream. Checks: no panic; the
//! attachment pieces of a frame add up to the `attachment_len` its head announced and stay
//! within the limits; a frame ends only after its attachment; once the decoder fails it keeps
//! failing (the stream has lost its framing); decoding in pieces and in one go agree.

use curve_tgt::curve::frame::{DecodeEvent, FrameDecoder, FrameLimits};

fn limits() -> FrameLimits {
    FrameLimits {
        max_meta_bytes: 4096,
        max_payload_bytes: 1 << 16,
        max_attachment_bytes: 1 << 16,
    }
}

/// Everything the decoder reports for `data` fed in pieces of `piece` bytes (0: all at once).
fn events(data: &[u8], piece: usize) -> (Vec<String>, bool) {
    let lim = limits();
    let mut d = FrameDecoder::new(lim);
    let mut log = Vec::new();
    let mut open: Option<(usize, usize)> = None; // (announced, received)
    let chunks: Vec<&[u8]> = if piece == 0 {
        vec![data]
    } else {
        data.chunks(piece).collect()
    };
    for chunk in chunks {
        let mut input = chunk;
        // Bounded: every event consumes input or ends a frame; at most one End per Head.
        for _ in 0..=2 * chunk.len() + 2 {
            match d.decode(&mut input) {
                Ok(None) => break,
                Ok(Some(DecodeEvent::Head(h))) => {
                    assert!(open.is_none(), "a head inside a frame");
                    assert!(h.payload.len() <= lim.max_payload_bytes as usize);
                    assert!(h.attachment_len <= lim.max_attachment_bytes as usize);
                    open = Some((h.attachment_len, 0));
                    log.push(format!(
                        "head {} {} {}",
                        h.correlation_id.0,
                        h.payload.len(),
                        h.attachment_len
                    ));
                }
                Ok(Some(DecodeEvent::Attachment(a))) => {
                    let (want, got) = open.as_mut().expect("attachment inside a frame");
                    *got += a.len();
                    assert!(*got <= *want, "attachment {got} over announced {want}");
                }
                Ok(Some(DecodeEvent::End)) => {
                    let (want, got) = open.take().expect("end of a frame that began");
                    assert_eq!(want, got, "frame ended before its attachment");
                    log.push("end".to_string());
                }
                Err(_) => {
                    let mut empty: &[u8] = &[];
                    assert!(d.decode(&mut empty).is_err(), "a failed decoder recovered");
                    return (log, true);
                }
            }
        }
    }
    (log, false)
}

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let piece = [0usize, 1, 3, 12, 64, 1000][usize::from(sel) % 6];
    let (a, fa) = events(rest, piece);
    let (b, fb) = events(rest, 0);
    assert_eq!((a, fa), (b, fb), "piece size {piece} changed the outcome");
}
