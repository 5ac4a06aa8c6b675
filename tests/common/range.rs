//! The one parser of a request's `Range: bytes=…` header for every test origin (the in-process
//! origins of `common`, `support_storage`, `support_transport` and the registry front), and the
//! RFC 9110 answer a full-featured server gives. Origins that deliberately support less (no
//! suffix ranges, closed ranges only) apply their policy to `parse`'s result in a line.
//!
//! Invariant: `parse` only reads syntax (one range of the `bytes` unit); what a range means
//! against a body is `answer`'s business.

/// One syntactically valid `bytes=` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `first-last` or `first-` (open).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// None for another unit, several ranges, or anything unparseable.
pub fn parse(value: &str) -> Option<Spec> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", suffix) => suffix.parse().ok().map(Spec::Suffix),
        (first, "") => Some(Spec::From { first: first.parse().ok()?, last: None }),
        (first, last) => Some(Spec::From { first: first.parse().ok()?, last: Some(last.parse().ok()?) }),
    }
}

/// What a server answers a Range on a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole body (no usable Range: RFC 9110 lets a server ignore it).
    Full,
    /// 206 with these bytes, inclusive.
    Partial(u64, u64),
    /// 416 `bytes */len`.
    Unsatisfiable,
}

/// RFC 9110's reading of `value` against `len` bytes, as most servers do it.
pub fn answer(value: &str, len: u64) -> Answer {
    match parse(value) {
        None => Answer::Full,
        Some(Spec::Suffix(0)) => Answer::Unsatisfiable,
        Some(Spec::Suffix(_)) if len == 0 => Answer::Unsatisfiable,
        Some(Spec::Suffix(n)) => Answer::Partial(len.saturating_sub(n), len - 1),
        Some(Spec::From { first, last }) => {
            let last = last.unwrap_or(u64::MAX);
            if first > last {
                Answer::Full
            } else if first >= len {
                Answer::Unsatisfiable
            } else {
                Answer::Partial(first, last.min(len - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, len: u64, expected: Answer) {
        assert_eq!(answer(value, len), expected, "Range {value:?} on {len} bytes");
    }

    #[test]
    fn range_parsing() {
        check("bytes=0-9", 100, Answer::Partial(0, 9));
        check("bytes=90-200", 100, Answer::Partial(90, 99));
        check("bytes=10-", 100, Answer::Partial(10, 99));
        check("bytes=-10", 100, Answer::Partial(90, 99));
        check("bytes=-200", 100, Answer::Partial(0, 99));
        check("bytes=100-", 100, Answer::Unsatisfiable);
        check("bytes=0-0", 0, Answer::Unsatisfiable);
        check("bytes=-0", 100, Answer::Unsatisfiable);
        check("bytes=5-1", 100, Answer::Full);
        check("bytes=0-1,5-6", 100, Answer::Full);
        check("items=0-1", 100, Answer::Full);
        assert_eq!(parse(" bytes= 3 - 4 "), Some(Spec::From { first: 3, last: Some(4) }));
        assert_eq!(parse("bytes=x-4"), None);
        assert_eq!(parse("bytes=-"), None);
    }
}
