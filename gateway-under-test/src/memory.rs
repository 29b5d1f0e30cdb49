//! The bytes the process has allocated and not freed: Envoy's `server.memory_allocated`
//! (`envoy_server_memory_allocated` on `/stats/prometheus`). Resident memory also counts what the
//! allocator keeps for reuse; this counts only what the gateway holds, so memory that grows with
//! the requests served shows here even where the allocator's high-water mark hides it in RSS.
//!
//! Counting takes an atomic add on one shared counter per allocation and per free, a cost the
//! request path does not pay by default: the binary counts when built with the `count-alloc`
//! feature (`ci/bench/soak.py` builds it so), which wraps its allocator in `cap::Cap` and hands
//! its reader here.

use std::sync::OnceLock;

static READER: OnceLock<fn() -> usize> = OnceLock::new();

/// Sets where `allocated` reads from (the binary's counting allocator); the first call wins.
pub fn count_with(reader: fn() -> usize) {
    let _ = READER.set(reader);
}

/// The bytes allocated and not yet freed, when the binary counts them.
pub fn allocated() -> Option<usize> {
    READER.get().map(|read| read())
}
