//! Fuzz target: registry answers — manifests/indexes (with and without a Content-Type),
//! `WWW-Authenticate` challenges and token responses. None may panic on any input.
#![no_main]

use dfget::source::oras::{auth, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = manifest::parse(data, None);
    let _ = manifest::parse(data, Some(manifest::OCI_MANIFEST));
    let _ = manifest::parse(data, Some(manifest::OCI_INDEX));
    let _ = auth::parse_token_response(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = auth::parse_www_authenticate(text);
    }
});
