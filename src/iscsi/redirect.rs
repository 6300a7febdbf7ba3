//! Login redirection, target side: the rules tgt applies when a normal session's login names a
//! target that has a redirect (usr/iscsi/target.c `target_redirected`), before the target's
//! state and ACL are checked.
//!
//! A redirect answers the login with status class 1 (RFC 7143 §11.13.5: 0x0101 target moved
//! temporarily, 0x0102 permanently) and a `TargetAddress` key (RFC 7143 §13.8) naming where to
//! log in instead. It comes either from tgtadm (`RedirectAddress`, `RedirectPort`,
//! `RedirectReason`) or from a program (`RedirectCallback`) that prints
//! `addr:port:Temporary|Permanent`. Both end in the same rules ([`resolve`]): the address must
//! be numeric, and an initiator is never redirected to its own address.
//!
//! Sans-IO: running the program is the shard's business (`shard/callback.rs`); this file only
//! builds its argument vector and reads its answer.

use super::target_address::format_address;
use std::net::IpAddr;

/// Most bytes of a callback's output read (tgt's buffer holds NI_MAXHOST + NI_MAXSERV + 4).
pub const CALLBACK_OUTPUT_MAX: usize = 1024;

/// Where a login is sent instead: the `TargetAddress` value and the status detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTo {
    /// `ip:port`, IPv6 in brackets (RFC 7143 §13.8).
    pub address: String,
    /// true: 0x0102 target moved permanently; false: 0x0101 temporarily.
    pub permanent: bool,
}

/// A callback's answer, parsed but not yet judged by [`resolve`]. Exists so the two sources of
/// a redirect (tgtadm's keys and a callback's output) meet in one shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackAnswer {
    /// The address as printed, brackets included for IPv6.
    pub address: String,
    pub port: u16,
    pub permanent: bool,
}

/// Why a callback's output is not `addr:port:Temporary|Permanent`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("'[' without ']' in the address")]
    UnclosedBracket,
    #[error("no ':' after the address")]
    NoPort,
    #[error("no ':' after the port")]
    NoReason,
    #[error("port {0:?} is not a number from 0 to 65535")]
    BadPort(String),
    #[error("reason is neither Temporary nor Permanent")]
    BadReason,
}

/// Why a redirect callback gave no answer. Each fails the login with status 0x0300 (target
/// error), as tgt does when its callback fails.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("{0} redirect callbacks already running")]
    Busy(usize),
    #[error("cannot run the callback: {0}")]
    Spawn(std::io::ErrorKind),
    #[error("no output within {0} ms")]
    Timeout(u64),
    #[error("callback output: {0}")]
    Output(#[from] OutputError),
}

/// Splits a `RedirectCallback` value into the program and its leading arguments: on spaces,
/// runs of spaces counting as one (tgt `str_spacecpy` + `strsep`).
pub fn split_callback(value: &str) -> Vec<String> {
    value
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The callback's argument vector for one login: the configured words, then the target's
/// name and the initiator's address, numeric (tgt: `getnameinfo(NI_NUMERICHOST)`).
pub fn callback_argv(prefix: &[String], target: &str, peer: IpAddr) -> Vec<String> {
    let mut argv = prefix.to_vec();
    argv.push(target.to_string());
    argv.push(peer.to_string());
    argv
}

/// Reads a callback's output, tgt's syntax (`get_redirect_address`): the address up to the
/// first `:` (or a bracketed IPv6 address and the `:` after it), the port up to the next
/// `:`, then a reason that starts with `Temporary` or `Permanent` (anything after it, such as
/// a newline, is ignored). The output ends at its first NUL, as tgt's C string does.
///
/// Stricter than tgt in one point: the port must be a number, because it goes on the wire in
/// `TargetAddress` (tgt copies any text there).
pub fn parse_answer(out: &[u8]) -> Result<CallbackAnswer, OutputError> {
    let out = out.split(|b| *b == 0).next().unwrap_or_default();
    let addr_end = if out.first() == Some(&b'[') {
        let close = out
            .iter()
            .position(|b| *b == b']')
            .ok_or(OutputError::UnclosedBracket)?;
        if out.get(close + 1) != Some(&b':') {
            return Err(OutputError::NoPort);
        }
        close + 1
    } else {
        out.iter()
            .position(|b| *b == b':')
            .ok_or(OutputError::NoPort)?
    };
    let rest = &out[addr_end + 1..];
    let port_end = rest
        .iter()
        .position(|b| *b == b':')
        .ok_or(OutputError::NoReason)?;
    let port_text = String::from_utf8_lossy(&rest[..port_end]);
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|_| port_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| OutputError::BadPort(port_text.chars().take(16).collect()))?;
    let reason = &rest[port_end + 1..];
    let permanent = if reason.starts_with(b"Temporary") {
        false
    } else if reason.starts_with(b"Permanent") {
        true
    } else {
        return Err(OutputError::BadReason);
    };
    Ok(CallbackAnswer {
        address: String::from_utf8_lossy(&out[..addr_end]).into_owned(),
        port,
        permanent,
    })
}

