//! CHAP for the login security stage (RFC 7143 §12.1.3, RFC 1994): the target challenges the
//! initiator (CHAP_A → CHAP_I/CHAP_C → CHAP_N/CHAP_R) and, for mutual CHAP, answers the
//! initiator's own challenge with the target's outgoing account.
//!
//! Response = H(identifier ‖ secret ‖ challenge), H = MD5 (CHAP_A=5) or SHA-1 (CHAP_A=7).
//! Binary values are written `0x<hex>` or `0b<base64>` (RFC 7143 §6.1).

use super::text::TextPairs;
use crate::config::snapshot::ChapAccounts;
use md5::Digest as _;

/// Bytes in the challenge we send. tgt sends 50; RFC 7143 §12.1.3 wants at least as long
/// as the digest.
pub const CHALLENGE_LEN: usize = 32;
/// Longest challenge accepted from an initiator (libiscsi sends up to 1024 bytes; tgt's limit).
pub const MAX_PEER_CHALLENGE_LEN: usize = 1024;
/// Shortest challenge accepted from an initiator. RFC 1994 sets no minimum and initiators
/// differ (libiscsi sends 32 bytes, others 16), so only an empty one is refused.
pub const MIN_PEER_CHALLENGE_LEN: usize = 1;

/// A CHAP digest algorithm (RFC 7143 §12.1.3 CHAP_A values, IANA PPP numbers).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChapAlg {
    /// CHAP_A=5.
    Md5,
    /// CHAP_A=7.
    Sha1,
}

impl ChapAlg {
    /// The CHAP_A code.
    pub fn code(self) -> u8 {
        match self {
            ChapAlg::Md5 => 5,
            ChapAlg::Sha1 => 7,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChapAlg::Md5 => 16,
            ChapAlg::Sha1 => 20,
        }
    }

    /// The first algorithm we support in the initiator's list, honouring its preference.
    pub fn select(offer: &str) -> Option<ChapAlg> {
        offer.split(',').find_map(|a| match a.trim() {
            "5" => Some(ChapAlg::Md5),
            "7" => Some(ChapAlg::Sha1),
            _ => None,
        })
    }

    /// H(id ‖ secret ‖ challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            ChapAlg::Md5 => {
                let mut h = md5::Md5::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
            ChapAlg::Sha1 => {
                let mut h = sha1::Sha1::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
        }
    }
}

