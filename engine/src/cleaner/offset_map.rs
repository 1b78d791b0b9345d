//! The offset map: key hash → offset of the latest record with that key
//! in the dirty part of a log.
//!
//! Keys are hashed to 128 bits (the first half of their SHA-256), so the
//! map holds a fixed 24 bytes of payload per key however long the keys
//! are; two keys sharing a hash would make the older record of one look
//! superseded by the other, which at 2^-128 per pair is far below the
//! chance of an undetected disk error. The map's capacity is its share of
//! `log.cleaner.dedupe.buffer.size` divided by [`ENTRY_BYTES`], at most
//! [`LOAD_PERCENT`] full, as Kafka's `SkimpyOffsetMap` fills to 90 %. A
//! full map refuses new keys: the cleaning then stops where the map
//! reached and the rest of the dirty part waits for the next pass.

use sha2::{Digest, Sha256};
use sluice_protocol::Offset;
use std::collections::HashMap;

/// Bytes a key takes in the map's budget: 16 of hash, 8 of offset.
pub const ENTRY_BYTES: u64 = 24;
/// How full the map may get, in percent of its slots.
pub const LOAD_PERCENT: u64 = 90;

/// A key's 128-bit hash.
pub type KeyHash = u128;

/// Hashes a key for the map.
pub fn key_hash(key: &[u8]) -> KeyHash {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Latest offset per key hash, bounded.
#[derive(Debug)]
pub struct OffsetMap {
    latest: HashMap<KeyHash, i64>,
    capacity: usize,
    /// The largest offset put, if any.
    last_offset: Option<Offset>,
}

impl OffsetMap {
    /// A map within `memory_bytes` of budget.
    pub fn with_memory(memory_bytes: u64) -> OffsetMap {
        let capacity = (memory_bytes / ENTRY_BYTES * LOAD_PERCENT / 100).max(1) as usize;
        OffsetMap {
            latest: HashMap::new(),
            capacity,
            last_offset: None,
        }
    }

    /// Records `offset` as the latest of `key`'s records; offsets come in
    /// rising order. False (and nothing recorded) when the key is new and
    /// the map is full.
    pub fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        assert!(
            self.last_offset.is_none_or(|l| l < offset),
            "offsets rise: {offset} after {:?}",
            self.last_offset
        );
        let hash = key_hash(key);
        if self.latest.len() >= self.capacity && !self.latest.contains_key(&hash) {
            return false;
        }
        self.latest.insert(hash, offset.0);
        self.last_offset = Some(offset);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        self.latest.get(&key_hash(key)).map(|o| Offset(*o))
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Whether another new key would be refused.
    pub fn is_full(&self) -> bool {
        self.latest.len() >= self.capacity
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest offset put.
    pub fn last_offset(&self) -> Option<Offset> {
        self.last_offset
    }

    /// Empties the map for the next log.
    pub fn clear(&mut self) {
        self.latest.clear();
        self.last_offset = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_offset_of_each_key_wins() {
        let mut m = OffsetMap::with_memory(1 << 20);
        assert!(m.put(b"a", Offset(1)));
        assert!(m.put(b"b", Offset(2)));
        assert!(m.put(b"a", Offset(5)));
        assert_eq!(m.get(b"a"), Some(Offset(5)));
        assert_eq!(m.get(b"b"), Some(Offset(2)));
        assert_eq!(m.get(b"c"), None);
        assert_eq!((m.len(), m.last_offset()), (2, Some(Offset(5))));
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get(b"a"), None);
    }

    #[test]
    fn a_full_map_refuses_new_keys_but_updates_known_ones() {
        // 10 entries of budget, 90 % of which may fill: 9 keys.
        let mut m = OffsetMap::with_memory(10 * ENTRY_BYTES);
        assert_eq!(m.capacity(), 9);
        for i in 0..9u8 {
            assert!(m.put(&[i], Offset(i64::from(i))));
        }
        assert!(m.is_full());
        assert!(!m.put(b"new", Offset(20)));
        assert_eq!(
            m.last_offset(),
            Some(Offset(8)),
            "a refusal records nothing"
        );
        assert!(m.put(&[3], Offset(21)));
        assert_eq!(m.get(&[3]), Some(Offset(21)));
    }

    #[test]
    #[should_panic(expected = "offsets rise")]
    fn offsets_must_rise() {
        let mut m = OffsetMap::with_memory(1 << 20);
        m.put(b"a", Offset(3));
        m.put(b"b", Offset(3));
    }
}
