//! Our HTTP/1.1 client. `codec`, `body`, `range` and `status` are sans-IO (bytes in, values out, unit-tested and
//! fuzzed); `conn`, `pool` and `client` are the thin IO shell on compio sockets.
//!
//! Invariant: a connection goes back to its core's pool only after its response body was read to the
//! end with nothing left over, so the next request on it starts on a clean byte stream.

pub mod body;
pub(crate) mod client;
pub mod codec;
pub(crate) mod conn;
pub(crate) mod limit;
pub(crate) mod pool;
pub mod range;
pub(crate) mod redact;
pub(crate) mod status;
pub(crate) mod tls;

pub use client::{get, Response};

/// A configured timeout around `fut`; `Duration::ZERO` means no limit, as in Go's `http.Transport`
/// (whose keys the config borrows). `Err(())` when the time ran out.
pub async fn within<T>(limit: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Result<T, ()> {
    if limit.is_zero() {
        return Ok(fut.await);
    }
    compio::time::timeout(limit, fut).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn zero_timeout_means_no_limit() {
        let rt = compio::runtime::Runtime::new().unwrap();
        let slow = async {
            compio::time::sleep(Duration::from_millis(30)).await;
            7
        };
        assert_eq!(rt.block_on(super::within(Duration::ZERO, slow)), Ok(7));
        let slow = async {
            compio::time::sleep(Duration::from_millis(200)).await;
            7
        };
        assert_eq!(rt.block_on(super::within(Duration::from_millis(20), slow)), Err(()));
    }
}
