//! The ring's token → owner table. Every operation the shard puts on its io_uring carries a
//! `user_data` token naming an entry of this table; the entry says who the completion belongs
//! to (an iSCSI connection, a backend engine's operation or outbound peer socket, the shard
//! timer, the wake-up read). Each entry has a generation that is part of the token, and entries
//! are released when their last completion arrived (or by [`OwnerTable::release`]), so a late
//! or duplicated completion for an entry since released and reused never reaches the new
//! owner: [`OwnerTable::resolve`] drops it.
//!
//! Multishot and zero-copy operations post several CQEs for one submission: the entry stays
//! while a CQE carries `IORING_CQE_F_MORE`, and the flags (`F_MORE`, `F_NOTIF`, the buffer id
//! in the upper 16 bits) reach the owner with the result.

use super::slots::{Slab, SlotKey};

/// `IORING_CQE_F_BUFFER`: the upper 16 bits of the flags hold a provided-buffer id.
pub const CQE_F_BUFFER: u32 = 1 << 0;
/// `IORING_CQE_F_MORE`: more completions follow for this submission.
pub const CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_NOTIF`: a zero-copy send's notification.
pub const CQE_F_NOTIF: u32 = 1 << 3;

/// Whom a completion is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The shard's wake-up eventfd read (messages from other threads).
    Wake,
    /// The shard's one armed ring timeout, behind the timer heap.
    Timer,
    /// An operation of an iSCSI connection: `conn` names its slot and generation.
    Conn { conn: SlotKey, op: ConnOp },
    /// An operation a backend engine submitted (file I/O, or I/O on a socket the engine owns,
    /// such as a Curve chunk-server connection): routed to engine `engine` with its `tag`.
    Engine { engine: u16, tag: u64 },
    /// The own completion of a request about another submission (cancel, timeout update).
    Cancel,
}

/// Which operation of a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnOp {
    Recv,
    /// A send (plain, or `MSG_ZEROCOPY`).
    Send,
    /// An io_uring zero-copy send (`SENDMSG_ZC`): a second CQE with `F_NOTIF` follows; `id`
    /// names it in the connection's `zc.inflight`.
    SendZc {
        id: u32,
    },
    /// A `recvmsg(MSG_ERRQUEUE)`: `MSG_ZEROCOPY` notifications (`shard/zerocopy`).
    ErrQueue,
}

/// A completion as its owner receives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cqe {
    pub owner: Owner,
    /// The submission's token (what [`super::ring::Ring::cancel`] takes).
    pub token: u64,
    pub res: i32,
    pub flags: u32,
}

impl Cqe {
    /// More CQEs follow for the same submission (multishot, or a zero-copy send whose
    /// notification is still to come).
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }
    /// This is a zero-copy send's notification: the kernel no longer reads its buffers.
    pub fn notif(&self) -> bool {
        io_uring::cqueue::notif(self.flags)
    }
    /// The provided-buffer id of a buffer-select receive.
    pub fn buffer_id(&self) -> Option<u16> {
        io_uring::cqueue::buffer_select(self.flags)
    }
}

/// The table. Tokens are `generation << 32 | index`; a released entry's next user gets the
/// next generation.
#[derive(Default)]
pub struct OwnerTable {
    slab: Slab<Owner>,
    /// Completions dropped because their entry was gone (debug and tests).
    pub stale: u64,
}

impl OwnerTable {
    /// Registers an owner for one submission; the token goes in the SQE's `user_data`.
    pub fn register(&mut self, owner: Owner) -> u64 {
        self.slab.insert(owner).token()
    }

    /// Resolves a CQE: `None` when its entry was released (a stale completion, dropped).
    /// The entry is released unless the CQE says more follow.
    pub fn resolve(&mut self, user_data: u64, res: i32, flags: u32) -> Option<Cqe> {
        let key = SlotKey::from_token(user_data);
        let Some(owner) = self.slab.get(key).copied() else {
            self.stale += 1;
            return None;
        };
        if !io_uring::cqueue::more(flags) {
            self.slab.remove(key);
        }
        Some(Cqe {
            owner,
            token: user_data,
            res,
            flags,
        })
    }

    /// Forgets an entry whose completions the owner no longer wants (its CQE, if one still
    /// comes, is dropped as stale).
    pub fn release(&mut self, token: u64) {
        self.slab.remove(SlotKey::from_token(token));
    }

    /// Forgets every entry `f` picks (an owner that is going away and no longer wants their
    /// completions, such as a connection giving up on zero-copy notifications that never
    /// came): their CQEs, if they still come, are dropped as stale. Returns how many.
    pub fn release_where(&mut self, f: impl Fn(&Owner) -> bool) -> usize {
        let keys: Vec<SlotKey> = self
            .slab
            .iter()
            .filter(|(_, o)| f(o))
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.slab.remove(*k);
        }
        keys.len()
    }

    /// Submissions whose last completion has not arrived.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// Every owner with a submission in flight (for invariant checks).
    pub fn iter(&self) -> impl Iterator<Item = &Owner> {
        self.slab.iter().map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: u32) -> Owner {
        Owner::Conn {
            conn: SlotKey::new(i, 1),
            op: ConnOp::Recv,
        }
    }

    #[test]
    fn completion_reaches_its_owner_once() {
        let mut t = OwnerTable::default();
        let tok = t.register(conn(3));
        let c = t.resolve(tok, 5, 0).expect("live entry");
        assert_eq!((c.owner, c.res), (conn(3), 5));
        // A duplicate completion for the same token is stale.
        assert!(t.resolve(tok, 5, 0).is_none());
        assert_eq!(t.stale, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn completion_for_a_freed_and_reused_slot_is_dropped() {
        let mut t = OwnerTable::default();
        let old = t.register(conn(1));
        t.release(old);
        let new = t.register(Owner::Engine { engine: 2, tag: 9 });
        // Same index, new generation.
        assert_eq!(old as u32, new as u32);
        assert_ne!(old, new);
        assert!(
            t.resolve(old, 0, 0).is_none(),
            "late CQE must not reach the new owner"
        );
        let c = t.resolve(new, 7, 0).expect("new owner's completion");
        assert_eq!(c.owner, Owner::Engine { engine: 2, tag: 9 });
    }

    #[test]
    fn entry_lives_while_more_completions_follow() {
        let mut t = OwnerTable::default();
        let tok = t.register(Owner::Conn {
            conn: SlotKey::new(0, 4),
            op: ConnOp::Send,
        });
        let more = CQE_F_MORE;
        let notif = CQE_F_NOTIF;
        let first = t.resolve(tok, 100, more).expect("send completion");
        assert!(first.more() && !first.notif());
        assert_eq!(t.len(), 1);
        let second = t.resolve(tok, 0, notif).expect("notification");
        assert!(second.notif() && !second.more());
        assert!(t.is_empty());
    }

    #[test]
    fn released_owners_get_no_late_completion() {
        let mut t = OwnerTable::default();
        let zc = |i| Owner::Conn {
            conn: SlotKey::new(i, 1),
            op: ConnOp::SendZc { id: 0 },
        };
        let gone = t.register(zc(1));
        let kept = t.register(zc(2));
        let n = t.release_where(
            |o| matches!(o, Owner::Conn { conn, .. } if *conn == SlotKey::new(1, 1)),
        );
        assert_eq!(n, 1);
        assert!(
            t.resolve(gone, 0, CQE_F_NOTIF).is_none(),
            "dropped as stale"
        );
        assert!(t.resolve(kept, 0, CQE_F_NOTIF).is_some());
    }

    #[test]
    fn buffer_ids_reach_the_owner() {
        let mut t = OwnerTable::default();
        let tok = t.register(Owner::Engine { engine: 0, tag: 1 });
        let flags = CQE_F_BUFFER | (17 << 16);
        assert_eq!(t.resolve(tok, 10, flags).unwrap().buffer_id(), Some(17));
    }
}
