//! Criterion micro-benchmarks of the hot sans-IO paths: response-head parsing and chunked body
//! decoding (bytes per second through the decoder). Run: `cargo bench --bench codec`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dfget::http::body::{BodyDecoder, Step};
use dfget::http::codec::{self, Framing};

const HEAD: &[u8] = b"HTTP/1.1 206 Partial Content\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 16:21:43 GMT\r\n\
Content-Type: application/octet-stream\r\nContent-Length: 4194304\r\nLast-Modified: Sun, 29 Nov 2026 16:21:40 GMT\r\n\
Connection: keep-alive\r\nETag: \"6936b6a4-1312d07\"\r\nContent-Range: bytes 0-4194303/20000007\r\n\r\n";

fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + total / chunk * 12 + 16);
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(0x5a, n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn decode_all(body: &[u8], read_size: usize) -> usize {
    let mut dec = BodyDecoder::new(Framing::Chunked);
    let mut got = 0usize;
    let mut pos = 0usize;
    let mut end = read_size.min(body.len());
    loop {
        match dec.decode(&body[pos..end]) {
            Ok((used, Some(Step::Data { start, end: e }))) => {
                got += e - start;
                pos += used;
            }
            Ok((_, Some(Step::Done))) => return got,
            Ok((used, None)) => {
                pos += used;
                end = (end + read_size).min(body.len());
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_head");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("nginx_206", |b| b.iter(|| codec::parse_head(std::hint::black_box(HEAD)).unwrap().unwrap()));
    g.finish();

    let body = chunked_body(4 << 20, 16 * 1024);
    let mut g = c.benchmark_group("chunked_decode");
    g.throughput(Throughput::Bytes(4 << 20));
    for read_size in [16 * 1024, 256 * 1024] {
        g.bench_with_input(BenchmarkId::from_parameter(read_size), &read_size, |b, &rs| {
            b.iter(|| assert_eq!(decode_all(&body, rs), 4 << 20))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
