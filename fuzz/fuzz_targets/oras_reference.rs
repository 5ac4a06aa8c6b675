//! Fuzz target: `oras://` reference parsing. Nothing panics, and an accepted reference prints back
//! to a string that parses to the same reference.
#![no_main]

use dfget::source::oras::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = Reference::parse(text) {
            assert_eq!(Reference::parse(&r.to_string()), Ok(r));
        }
    }
});
