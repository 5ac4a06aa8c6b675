//! Sans-IO response body decoder for the three HTTP/1.1 framings: Content-Length, chunked and
//! close-delimited.
//!
//! Invariant: decoding is resumable at any byte boundary. The decoder consumes every framing byte
//! it is shown and keeps what it learned in its own state, so the caller never re-feeds bytes and
//! never needs to buffer a partial chunk line; it never consumes a byte past the end of the body,
//! so what follows (the next response on a kept-alive connection) stays in the caller's buffer.

use crate::http::codec::{Framing, HttpError, HttpErrorKind};
use crate::limits::{MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

/// One result of [`BodyDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[start..end]` is body content; never empty.
    Data { start: usize, end: usize },
    /// The body is complete; nothing more of it will come.
    Done,
}

#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `remaining == 0` is the end of the body.
    Length {
        remaining: u64,
    },
    /// Until the peer closes; only `on_eof` ends it.
    Close,
    Chunked(Chunk),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Inside `chunk-size [ext] CRLF`; `line_bytes` counts bytes before the line end.
    Size {
        size: u64,
        n_digits: usize,
        part: SizePart,
        line_bytes: usize,
    },
    Data {
        remaining: u64,
    },
    /// Expecting the CR, then the LF that must follow chunk data.
    DataCr,
    DataLf,
    /// Skipping trailer fields up to the empty line; `total_bytes` counts the whole section.
    Trailer {
        line_bytes: usize,
        total_bytes: usize,
        seen_cr: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    Digits,
    /// Whitespace after the digits (some servers pad the size).
    Space,
    Ext,
    /// Saw CR: only LF may follow.
    Cr,
}

const FRESH_SIZE_LINE: Chunk = Chunk::Size { size: 0, n_digits: 0, part: SizePart::Digits, line_bytes: 0 };

impl BodyDecoder {
    pub fn new(f: Framing) -> Self {
        let state = match f {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Chunked(FRESH_SIZE_LINE),
            Framing::Close => State::Close,
        };
        Self { state }
    }

    /// Feeds `input`. Returns the bytes of `input` consumed (drop them before the next call) and
    /// `Some(step)`, or `None` when every byte was consumed and more input is needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Step>), HttpError> {
        match &mut self.state {
            State::Done => Ok((0, Some(Step::Done))),
            State::Length { remaining: 0 } => {
                self.state = State::Done;
                Ok((0, Some(Step::Done)))
            }
            State::Length { remaining } => {
                let n = take(remaining, input.len());
                Ok((n, data(0, n)))
            }
            State::Close => Ok((input.len(), data(0, input.len()))),
            State::Chunked(_) => self.decode_chunked(input),
        }
    }

    fn decode_chunked(&mut self, input: &[u8]) -> Result<(usize, Option<Step>), HttpError> {
        let mut pos = 0;
        loop {
            let State::Chunked(chunk) = &mut self.state else {
                // The trailer's last line moved us to Done.
                return Ok((pos, Some(Step::Done)));
            };
            if let Chunk::Data { remaining } = chunk {
                let n = take(remaining, input.len() - pos);
                if *remaining == 0 {
                    *chunk = Chunk::DataCr;
                }
                return Ok((pos + n, data(pos, pos + n)));
            }
            let Some(&byte) = input.get(pos) else {
                return Ok((pos, None));
            };
            pos += 1;
            self.state = match chunk_byte(*chunk, byte)? {
                Some(next) => State::Chunked(next),
                None => State::Done,
            };
        }
    }

    /// The peer closed the connection: fine if that ends the body (close-delimited, or already
    /// complete), else `UnexpectedEof`.
    pub fn on_eof(&mut self) -> Result<(), HttpError> {
        let missing = match self.state {
            State::Done | State::Length { remaining: 0 } | State::Close => {
                self.state = State::Done;
                return Ok(());
            }
            State::Length { remaining } => format!("{remaining} bytes of the body missing"),
            State::Chunked(Chunk::Data { remaining }) => {
                format!("{remaining} bytes of a chunk missing")
            }
            State::Chunked(Chunk::Trailer { .. }) => "inside the chunked trailer".to_owned(),
            State::Chunked(_) => "inside chunk framing".to_owned(),
        };
        Err(HttpError::new(HttpErrorKind::UnexpectedEof, missing))
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length { remaining: 0 })
    }

    /// Body bytes still owed under Length framing (`Some(0)` once complete, and for an empty
    /// body); `None` when the length is not known ahead.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length { remaining } => Some(remaining),
            State::Done => Some(0),
            State::Close | State::Chunked(_) => None,
        }
    }
}

