//! What this kernel offers for zero-copy sends, asked once per shard when its ring starts:
//! the ring's opcode probe for `IORING_OP_SEND_ZC` (6.0) and `IORING_OP_SENDMSG_ZC` (6.1), and
//! the release from `uname` for what no probe answers: `IORING_SEND_ZC_REPORT_USAGE` (6.2),
//! without which a notification cannot say that the kernel copied, and `MSG_ZEROCOPY` for
//! TCP (4.14).

use super::Engine;
use io_uring::{opcode, IoUring, Probe};

/// The kernel's zero-copy capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSupport {
    /// `uname -r`.
    pub release: String,
    pub send_zc: bool,
    pub sendmsg_zc: bool,
    pub report_usage: bool,
    pub msg_zerocopy: bool,
}

impl KernelSupport {
    /// Whether `engine` can carry zero-copy sends here.
    pub fn supports(&self, engine: Engine) -> bool {
        match engine {
            Engine::Uring => self.sendmsg_zc,
            Engine::Msg => self.msg_zerocopy,
        }
    }

    /// From the ring's opcode probe (None: the probe itself failed) and the release string.
    pub fn from_parts(release: &str, send_zc: Option<bool>, sendmsg_zc: Option<bool>) -> Self {
        let v = parse_release(release);
        let at_least = |want: (u32, u32)| v.is_some_and(|v| v >= want);
        KernelSupport {
            release: release.to_string(),
            send_zc: send_zc.unwrap_or(at_least((6, 0))),
            sendmsg_zc: sendmsg_zc.unwrap_or(at_least((6, 1))),
            report_usage: at_least((6, 2)),
            msg_zerocopy: at_least((4, 14)),
        }
    }

    /// Asks `ring` and `uname`.
    pub fn probe(ring: &IoUring) -> KernelSupport {
        let mut p = Probe::new();
        let probed = ring.submitter().register_probe(&mut p).is_ok();
        let has = |code: u8| probed.then(|| p.is_supported(code));
        KernelSupport::from_parts(
            &uname_release(),
            has(opcode::SendZc::CODE),
            has(opcode::SendMsgZc::CODE),
        )
    }
}

/// `uname -r`, or an empty string when uname fails.
pub fn uname_release() -> String {
    // SAFETY: utsname is plain C data for which all-zero is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Major and minor from a release such as `6.18.44-fc-v857`.
pub fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_decide_what_the_probe_cannot() {
        assert_eq!(parse_release("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        let k = KernelSupport::from_parts("6.1.0", None, None);
        assert!(k.send_zc && k.sendmsg_zc && !k.report_usage && k.msg_zerocopy);
        let old = KernelSupport::from_parts("5.15.0", None, None);
        assert!(!old.supports(Engine::Uring) && old.supports(Engine::Msg));
        // The ring's probe wins over the release (backports, disabled opcodes).
        let p = KernelSupport::from_parts("6.8.0", Some(true), Some(false));
        assert!(!p.supports(Engine::Uring));
        let r = KernelSupport::from_parts("6.2.1", None, None);
        assert!(r.report_usage);
    }

    #[test]
    fn this_kernel_answers_the_probe() {
        let ring = IoUring::new(8).expect("io_uring");
        let k = KernelSupport::probe(&ring);
        assert!(!k.release.is_empty());
        // Whatever the kernel, the probe and the release agree on SEND_ZC's presence where
        // the release is new enough to be sure.
        if parse_release(&k.release).is_some_and(|v| v >= (6, 1)) {
            assert!(k.sendmsg_zc, "6.1+ has IORING_OP_SENDMSG_ZC: {k:?}");
        }
    }
}
