//! The length-prefixed frame echo protocol end to end, on both engines: sticky and split
//! packets, the frame size limit, many concurrent connections.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use common::*;
use evloop::proto::frame::{Frame, FrameConfig, HEADER_LEN, decode, encode};
use evloop::serve::{Engine, Served, start};

fn serve(engine: Engine, loops: usize, max_frame: usize) -> Served {
    start(engine, Frame::new(FrameConfig { max_frame }), local_config(loops))
        .expect("start frame server")
}

/// Deterministic xorshift numbers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `count` payloads of random sizes below `max_len`, with random contents.
fn payloads(count: usize, max_len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    (0..count).map(|i| pattern(rng.below(max_len), seed.wrapping_mul(1000) + i as u64)).collect()
}

fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in payloads {
        encode(p, &mut v).expect("encode");
    }
    v
}

/// Decodes `stream` into frames, checking it holds exactly `payloads` and nothing else.
fn check_frames(stream: &[u8], payloads: &[Vec<u8>], max: usize) {
    let mut at = 0;
    for (i, want) in payloads.iter().enumerate() {
        let (got, len) = decode(&stream[at..], max)
            .expect("echoed header within the limit")
            .unwrap_or_else(|| panic!("frame {i} incomplete in the echo"));
        assert_eq!(len, HEADER_LEN + want.len(), "frame {i} length");
        assert!(got == &want[..], "frame {i} payload differs");
        at += len;
    }
    assert_eq!(at, stream.len(), "bytes after the last frame");
}

/// Reads until the server closes (EOF, or a reset after its last bytes); panics on a
/// timeout.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return v,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return v,
            Err(e) => panic!("no close from the server ({e}) after {} bytes", v.len()),
        }
    }
}

/// Writes `stream` in pieces of 1..=700 bytes (one write each) from another thread and
/// returns the server's echo of exactly `stream.len()` bytes.
fn echo_in_pieces(addr: SocketAddr, stream: &[u8], seed: u64) -> (TcpStream, Vec<u8>) {
    let mut s = connect(addr);
    let mut writer = s.try_clone().unwrap();
    let data = stream.to_vec();
    let w = thread::spawn(move || {
        let mut rng = Rng(seed | 1);
        let mut at = 0;
        let mut writes = 0u32;
        while at < data.len() {
            let end = (at + 1 + rng.below(700)).min(data.len());
            writer.write_all(&data[at..end]).expect("write piece");
            at = end;
            writes += 1;
            if writes.is_multiple_of(16) {
                // Now and then let the server catch up, so reads end mid-frame too.
                thread::yield_now();
            }
        }
    });
    let got = read_n(&mut s, stream.len());
    w.join().unwrap();
    (s, got)
}

// 1. Sticky and split packets.

fn sticky_and_split(engine: Engine) {
    let server = serve(engine, 2, FrameConfig::default().max_frame);
    let addr = server.local_addrs()[0];
    for seed in [1u64, 2, 3] {
        let frames = payloads(100, 5000, seed);
        let stream = framed(&frames);
        let (mut s, got) = echo_in_pieces(addr, &stream, seed + 77);
        assert!(got == stream, "seed {seed}: echo differs from the stream");
        check_frames(&got, &frames, 5000);
        // Nothing more than the echo.
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_closed(&mut s), b"", "seed {seed}: extra bytes");
    }
    // Empty frames only, all in one write: each echoed as a bare header.
    let mut s = connect(addr);
    let empties = vec![Vec::new(); 10];
    send(&mut s, &framed(&empties));
    assert_eq!(read_n(&mut s, 10 * HEADER_LEN), vec![0u8; 10 * HEADER_LEN]);
    // A frame split inside its header, one byte at a time, is echoed only once whole.
    let one = framed(&[b"split header".to_vec()]);
    for b in &one {
        send(&mut s, std::slice::from_ref(b));
        thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(read_n(&mut s, one.len()), one);
    server.shutdown().unwrap();
}

#[test]
fn sticky_and_split_packets_reactor() {
    sticky_and_split(Engine::Reactor);
}

#[test]
fn sticky_and_split_packets_std() {
    sticky_and_split(Engine::Std);
}

// 2. The frame size limit.

fn size_limit(engine: Engine) {
    const MAX: usize = 64 * 1024;
    let server = serve(engine, 2, MAX);
    let addr = server.local_addrs()[0];

    let mut s = connect(addr);
    let biggest = framed(&[pattern(MAX, 5)]);
    send(&mut s, &biggest);
    assert!(read_n(&mut s, biggest.len()) == biggest, "max_frame echo");

    // Frames before the oversized header are echoed; then the server closes.
    let before = framed(&[pattern(MAX, 6), b"last good".to_vec()]);
    let mut request = before.clone();
    request.extend_from_slice(&(MAX as u32 + 1).to_be_bytes());
    send(&mut s, &request);
    let got = read_until_closed(&mut s);
    assert_eq!(got.len(), before.len(), "only the frames before the bad header");
    assert!(got == before);

    // An oversized header alone, and one announcing 4 GiB - 1, close without a reply.
    for header in [(MAX as u32 + 1).to_be_bytes(), u32::MAX.to_be_bytes()] {
        let mut s = connect(addr);
        send(&mut s, &header);
        assert_eq!(read_until_closed(&mut s), b"", "header {header:?}");
    }

    // Another connection is still served.
    let frames = payloads(10, 2000, 9);
    let stream = framed(&frames);
    let mut s = connect(addr);
    send(&mut s, &stream);
    let got = read_n(&mut s, stream.len());
    check_frames(&got, &frames, MAX);
    server.shutdown().unwrap();
}

#[test]
fn frame_size_limit_reactor() {
    size_limit(Engine::Reactor);
}

#[test]
fn frame_size_limit_std() {
    size_limit(Engine::Std);
}

// 3. Many connections at once.

fn concurrent(engine: Engine) {
    const CONNS: u64 = 50;
    const FRAMES: usize = 200;
    let server = serve(engine, 4, FrameConfig::default().max_frame);
    let addr = server.local_addrs()[0];
    let clients: Vec<_> = (0..CONNS)
        .map(|c| {
            thread::spawn(move || {
                let frames = payloads(FRAMES, 1000, 500 + c);
                let stream = framed(&frames);
                let (_, got) = echo_in_pieces(addr, &stream, 900 + c);
                assert!(got == stream, "connection {c}: echo differs");
                check_frames(&got, &frames, 1000);
            })
        })
        .collect();
    for (c, t) in clients.into_iter().enumerate() {
        t.join().unwrap_or_else(|_| panic!("connection {c} failed"));
    }
    if let Some(h) = server.reactor() {
        let per_loop: Vec<u64> = h.stats().loops.iter().map(|l| l.accepted).collect();
        assert_eq!(per_loop.iter().sum::<u64>(), CONNS, "accepted: {per_loop:?}");
        assert!(
            per_loop.iter().filter(|&&n| n > 0).count() >= 2,
            "all connections on one loop: {per_loop:?}"
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn fifty_concurrent_connections_reactor() {
    concurrent(Engine::Reactor);
}

#[test]
fn fifty_concurrent_connections_std() {
    concurrent(Engine::Std);
}
