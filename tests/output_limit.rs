//! Bounded output per connection (issue 10 item 9): the `--max-output` hard limit (and
//! the soft one) closes and counts a connection whose pending output passes it, Redis
//! refuses an `MGET` whose reply would pass it before building it, and a pipeline of
//! large replies to a slow reader is produced in budget-sized steps (resumed as output
//! drains, without a new read event) so pending output stays near the high watermark
//! while every reply still arrives byte-exact. On the reactor and the std engine.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::child::*;
use common::*;
use evloop::proto::resp::{Redis, RespConfig};
use evloop::serve::{Engine, Served, Settings, start};

/// A RESP multibulk command.
fn cmd(words: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        v.extend(format!("${}\r\n", w.len()).as_bytes());
        v.extend_from_slice(w);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// The bulk reply to a GET of `value`.
fn bulk(value: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

/// `SET key value` on `s`, checking the `+OK`.
fn set(s: &mut TcpStream, key: &[u8], value: &[u8]) {
    send(s, &cmd(&[b"SET", key, value]));
    assert_eq!(read_n(s, 5), b"+OK\r\n");
}

/// Reads until EOF or a reset.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// `evloop serve --proto redis` as a child process, with `extra` flags; its address.
fn spawn_redis(extra: &[&str]) -> (Kid, SocketAddr) {
    let mut cmd = evloop(&["serve", "--proto", "redis", "--listen", "127.0.0.1:0", "--loops", "1"]);
    cmd.args(extra);
    let (child, addr, _) = spawn_child_ready(cmd);
    (Kid::new(child), addr)
}

/// The peak resident set of process `pid` in KiB (VmHWM).
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM value")
}

/// `SET amp` (512 KiB), then one `MGET amp amp ...` of 300 keys: a 157 MB reply from a
/// 2.7 KB request. Refused before it is built; the server's peak memory stays far below.
fn mget_amplification(engine: &str) {
    let (child, addr) = spawn_redis(&["--engine", engine]);
    let mut s = connect(addr);
    set(&mut s, b"amp", &pattern(512 << 10, 1));
    let mut words: Vec<&[u8]> = vec![b"MGET"];
    words.extend(std::iter::repeat_n(&b"amp"[..], 300));
    send(&mut s, &cmd(&words));
    let got = until_closed(&mut s);
    let hwm = vm_hwm_kib(child.child().id());
    drop(child);
    assert_eq!(got, b"-ERR reply exceeds the output limit\r\n", "{engine}");
    assert!(hwm < 64 * 1024, "{engine}: VmHWM {hwm} KiB for a refused 157 MB reply");
}

#[test]
fn mget_amplification_is_refused_reactor() {
    mget_amplification("reactor");
}

#[test]
fn mget_amplification_is_refused_std() {
    mget_amplification("std");
}

fn serve(engine: Engine, settings: Settings) -> Served {
    let cfg = RespConfig { output_budget: 256 << 10, ..RespConfig::default() };
    start(engine, Redis::new(cfg), settings).expect("start")
}

/// 200 pipelined GETs of a 256 KiB value (50 MiB of replies) in one write, read slowly:
/// every reply arrives byte-exact, and the server's pending output stays bounded.
#[test]
fn a_pipeline_of_large_replies_to_a_slow_reader_stays_bounded() {
    let server = serve(Engine::Reactor, Settings::from(local_config(1)));
    let h = server.reactor().unwrap();
    let mut s = connect_small_rcvbuf(server.local_addrs()[0]);
    let value = pattern(256 << 10, 7);
    set(&mut s, b"big", &value);
    let n = 200;
    let mut pipeline = Vec::new();
    for _ in 0..n {
        pipeline.extend(cmd(&[b"GET", b"big"]));
    }
    send(&mut s, &pipeline);
    let want = bulk(&value);
    let mut got = vec![0u8; want.len()];
    for i in 0..n {
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(50)); // a slow reader
        }
        s.read_exact(&mut got).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert!(got == want, "reply {i} differs");
    }
    let peak = h.stats().total().peak_pending_output;
    // High watermark (1 MiB) + one call's budget (256 KiB) + one reply, with room.
    assert!(peak < 4 << 20, "peak pending output {peak} bytes for 50 MiB of replies");
    send(&mut s, &cmd(&[b"PING"]));
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
    server.shutdown().unwrap();
}

