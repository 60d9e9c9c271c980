//! libFuzzer target: the NMEA line parser and the alert reassembler must never panic, must count
//! every line exactly once, and must not depend on how the bytes are chunked.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use thermal_edge::alert::nmea::{AlrOrder, Dialect, Parser, Reassembler, Sentence};

fuzz_target!(|data: &[u8]| {
    // The first byte steers the harness: chunk size and ALR field order.
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let dialect = Dialect {
        alr_order: if control & 0x80 != 0 {
            AlrOrder::AckFirst
        } else {
            AlrOrder::ConditionFirst
        },
    };
    let chunk = usize::from(control & 0x3f) + 1;

    let mut parser = Parser::new(dialect);
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk) {
        parser.feed_into(piece, &mut events);
    }
    let whole = Parser::new(dialect).feed(bytes);
    assert_eq!(events, whole, "chunking changed the result");
    let stats = parser.stats();
    assert_eq!(stats.accepted + stats.rejected.total(), events.len() as u64);

    let mut reassembler = Reassembler::new(Duration::from_secs(5), 4);
    let t0 = Instant::now();
    for (i, event) in events.iter().enumerate() {
        if let Ok(Sentence::Alert(part)) = event {
            let _ = reassembler.push(part, t0 + Duration::from_millis(i as u64 * 100));
            assert!(reassembler.unfinished() <= 4);
        }
    }
    let _ = parser.reset();
});
