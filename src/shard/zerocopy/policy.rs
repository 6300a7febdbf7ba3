//! One connection's zero-copy policy: whether a payload goes zero-copy, what the connection
//! has sent each way, and when it gives zero-copy up for good.
//!
//! A connection starts in [`Mode::Probe`] when `--tcp_zerocopy 1` and the kernel supports the
//! engine: its first large payload goes zero-copy and the others by copy until that send's
//! notification says whether the kernel sent from our pages. Then it is [`Mode::ZeroCopy`], or
//! [`Mode::Copy`] when the kernel copied. Probing with one send bounds what auto mode costs
//! on a path that copies (loopback, veth) to one pinned send and one notification per
//! connection, whichever engine carries it: sending zero-copy until the first notification
//! came back cost several sends (all a full socket buffer could hold), and on the `msg`
//! engine, whose notifications arrive through the error queue, a quarter of the throughput.
//! A connection in [`Mode::ZeroCopy`] drops to [`Mode::Copy`] the first time the kernel refuses (ENOBUFS: socket
//! option memory, `net.core.optmem_max`; ENOMEM/EPERM: the locked-memory limit; EINVAL or
//! EOPNOTSUPP: no such opcode or no zero-copy on this socket) or reports that it copied anyway
//! (loopback, veth, tap, a NIC without scatter-gather): copying twice costs more than
//! copying once. It never goes back: the conditions that made the kernel refuse or copy belong
//! to the path, and they do not change while the connection lives. Each reason is logged once
//! per connection; the caller adds the peer address.

use super::ZcConfig;

/// Why a connection copies.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CopyReason {
    /// `--tcp_zerocopy 0`.
    Disabled,
    /// ENOBUFS from a zero-copy send: the socket's option memory (`net.core.optmem_max`)
    /// cannot hold another notification, or the pinned pages exceed `ulimit -l`.
    NoBuffers,
    /// ENOMEM from `SEND_ZC`: io_uring charges the pinned pages to the locked-memory limit of
    /// the user (`ulimit -l`) unless the process has CAP_IPC_LOCK.
    LockedMemory,
    /// EPERM from a zero-copy send.
    NotPermitted,
    /// The kernel has no such opcode (EINVAL), the socket refuses zero-copy (EOPNOTSUPP), or
    /// `SO_ZEROCOPY` could not be set.
    Unsupported,
    /// A notification said the kernel copied the data (loopback, veth, tap, no SG on the NIC).
    KernelCopied,
}

impl CopyReason {
    /// The word shown in `tgtadm --op stat`.
    pub fn name(self) -> &'static str {
        match self {
            CopyReason::Disabled => "off",
            CopyReason::NoBuffers => "enobufs",
            CopyReason::LockedMemory => "enomem",
            CopyReason::NotPermitted => "eperm",
            CopyReason::Unsupported => "unsupported",
            CopyReason::KernelCopied => "copied",
        }
    }

    /// The line logged (once per connection, after `peer=ADDR`) when a connection falls back.
    pub fn log_line(self) -> &'static str {
        match self {
            CopyReason::Disabled => "zerocopy is off",
            // The text the admin docs promise, word for word (curve-tgt's MSG_ZEROCOPY code).
            CopyReason::NoBuffers => "got ENOBUFS, turn off zerocopy",
            CopyReason::LockedMemory => "got ENOMEM (locked memory, ulimit -l), turn off zerocopy",
            CopyReason::NotPermitted => "got EPERM, turn off zerocopy",
            CopyReason::Unsupported => {
                "zero-copy send not supported by this kernel or socket, turn off zerocopy"
            }
            CopyReason::KernelCopied => {
                "SO_EE_CODE_ZEROCOPY_COPIED detected (the kernel copied), turn off zerocopy"
            }
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// How a connection sends Data-In payloads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Auto mode's start: one large payload goes zero-copy (`sent` once it is submitted), the
    /// others by copy until its notification says whether the kernel copied.
    Probe {
        sent: bool,
    },
    ZeroCopy,
    Copy(CopyReason),
}