/// The same pipeline on the std engine: every reply arrives (the engine calls the
/// session again after writing when it stopped at its budget).
#[test]
fn a_pipeline_of_large_replies_is_answered_whole_std() {
    let server = serve(Engine::Std, Settings::from(local_config(1)));
    let mut s = connect(server.local_addrs()[0]);
    let value = pattern(256 << 10, 9);
    set(&mut s, b"big", &value);
    let mut pipeline = Vec::new();
    for _ in 0..40 {
        pipeline.extend(cmd(&[b"GET", b"big"]));
    }
    pipeline.extend(cmd(&[b"PING"]));
    send(&mut s, &pipeline);
    let want = bulk(&value);
    let mut got = vec![0u8; want.len()];
    for i in 0..40 {
        s.read_exact(&mut got).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert!(got == want, "reply {i} differs");
    }
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
    server.shutdown().unwrap();
}

/// A reply over the hard limit to a peer that does not read: closed and counted.
#[test]
fn the_reactor_closes_a_connection_over_the_hard_limit() {
    let settings = Settings {
        max_output: Some(1 << 20),
        // Small kernel buffers: the server must hold the rest itself.
        send_buffer: Some(64 << 10),
        ..Settings::from(local_config(1))
    };
    let server = serve(Engine::Reactor, settings);
    let h = server.reactor().unwrap();
    let addr = server.local_addrs()[0];
    let mut setter = connect(addr);
    set(&mut setter, b"v", &pattern(3 << 20, 3));
    let mut s = connect_small_rcvbuf(addr);
    send(&mut s, &cmd(&[b"GET", b"v"]));
    wait_until("the output limit close", || h.stats().total().output_limit_closes == 1);
    let got = until_closed(&mut s);
    assert!(got.len() < 3 << 20, "the whole reply arrived ({} bytes)", got.len());
    // Others are served.
    send(&mut setter, &cmd(&[b"PING"]));
    assert_eq!(read_n(&mut setter, 7), b"+PONG\r\n");
    let text = evloop::serve::metrics::render(Some(&h.stats()), server.proto_metrics());
    assert!(text.contains("evloop_output_limit_closes_total{loop=\"0\"} 1"), "{text}");
    server.shutdown().unwrap();
}

/// Above the soft limit for longer than its period: closed and counted.
#[test]
fn the_reactor_closes_a_connection_over_the_soft_limit_for_its_period() {
    let settings = Settings {
        max_output_soft: Some((256 << 10, Duration::from_secs(1))),
        send_buffer: Some(64 << 10),
        ..Settings::from(local_config(1))
    };
    let server = serve(Engine::Reactor, settings);
    let h = server.reactor().unwrap();
    let addr = server.local_addrs()[0];
    let mut setter = connect(addr);
    set(&mut setter, b"v", &pattern(2 << 20, 4));
    let mut s = connect_small_rcvbuf(addr);
    let started = Instant::now();
    send(&mut s, &cmd(&[b"GET", b"v"]));
    wait_until("the soft limit close", || h.stats().total().output_limit_closes == 1);
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(800), "closed after {after:?}, before the period");
    drop(s);
    server.shutdown().unwrap();
}

/// The std engine closes at the limit too: a reply over `--max-output` is not written.
#[test]
fn the_std_engine_closes_at_the_limit() {
    let (child, addr) = spawn_redis(&["--engine", "std", "--max-output", "1M"]);
    let mut s = connect(addr);
    set(&mut s, b"v", &pattern(2 << 20, 5));
    send(&mut s, &cmd(&[b"GET", b"v"]));
    let got = until_closed(&mut s);
    let mut other = connect(addr);
    other.write_all(&cmd(&[b"PING"])).unwrap();
    assert_eq!(read_n(&mut other, 7), b"+PONG\r\n");
    drop(child);
    assert!(got.is_empty(), "{} bytes of a reply over the limit", got.len());
}
