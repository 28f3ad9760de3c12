//! The KV store's map from keys to values.
//!
//! With thousands of groups per core, a group's map is cold in the cache when
//! a write reaches it, and a B-tree's first touch is a chain of misses: the
//! root's length, its keys, then the child's. Most groups of such a node hold
//! few keys, so a map of up to `SMALL_KEYS_MAX` keys is a flat one instead: a
//! fingerprint per key in one short vector, which the node prefetches with
//! the rest of the group (`hot_memory`) and which a lookup scans without a
//! miss. Beyond that the map is a `BTreeMap`, and it becomes flat again once
//! it shrinks to `SMALL_AGAIN_KEYS`.
//!
//! A flat map keeps its keys in arrival order; iteration (scans, snapshots)
//! sorts them first, which for so few keys costs little.

use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

use bytes::Bytes;
use smallvec::SmallVec;

/// A key as the map holds it: keys up to 24 bytes sit inline, so comparing
/// one loads no separate allocation.
pub type Key = SmallVec<[u8; 24]>;
const _: () = assert!(std::mem::size_of::<Key>() == std::mem::size_of::<Bytes>());

/// Keys a flat map holds; inserting one more turns it into a B-tree. Their
/// fingerprints (16 bits each) fill 8 cache lines.
pub const SMALL_KEYS_MAX: usize = 256;
/// The bytes of a full flat map's fingerprints.
pub const FINGERPRINTS_BYTES_MAX: usize = SMALL_KEYS_MAX * std::mem::size_of::<Fingerprint>();
/// A B-tree that shrinks to this many keys becomes flat again (well below
/// `SMALL_KEYS_MAX`, so that a map at the boundary does not switch back and
/// forth).
pub const SMALL_AGAIN_KEYS: usize = SMALL_KEYS_MAX / 4;

#[derive(Debug, Default)]
pub struct KvMap {
    repr: Repr,
}

#[derive(Debug)]
enum Repr {
    Flat(Flat),
    Tree(BTreeMap<Key, Bytes>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Flat(Flat::default())
    }
}

/// Parallel vectors in arrival order; `fingerprints[i]` is
/// `fingerprint(&keys[i])`.
#[derive(Debug, Default)]
struct Flat {
    fingerprints: Vec<Fingerprint>,
    keys: Vec<Key>,
    values: Vec<Bytes>,
}

/// A hash of the whole key: two keys with different fingerprints differ, so
/// a lookup compares the bytes of only the keys whose fingerprint matches
/// (keys sharing a long prefix included). 16 bits: among 256 keys a lookup
/// compares one key more than it needs about once in 256.
type Fingerprint = u16;

/// Fingerprints a lookup compares at once (one 256-bit vector of them).
const FINGERPRINTS_PER_STEP: usize = 16;

fn fingerprint(key: &[u8]) -> Fingerprint {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (key.len() as u64).wrapping_mul(MULTIPLIER);
    for chunk in key.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(MULTIPLIER);
    }
    h ^= h >> 29;
    (h ^ (h >> 32) ^ (h >> 16)) as Fingerprint
}

impl Flat {
    fn position(&self, key: &[u8]) -> Option<usize> {
        let f = fingerprint(key);
        let matches = |i: usize| self.keys[i][..] == *key;
        let steps = self.fingerprints.chunks_exact(FINGERPRINTS_PER_STEP);
        let rest_start = self.fingerprints.len() - steps.remainder().len();
        for (step, chunk) in steps.enumerate() {
            // A mask of the equal fingerprints, in a form the compiler turns
            // into one vector compare.
            let mut mask = chunk.iter().enumerate().fold(0u32, |m, (j, &g)| m | (u32::from(g == f) << j));
            while mask != 0 {
                let i = step * FINGERPRINTS_PER_STEP + mask.trailing_zeros() as usize;
                if matches(i) {
                    return Some(i);
                }
                mask &= mask - 1;
            }
        }
        (rest_start..self.fingerprints.len()).find(|&i| self.fingerprints[i] == f && matches(i))
    }