impl Mode {
    /// `zc` or `copy:<reason>`, as `tgtadm --op stat` shows it.
    pub fn describe(self) -> String {
        match self {
            Mode::Probe { .. } => "probe".to_string(),
            Mode::ZeroCopy => "zc".to_string(),
            Mode::Copy(r) => format!("copy:{}", r.name()),
        }
    }
}

/// What one connection has sent and what the kernel told it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZcCounters {
    /// Sends carrying a Data-In payload at or above the threshold (eligible for zero-copy,
    /// whatever the mode).
    pub large_sends: u64,
    /// Sends submitted zero-copy.
    pub zc_sends: u64,
    /// Bytes (whole PDUs, headers included) that left by zero-copy sends, and by copy.
    pub zc_bytes: u64,
    pub copy_bytes: u64,
    /// Notifications received, and those saying the kernel copied.
    pub notifications: u64,
    pub copied_notifications: u64,
    /// Fallbacks by cause.
    pub fallback_enobufs: u64,
    pub fallback_enomem: u64,
    pub fallback_eperm: u64,
    pub fallback_unsupported: u64,
}

impl ZcCounters {
    /// Adds another connection's (or shard's) counters.
    pub fn add(&mut self, o: &ZcCounters) {
        self.large_sends += o.large_sends;
        self.zc_sends += o.zc_sends;
        self.zc_bytes += o.zc_bytes;
        self.copy_bytes += o.copy_bytes;
        self.notifications += o.notifications;
        self.copied_notifications += o.copied_notifications;
        self.fallback_enobufs += o.fallback_enobufs;
        self.fallback_enomem += o.fallback_enomem;
        self.fallback_eperm += o.fallback_eperm;
        self.fallback_unsupported += o.fallback_unsupported;
    }

    /// Whether no large Data-In payload was sent (such connections are not shown).
    pub fn is_idle(&self) -> bool {
        self.large_sends == 0 && self.zc_sends == 0
    }
}

/// What the send path must do after a zero-copy send failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SendErrorAction {
    /// The kernel refused zero-copy: send the same bytes again by copy, at once. Carries the
    /// line to log when this is the first time for this connection.
    ResendByCopy { log: Option<&'static str> },
    /// Not a zero-copy matter (EPIPE, ECONNRESET, ...): the ordinary error path.
    NotZeroCopy,
}

/// One connection's zero-copy state.
#[derive(Clone, Debug)]
pub struct ZcConn {
    mode: Mode,
    threshold_bytes: usize,
    keep_when_copied: bool,
    pub counters: ZcCounters,
    /// Reasons already logged on this connection (bits of `CopyReason`).
    logged: u8,
}

