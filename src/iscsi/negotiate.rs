//! Operational key negotiation (RFC 7143 §6.2, §13) for one login, following tgt's rules
//! (`usr/iscsi/param.c`, `iscsid.c::text_scan_login`): min/max/OR/AND per key, the
//! initiator's MaxRecvDataSegmentLength kept as our transmit limit, markers answered Reject,
//! unknown keys NotUnderstood, and target values that differ from the RFC defaults offered by
//! the target before it lets the login leave the operational stage.
//!
//! The result is a [`SessionParams`]: the values the full-feature phase runs with.

use super::text::TextPairs;
use crate::config::target_params::TargetParams;

/// The negotiated values a session runs with. Exists so the full-feature phase never looks at
/// text keys: every limit it enforces comes from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Largest data segment we accept: the value we declared (our MaxRecvDataSegmentLength).
    pub max_recv_data_segment_length: u32,
    /// Largest data segment we may send: the initiator's declared MaxRecvDataSegmentLength,
    /// 8192 when it never declared one (RFC 7143 §13.12 default).
    pub max_xmit_data_segment_length: u32,
    /// CRC32C header digests (RFC 7143 §13.1).
    pub header_digest: bool,
    /// CRC32C data digests.
    pub data_digest: bool,
    /// InitialR2T (§13.10): unsolicited non-immediate Data-Out forbidden when true.
    pub initial_r2t: bool,
    /// ImmediateData (§13.11).
    pub immediate_data: bool,
    /// FirstBurstLength (§13.14), never above `max_burst_length`.
    pub first_burst_length: u32,
    /// MaxBurstLength (§13.13).
    pub max_burst_length: u32,
    /// MaxOutstandingR2T (§13.17).
    pub max_outstanding_r2t: u32,
    /// MaxConnections (§13.2).
    pub max_connections: u32,
    /// ErrorRecoveryLevel (§13.20).
    pub error_recovery_level: u32,
    /// DefaultTime2Wait (§13.15), seconds.
    pub default_time2wait: u32,
    /// DefaultTime2Retain (§13.16), seconds.
    pub default_time2retain: u32,
    /// DataPDUInOrder (§13.18).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (§13.19).
    pub data_sequence_in_order: bool,
    /// The session's command window (local key MaxQueueCmd, never sent).
    pub max_queue_cmd: u32,
}

impl Default for SessionParams {
    /// RFC 7143 defaults, with tgt's window.
    fn default() -> Self {
        SessionParams {
            max_recv_data_segment_length: 8192,
            max_xmit_data_segment_length: 8192,
            header_digest: false,
            data_digest: false,
            initial_r2t: true,
            immediate_data: true,
            first_burst_length: 65536,
            max_burst_length: 262_144,
            max_outstanding_r2t: 1,
            max_connections: 1,
            error_recovery_level: 0,
            default_time2wait: 2,
            default_time2retain: 20,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            max_queue_cmd: crate::config::target_params::DEFAULT_MAX_QUEUE_CMD,
        }
    }
}

/// Why a negotiation cannot go on; the login answers 02/00 (initiator error) to each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The initiator offered or declared a key twice in one login (RFC 7143 §6.2: "an attempt
    /// to renegotiate/redeclare parameters ... MUST be detected ... Login reject").
    #[error("key {0} negotiated twice")]
    Duplicate(String),
    /// The initiator's answer to a key the target offered is not a value the key's rule
    /// allows (RFC 7143 §6.2.1, e.g. a min key answered with more than the offer).
    #[error("answer {value:?} to offered key {key} breaks its rule")]
    BadAnswer { key: String, value: String },
}

/// How a key's result is computed (RFC 7143 §6.2.2, §13).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// Declarative (MaxRecvDataSegmentLength): each side states its own value.
    Declarative,
    /// Numeric, result is the smaller.
    Min,
    /// Numeric, result is the larger.
    Max,
    /// Boolean, result is the OR.
    Or,
    /// Boolean, result is the AND.
    And,
    /// List of None/CRC32C.
    Digest,
    /// Marker intervals: tgt answers Reject.
    Reject,
    /// iSER-only keys (RFC 7145): irrelevant on TCP.
    Irrelevant,
}

