//! Request-header parsing and frame-length checks must refuse any input
//! without panicking, and a parsed header's body offset stays in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::frame::payload_len;
use sluice_protocol::header::parse_request_header;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = payload_len([data[0], data[1], data[2], data[3]], 1 << 20);
    }
    if let Ok(h) = parse_request_header(data) {
        assert!(h.body_start <= data.len());
    }
});
