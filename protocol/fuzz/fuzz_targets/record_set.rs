//! Record-set validation and record decoding must refuse any input without
//! panicking, and whatever validates must survive offset assignment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::record_batch::{assign_offsets, decode_records, validate_record_set, BATCH_HEADER_SIZE};
use sluice_protocol::{LeaderEpoch, Offset};

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = validate_record_set(data, 1 << 20) {
        let mut copy = data.to_vec();
        let next = assign_offsets(&mut copy, Offset(7), LeaderEpoch(1));
        assert_eq!(next.0 - 7, summary.records);
        assert!(validate_record_set(&copy, 1 << 20).is_ok());
    }
    if data.len() > BATCH_HEADER_SIZE {
        let _ = decode_records(&data[BATCH_HEADER_SIZE..], 64);
    }
});
