//! `MSG_ZEROCOPY` completion notifications as `recvmsg(MSG_ERRQUEUE)` returns them
//! (Documentation/networking/msg_zerocopy.rst, "Notification Parsing"): one control message
//! `SOL_IP/IP_RECVERR` (or `SOL_IPV6/IPV6_RECVERR`) holding a `sock_extended_err` with
//! `ee_origin == SO_EE_ORIGIN_ZEROCOPY`, `ee_errno == 0`, and the inclusive range of send
//! counters `[ee_info, ee_data]` it completes (the kernel coalesces consecutive sends). Bit
//! `SO_EE_CODE_ZEROCOPY_COPIED` in `ee_code` says the kernel copied the data after all.
//!
//! The bytes come from the kernel, but the old C target `abort()`ed on anything unexpected;
//! here every shape that is not a zero-copy notification is a typed error the caller logs and
//! skips.

use thiserror::Error;

/// `SO_EE_ORIGIN_ZEROCOPY` (linux/errqueue.h).
pub const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED` (linux/errqueue.h).
pub const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
/// Room for one control message with a `sock_extended_err` and the offender address after
/// it (the kernel appends a `sockaddr_in6` at most).
pub const CONTROL_BYTES: usize = 128;

/// Bytes of `struct sock_extended_err` before the offender address.
const EXTENDED_ERR_LEN: usize = 16;

/// One notification: sends `first..=last` (the kernel's per-socket counter, wrapping at
/// 2^32) are done with the pages they referenced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ZcNotification {
    pub first: u32,
    pub last: u32,
    /// The kernel copied the data of these sends instead of sending from our pages.
    pub copied: bool,
}

impl ZcNotification {
    /// How many sends the range covers.
    pub fn count(&self) -> u64 {
        u64::from(self.last.wrapping_sub(self.first)) + 1
    }

    /// Whether send counter `id` lies in the range (serial arithmetic around the wrap).
    pub fn contains(&self, id: u32) -> bool {
        id.wrapping_sub(self.first) <= self.last.wrapping_sub(self.first)
    }
}

/// Why an error-queue message is not a zero-copy notification.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ErrQueueError {
    /// The kernel truncated the control data (MSG_CTRUNC): the buffer is too small.
    #[error("control data truncated (MSG_CTRUNC)")]
    Truncated,
    /// A control message header or its length points past the bytes returned.
    #[error("control message of {len} bytes does not fit in the {avail} returned")]
    BadLength { len: usize, avail: usize },
    /// No IP_RECVERR / IPV6_RECVERR control message at all.
    #[error("no IP_RECVERR control message")]
    NoRecvErr,
    /// An extended error from another origin (ICMP, local, timestamping).
    #[error("extended error of origin {origin}, errno {errno}, not a zero-copy notification")]
    OtherOrigin { origin: u8, errno: u32 },
    /// A zero-copy origin with an errno set, which the kernel does not produce today.
    #[error("zero-copy notification with errno {0}")]
    Errno(u32),
}

/// Parses the control bytes of one `recvmsg(MSG_ERRQUEUE)` (the first `controllen` bytes of
/// the control buffer; `msg_flags` as returned).
pub fn parse(control: &[u8], msg_flags: i32) -> Result<ZcNotification, ErrQueueError> {
    if msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(ErrQueueError::Truncated);
    }
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::align_of::<libc::cmsghdr>();
    let mut off = 0usize;
    while control.len().saturating_sub(off) >= hdr {
        let h = &control[off..];
        // cmsghdr: cmsg_len (size_t), cmsg_level (int), cmsg_type (int), then data at `hdr`.
        let len_bytes = std::mem::size_of::<libc::size_t>();
        let cmsg_len = read_usize(&h[..len_bytes]);
        let level = i32::from_ne_bytes(h[len_bytes..len_bytes + 4].try_into().expect("4"));
        let ty = i32::from_ne_bytes(h[len_bytes + 4..len_bytes + 8].try_into().expect("4"));
        if cmsg_len < hdr || cmsg_len > h.len() {
            return Err(ErrQueueError::BadLength {
                len: cmsg_len,
                avail: h.len(),
            });
        }
        let data = &h[hdr..cmsg_len];
        let recverr = (level == libc::SOL_IP && ty == libc::IP_RECVERR)
            || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR);
        if recverr {
            return extended_err(data);
        }
        off += cmsg_len.div_ceil(align) * align;
    }
    Err(ErrQueueError::NoRecvErr)
}

fn extended_err(d: &[u8]) -> Result<ZcNotification, ErrQueueError> {
    if d.len() < EXTENDED_ERR_LEN {
        return Err(ErrQueueError::BadLength {
            len: EXTENDED_ERR_LEN,
            avail: d.len(),
        });
    }
    let u32_at = |i: usize| u32::from_ne_bytes(d[i..i + 4].try_into().expect("4 bytes"));
    let (errno, origin, code) = (u32_at(0), d[4], d[6]);
    if origin != SO_EE_ORIGIN_ZEROCOPY {
        return Err(ErrQueueError::OtherOrigin { origin, errno });
    }
    if errno != 0 {
        return Err(ErrQueueError::Errno(errno));
    }
    Ok(ZcNotification {
        first: u32_at(8),
        last: u32_at(12),
        copied: code & SO_EE_CODE_ZEROCOPY_COPIED != 0,
    })
}

fn read_usize(b: &[u8]) -> usize {
    let mut a = [0u8; std::mem::size_of::<usize>()];
    a.copy_from_slice(b);
    usize::from_ne_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds control bytes as the kernel lays them out: one cmsghdr per message, data
    /// after the header, each message padded to the cmsghdr alignment.
    fn control(msgs: &[(i32, i32, Vec<u8>)]) -> Vec<u8> {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let align = std::mem::align_of::<libc::cmsghdr>();
        let mut out = Vec::new();
        for (level, ty, data) in msgs {
            let len = hdr + data.len();
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&level.to_ne_bytes());
            out.extend_from_slice(&ty.to_ne_bytes());
            out.resize(out.len() + (hdr - std::mem::size_of::<usize>() - 8), 0);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(align) * align, 0);
        }
        out
    }

    fn ee(errno: u32, origin: u8, code: u8, info: u32, data: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&errno.to_ne_bytes());
        v.extend_from_slice(&[origin, 0, code, 0]);
        v.extend_from_slice(&info.to_ne_bytes());
        v.extend_from_slice(&data.to_ne_bytes());
        v.extend_from_slice(&[0u8; 16]); // offender sockaddr_in
        v
    }

    #[test]
    fn a_zero_copy_range_is_read_from_ip_and_ipv6_recverr() {
        let c = control(&[(
            libc::SOL_IP,
            libc::IP_RECVERR,
            ee(0, SO_EE_ORIGIN_ZEROCOPY, 0, 3, 7),
        )]);
        let n = parse(&c, 0).expect("notification");
        assert_eq!(
            n,
            ZcNotification {
                first: 3,
                last: 7,
                copied: false
            }
        );
        assert_eq!(n.count(), 5);
        assert!(n.contains(3) && n.contains(7) && !n.contains(8) && !n.contains(2));
        let c6 = control(&[(
            libc::SOL_IPV6,
            libc::IPV6_RECVERR,
            ee(0, SO_EE_ORIGIN_ZEROCOPY, SO_EE_CODE_ZEROCOPY_COPIED, 9, 9),
        )]);
        let n6 = parse(&c6, 0).expect("notification");
        assert!(n6.copied);
        assert_eq!(n6.count(), 1);
    }

    #[test]
    fn ranges_wrap_at_two_to_the_32() {
        let c = control(&[(
            libc::SOL_IP,
            libc::IP_RECVERR,
            ee(0, SO_EE_ORIGIN_ZEROCOPY, 0, u32::MAX - 1, 1),
        )]);
        let n = parse(&c, 0).expect("notification");
        assert_eq!(n.count(), 4);
        assert!(n.contains(u32::MAX) && n.contains(0) && !n.contains(2));
    }

    #[test]
    fn other_messages_are_errors_not_aborts() {
        assert_eq!(
            parse(&control(&[]), 0),
            Err(ErrQueueError::NoRecvErr),
            "empty control data"
        );
        let icmp = control(&[(libc::SOL_IP, libc::IP_RECVERR, ee(113, 2, 1, 0, 0))]);
        assert_eq!(
            parse(&icmp, 0),
            Err(ErrQueueError::OtherOrigin {
                origin: 2,
                errno: 113
            })
        );
        let errno = control(&[(
            libc::SOL_IP,
            libc::IP_RECVERR,
            ee(5, SO_EE_ORIGIN_ZEROCOPY, 0, 0, 0),
        )]);
        assert_eq!(parse(&errno, 0), Err(ErrQueueError::Errno(5)));
        let ok = control(&[(
            libc::SOL_IP,
            libc::IP_RECVERR,
            ee(0, SO_EE_ORIGIN_ZEROCOPY, 0, 0, 0),
        )]);
        assert_eq!(parse(&ok, libc::MSG_CTRUNC), Err(ErrQueueError::Truncated));
        // Short extended error, and a length that points past the buffer.
        let short = control(&[(libc::SOL_IP, libc::IP_RECVERR, vec![0u8; 8])]);
        assert!(matches!(
            parse(&short, 0),
            Err(ErrQueueError::BadLength { .. })
        ));
        let mut bad = ok.clone();
        bad[..8].copy_from_slice(&(ok.len() + 1).to_ne_bytes());
        assert!(matches!(
            parse(&bad, 0),
            Err(ErrQueueError::BadLength { .. })
        ));
        // A stray message before the notification is skipped.
        let two = control(&[
            (libc::SOL_SOCKET, libc::SO_TIMESTAMP, vec![1u8; 16]),
            (
                libc::SOL_IP,
                libc::IP_RECVERR,
                ee(0, SO_EE_ORIGIN_ZEROCOPY, 0, 4, 4),
            ),
        ]);
        assert_eq!(parse(&two, 0).map(|n| n.first), Ok(4));
    }
}
