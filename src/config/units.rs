//! Pure parsers for the two unit-bearing scalars of dfget.yaml: Go-style durations (`1m30s`,
//! `500ms`, `1h0m0s`) and byte sizes (`50Gi`, `1.5G`, `1024`). Invariant: every accepted string
//! maps to exactly one non-negative value that fits its type (durations fit Go's `time.Duration`,
//! sizes fit `u64`); anything else is a `UnitError` naming the input — never a panic, never a
//! silent clamp.

use std::fmt;
use std::time::Duration;

/// The longest unit string accepted. Real values are under 20 bytes; the cap keeps error messages
/// (which quote the input) short and the digit loops trivially bounded.
pub const MAX_UNIT_TEXT_BYTES: usize = 64;

/// Go's `time.Duration` is an `i64` of nanoseconds (~292 years): a longer value could not mean the
/// same thing to Dragonfly, so it is rejected rather than clamped.
pub const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

/// Fraction digits that can change the result: 18 digits of a 1-hour unit already resolve below 1
/// ns.
const MAX_FRACTION_DIGITS: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitErrorKind {
    Empty,
    TooLong,
    Negative,
    Malformed,
    UnknownUnit,
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    pub kind: UnitErrorKind,
    pub what: &'static str,
    pub input: String,
}

impl UnitError {
    fn new(kind: UnitErrorKind, what: &'static str, input: &str) -> UnitError {
        // Quote at most the accepted length so a huge scalar cannot bloat the message.
        let input: String = input.chars().take(MAX_UNIT_TEXT_BYTES).collect();
        UnitError { kind, what, input }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, input) = (self.what, &self.input);
        match self.kind {
            UnitErrorKind::Empty => write!(f, "empty {what}"),
            UnitErrorKind::TooLong => write!(f, "{what} {input:?} is too long"),
            UnitErrorKind::Negative => write!(f, "{what} {input:?} must not be negative"),
            UnitErrorKind::TooLarge => write!(f, "{what} {input:?} is too large"),
            UnitErrorKind::UnknownUnit if what == "duration" => {
                write!(f, "duration {input:?} has an unknown unit (use ns, us, ms, s, m or h)")
            }
            UnitErrorKind::UnknownUnit => {
                write!(f, "size {input:?} has an unknown unit (use B, K/Ki, M/Mi, G/Gi, T/Ti, P/Pi or E/Ei)")
            }
            UnitErrorKind::Malformed if what == "duration" => write!(
                f,
                "invalid duration {input:?}: expected numbers with units such as \
                 30s, 1m30s, 500ms, 6h"
            ),
            UnitErrorKind::Malformed => write!(
                f,
                "invalid size {input:?}: expected a number with an optional unit such as \
                 50Gi, 100Mi, 1.5G, 1024"
            ),
        }
    }
}

impl std::error::Error for UnitError {}

/// A number split into its whole and fraction digits, plus whatever follows them.
struct Number<'a> {
    whole: &'a str,
    fraction: &'a str,
    rest: &'a str,
}

fn split_number(text: &str) -> Number<'_> {
    let digits_end = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let whole_len = digits_end(text);
    let (whole, after) = text.split_at(whole_len);
    match after.strip_prefix('.') {
        Some(tail) => {
            let (fraction, rest) = tail.split_at(digits_end(tail));
            Number { whole, fraction, rest }
        }
        None => Number { whole, fraction: "", rest: after },
    }
}

/// `whole.fraction × unit`, floored, or None on overflow. Digits past `MAX_FRACTION_DIGITS` are
/// dropped: they cannot move the result by a whole unit of the smallest scale used here.
fn scale(whole: &str, fraction: &str, unit: u128) -> Option<u128> {
    let mut whole_value: u128 = 0;
    for digit in whole.bytes() {
        whole_value = whole_value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))?;
    }
    let mut fraction_value: u128 = 0;
    let mut fraction_scale: u128 = 1;
    for digit in fraction.bytes().take(MAX_FRACTION_DIGITS) {
        fraction_value = fraction_value * 10 + u128::from(digit - b'0');
        fraction_scale *= 10;
    }
    let fraction_part = fraction_value.checked_mul(unit)? / fraction_scale;
    whole_value.checked_mul(unit)?.checked_add(fraction_part)
}

