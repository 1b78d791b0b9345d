//! Kafka's wire primitives: big-endian integers, unsigned varints (used by
//! flexible versions for compact lengths and tagged fields) and strings.
//!
//! Readers work on a `&[u8]` cursor and never panic on short input: every
//! length is checked before it is used.

use thiserror::Error;

/// Input ended or a field is out of range.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: needed {needed} bytes for {field}, {available} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("invalid {field}: {value}")]
    Invalid { field: &'static str, value: i64 },
}

/// A cursor over a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(self.take(1, field)?[0] as i8)
    }

    pub fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// An unsigned LEB128 varint of at most 5 bytes (a u32).
    pub fn uvarint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1, field)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid {
            field,
            value: i64::from(value),
        })
    }

    /// A zig-zag encoded signed varint of at most 5 bytes.
    pub fn varint(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let raw = self.uvarint(field)?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    /// A zig-zag encoded signed varlong of at most 10 bytes.
    pub fn varlong(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let byte = self.take(1, field)?[0];
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(DecodeError::Invalid { field, value: -1 })
    }

    /// A nullable string with an i16 length (-1 is null).
    pub fn nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.i16(field)?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize, field)?))
    }

    /// A compact string (flexible versions): uvarint length + 1, then
    /// UTF-8 bytes; 0 is null.
    pub fn compact_nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        let len = self.uvarint(field)?;
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize - 1, field)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| DecodeError::Invalid {
                field,
                value: e.valid_up_to() as i64,
            })
    }

    /// A compact string that may not be null.
    pub fn compact_string(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        self.compact_nullable_string(field)?
            .ok_or(DecodeError::Invalid { field, value: -1 })
    }

    /// A compact array's element count (uvarint count + 1; 0 is null).
    /// Every element takes at least `min_element_bytes`, so a count the
    /// remaining input cannot hold is refused before anything is
    /// allocated for it.
    pub fn compact_array_len(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let raw = self.uvarint(field)?;
        if raw == 0 {
            return Ok(None);
        }
        let count = raw as usize - 1;
        if count.saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Invalid {
                field,
                value: count as i64,
            });
        }
        Ok(Some(count))
    }

    /// A compact array's count where null is not allowed.
    pub fn compact_array_count(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        self.compact_array_len(field, min_element_bytes)?
            .ok_or(DecodeError::Invalid { field, value: -1 })
    }

    /// A 16-byte UUID (topic ids).
    pub fn uuid(&mut self, field: &'static str) -> Result<[u8; 16], DecodeError> {
        let mut out = [0u8; 16];
        out.copy_from_slice(self.take(16, field)?);
        Ok(out)
    }

    /// A boolean byte: anything but 0 is true, as Kafka reads it.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.i8(field)? != 0)
    }

    /// Skips a tagged-field section (flexible versions).
    pub fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        let count = self.uvarint("tagged field count")?;
        for _ in 0..count {
            let _tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")?;
            self.take(size as usize, "tagged field")?;
        }
        Ok(())
    }
}

/// Appends an unsigned varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a zig-zag signed varint.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_uvarint(out, ((value << 1) ^ (value >> 31)) as u32);
}

/// Appends a zig-zag signed varlong.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes `put_uvarint` writes for `value`.
pub fn uvarint_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Appends a string, compact (flexible) or i16-prefixed.
pub fn put_string(out: &mut Vec<u8>, s: &str, compact: bool) {
    if compact {
        put_uvarint(out, s.len() as u32 + 1);
    } else {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Appends a compact nullable string (0 for null).
pub fn put_compact_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s, true),
        None => put_uvarint(out, 0),
    }
}

/// Appends an array length, compact (flexible) or i32-prefixed.
pub fn put_array_len(out: &mut Vec<u8>, len: usize, compact: bool) {
    if compact {
        put_uvarint(out, len as u32 + 1);
    } else {
        out.extend_from_slice(&(len as i32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn uvarint_round_trips(v in any::<u32>()) {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            prop_assert_eq!(out.len(), uvarint_len(v));
            prop_assert_eq!(Reader::new(&out).uvarint("v").unwrap(), v);
        }

        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(Reader::new(&out).varint("v").unwrap(), v);
        }

        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(Reader::new(&out).varlong("v").unwrap(), v);
        }

        #[test]
        fn compact_strings_round_trip(s in proptest::option::of(".{0,40}")) {
            let mut out = Vec::new();
            put_compact_nullable_string(&mut out, s.as_deref());
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.compact_nullable_string("s").unwrap(), s.as_deref());
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.nullable_string("s");
            let _ = r.skip_tagged_fields();
            let _ = r.varlong("l");
            let _ = r.compact_nullable_string("c");
            let _ = r.compact_array_len("a", 4);
            let _ = r.uuid("u");
        }
    }

    #[test]
    fn compact_lengths_are_one_more_than_the_count() {
        // "ab" is length 2, written 3; null is 0; an array of 2 is 3.
        let mut r = Reader::new(&[3, b'a', b'b', 0, 3, 0, 0]);
        assert_eq!(r.compact_string("s").unwrap(), "ab");
        assert_eq!(r.compact_nullable_string("n").unwrap(), None);
        assert_eq!(r.compact_array_len("a", 1).unwrap(), Some(2));
        // A null string where one is required, and an array of 2
        // elements of 4 bytes with 2 bytes left, are refused.
        assert!(Reader::new(&[0]).compact_string("s").is_err());
        assert!(Reader::new(&[3, 0, 0]).compact_array_len("a", 4).is_err());
        assert!(Reader::new(&[2, 0xff]).compact_string("s").is_err());
    }

    #[test]
    fn truncated_input_names_the_field() {
        let err = Reader::new(&[0, 1]).i32("correlation id").unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                field: "correlation id",
                needed: 4,
                available: 2
            }
        );
    }
}
