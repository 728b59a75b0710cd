//! Byte-exact tests of routes, connection handling, bodies and limits, and proptests that
//! split a pipelined stream arbitrarily or feed garbage.

use super::*;
use crate::proto::Bound;
use crate::proto::sim::Sim;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Replaces every `Date: <29 bytes>` value with `D`.
fn norm(bytes: &[u8]) -> Vec<u8> {
    const TAG: &[u8] = b"\r\nDate: ";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(TAG) && bytes.len() >= i + TAG.len() + date::DATE_LEN {
            out.extend_from_slice(b"\r\nDate: D");
            i += TAG.len() + date::DATE_LEN;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&norm(bytes)).into_owned()
}

/// The expected response with the Date value normalised to `D`.
fn resp(
    status: &str,
    allow: Option<&str>,
    ctype: &str,
    body: &[u8],
    conn: Option<&str>,
    head: bool,
) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nServer: evloop\r\nDate: D\r\n");
    if let Some(a) = allow {
        s += &format!("Allow: {a}\r\n");
    }
    s += &format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n", body.len());
    if let Some(c) = conn {
        s += &format!("Connection: {c}\r\n");
    }
    s += "\r\n";
    let mut v = s.into_bytes();
    if !head {
        v.extend_from_slice(body);
    }
    v
}

fn hello(conn: Option<&str>) -> Vec<u8> {
    resp("200 OK", None, "text/plain", b"Hello, World!", conn, false)
}

fn echo(body: &[u8], conn: Option<&str>) -> Vec<u8> {
    resp("200 OK", None, "application/octet-stream", body, conn, false)
}

fn error(status: &str, body: &str) -> Vec<u8> {
    resp(status, None, "text/plain", body.as_bytes(), Some("close"), false)
}

fn s(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn small() -> HttpConfig {
    HttpConfig { max_head_bytes: 256, max_headers: 8, max_body: 1024 }
}

/// One call on a fresh default session.
fn call(input: &[u8]) -> (Vec<u8>, Result<Progress, ProtoError>) {
    call_with(HttpConfig::default(), input)
}

fn call_with(config: HttpConfig, input: &[u8]) -> (Vec<u8>, Result<Progress, ProtoError>) {
    let mut session = Http::new(config).open();
    let mut out = Vec::new();
    let r = session.on_input(input, &mut out);
    (out, r)
}

/// Asserts a single call answers `want` and consumes all of `input`, keeping the connection.
fn assert_one(input: &[u8], want: &[u8]) {
    let (out, r) = call(input);
    assert_eq!(text(&out), s(want));
    assert_eq!(r, Ok(Progress::answered(input.len(), 1, false)));
}

/// Asserts a single call fails with `kind` and the given error reply, after `before`.
fn assert_fail(config: HttpConfig, input: &[u8], before: &[u8], kind: &str, reply: &[u8]) {
    let (out, r) = call_with(config, input);
    assert_eq!(text(&out), s(before));
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind, kind);
    assert_eq!(text(&e.reply), s(reply));
}

/// The test engine over an HTTP session.
type Engine = Sim<Http>;

fn engine(config: HttpConfig) -> Engine {
    Sim::new(Http::new(config).open())
}

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

#[test]
fn get_root_exact_bytes() {
    let (out, r) = call(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r, Ok(Progress::answered(27, 1, false)));
    let want = "HTTP/1.1 200 OK\r\nServer: evloop\r\nDate: D\r\nContent-Type: text/plain\r\n\
                Content-Length: 13\r\n\r\nHello, World!";
    assert_eq!(text(&out), want);
    // The real Date value is an IMF-fixdate.
    let at = out.windows(6).position(|w| w == b"Date: ").unwrap() + 6;
    let d = &out[at..at + date::DATE_LEN];
    assert!(d.ends_with(b" GMT") && d[3] == b',', "{}", s(d));
    assert_eq!(out[at + date::DATE_LEN..].first(), Some(&b'\r'));
}

