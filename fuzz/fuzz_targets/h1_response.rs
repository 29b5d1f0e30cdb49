//! Any bytes as what a server answers the load generator's HTTP/1.1 client, for up to four
//! requests on one connection (status line, headers, length, chunked and close-delimited bodies).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshbench::load::client::h1::Conn;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    });
    rt.block_on(async {
        let mut conn = Conn::new(tokio::io::join(data, tokio::io::sink()));
        for head in [false, true, false, false] {
            if conn.round_trip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", head).await.is_err() {
                break;
            }
        }
    });
});