    /// Positions of the keys at or after `start`, in key order.
    fn order_from(&self, start: &[u8]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.keys.len()).filter(|&i| self.keys[i][..] >= *start).collect();
        order.sort_unstable_by(|&a, &b| self.keys[a].cmp(&self.keys[b]));
        order
    }

    fn into_tree(self) -> BTreeMap<Key, Bytes> {
        self.keys.into_iter().zip(self.values).collect()
    }

    fn from_tree(tree: BTreeMap<Key, Bytes>) -> Flat {
        let mut flat = Flat::default();
        for (k, v) in tree {
            flat.fingerprints.push(fingerprint(&k));
            flat.keys.push(k);
            flat.values.push(v);
        }
        flat
    }
}

impl KvMap {
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Flat(f) => f.keys.len(),
            Repr::Tree(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        match &self.repr {
            Repr::Flat(f) => f.position(key).map(|i| &f.values[i]),
            Repr::Tree(t) => t.get(key),
        }
    }

    pub fn insert(&mut self, key: &[u8], value: Bytes) {
        match &mut self.repr {
            Repr::Flat(f) => {
                if let Some(i) = f.position(key) {
                    f.values[i] = value;
                    return;
                }
                if f.keys.len() < SMALL_KEYS_MAX {
                    f.fingerprints.push(fingerprint(key));
                    f.keys.push(Key::from_slice(key));
                    f.values.push(value);
                    return;
                }
                let mut tree = std::mem::take(f).into_tree();
                tree.insert(Key::from_slice(key), value);
                self.repr = Repr::Tree(tree);
            }
            Repr::Tree(t) => {
                t.insert(Key::from_slice(key), value);
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Bytes> {
        match &mut self.repr {
            Repr::Flat(f) => {
                let i = f.position(key)?;
                f.fingerprints.swap_remove(i);
                f.keys.swap_remove(i);
                Some(f.values.swap_remove(i))
            }
            Repr::Tree(t) => {
                let removed = t.remove(key);
                if t.len() <= SMALL_AGAIN_KEYS {
                    self.repr = Repr::Flat(Flat::from_tree(std::mem::take(t)));
                }
                removed
            }
        }
    }

    /// The pairs whose key is at or after `start`, in key order.
    pub fn range_from<'a>(&'a self, start: &[u8]) -> Iter<'a> {
        match &self.repr {
            Repr::Flat(f) => Iter(IterRepr::Flat { flat: f, order: f.order_from(start).into_iter() }),
            Repr::Tree(t) => Iter(IterRepr::Tree(t.range::<[u8], _>((Bound::Included(start), Bound::Unbounded)))),
        }
    }

    /// Every pair, in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_from(&[])
    }

    /// The memory a write reads or writes first, as (address, bytes) pairs:
    /// a flat map's fingerprints and the slots a new key and value would
    /// take (nothing for a B-tree, whose root the standard library does not
    /// show). Finding it reads only the map itself.
    pub fn hot_memory(&self) -> [(usize, usize); 3] {
        fn next_slot<T>(v: &Vec<T>) -> (usize, usize) {
            if v.len() < v.capacity() {
                (v.as_ptr().wrapping_add(v.len()) as usize, std::mem::size_of::<T>())
            } else {
                (0, 0)
            }
        }
        match &self.repr {
            Repr::Flat(f) => [(f.fingerprints.as_ptr() as usize, std::mem::size_of_val(f.fingerprints.as_slice())), next_slot(&f.keys), next_slot(&f.values)],
            Repr::Tree(_) => [(0, 0); 3],
        }
    }

    #[cfg(test)]
    fn is_flat(&self) -> bool {
        matches!(self.repr, Repr::Flat(_))
    }
}

/// The pairs of a `KvMap` in key order.
pub struct Iter<'a>(IterRepr<'a>);

