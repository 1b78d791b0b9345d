//! Record-section compression in the formats Kafka clients write.
//!
//! - gzip: a gzip member (RFC 1952).
//! - snappy: xerial framing, as the Java client writes it:
//!   ```text
//!   magic 0x82 'S' 'N' 'A' 'P' 'P' 'Y' 0x00 | version i32 = 1 | compatible i32 = 1 |
//!   (compressed_length i32 | raw snappy block)*
//!   ```
//!   Each block holds up to 32 KiB of input. Reading also accepts a bare
//!   raw snappy block, which some clients write.
//! - lz4: the LZ4 frame format (not the bare block format), independent
//!   64 KiB blocks, as the Java client's `KafkaLZ4BlockOutputStream`.
//! - zstd: one zstd frame.

use crate::record_batch::Compression;
use std::io::{Read, Write};
use thiserror::Error;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_SIZE: usize = 16;
/// Input bytes per xerial block; xerial's default.
const XERIAL_BLOCK: usize = 32 * 1024;
/// zstd level; 3 is zstd's and Kafka's default.
const ZSTD_LEVEL: i32 = 3;
/// Limit on a decompressed records section, so a corrupt or hostile batch
/// cannot make the consumer allocate without bound.
pub const DECOMPRESSED_MAX: usize = 256 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("{codec:?} compression failed: {source}")]
    Compress {
        codec: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error("{codec:?} decompression failed: {source}")]
    Decompress {
        codec: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error("{codec:?} data decompresses to more than {DECOMPRESSED_MAX} bytes")]
    TooLarge { codec: Compression },
}

/// Compresses `input` with `codec`, appending to `out`.
pub fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let err = |source| CodecError::Compress { codec, source };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            e.write_all(input).map_err(err)?;
            e.finish().map_err(err)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let c = enc
                    .compress_vec(block)
                    .map_err(|e| err(std::io::Error::other(e)))?;
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            e.write_all(input).map_err(err)?;
            e.finish().map_err(|e| err(std::io::Error::other(e)))?;
        }
        Compression::Zstd => {
            let c = zstd::bulk::compress(input, ZSTD_LEVEL).map_err(err)?;
            out.extend_from_slice(&c);
        }
    }
    Ok(())
}

/// Decompresses a records section.
pub fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, CodecError> {
    let err = |source| CodecError::Decompress { codec, source };
    let mut out = Vec::with_capacity(input.len() * 2);
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input), &mut out, codec)?,
        Compression::Snappy => snappy_decompress(input, &mut out)?,
        Compression::Lz4 => {
            read_bounded(lz4_flex::frame::FrameDecoder::new(input), &mut out, codec)?
        }
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(input).map_err(err)?;
            read_bounded(d, &mut out, codec)?
        }
    }
    Ok(out)
}

fn read_bounded<R: Read>(r: R, out: &mut Vec<u8>, codec: Compression) -> Result<(), CodecError> {
    let mut limited = r.take(DECOMPRESSED_MAX as u64 + 1);
    limited
        .read_to_end(out)
        .map_err(|source| CodecError::Decompress { codec, source })?;
    if out.len() > DECOMPRESSED_MAX {
        return Err(CodecError::TooLarge { codec });
    }
    Ok(())
}

fn snappy_decompress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let codec = Compression::Snappy;
    let bad = |m: &str| CodecError::Decompress {
        codec,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string()),
    };
    let mut dec = snap::raw::Decoder::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        let v = dec.decompress_vec(input).map_err(|e| bad(&e.to_string()))?;
        out.extend_from_slice(&v);
        return Ok(());
    }
    let mut at = XERIAL_HEADER_SIZE;
    while at < input.len() {
        let len_bytes = input
            .get(at..at + 4)
            .ok_or_else(|| bad("truncated xerial block length"))?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if len < 0 {
            return Err(bad("negative xerial block length"));
        }
        at += 4;
        let block = input
            .get(at..at + len as usize)
            .ok_or_else(|| bad("truncated xerial block"))?;
        let n = snap::raw::decompress_len(block).map_err(|e| bad(&e.to_string()))?;
        if out.len() + n > DECOMPRESSED_MAX {
            return Err(CodecError::TooLarge { codec });
        }
        let v = dec.decompress_vec(block).map_err(|e| bad(&e.to_string()))?;
        out.extend_from_slice(&v);
        at += len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let input = sample();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut c = Vec::new();
            compress(codec, &input, &mut c).unwrap();
            if codec != Compression::None {
                assert!(c.len() < input.len(), "{codec:?} did not compress");
            }
            assert_eq!(decompress(codec, &c).unwrap(), input, "{codec:?}");
        }
    }

    #[test]
    fn framing_matches_what_kafka_clients_expect() {
        let mut c = Vec::new();
        compress(Compression::Snappy, b"hello", &mut c).unwrap();
        assert_eq!(&c[..8], &XERIAL_MAGIC);
        let mut c = Vec::new();
        compress(Compression::Lz4, b"hello", &mut c).unwrap();
        // LZ4 frame magic 0x184D2204, little-endian.
        assert_eq!(&c[..4], &[0x04, 0x22, 0x4D, 0x18]);
        let mut c = Vec::new();
        compress(Compression::Gzip, b"hello", &mut c).unwrap();
        assert_eq!(&c[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn raw_snappy_is_accepted_on_read() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"plain block")
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw).unwrap(),
            b"plain block"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, b"\x82SNAPPY\0garbage-garbage").is_err()
                    || codec == Compression::None
            );
        }
    }
}
