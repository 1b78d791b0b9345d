//! Key and message-size distributions, sampled on the per-message path.
//!
//! Each load-generator thread owns its samplers and its [`Rng`]; nothing here
//! is shared or locked. Sampling is O(1) except Zipf and weighted sizes, which
//! binary-search a precomputed CDF (20 steps for a million keys).

use super::raw::{KeyDistributionSpec, SizeDistributionSpec};

/// xoshiro256** seeded through SplitMix64: fast, good enough for load shapes.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0), by multiply-shift (no modulo bias worth noting).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Upper bound on a key space, so a Zipf CDF stays below 8 MiB.
pub const KEYS_MAX: u32 = 1_000_000;

/// How message keys are chosen.
#[derive(Clone, Debug)]
pub enum KeySampler {
    /// Null keys (OMB's NO_KEY): the sticky partitioner picks partitions.
    None,
    RoundRobin {
        keys: u32,
        next: u32,
    },
    Uniform {
        keys: u32,
    },
    /// OMB's RANDOM_NANO: a random key per message from a large space.
    RandomNano,
    Zipf {
        cdf: Vec<f64>,
    },
}

impl KeySampler {
    pub fn from_spec(spec: &KeyDistributionSpec) -> KeySampler {
        match *spec {
            KeyDistributionSpec::None => KeySampler::None,
            KeyDistributionSpec::RoundRobin { keys } => KeySampler::RoundRobin { keys, next: 0 },
            KeyDistributionSpec::Uniform { keys } => KeySampler::Uniform { keys },
            KeyDistributionSpec::Zipf { keys, exponent } => KeySampler::Zipf {
                cdf: zipf_cdf(keys, exponent),
            },
        }
    }

    /// The next key number, or `None` for a null key.
    pub fn next(&mut self, rng: &mut Rng) -> Option<u64> {
        match self {
            KeySampler::None => None,
            KeySampler::RoundRobin { keys, next } => {
                let k = *next;
                *next = (*next + 1) % *keys;
                Some(u64::from(k))
            }
            KeySampler::Uniform { keys } => Some(rng.below(u64::from(*keys))),
            KeySampler::RandomNano => Some(rng.next_u64()),
            KeySampler::Zipf { cdf } => {
                let u = rng.next_f64();
                Some(cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64)
            }
        }
    }
}

/// Cumulative probabilities of ranks 1..=keys under Zipf(exponent).
pub fn zipf_cdf(keys: u32, exponent: f64) -> Vec<f64> {
    assert!(keys > 0 && keys <= KEYS_MAX);
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut sum = 0.0;
    for k in 1..=keys {
        sum += 1.0 / f64::from(k).powf(exponent);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

/// How message sizes are chosen.
#[derive(Clone, Debug)]
pub enum SizeSampler {
    Fixed(u32),
    Uniform { min: u32, max: u32 },
    Weighted { sizes: Vec<u32>, cdf: Vec<f64> },
}

impl SizeSampler {
    pub fn from_spec(spec: &SizeDistributionSpec) -> SizeSampler {
        match spec {
            SizeDistributionSpec::Fixed { size } => SizeSampler::Fixed(*size),
            SizeDistributionSpec::Uniform { min, max } => SizeSampler::Uniform {
                min: *min,
                max: *max,
            },
            SizeDistributionSpec::Weighted { sizes } => {
                let total: f64 = sizes.iter().map(|s| s.weight).sum();
                let mut acc = 0.0;
                let cdf = sizes
                    .iter()
                    .map(|s| {
                        acc += s.weight / total;
                        acc
                    })
                    .collect();
                SizeSampler::Weighted {
                    sizes: sizes.iter().map(|s| s.size).collect(),
                    cdf,
                }
            }
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u32 {
        match self {
            SizeSampler::Fixed(s) => *s,
            SizeSampler::Uniform { min, max } => min + rng.below(u64::from(max - min) + 1) as u32,
            SizeSampler::Weighted { sizes, cdf } => {
                let u = rng.next_f64();
                sizes[cdf.partition_point(|&c| c < u).min(sizes.len() - 1)]
            }
        }
    }

    pub fn max(&self) -> u32 {
        match self {
            SizeSampler::Fixed(s) => *s,
            SizeSampler::Uniform { max, .. } => *max,
            SizeSampler::Weighted { sizes, .. } => sizes.iter().copied().max().unwrap_or(0),
        }
    }

    /// Expected size, for turning a backlog size in bytes into messages.
    pub fn mean(&self) -> f64 {
        match self {
            SizeSampler::Fixed(s) => f64::from(*s),
            SizeSampler::Uniform { min, max } => (f64::from(*min) + f64::from(*max)) / 2.0,
            SizeSampler::Weighted { sizes, cdf } => {
                let mut prev = 0.0;
                let mut mean = 0.0;
                for (s, c) in sizes.iter().zip(cdf) {
                    mean += f64::from(*s) * (c - prev);
                    prev = *c;
                }
                mean
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks() {
        let mut s = KeySampler::from_spec(&KeyDistributionSpec::Zipf {
            keys: 1000,
            exponent: 1.2,
        });
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[s.next(&mut rng).unwrap() as usize] += 1;
        }
        // P(rank 1) = 1/H(1000,1.2) ≈ 0.26; rank 2 ≈ 0.11.
        assert!(counts[0] > 20_000 && counts[0] < 32_000, "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }

    #[test]
    fn uniform_sizes_stay_in_range() {
        let s = SizeSampler::Uniform { min: 10, max: 20 };
        let mut rng = Rng::new(1);
        let mut seen = [false; 11];
        for _ in 0..10_000 {
            let v = s.next(&mut rng);
            assert!((10..=20).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
        assert_eq!(s.mean(), 15.0);
    }

    #[test]
    fn round_robin_cycles() {
        let mut s = KeySampler::RoundRobin { keys: 3, next: 0 };
        let mut rng = Rng::new(1);
        let v: Vec<_> = (0..5).map(|_| s.next(&mut rng).unwrap()).collect();
        assert_eq!(v, vec![0, 1, 2, 0, 1]);
    }
}
