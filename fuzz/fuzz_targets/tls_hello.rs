//! Any first bytes of a connection through meshgate's TLS/SNI sniffer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshgate::tls::sniff_hello(data);
});