#[derive(Copy, Clone, Debug)]
struct Spec {
    name: &'static str,
    rule: Rule,
    min: u32,
    max: u32,
    /// RFC 7143 §13: "Irrelevant when: SessionType=Discovery".
    discovery_irrelevant: bool,
    /// RFC default, the value used when nobody mentions the key.
    default: u32,
}

const fn spec(
    name: &'static str,
    rule: Rule,
    default: u32,
    min: u32,
    max: u32,
    disc: bool,
) -> Spec {
    Spec {
        name,
        rule,
        min,
        max,
        discovery_irrelevant: disc,
        default,
    }
}

const MAX_24: u32 = 16_777_215;

/// The keys the target negotiates on the wire.
const SPECS: &[Spec] = &[
    spec(
        "MaxRecvDataSegmentLength",
        Rule::Declarative,
        8192,
        512,
        MAX_24,
        false,
    ),
    spec("HeaderDigest", Rule::Digest, 0, 0, 1, false),
    spec("DataDigest", Rule::Digest, 0, 0, 1, false),
    spec("InitialR2T", Rule::Or, 1, 0, 1, true),
    spec("ImmediateData", Rule::And, 1, 0, 1, true),
    spec("MaxOutstandingR2T", Rule::Min, 1, 1, 65535, true),
    spec("FirstBurstLength", Rule::Min, 65536, 512, MAX_24, true),
    spec("MaxBurstLength", Rule::Min, 262_144, 512, MAX_24, true),
    spec("DataPDUInOrder", Rule::Or, 1, 0, 1, true),
    spec("DataSequenceInOrder", Rule::Or, 1, 0, 1, true),
    spec("ErrorRecoveryLevel", Rule::Min, 0, 0, 2, false),
    spec("IFMarker", Rule::And, 0, 0, 1, false),
    spec("OFMarker", Rule::And, 0, 0, 1, false),
    spec("DefaultTime2Wait", Rule::Max, 2, 0, 3600, false),
    spec("DefaultTime2Retain", Rule::Min, 20, 0, 3600, false),
    spec("OFMarkInt", Rule::Reject, 2048, 0, 0, false),
    spec("IFMarkInt", Rule::Reject, 2048, 0, 0, false),
    spec("MaxConnections", Rule::Min, 1, 1, 65535, true),
    // On TCP the target's value is No whatever tgt's table shows (iscsid.c text_scan_login).
    spec("RDMAExtensions", Rule::And, 0, 0, 1, false),
    spec(
        "TargetRecvDataSegmentLength",
        Rule::Irrelevant,
        8192,
        0,
        0,
        false,
    ),
    spec(
        "InitiatorRecvDataSegmentLength",
        Rule::Irrelevant,
        8192,
        0,
        0,
        false,
    ),
    spec(
        "MaxOutstandingUnexpectedPDUs",
        Rule::Irrelevant,
        0,
        0,
        0,
        false,
    ),
];

/// Keys the login state machine handles itself (RFC 7143 §13.4–§13.9); never answered here.
pub const LOGIN_KEYS: &[&str] = &[
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "SessionType",
];

/// Whether `key` belongs to the security stage (AuthMethod and the CHAP keys, RFC 7143 §12).
pub fn is_security_key(key: &str) -> bool {
    key == "AuthMethod" || key.starts_with("CHAP_")
}

fn spec_index(name: &str) -> Option<usize> {
    SPECS.iter().position(|s| s.name == name)
}

/// Where one key stands in this login.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum KeyState {
    /// Neither side mentioned it; its value is the RFC default.
    Untouched,
    /// The target offered its value and waits for the initiator's answer.
    Offered,
    /// Settled (answered either way).
    Done,
}

/// A value as parsed from text for a key's rule.
fn parse_number(v: &str) -> Option<u32> {
    // RFC 7143 §6.1: numerical values may be decimal or hex (0x...).
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 8 {
            return None;
        }
        return u32::from_str_radix(h, 16).ok();
    }
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_bool(v: &str) -> Option<u32> {
    match v {
        "Yes" => Some(1),
        "No" => Some(0),
        _ => None,
    }
}

fn bool_str(v: u32) -> &'static str {
    if v != 0 {
        "Yes"
    } else {
        "No"
    }
}

fn digest_str(v: u32) -> &'static str {
    if v != 0 {
        "CRC32C"
    } else {
        "None"
    }
}

