//! The HTTP/1.1 protocol over real sockets on both engines: routes and headers through a
//! real client (`ureq`), bodies (plain, chunked, `100-continue`), keep-alive, pipelining,
//! HTTP/1.0, every error status with its close, and garbage that must never stop the
//! server from serving everyone else.

mod common;

use std::io::{Cursor, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use evloop::proto::http::{Http, HttpConfig};
use evloop::serve::{Engine, Served, start};
use ureq::{Agent, SendBody};

const HELLO: &[u8] = b"Hello, World!";
/// Default `max_head_bytes`, `max_headers` and `max_body`.
const MAX_HEAD: usize = 8192;
const MAX_HEADERS: usize = 64;
const MAX_BODY: usize = 1 << 20;

/// Starts the HTTP protocol with the default limits on `engine`, two loops.
fn serve(engine: Engine) -> Served {
    let proto = Http::new(HttpConfig::default());
    assert_eq!(
        *proto.config(),
        HttpConfig { max_head_bytes: MAX_HEAD, max_headers: MAX_HEADERS, max_body: MAX_BODY },
        "the tests below are written for the default limits"
    );
    start(engine, proto, local_config(2)).expect("start http server")
}

fn addr(served: &Served) -> SocketAddr {
    served.local_addrs()[0]
}

fn url(served: &Served, path: &str) -> String {
    format!("http://{}{path}", addr(served))
}

/// An agent that returns every status as a response, bounded in time.
fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(LIMIT))
        .build()
        .new_agent()
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header value")
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn assert_imf_fixdate(date: &str) {
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    assert!(
        b.len() == 29
            && ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&date[..3])
            && &date[3..5] == ", "
            && digits(5..7)
            && b[7] == b' '
            && digits(12..16)
            && digits(17..19)
            && b[19] == b':'
            && digits(20..22)
            && b[22] == b':'
            && digits(23..25)
            && date.ends_with(" GMT"),
        "not an IMF-fixdate: {date:?}"
    );
}

