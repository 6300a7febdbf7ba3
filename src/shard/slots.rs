//! Slot tables with generations: the shard's connections, its backend operations and the
//! entries of its token table live in slabs whose keys carry the slot's generation, so a key
//! kept past its entry's life (a late completion, a callback result, a timer for a closed
//! connection) finds nothing instead of the slot's next occupant. Freed slots are reused
//! (no allocation once warm).

/// A slot index with the generation it had when the key was made.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub index: u32,
    pub generation: u32,
}

impl SlotKey {
    /// A key from its parts.
    pub const fn new(index: u32, generation: u32) -> SlotKey {
        SlotKey { index, generation }
    }

    /// Packed into 64 bits (`generation << 32 | index`), e.g. for io_uring `user_data`.
    pub fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks [`SlotKey::token`].
    pub fn from_token(t: u64) -> SlotKey {
        SlotKey {
            index: t as u32,
            generation: (t >> 32) as u32,
        }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab of `T` addressed by [`SlotKey`].
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; its key names this slot at a generation no earlier key had.
    pub fn insert(&mut self, value: T) -> SlotKey {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.generation = s.generation.wrapping_add(1);
            s.value = Some(value);
            return SlotKey::new(i, s.generation);
        }
        let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 slots");
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        SlotKey::new(i, 0)
    }

    /// The entry, if `key` is still its key.
    pub fn get(&self, key: SlotKey) -> Option<&T> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .value
            .as_ref()
    }

    /// The entry, mutably, if `key` is still its key.
    pub fn get_mut(&mut self, key: SlotKey) -> Option<&mut T> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .value
            .as_mut()
    }

    /// Takes the entry out; its slot is free for reuse under a new generation.
    pub fn remove(&mut self, key: SlotKey) -> Option<T> {
        let s = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?;
        let v = s.value.take()?;
        self.free.push(key.index);
        self.len -= 1;
        Some(v)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live entry with its key.
    pub fn iter(&self) -> impl Iterator<Item = (SlotKey, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value
                .as_ref()
                .map(|v| (SlotKey::new(i as u32, s.generation), v))
        })
    }

    /// Every live entry's key (a snapshot, so entries can be changed while walking it).
    pub fn keys(&self) -> Vec<SlotKey> {
        self.iter().map(|(k, _)| k).collect()
    }

    #[cfg(test)]
    fn set_generation(&mut self, index: u32, generation: u32) {
        self.slots[index as usize].generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_does_not_answer_old_keys() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a.index, b.index);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn generation_wraps_without_aliasing_the_previous_key() {
        let mut s = Slab::default();
        let a = s.insert(1);
        s.remove(a);
        s.set_generation(a.index, u32::MAX);
        let b = s.insert(2);
        assert_eq!(b.generation, 0, "generation wraps");
        let old = SlotKey::new(a.index, u32::MAX);
        assert_eq!(s.get(old), None);
        assert_eq!(SlotKey::from_token(b.token()), b);
    }
}