/// Negotiates one login's operational keys against a target's parameters. Exists so the
/// per-key state (offered, answered, duplicate) lives in one place across the login's PDUs.
#[derive(Clone, Debug)]
pub struct Negotiator {
    discovery: bool,
    /// The target's values, indexed like `SPECS`.
    ours: Vec<u32>,
    /// The current result, indexed like `SPECS`.
    values: Vec<u32>,
    state: Vec<KeyState>,
    our_recv_dsl: u32,
    max_queue_cmd: u32,
    /// The initiator's MaxRecvDataSegmentLength, once declared.
    their_recv_dsl: Option<u32>,
    /// Whether we declared our MaxRecvDataSegmentLength already.
    declared_recv_dsl: bool,
}

impl Negotiator {
    /// Starts a negotiation for a normal session on a target with `params`, or a discovery
    /// session (which negotiates against tgt's defaults).
    pub fn new(params: &TargetParams, discovery: bool) -> Negotiator {
        let ours: Vec<u32> = SPECS
            .iter()
            .map(|s| match s.rule {
                Rule::Declarative | Rule::Irrelevant | Rule::Reject => s.default,
                _ if s.name == "RDMAExtensions" => 0,
                _ => params.get(s.name).unwrap_or(s.default),
            })
            .collect();
        Negotiator {
            discovery,
            ours,
            values: SPECS.iter().map(|s| s.default).collect(),
            state: vec![KeyState::Untouched; SPECS.len()],
            our_recv_dsl: params.get("MaxRecvDataSegmentLength").unwrap_or(8192),
            max_queue_cmd: params.max_queue_cmd(),
            their_recv_dsl: None,
            declared_recv_dsl: false,
        }
    }

    /// Negotiates the operational keys of one complete set of initiator text, returning the
    /// answers in the order offered. Login and security keys are skipped (the login state
    /// machine handles them); unknown keys are answered NotUnderstood (RFC 7143 §6.2).
    pub fn negotiate(&mut self, keys: &TextPairs) -> Result<TextPairs, NegotiationError> {
        let mut out = TextPairs::new();
        for (k, v) in keys.iter() {
            if LOGIN_KEYS.contains(&k) || is_security_key(k) {
                continue;
            }
            let Some(i) = spec_index(k) else {
                out.push(k, "NotUnderstood");
                continue;
            };
            self.negotiate_one(i, v, &mut out)?;
        }
        self.cap_first_burst(&mut out);
        Ok(out)
    }

    /// RFC 7143 §13.14: FirstBurstLength MUST NOT exceed MaxBurstLength. The initiator may
    /// offer the two in either order, or leave MaxBurstLength to our own offer, so an answer
    /// of FirstBurstLength in `out` is capped, after the whole text, by the largest
    /// MaxBurstLength this login can still end with.
    fn cap_first_burst(&mut self, out: &mut TextPairs) {
        let (fb, mb) = (
            spec_index("FirstBurstLength").expect("known key"),
            spec_index("MaxBurstLength").expect("known key"),
        );
        let cap = match self.state[mb] {
            KeyState::Done => self.values[mb],
            KeyState::Offered | KeyState::Untouched => self.ours[mb],
        };
        let answered = out.get(SPECS[fb].name).and_then(parse_number);
        if answered.is_some_and(|v| v > cap) {
            self.values[fb] = cap;
            out.set(SPECS[fb].name, &cap.to_string());
        }
    }