enum IterRepr<'a> {
    Flat { flat: &'a Flat, order: std::vec::IntoIter<usize> },
    Tree(btree_map::Range<'a, Key, Bytes>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Flat { flat, order } => order.next().map(|i| (&flat.keys[i][..], &flat.values[i])),
            IterRepr::Tree(range) => range.next().map(|(k, v)| (&k[..], v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(n: u32) -> Vec<u8> {
        // Keys of different lengths with long shared prefixes.
        let mut k = b"user/0000".to_vec();
        k.extend_from_slice(n.to_string().as_bytes());
        k
    }

    #[test]
    fn grows_into_a_tree_and_shrinks_back_keeping_every_pair() {
        let mut m = KvMap::default();
        for n in 0..=SMALL_KEYS_MAX as u32 {
            m.insert(&key(n), Bytes::from(n.to_le_bytes().to_vec()));
        }
        assert!(!m.is_flat(), "one key past the flat limit makes a tree");
        assert_eq!(m.len(), SMALL_KEYS_MAX + 1);
        for n in 0..=SMALL_KEYS_MAX as u32 {
            assert_eq!(m.get(&key(n)).map(|v| v.to_vec()), Some(n.to_le_bytes().to_vec()));
        }
        for n in 0..=SMALL_KEYS_MAX as u32 - SMALL_AGAIN_KEYS as u32 {
            assert!(m.remove(&key(n)).is_some());
        }
        assert!(m.is_flat(), "a tree down to {SMALL_AGAIN_KEYS} keys is flat again");
        assert_eq!(m.len(), SMALL_AGAIN_KEYS);
        let keys: Vec<Vec<u8>> = m.iter().map(|(k, _)| k.to_vec()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "a flat map iterates in key order");
    }

    #[test]
    fn a_flat_map_names_its_fingerprints_as_hot_memory() {
        let mut m = KvMap::default();
        assert!(m.hot_memory().iter().all(|&(_, bytes)| bytes == 0));
        m.insert(b"a", Bytes::from_static(b"1"));
        m.insert(b"b", Bytes::from_static(b"2"));
        assert_eq!(m.hot_memory()[0].1, 4, "two fingerprints");
        for _ in 0..SMALL_KEYS_MAX {
            m.insert(&[7; 9], Bytes::new());
        }
        assert_eq!(m.hot_memory()[0].1, 6, "a key written again is not added");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Remove(u16),
        RangeFrom(u16),
        /// Inserts keys `k .. k + 120`, so that maps cross the flat limit.
        Fill(u16),
        /// Removes keys `k .. k + 120`, so that trees become flat again.
        Drain(u16),
    }

    const MODEL_KEYS: u16 = 420;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..MODEL_KEYS, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            6 => (0..MODEL_KEYS).prop_map(Op::Remove),
            2 => (0..MODEL_KEYS).prop_map(Op::RangeFrom),
            1 => (0..MODEL_KEYS).prop_map(Op::Fill),
            1 => (0..MODEL_KEYS).prop_map(Op::Drain),
        ]
    }

    fn model_key(k: u16) -> Vec<u8> {
        // Some keys are prefixes of others; some are longer than a word.
        match k % 3 {
            0 => k.to_be_bytes().to_vec(),
            1 => [&k.to_be_bytes()[..], &[0]].concat(),
            _ => format!("a-long-shared-prefix/{k}").into_bytes(),
        }
    }

    proptest! {
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut m = KvMap::default();
            let mut model: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        m.insert(&model_key(k), Bytes::from(vec![v]));
                        model.insert(model_key(k), Bytes::from(vec![v]));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(m.remove(&model_key(k)), model.remove(&model_key(k)));
                    }
                    Op::Fill(k) => {
                        for k in (k..MODEL_KEYS).take(120) {
                            m.insert(&model_key(k), Bytes::from(vec![k as u8]));
                            model.insert(model_key(k), Bytes::from(vec![k as u8]));
                        }
                    }
                    Op::Drain(k) => {
                        for k in (k..MODEL_KEYS).take(120) {
                            prop_assert_eq!(m.remove(&model_key(k)), model.remove(&model_key(k)));
                        }
                    }
                    Op::RangeFrom(k) => {
                        let got: Vec<(Vec<u8>, Bytes)> = m.range_from(&model_key(k)).map(|(k, v)| (k.to_vec(), v.clone())).collect();
                        let want: Vec<(Vec<u8>, Bytes)> = model.range(model_key(k)..).map(|(k, v)| (k.clone(), v.clone())).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                prop_assert!(m.len() <= SMALL_KEYS_MAX || !m.is_flat());
            }
            for (k, v) in &model {
                prop_assert_eq!(m.get(k), Some(v));
            }
        }
    }
}
