//! Fuzz target: the chunked body decoder.
//!
//! Properties: the outcome (body bytes, bytes consumed, or error kind) is the same whether the
//! input arrives whole, in pieces of any size, or one byte at a time — the decoder is resumable
//! at every byte boundary; and any body we chunk-encode ourselves decodes back to itself.
#![no_main]

use dfget::http::body::{BodyDecoder, Step};
use dfget::http::codec::{Framing, HttpErrorKind};
use libfuzzer_sys::fuzz_target;

/// Largest input also fed one byte at a time (one decode call per byte; keeps runs fast).
const MAX_BYTEWISE_LEN: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, usize::MAX);
    let step = usize::from(mode % 16) + 1;
    assert_eq!(decode(input, step), whole, "pieces of {step}");
    if input.len() <= MAX_BYTEWISE_LEN {
        assert_eq!(decode(input, 1), whole, "byte-wise");
    }
    round_trip(input, mode);
});

type Outcome = Result<(Vec<u8>, usize), HttpErrorKind>;

/// Feeds `input` in pieces of `step` bytes, like a socket reader that appends to a buffer and
/// drops what the decoder consumed. Returns the body and the bytes consumed in all.
fn decode(input: &[u8], step: usize) -> Outcome {
    let mut dec = BodyDecoder::new(Framing::Chunked);
    let (mut buf, mut body) = (Vec::new(), Vec::new());
    let (mut fed, mut consumed) = (0, 0);
    loop {
        let (n, out) = dec.decode(&buf).map_err(|e| e.kind)?;
        assert!(n <= buf.len());
        match out {
            Some(Step::Data { start, end }) => {
                assert!(start < end && end <= n);
                body.extend_from_slice(&buf[start..end]);
            }
            Some(Step::Done) => return Ok((body, consumed + n)),
            None if fed == input.len() => {
                dec.on_eof().map_err(|e| e.kind)?;
                unreachable!("chunked body ended by EOF without an error");
            }
            None => {
                assert_eq!(n, buf.len());
                let next = fed.saturating_add(step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
        }
        buf.drain(..n);
        consumed += n;
    }
}

/// Chunk-encodes `body` with sizes, extensions and trailers chosen by `mode`; decoding must give
/// `body` back and consume exactly the encoding.
fn round_trip(body: &[u8], mode: u8) {
    let chunk_len_bytes = usize::from(mode % 7) + 1;
    let mut wire = Vec::new();
    for chunk in body.chunks(chunk_len_bytes) {
        wire.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if mode & 0x10 != 0 {
            wire.extend_from_slice(b";ext=\"v\"");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n");
    if mode & 0x20 != 0 {
        wire.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let wire_len = wire.len();
    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    assert_eq!(decode(&wire, usize::from(mode >> 6) + 1), Ok((body.to_vec(), wire_len)));
}