/// Takes up to `available` bytes out of `remaining`; returns how many.
fn take(remaining: &mut u64, available: usize) -> usize {
    // `available` is a buffer length, so the min always fits in usize.
    let n = usize::try_from((*remaining).min(available as u64)).unwrap_or(available);
    *remaining -= n as u64;
    n
}

fn data(start: usize, end: usize) -> Option<Step> {
    (end > start).then_some(Step::Data { start, end })
}

fn bad_chunk(what: &str, byte: u8) -> HttpError {
    HttpError::new(HttpErrorKind::BadChunk, format!("{what} (byte 0x{byte:02x})"))
}

/// Advances the chunk framing by one byte (never a data byte). `None` means the body ended.
fn chunk_byte(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, HttpError> {
    let next = match chunk {
        Chunk::Size { size, n_digits, part, line_bytes } => {
            return size_line_byte(size, n_digits, part, line_bytes, byte).map(Some)
        }
        // `decode_chunked` handles data bytes itself.
        Chunk::Data { .. } => chunk,
        Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
        Chunk::DataLf if byte == b'\n' => FRESH_SIZE_LINE,
        Chunk::DataCr | Chunk::DataLf => return Err(bad_chunk("no CRLF after chunk data", byte)),
        Chunk::Trailer { line_bytes, total_bytes, seen_cr } => {
            return trailer_byte(line_bytes, total_bytes, seen_cr, byte)
        }
    };
    Ok(Some(next))
}

/// `chunk-size [ BWS ; chunk-ext ] CRLF`, bare LF accepted (RFC 9112 §2.2).
fn size_line_byte(size: u64, n_digits: usize, part: SizePart, line_bytes: usize, byte: u8) -> Result<Chunk, HttpError> {
    if byte == b'\n' {
        if n_digits == 0 {
            return Err(bad_chunk("chunk-size line without a size", byte));
        }
        return Ok(match size {
            0 => Chunk::Trailer { line_bytes: 0, total_bytes: 0, seen_cr: false },
            _ => Chunk::Data { remaining: size },
        });
    }
    if part == SizePart::Cr {
        return Err(bad_chunk("CR not followed by LF in chunk-size line", byte));
    }
    // The line ending does not count against the line limit.
    if byte == b'\r' {
        return Ok(Chunk::Size { size, n_digits, part: SizePart::Cr, line_bytes });
    }
    let line_bytes = line_bytes + 1;
    if line_bytes > MAX_CHUNK_LINE_BYTES {
        return Err(HttpError::new(
            HttpErrorKind::ChunkLineTooLong,
            format!("chunk-size line over {MAX_CHUNK_LINE_BYTES} bytes"),
        ));
    }
    let (size, n_digits, part) = match (part, byte) {
        (SizePart::Digits, _) if byte.is_ascii_hexdigit() => {
            let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
            let size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or_else(|| HttpError::new(HttpErrorKind::BadChunk, "chunk size overflows u64"))?;
            (size, n_digits + 1, SizePart::Digits)
        }
        (SizePart::Digits | SizePart::Space, b' ' | b'\t' | b';') if n_digits > 0 => {
            let part = if byte == b';' { SizePart::Ext } else { SizePart::Space };
            (size, n_digits, part)
        }
        // Extensions are ignored, but must not smuggle control bytes.
        (SizePart::Ext, _) if byte == b'\t' || (0x20..0x7f).contains(&byte) || byte >= 0x80 => {
            (size, n_digits, SizePart::Ext)
        }
        _ => return Err(bad_chunk("unexpected byte in chunk-size line", byte)),
    };
    Ok(Chunk::Size { size, n_digits, part, line_bytes })
}

/// Skips trailer fields up to the empty line. `None` = the body ended with this byte.
fn trailer_byte(line_bytes: usize, total_bytes: usize, seen_cr: bool, byte: u8) -> Result<Option<Chunk>, HttpError> {
    let total_bytes = total_bytes + 1;
    if total_bytes > MAX_TRAILER_BYTES {
        return Err(HttpError::new(
            HttpErrorKind::TrailerTooLarge,
            format!("trailer section over {MAX_TRAILER_BYTES} bytes"),
        ));
    }
    let line_bytes = match (seen_cr, byte) {
        (_, b'\n') if line_bytes == 0 => return Ok(None),
        (_, b'\n') => 0,
        (true, _) => return Err(bad_chunk("CR not followed by LF in trailer", byte)),
        (false, b'\r') => return Ok(Some(Chunk::Trailer { line_bytes, total_bytes, seen_cr: true })),
        (false, _) => line_bytes + 1,
    };
    Ok(Some(Chunk::Trailer { line_bytes, total_bytes, seen_cr: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpErrorKind::*;

    /// Feeds `input` to a fresh decoder in pieces cut at `cuts` (the caller keeps unconsumed
    /// bytes and appends the next piece, like a socket reader). Returns the body, the bytes left
    /// over after Done, or the first error. `Err(UnexpectedEof)` comes from `on_eof` when input
    /// runs out first.
    fn run(framing: Framing, input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Vec<u8>), HttpErrorKind> {
        let mut dec = BodyDecoder::new(framing);
        let mut buf = Vec::new();
        let mut body = Vec::new();
        let mut fed = 0;
        let mut bounds = cuts.iter().copied().chain([input.len()]);
        loop {
            let (n, step) = dec.decode(&buf).map_err(|e| e.kind)?;
            assert!(n <= buf.len());
            match step {
                Some(Step::Data { start, end }) => {
                    assert!(start < end && end <= n, "bad Data {start}..{end} n={n}");
                    body.extend_from_slice(&buf[start..end]);
                }
                Some(Step::Done) => {
                    assert!(dec.is_done());
                    buf.drain(..n);
                    buf.extend_from_slice(&input[fed..]);
                    return Ok((body, buf));
                }
                None => {
                    assert_eq!(n, buf.len(), "None must consume all input");
                    let Some(next) = bounds.next() else {
                        dec.on_eof().map_err(|e| e.kind)?;
                        assert!(dec.is_done());
                        return Ok((body, Vec::new()));
                    };
                    buf.drain(..n);
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                    continue;
                }
            }
            buf.drain(..n);
        }
    }

    /// Decodes `input` whole, split at every byte boundary, and one byte at a time; all must
    /// agree with `expected` (body, bytes left after the body).
    fn check_body(framing: Framing, input: &[u8], expected: Result<(&[u8], &[u8]), HttpErrorKind>) {
        let expected = expected.map(|(b, rest)| (b.to_vec(), rest.to_vec()));
        assert_eq!(run(framing, input, &[]), expected, "whole {input:?}");
        for cut in 0..=input.len() {
            assert_eq!(run(framing, input, &[cut]), expected, "cut {cut} {input:?}");
        }
        let bytewise: Vec<usize> = (0..=input.len()).collect();
        assert_eq!(run(framing, input, &bytewise), expected, "bytewise {input:?}");
    }

    #[test]
    fn chunked_table() {
        let c = Framing::Chunked;
        check_body(c, b"5\r\nhello\r\n0\r\n\r\n", Ok((b"hello", b"")));
        check_body(c, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nHTTP/1.1", Ok((b"hello world", b"HTTP/1.1")));
        check_body(c, b"0\r\n\r\n", Ok((b"", b"")));
        check_body(c, b"A\nabcdefghij\r\n0\n\n", Ok((b"abcdefghij", b"")));
        check_body(c, b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", Ok((b"abcdefghijklmnopqrstuvwxyz", b"")));
        check_body(c, b"00003;name=\"v a\";x\r\nabc\r\n0;e\r\n\r\n", Ok((b"abc", b"")));
        check_body(c, b"3  \t;x\r\nabc\r\n0 \r\n\r\n", Ok((b"abc", b"")));
        check_body(c, b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\n\r\nrest", Ok((b"abc", b"rest")));
        // Malformed framing.
        check_body(c, b"\r\nabc", Err(BadChunk));
        check_body(c, b"g\r\n", Err(BadChunk));
        check_body(c, b" 3\r\nabc\r\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"-1\r\n", Err(BadChunk));
        check_body(c, b"3 3\r\nabc\r\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"3;\0\r\nabc\r\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"3\rx\nabc\r\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"3\r\nabcX\r\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"3\r\nabc\n0\r\n\r\n", Err(BadChunk));
        check_body(c, b"3\r\nabc\r\r0\r\n\r\n", Err(BadChunk));
        check_body(c, b"0\r\nX: 1\rY\r\n\r\n", Err(BadChunk));
        check_body(c, b"ffffffffffffffff\r\n", Err(UnexpectedEof));
        check_body(c, b"10000000000000000\r\n", Err(BadChunk));
        // Cut short.
        check_body(c, b"5\r\nhel", Err(UnexpectedEof));
        check_body(c, b"5\r\nhello", Err(UnexpectedEof));
        check_body(c, b"5\r\nhello\r\n0\r\n", Err(UnexpectedEof));
        check_body(c, b"", Err(UnexpectedEof));
    }

    #[test]
    fn chunked_limits() {
        let mut long = vec![b'1'; 1];
        long.push(b';');
        long.resize(MAX_CHUNK_LINE_BYTES, b'x');
        let mut fits = long.clone();
        fits.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(run(Framing::Chunked, &fits, &[]), Ok((b"a".to_vec(), vec![])));
        long.push(b'x');
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        check_body(Framing::Chunked, &long, Err(ChunkLineTooLong));
        let leading_zeros = [vec![b'0'; MAX_CHUNK_LINE_BYTES + 1], b"1\r\na\r\n0\r\n\r\n".to_vec()].concat();
        assert_eq!(run(Framing::Chunked, &leading_zeros, &[]), Err(ChunkLineTooLong));

        // Trailer section: exactly MAX_TRAILER_BYTES including its final CRLF is fine.
        let trailer = |total: usize| {
            let mut v = b"0\r\nX: ".to_vec();
            v.resize(3 + total - 4, b'a');
            v.extend_from_slice(b"\r\n\r\n");
            v
        };
        assert_eq!(run(Framing::Chunked, &trailer(MAX_TRAILER_BYTES), &[]), Ok((vec![], vec![])));
        assert_eq!(run(Framing::Chunked, &trailer(MAX_TRAILER_BYTES + 1), &[]), Err(TrailerTooLarge));
        let many_lines = [b"0\r\n".to_vec(), b"X: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1), b"\r\n".to_vec()].concat();
        assert_eq!(run(Framing::Chunked, &many_lines, &[]), Err(TrailerTooLarge));
    }

    #[test]
    fn length_and_close_table() {
        check_body(Framing::Length(5), b"hello", Ok((b"hello", b"")));
        check_body(Framing::Length(5), b"helloHTTP", Ok((b"hello", b"HTTP")));
        check_body(Framing::Length(0), b"rest", Ok((b"", b"rest")));
        check_body(Framing::Empty, b"rest", Ok((b"", b"rest")));
        check_body(Framing::Length(5), b"hel", Err(UnexpectedEof));
        check_body(Framing::Length(5), b"", Err(UnexpectedEof));
        check_body(Framing::Close, b"anything at all", Ok((b"anything at all", b"")));
        check_body(Framing::Close, b"", Ok((b"", b"")));
        check_body(Framing::Length(u64::MAX), b"abc", Err(UnexpectedEof));
    }

    fn check_eof(framing: Framing, input: &[u8], expected: Result<(), &str>) {
        let mut dec = BodyDecoder::new(framing);
        let mut buf = input;
        while let (n, Some(Step::Data { .. })) = dec.decode(buf).unwrap() {
            buf = &buf[n..];
        }
        let got = dec.on_eof().map_err(|e| {
            assert_eq!(e.kind, UnexpectedEof);
            e.detail
        });
        assert_eq!(got.as_ref().copied().map_err(|d| d.as_str()), expected, "{framing:?} {input:?}");
    }

    #[test]
    fn on_eof_table() {
        check_eof(Framing::Close, b"abc", Ok(()));
        check_eof(Framing::Empty, b"", Ok(()));
        check_eof(Framing::Length(3), b"abc", Ok(()));
        check_eof(Framing::Length(10), b"abc", Err("7 bytes of the body missing"));
        check_eof(Framing::Chunked, b"5\r\nab", Err("3 bytes of a chunk missing"));
        check_eof(Framing::Chunked, b"5\r", Err("inside chunk framing"));
        check_eof(Framing::Chunked, b"0\r\nX: 1\r\n", Err("inside the chunked trailer"));
        check_eof(Framing::Chunked, b"0\r\n\r\n", Ok(()));
    }

    #[test]
    fn remaining_tracks_length() {
        let mut dec = BodyDecoder::new(Framing::Length(10));
        assert_eq!(dec.remaining(), Some(10));
        assert_eq!(dec.decode(b"abcd").unwrap(), (4, Some(Step::Data { start: 0, end: 4 })));
        assert_eq!(dec.remaining(), Some(6));
        assert!(!dec.is_done());
        assert_eq!(dec.decode(b"").unwrap(), (0, None));
        assert_eq!(dec.decode(b"efghijXYZ").unwrap(), (6, Some(Step::Data { start: 0, end: 6 })));
        assert_eq!(dec.remaining(), Some(0));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"XYZ").unwrap(), (0, Some(Step::Done)));
        assert_eq!(BodyDecoder::new(Framing::Chunked).remaining(), None);
        assert_eq!(BodyDecoder::new(Framing::Close).remaining(), None);
        assert_eq!(BodyDecoder::new(Framing::Empty).remaining(), Some(0));
    }
}
