//! Our HTTP/1.1 client. `codec`, `body` and `range` are sans-IO (bytes in, values out, unit-tested and
//! fuzzed); `conn`, `pool` and `client` are the thin IO shell on compio sockets.
//!
//! Invariant: a connection goes back to its core's pool only after its response body was read to the
//! end with nothing left over, so the next request on it starts on a clean byte stream.

pub mod body;
pub mod client;
pub mod codec;
pub mod conn;
pub mod limit;
pub mod pool;
pub mod range;
pub mod tls;

pub use client::{get, Response};
