//! Text Requests in the full-feature phase (RFC 7143 §11.10): each PDU goes to the owner's
//! `TextSm` as an event; its answers are queued here.

use super::{Event, Session};
use crate::iscsi::pdu::{Bhs, TextReq, BHS_LEN};
use crate::iscsi::tx::Payload;

impl Session {
    pub(super) fn on_text(&mut self, t: &TextReq, data: &[u8], bhs: &[u8; BHS_LEN]) {
        if !self.take_cmd_sn(t.immediate, t.cmd_sn) {
            return;
        }
        // Every piece goes to the owner's TextSm, which joins continued requests (bounded by
        // text::MAX_TEXT_BYTES) and answers each with the tag the next piece must echo
        // (RFC 7143 §11.10.2). Joining here as well gave the initiator a tag TextSm did not
        // know, so every multi-PDU request was rejected.
        self.events.push_back(Event::Text {
            req: t.clone(),
            data: data.to_vec(),
            bhs: *bhs,
        });
    }

    /// Queues a text response built by the text handler.
    pub fn send_text(&mut self, bhs: Bhs, data: Vec<u8>) {
        let payload = if data.is_empty() {
            Payload::None
        } else {
            Payload::Owned(data)
        };
        self.queue(bhs, payload);
    }
}
