//! Content digests as users and registries write them (`sha256:<hex>`): one parser, so the daemon,
//! the back-to-source client and the cache agree on what a digest is.
//!
//! Invariant: a parsed digest is `sha256:` plus 64 lowercase hex digits; anything else is a client
//! error naming what was wrong.

use crate::error::{Error, Result};

/// `sha256:<64 hex>` (case-insensitive hex, normalised to lowercase).
pub fn parse(d: &str) -> Result<String> {
    let (algo, hex_part) = d.split_once(':').ok_or_else(|| Error::client(format!("digest `{d}` is not algo:hex")))?;
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(Error::client(format!("unsupported digest algorithm `{algo}` (sha256)")));
    }
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::client(format!("digest `{d}`: expected 64 hex digits")));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}