/// Runs `f` on both engines.
fn both(f: fn(Engine)) {
    f(Engine::Reactor);
    f(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// A raw client that parses responses independently of the server's code.

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    /// The value of the only field called `name` (case-insensitive); panics if absent
    /// or repeated.
    fn header(&self, name: &str) -> &str {
        let mut found = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let (_, v) = found.next().unwrap_or_else(|| panic!("no {name} in {:?}", self.headers));
        assert!(found.next().is_none(), "{name} repeated: {:?}", self.headers);
        v
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// A `200 Hello, World!` on a persistent connection, every header checked.
    fn assert_hello(&self) {
        assert_eq!(self.status_line, "HTTP/1.1 200 OK");
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Server", "Date", "Content-Type", "Content-Length"], "{self:?}");
        assert_eq!(self.header("Server"), "evloop");
        assert_imf_fixdate(self.header("Date"));
        assert_eq!(self.header("Content-Type"), "text/plain");
        assert_eq!(self.header("Content-Length"), "13");
        assert_eq!(self.body, HELLO);
    }
}

/// How reading to the end of a connection finished.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    /// The server closed with unread input (or input arriving after it closed): a reset.
    Reset,
}

struct Client {
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client { stream: connect(addr), buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        send(&mut self.stream, bytes);
    }

    /// Reads more bytes into `buf`; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).expect("read a response");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill(),
                "EOF after {} of {n} bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one full response (`head_only`: a response to HEAD, no body follows).
    fn response_to(&mut self, head_only: bool) -> Resp {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill(),
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = self.take(head_end);
        let head = String::from_utf8(head).expect("ASCII response head");
        let mut lines = head[..head.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap().to_string();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.to_string(), v.to_string())
            })
            .collect();
        let mut resp = Resp { status_line, status, headers, body: Vec::new() };
        let len: usize = resp.header("Content-Length").parse().expect("numeric Content-Length");
        if !head_only {
            resp.body = self.take(len);
        }
        resp
    }

    fn response(&mut self) -> Resp {
        self.response_to(false)
    }

    /// Reads until the server closes; returns what came before the close (normally
    /// nothing) and how it ended. A read timeout fails the test.
    fn until_close(&mut self) -> (Vec<u8>, End) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return (std::mem::take(&mut self.buf), End::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return (std::mem::take(&mut self.buf), End::Reset);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("the server did not close the connection: {e}"),
            }
        }
    }

    /// The server closes with nothing more to say.
    fn assert_closed(&mut self) {
        let (rest, _) = self.until_close();
        assert!(
            rest.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// No bytes are waiting and the connection is still open (a short read timeout).
    fn assert_idle(&mut self) {
        assert!(self.buf.is_empty(), "unexpected bytes {:?}", self.buf);
        // Long enough for a wrongly scheduled close to arrive on a busy machine.
        self.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected an idle open connection, got {other:?}"),
        }
        self.stream.set_read_timeout(Some(LIMIT)).unwrap();
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn post_echo(body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    r
}

// ---------------------------------------------------------------------------------------
// 1. Routes and headers through ureq.

fn routes(engine: Engine) {
    let served = serve(engine);
    let agent = agent();
    for path in ["/", "/plaintext", "/plaintext?x=1&y=2"] {
        let mut resp = agent.get(url(&served, path)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        assert_eq!(header(&resp, "server"), "evloop");
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(header(&resp, "content-length"), "13");
        assert_imf_fixdate(header(&resp, "date"));
        assert!(resp.headers().get("connection").is_none());
        assert_eq!(resp.body_mut().read_to_vec().unwrap(), HELLO, "GET {path}");
    }

    let mut resp = agent.get(url(&served, "/nope")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(header(&resp, "server"), "evloop");
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "Not Found\n");

    for path in ["/", "/plaintext"] {
        let mut resp = agent.post(url(&served, path)).send_empty().unwrap();
        assert_eq!(resp.status().as_u16(), 405, "POST {path}");
        let allow = header(&resp, "allow");
        assert_eq!(allow, "GET, HEAD");
        assert!(allow.split(", ").any(|m| m == "GET"));
        assert_eq!(resp.body_mut().read_to_string().unwrap(), "Method Not Allowed\n");
    }
    let mut resp = agent.get(url(&served, "/echo")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(header(&resp, "allow"), "POST");
    resp.body_mut().read_to_vec().unwrap();

    let mut resp = agent.head(url(&served, "/")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-length"), "13");
    assert_eq!(header(&resp, "content-type"), "text/plain");
    assert!(resp.body_mut().read_to_vec().unwrap().is_empty());

    // ureq knows HEAD has no body; prove on the wire that none is sent: the next
    // response starts right after the head.
    let mut c = Client::new(addr(&served));
    let mut two = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    two.extend_from_slice(&get("/"));
    c.send(&two);
    let head = c.response_to(true);
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    assert_eq!(head.header("Content-Length"), "13");
    c.response().assert_hello();
    c.assert_idle();
    served.shutdown().unwrap();
}

#[test]
fn routes_and_headers_reactor() {
    routes(Engine::Reactor);
}

#[test]
fn routes_and_headers_std() {
    routes(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 2, 3. Echo bodies: Content-Length and chunked.

fn echo_100k(engine: Engine) {
    let served = serve(engine);
    let body = pattern(100 * 1024, 42);
    let mut resp = agent().post(url(&served, "/echo")).send(&body[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "content-length"), (100 * 1024).to_string());
    let got = resp.body_mut().read_to_vec().unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "echoed body differs");
    served.shutdown().unwrap();
}

#[test]
fn echo_of_100_kib_is_byte_exact_reactor() {
    echo_100k(Engine::Reactor);
}

#[test]
fn echo_of_100_kib_is_byte_exact_std() {
    echo_100k(Engine::Std);
}

/// What ureq writes for a body from a reader of unknown length, captured by a plain
/// listener: proves the chunked test below really sends chunks.
fn ureq_reader_upload_on_the_wire() -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let capture = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "EOF before the last chunk");
            got.extend_from_slice(&b[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        tx.send(got).unwrap();
    });
    let mut resp = agent()
        .post(format!("http://{at}/echo"))
        .send(SendBody::from_owned_reader(Cursor::new(b"abcdef".to_vec())))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut().read_to_vec().unwrap();
    capture.join().unwrap();
    rx.recv().unwrap()
}

fn chunked_upload(engine: Engine) {
    let wire = ureq_reader_upload_on_the_wire();
    let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n") && !text.contains("content-length"),
        "ureq did not send a reader body chunked: {text:?}"
    );
    assert!(text.ends_with("\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n"), "{text:?}");

    let served = serve(engine);
    let body = pattern(300 * 1024, 9);
    let mut resp = agent()
        .post(url(&served, "/echo"))
        .send(SendBody::from_owned_reader(Cursor::new(body.clone())))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-length"), body.len().to_string());
    let got = resp.body_mut().read_to_vec().unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "echoed chunked body differs");

    // Raw: extensions, odd sizes, uppercase hex and a trailer, then the connection is
    // reused.
    let mut c = Client::new(addr(&served));
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\nB\r\n, chunked w\r\n5 ; x\r\norld!\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("Content-Type"), "application/octet-stream");
    assert_eq!(r.body, b"hello, chunked world!");
    c.send(&get("/"));
    c.response().assert_hello();
    c.assert_idle();
    served.shutdown().unwrap();
}

#[test]
fn chunked_upload_is_echoed_byte_exact_reactor() {
    chunked_upload(Engine::Reactor);
}

#[test]
fn chunked_upload_is_echoed_byte_exact_std() {
    chunked_upload(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 4. Keep-alive.

fn keep_alive(engine: Engine) {
    let served = serve(engine);
    let agent = agent();
    let u = url(&served, "/");
    for i in 0..50 {
        let mut resp = agent.get(&u).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "request {i}");
        assert_eq!(resp.body_mut().read_to_vec().unwrap(), HELLO, "request {i}");
    }
    if let Some(h) = served.reactor() {
        let s = total(&h);
        assert_eq!(s.accepted, 1, "50 requests on one agent must reuse one connection");
        assert_eq!(s.closed, 0);
    }
    served.shutdown().unwrap();
}

#[test]
fn fifty_requests_reuse_one_connection_reactor() {
    keep_alive(Engine::Reactor);
}

#[test]
fn fifty_requests_reuse_one_connection_std() {
    keep_alive(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 5. Pipelining.

fn pipelining(engine: Engine) {
    let served = serve(engine);
    let mut c = Client::new(addr(&served));
    let sixteen: Vec<u8> = (0..16).flat_map(|_| get("/")).collect();
    c.send(&sixteen);
    for _ in 0..16 {
        c.response().assert_hello();
    }
    c.assert_idle();

    // A mix, all in one write; the request after `Connection: close` must be ignored.
    let echo_body = pattern(3000, 5);
    let mut mix = get("/plaintext");
    mix.extend_from_slice(&post_echo(&echo_body));
    mix.extend_from_slice(b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    mix.extend_from_slice(&get("/missing"));
    mix.extend_from_slice(&post_echo(b""));
    mix.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    mix.extend_from_slice(&get("/"));
    c.send(&mix);
    c.response().assert_hello();
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), "application/octet-stream");
    assert!(r.body == echo_body, "pipelined echo differs");
    let r = c.response_to(true);
    assert_eq!((r.status, r.header("Content-Length")), (200, "13"));
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (404, &b"Not Found\n"[..]));
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), "close");
    assert_eq!(r.body, HELLO);
    c.assert_closed();
    served.shutdown().unwrap();
}

