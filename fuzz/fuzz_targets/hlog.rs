//! Any bytes as an HdrHistogram interval log, read back as `merge` and `report` read one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = meshbench::load::hlog::parse("fuzz.hlog", data) {
        let _ = meshbench::load::hlog::merge(&[log]);
    }
});
