//! NOP-Out and NOP-In (RFC 7143 §11.18, §11.19): pings from the initiator echoed, and the
//! target's keep-alive pings with the count of unanswered ones.

use super::window::Admit;
use super::Session;
use crate::iscsi::ids::{Itt, Ttt};
use crate::iscsi::pdu::{Bhs, NopOut};
use crate::iscsi::tx::Payload;
use crate::scsi::Lun;

impl Session {
    pub(super) fn on_nop_out(&mut self, n: &NopOut, data: &[u8]) {
        if n.itt == Itt::RESERVED {
            // Answer to our NOP-In ping (RFC 7143 §11.18): no response.
            self.pings_unanswered = 0;
            if !n.immediate
                && n.cmd_sn == self.window.exp()
                && self.window.admit(false, n.cmd_sn) == Admit::Now
            {
                self.delivered(None);
            }
            return;
        }
        if !self.take_cmd_sn(n.immediate, n.cmd_sn) {
            return;
        }
        let echo = data.len().min(self.params.max_xmit_data as usize);
        let payload = if echo == 0 {
            Payload::None
        } else {
            Payload::Owned(data[..echo].to_vec())
        };
        self.queue(Bhs::nop_in(n.itt, Ttt::RESERVED, n.lun), payload);
    }

    /// One second of the keep-alive clock for a target with `nop_interval`/`nop_count` (tgt's
    /// semantics): every `interval` seconds send a NOP-In ping (RFC 7143 §11.19, ITT reserved,
    /// a TTT the initiator must echo); returns true when more than `count` pings went
    /// unanswered and the connection should be closed.
    pub fn nop_tick(&mut self, interval: u32, count: u32) -> bool {
        if interval == 0 {
            self.nop_ticks = 0;
            return false;
        }
        self.nop_ticks += 1;
        if self.nop_ticks < interval {
            return false;
        }
        self.nop_ticks = 0;
        if self.pings_unanswered > count {
            return true;
        }
        self.ping();
        false
    }

    /// Queues a NOP-In ping (keep-alive) and counts it as unanswered until a reply.
    pub fn ping(&mut self) {
        self.ping_ttt = self.ping_ttt.wrapping_add(1) & 0x7fff_ffff;
        self.pings_unanswered += 1;
        let ttt = Ttt(self.ping_ttt);
        self.queue(Bhs::nop_in(Itt::RESERVED, ttt, Lun(0)), Payload::None);
    }
}