    fn negotiate_one(
        &mut self,
        i: usize,
        v: &str,
        out: &mut TextPairs,
    ) -> Result<(), NegotiationError> {
        let s = SPECS[i];
        let dup = || NegotiationError::Duplicate(s.name.to_string());
        if s.rule == Rule::Declarative {
            if self.their_recv_dsl.is_some() {
                return Err(dup());
            }
            match parse_number(v).filter(|n| (s.min..=s.max).contains(n)) {
                Some(n) => self.their_recv_dsl = Some(n),
                None => {
                    // Keep the default; answering Reject does not consume our declaration.
                    self.their_recv_dsl = Some(8192);
                    out.push(s.name, "Reject");
                    return Ok(());
                }
            }
            if !self.declared_recv_dsl {
                self.declared_recv_dsl = true;
                out.push(s.name, &self.our_recv_dsl.to_string());
            }
            return Ok(());
        }
        match self.state[i] {
            KeyState::Done => return Err(dup()),
            KeyState::Offered => return self.take_answer(i, v),
            KeyState::Untouched => {}
        }
        self.state[i] = KeyState::Done;
        if self.discovery && s.discovery_irrelevant {
            out.push(s.name, "Irrelevant");
            return Ok(());
        }
        match self.combine(i, v) {
            Some(result) => {
                self.values[i] = result;
                out.push(s.name, &self.value_str(i, result));
            }
            None => out.push(
                s.name,
                if s.rule == Rule::Irrelevant {
                    "Irrelevant"
                } else {
                    "Reject"
                },
            ),
        }
        Ok(())
    }

    /// The result of our value against the initiator's offer, or `None` when the offer is
    /// unparsable, out of range or (for digests) lists nothing we support.
    fn combine(&self, i: usize, v: &str) -> Option<u32> {
        let s = SPECS[i];
        let ours = self.ours[i];
        match s.rule {
            Rule::Min | Rule::Max => {
                let n = parse_number(v).filter(|n| (s.min..=s.max).contains(n))?;
                Some(if s.rule == Rule::Min {
                    ours.min(n)
                } else {
                    ours.max(n)
                })
            }
            Rule::Or => parse_bool(v).map(|b| b | ours),
            Rule::And => parse_bool(v).map(|b| b & ours),
            Rule::Digest => {
                // The target's preference first: CRC32C only when both sides list it when we
                // prefer it; a target preferring None still accepts a CRC32C-only initiator.
                let listed = |want: &str| v.split(',').any(|x| x == want);
                let (first, second) = if ours == 1 { (1, 0) } else { (0, 1) };
                [first, second].into_iter().find(|&c| listed(digest_str(c)))
            }
            Rule::Reject | Rule::Irrelevant | Rule::Declarative => None,
        }
    }

