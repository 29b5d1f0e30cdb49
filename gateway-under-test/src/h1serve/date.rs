//! The `date` header's value (RFC 9110 §6.6.1), formatted once a second per thread, as hyper
//! keeps it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

struct Cached {
    second: u64,
    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    text: String,
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, text: String::new() }) };
}

/// Appends the current date to `out`.
pub fn extend(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            cached.text = httpdate::fmt_http_date(now);
            cached.second = second;
        }
        out.extend_from_slice(cached.text.as_bytes());
    });
}
