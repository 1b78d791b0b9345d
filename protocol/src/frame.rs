//! Length-prefixed framing.
//!
//! ```text
//! +----------------+---------------------------+
//! | length: i32 BE | payload: `length` bytes   |
//! +----------------+---------------------------+
//! ```
//!
//! Every Kafka request and response is one frame. The length is checked
//! against a limit (`socket.request.max.bytes`) before any buffer is
//! allocated for the payload.

use thiserror::Error;

/// Size of the length prefix.
pub const FRAME_HEADER_SIZE: usize = 4;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const FRAME_SIZE_MAX_DEFAULT: usize = 104_857_600;

/// Why a frame length was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame length is zero")]
    Empty,
    #[error("frame length {length} is above the limit of {max} bytes")]
    TooLarge { length: usize, max: usize },
}

/// Decodes a frame's length prefix and checks it against `max`.
pub fn payload_len(prefix: [u8; FRAME_HEADER_SIZE], max: usize) -> Result<usize, FrameError> {
    let length = i32::from_be_bytes(prefix);
    if length < 0 {
        return Err(FrameError::Negative(length));
    }
    if length == 0 {
        return Err(FrameError::Empty);
    }
    let length = length as usize;
    if length > max {
        return Err(FrameError::TooLarge { length, max });
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(payload_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            payload_len((-1i32).to_be_bytes(), 100),
            Err(FrameError::Negative(-1))
        );
        assert_eq!(payload_len(0i32.to_be_bytes(), 100), Err(FrameError::Empty));
        assert_eq!(
            payload_len(101i32.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                length: 101,
                max: 100
            })
        );
    }
}