#[test]
fn pipelined_requests_are_answered_in_order_reactor() {
    pipelining(Engine::Reactor);
}

#[test]
fn pipelined_requests_are_answered_in_order_std() {
    pipelining(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 6. Error statuses and the limits' boundaries.

/// Sends `request` in one write; the server must answer `status_line` with
/// `Connection: close` and the status text as body, then close.
fn assert_error(served: &Served, request: &[u8], status_line: &str) {
    let mut c = Client::new(addr(served));
    c.send(request);
    let r = c.response();
    let shown = String::from_utf8_lossy(&request[..request.len().min(80)]);
    assert_eq!(r.status_line, status_line, "request {shown:?}");
    assert_eq!(r.header("Connection"), "close", "request {shown:?}");
    assert_eq!(r.header("Content-Type"), "text/plain");
    assert_eq!(r.header("Server"), "evloop");
    assert_imf_fixdate(r.header("Date"));
    let text = status_line.split_once(' ').unwrap().1.split_once(' ').unwrap().1;
    assert_eq!(r.body, format!("{text}\n").as_bytes(), "request {shown:?}");
    c.assert_closed();
}

/// A request head of exactly `len` bytes: padded with an `X-Pad` field.
fn head_of_len(len: usize, complete: bool) -> Vec<u8> {
    let mut h = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    let tail: &[u8] = if complete { b"\r\n\r\n" } else { b"" };
    h.resize(len - tail.len(), b'a');
    h.extend_from_slice(tail);
    assert_eq!(h.len(), len);
    h
}

fn head_with_fields(n: usize) -> Vec<u8> {
    let mut h = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..n {
        h.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn errors(engine: Engine) {
    let served = serve(engine);
    let s = &served;

    // 431: a head not complete within 8 KiB (exactly 8192 bytes sent, so the server has
    // read everything when it answers), and 65 fields.
    assert_error(s, &head_of_len(MAX_HEAD, false), "HTTP/1.1 431 Request Header Fields Too Large");
    assert_error(
        s,
        &head_with_fields(MAX_HEADERS + 1),
        "HTTP/1.1 431 Request Header Fields Too Large",
    );
    // ... while exactly at the limits is fine.
    let mut c = Client::new(addr(s));
    c.send(&head_of_len(MAX_HEAD, true));
    c.response().assert_hello();
    c.send(&head_with_fields(MAX_HEADERS));
    c.response().assert_hello();
    c.assert_idle();

    // 413: declared or chunked lengths over 1 MiB, refused before any body is sent.
    for cl in [2 * MAX_BODY, MAX_BODY + 1] {
        assert_error(
            s,
            format!("POST /echo HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
            "HTTP/1.1 413 Content Too Large",
        );
    }
    assert_error(
        s,
        format!("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY + 1)
            .as_bytes(),
        "HTTP/1.1 413 Content Too Large",
    );
    // ... while exactly 1 MiB is echoed.
    let big = pattern(MAX_BODY, 77);
    let mut c = Client::new(addr(s));
    c.send(&post_echo(&big));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.body == big, "1 MiB echo differs");

    // 400: garbage request lines, smuggling shapes, bad lengths and chunk framing.
    for bad in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"G{T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
    ] {
        assert_error(s, bad, "HTTP/1.1 400 Bad Request");
    }
    // 501 and 505.
    assert_error(
        s,
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 501 Not Implemented",
    );
    for version in ["HTTP/2.0", "HTTP/1.2"] {
        assert_error(
            s,
            format!("GET / {version}\r\n\r\n").as_bytes(),
            "HTTP/1.1 505 HTTP Version Not Supported",
        );
    }

    // An error after pipelined good requests: their answers come first.
    let mut c = Client::new(addr(s));
    let mut req = get("/");
    req.extend_from_slice(&post_echo(b"abc"));
    req.extend_from_slice(b"GET / HTTP/2.0\r\n\r\n");
    req.extend_from_slice(&get("/"));
    c.send(&req);
    c.response().assert_hello();
    assert_eq!(c.response().body, b"abc");
    let r = c.response();
    assert_eq!(r.status, 505);
    assert_eq!(r.header("Connection"), "close");
    c.assert_closed();

    // Equal repeated lengths are fine.
    let mut c = Client::new(addr(s));
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello");
    assert_eq!(c.response().body, b"hello");
    c.assert_idle();
    served.shutdown().unwrap();
}

#[test]
fn error_statuses_close_the_connection_reactor() {
    errors(Engine::Reactor);
}

#[test]
fn error_statuses_close_the_connection_std() {
    errors(Engine::Std);
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn expect_continue(engine: Engine) {
    let served = serve(engine);
    let body = pattern(20_000, 3);
    let mut c = Client::new(addr(&served));
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.take(CONTINUE.len()), CONTINUE);
    c.assert_idle();
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echo after 100 Continue differs");

    // Chunked, too; and only one interim response however the body trickles in.
    c.send(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.take(CONTINUE.len()), CONTINUE);
    c.send(b"3\r\nabc\r\n");
    c.assert_idle();
    c.send(b"2\r\nde\r\n0\r\n\r\n");
    assert_eq!(c.response().body, b"abcde");

    // A body that arrives with the head gets no interim response.
    c.send(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
    c.assert_idle();
    served.shutdown().unwrap();
}

#[test]
fn expect_100_continue_reactor() {
    expect_continue(Engine::Reactor);
}

#[test]
fn expect_100_continue_std() {
    expect_continue(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 7. HTTP/1.0.

fn http10(engine: Engine) {
    let served = serve(engine);
    let mut c = Client::new(addr(&served));
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("Connection"), "close");
    assert_eq!(r.body, HELLO);
    c.assert_closed();

    let mut c = Client::new(addr(&served));
    for path in ["/", "/plaintext"] {
        c.send(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), "keep-alive");
        assert_eq!(r.body, HELLO);
        c.assert_idle();
    }
    c.send(b"POST /echo HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\nxyz");
    let r = c.response();
    assert_eq!((r.header("Connection"), &r.body[..]), ("keep-alive", &b"xyz"[..]));
    c.assert_idle();
    // Without keep-alive the connection ends after this one.
    c.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.header("Connection"), &r.body[..]), ("close", HELLO));
    c.assert_closed();
    // HTTP/1.1 is persistent without the header and answers none.
    let mut c = Client::new(addr(&served));
    c.send(&get("/"));
    let r = c.response();
    assert!(!r.has("Connection"));
    c.assert_idle();
    served.shutdown().unwrap();
}

#[test]
fn http_1_0_closes_unless_keep_alive_reactor() {
    http10(Engine::Reactor);
}

#[test]
fn http_1_0_closes_unless_keep_alive_std() {
    http10(Engine::Std);
}

// ---------------------------------------------------------------------------------------
// 8. Garbage in.

/// Bound on each garbage connection's close.
const GARBAGE_LIMIT: Duration = Duration::from_secs(5);

/// One hostile client: what it sent and how the server answered.
fn hostile(addr: SocketAddr, i: u64) -> Result<(), String> {
    let mut c = Client::new(addr);
    c.stream.set_read_timeout(Some(GARBAGE_LIMIT)).unwrap();
    c.stream.set_write_timeout(Some(GARBAGE_LIMIT)).unwrap();
    let noise = pattern(64 * 1024, 1000 + i);
    let (input, half_close): (Vec<u8>, bool) = match i % 5 {
        // Pure noise.
        0 | 1 => (noise, false),
        // A plausible start, then noise.
        2 => {
            let mut v = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            v.extend_from_slice(&noise);
            (v, false)
        }
        // Truncated requests, then the write side closes.
        3 => (b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */".to_vec(), true),
        _ => (post_echo(&noise)[..1000].to_vec(), true),
    };
    // The server may close before reading everything: a failed write is fine.
    let _ = c.stream.write_all(&input);
    if half_close {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => break "eof",
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("client {i}: no close within the limit: {e}")),
        }
    };
    let text = String::from_utf8_lossy(&got);
    if half_close {
        // An incomplete request gets no answer: the server just closes.
        if !got.is_empty() || end != "eof" {
            return Err(format!("client {i}: truncated request: {end} after {text:?}"));
        }
    } else if !got.is_empty() {
        // Whatever arrived must be one error response with Connection: close.
        let ok = ["400", "413", "431", "501", "505"]
            .iter()
            .any(|s| text.starts_with(&format!("HTTP/1.1 {s} ")))
            && text.contains("\r\nConnection: close\r\n");
        if !ok {
            return Err(format!("client {i}: unexpected answer {text:?}"));
        }
    }
    Ok(())
}

fn garbage(engine: Engine) {
    let served = serve(engine);
    let at = addr(&served);
    let start = Instant::now();
    let clients: Vec<_> = (0..20).map(|i| thread::spawn(move || hostile(at, i))).collect();
    // A client that sends a partial request and vanishes without reading anything.
    {
        let mut s = connect(at);
        send(&mut s, b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
        thread::sleep(Duration::from_millis(50));
    }
    let failures: Vec<String> =
        clients.into_iter().filter_map(|t| t.join().unwrap().err()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(start.elapsed() < GARBAGE_LIMIT * 2);
    if let Some(h) = served.reactor() {
        wait_until("every garbage connection closed", || {
            let s = total(&h);
            s.accepted == 21 && s.closed == 21 && s.open == 0
        });
    }
    // The server still serves everyone else.
    let mut resp = agent().get(url(&served, "/")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.body_mut().read_to_vec().unwrap(), HELLO);
    let body = pattern(10_000, 8);
    let mut resp = agent().post(url(&served, "/echo")).send(&body).unwrap();
    assert!(resp.body_mut().read_to_vec().unwrap() == body);
    served.shutdown().unwrap();
}

#[test]
fn garbage_connections_are_closed_and_others_served_reactor() {
    garbage(Engine::Reactor);
}

#[test]
fn garbage_connections_are_closed_and_others_served_std() {
    garbage(Engine::Std);
}

/// Writes `bytes` and the FIN in one TCP segment (`TCP_CORK` holds the data back until
/// `shutdown` sets FIN on it), so the server sees data and EOF in one readiness event.
fn send_with_fin(s: &TcpStream, bytes: &[u8]) {
    let sock = socket2::SockRef::from(s);
    sock.set_tcp_cork(true).expect("TCP_CORK");
    let mut w = s;
    w.write_all(bytes).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
}

/// A client that writes its request and closes its write side at once (`nc -N`,
/// `curl --http1.0` style uploads): a complete request is answered, an incomplete one is
/// not, and either way the server closes since the peer will send nothing more.
fn eof_with_data(engine: Engine) {
    let served = serve(engine);
    for (input, answered) in [
        (get("/"), true),
        (b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(), false),
        (post_echo(b"0123456789")[..60].to_vec(), false),
    ] {
        let mut c = Client::new(addr(&served));
        c.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        send_with_fin(&c.stream, &input);
        if answered {
            c.response().assert_hello();
        }
        let (rest, end) = c.until_close();
        assert_eq!((rest.len(), end), (0, End::Eof), "input {input:?}");
    }
    if let Some(h) = served.reactor() {
        wait_until("all closed", || total(&h).open == 0);
    }
    served.shutdown().unwrap();
}

/// Regression: the FIN arriving in the same readiness event as the data used to go
/// unseen (a short read ended the read loop) and the connection stayed open forever.
#[test]
fn eof_arriving_with_data_closes_reactor() {
    eof_with_data(Engine::Reactor);
}

#[test]
fn eof_arriving_with_data_closes_std() {
    eof_with_data(Engine::Std);
}

/// The server stops promptly with idle keep-alive and half-sent connections open.
#[test]
fn shutdown_with_open_connections_is_prompt() {
    both(|engine| {
        let served = serve(engine);
        let mut idle = Client::new(addr(&served));
        idle.send(&get("/"));
        idle.response().assert_hello();
        let mut partial = Client::new(addr(&served));
        partial.send(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nab");
        let t = Instant::now();
        served.shutdown().unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        idle.assert_closed();
        let (rest, end) = partial.until_close();
        assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
        assert!(
            rest.is_empty(),
            "half-sent request answered: {:?}",
            String::from_utf8_lossy(&rest)
        );
    });
}
