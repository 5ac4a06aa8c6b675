//! Fuzz target: any bytes as a request on the daemon's socket, through the code that reads it
//! (`daemon::serving::parse_head`, the body as `Content-Length` frames it) and routes it
//! (`proto::ApiRequest::parse`). Nothing panics, and a routed request other than a download renders
//! (`ApiRequest::target`) to a method and target that route back to the same request.
#![no_main]

use dfget::daemon::serving::parse_head;
use dfget::proto::ApiRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data) else { return };
    let rest = &data[head.head_len..];
    let body = &rest[..rest.len().min(head.content_len)];
    if let Ok(req) = ApiRequest::parse(&head.method, &head.path, body) {
        if !matches!(req, ApiRequest::Download(_)) {
            let (method, target) = req.target();
            assert_eq!(ApiRequest::parse(method, &target, b"").ok(), Some(req));
        }
    }
});
