//! HTTP request timeouts over real sockets (issue 10 item 1), nginx's model: the header
//! timeout runs from the first byte of each request head to its end, a body has its own
//! between-reads timeout, and a timeout on a request that has begun is answered with
//! `408 Request Timeout` and `Connection: close` before the close.
//!
//! Timing bounds are wide (a loaded machine): a slow client that keeps its requests
//! moving is never cut off, a stalled one is cut off within a few seconds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use evloop::proto::http::Http;
use evloop::serve::{Engine, Served, Settings, start};

/// An HTTP server on the reactor with these header and body timeouts.
fn serve(header: Duration, body: Duration) -> Served {
    let settings = Settings {
        request_timeout: Some(header),
        body_timeout: Some(body),
        ..Settings::from(local_config(2))
    };
    start(Engine::Reactor, Http::default(), settings).expect("start")
}

/// Reads one response (head and `Content-Length` body) from `s`, keeping what follows
/// in `buf`. `None` at EOF before a whole response.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse::<usize>().expect("content length"));
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Some((head, body));
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until EOF (or a reset); returns what came and when it ended.
fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (got, Instant::now()),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, Instant::now()),
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn is_408(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    text.starts_with("HTTP/1.1 408 Request Timeout\r\n")
        && text.contains("\r\nConnection: close\r\n")
        && text.contains("\r\nDate: ")
        && text.contains("\r\nContent-Length: ")
}

/// Writes `bytes` one at a time, `every` apart, from another thread, stopping at the
/// first failed write or after `max`.
fn trickle(
    s: &TcpStream,
    bytes: Vec<u8>,
    every: Duration,
    max: Duration,
) -> thread::JoinHandle<()> {
    let mut w = s.try_clone().expect("clone");
    thread::spawn(move || {
        let start = Instant::now();
        for b in bytes {
            if w.write_all(&[b]).is_err() || start.elapsed() > max {
                return;
            }
            thread::sleep(every);
        }
    })
}

#[test]
fn a_slow_body_is_not_cut_off_by_the_header_timeout() {
    let server = serve(Duration::from_secs(2), Duration::from_secs(2));
    let mut s = connect(server.local_addrs()[0]);
    send(&mut s, b"POST /echo HTTP/1.1\r\nContent-Length: 8\r\n\r\n");
    // 8 bytes, one per 0.5 s: the request takes about 4 s, twice the header timeout.
    let writer = trickle(&s, b"abcdefgh".to_vec(), Duration::from_millis(500), LIMIT);
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf).expect("a response, not a close");
    writer.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"abcdefgh");
    // And the connection still serves.
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    let (head, body) = read_response(&mut s, &mut buf).expect("still open");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && body == b"Hello, World!", "{head}");
    server.shutdown().unwrap();
}

#[test]
fn a_pipelining_client_whose_reads_straddle_requests_is_not_cut_off() {
    let server = serve(Duration::from_secs(2), Duration::from_secs(60));
    let mut s = connect(server.local_addrs()[0]);
    let start = Instant::now();
    send(&mut s, b"GET / HTTP/1.1\r\n\r\nGET / HT");
    let mut sent = 1;
    // Every 0.5 s for about 4 s: complete the pending request and start the next.
    while start.elapsed() < Duration::from_secs(4) {
        thread::sleep(Duration::from_millis(500));
        send(&mut s, b"TP/1.1\r\n\r\nGET / HT");
        sent += 1;
    }
    send(&mut s, b"TP/1.1\r\n\r\n");
    sent += 1;
    let mut buf = Vec::new();
    for i in 0..sent {
        let (head, body) =
            read_response(&mut s, &mut buf).unwrap_or_else(|| panic!("closed at response {i}"));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "response {i}: {head}");
        assert_eq!(body, b"Hello, World!");
    }
    assert!(sent >= 8, "only {sent} requests were sent");
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    assert!(read_response(&mut s, &mut buf).is_some(), "the connection was closed");
    server.shutdown().unwrap();
}

#[test]
fn a_slowloris_head_gets_408_then_close_at_the_header_timeout() {
    let server = serve(Duration::from_secs(2), Duration::from_secs(60));
    let h = server.reactor().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    let started = Instant::now();
    let head = format!("GET / HTTP/1.1\r\nX-Slow: {}", "a".repeat(100));
    let writer = trickle(&s, head.into_bytes(), Duration::from_millis(500), LIMIT);
    let (got, ended) = until_closed(&mut s);
    let after = ended - started;
    assert!(is_408(&got), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
        "closed after {after:?}"
    );
    drop(s);
    writer.join().unwrap();
    assert_eq!(h.stats().total().request_timeouts, 1);
    let errors = server.proto_metrics().errors();
    assert!(errors.contains(&("request_timeout", 1)), "{errors:?}");
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_body_gets_408_after_the_body_timeout() {
    let server = serve(Duration::from_secs(30), Duration::from_secs(1));
    let mut s = connect(server.local_addrs()[0]);
    send(&mut s, b"POST /echo HTTP/1.1\r\nContent-Length: 8\r\n\r\nab");
    let started = Instant::now();
    let (got, ended) = until_closed(&mut s);
    let after = ended - started;
    assert!(is_408(&got), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(6),
        "closed after {after:?}"
    );
    server.shutdown().unwrap();
}

#[test]
fn an_idle_keepalive_connection_is_not_a_request_in_progress() {
    // Between requests nothing is pending: the header timeout does not run.
    let server = serve(Duration::from_secs(1), Duration::from_secs(1));
    let mut s = connect(server.local_addrs()[0]);
    let mut buf = Vec::new();
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    assert!(read_response(&mut s, &mut buf).is_some());
    thread::sleep(Duration::from_millis(2500));
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    let (head, _) = read_response(&mut s, &mut buf).expect("still open after 2.5 s idle");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    server.shutdown().unwrap();
}

/// Kills the server child when dropped, so a failing assertion does not leave it running.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flags reach the server through the command line.
#[test]
fn the_cli_sends_408_to_a_slowloris_head() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["serve", "--proto", "http", "--listen", "127.0.0.1:0", "--loops", "1"])
        .args(["--header-timeout", "1s", "--body-timeout", "5s", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn evloop");
    let addr = ready_addr(&mut child);
    let child = Reap(child);
    let mut s = connect(addr);
    send(&mut s, b"GET / HT");
    let started = Instant::now();
    let (got, ended) = until_closed(&mut s);
    drop(child);
    assert!(is_408(&got), "{:?}", String::from_utf8_lossy(&got));
    assert!(ended - started < Duration::from_secs(5), "closed after {:?}", ended - started);
}

/// The address from the child's ready line (`evloop: serving http on ADDR (...)`).
fn ready_addr(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr");
    let mut line = String::new();
    std::io::BufReader::new(stderr).read_line(&mut line).expect("ready line");
    let addr = line.split(" on ").nth(1).and_then(|r| r.split(' ').next()).expect("address");
    addr.parse().unwrap_or_else(|_| panic!("bad ready line {line:?}"))
}