/// Why CHAP failed. Each variant names the rule the initiator broke (or, for
/// [`ChapError::NoOutgoingAccount`], the configuration that refuses what it asked).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    /// CHAP_A missing from the first CHAP step.
    #[error("CHAP_A missing")]
    MissingAlgorithm,
    /// No algorithm in CHAP_A that we support.
    #[error("no supported algorithm in CHAP_A={0}")]
    NoCommonAlgorithm(String),
    /// CHAP_N or CHAP_R missing from the response step.
    #[error("{0} missing")]
    MissingKey(&'static str),
    /// CHAP_N names no incoming account of this target.
    #[error("unknown CHAP user")]
    UnknownUser,
    /// A binary value is not `0x<hex>` / `0b<base64>`.
    #[error("{0} is not a valid binary value")]
    BadEncoding(&'static str),
    /// CHAP_R has the wrong length for the algorithm.
    #[error("CHAP_R has the wrong length")]
    BadResponseLength,
    /// CHAP_R does not match: wrong secret.
    #[error("CHAP_R does not match")]
    WrongResponse,
    /// Mutual CHAP asked for (CHAP_I/CHAP_C sent) but the target has no outgoing account.
    #[error("mutual CHAP requested but no outgoing account is bound")]
    NoOutgoingAccount,
    /// Only one of CHAP_I and CHAP_C was sent.
    #[error("CHAP_I and CHAP_C must come together")]
    HalfChallenge,
    /// CHAP_I is not a number 0..=255.
    #[error("CHAP_I is not an identifier")]
    BadIdentifier,
    /// The initiator's challenge is shorter than [`MIN_PEER_CHALLENGE_LEN`] or longer than
    /// [`MAX_PEER_CHALLENGE_LEN`].
    #[error("challenge of {0} bytes out of bounds")]
    ChallengeLength(usize),
    /// The initiator sent our own challenge back (RFC 7143 §12.1.3: a reflection attack).
    #[error("initiator reflected the target's challenge")]
    ReflectedChallenge,
    /// A CHAP key arrived when the exchange was not expecting it.
    #[error("unexpected CHAP step")]
    OutOfOrder,
    /// The system entropy source failed.
    #[error("no randomness available")]
    NoRandomness,
}

impl ChapError {
    /// The Login Response status class and detail (RFC 7143 §11.13.5): protocol errors are
    /// 02/00, failed authentication 02/01, our own failure 03/00.
    pub fn status(&self) -> (u8, u8) {
        match self {
            ChapError::UnknownUser
            | ChapError::WrongResponse
            | ChapError::NoOutgoingAccount
            | ChapError::ReflectedChallenge => (2, 1),
            ChapError::NoRandomness => (3, 0),
            _ => (2, 0),
        }
    }
}

/// Decodes `0x<hex>` or `0b<base64>` (RFC 7143 §6.1 binary-value).
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    let (prefix, body) = (v.get(..2)?, v.get(2..)?);
    match prefix {
        "0x" | "0X" => decode_hex(body),
        "0b" | "0B" => decode_base64(body),
        _ => None,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    // An odd digit count means a leading zero nibble was left out.
    let mut out = Vec::with_capacity(b.len().div_ceil(2));
    let mut digits = b.iter().map(|c| (*c as char).to_digit(16));
    if b.len() % 2 == 1 {
        out.push(digits.next()?? as u8);
    }
    while let Some(hi) = digits.next() {
        let lo = digits.next()?;
        out.push(((hi? << 4) | lo?) as u8);
    }
    Some(out)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.trim_end_matches('=').as_bytes();
    if b.is_empty() || b.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    for chunk in b.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// `0x` followed by lower-case hex.
pub fn encode_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// `0b` followed by padded base64.
pub fn encode_base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::from("0b");
    for chunk in b.chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let acc = (u32::from(n[0]) << 16) | (u32::from(n[1]) << 8) | u32::from(n[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Equality that takes the same time wherever the first difference is, so a wrong CHAP_R
/// leaks nothing about the right one through timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the CHAP exchange stands (RFC 7143 §12.1.3 steps).
#[derive(Clone, Debug, PartialEq, Eq)]
enum ChapState {
    /// Waiting for CHAP_A.
    AwaitAlgorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    AwaitResponse {
        alg: ChapAlg,
        id: u8,
        challenge: Vec<u8>,
    },
    /// Authenticated (and, if asked, the target authenticated itself).
    Done,
}

/// What one CHAP step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChapStep {
    /// Keys to send; the exchange continues.
    Continue(TextPairs),
    /// The initiator is authenticated; these keys (mutual CHAP_N/CHAP_R, or none) go in the
    /// response, and the security stage may end.
    Authenticated(TextPairs),
}

/// One connection's CHAP exchange, target side. Exists so the steps cannot be taken out of
/// order and the challenge we sent is kept for checking the response and spotting reflection.
#[derive(Clone, Debug)]
pub struct ChapServer {
    state: ChapState,
}

impl Default for ChapServer {
    fn default() -> Self {
        ChapServer::new()
    }
}

impl ChapServer {
    /// A new exchange, waiting for CHAP_A.
    pub fn new() -> ChapServer {
        ChapServer {
            state: ChapState::AwaitAlgorithm,
        }
    }

    /// Whether the initiator has been authenticated.
    pub fn is_done(&self) -> bool {
        self.state == ChapState::Done
    }

    /// Takes one complete set of initiator keys in the security stage.
    pub fn step(
        &mut self,
        keys: &TextPairs,
        accounts: &ChapAccounts,
    ) -> Result<ChapStep, ChapError> {
        match std::mem::replace(&mut self.state, ChapState::Done) {
            ChapState::AwaitAlgorithm => self.challenge(keys),
            ChapState::AwaitResponse { alg, id, challenge } => {
                let r = verify(keys, accounts, alg, id, &challenge);
                if r.is_err() {
                    // Failed exchanges stay failed: the login is over.
                    self.state = ChapState::AwaitResponse { alg, id, challenge };
                }
                r
            }
            ChapState::Done => Err(ChapError::OutOfOrder),
        }
    }

    fn challenge(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        let offer = keys.get("CHAP_A").ok_or(ChapError::MissingAlgorithm)?;
        let alg = ChapAlg::select(offer)
            .ok_or_else(|| ChapError::NoCommonAlgorithm(offer.to_string()))?;
        let mut random = [0u8; CHALLENGE_LEN + 1];
        getrandom::getrandom(&mut random).map_err(|_| ChapError::NoRandomness)?;
        let id = random[0];
        let challenge = random[1..].to_vec();
        let mut out = TextPairs::new();
        out.push("CHAP_A", &alg.code().to_string());
        out.push("CHAP_I", &id.to_string());
        out.push("CHAP_C", &encode_hex(&challenge));
        self.state = ChapState::AwaitResponse { alg, id, challenge };
        Ok(ChapStep::Continue(out))
    }
}

fn verify(
    keys: &TextPairs,
    accounts: &ChapAccounts,
    alg: ChapAlg,
    id: u8,
    challenge: &[u8],
) -> Result<ChapStep, ChapError> {
    let name = keys.get("CHAP_N").ok_or(ChapError::MissingKey("CHAP_N"))?;
    let r = keys.get("CHAP_R").ok_or(ChapError::MissingKey("CHAP_R"))?;
    let r = decode_binary(r).ok_or(ChapError::BadEncoding("CHAP_R"))?;
    if r.len() != alg.digest_len() {
        return Err(ChapError::BadResponseLength);
    }
    // Every account with that name is tried, in constant time each, so a duplicated user
    // name with two secrets behaves as tgt's list walk does.
    let ok =
        accounts
            .incoming
            .iter()
            .filter(|a| a.user == name)
            .fold(None, |acc: Option<bool>, a| {
                let m = ct_eq(&alg.response(id, a.secret.as_bytes(), challenge), &r);
                Some(acc.unwrap_or(false) | m)
            });
    match ok {
        None => return Err(ChapError::UnknownUser),
        Some(false) => return Err(ChapError::WrongResponse),
        Some(true) => {}
    }
    // Mutual CHAP (RFC 7143 §12.1.3): the initiator challenges the target.
    let mut out = TextPairs::new();
    match (keys.get("CHAP_I"), keys.get("CHAP_C")) {
        (None, None) => {}
        (Some(i), Some(c)) => {
            let their_id: u8 = i.parse().map_err(|_| ChapError::BadIdentifier)?;
            let their_challenge = decode_binary(c).ok_or(ChapError::BadEncoding("CHAP_C"))?;
            if !(MIN_PEER_CHALLENGE_LEN..=MAX_PEER_CHALLENGE_LEN).contains(&their_challenge.len()) {
                return Err(ChapError::ChallengeLength(their_challenge.len()));
            }
            if their_challenge == challenge {
                return Err(ChapError::ReflectedChallenge);
            }
            let account = accounts
                .outgoing
                .as_ref()
                .ok_or(ChapError::NoOutgoingAccount)?;
            let resp = alg.response(their_id, account.secret.as_bytes(), &their_challenge);
            out.push("CHAP_N", &account.user);
            out.push("CHAP_R", &encode_hex(&resp));
        }
        _ => return Err(ChapError::HalfChallenge),
    }
    Ok(ChapStep::Authenticated(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::Account;

    fn accounts(outgoing: bool) -> ChapAccounts {
        ChapAccounts {
            incoming: vec![Account {
                user: "alice".into(),
                secret: "alicesecret1".into(),
            }],
            outgoing: outgoing.then(|| Account {
                user: "target".into(),
                secret: "targetsecret".into(),
            }),
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> TextPairs {
        let mut p = TextPairs::new();
        for (k, v) in pairs {
            p.push(k, v);
        }
        p
    }

    fn start(alg: &str) -> (ChapServer, u8, Vec<u8>, TextPairs) {
        let mut s = ChapServer::new();
        let ChapStep::Continue(out) = s.step(&kv(&[("CHAP_A", alg)]), &accounts(false)).unwrap()
        else {
            panic!("expected a challenge");
        };
        let id: u8 = out.get("CHAP_I").unwrap().parse().unwrap();
        let c = decode_binary(out.get("CHAP_C").unwrap()).unwrap();
        assert_eq!(c.len(), CHALLENGE_LEN);
        (s, id, c, out)
    }

    #[test]
    fn selects_in_initiator_preference_order() {
        assert_eq!(ChapAlg::select("7,5"), Some(ChapAlg::Sha1));
        assert_eq!(ChapAlg::select("5,7"), Some(ChapAlg::Md5));
        assert_eq!(ChapAlg::select("6,15,7"), Some(ChapAlg::Sha1));
        assert_eq!(ChapAlg::select("6"), None);
        let mut s = ChapServer::new();
        assert_eq!(
            s.step(&kv(&[("CHAP_A", "6")]), &accounts(false)),
            Err(ChapError::NoCommonAlgorithm("6".into()))
        );
    }

    #[test]
    fn md5_vector() {
        // Computed independently with the md-5 crate.
        let mut h = md5::Md5::new();
        h.update([1u8]);
        h.update(b"secret");
        h.update([0xaa, 0xbb]);
        assert_eq!(
            ChapAlg::Md5.response(1, b"secret", &[0xaa, 0xbb]),
            h.finalize().to_vec()
        );
        // RFC 1321 test vector: MD5("abc") with id 'a' = 0x61, secret "b", challenge "c".
        assert_eq!(
            encode_hex(&ChapAlg::Md5.response(b'a', b"b", b"c")),
            "0x900150983cd24fb0d6963f7d28e17f72"
        );
        // FIPS 180 vector: SHA1("abc").
        assert_eq!(
            encode_hex(&ChapAlg::Sha1.response(b'a', b"b", b"c")),
            "0xa9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn one_way_md5_and_sha1() {
        for (code, alg) in [("5", ChapAlg::Md5), ("7", ChapAlg::Sha1)] {
            let (mut s, id, c, out) = start(code);
            assert_eq!(out.get("CHAP_A"), Some(code));
            let r = encode_hex(&alg.response(id, b"alicesecret1", &c));
            let step = s
                .step(
                    &kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
                    &accounts(false),
                )
                .unwrap();
            assert_eq!(step, ChapStep::Authenticated(TextPairs::new()));
            assert!(s.is_done());
        }
    }

    #[test]
    fn base64_response_accepted() {
        let (mut s, id, c, _) = start("5");
        let r = encode_base64(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
        assert!(r.starts_with("0b"));
        assert!(s
            .step(
                &kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
                &accounts(false)
            )
            .is_ok());
    }

    #[test]
    fn wrong_secret_and_unknown_user() {
        let (mut s, id, c, _) = start("5");
        let r = encode_hex(&ChapAlg::Md5.response(id, b"wrong", &c));
        let e = s
            .step(
                &kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
                &accounts(false),
            )
            .unwrap_err();
        assert_eq!(e, ChapError::WrongResponse);
        assert_eq!(e.status(), (2, 1));
        let (mut s, id, c, _) = start("5");
        let r = encode_hex(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
        assert_eq!(
            s.step(&kv(&[("CHAP_N", "bob"), ("CHAP_R", &r)]), &accounts(false)),
            Err(ChapError::UnknownUser)
        );
        let (mut s, _, _, _) = start("7");
        assert_eq!(
            s.step(
                &kv(&[("CHAP_N", "alice"), ("CHAP_R", "0x00")]),
                &accounts(false)
            ),
            Err(ChapError::BadResponseLength)
        );
        let (mut s, _, _, _) = start("7");
        assert_eq!(
            s.step(
                &kv(&[("CHAP_N", "alice"), ("CHAP_R", "zz")]),
                &accounts(false)
            ),
            Err(ChapError::BadEncoding("CHAP_R"))
        );
        let (mut s, _, _, _) = start("7");
        assert_eq!(
            s.step(&kv(&[("CHAP_N", "alice")]), &accounts(false)),
            Err(ChapError::MissingKey("CHAP_R"))
        );
    }

    #[test]
    fn mutual_chap() {
        let (mut s, id, c, _) = start("5");
        let r = encode_hex(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
        let their_c = [0x5au8; 32];
        let keys = kv(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", &r),
            ("CHAP_I", "77"),
            ("CHAP_C", &encode_hex(&their_c)),
        ]);
        let ChapStep::Authenticated(out) = s.step(&keys, &accounts(true)).unwrap() else {
            panic!("expected success");
        };
        assert_eq!(out.get("CHAP_N"), Some("target"));
        let expected = {
            let mut h = md5::Md5::new();
            h.update([77u8]);
            h.update(b"targetsecret");
            h.update(their_c);
            encode_hex(&h.finalize())
        };
        assert_eq!(out.get("CHAP_R"), Some(expected.as_str()));
        // No outgoing account: refused.
        let (mut s, id, c, _) = start("5");
        let r = encode_hex(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
        let keys = kv(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", &r),
            ("CHAP_I", "1"),
            ("CHAP_C", &encode_hex(&their_c)),
        ]);
        assert_eq!(
            s.step(&keys, &accounts(false)),
            Err(ChapError::NoOutgoingAccount)
        );
    }

    #[test]
    fn mutual_chap_bounds_and_reflection() {
        let run = |extra: &[(&str, &str)]| {
            let (mut s, id, c, _) = start("5");
            let r = encode_hex(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
            let mut keys = kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]);
            for (k, v) in extra {
                let v = v.replace("OURS", &encode_hex(&c));
                keys.push(k, &v);
            }
            s.step(&keys, &accounts(true))
        };
        assert_eq!(
            run(&[("CHAP_I", "1"), ("CHAP_C", "OURS")]),
            Err(ChapError::ReflectedChallenge)
        );
        assert_eq!(run(&[("CHAP_I", "1")]), Err(ChapError::HalfChallenge));
        assert_eq!(
            run(&[("CHAP_I", "256"), ("CHAP_C", "0x00")]),
            Err(ChapError::BadIdentifier)
        );
        let big = encode_hex(&[1u8; 1025]);
        assert_eq!(
            run(&[("CHAP_I", "1"), ("CHAP_C", &big)]),
            Err(ChapError::ChallengeLength(1025))
        );
        let max = encode_hex(&[1u8; 1024]);
        assert!(run(&[("CHAP_I", "1"), ("CHAP_C", &max)]).is_ok());
    }

    #[test]
    fn encodings_round_trip() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len as u8).map(|x| x.wrapping_mul(37)).collect();
            if len > 0 {
                assert_eq!(decode_binary(&encode_hex(&data)).unwrap(), data);
                assert_eq!(decode_binary(&encode_base64(&data)).unwrap(), data);
            }
        }
        assert_eq!(encode_base64(b"foobar"), "0bZm9vYmFy");
        assert_eq!(encode_base64(b"fo"), "0bZm8=");
        assert_eq!(decode_binary("0XABC").unwrap(), vec![0x0a, 0xbc]);
        assert_eq!(decode_binary("0x"), None);
        assert_eq!(decode_binary("abc"), None);
        assert_eq!(decode_binary("0bZ"), None);
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"a", b"ab"));
    }

    #[test]
    fn steps_out_of_order() {
        let (mut s, id, c, _) = start("5");
        let r = encode_hex(&ChapAlg::Md5.response(id, b"alicesecret1", &c));
        s.step(
            &kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
            &accounts(false),
        )
        .unwrap();
        assert_eq!(
            s.step(&kv(&[("CHAP_A", "5")]), &accounts(false)),
            Err(ChapError::OutOfOrder)
        );
        let mut s = ChapServer::new();
        assert_eq!(
            s.step(&TextPairs::new(), &accounts(false)),
            Err(ChapError::MissingAlgorithm)
        );
    }
}
