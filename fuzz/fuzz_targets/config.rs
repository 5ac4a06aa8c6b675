//! Fuzz target: any bytes as the YAML config file, through the whole loader (`Config::from_yaml`:
//! the raw serde stage, unit parsing and resolution). Nothing panics: bad YAML or a bad value is
//! a `ConfigError`, an unknown key a warning.
#![no_main]

use dfget::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(text, "fuzz.yaml");
    }
});
