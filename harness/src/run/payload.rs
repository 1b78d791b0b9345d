//! Message values and keys, prepared before the run so the per-message path
//! only copies bytes, once, into the batch.
//!
//! Values come from a pool (OMB's `randomizedPayloadPoolSize`), each pooled
//! payload `randomBytesRatio` random and zeros after that, or from
//! `payloadFile`. The first 8 bytes of every value sent are overwritten with
//! the message's intended send time (µs since the Unix epoch, big-endian) for
//! the consumer's end-to-end latency.

use crate::client::batch::ValueParts;
use crate::workload::dist::{KeySampler, Rng, SizeSampler};
use crate::workload::Workload;

pub struct Payloads {
    pool: Vec<Vec<u8>>,
    sizes: SizeSampler,
    keys: KeySampler,
    rng: Rng,
    next: usize,
    stamp: [u8; 8],
    key: [u8; 20],
}

impl Payloads {
    pub fn new(w: &Workload, seed: u64) -> std::io::Result<Payloads> {
        let sizes = SizeSampler::from_spec(&w.sizes);
        let max = sizes.max() as usize;
        let mut rng = Rng::new(seed);
        let pool = match &w.payload.file {
            Some(path) => {
                let bytes = std::fs::read(path)?;
                let mut v = Vec::with_capacity(max);
                while v.len() < max && !bytes.is_empty() {
                    let take = (max - v.len()).min(bytes.len());
                    v.extend_from_slice(&bytes[..take]);
                }
                v.resize(max, 0);
                vec![v]
            }
            None => (0..w.payload.pool_size)
                .map(|_| {
                    let mut v = vec![0u8; max];
                    let random = (max as f64 * w.payload.random_bytes_ratio) as usize;
                    rng.fill(&mut v[..random]);
                    v
                })
                .collect(),
        };
        Ok(Payloads {
            pool,
            sizes,
            keys: KeySampler::from_spec(&w.keys),
            rng,
            next: 0,
            stamp: [0; 8],
            key: [0; 20],
        })
    }

    /// The next (key, value) for a message meant to be sent at
    /// `sent_unix_us`. The value comes in two parts, the send-time stamp and
    /// the rest of the pooled payload, so that it is copied only where it
    /// goes (the batch), not staged here first.
    #[inline]
    pub fn next(&mut self, sent_unix_us: i64) -> (Option<&[u8]>, ValueParts<'_>) {
        let size = self.sizes.next(&mut self.rng) as usize;
        let src = &self.pool[self.next];
        self.next = (self.next + 1) % self.pool.len();
        self.stamp = sent_unix_us.to_be_bytes();
        let n = size.min(8);
        let key = match self.keys.next(&mut self.rng) {
            Some(k) => Some(crate::client::partitioner::key_bytes(k, &mut self.key)),
            None => None,
        };
        (key, [&self.stamp[..n], &src[n..size]])
    }
}
