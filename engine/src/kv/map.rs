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
/// fingerprints fill 8 cache lines.
pub const SMALL_KEYS_MAX: usize = 64;
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
    fingerprints: Vec<u64>,
    keys: Vec<Key>,
    values: Vec<Bytes>,
}

/// A hash of the whole key: two keys with different fingerprints differ, so
/// a lookup compares the bytes of only the keys whose fingerprint matches
/// (keys sharing a long prefix included).
fn fingerprint(key: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (key.len() as u64).wrapping_mul(MULTIPLIER);
    for chunk in key.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(MULTIPLIER);
    }
    h ^ (h >> 29)
}

impl Flat {
    fn position(&self, key: &[u8]) -> Option<usize> {
        let f = fingerprint(key);
        self.fingerprints.iter().enumerate().filter(|&(_, &g)| g == f).map(|(i, _)| i).find(|&i| self.keys[i][..] == *key)
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
        assert_eq!(m.hot_memory()[0].1, 16, "two fingerprints");
        for _ in 0..SMALL_KEYS_MAX {
            m.insert(&[7; 9], Bytes::new());
        }
        assert_eq!(m.hot_memory()[0].1, 24, "a key written again is not added");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Remove(u8),
        RangeFrom(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // 160 keys, so that maps cross both limits in either direction.
        prop_oneof![
            4 => (0u8..160, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u8..160).prop_map(Op::Remove),
            1 => (0u8..160).prop_map(Op::RangeFrom),
        ]
    }

    fn model_key(k: u8) -> Vec<u8> {
        // Some keys are prefixes of others; some are longer than a word.
        match k % 3 {
            0 => vec![k],
            1 => vec![k, 0],
            _ => format!("a-long-shared-prefix/{k}").into_bytes(),
        }
    }

    proptest! {
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 1..600)) {
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