impl ZcConn {
    /// A new connection's state: probing when enabled and `supported` (the engine works on
    /// this kernel and socket; forced mode skips the probe, whose verdict it would ignore),
    /// else copy mode with the reason.
    pub fn new(cfg: &ZcConfig, supported: bool) -> ZcConn {
        let mode = if !cfg.enabled {
            Mode::Copy(CopyReason::Disabled)
        } else if !supported {
            Mode::Copy(CopyReason::Unsupported)
        } else if cfg.keep_when_copied {
            Mode::ZeroCopy
        } else {
            Mode::Probe { sent: false }
        };
        ZcConn {
            mode,
            threshold_bytes: cfg.threshold_bytes,
            keep_when_copied: cfg.keep_when_copied,
            counters: ZcCounters::default(),
            logged: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// No large payload sent yet: `tgtadm --op stat` leaves the connection out.
    pub fn is_idle_for_stats(&self) -> bool {
        self.counters.is_idle()
    }

    /// Whether a send whose largest Data-In payload is `payload_bytes` goes zero-copy.
    pub fn wants_zerocopy(&self, payload_bytes: usize) -> bool {
        let open = matches!(self.mode, Mode::ZeroCopy | Mode::Probe { sent: false });
        open && payload_bytes >= self.threshold_bytes.max(1)
    }

    /// Whether the connection may still send zero-copy (probing, or zero-copy mode).
    pub fn zero_copy_possible(&self) -> bool {
        !matches!(self.mode, Mode::Copy(_))
    }

    /// A send is submitted; `largest_payload` is its largest Data-In payload. Returns
    /// whether it goes zero-copy.
    pub fn on_submit(&mut self, largest_payload: usize) -> bool {
        if largest_payload >= self.threshold_bytes.max(1) {
            self.counters.large_sends += 1;
        }
        let zc = self.wants_zerocopy(largest_payload);
        if zc {
            self.counters.zc_sends += 1;
            if self.mode == (Mode::Probe { sent: false }) {
                self.mode = Mode::Probe { sent: true };
            }
        }
        zc
    }

    /// A zero-copy send moved nothing and will be sent again (EAGAIN, EINTR): no
    /// notification will come for it, so a probe must be sent again.
    pub fn on_send_retry(&mut self) {
        self.counters.zc_sends = self.counters.zc_sends.saturating_sub(1);
        if self.mode == (Mode::Probe { sent: true }) {
            self.mode = Mode::Probe { sent: false };
        }
    }

    /// `bytes` left the socket, by a zero-copy send or by copy.
    pub fn on_sent(&mut self, zc: bool, bytes: usize) {
        if zc {
            self.counters.zc_bytes += bytes as u64;
        } else {
            self.counters.copy_bytes += bytes as u64;
        }
    }

    /// A zero-copy send failed with `errno` (positive). Refusals switch the connection to
    /// copy mode for good; the caller resends the same bytes by copy.
    pub fn on_send_error(&mut self, errno: i32) -> SendErrorAction {
        let reason = match errno {
            libc::ENOBUFS => CopyReason::NoBuffers,
            libc::ENOMEM => CopyReason::LockedMemory,
            libc::EPERM => CopyReason::NotPermitted,
            libc::EINVAL | libc::EOPNOTSUPP => CopyReason::Unsupported,
            _ => return SendErrorAction::NotZeroCopy,
        };
        let c = &mut self.counters;
        match reason {
            CopyReason::NoBuffers => c.fallback_enobufs += 1,
            CopyReason::LockedMemory => c.fallback_enomem += 1,
            CopyReason::NotPermitted => c.fallback_eperm += 1,
            _ => c.fallback_unsupported += 1,
        }
        // The failed send moved no bytes, so it is not a zero-copy send after all.
        c.zc_sends = c.zc_sends.saturating_sub(1);
        SendErrorAction::ResendByCopy {
            log: self.fall_back(reason),
        }
    }

    /// A zero-copy notification arrived; `copied` when the kernel says it copied the data.
    /// Returns the line to log when this switches the connection to copy mode. A probe's
    /// notification that the kernel sent from our pages opens zero-copy mode.
    pub fn on_notification(&mut self, copied: bool) -> Option<&'static str> {
        self.counters.notifications += 1;
        if !copied {
            if self.mode == (Mode::Probe { sent: true }) {
                self.mode = Mode::ZeroCopy;
            }
            return None;
        }
        self.counters.copied_notifications += 1;
        if self.keep_when_copied {
            return None;
        }
        self.fall_back(CopyReason::KernelCopied)
    }

    /// The notification of a send that failed (it moved no bytes, so it says nothing about
    /// the path): counted only (the failure itself already decided what to do).
    pub fn on_failed_send_notification(&mut self) {
        self.counters.notifications += 1;
    }

    /// The engine cannot be used on this connection (socket option refused).
    pub fn unsupported(&mut self) -> Option<&'static str> {
        self.counters.fallback_unsupported += 1;
        self.fall_back(CopyReason::Unsupported)
    }

