//! Fuzz target: arbitrary bytes as a whole HTTP response (head, then body).
//!
//! Properties: `parse_head` never panics; a complete head is complete only at its end (every
//! shorter prefix asks for more bytes) and re-parses identically; framing selection and body
//! decoding of whatever follows never panic and never report bytes outside their input.
#![no_main]

use dfget::http::body::{BodyDecoder, Step};
use dfget::http::codec::{framing, parse_head, ResponseHead};
use dfget::limits::MAX_HEAD_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, len))) = parse_head(data) else {
        return;
    };
    assert!(len > 0 && len <= data.len() && len <= MAX_HEAD_BYTES);
    let cut = usize::from(data[0]) * len / 256;
    assert_eq!(parse_head(&data[..cut]), Ok(None), "prefix {cut} of a {len}-byte head");
    assert_eq!(parse_head(&data[..len]), Ok(Some((head.clone(), len))));
    touch_accessors(&head);
    for request_was_head in [false, true] {
        if let Ok(f) = framing(&head, request_was_head) {
            decode_body(BodyDecoder::new(f), &data[len..]);
        }
    }
});

fn touch_accessors(head: &ResponseHead) {
    let _ = head.keep_alive();
    for name in ["content-length", "Transfer-Encoding", "connection", "x"] {
        let first = head.header(name);
        assert_eq!(first, head.headers_all(name).next());
        if let Some(s) = head.header_str(name) {
            assert_eq!(Some(s.as_bytes()), first);
        }
    }
}

/// Decodes `body` in one go, then reports end of input; checks every step stays in bounds.
fn decode_body(mut dec: BodyDecoder, mut body: &[u8]) {
    loop {
        match dec.decode(body) {
            Err(_) => return,
            Ok((n, step)) => {
                assert!(n <= body.len());
                match step {
                    Some(Step::Data { start, end }) => assert!(start < end && end <= n),
                    Some(Step::Done) => {
                        assert!(dec.is_done());
                        return;
                    }
                    None => {
                        assert_eq!(n, body.len());
                        let _ = dec.on_eof();
                        return;
                    }
                }
                body = &body[n..];
            }
        }
    }
}
