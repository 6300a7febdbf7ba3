//! The process-wide table of normal sessions: TSIH allocation and session reinstatement
//! (RFC 7143 §6.3.5). Shared by all shards behind a mutex: logins are rare and never on the
//! data path, and the table must be global because an initiator's reconnect may land on
//! another shard than its old session.

use super::ids::{Isid, Tsih};
use std::collections::HashMap;
use std::sync::Mutex;

/// Where a registered session lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    /// The shard (event loop index) that owns the session.
    pub shard: usize,
    /// Its TSIH.
    pub tsih: Tsih,
    /// The initiator port name, `"<InitiatorName>,i,0x<isid>"` as given at login.
    pub initiator_port: String,
}

/// What [`SessionRegistry::register`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The new session's TSIH.
    pub tsih: Tsih,
    /// The session this one reinstates, which its shard must close: (shard, tid, tsih).
    pub replaced: Option<(usize, u32, Tsih)>,
}

/// Why a session could not be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Every non-zero TSIH is in use on this target.
    #[error("no free TSIH on target {0}")]
    Exhausted(u32),
}

#[derive(Default, Debug)]
struct Inner {
    /// (tid, lower-cased initiator port) → session.
    by_port: HashMap<(u32, String), SessionEntry>,
    /// (tid, tsih) → lower-cased initiator port.
    by_tsih: HashMap<(u32, Tsih), String>,
    /// The next TSIH to try.
    next_tsih: u16,
}

/// The session table. `Send + Sync`; every method takes the lock briefly.
#[derive(Default, Debug)]
pub struct SessionRegistry {
    inner: Mutex<Inner>,
}

/// The initiator port name of RFC 7143 §4.4.1 / SPC transport IDs: `"<name>,i,0x<isid>"`.
pub fn initiator_port(initiator_name: &str, isid: Isid) -> String {
    format!("{initiator_name},i,0x{}", isid.hex())
}

fn port_key(port: &str) -> String {
    // iSCSI names compare case-insensitively (RFC 3722 normalises them to lower case).
    port.to_ascii_lowercase()
}

