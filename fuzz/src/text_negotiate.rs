//! Target `text_negotiate`: key=value text (`text::TextPairs`, `TextBuffer`) and operational
//! key negotiation (`negotiate::Negotiator`) across several rounds, on a target whose
//! parameters the input also sets (as `tgtadm --op update` would).
//!
//! Checks: no panic; parsed text re-encodes to text that parses to the same pairs; every
//! answer is valid text; the negotiated values are inside RFC 7143 §13's ranges and the
//! answered FirstBurstLength is never above the answered MaxBurstLength (§13.14).

use crate::checks::{enabled, Check};
use crate::input::Reader;
use curve_tgt::config::target_params::TargetParams;
use curve_tgt::iscsi::negotiate::Negotiator;
use curve_tgt::iscsi::text::{TextBuffer, TextPairs};

/// Keys the negotiation knows, plus some it must refuse or not understand.
pub const KEYS: &[&str] = &[
    "MaxRecvDataSegmentLength",
    "HeaderDigest",
    "DataDigest",
    "InitialR2T",
    "MaxOutstandingR2T",
    "ImmediateData",
    "FirstBurstLength",
    "MaxBurstLength",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
    "IFMarker",
    "OFMarker",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "OFMarkInt",
    "IFMarkInt",
    "MaxConnections",
    "RDMAExtensions",
    "TargetRecvDataSegmentLength",
    "InitiatorRecvDataSegmentLength",
    "MaxOutstandingUnexpectedPDUs",
    "MaxXmitDataSegmentLength",
    "MaxQueueCmd",
    "InitiatorName",
    "TargetName",
    "SessionType",
    "AuthMethod",
    "CHAP_A",
    "CHAP_N",
    "CHAP_R",
    "CHAP_I",
    "CHAP_C",
    "TargetAlias",
    "InitiatorAlias",
    "TargetAddress",
    "TargetPortalGroupTag",
    "SendTargets",
    "TaskReporting",
    "X-com.example.private",
    "X#Draft",
];

/// Values worth trying for any key.
pub const VALUES: &[&str] = &[
    "Yes",
    "No",
    "None",
    "CRC32C",
    "CRC32C,None",
    "None,CRC32C",
    "0",
    "1",
    "2",
    "511",
    "512",
    "8192",
    "65536",
    "262144",
    "16777215",
    "16777216",
    "4294967295",
    "4294967296",
    "-1",
    "0x10",
    "0b101",
    "Reject",
    "Irrelevant",
    "NotUnderstood",
    "Normal",
    "Discovery",
    "CHAP",
    "CHAP,None",
    "5",
    "All",
    "",
    "Yes,No",
    "99999999999999999999",
];

/// One key=value pair picked by the input: a known key or raw text, a listed value or raw.
pub fn pair(r: &mut Reader<'_>) -> (String, String) {
    let k = r.u8();
    let key = if k & 0x80 == 0 {
        KEYS[usize::from(k) % KEYS.len()].to_string()
    } else {
        String::from_utf8_lossy(r.bytes(70)).into_owned()
    };
    let v = r.u8();
    let value = if v & 0x80 == 0 {
        VALUES[usize::from(v) % VALUES.len()].to_string()
    } else {
        String::from_utf8_lossy(r.bytes(300)).into_owned()
    };
    (key, value)
}

/// Raw text bytes `k=v\0…` for pairs (no checking, so bad pairs reach the parser too).
pub fn raw_text(pairs: &[(String, String)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in pairs {
        v.extend_from_slice(k.as_bytes());
        v.push(b'=');
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// Checks a text set survives encode → parse unchanged.
pub fn check_roundtrip(p: &TextPairs) {
    let again = TextPairs::parse(&p.encode()).expect("our own encoding parses");
    assert_eq!(&again, p);
}

fn check_answers(ans: &TextPairs) {
    check_roundtrip(ans);
    if enabled(Check::Burst) {
        let num = |k: &str| ans.get(k).and_then(|v| v.parse::<u64>().ok());
        if let (Some(f), Some(m)) = (num("FirstBurstLength"), num("MaxBurstLength")) {
            assert!(f <= m, "answered FirstBurstLength {f} > MaxBurstLength {m}");
        }
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let head = r.u8();
    let discovery = head & 1 != 0;
    let mut params = TargetParams::default();
    for _ in 0..(head >> 1) % 8 {
        let (k, v) = pair(&mut r);
        let _ = params.set(&k, &v);
    }
    let mut neg = Negotiator::new(&params, discovery);
    let mut buf = TextBuffer::new();
    // Bounded: at most 32 rounds.
    for _ in 0..32 {
        if r.is_empty() {
            break;
        }
        let mode = r.u8();
        let text = if mode & 1 == 0 {
            r.bytes(9000).to_vec()
        } else {
            let n = usize::from(mode >> 1) % 24;
            let pairs: Vec<_> = (0..n).map(|_| pair(&mut r)).collect();
            raw_text(&pairs)
        };
        let parsed = if mode & 2 != 0 {
            // A continued PDU first (C bit), then the rest.
            let cut = text.len() / 2;
            match buf.push(&text[..cut]) {
                Ok(()) => buf.finish(&text[cut..]),
                Err(e) => Err(e),
            }
        } else {
            TextPairs::parse(&text)
        };
        let Ok(keys) = parsed else { continue };
        check_roundtrip(&keys);
        if let Ok(ans) = neg.negotiate(&keys) {
            check_answers(&ans);
        }
        if mode & 4 != 0 {
            check_answers(&neg.declarations());
        }
    }
    let _ = neg.awaiting_answers();
    let p = neg.session_params();
    let dsl = 512..=16_777_215;
    assert!(dsl.contains(&p.max_recv_data_segment_length), "{p:?}");
    assert!(dsl.contains(&p.max_xmit_data_segment_length), "{p:?}");
    assert!(dsl.contains(&p.max_burst_length), "{p:?}");
    assert!(dsl.contains(&p.first_burst_length), "{p:?}");
    assert!(p.first_burst_length <= p.max_burst_length, "{p:?}");
    assert!((1..=65535).contains(&p.max_outstanding_r2t), "{p:?}");
    assert!(p.max_connections >= 1 && p.max_queue_cmd >= 1, "{p:?}");
    assert!(p.error_recovery_level <= 2, "{p:?}");
}
