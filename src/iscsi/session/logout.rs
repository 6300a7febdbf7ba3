//! Logout (RFC 7143 §11.14, §11.15) and the asynchronous request that the initiator log out
//! (§11.9).

use super::{CloseAfter, Session};
use crate::iscsi::pdu::{Bhs, LogoutReason, LogoutReq, RejectReason, BHS_LEN};
use crate::iscsi::tx::Payload;
use crate::scsi::Lun;

impl Session {
    pub(super) fn on_logout(&mut self, l: &LogoutReq, bhs: &[u8; BHS_LEN]) {
        if !self.take_cmd_sn(l.immediate, l.cmd_sn) {
            return;
        }
        // RFC 7143 §11.15.1 responses: 0 closed, 1 CID not found, 2 recovery not supported.
        let response = match l.reason {
            LogoutReason::CloseSession => 0,
            LogoutReason::CloseConnection if l.cid == self.cid => 0,
            LogoutReason::CloseConnection => 1,
            LogoutReason::RemoveForRecovery => 2,
            LogoutReason::Other(_) => {
                // §11.14.1 defines reason codes 0-2 and reserves the rest: a reserved value
                // is a malformed request, answered with a Reject (Protocol Error, §11.17.1),
                // not a Logout Response, and the session carries on. Its CmdSN is used.
                self.reject(RejectReason::ProtocolError, bhs);
                return;
            }
        };
        self.queue(Bhs::logout_response(l.itt, response, 2, 20), Payload::None);
        crate::log::event::logout(&self.initiator_name, self.tsih.0, &l.reason);
        if response == 0 {
            self.abort_all(|_| true);
            self.close = Some(CloseAfter::Flush);
        }
    }

    /// Sends an Asynchronous Message asking the initiator to log out (RFC 7143 §11.9.1
    /// event 1), used when an admin removes the session's target.
    pub fn request_logout(&mut self) {
        self.queue(Bhs::async_message(Lun(0), 1, 0, 2, 20), Payload::None);
    }
}