/// tgt's last word on a redirect (static or from a callback): the address, without its
/// brackets, must be a numeric IPv4 or IPv6 address (tgt: `getaddrinfo(AI_NUMERICHOST)`; a
/// host name means no redirect), and an initiator whose own address it is logs in here.
/// `None`: no redirect, the login carries on.
pub fn resolve(address: &str, port: u16, permanent: bool, peer: IpAddr) -> Option<RedirectTo> {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => address,
    };
    let ip: IpAddr = host.parse().ok()?;
    if ip.to_canonical() == peer.to_canonical() {
        return None;
    }
    Some(RedirectTo {
        address: format_address(ip, port),
        permanent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(a: &str, port: u16, permanent: bool) -> CallbackAnswer {
        CallbackAnswer {
            address: a.into(),
            port,
            permanent,
        }
    }

    #[test]
    fn answers_in_tgt_syntax() {
        assert_eq!(
            parse_answer(b"10.0.0.5:3261:Temporary\n"),
            Ok(answer("10.0.0.5", 3261, false))
        );
        assert_eq!(
            parse_answer(b"[fd00::5]:3260:Permanent"),
            Ok(answer("[fd00::5]", 3260, true))
        );
        // Anything after the reason word, and anything after a NUL, is ignored.
        assert_eq!(
            parse_answer(b"10.0.0.5:1:PermanentXYZ\0garbage"),
            Ok(answer("10.0.0.5", 1, true))
        );
        // A host name parses; resolve() decides it is no redirect.
        assert_eq!(
            parse_answer(b"node2:3260:Temporary"),
            Ok(answer("node2", 3260, false))
        );
    }

    #[test]
    fn malformed_answers() {
        assert_eq!(parse_answer(b""), Err(OutputError::NoPort));
        assert_eq!(parse_answer(b"garbage\n"), Err(OutputError::NoPort));
        assert_eq!(
            parse_answer(b"[fd00::5:3260:Temporary"),
            Err(OutputError::UnclosedBracket)
        );
        assert_eq!(
            parse_answer(b"[fd00::5]3260:Temporary"),
            Err(OutputError::NoPort)
        );
        assert_eq!(parse_answer(b"10.0.0.5:3260"), Err(OutputError::NoReason));
        assert_eq!(
            parse_answer(b"10.0.0.5:3260:Maybe"),
            Err(OutputError::BadReason)
        );
        assert_eq!(
            parse_answer(b"10.0.0.5:3260:temporary"),
            Err(OutputError::BadReason)
        );
        assert!(matches!(
            parse_answer(b"10.0.0.5::Temporary"),
            Err(OutputError::BadPort(_))
        ));
        assert!(matches!(
            parse_answer(b"10.0.0.5:+1:Temporary"),
            Err(OutputError::BadPort(_))
        ));
        assert!(matches!(
            parse_answer(b"10.0.0.5:70000:Temporary"),
            Err(OutputError::BadPort(_))
        ));
        // A NUL ends the output before the reason.
        assert_eq!(
            parse_answer(b"10.0.0.5:3260\0:Temporary"),
            Err(OutputError::NoReason)
        );
    }

    #[test]
    fn resolve_applies_tgts_final_rules() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            resolve("10.0.0.5", 3261, false, peer),
            Some(RedirectTo {
                address: "10.0.0.5:3261".into(),
                permanent: false
            })
        );
        assert_eq!(
            resolve("[fd00::5]", 3260, true, peer),
            Some(RedirectTo {
                address: "[fd00::5]:3260".into(),
                permanent: true
            })
        );
        // Unbracketed IPv6 (tgtadm's RedirectAddress) is bracketed on the wire.
        assert_eq!(
            resolve("fd00::5", 3260, true, peer).map(|r| r.address),
            Some("[fd00::5]:3260".into())
        );
        // Host names, unclosed brackets: no redirect.
        assert_eq!(resolve("node2", 3260, false, peer), None);
        assert_eq!(resolve("[fd00::5", 3260, false, peer), None);
        assert_eq!(resolve("", 3260, false, peer), None);
        // The initiator's own address (also as IPv4-mapped IPv6): no redirect.
        assert_eq!(resolve("10.0.0.2", 3260, false, peer), None);
        assert_eq!(resolve("[::ffff:10.0.0.2]", 3260, false, peer), None);
        let mapped_peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(resolve("10.0.0.2", 3260, false, mapped_peer), None);
    }

    #[test]
    fn callback_words_and_arguments() {
        assert_eq!(
            split_callback("/usr/bin/pick  --pool a "),
            vec!["/usr/bin/pick", "--pool", "a"]
        );
        assert!(split_callback("").is_empty());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            callback_argv(&split_callback("/bin/pick -x"), "iqn.t:1", peer),
            vec!["/bin/pick", "-x", "iqn.t:1", "127.0.0.1"]
        );
    }
}
