//! Any text as a conformance suite file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = meshbench::conform::suite::parse("fuzz.yaml", text);
});
