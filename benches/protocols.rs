//! Micro-benchmarks of the sans-IO protocols: the per-request cost of parsing a request
//! and appending its reply, with no sockets involved.
//!
//! - `http/*`: `Http::on_input` for one `GET /`, 16 pipelined `GET /` in one
//!   input, and a `POST /echo` carrying a 4 KiB body.
//! - `resp/*`: `Redis::on_input` for a multibulk `PING`, `SET key <64 bytes>`,
//!   `GET key` (a 64-byte value), 16 pipelined `GET key`, and an inline `PING`.
//! - `frame/*`: the codec's `decode` and `encode` of a 4 KiB frame and of 16 small
//!   (32-byte) frames, and the frame echo session over the same inputs. `decode` only
//!   reads the 4-byte header and slices the payload, so its cost is per frame, not per
//!   byte; the echo session and `encode` copy the payload.
//!
//! Every benchmark reuses one session and one output `Vec` (cleared each iteration), so
//! the numbers are parse + execute + reply encoding, not allocation of sessions or
//! buffers. Each input is checked once, before timing, to be consumed whole without error.
//!
//! Run with `cargo bench --bench protocols` (add `-- --quick` for a short run, or a filter
//! such as `-- resp/` for one group).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evloop::proto::frame::{self, Frame, FrameConfig};
use evloop::proto::http::Http;
use evloop::proto::resp::Redis;
use evloop::proto::{Bound, Protocol};

/// Body size of the HTTP echo and payload size of the large frame.
const BIG: usize = 4096;
/// Requests (or frames) in one pipelined input.
const PIPELINE: usize = 16;
/// Payload size of a small frame.
const SMALL_FRAME: usize = 32;

/// Feeds `input` to `session` once and checks that all of it was consumed without error
/// or close, so a benchmark never measures an error path by mistake.
fn check<P: Protocol>(session: &mut Bound<P>, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let p = session.on_input(input, out).expect("benchmark input must be valid");
    assert_eq!(p.consumed, input.len(), "benchmark input must be consumed whole");
    assert!(!p.close, "benchmark input must keep the connection open");
    assert!(!out.is_empty(), "benchmark input must produce a reply");
}

/// Benchmarks `session.on_input(input)` with one reused output buffer.
fn bench_session<P: Protocol>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    session: &mut Bound<P>,
    input: &[u8],
) {
    let mut out = Vec::with_capacity(64 * 1024);
    check(session, input, &mut out);
    group.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            let p = session.on_input(black_box(input), &mut out);
            black_box(&out);
            black_box(p)
        })
    });
}

fn http(c: &mut Criterion) {
    let proto = Http::default();
    let mut group = c.benchmark_group("http");

    let get: &[u8] =
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
    group.throughput(Throughput::Elements(1));
    bench_session(&mut group, "get", &mut proto.open(), get);

    let pipelined = get.repeat(PIPELINE);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    bench_session(&mut group, "get_pipelined_16", &mut proto.open(), &pipelined);

    let mut post = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {BIG}\r\n\r\n"
    )
    .into_bytes();
    post.extend((0..BIG).map(|i| b'a' + (i % 26) as u8));
    group.throughput(Throughput::Bytes(BIG as u64));
    bench_session(&mut group, "post_echo_4KiB", &mut proto.open(), &post);

    group.finish();
}

/// A RESP2 multibulk request of `args`.
fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn resp(c: &mut Criterion) {
    let proto = Redis::default();
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Elements(1));

    let ping = multibulk(&[b"PING"]);
    bench_session(&mut group, "ping", &mut proto.open(), &ping);

    let value = [b'v'; 64];
    let set = multibulk(&[b"SET", b"key", &value]);
    let mut session = proto.open();
    bench_session(&mut group, "set_64B", &mut session, &set);

    // The key holds the 64-byte value from here on (checked by `check` above).
    let get = multibulk(&[b"GET", b"key"]);
    bench_session(&mut group, "get_64B", &mut session, &get);

    let pipelined = get.repeat(PIPELINE);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    bench_session(&mut group, "get_pipelined_16", &mut session, &pipelined);

    group.throughput(Throughput::Elements(1));
    bench_session(&mut group, "ping_inline", &mut session, b"PING\r\n");

    group.finish();
}

fn frames(c: &mut Criterion) {
    let config = FrameConfig::default();
    let max = config.max_frame;
    let proto = Frame::new(config);
    let mut group = c.benchmark_group("frame");

    let big_payload: Vec<u8> = (0..BIG).map(|i| i as u8).collect();
    let mut big = Vec::new();
    frame::encode(&big_payload, &mut big).expect("4 KiB fits a frame");

    let small_payload = [b's'; SMALL_FRAME];
    let mut small = Vec::new();
    for _ in 0..PIPELINE {
        frame::encode(&small_payload, &mut small).expect("32 bytes fit a frame");
    }

    // Codec: decode. It reads the header and slices the payload without touching it, so
    // its cost does not grow with the payload: counted in frames, not bytes.
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_4KiB", |b| b.iter(|| frame::decode(black_box(&big), max)));
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("decode_16x32B", |b| {
        b.iter(|| {
            let input = black_box(&small[..]);
            let mut at = 0;
            let mut n = 0;
            while let Ok(Some((payload, len))) = frame::decode(&input[at..], max) {
                black_box(payload);
                at += len;
                n += 1;
            }
            n
        })
    });

    // Codec: encode into a reused buffer.
    let mut out = Vec::with_capacity(64 * 1024);
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("encode_4KiB", |b| {
        b.iter(|| {
            out.clear();
            let r = frame::encode(black_box(&big_payload), &mut out);
            black_box(&out);
            r
        })
    });
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("encode_16x32B", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..PIPELINE {
                frame::encode(black_box(&small_payload), &mut out)?;
            }
            black_box(&out);
            Ok::<(), frame::FrameTooLarge>(())
        })
    });

    // The frame echo session: decode + copy each whole frame to the output.
    let mut session = proto.open();
    group.throughput(Throughput::Bytes(big.len() as u64));
    bench_session(&mut group, "session_echo_4KiB", &mut session, &big);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    bench_session(&mut group, "session_echo_16x32B", &mut session, &small);

    group.finish();
}

criterion_group!(benches, http, resp, frames);
criterion_main!(benches);