impl SessionRegistry {
    /// An empty table.
    pub fn new() -> SessionRegistry {
        SessionRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the maps consistent (every update
        // is a few inserts), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session of `initiator_port` on target `tid`, owned by `shard`, with a
    /// fresh non-zero TSIH unique on that target. An existing session of the same initiator
    /// port is replaced (session reinstatement) and returned for its shard to close.
    pub fn register(
        &self,
        tid: u32,
        initiator_port: &str,
        shard: usize,
    ) -> Result<Registration, RegistryError> {
        let mut g = self.lock();
        let key = (tid, port_key(initiator_port));
        let replaced = g.by_port.remove(&key).map(|old| {
            g.by_tsih.remove(&(tid, old.tsih));
            (old.shard, tid, old.tsih)
        });
        let mut tsih = None;
        for _ in 0..=u16::MAX {
            g.next_tsih = g.next_tsih.wrapping_add(1);
            let t = Tsih(g.next_tsih);
            if t.0 != 0 && !g.by_tsih.contains_key(&(tid, t)) {
                tsih = Some(t);
                break;
            }
        }
        let Some(tsih) = tsih else {
            return Err(RegistryError::Exhausted(tid));
        };
        g.by_tsih.insert((tid, tsih), key.1.clone());
        g.by_port.insert(
            key,
            SessionEntry {
                shard,
                tsih,
                initiator_port: initiator_port.to_string(),
            },
        );
        Ok(Registration { tsih, replaced })
    }

    /// The session with `tsih` on `tid`, if any.
    pub fn lookup(&self, tid: u32, tsih: Tsih) -> Option<SessionEntry> {
        let g = self.lock();
        let port = g.by_tsih.get(&(tid, tsih))?;
        g.by_port.get(&(tid, port.clone())).cloned()
    }

    /// Removes a session that ended. A session already replaced by reinstatement is not in
    /// the table any more, so its late unregister cannot remove its successor.
    pub fn unregister(&self, tid: u32, tsih: Tsih) {
        let mut g = self.lock();
        if let Some(port) = g.by_tsih.remove(&(tid, tsih)) {
            g.by_port.remove(&(tid, port));
        }
    }

    /// Removes every session owned by `shard`, whose thread died: nobody else would ever
    /// unregister them, so their TSIHs would stay taken and a later login naming one would
    /// be told the session still exists. Returns (tid, entry) for each.
    pub fn drop_shard(&self, shard: usize) -> Vec<(u32, SessionEntry)> {
        let mut g = self.lock();
        let keys: Vec<(u32, String)> = g
            .by_port
            .iter()
            .filter(|(_, e)| e.shard == shard)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(e) = g.by_port.remove(&key) {
                g.by_tsih.remove(&(key.0, e.tsih));
                gone.push((key.0, e));
            }
        }
        gone
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.lock().by_port.len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISID: Isid = Isid([0x40, 0, 1, 0x37, 0, 0]);

    #[test]
    fn port_name_format() {
        assert_eq!(initiator_port("iqn.a", ISID), "iqn.a,i,0x400001370000");
    }

    #[test]
    fn allocates_unique_nonzero_tsihs() {
        let r = SessionRegistry::new();
        let a = r.register(1, "iqn.a,i,0x1", 0).unwrap();
        let b = r.register(1, "iqn.b,i,0x1", 1).unwrap();
        assert_ne!(a.tsih, b.tsih);
        assert_ne!(a.tsih.0, 0);
        assert_eq!(r.lookup(1, b.tsih).unwrap().shard, 1);
        assert_eq!(r.lookup(2, b.tsih), None);
        r.unregister(1, a.tsih);
        assert_eq!(r.lookup(1, a.tsih), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn same_initiator_port_reinstates() {
        let r = SessionRegistry::new();
        let a = r.register(1, "iqn.a,i,0x1", 3).unwrap();
        assert_eq!(a.replaced, None);
        // Other target, other ISID: separate sessions.
        assert_eq!(r.register(2, "iqn.a,i,0x1", 0).unwrap().replaced, None);
        assert_eq!(r.register(1, "iqn.a,i,0x2", 0).unwrap().replaced, None);
        let b = r.register(1, "IQN.A,i,0x1", 0).unwrap();
        assert_eq!(b.replaced, Some((3, 1, a.tsih)));
        // The old session's late unregister leaves the new one alone.
        r.unregister(1, a.tsih);
        assert_eq!(r.lookup(1, b.tsih).unwrap().shard, 0);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_dead_shards_sessions_are_dropped_and_no_other() {
        let r = SessionRegistry::new();
        let a = r.register(1, "iqn.a,i,0x1", 0).unwrap();
        let b = r.register(1, "iqn.b,i,0x1", 1).unwrap();
        let c = r.register(2, "iqn.c,i,0x1", 1).unwrap();
        let mut gone: Vec<_> = r
            .drop_shard(1)
            .into_iter()
            .map(|(tid, e)| (tid, e.tsih))
            .collect();
        gone.sort_by_key(|(tid, _)| *tid);
        assert_eq!(gone, vec![(1, b.tsih), (2, c.tsih)]);
        assert_eq!(r.lookup(1, b.tsih), None);
        assert_eq!(r.lookup(2, c.tsih), None);
        assert_eq!(
            r.lookup(1, a.tsih).unwrap().shard,
            0,
            "another shard's stays"
        );
        // The initiator port logs in again as a new session, not a reinstatement.
        assert_eq!(r.register(1, "iqn.b,i,0x1", 0).unwrap().replaced, None);
        assert!(r.drop_shard(1).is_empty());
    }

    #[test]
    fn tsih_wraps_past_zero_and_skips_used() {
        let r = SessionRegistry::new();
        r.lock().next_tsih = u16::MAX - 1;
        let a = r.register(1, "a", 0).unwrap();
        assert_eq!(a.tsih, Tsih(u16::MAX));
        let b = r.register(1, "b", 0).unwrap();
        assert_eq!(b.tsih, Tsih(1));
        r.lock().next_tsih = u16::MAX - 1;
        let c = r.register(1, "c", 0).unwrap();
        assert_eq!(c.tsih, Tsih(2));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SessionRegistry>();
    }
}
