//! Per-group state of one core, by group id (the node's groups, the WAL
//! index's logs and the tails its batches are checked against): an
//! open-addressing table whose slot for an id is found by arithmetic
//! alone, so that loops over many groups can load the slots of the groups
//! ahead and then their values while they work on the current one
//! (`prefetch_slot`, `prefetch_value`).
//!
//! With thousands of groups neither the table nor the groups stay in the
//! cache between two visits; a lookup in a general hash map costs two
//! dependent misses (control bytes, then the bucket) before the group's own,
//! and none of them can be started early. Here a slot holds the id and the
//! boxed value side by side (16 bytes), ids hash by one multiplication
//! (Fibonacci hashing spreads consecutive ids evenly), collisions probe
//! linearly and the table stays at most three quarters full (iterating it
//! reads every slot).

use std::mem::size_of;

struct Slot<V> {
    id: u64,
    value: Option<Box<V>>,
}

pub struct GroupTable<V> {
    slots: Box<[Slot<V>]>,
    /// log2 of the slot count.
    bits: u32,
    len: usize,
}

/// Slots of a new table.
const SLOTS_MIN: usize = 16;

impl<V> Default for GroupTable<V> {
    fn default() -> Self {
        GroupTable::with_slots(SLOTS_MIN)
    }
}