    /// The initiator's answer to a key we offered.
    fn take_answer(&mut self, i: usize, v: &str) -> Result<(), NegotiationError> {
        self.state[i] = KeyState::Done;
        if matches!(v, "Reject" | "Irrelevant" | "NotUnderstood") {
            return Ok(()); // the RFC default stays
        }
        let s = SPECS[i];
        let bad = || NegotiationError::BadAnswer {
            key: s.name.to_string(),
            value: v.to_string(),
        };
        let theirs = match s.rule {
            Rule::Min | Rule::Max => parse_number(v).filter(|n| (s.min..=s.max).contains(n)),
            Rule::Or | Rule::And => parse_bool(v),
            Rule::Digest => match v {
                "None" => Some(0),
                "CRC32C" => Some(1),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(bad)?;
        // A valid answer is one the rule could have produced from our offer.
        let ours = self.ours[i];
        let ok = match s.rule {
            Rule::Min => theirs <= ours,
            Rule::Max => theirs >= ours,
            Rule::Or => theirs | ours == theirs,
            Rule::And => theirs & ours == theirs,
            Rule::Digest => theirs == ours || theirs == 0,
            _ => false,
        };
        if !ok {
            return Err(bad());
        }
        self.values[i] = theirs;
        Ok(())
    }

    fn value_str(&self, i: usize, v: u32) -> String {
        match SPECS[i].rule {
            Rule::Or | Rule::And => bool_str(v).to_string(),
            Rule::Digest => digest_str(v).to_string(),
            _ => v.to_string(),
        }
    }

    /// The keys the target must state before the login may leave the operational stage
    /// (tgt's `text_check_param`): our MaxRecvDataSegmentLength, and, for normal sessions,
    /// every key nobody mentioned whose target value differs from the RFC default, offered
    /// for the initiator to answer.
    pub fn declarations(&mut self) -> TextPairs {
        let mut out = TextPairs::new();
        if !self.declared_recv_dsl {
            self.declared_recv_dsl = true;
            out.push("MaxRecvDataSegmentLength", &self.our_recv_dsl.to_string());
        }
        if self.discovery {
            return out;
        }
        for (i, s) in SPECS.iter().enumerate() {
            let negotiable = matches!(
                s.rule,
                Rule::Min | Rule::Max | Rule::Or | Rule::And | Rule::Digest
            );
            if !negotiable || s.name == "RDMAExtensions" || self.state[i] != KeyState::Untouched {
                continue;
            }
            if self.ours[i] != s.default {
                self.state[i] = KeyState::Offered;
                let v = match s.rule {
                    Rule::Digest if self.ours[i] == 1 => "CRC32C,None".to_string(),
                    _ => self.value_str(i, self.ours[i]),
                };
                out.push(s.name, &v);
            }
        }
        // An offer of ours obeys §13.14 too: a configured FirstBurstLength above the
        // MaxBurstLength this login can end with is offered at that MaxBurstLength.
        self.cap_first_burst(&mut out);
        out
    }

    /// Whether an offer of ours still waits for the initiator's answer; the login must not
    /// transit while one does (RFC 7143 §6.2: a negotiation completes with the answer).
    pub fn awaiting_answers(&self) -> bool {
        self.state.contains(&KeyState::Offered)
    }

    fn value(&self, name: &str) -> u32 {
        self.values[spec_index(name).expect("known key")]
    }

    /// The negotiated values.
    pub fn session_params(&self) -> SessionParams {
        let max_burst_length = self.value("MaxBurstLength");
        SessionParams {
            max_recv_data_segment_length: self.our_recv_dsl,
            max_xmit_data_segment_length: self.their_recv_dsl.unwrap_or(8192),
            header_digest: self.value("HeaderDigest") == 1,
            data_digest: self.value("DataDigest") == 1,
            initial_r2t: self.value("InitialR2T") == 1,
            immediate_data: self.value("ImmediateData") == 1,
            // RFC 7143 §13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
            first_burst_length: self.value("FirstBurstLength").min(max_burst_length),
            max_burst_length,
            max_outstanding_r2t: self.value("MaxOutstandingR2T"),
            max_connections: self.value("MaxConnections"),
            error_recovery_level: self.value("ErrorRecoveryLevel"),
            default_time2wait: self.value("DefaultTime2Wait"),
            default_time2retain: self.value("DefaultTime2Retain"),
            data_pdu_in_order: self.value("DataPDUInOrder") == 1,
            data_sequence_in_order: self.value("DataSequenceInOrder") == 1,
            max_queue_cmd: self.max_queue_cmd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&str, &str)]) -> TextPairs {
        let mut p = TextPairs::new();
        for (k, v) in kv {
            p.push(k, v);
        }
        p
    }

    fn answers(n: &mut Negotiator, kv: &[(&str, &str)]) -> Vec<(String, String)> {
        n.negotiate(&pairs(kv))
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn one(n: &mut Negotiator, k: &str, v: &str) -> String {
        let a = answers(n, &[(k, v)]);
        assert_eq!(a.len(), 1, "{a:?}");
        a[0].1.clone()
    }

    #[test]
    fn numeric_min_and_max_rules() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        assert_eq!(one(&mut n, "MaxBurstLength", "1048576"), "262144");
        assert_eq!(one(&mut n, "FirstBurstLength", "4096"), "4096");
        assert_eq!(one(&mut n, "MaxOutstandingR2T", "8"), "1");
        assert_eq!(one(&mut n, "ErrorRecoveryLevel", "2"), "0");
        assert_eq!(one(&mut n, "DefaultTime2Wait", "0"), "2");
        assert_eq!(one(&mut n, "DefaultTime2Retain", "0"), "0");
        assert_eq!(one(&mut n, "MaxConnections", "0x10"), "1");
        let p = n.session_params();
        assert_eq!(p.max_burst_length, 262_144);
        assert_eq!(p.first_burst_length, 4096);
        assert_eq!(p.default_time2wait, 2);
        assert_eq!(p.default_time2retain, 0);
    }

    #[test]
    fn boolean_or_and_rules() {
        let mut t = TargetParams::default();
        t.set("InitialR2T", "No").unwrap();
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "InitialR2T", "No"), "No");
        assert_eq!(one(&mut n, "ImmediateData", "No"), "No");
        assert_eq!(one(&mut n, "DataPDUInOrder", "No"), "Yes");
        assert_eq!(one(&mut n, "DataSequenceInOrder", "Yes"), "Yes");
        assert_eq!(one(&mut n, "IFMarker", "Yes"), "No");
        assert_eq!(one(&mut n, "OFMarker", "No"), "No");
        assert_eq!(one(&mut n, "RDMAExtensions", "Yes"), "No");
        let p = n.session_params();
        assert!(!p.initial_r2t && !p.immediate_data && p.data_pdu_in_order);
    }

    #[test]
    fn digests_follow_target_preference() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        assert_eq!(one(&mut n, "HeaderDigest", "CRC32C,None"), "None");
        assert_eq!(one(&mut n, "DataDigest", "CRC32C"), "CRC32C");
        let mut t = TargetParams::default();
        t.set("HeaderDigest", "CRC32C").unwrap();
        t.set("DataDigest", "CRC32C").unwrap();
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "HeaderDigest", "None,CRC32C"), "CRC32C");
        assert_eq!(one(&mut n, "DataDigest", "None"), "None");
        let p = n.session_params();
        assert!(p.header_digest && !p.data_digest);
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "HeaderDigest", "MD5"), "Reject");
    }

    #[test]
    fn out_of_range_and_unparsable_are_rejected() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        assert_eq!(one(&mut n, "MaxBurstLength", "100"), "Reject");
        assert_eq!(one(&mut n, "FirstBurstLength", "lots"), "Reject");
        assert_eq!(one(&mut n, "ErrorRecoveryLevel", "3"), "Reject");
        assert_eq!(one(&mut n, "InitialR2T", "yes"), "Reject");
        assert_eq!(one(&mut n, "MaxConnections", "99999999999"), "Reject");
        assert_eq!(n.session_params().max_burst_length, 262_144);
    }

    #[test]
    fn markers_unknown_and_iser_keys() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        assert_eq!(one(&mut n, "OFMarkInt", "2048~8192"), "Reject");
        assert_eq!(one(&mut n, "IFMarkInt", "2048"), "Reject");
        assert_eq!(one(&mut n, "X-com.example.Foo", "1"), "NotUnderstood");
        assert_eq!(one(&mut n, "MaxQueueCmd", "1"), "NotUnderstood");
        assert_eq!(
            one(&mut n, "TargetRecvDataSegmentLength", "8192"),
            "Irrelevant"
        );
        // Login and security keys are not this module's to answer.
        assert!(answers(
            &mut n,
            &[("InitiatorName", "iqn.x"), ("AuthMethod", "None")]
        )
        .is_empty());
    }

    #[test]
    fn max_recv_data_segment_length_is_declarative() {
        let mut t = TargetParams::default();
        t.set("MaxRecvDataSegmentLength", "262144").unwrap();
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "MaxRecvDataSegmentLength", "65536"), "262144");
        let p = n.session_params();
        assert_eq!(p.max_xmit_data_segment_length, 65536);
        assert_eq!(p.max_recv_data_segment_length, 262_144);
        assert!(n.declarations().is_empty());
        // Never declared by the initiator: 8192 (RFC default).
        let mut n = Negotiator::new(&t, false);
        let d = n.declarations();
        assert_eq!(d.get("MaxRecvDataSegmentLength"), Some("262144"));
        assert_eq!(n.session_params().max_xmit_data_segment_length, 8192);
        // A value beyond 2^24-1 is rejected and leaves the default.
        let mut n = Negotiator::new(&t, false);
        assert_eq!(
            one(&mut n, "MaxRecvDataSegmentLength", "16777216"),
            "Reject"
        );
        assert_eq!(n.session_params().max_xmit_data_segment_length, 8192);
    }

    #[test]
    fn duplicates_are_errors() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        let err = n
            .negotiate(&pairs(&[
                ("MaxBurstLength", "512"),
                ("MaxBurstLength", "1024"),
            ]))
            .unwrap_err();
        assert_eq!(err, NegotiationError::Duplicate("MaxBurstLength".into()));
        let mut n = Negotiator::new(&TargetParams::default(), false);
        one(&mut n, "MaxRecvDataSegmentLength", "8192");
        assert!(n
            .negotiate(&pairs(&[("MaxRecvDataSegmentLength", "4096")]))
            .is_err());
    }

    #[test]
    fn target_declares_non_default_values_and_checks_answers() {
        let mut t = TargetParams::default();
        t.set("MaxBurstLength", "1048576").unwrap();
        t.set("InitialR2T", "No").unwrap();
        t.set("DataDigest", "CRC32C").unwrap();
        let mut n = Negotiator::new(&t, false);
        one(&mut n, "MaxRecvDataSegmentLength", "65536");
        let d = n.declarations();
        assert_eq!(d.get("MaxBurstLength"), Some("1048576"));
        assert_eq!(d.get("InitialR2T"), Some("No"));
        assert_eq!(d.get("DataDigest"), Some("CRC32C,None"));
        assert_eq!(d.get("MaxRecvDataSegmentLength"), None);
        assert!(n.awaiting_answers());
        // Answers produce no text.
        assert!(answers(
            &mut n,
            &[
                ("MaxBurstLength", "524288"),
                ("InitialR2T", "No"),
                ("DataDigest", "None")
            ]
        )
        .is_empty());
        assert!(!n.awaiting_answers());
        let p = n.session_params();
        assert_eq!(p.max_burst_length, 524_288);
        assert!(!p.initial_r2t && !p.data_digest);
        // An answer the rule cannot produce fails the login.
        let mut n = Negotiator::new(&t, false);
        n.declarations();
        assert!(matches!(
            n.negotiate(&pairs(&[("MaxBurstLength", "2097152")])),
            Err(NegotiationError::BadAnswer { .. })
        ));
        // A Reject answer keeps the RFC default.
        let mut n = Negotiator::new(&t, false);
        n.declarations();
        answers(&mut n, &[("MaxBurstLength", "Reject")]);
        assert_eq!(n.session_params().max_burst_length, 262_144);
    }

    #[test]
    fn discovery_sessions_answer_irrelevant() {
        let mut n = Negotiator::new(&TargetParams::default(), true);
        assert_eq!(one(&mut n, "InitialR2T", "No"), "Irrelevant");
        assert_eq!(one(&mut n, "MaxBurstLength", "512"), "Irrelevant");
        assert_eq!(one(&mut n, "HeaderDigest", "None"), "None");
        let d = n.declarations();
        assert_eq!(d.len(), 1);
        assert!(!n.awaiting_answers());
    }

    /// Issue 11 item 8: the answer on the wire, not only the value used, respects
    /// MaxBurstLength, whichever of the two keys comes first and whoever set MaxBurstLength.
    #[test]
    fn first_burst_answer_never_exceeds_max_burst() {
        for order in [
            [("MaxBurstLength", "4096"), ("FirstBurstLength", "65536")],
            [("FirstBurstLength", "65536"), ("MaxBurstLength", "4096")],
        ] {
            let mut n = Negotiator::new(&TargetParams::default(), false);
            let a = answers(&mut n, &order);
            let get = |k: &str| a.iter().find(|(x, _)| x == k).unwrap().1.clone();
            assert_eq!(get("FirstBurstLength"), "4096", "{order:?}");
            assert_eq!(get("MaxBurstLength"), "4096", "{order:?}");
        }
        // The target's own MaxBurstLength of 16384, offered after the initiator's keys.
        let mut t = TargetParams::default();
        t.set("MaxBurstLength", "16384").unwrap();
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "FirstBurstLength", "65536"), "16384");
        assert_eq!(n.declarations().get("MaxBurstLength"), Some("16384"));
    }

    #[test]
    fn first_burst_offer_never_exceeds_max_burst() {
        // Found by the text_negotiate fuzz target: an admin-set FirstBurstLength above the
        // MaxBurstLength the initiator had already negotiated down was offered as set.
        let mut t = TargetParams::default();
        t.set("FirstBurstLength", "262144").unwrap();
        let mut n = Negotiator::new(&t, false);
        assert_eq!(one(&mut n, "MaxBurstLength", "8192"), "8192");
        assert_eq!(n.declarations().get("FirstBurstLength"), Some("8192"));
    }

    #[test]
    fn first_burst_never_exceeds_max_burst() {
        let mut n = Negotiator::new(&TargetParams::default(), false);
        answers(
            &mut n,
            &[("MaxBurstLength", "4096"), ("FirstBurstLength", "65536")],
        );
        let p = n.session_params();
        assert_eq!((p.first_burst_length, p.max_burst_length), (4096, 4096));
    }
}