fn duration_unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the ASCII spelling, MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a duration in Go's `time.ParseDuration` syntax: an optional sign, then one or more
/// `number unit` terms (`1h30m`, `1.5h`, `.5s`, `5.s`), or a bare `0`. Negative values are errors
/// because every duration in this config is a length of time or an interval.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = |kind| UnitError::new(kind, "duration", text);
    if text.is_empty() {
        return Err(err(UnitErrorKind::Empty));
    }
    if text.len() > MAX_UNIT_TEXT_BYTES {
        return Err(err(UnitErrorKind::TooLong));
    }
    let (negative, mut rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err(UnitErrorKind::Malformed));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number = split_number(rest);
        if number.whole.is_empty() && number.fraction.is_empty() {
            return Err(err(UnitErrorKind::Malformed));
        }
        let unit_len = number.rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(number.rest.len());
        let (unit, tail) = number.rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(err(UnitErrorKind::Malformed));
        }
        let unit_nanos = duration_unit_nanos(unit).ok_or_else(|| err(UnitErrorKind::UnknownUnit))?;
        total_nanos = scale(number.whole, number.fraction, unit_nanos)
            .and_then(|term| total_nanos.checked_add(term))
            .filter(|total| *total <= MAX_DURATION_NANOS)
            .ok_or_else(|| err(UnitErrorKind::TooLarge))?;
        rest = tail;
    }
    if negative && total_nanos != 0 {
        return Err(err(UnitErrorKind::Negative));
    }
    // In range: MAX_DURATION_NANOS fits u64.
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Multiplier of a size unit. As in Dragonfly's `unit.Bytes`, every prefix is binary whether or not
/// it carries the `i` (`1G` = `1Gi` = `1GiB` = 2^30), case-insensitively, with an optional `B`.
fn size_unit_bytes(unit: &str) -> Option<u128> {
    let lower = unit.to_ascii_lowercase();
    let prefix = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('i'))
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let shift = match prefix {
        "" if lower.is_empty() || lower == "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => return None,
    };
    Some(1u128 << shift)
}

