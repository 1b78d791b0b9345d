//! Partition choice, identical to the Java client's so a keyed workload puts
//! each key on the same partition as Kafka's own producer would.
//!
//! Keyed records: `toPositive(murmur2(key)) % partitions`, where `toPositive`
//! masks the sign bit (`h & 0x7fffffff`), not `abs` — `abs(i32::MIN)` would
//! overflow and a different partition would come out.
//!
//! Null keys: the sticky partitioner (KIP-480): every record goes to one
//! partition until the batch there closes, then a different partition is
//! picked at random, so batches fill up instead of being spread thin.

use crate::workload::dist::Rng;

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // The Java switch falls through: 3 → 2 → 1.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit.
pub fn to_positive(v: i32) -> i32 {
    v & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (to_positive(murmur2(key)) as u32) % partitions
}

/// Sticky partition choice for null keys, one current partition per topic.
#[derive(Clone, Debug)]
pub struct Sticky {
    current: Vec<u32>,
    partitions: Vec<u32>,
}

impl Sticky {
    pub fn new(partitions_per_topic: &[u32], rng: &mut Rng) -> Sticky {
        Sticky {
            current: partitions_per_topic
                .iter()
                .map(|&n| rng.below(u64::from(n)) as u32)
                .collect(),
            partitions: partitions_per_topic.to_vec(),
        }
    }

    pub fn partition(&self, topic: usize) -> u32 {
        self.current[topic]
    }

    /// The batch on `closed` was closed: move on to a different partition.
    pub fn on_batch_closed(&mut self, topic: usize, closed: u32, rng: &mut Rng) {
        let n = self.partitions[topic];
        if n <= 1 || self.current[topic] != closed {
            return;
        }
        let step = 1 + rng.below(u64::from(n - 1)) as u32;
        self.current[topic] = (closed + step) % n;
    }
}

/// Writes `n` in decimal into `buf`, returning the used tail: the key bytes
/// of key number `n` (`"42"`), with no allocation.
pub fn key_bytes(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_masks_the_sign_bit() {
        // murmur2("foobar") is negative; toPositive masks rather than negates:
        // -790332482 & 0x7fffffff = 1357151166, and 1357151166 % 50 = 16.
        assert_eq!(to_positive(-790_332_482), 1_357_151_166);
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        assert_eq!(to_positive(i32::MIN), 0);
    }

    #[test]
    fn sticky_moves_only_when_its_batch_closes() {
        let mut rng = Rng::new(3);
        let mut s = Sticky::new(&[8], &mut rng);
        let first = s.partition(0);
        s.on_batch_closed(0, (first + 1) % 8, &mut rng);
        assert_eq!(s.partition(0), first);
        s.on_batch_closed(0, first, &mut rng);
        assert_ne!(s.partition(0), first);
        assert!(s.partition(0) < 8);
    }

    #[test]
    fn key_bytes_are_decimal() {
        let mut b = [0u8; 20];
        assert_eq!(key_bytes(0, &mut b), b"0");
        assert_eq!(key_bytes(1234567, &mut b), b"1234567");
        assert_eq!(key_bytes(u64::MAX, &mut b), b"18446744073709551615");
    }
}
