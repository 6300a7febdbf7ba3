//! io_uring `user_data` encoding: which kind of operation completed, for which connection slot
//! (with its generation, so a completion for a closed and reused slot is recognised) and which
//! task slot.

/// What a completion belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// The shard's wake-up eventfd read.
    Wake = 1,
    /// A connection's receive.
    Recv = 2,
    /// A connection's send.
    Send = 3,
    /// Backing-store I/O for a task.
    Backend = 4,
    /// The shard's periodic timer (NOP-In pings, zero-copy drains of closing connections).
    Timer = 5,
    /// A connection's `recvmsg(MSG_ERRQUEUE)`: `MSG_ZEROCOPY` notifications.
    ErrQueue = 6,
}

/// A decoded `user_data`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: OpKind,
    pub conn: u16,
    pub conn_gen: u16,
    pub task_slot: u16,
    pub task_gen: u16,
}

impl Token {
    /// Packs into 64 bits: kind (4) | conn_gen (12) | conn (16) | task_slot (16) | task_gen (16).
    pub fn encode(self) -> u64 {
        ((self.kind as u64) << 60)
            | ((u64::from(self.conn_gen) & 0xfff) << 48)
            | (u64::from(self.conn) << 32)
            | (u64::from(self.task_slot) << 16)
            | u64::from(self.task_gen)
    }

    /// Unpacks; `None` for an unknown kind.
    pub fn decode(v: u64) -> Option<Token> {
        let kind = match v >> 60 {
            1 => OpKind::Wake,
            2 => OpKind::Recv,
            3 => OpKind::Send,
            4 => OpKind::Backend,
            5 => OpKind::Timer,
            6 => OpKind::ErrQueue,
            _ => return None,
        };
        Some(Token {
            kind,
            conn_gen: ((v >> 48) & 0xfff) as u16,
            conn: (v >> 32) as u16,
            task_slot: (v >> 16) as u16,
            task_gen: v as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Token {
            kind: OpKind::Backend,
            conn: 65535,
            conn_gen: 0xabc,
            task_slot: 513,
            task_gen: 7,
        };
        assert_eq!(Token::decode(t.encode()), Some(t));
        assert_eq!(Token::decode(0), None);
    }
}