/// Parses a byte size: a plain number of bytes (`1024`), or a number (fraction allowed, `1.5Gi`)
/// followed by a binary unit. A fraction of a byte is an error; a fraction of a larger unit is
/// floored.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let err = |kind| UnitError::new(kind, "size", text);
    if text.is_empty() {
        return Err(err(UnitErrorKind::Empty));
    }
    if text.len() > MAX_UNIT_TEXT_BYTES {
        return Err(err(UnitErrorKind::TooLong));
    }
    if text.starts_with('-') {
        return Err(err(UnitErrorKind::Negative));
    }
    let number = split_number(text.strip_prefix('+').unwrap_or(text));
    if number.whole.is_empty() && number.fraction.is_empty() {
        return Err(err(UnitErrorKind::Malformed));
    }
    let unit_bytes = size_unit_bytes(number.rest).ok_or_else(|| err(UnitErrorKind::UnknownUnit))?;
    if unit_bytes == 1 && number.fraction.bytes().any(|b| b != b'0') {
        return Err(err(UnitErrorKind::Malformed));
    }
    scale(number.whole, number.fraction, unit_bytes)
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| err(UnitErrorKind::TooLarge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use UnitErrorKind::*;

    const SEC: u64 = 1_000_000_000;

    fn check_duration(input: &str, expected: Result<u64, UnitErrorKind>) {
        let got = parse_duration(input).map(|d| d.as_nanos() as u64).map_err(|e| e.kind);
        assert_eq!(got, expected, "parse_duration({input:?})");
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Result<u64, UnitErrorKind>)] = &[
            ("30s", Ok(30 * SEC)),
            ("6h", Ok(6 * 3600 * SEC)),
            ("1m", Ok(60 * SEC)),
            ("1m30s", Ok(90 * SEC)),
            ("1m0s", Ok(60 * SEC)),
            ("1h0m0s", Ok(3600 * SEC)),
            ("10m0s", Ok(600 * SEC)),
            ("500ms", Ok(SEC / 2)),
            ("1.5h", Ok(5400 * SEC)),
            (".5s", Ok(SEC / 2)),
            ("5.s", Ok(5 * SEC)),
            ("1.0000000000000000000001s", Ok(SEC)),
            ("0", Ok(0)),
            ("+0", Ok(0)),
            ("-0", Ok(0)),
            ("0s", Ok(0)),
            ("-0s", Ok(0)),
            ("+5s", Ok(5 * SEC)),
            ("10us", Ok(10_000)),
            ("10\u{b5}s", Ok(10_000)),
            ("10\u{3bc}s", Ok(10_000)),
            ("7ns", Ok(7)),
            ("2h45m30.5s", Ok((2 * 3600 + 45 * 60 + 30) * SEC + SEC / 2)),
            ("2562047h", Ok(2_562_047 * 3600 * SEC)),
            ("2562048h", Err(TooLarge)),
            ("99999999999999999999999999999999999999999h", Err(TooLarge)),
            ("", Err(Empty)),
            ("-5s", Err(Negative)),
            ("5", Err(Malformed)),
            ("s", Err(Malformed)),
            (".s", Err(Malformed)),
            ("-", Err(Malformed)),
            ("1m30", Err(Malformed)),
            ("banana", Err(Malformed)),
            (" 5s", Err(Malformed)),
            ("5 s", Err(UnknownUnit)),
            ("5d", Err(UnknownUnit)),
            ("5S", Err(UnknownUnit)),
            ("5sec", Err(UnknownUnit)),
            (&"1s".repeat(40), Err(TooLong)),
        ];
        for (input, expected) in cases {
            check_duration(input, *expected);
        }
    }

    fn check_size(input: &str, expected: Result<u64, UnitErrorKind>) {
        let got = parse_size(input).map_err(|e| e.kind);
        assert_eq!(got, expected, "parse_size({input:?})");
    }

    #[test]
    fn sizes() {
        const KI: u64 = 1 << 10;
        const MI: u64 = 1 << 20;
        const GI: u64 = 1 << 30;
        let cases: &[(&str, Result<u64, UnitErrorKind>)] = &[
            ("0", Ok(0)),
            ("1024", Ok(1024)),
            ("+1024", Ok(1024)),
            ("10b", Ok(10)),
            ("10B", Ok(10)),
            ("10Ki", Ok(10 * KI)),
            ("100Mi", Ok(100 * MI)),
            ("1024Mi", Ok(1024 * MI)),
            ("50Gi", Ok(50 * GI)),
            ("1Ti", Ok(1 << 40)),
            ("1Pi", Ok(1 << 50)),
            ("1Ei", Ok(1 << 60)),
            // Dragonfly's unit.Bytes: every prefix is binary, with or without `i`, any case,
            // optional B.
            ("1K", Ok(KI)),
            ("1k", Ok(KI)),
            ("1M", Ok(MI)),
            ("1G", Ok(GI)),
            ("1GB", Ok(GI)),
            ("1gib", Ok(GI)),
            ("1GiB", Ok(GI)),
            ("1.5Gi", Ok(GI + GI / 2)),
            ("1.0Gi", Ok(GI)),
            ("0.5Ki", Ok(512)),
            (".5Ki", Ok(512)),
            ("1.0", Ok(1)),
            ("1.5", Err(Malformed)),
            ("15Ei", Ok(15 << 60)),
            ("16Ei", Err(TooLarge)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("18446744073709551616", Err(TooLarge)),
            ("", Err(Empty)),
            ("-1", Err(Negative)),
            ("-1Gi", Err(Negative)),
            ("Gi", Err(Malformed)),
            (".", Err(Malformed)),
            ("abc", Err(Malformed)),
            ("1i", Err(UnknownUnit)),
            ("1Xi", Err(UnknownUnit)),
            ("1 Gi", Err(UnknownUnit)),
            ("1Gii", Err(UnknownUnit)),
            ("1bb", Err(UnknownUnit)),
            (&"9".repeat(65), Err(TooLong)),
        ];
        for (input, expected) in cases {
            check_size(input, *expected);
        }
    }

    #[test]
    fn errors_name_the_input() {
        let message = parse_duration("banana").unwrap_err().to_string();
        assert!(message.contains("\"banana\""), "{message}");
        let message = parse_size("12Q").unwrap_err().to_string();
        assert!(message.contains("\"12Q\"") && message.contains("Gi"), "{message}");
    }
}
