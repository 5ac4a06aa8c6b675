//! Fuzz target: Content-Range parsing and the Range header.
//!
//! Properties: nothing panics; an accepted Content-Range is self-consistent, survives a round
//! trip through its canonical form and passes `check_partial` for exactly itself; the satisfied
//! and unsatisfied (`bytes */N`) forms never both accept one value.
#![no_main]

use dfget::http::range::{check_partial, parse_content_range, parse_unsatisfied_range, range_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cr) = parse_content_range(data) {
        assert!(cr.first <= cr.last);
        assert!(cr.complete_len.map_or(true, |len| cr.last < len));
        let len = cr.complete_len.map_or("*".to_owned(), |n| n.to_string());
        let canonical = format!("bytes {}-{}/{len}", cr.first, cr.last);
        assert_eq!(parse_content_range(canonical.as_bytes()), Ok(cr));
        assert_eq!(check_partial(data, cr.first, cr.last, cr.complete_len), Ok(cr));
        assert_eq!(parse_unsatisfied_range(data), None);
    }
    if let Some(n) = parse_unsatisfied_range(data) {
        assert_eq!(parse_unsatisfied_range(format!("bytes */{n}").as_bytes()), Some(n));
        assert!(parse_content_range(data).is_err());
    }
    if let (Some(a), Some(b)) = (data.get(..8), data.get(8..16)) {
        let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
        let (first, last) = (a.min(b), a.max(b));
        assert_eq!(range_header(first, last), format!("bytes={first}-{last}"));
    }
});
