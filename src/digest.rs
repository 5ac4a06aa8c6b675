//! Content digests (`sha256:<hex>`), one rule for every place that reads, computes or compares
//! them: the user's `-d`/list `checksum=`/`digest=` (lenient: any case), a registry's reference or
//! manifest (strict: exactly what the OCI spec allows), `Digest::of` a buffer, a streaming
//! `Hasher`, and the one mismatch error, so the daemon, the back-to-source client, ORAS and the
//! cache agree on what a digest is and say a mismatch the same way.
//!
//! Invariant: a `Digest` holds `sha256:` plus 64 lowercase hex digits, whichever parser built it,
//! so it may be spliced into request paths and file names unescaped and compared as a string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Kind, Result};

/// Hex digits of a sha256.
pub const SHA256_HEX_LEN: usize = 64;
const PREFIX: &str = "sha256:";

/// `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// What a user may type: `sha256:<64 hex>`, algorithm and hex in any case (normalised to
    /// lowercase). A client error naming what was wrong otherwise.
    pub fn parse_user(d: &str) -> Result<Digest> {
        let (algo, hex_part) =
            d.split_once(':').ok_or_else(|| Error::client(format!("digest `{d}` is not algo:hex")))?;
        if !algo.eq_ignore_ascii_case("sha256") {
            return Err(Error::client(format!("unsupported digest algorithm `{algo}` (sha256)")));
        }
        if hex_part.len() != SHA256_HEX_LEN || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::client(format!("digest `{d}`: expected 64 hex digits")));
        }
        Ok(Digest(format!("{PREFIX}{}", hex_part.to_ascii_lowercase())))
    }

    /// What a registry must send (a reference's `@digest`, a manifest descriptor): exactly
    /// `sha256:` + 64 lowercase hex, the only algorithm registries and our verifier share. The
    /// error is a sentence for the caller to put in its own error type.
    pub fn parse_strict(text: &str) -> std::result::Result<Digest, String> {
        let hex = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("digest {text:?} must start with \"sha256:\" (the only algorithm supported)"))?;
        if hex.len() != SHA256_HEX_LEN {
            return Err(format!("digest {text:?} must have {SHA256_HEX_LEN} hex digits, has {}", hex.len()));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("digest {text:?} must be lowercase hex"));
        }
        Ok(Digest(text.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Ok when `got` is this digest; else the one mismatch error (see `Mismatch`).
    pub fn check(&self, got: &Digest) -> std::result::Result<(), Mismatch> {
        if self == got {
            Ok(())
        } else {
            Err(Mismatch { want: self.clone(), got: got.clone() })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// As its string, so `meta.json` files written when the digest was a plain string still load.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Strict: everything this daemon ever wrote is already normalised.
impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse_strict(&s).map_err(serde::de::Error::custom)
    }
}

/// Content that did not hash to the digest it must have: the one error for it, wherever found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub want: Digest,
    pub got: Digest,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "digest mismatch: expected {}, got {}", self.want, self.got)
    }
}

/// From the origin (it sent other bytes), not retryable, `Kind::Integrity` on the wire.
impl From<Mismatch> for Error {
    fn from(m: Mismatch) -> Error {
        Error::origin(false, m.to_string()).with_kind(Kind::Integrity)
    }
}

/// sha256 over a stream, fed as it arrives.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(self.0.finalize())))
    }

    /// Finishes and compares with `want`: the streaming check.
    pub fn check(self, want: &Digest) -> Result<()> {
        Ok(want.check(&self.finish())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    /// sha256 of the empty string.
    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn user_parse_is_lenient_about_case_and_strict_about_shape() {
        let check = |input: &str, want: std::result::Result<&str, &str>| {
            let got = Digest::parse_user(input).map(|d| d.to_string()).map_err(|e| e.message);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{input}: {g}"),
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        };
        let lower = format!("sha256:{HEX}");
        check(&lower, Ok(&lower));
        check(&format!("SHA256:{}", HEX.to_uppercase()), Ok(&lower));
        check(HEX, Err("is not algo:hex"));
        check(&format!("sha512:{HEX}"), Err("unsupported digest algorithm `sha512`"));
        check("sha256:abc", Err("digest `sha256:abc`: expected 64 hex digits"));
        check(&format!("sha256:{}g", &HEX[1..]), Err("expected 64 hex digits"));
        check("sha256:", Err("expected 64 hex digits"));
    }

    #[test]
    fn strict_parse_takes_only_lowercase_sha256() {
        let check = |input: &str, want: std::result::Result<(), &str>| match (Digest::parse_strict(input), want) {
            (Ok(d), Ok(())) => assert_eq!(d.as_str(), input),
            (Err(g), Err(w)) => assert!(g.contains(w), "{input}: {g}"),
            (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
        };
        check(&format!("sha256:{HEX}"), Ok(()));
        check(&format!("sha256:{}", HEX.to_uppercase()), Err("must be lowercase hex"));
        check(&format!("SHA256:{HEX}"), Err("must start with \"sha256:\""));
        check(&format!("sha512:{HEX}"), Err("must start with \"sha256:\""));
        check("sha256:abc", Err("must have 64 hex digits, has 3"));
        check("", Err("must start with"));
    }

    #[test]
    fn of_and_the_streaming_hasher_agree() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for chunk in body.chunks(7919) {
            h.update(chunk);
        }
        assert_eq!(h.clone().finish(), Digest::of(&body));
        assert_eq!(h.check(&Digest::of(&body)), Ok(()));
    }

    #[test]
    fn a_mismatch_is_one_integrity_error_naming_both_digests() {
        let want = Digest::of(b"a");
        let mut h = Hasher::new();
        h.update(b"b");
        let e = h.check(&want).expect_err("b is not a");
        assert_eq!((e.source, e.kind, e.retryable), (crate::error::Source::Origin, Kind::Integrity, false));
        assert_eq!(e.message, format!("digest mismatch: expected {want}, got {}", Digest::of(b"b")));
    }

    #[test]
    fn serialises_as_its_string_and_loads_only_valid_ones() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).expect("serialise");
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).expect("load"), d);
        for bad in ["\"sha256:\"", "\"sha256:xyz\"", &format!("\"{HEX}\""), &format!("\":{HEX}\"")] {
            assert!(serde_json::from_str::<Digest>(bad).is_err(), "{bad}");
        }
    }
}