#[test]
fn get_plaintext_and_query_strings() {
    assert_one(b"GET /plaintext HTTP/1.1\r\n\r\n", &hello(None));
    assert_one(b"GET /?x=1 HTTP/1.1\r\n\r\n", &hello(None));
    assert_one(b"GET /plaintext?a=b&c HTTP/1.1\r\n\r\n", &hello(None));
    assert_one(b"POST /echo?q HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", &echo(b"hi", None));
}

#[test]
fn head_has_headers_but_no_body() {
    let want = resp("200 OK", None, "text/plain", b"Hello, World!", None, true);
    assert_one(b"HEAD / HTTP/1.1\r\n\r\n", &want);
    assert_one(b"HEAD /plaintext HTTP/1.1\r\n\r\n", &want);
    let nf = resp("404 Not Found", None, "text/plain", b"Not Found\n", None, true);
    assert_one(b"HEAD /nope HTTP/1.1\r\n\r\n", &nf);
    let na = resp(
        "405 Method Not Allowed",
        Some("POST"),
        "text/plain",
        b"Method Not Allowed\n",
        None,
        true,
    );
    assert_one(b"HEAD /echo HTTP/1.1\r\n\r\n", &na);
}

#[test]
fn post_echo() {
    assert_one(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", &echo(b"hello", None));
    assert_one(b"POST /echo HTTP/1.1\r\n\r\n", &echo(b"", None));
    assert_one(b"POST /echo HTTP/1.1\r\ncontent-length: 3\r\n\r\n\0\r\n", &echo(b"\0\r\n", None));
}

#[test]
fn not_found_and_method_not_allowed() {
    let nf = resp("404 Not Found", None, "text/plain", b"Not Found\n", None, false);
    assert_one(b"GET /nope HTTP/1.1\r\n\r\n", &nf);
    assert_one(b"GET /echo/x HTTP/1.1\r\n\r\n", &nf);
    assert_one(b"GET * HTTP/1.1\r\n\r\n", &nf);
    let allow_get = resp(
        "405 Method Not Allowed",
        Some("GET, HEAD"),
        "text/plain",
        b"Method Not Allowed\n",
        None,
        false,
    );
    assert_one(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", &allow_get);
    assert_one(b"DELETE /plaintext HTTP/1.1\r\n\r\n", &allow_get);
    let allow_post = resp(
        "405 Method Not Allowed",
        Some("POST"),
        "text/plain",
        b"Method Not Allowed\n",
        None,
        false,
    );
    assert_one(b"GET /echo HTTP/1.1\r\n\r\n", &allow_post);
    assert_one(b"PUT /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", &allow_post);
}

// ---------------------------------------------------------------------------------------
// Connection handling and pipelining
// ---------------------------------------------------------------------------------------

#[test]
fn http11_keeps_alive_unless_close() {
    assert_one(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", &hello(None));
    let input = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let (out, r) = call(input);
    assert_eq!(text(&out), s(&hello(Some("close"))));
    assert_eq!(r, Ok(Progress::answered(37, 1, true)));
    let (out, r) = call(b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n");
    assert_eq!(text(&out), s(&hello(Some("close"))));
    assert!(r.unwrap().close);
}

#[test]
fn http10_closes_unless_keep_alive() {
    let (out, r) = call(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(text(&out), s(&hello(Some("close"))));
    assert_eq!(r, Ok(Progress::answered(18, 1, true)));
    assert_one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &hello(Some("keep-alive")));
    let (out, r) = call(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    assert_eq!(text(&out), s(&hello(Some("close"))));
    assert!(r.unwrap().close);
}

#[test]
fn input_after_close_is_ignored() {
    let mut session = Http::default().open();
    let mut out = Vec::new();
    let p = session.on_input(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &mut out).unwrap();
    assert!(p.close);
    let n = out.len();
    let p = session.on_input(b"GET / HTTP/1.1\r\n\r\n", &mut out).unwrap();
    assert_eq!(p, Progress::answered(18, 0, true));
    assert_eq!(out.len(), n);
}

#[test]
fn pipelines_sixteen_requests_in_order() {
    let mut input = Vec::new();
    let mut want = Vec::new();
    for i in 0..16 {
        match i % 4 {
            0 => {
                input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                want.extend(hello(None));
            }
            1 => {
                let body = format!("body-{i}");
                input.extend(
                    format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .bytes(),
                );
                want.extend(echo(body.as_bytes(), None));
            }
            2 => {
                input.extend_from_slice(b"GET /missing HTTP/1.1\r\n\r\n");
                want.extend(resp("404 Not Found", None, "text/plain", b"Not Found\n", None, false));
            }
            _ => {
                input.extend_from_slice(
                    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                );
                want.extend(echo(b"abc", None));
            }
        }
    }
    // A partial 17th request stays unconsumed.
    let full = input.len();
    input.extend_from_slice(b"GET / HT");
    let mut out = b"earlier".to_vec();
    let (r, out) = {
        let mut session = Http::default().open();
        let r = session.on_input(&input, &mut out);
        (r, out)
    };
    assert_eq!(r, Ok(Progress::answered(full, 16, false).with_pending(Pending::Head)));
    let mut expected = b"earlier".to_vec();
    expected.extend(want);
    assert_eq!(text(&out), s(&expected));
}

#[test]
fn partial_head_and_body_wait_for_more() {
    let mut e = engine(HttpConfig::default());
    e.feed(b"GET / HTTP/1.1\r\nHost");
    assert!(e.out.is_empty());
    assert_eq!(e.buf.len(), 20);
    e.feed(b": x\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
    assert_eq!(text(&e.out), s(&hello(None)));
    e.feed(b"56789");
    let mut want = hello(None);
    want.extend(echo(b"0123456789", None));
    assert_eq!(text(&e.out), s(&want));
    assert!(e.buf.is_empty() && !e.closed);
}

#[test]
fn leading_empty_lines_are_skipped() {
    assert_one(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &hello(None));
}

// ---------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------

#[test]
fn expect_100_continue_once() {
    let head = b"POST /echo HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
    let mut e = engine(HttpConfig::default());
    e.feed(head);
    assert_eq!(e.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(e.buf.is_empty(), "the head is consumed");
    e.feed(b"he");
    assert_eq!(e.out, b"HTTP/1.1 100 Continue\r\n\r\n", "sent once");
    e.feed(b"llo");
    let mut want = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    want.extend(echo(b"hello", None));
    assert_eq!(text(&e.out), s(&want));

    // Body already there: no interim response.
    let mut all = head.to_vec();
    all.extend_from_slice(b"hello");
    assert_one(&all, &echo(b"hello", None));

    // HTTP/1.0, or no body: none either.
    let (out, _) =
        call(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert!(out.is_empty());
    assert_one(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", &echo(b"", None));

    // Chunked, partial.
    let mut e = engine(HttpConfig::default());
    e.feed(
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n2\r\nab",
    );
    assert_eq!(e.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    e.feed(b"\r\n0\r\n\r\n");
    let mut want = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    want.extend(echo(b"ab", None));
    assert_eq!(text(&e.out), s(&want));
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let input = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
                  5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n\
                  0;last\r\nX-Trailer: a\r\nX-Other: b\r\n\r\n";
    assert_one(input, &echo(b"hello world0123456789", None));
    // Byte by byte gives the same.
    let mut e = engine(HttpConfig::default());
    for b in input.iter() {
        e.feed(std::slice::from_ref(b));
    }
    assert_eq!(text(&e.out), s(&echo(b"hello world0123456789", None)));
    assert!(e.buf.len() <= 64);
    // Chunked body on a route that discards it.
    let nf = resp("404 Not Found", None, "text/plain", b"Not Found\n", None, false);
    assert_one(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", &nf);
}

#[test]
fn large_bodies() {
    let body: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let mut input =
        format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    input.extend_from_slice(&body);
    let (out, r) = call(&input);
    assert_eq!(r, Ok(Progress::answered(input.len(), 1, false)));
    assert_eq!(norm(&out), echo(&body, None));

    // The same in 1000-byte reads.
    let mut e = engine(HttpConfig::default());
    for c in input.chunks(1000) {
        e.feed(c);
    }
    assert_eq!(norm(&e.out), echo(&body, None));

    // Chunked, 4 KiB chunks, in 777-byte reads.
    let mut input = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(4096) {
        input.extend(format!("{:x}\r\n", c.len()).bytes());
        input.extend_from_slice(c);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let mut e = engine(HttpConfig::default());
    for c in input.chunks(777) {
        e.feed(c);
    }
    assert_eq!(norm(&e.out), echo(&body, None));
    assert!(e.max_unconsumed < 1024);
    assert!(e.session.session().is_idle(), "released");

    // A large body to a discarding route is consumed as it arrives.
    let mut e = engine(HttpConfig::default());
    e.feed(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    for _ in 0..100 {
        e.feed(&[b'x'; 1000]);
        assert!(e.buf.is_empty());
    }
    assert!(text(&e.out).starts_with("HTTP/1.1 405 "));
}

#[test]
fn content_length_forms() {
    assert_one(b"POST /echo HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", &echo(b"hello", None));
    assert_one(
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        &echo(b"hello", None),
    );
    for bad in [
        &b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"POST /echo HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 5,\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        assert_fail(
            HttpConfig::default(),
            bad,
            b"",
            "bad_request",
            &error("400 Bad Request", "Bad Request\n"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Limits and errors
// ---------------------------------------------------------------------------------------

fn too_large_431() -> Vec<u8> {
    error("431 Request Header Fields Too Large", "Request Header Fields Too Large\n")
}

#[test]
fn head_too_large() {
    // Incomplete and already over the limit.
    let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    input.resize(9000, b'a');
    assert_fail(HttpConfig::default(), &input, b"", "head_too_large", &too_large_431());
    // Incomplete and under the limit: wait.
    let (out, r) = call(&input[..8000]);
    assert!(out.is_empty());
    assert_eq!(r, Ok(Progress::answered(0, 0, false).with_pending(Pending::Head)));
    // Complete but longer than the limit; exactly at the limit is fine.
    let config = HttpConfig { max_head_bytes: 64, ..HttpConfig::default() };
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(60, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.len(), 64);
    let (out, r) = call_with(config, &head);
    assert_eq!(text(&out), s(&hello(None)));
    assert_eq!(r, Ok(Progress::answered(64, 1, false)));
    head.insert(20, b'a');
    assert_fail(config, &head, b"", "head_too_large", &too_large_431());
    // Replies to earlier pipelined requests stay in `out`.
    let mut input = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    input.extend_from_slice(&head);
    assert_fail(config, &input, &hello(None), "head_too_large", &too_large_431());
}

#[test]
fn too_many_headers() {
    let make = |n: usize| {
        let mut v = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            v.extend(format!("X-{i}: y\r\n").bytes());
        }
        v.extend_from_slice(b"\r\n");
        v
    };
    assert_one(&make(64), &hello(None));
    assert_fail(HttpConfig::default(), &make(65), b"", "head_too_large", &too_large_431());
    let two = HttpConfig { max_headers: 2, ..HttpConfig::default() };
    assert_eq!(call_with(two, &make(2)).1, Ok(Progress::answered(make(2).len(), 1, false)));
    assert_fail(two, &make(3), b"", "head_too_large", &too_large_431());
    // Above the stack array: the heap fallback.
    let many = HttpConfig { max_headers: 128, ..HttpConfig::default() };
    let (out, r) = call_with(many, &make(128));
    assert_eq!(text(&out), s(&hello(None)));
    assert_eq!(r, Ok(Progress::answered(make(128).len(), 1, false)));
    assert_fail(many, &make(129), b"", "head_too_large", &too_large_431());
    // A partial head with more than 64 fields waits under a large limit.
    let partial = make(100);
    let (out, r) = call_with(many, &partial[..partial.len() - 2]);
    assert!(out.is_empty());
    assert_eq!(r, Ok(Progress::answered(0, 0, false).with_pending(Pending::Head)));
}

fn too_large_413() -> Vec<u8> {
    error("413 Content Too Large", "Content Too Large\n")
}

#[test]
fn body_too_large() {
    assert_fail(
        HttpConfig::default(),
        b"POST /echo HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
        b"",
        "body_too_large",
        &too_large_413(),
    );
    let exact = HttpConfig { max_body: 5, ..HttpConfig::default() };
    let at_limit = b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    let (out, r) = call_with(exact, at_limit);
    assert_eq!(text(&out), s(&echo(b"hello", None)));
    assert_eq!(r, Ok(Progress::answered(at_limit.len(), 1, false)));
    let chunked = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    assert_fail(exact, chunked, b"", "body_too_large", &too_large_413());
    assert_fail(
        HttpConfig::default(),
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        b"",
        "body_too_large",
        &too_large_413(),
    );
    // Expect: 100-continue with a too-large body gets the 413, not a 100.
    assert_fail(
        exact,
        b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n",
        b"",
        "body_too_large",
        &too_large_413(),
    );
}

fn bad_400() -> Vec<u8> {
    error("400 Bad Request", "Bad Request\n")
}

#[test]
fn malformed_requests() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n:no-name\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        assert_fail(HttpConfig::default(), bad, b"", "bad_request", &bad_400());
    }
    // Earlier replies stay.
    assert_fail(
        HttpConfig::default(),
        b"GET / HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n",
        &hello(None),
        "bad_request",
        &bad_400(),
    );
}

#[test]
fn bad_chunked_framing() {
    let pre = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut long_line = format!("{pre}5;");
    long_line.push_str(&"e".repeat(2000));
    for bad in [
        format!("{pre}zz\r\n"),
        format!("{pre}10000000000000000\r\n"),
        format!("{pre}3\r\nabcX\r\n"),
        format!("{pre}3\nabc\r\n"),
        format!("{pre}3\r\nabc\r\n0\r\nno colon\r\n\r\n"),
        long_line,
    ] {
        assert_fail(HttpConfig::default(), bad.as_bytes(), b"", "bad_request", &bad_400());
    }
    // Trailers beyond max_head_bytes.
    let mut t = format!("{pre}0\r\n").into_bytes();
    for _ in 0..50 {
        t.extend_from_slice(b"X-Trailer: aaaaaaaa\r\n");
    }
    assert_fail(small(), &t, b"", "head_too_large", &too_large_431());
}

#[test]
fn smuggling_shapes() {
    assert_fail(
        HttpConfig::default(),
        b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"",
        "bad_request",
        &bad_400(),
    );
    assert_fail(
        HttpConfig::default(),
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"",
        "bad_request",
        &bad_400(),
    );
    let not_impl = error("501 Not Implemented", "Not Implemented\n");
    for te in [&b"gzip, chunked"[..], b"chunked, chunked", b"identity", b"xchunked"] {
        let mut input = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: ".to_vec();
        input.extend_from_slice(te);
        input.extend_from_slice(b"\r\n\r\n0\r\n\r\n");
        assert_fail(HttpConfig::default(), &input, b"", "not_implemented", &not_impl);
    }
    assert_fail(
        HttpConfig::default(),
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"",
        "not_implemented",
        &not_impl,
    );
}

#[test]
fn unsupported_versions() {
    let reply = error("505 HTTP Version Not Supported", "HTTP Version Not Supported\n");
    for bad in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/0.9\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
    ] {
        assert_fail(HttpConfig::default(), bad, b"", "version_not_supported", &reply);
    }
}

#[test]
fn errors_finish_the_session() {
    let mut session = Http::default().open();
    let mut out = Vec::new();
    assert!(session.on_input(b"BAD\r\n\r\n", &mut out).is_err());
    let p = session.on_input(b"GET / HTTP/1.1\r\n\r\n", &mut out).unwrap();
    assert!(p.close);
    assert!(out.is_empty());
}

#[test]
fn protocol_surface() {
    let http = Http::new(HttpConfig::default());
    assert_eq!(http.name(), "http");
    assert_eq!(http.config(), &HttpConfig::default());
    assert_eq!(
        HttpConfig::default(),
        HttpConfig { max_head_bytes: 8192, max_headers: 64, max_body: 1 << 20 }
    );
    http.tick();
    // A clone is the same protocol: same configuration, same answers.
    let limits = HttpConfig { max_head_bytes: 64, max_headers: 2, max_body: 3 };
    let small = Http::new(limits);
    let clone = small.clone();
    assert_eq!(clone.config(), &limits);
    let req = b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ra = small.open().on_input(req, &mut a);
    let rb = clone.open().on_input(req, &mut b);
    assert_eq!(norm(&a), norm(&b));
    let (ea, eb) = (ra.unwrap_err(), rb.unwrap_err());
    assert_eq!(eb.kind, "body_too_large", "the clone keeps the limits");
    assert_eq!((ea.kind, norm(&ea.reply)), (eb.kind, norm(&eb.reply)));
}

// ---------------------------------------------------------------------------------------
// Proptests
// ---------------------------------------------------------------------------------------

/// One valid request of a generated pipelined stream.
#[derive(Debug, Clone)]
enum Gen {
    Get(&'static str),
    Head,
    Missing,
    Echo(Vec<u8>),
    Chunked { chunks: Vec<Vec<u8>>, ext: bool, trailer: bool },
    Http10KeepAlive,
    PostDiscard(Vec<u8>),
}

fn gen_request() -> impl Strategy<Value = Gen> {
    prop_oneof![
        prop_oneof![Just("/"), Just("/plaintext"), Just("/?x=1")].prop_map(Gen::Get),
        Just(Gen::Head),
        Just(Gen::Missing),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Gen::Echo),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..5),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(chunks, ext, trailer)| Gen::Chunked { chunks, ext, trailer }),
        Just(Gen::Http10KeepAlive),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Gen::PostDiscard),
    ]
}

/// The request bytes and the expected (Date-normalised) response.
fn render(g: &Gen, close: bool) -> (Vec<u8>, Vec<u8>) {
    let conn_hdr = if close { "Connection: close\r\n" } else { "" };
    let conn = close.then_some("close");
    match g {
        Gen::Get(path) => {
            (format!("GET {path} HTTP/1.1\r\nHost: h\r\n{conn_hdr}\r\n").into_bytes(), hello(conn))
        }
        Gen::Head => (
            format!("HEAD / HTTP/1.1\r\n{conn_hdr}\r\n").into_bytes(),
            resp("200 OK", None, "text/plain", b"Hello, World!", conn, true),
        ),
        Gen::Missing => (
            format!("GET /missing HTTP/1.1\r\n{conn_hdr}\r\n").into_bytes(),
            resp("404 Not Found", None, "text/plain", b"Not Found\n", conn, false),
        ),
        Gen::Echo(body) => {
            let mut r =
                format!("POST /echo HTTP/1.1\r\nContent-Length: {}\r\n{conn_hdr}\r\n", body.len())
                    .into_bytes();
            r.extend_from_slice(body);
            (r, echo(body, conn))
        }
        Gen::Chunked { chunks, ext, trailer } => {
            let mut r =
                format!("POST /echo HTTP/1.1\r\n{conn_hdr}Transfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            let mut body = Vec::new();
            for c in chunks {
                r.extend(format!("{:X}", c.len()).bytes());
                if *ext {
                    r.extend_from_slice(b";a=b");
                }
                r.extend_from_slice(b"\r\n");
                r.extend_from_slice(c);
                r.extend_from_slice(b"\r\n");
                body.extend_from_slice(c);
            }
            r.extend_from_slice(b"0\r\n");
            if *trailer {
                r.extend_from_slice(b"X-Checksum: 1\r\n");
            }
            r.extend_from_slice(b"\r\n");
            (r, echo(&body, conn))
        }
        Gen::Http10KeepAlive => {
            let hdr = if close { "" } else { "Connection: keep-alive\r\n" };
            let c = if close { "close" } else { "keep-alive" };
            (format!("GET /plaintext HTTP/1.0\r\n{hdr}\r\n").into_bytes(), hello(Some(c)))
        }
        Gen::PostDiscard(body) => {
            let mut r =
                format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n{conn_hdr}\r\n", body.len())
                    .into_bytes();
            r.extend_from_slice(body);
            let want = resp(
                "405 Method Not Allowed",
                Some("GET, HEAD"),
                "text/plain",
                b"Method Not Allowed\n",
                conn,
                false,
            );
            (r, want)
        }
    }
}

/// A stream of requests (the last one closing if `close_last`, followed by ignored junk).
fn render_stream(reqs: &[Gen], close_last: bool) -> (Vec<u8>, Vec<u8>) {
    let mut input = Vec::new();
    let mut want = Vec::new();
    for (i, g) in reqs.iter().enumerate() {
        let (r, w) = render(g, close_last && i + 1 == reqs.len());
        input.extend(r);
        want.extend(w);
    }
    if close_last {
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\nignored");
    }
    (input, want)
}

/// Feeds `input` cut at `cuts` (sorted positions) and returns the normalised output.
fn feed_cut(input: &[u8], cuts: impl IntoIterator<Item = usize>) -> Engine {
    let mut e = engine(HttpConfig::default());
    let mut last = 0;
    for c in cuts {
        e.feed(&input[last..c]);
        last = c;
    }
    e.feed(&input[last..]);
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn split_streams_give_identical_output(
        reqs in prop::collection::vec(gen_request(), 1..6),
        close_last in any::<bool>(),
        sizes in prop::collection::vec(1usize..64, 1..40),
    ) {
        let (input, want) = render_stream(&reqs, close_last);

        // (a) whole
        let whole = feed_cut(&input, []);
        prop_assert_eq!(s(&norm(&whole.out)), s(&want));
        prop_assert_eq!(whole.closed, close_last);
        prop_assert_eq!(whole.error, None::<ProtoError>);

        // (b) every single split point
        for at in 0..=input.len() {
            let e = feed_cut(&input, [at]);
            prop_assert_eq!(norm(&e.out), norm(&whole.out), "split at {}", at);
            prop_assert_eq!(e.closed, close_last);
        }

        // (c) random chunk sizes (cycled)
        let mut cuts = Vec::new();
        let mut at = 0;
        for sz in sizes.iter().cycle() {
            at += sz;
            if at >= input.len() {
                break;
            }
            cuts.push(at);
        }
        let e = feed_cut(&input, cuts);
        prop_assert_eq!(norm(&e.out), norm(&whole.out));
        prop_assert_eq!(e.closed, close_last);
    }
}

/// Pieces of HTTP-looking input for the robustness test.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /echo HTTP/1.1\r\n".to_vec()),
        Just(b"HEAD / HTTP/1.0\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 900\r\n".to_vec()),
        Just(b"Content-Length: 2000\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"Connection: keep-alive\r\n".to_vec()),
        Just(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"3ff;ext\r\n".to_vec()),
        Just(b"0\r\n".to_vec()),
        Just(b"X-T: 1\r\n".to_vec()),
        Just(b"hello".to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

fn check_robust(config: HttpConfig, input: &[u8], sizes: &[usize]) -> Result<(), TestCaseError> {
    let mut e = engine(config);
    let mut at = 0;
    for sz in sizes.iter().cycle() {
        if at >= input.len() || e.closed {
            break;
        }
        let end = (at + sz).min(input.len());
        e.feed(&input[at..end]);
        at = end;
    }
    let bound = config.max_head_bytes + config.max_body + chunked::MAX_CHUNK_LINE + 16;
    prop_assert!(e.max_unconsumed <= bound, "{} > {}", e.max_unconsumed, bound);
    prop_assert!(e.session.session().body_len() <= config.max_body);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in prop::collection::vec(1usize..700, 1..20),
    ) {
        check_robust(small(), &input, &sizes)?;
        check_robust(HttpConfig::default(), &input, &sizes)?;
    }

    #[test]
    fn http_soup_never_panics_and_stays_bounded(
        input in soup(),
        sizes in prop::collection::vec(1usize..400, 1..20),
    ) {
        check_robust(small(), &input, &sizes)?;
        check_robust(HttpConfig::default(), &input, &sizes)?;
    }

    #[test]
    fn truncated_or_mutated_valid_streams_never_panic(
        reqs in prop::collection::vec(gen_request(), 1..5),
        cut in any::<prop::sample::Index>(),
        flip in any::<Option<(prop::sample::Index, u8)>>(),
        sizes in prop::collection::vec(1usize..200, 1..20),
    ) {
        let (mut input, _) = render_stream(&reqs, false);
        if let Some((i, b)) = flip {
            let i = i.index(input.len());
            input[i] = b;
        }
        input.truncate(cut.index(input.len() + 1));
        check_robust(small(), &input, &sizes)?;
        check_robust(HttpConfig::default(), &input, &sizes)?;
    }
}

/// Issue 10 item 11: requests answered in the same call as a protocol error count.
#[test]
fn protocol_error_counts_the_requests_answered_before_it() {
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut input = Vec::new();
    input.extend_from_slice(get);
    input.extend_from_slice(get);
    input.extend_from_slice(b"BAD\x01 / HTTP/1.1\r\n\r\n");
    let (out, r) = call(&input);
    let e = r.unwrap_err();
    assert_eq!(e.requests, 2);
    assert_eq!(text(&out).matches("HTTP/1.1 200").count(), 2, "{}", text(&out));
    // A broken chunked body after one complete request.
    let mut input = get.to_vec();
    input.extend_from_slice(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let (_, r) = call(&input);
    assert_eq!(r.unwrap_err().requests, 1);
    let (_, r) = call(b"BAD\x01 / HTTP/1.1\r\n\r\n");
    assert_eq!(r.unwrap_err().requests, 0);
}

#[test]
fn pending_reports_where_the_request_stands() {
    let mut out = Vec::new();
    let p = |s: &mut Bound<Http>, input: &[u8], out: &mut Vec<u8>| s.on_input(input, out).unwrap();
    let mut s = Http::default().open();
    assert_eq!(p(&mut s, b"GET / HTTP/1.1\r\n\r\n", &mut out).pending, Pending::None);
    assert_eq!(p(&mut s, b"GET / HT", &mut out).pending, Pending::Head);
    let mut s = Http::default().open();
    let r = p(&mut s, b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\na", &mut out);
    assert_eq!((r.consumed, r.pending), (42, Pending::Body), "an echo body waits whole");
    let mut s = Http::default().open();
    let r = p(&mut s, b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\na", &mut out);
    assert_eq!(r.pending, Pending::Body);
    assert_eq!(p(&mut s, b"bc", &mut out).pending, Pending::None);
    let r = p(&mut s, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n", &mut out);
    assert_eq!(r.pending, Pending::Body);
}

#[test]
fn a_timeout_answers_408_and_finishes_the_session() {
    let mut s = Http::default().open();
    let mut out = Vec::new();
    s.on_input(b"GET / HT", &mut out).unwrap();
    s.on_timeout(&mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n") && text.contains("\r\nDate: "), "{text}");
    assert!(text.ends_with("Content-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n"));
    // Finished: a second timeout adds nothing, and input is ignored.
    s.on_timeout(&mut out);
    assert_eq!(out.len(), text.len());
    let r = s.on_input(b"TP/1.1\r\n\r\n", &mut out).unwrap();
    assert!(r.close && out.len() == text.len());
}