impl<V> GroupTable<V> {
    fn with_slots(count: usize) -> GroupTable<V> {
        debug_assert!(count.is_power_of_two());
        let slots = (0..count).map(|_| Slot { id: 0, value: None }).collect();
        GroupTable { slots, bits: count.trailing_zeros(), len: 0 }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot an id's probe starts at.
    fn home(&self, id: u64) -> usize {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// The slot holding `id`, if any.
    fn find(&self, id: u64) -> Option<usize> {
        let mut i = self.home(id);
        loop {
            let slot = &self.slots[i];
            slot.value.as_ref()?;
            if slot.id == id {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains_key(&self, id: u64) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: u64) -> Option<&V> {
        self.find(id).and_then(|i| self.slots[i].value.as_deref())
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        self.find(id).and_then(|i| self.slots[i].value.as_deref_mut())
    }

    /// Inserts `value` under `id`; returns the value it replaces.
    pub fn insert(&mut self, id: u64, value: Box<V>) -> Option<Box<V>> {
        if let Some(i) = self.find(id) {
            return self.slots[i].value.replace(value);
        }
        self.insert_absent(id, value);
        None
    }

    /// Puts `value` under `id`, which the table does not hold; returns the
    /// slot it took.
    fn insert_absent(&mut self, id: u64, value: Box<V>) -> usize {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mut i = self.home(id);
        while self.slots[i].value.is_some() {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = Slot { id, value: Some(value) };
        self.len += 1;
        i
    }

    /// Removes `id`; the slots after it in its probe run shift back, so that
    /// every lookup still stops at the first empty slot.
    pub fn remove(&mut self, id: u64) -> Option<Box<V>> {
        let mut hole = self.find(id)?;
        let removed = self.slots[hole].value.take();
        self.len -= 1;
        let mask = self.mask();
        let mut i = (hole + 1) & mask;
        while self.slots[i].value.is_some() {
            let home = self.home(self.slots[i].id);
            // The entry at `i` may fill the hole if its home is not within
            // (hole, i] going round the table.
            let distance_to_i = i.wrapping_sub(home) & mask;
            let distance_to_hole = i.wrapping_sub(hole) & mask;
            if distance_to_i >= distance_to_hole {
                self.slots.swap(hole, i);
                hole = i;
            }
            i = (i + 1) & mask;
        }
        removed
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, GroupTable::with_slots(self.slots.len() * 2));
        for slot in old.slots.into_vec() {
            if let Some(value) = slot.value {
                self.insert_absent(slot.id, value);
            }
        }
    }

    /// Every (id, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.slots.iter().filter_map(|s| s.value.as_deref().map(|v| (s.id, v)))
    }

    /// The value of `id`, inserted as `V::default()` if absent.
    pub fn get_or_default(&mut self, id: u64) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(id) {
            Some(i) => i,
            None => self.insert_absent(id, Box::default()),
        };
        self.slots[i].value.as_deref_mut().expect("found slots hold a value")
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().filter_map(|s| s.value.as_deref_mut())
    }

    /// Starts loading the slot where a lookup of `id` begins; it needs no
    /// memory of the table to find it.
    #[inline]
    pub fn prefetch_slot(&self, id: u64) {
        prefetch_line(&self.slots[self.home(id)]);
    }

    /// Starts loading the value of `id` (all its cache lines), if present.
    /// Reads the slot: best issued once `prefetch_slot` had time to load it.
    #[inline]
    pub fn prefetch_value(&self, id: u64) {
        if let Some(v) = self.get(id) {
            prefetch_lines(v);
        }
    }
}

/// A value whose first use also touches memory it points to.
pub trait Prefetch {
    /// What a loop does with each value: which parts it touches depends on
    /// it, and loading others would only take memory bandwidth from them.
    type Visit: Copy;
    /// Starts loading the memory `visit` touches; called once the value
    /// itself is cached.
    fn prefetch_parts(&self, visit: Self::Visit);
}

impl<V: Prefetch> GroupTable<V> {
    /// Before the item at hand of a sequence of ids (`ahead(k)`: the id `k`
    /// places after it), in three stages: starts loading the slot of the
    /// item `SLOT_AHEAD` places on, the value of the one `VALUE_AHEAD` places
    /// on (its slot requested earlier), and the parts of the one
    /// `PARTS_AHEAD` places on (its value requested earlier). Called before
    /// every item in order, after `prefetch_start`, each item's memory
    /// arrives before it is used.
    #[inline]
    pub fn prefetch_ahead(&self, visit: V::Visit, ahead: impl Fn(usize) -> Option<u64>) {
        if let Some(id) = ahead(SLOT_AHEAD) {
            self.prefetch_slot(id);
        }
        if let Some(id) = ahead(VALUE_AHEAD) {
            self.prefetch_value(id);
        }
        if let Some(v) = ahead(PARTS_AHEAD).and_then(|id| self.get(id)) {
            v.prefetch_parts(visit);
        }
    }

    /// Before the first item of a sequence (`first(k)`: the id of item `k`):
    /// the stages of the items before it, as far as they go.
    pub fn prefetch_start(&self, visit: V::Visit, first: impl Fn(usize) -> Option<u64>) {
        (0..SLOT_AHEAD).filter_map(&first).for_each(|id| self.prefetch_slot(id));
        (0..VALUE_AHEAD).filter_map(&first).for_each(|id| self.prefetch_value(id));
        (0..PARTS_AHEAD).filter_map(&first).filter_map(|id| self.get(id)).for_each(|v| v.prefetch_parts(visit));
    }
}

/// How many items ahead a sequence's slots are requested.
const SLOT_AHEAD: usize = 16;
/// How many items ahead a sequence's values are requested (their slots were
/// requested `SLOT_AHEAD - VALUE_AHEAD` items before).
const VALUE_AHEAD: usize = 8;
/// How many items ahead the memory a value points to is requested.
const PARTS_AHEAD: usize = 3;

/// Starts loading the cache line that holds `at`.
#[inline]
fn prefetch_line<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint: it never faults and changes no
        // memory, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Starts loading the cache lines of the `bytes` bytes at `address`, at
/// most `lines_max` of them from the first (none if empty).
#[inline]
pub fn prefetch_range(address: usize, bytes: usize, lines_max: usize) {
    if bytes == 0 {
        return;
    }
    let first = address & !63;
    let lines = ((address + bytes - 1) & !63).saturating_sub(first) / 64 + 1;
    for line in 0..lines.min(lines_max) {
        prefetch_line((first + line * 64) as *const u8);
    }
}

/// Lines of one part of a value that its `prefetch_parts` loads, unless
/// the part says otherwise.
pub const PARTS_LINES_MAX: usize = 4;

/// Starts loading every cache line of `value`.
#[inline]
fn prefetch_lines<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    for offset in (0..size_of::<T>()).step_by(64) {
        prefetch_line(start.wrapping_add(offset));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn consecutive_ids_are_found_after_growth() {
        let mut t = GroupTable::default();
        for id in 1..=10_000u64 {
            assert!(t.insert(id, Box::new(id * 3)).is_none());
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.slots.len() * 3 >= 10_000 * 4, "at most three quarters full");
        for id in 1..=10_000u64 {
            assert_eq!(t.get(id), Some(&(id * 3)));
        }
        assert!(t.get(0).is_none() && t.get(10_001).is_none());
        assert_eq!(t.values().count(), 10_000);
    }

    #[test]
    fn replacing_keeps_one_entry() {
        let mut t = GroupTable::default();
        assert!(t.insert(7, Box::new("a")).is_none());
        assert_eq!(t.insert(7, Box::new("b")).as_deref(), Some(&"a"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(7), Some(&"b"));
    }

    #[test]
    fn any_id_is_a_key() {
        let mut t = GroupTable::default();
        for id in [3u64, 99, 1 << 40, u64::MAX, 0] {
            t.insert(id, Box::new(id));
        }
        for id in [3u64, 99, 1 << 40, u64::MAX, 0] {
            assert_eq!(t.get(id), Some(&id));
        }
        assert_eq!(t.values().count(), 5);
    }

    proptest! {
        /// Any sequence of inserts and removes (ids from a small range, so
        /// that probe runs collide and wrap) leaves the table agreeing with
        /// a BTreeMap.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u32>()), 0..400)) {
            let mut t = GroupTable::default();
            let mut m = BTreeMap::new();
            for (insert, id, v) in ops {
                // Ids spread over the whole range too: their homes differ in the high bits.
                let id = id.wrapping_mul(0x0100_0000_0000_0001);
                if insert {
                    prop_assert_eq!(t.insert(id, Box::new(v)).map(|b| *b), m.insert(id, v));
                } else {
                    prop_assert_eq!(t.remove(id).map(|b| *b), m.remove(&id));
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for (id, v) in &m {
                prop_assert_eq!(t.get(*id), Some(v));
            }
            let mut seen: Vec<u32> = t.values().copied().collect();
            let mut want: Vec<u32> = m.values().copied().collect();
            seen.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(seen, want);
        }
    }
}