    fn fall_back(&mut self, reason: CopyReason) -> Option<&'static str> {
        if self.zero_copy_possible() {
            self.mode = Mode::Copy(reason);
        }
        if self.logged & reason.bit() != 0 {
            return None;
        }
        self.logged |= reason.bit();
        Some(reason.log_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ZcConfig {
        ZcConfig::default()
    }

    #[test]
    fn threshold_and_off_decide_what_goes_zero_copy() {
        let z = ZcConn::new(&cfg(), true);
        assert_eq!(z.mode(), Mode::Probe { sent: false });
        assert!(!z.wants_zerocopy(4096));
        assert!(!z.wants_zerocopy(10 * 1024 - 1));
        assert!(z.wants_zerocopy(10 * 1024));
        let off = ZcConn::new(&ZcConfig::off(), true);
        assert_eq!(off.mode(), Mode::Copy(CopyReason::Disabled));
        assert!(!off.wants_zerocopy(1 << 20));
        let old = ZcConn::new(&cfg(), false);
        assert_eq!(old.mode(), Mode::Copy(CopyReason::Unsupported));
        let zero = ZcConn::new(
            &ZcConfig {
                threshold_bytes: 0,
                ..cfg()
            },
            true,
        );
        assert!(
            !zero.wants_zerocopy(0),
            "an empty payload is never zero-copy"
        );
        assert!(zero.wants_zerocopy(1));
    }

    #[test]
    fn enobufs_logs_the_documented_line_once_and_stays_in_copy_mode() {
        let mut z = ZcConn::new(&cfg(), true);
        assert!(z.on_submit(65536));
        assert_eq!(
            z.on_send_error(libc::ENOBUFS),
            SendErrorAction::ResendByCopy {
                log: Some("got ENOBUFS, turn off zerocopy")
            }
        );
        assert!(!z.on_submit(65536), "the same payload again, by copy");
        z.on_sent(false, 65536 + 48);
        assert_eq!(z.mode(), Mode::Copy(CopyReason::NoBuffers));
        assert!(!z.wants_zerocopy(1 << 20));
        // A second refusal (a send already in flight) counts but logs nothing.
        assert_eq!(
            z.on_send_error(libc::ENOBUFS),
            SendErrorAction::ResendByCopy { log: None }
        );
        assert_eq!(z.counters.fallback_enobufs, 2);
        assert_eq!(z.counters.zc_sends, 0);
        assert_eq!(z.counters.zc_bytes, 0);
        assert_eq!(z.counters.copy_bytes, 65536 + 48);
        assert_eq!(z.counters.large_sends, 2);
    }

    #[test]
    fn each_refusal_has_its_own_reason_and_line() {
        for (errno, reason, counter) in [
            (libc::ENOMEM, CopyReason::LockedMemory, 1),
            (libc::EPERM, CopyReason::NotPermitted, 2),
            (libc::EINVAL, CopyReason::Unsupported, 3),
            (libc::EOPNOTSUPP, CopyReason::Unsupported, 3),
        ] {
            let mut z = ZcConn::new(&cfg(), true);
            assert!(z.on_submit(1 << 20));
            let SendErrorAction::ResendByCopy { log: Some(line) } = z.on_send_error(errno) else {
                panic!("errno {errno} is a zero-copy refusal");
            };
            assert_eq!(line, reason.log_line());
            assert!(line.ends_with("turn off zerocopy"));
            assert_eq!(z.mode(), Mode::Copy(reason));
            let c = z.counters;
            let got = [c.fallback_enomem, c.fallback_eperm, c.fallback_unsupported];
            assert_eq!(got[counter - 1], 1, "errno {errno}");
        }
    }

    #[test]
    fn connection_errors_are_not_zero_copy_refusals() {
        let mut z = ZcConn::new(&cfg(), true);
        for e in [libc::EPIPE, libc::ECONNRESET, libc::EAGAIN] {
            assert_eq!(z.on_send_error(e), SendErrorAction::NotZeroCopy);
        }
        assert_eq!(z.mode(), Mode::Probe { sent: false });
    }

    #[test]
    fn auto_mode_probes_with_one_send_then_decides() {
        // The kernel copied: one zero-copy send in all, then copy mode.
        let mut z = ZcConn::new(&cfg(), true);
        assert!(!z.on_submit(4096), "a small payload does not probe");
        assert_eq!(z.mode(), Mode::Probe { sent: false });
        assert!(z.on_submit(65536), "the first large payload is the probe");
        assert_eq!(z.mode(), Mode::Probe { sent: true });
        for _ in 0..10 {
            assert!(!z.on_submit(65536), "copies while the probe is out");
        }
        assert_eq!(
            z.on_notification(true),
            Some(CopyReason::KernelCopied.log_line())
        );
        assert_eq!(z.mode(), Mode::Copy(CopyReason::KernelCopied));
        assert!(!z.on_submit(65536));
        assert_eq!((z.counters.zc_sends, z.counters.large_sends), (1, 12));

        // The kernel sent from our pages: zero-copy from then on.
        let mut z = ZcConn::new(&cfg(), true);
        assert!(z.on_submit(65536));
        assert!(!z.on_submit(65536));
        assert_eq!(z.on_notification(false), None);
        assert_eq!(z.mode(), Mode::ZeroCopy);
        assert!(z.on_submit(65536) && z.on_submit(65536));
        assert_eq!(z.counters.zc_sends, 3);

        // A probe that moved nothing (EAGAIN) is sent again; a failed send's notification
        // (for zero bytes) decides nothing.
        let mut z = ZcConn::new(&cfg(), true);
        assert!(z.on_submit(65536));
        z.on_send_retry();
        assert_eq!(z.mode(), Mode::Probe { sent: false });
        assert_eq!(z.counters.zc_sends, 0);
        assert!(z.on_submit(65536), "probes again");
        z.on_failed_send_notification();
        assert_eq!(z.mode(), Mode::Probe { sent: true });
        assert_eq!(z.counters.notifications, 1);

        // A refusal of the probe is a fallback like any other.
        let mut z = ZcConn::new(&cfg(), true);
        assert!(z.on_submit(65536));
        assert!(matches!(
            z.on_send_error(libc::ENOBUFS),
            SendErrorAction::ResendByCopy { log: Some(_) }
        ));
        assert_eq!(z.mode(), Mode::Copy(CopyReason::NoBuffers));
        assert_eq!(Mode::Probe { sent: true }.describe(), "probe");
    }

    #[test]
    fn copied_notification_switches_to_copy_unless_forced() {
        let mut z = ZcConn::new(&cfg(), true);
        assert!(z.on_submit(65536));
        assert_eq!(z.on_notification(false), None);
        assert_eq!(z.mode(), Mode::ZeroCopy);
        assert_eq!(
            z.on_notification(true),
            Some(CopyReason::KernelCopied.log_line())
        );
        assert_eq!(z.on_notification(true), None, "logged once");
        assert_eq!(z.mode(), Mode::Copy(CopyReason::KernelCopied));
        assert_eq!(z.counters.notifications, 3);
        assert_eq!(z.counters.copied_notifications, 2);

        let forced = ZcConfig {
            keep_when_copied: true,
            ..cfg()
        };
        let mut f = ZcConn::new(&forced, true);
        assert_eq!(f.mode(), Mode::ZeroCopy, "forced mode does not probe");
        assert_eq!(f.on_notification(true), None);
        assert_eq!(f.mode(), Mode::ZeroCopy);
        assert_eq!(f.counters.copied_notifications, 1);
    }

    #[test]
    fn counters_add_and_report_idle() {
        let mut a = ZcCounters::default();
        assert!(a.is_idle());
        let mut z = ZcConn::new(&cfg(), true);
        assert!(!z.on_submit(100), "below the threshold");
        assert!(z.is_idle_for_stats());
        assert!(z.on_submit(20_000));
        z.on_sent(true, 20_048);
        z.on_sent(false, 5);
        a.add(&z.counters);
        a.add(&z.counters);
        assert_eq!(
            (a.large_sends, a.zc_sends, a.zc_bytes, a.copy_bytes),
            (2, 2, 40_096, 10)
        );
        assert!(!a.is_idle());
        assert_eq!(Mode::Copy(CopyReason::NoBuffers).describe(), "copy:enobufs");
        assert_eq!(Mode::ZeroCopy.describe(), "zc");
    }
}
