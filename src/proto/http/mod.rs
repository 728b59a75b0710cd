//! HTTP/1.1 (and 1.0) server protocol: a tiny fixed router, sans-IO.
//!
//! Routes: `GET`/`HEAD` `/` and `/plaintext` answer `200 text/plain` `Hello, World!`;
//! `POST /echo` answers `200 application/octet-stream` with the request body; any other
//! path is `404`; a known path with another method is `405` with `Allow`. The query string
//! is ignored for routing. Every response carries `Server: evloop`, `Date` (IMF-fixdate)
//! and `Content-Length`, and is an `HTTP/1.1` response even to an HTTP/1.0 request.
//!
//! # How a connection is processed
//!
//! [`Http::on_input`](Protocol::on_input) answers every complete request in its input, in
//! order, into the one output buffer (pipelining). A request head is parsed with `httparse`
//! once it is complete, then *consumed*; what the body needs (framing, route, connection
//! handling) is kept in the session, so a head is never parsed twice and an
//! `Expect: 100-continue` interim response is sent once. Bodies:
//!
//! * `Content-Length`: for `POST /echo` the body is left unconsumed until all of it is in
//!   the input, then echoed straight from it (no copy); for other routes it is consumed and
//!   discarded as it arrives.
//! * `Transfer-Encoding: chunked`: decoded incrementally (chunk extensions and trailer
//!   fields are ignored); decoded bytes of an echo body are kept in a buffer that is
//!   bounded by `max_body` and released once the request has been answered.
//!
//! Between requests a connection holds nothing: [`HttpSession`] is one pointer, set only
//! while a request's body is still arriving (or once the connection is finished).
//!
//! So the unconsumed input a session leaves is at most the larger of `max_head_bytes` (a
//! partial head or trailer line), `max_body` (a partial echo body) and 1 KiB (a partial
//! chunk-size line), and nothing is allocated from a declared length.
//!
//! # Connection handling
//!
//! HTTP/1.1 keeps the connection unless the request says `Connection: close`; HTTP/1.0
//! closes unless it says `Connection: keep-alive` (the response then says it too). A
//! closing response carries `Connection: close` and the call returns `close: true` having
//! consumed exactly that request; later pipelined requests are ignored, as is any input on
//! later calls.
//!
//! # Errors
//!
//! Each is answered by a short `text/plain` response with `Connection: close`, returned as
//! [`ProtoError::reply`] (replies to earlier pipelined requests stay in `out`):
//!
//! | status | kind | cause |
//! |---|---|---|
//! | 431 | `head_too_large` | head (or trailer section) over `max_head_bytes`, or more than `max_headers` fields |
//! | 413 | `body_too_large` | `Content-Length` or chunked total over `max_body` |
//! | 400 | `bad_request` | malformed head, bad `Content-Length`, bad chunk framing, and request-smuggling shapes: both `Content-Length` and `Transfer-Encoding`, `Content-Length` values that disagree (`5, 5` or a repeated equal header is fine), `Transfer-Encoding` in an HTTP/1.0 request |
//! | 501 | `not_implemented` | `Transfer-Encoding` other than exactly one `chunked` (e.g. `gzip, chunked`) |
//! | 505 | `version_not_supported` | a version other than HTTP/1.0 or HTTP/1.1 |
//!
//! # Extra routes
//!
//! An embedder can put routes in front of the fixed router with [`Http::with_routes`]: a
//! function from (method, path without query) to a [`RouteReply`], asked for every request
//! once its head is parsed; `None` leaves the request to the fixed router. The request's
//! body is read and discarded; `HEAD` gets the headers only. `evloop serve --metrics`
//! serves `/metrics` this way.
//!
//! Deliberately not enforced: a `Host` header in HTTP/1.1 requests (benchmark clients and
//! tests send bare requests), and `Expect` values other than `100-continue` are ignored.
//! Empty lines before a request line are skipped (httparse does, as RFC 9112 §2.2 allows).

mod chunked;
mod date;
mod response;
#[cfg(test)]
mod tests;

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;

use super::{Pending, Progress, ProtoError, Protocol};
use date::HttpDate;
use response::{ConnHeader, Response, status};

/// Limits of the HTTP protocol. Exceeding one is answered with an error status and a close
/// (see the [module docs](self)), never a panic or an unbounded allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest request head (request line, header fields, final CRLF) in bytes; also the
    /// bound of a chunked body's trailer section. Default 8192. Over it: `431`.
    pub max_head_bytes: usize,
    /// Most header fields in one request head. Default 64. Over it: `431`. Up to 64 are
    /// parsed into a stack array; a larger setting costs one allocation for a request that
    /// actually has more than 64 fields.
    pub max_headers: usize,
    /// Largest request body in bytes (declared `Content-Length` or the decoded total of a
    /// chunked body). Default 1 MiB. Over it: `413`.
    pub max_body: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { max_head_bytes: 8192, max_headers: 64, max_body: 1 << 20 }
    }
}

/// The reply an extra route (see [`Http::with_routes`]) gives to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReply {
    /// Status code and reason, e.g. `"200 OK"`.
    pub status: &'static str,
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// Value of an `Allow` header (for `405`), if any.
    pub allow: Option<&'static str>,
    /// The body (sent without it for `HEAD`; its length is the `Content-Length`).
    pub body: Vec<u8>,
    /// Close the connection after this response (`Connection: close`).
    pub close: bool,
}

/// Extra routes: `(method, path without query)` to a reply, or `None` for the fixed
/// router. Called on the loop thread once per request head: it must be quick.
pub type RouteFn = dyn Fn(&str, &str) -> Option<RouteReply> + Send + Sync;

/// A shared [`RouteFn`] (opaque in `Debug` output).
#[derive(Clone)]
struct Routes(Arc<RouteFn>);

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Routes(..)")
    }
}

/// The HTTP protocol (`--proto http`): its configuration, and extra routes if any. Cheap
/// to clone (`Copy` limits and an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Http {
    config: HttpConfig,
    routes: Option<Routes>,
}

impl Http {
    /// An HTTP protocol with the given limits.
    pub fn new(config: HttpConfig) -> Self {
        Http { config, routes: None }
    }

    /// Puts `routes` in front of the fixed router (see the [module docs](self)).
    pub fn with_routes(
        mut self,
        routes: impl Fn(&str, &str) -> Option<RouteReply> + Send + Sync + 'static,
    ) -> Self {
        self.routes = Some(Routes(Arc::new(routes)));
        self
    }

    /// The limits this protocol's sessions enforce.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}

impl Protocol for Http {
    type Session = HttpSession;

    fn name(&self) -> &'static str {
        "http"
    }

    fn new_session(&self) -> HttpSession {
        HttpSession { busy: None }
    }

    /// Answers every complete request in `input` (see the [module docs](self)).
    fn on_input(
        &self,
        session: &mut HttpSession,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtoError> {
        match session.busy.as_deref_mut() {
            Some(b) if b.finished => Ok(Progress::answered(input.len(), 0, true)),
            // A request in progress: continue it in its box, dropped once nothing is.
            Some(b) => {
                let r = Work::new(self, b).on_input(input, out);
                if !b.settle() {
                    session.busy = None;
                }
                r
            }
            // Nothing in progress: work in a local state, boxed only if it must persist.
            None => {
                let mut b = Busy::default();
                let r = Work::new(self, &mut b).on_input(input, out);
                if b.settle() {
                    session.busy = Some(Box::new(b));
                }
                r
            }
        }
    }

    /// `408 Request Timeout` with `Connection: close`; the session is finished after it.
    fn on_timeout(&self, session: &mut HttpSession, out: &mut Vec<u8>) {
        if session.busy.as_ref().is_some_and(|b| b.finished) {
            return;
        }
        session.busy = Some(Box::new(Busy::finished()));
        response::write(
            out,
            &date::now(),
            &Response {
                status: status::REQUEST_TIMEOUT,
                allow: None,
                content_type: response::TEXT,
                body: b"Request Timeout\n",
                head_only: false,
                conn: ConnHeader::Close,
            },
        );
    }

    /// Refreshes the calling thread's cached `Date` value.
    fn tick(&self) {
        let _ = date::now();
    }
}

/// Why a request is refused; each maps to a status, a body and a [`ProtoError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    BadRequest,
    HeadTooLarge,
    BodyTooLarge,
    NotImplemented,
    Version,
}

impl Fail {
    fn kind(self) -> &'static str {
        match self {
            Fail::BadRequest => "bad_request",
            Fail::HeadTooLarge => "head_too_large",
            Fail::BodyTooLarge => "body_too_large",
            Fail::NotImplemented => "not_implemented",
            Fail::Version => "version_not_supported",
        }
    }

    fn status(self) -> &'static [u8] {
        match self {
            Fail::BadRequest => status::BAD_REQUEST,
            Fail::HeadTooLarge => status::FIELDS_TOO_LARGE,
            Fail::BodyTooLarge => status::CONTENT_TOO_LARGE,
            Fail::NotImplemented => status::NOT_IMPLEMENTED,
            Fail::Version => status::VERSION_NOT_SUPPORTED,
        }
    }

    /// The status text plus a newline.
    fn body(self) -> &'static [u8] {
        match self {
            Fail::BadRequest => b"Bad Request\n",
            Fail::HeadTooLarge => b"Request Header Fields Too Large\n",
            Fail::BodyTooLarge => b"Content Too Large\n",
            Fail::NotImplemented => b"Not Implemented\n",
            Fail::Version => b"HTTP Version Not Supported\n",
        }
    }
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Hello,
    Echo,
    NotFound,
    NotAllowed(&'static [u8]),
    /// An extra route answered; its reply waits in [`HttpSession::custom`].
    Custom,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk; `seen` trailer bytes consumed so far.
    Trailers { seen: usize },
}

/// How the rest of the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many body bytes still to come (0: no body).
    Length(u64),
    /// Chunked; `total` decoded bytes so far (`<= max_body`).
    Chunked { at: Chunk, total: u64 },
}

/// A request whose head has been consumed and whose body may still be arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    route: Route,
    head_only: bool,
    conn: ConnHeader,
    /// Send `100 Continue` if the body is found incomplete (cleared once sent).
    expect_continue: bool,
    body: Body,
}

/// One HTTP connection's state: 8 bytes, `None` between requests (an idle connection
/// holds no heap memory). Boxed state exists only while a request's body is still arriving
/// (the request's framing and route, the decoded part of a chunked echo body, an extra
/// route's reply), and once the connection is finished (a closing response, an error or a
/// timeout was produced: further input is ignored).
#[derive(Debug, Default)]
pub struct HttpSession {
    busy: Option<Box<Busy>>,
}

impl HttpSession {
    /// Whether the session holds no state (between requests of a live connection).
    pub fn is_idle(&self) -> bool {
        self.busy.is_none()
    }

    /// Bytes of a chunked echo body decoded so far (0 when none is in progress).
    #[cfg(test)]
    fn body_len(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.body.len())
    }
}

/// What a connection keeps between calls while a request is in progress (boxed).
#[derive(Debug, Default)]
struct Busy {
    /// The request whose head was consumed and whose body is still being read.
    pending: Option<Request>,
    /// Decoded chunked body of an echo request (`<= max_body` bytes).
    body: Vec<u8>,
    /// A closing response or an error was produced; all further input is ignored.
    finished: bool,
    /// The reply of an extra route to the request in progress.
    custom: Option<RouteReply>,
}

impl Busy {
    fn finished() -> Self {
        Busy { finished: true, ..Busy::default() }
    }

    /// At the end of a call: whether this must outlive it (a request is in progress or
    /// the connection is finished). Frees the echo body buffer unless a request is in
    /// progress.
    #[inline]
    fn settle(&mut self) -> bool {
        if self.pending.is_none() {
            self.body = Vec::new();
        }
        self.pending.is_some() || self.finished
    }
}

/// One call's working state: the protocol's limits and routes plus the connection's
/// [`Busy`] state (its box, or a local one when it has none: nothing is boxed unless it
/// must outlive the call).
struct Work<'a> {
    config: &'a HttpConfig,
    routes: Option<&'a Routes>,
    busy: &'a mut Busy,
}

/// Header fields parsed into a stack array before falling back to the heap.
const STACK_HEADERS: usize = 64;

impl<'a> Work<'a> {
    /// A call working on the connection state `busy`.
    #[inline]
    fn new(http: &'a Http, busy: &'a mut Busy) -> Self {
        Work { config: &http.config, routes: http.routes.as_ref(), busy }
    }

    /// Parses a request head at the front of `buf`. `Ok(None)`: incomplete (and within
    /// `max_head_bytes`). `Ok(Some((head_len, request)))`: complete.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<(usize, Request)>, Fail> {
        let max = self.config.max_head_bytes;
        // Never look past the limit: a head that is not complete within it is too large.
        let limited = &buf[..buf.len().min(max)];
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let n = self.config.max_headers.min(STACK_HEADERS);
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(limited, &mut stack[..n]) {
            Ok(httparse::Status::Complete(len)) => Ok(Some((len, self.interpret(&req)?))),
            Ok(httparse::Status::Partial) if buf.len() >= max => Err(Fail::HeadTooLarge),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) if self.config.max_headers > STACK_HEADERS => {
                // Rare: a large limit and a request using it. Each field takes at least
                // four bytes (`a:` CRLF), which bounds the array by the head limit.
                let cap = self.config.max_headers.min(max / 4 + 1);
                let mut heap = Vec::new();
                heap.resize_with(cap, MaybeUninit::uninit);
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(limited, &mut heap) {
                    Ok(httparse::Status::Complete(len)) => Ok(Some((len, self.interpret(&req)?))),
                    Ok(httparse::Status::Partial) if buf.len() >= max => Err(Fail::HeadTooLarge),
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(map_parse_error(e)),
                }
            }
            Err(e) => Err(map_parse_error(e)),
        }
    }

    /// Checks a complete head's fields and decides route, framing and connection handling.
    fn interpret(&mut self, req: &httparse::Request<'_, '_>) -> Result<Request, Fail> {
        let version = req.version.unwrap_or(1);
        let mut content_length: Option<u64> = None;
        let mut te_fields = 0usize;
        let mut te_chunked = false;
        let mut close = false;
        let mut keep_alive = false;
        let mut expect = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            match name.len() {
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    let v = parse_content_length(h.value)?;
                    if content_length.is_some_and(|prev| prev != v) {
                        return Err(Fail::BadRequest);
                    }
                    content_length = Some(v);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    te_fields += 1;
                    te_chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for token in h.value.split(|&b| b == b',') {
                        let token = trim(token);
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive = true;
                        }
                    }
                }
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    expect |= trim(h.value).eq_ignore_ascii_case(b"100-continue");
                }
                _ => {}
            }
        }

        let body = if te_fields > 0 {
            if content_length.is_some() || version == 0 {
                return Err(Fail::BadRequest);
            }
            if te_fields != 1 || !te_chunked {
                return Err(Fail::NotImplemented);
            }
            Body::Chunked { at: Chunk::Size, total: 0 }
        } else {
            let len = content_length.unwrap_or(0);
            if len > self.config.max_body as u64 {
                return Err(Fail::BodyTooLarge);
            }
            Body::Length(len)
        };

        let conn = if close || (version == 0 && !keep_alive) {
            ConnHeader::Close
        } else if version == 0 {
            ConnHeader::KeepAlive
        } else {
            ConnHeader::Omit
        };

        let method = req.method.unwrap_or("");
        let target = req.path.unwrap_or("");
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let custom = match self.routes {
            Some(routes) => (routes.0)(method, path),
            None => None,
        };
        let conn = if custom.as_ref().is_some_and(|c| c.close) { ConnHeader::Close } else { conn };
        let route = match path {
            _ if custom.is_some() => {
                self.busy.custom = custom;
                Route::Custom
            }
            "/" | "/plaintext" => match method {
                "GET" | "HEAD" => Route::Hello,
                _ => Route::NotAllowed(b"GET, HEAD"),
            },
            "/echo" => match method {
                "POST" => Route::Echo,
                _ => Route::NotAllowed(b"POST"),
            },
            _ => Route::NotFound,
        };
        let has_body = body != Body::Length(0);
        Ok(Request {
            route,
            head_only: method == "HEAD",
            conn,
            expect_continue: expect && version == 1 && has_body,
            body,
        })
    }

    /// Feeds chunked body bytes from `buf`. Returns (bytes consumed, body complete).
    fn decode_chunked(
        &mut self,
        at: &mut Chunk,
        total: &mut u64,
        keep: bool,
        buf: &[u8],
    ) -> Result<(usize, bool), Fail> {
        let mut p = 0;
        loop {
            let rest = &buf[p..];
            match *at {
                Chunk::Size => {
                    let Some((n, size)) = chunked::size_line(rest)? else {
                        return Ok((p, false));
                    };
                    p += n;
                    // Invariant: *total <= max_body.
                    if size > self.config.max_body as u64 - *total {
                        return Err(Fail::BodyTooLarge);
                    }
                    *total += size;
                    *at = if size == 0 { Chunk::Trailers { seen: 0 } } else { Chunk::Data(size) };
                }
                Chunk::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok((p, false));
                    }
                    let take = remaining.min(rest.len() as u64) as usize;
                    if keep {
                        self.busy.body.extend_from_slice(&rest[..take]);
                    }
                    p += take;
                    let left = remaining - take as u64;
                    *at = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                }
                Chunk::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        p += 2;
                        *at = Chunk::Size;
                    }
                    [] | [b'\r'] => return Ok((p, false)),
                    _ => return Err(Fail::BadRequest),
                },
                Chunk::Trailers { seen } => {
                    let budget = self.config.max_head_bytes.saturating_sub(seen);
                    match chunked::trailer_line(rest, budget)? {
                        None => return Ok((p, false)),
                        Some((n, true)) => return Ok((p + n, true)),
                        Some((n, false)) => {
                            p += n;
                            *at = Chunk::Trailers { seen: seen + n };
                        }
                    }
                }
            }
        }
    }

    /// Records the failure and builds the error the engine sends before closing.
    fn fail(&mut self, fail: Fail, date: &mut Option<HttpDate>) -> ProtoError {
        self.busy.finished = true;
        self.busy.pending = None;
        self.release_body();
        let date = *date.get_or_insert_with(date::now);
        let mut reply = Vec::with_capacity(192);
        response::write(
            &mut reply,
            &date,
            &Response {
                status: fail.status(),
                allow: None,
                content_type: response::TEXT,
                body: fail.body(),
                head_only: false,
                conn: ConnHeader::Close,
            },
        );
        ProtoError::new(fail.kind(), reply)
    }

    /// Empties the echo body buffer between requests (freed at the end of the call).
    fn release_body(&mut self) {
        self.busy.body.clear();
    }
}

/// Appends the response to a fully read request.
fn respond(out: &mut Vec<u8>, date: &HttpDate, req: &Request, echo_body: &[u8]) {
    let (status, allow, content_type, body) = match req.route {
        Route::Hello if !req.head_only && req.conn == ConnHeader::Omit => {
            response::write_hello(out, date);
            return;
        }
        Route::Hello => (status::OK, None, response::TEXT, response::HELLO),
        Route::Echo => (status::OK, None, response::OCTETS, echo_body),
        Route::NotFound => (status::NOT_FOUND, None, response::TEXT, &b"Not Found\n"[..]),
        Route::NotAllowed(allow) => {
            (status::METHOD_NOT_ALLOWED, Some(allow), response::TEXT, &b"Method Not Allowed\n"[..])
        }
        // Answered by `respond_custom`.
        Route::Custom => return,
    };
    response::write(
        out,
        date,
        &Response { status, allow, content_type, body, head_only: req.head_only, conn: req.conn },
    );
}

/// Appends an extra route's response to a fully read request.
fn respond_custom(out: &mut Vec<u8>, date: &HttpDate, req: &Request, reply: Option<RouteReply>) {
    let Some(r) = reply else { return };
    response::write(
        out,
        date,
        &Response {
            status: r.status.as_bytes(),
            allow: r.allow.map(str::as_bytes),
            content_type: r.content_type.as_bytes(),
            body: &r.body,
            head_only: req.head_only,
            conn: req.conn,
        },
    );
}

fn map_parse_error(e: httparse::Error) -> Fail {
    match e {
        httparse::Error::TooManyHeaders => Fail::HeadTooLarge,
        httparse::Error::Version => Fail::Version,
        _ => Fail::BadRequest,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A `Content-Length` value: decimal digits, or a comma-separated list of equal ones
/// (`5, 5`). Anything else, or a value over `u64`, is a bad request.
fn parse_content_length(value: &[u8]) -> Result<u64, Fail> {
    let mut result: Option<u64> = None;
    for item in value.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(Fail::BadRequest);
        }
        let v = item.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != v) {
            return Err(Fail::BadRequest);
        }
        result = Some(v);
    }
    result.ok_or(Fail::BadRequest)
}

impl Work<'_> {
    /// Answers every complete request in `input` (see the [module docs](self)).
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, ProtoError> {
        // The clock is read at most once per call, when the first response needs it.
        let mut date: Option<HttpDate> = None;
        let (mut pos, mut answered) = (0, 0);
        let mut pending = Pending::None;
        loop {
            let mut req = match self.busy.pending.take() {
                Some(req) => req,
                None => {
                    let rest = &input[pos..];
                    if rest.is_empty() {
                        break;
                    }
                    match self.parse_head(rest) {
                        Ok(Some((len, req))) => {
                            pos += len;
                            req
                        }
                        Ok(None) => {
                            pending = Pending::Head;
                            break;
                        }
                        Err(f) => return Err(self.fail(f, &mut date).after(answered)),
                    }
                }
            };

            let mut echo_from_input = None;
            let complete = match &mut req.body {
                Body::Length(remaining) => {
                    let avail = (input.len() - pos) as u64;
                    if req.route == Route::Echo {
                        // Wait for the whole body, then echo it from the input.
                        if avail >= *remaining {
                            let end = pos + *remaining as usize;
                            echo_from_input = Some(pos..end);
                            pos = end;
                            true
                        } else {
                            false
                        }
                    } else {
                        let take = avail.min(*remaining);
                        pos += take as usize;
                        *remaining -= take;
                        *remaining == 0
                    }
                }
                Body::Chunked { at, total } => {
                    let keep = req.route == Route::Echo;
                    match self.decode_chunked(at, total, keep, &input[pos..]) {
                        Ok((n, done)) => {
                            pos += n;
                            done
                        }
                        Err(f) => return Err(self.fail(f, &mut date).after(answered)),
                    }
                }
            };

            if !complete {
                if req.expect_continue {
                    out.extend_from_slice(response::CONTINUE);
                    req.expect_continue = false;
                }
                self.busy.pending = Some(req);
                pending = Pending::Body;
                break;
            }

            let date = *date.get_or_insert_with(date::now);
            if req.route == Route::Custom {
                respond_custom(out, &date, &req, self.busy.custom.take());
            } else {
                let echo_body = match echo_from_input {
                    Some(range) => &input[range],
                    None => &self.busy.body[..],
                };
                respond(out, &date, &req, echo_body);
            }
            answered += 1;
            if matches!(req.body, Body::Chunked { .. }) {
                self.release_body();
            }
            if req.conn == ConnHeader::Close {
                self.busy.finished = true;
                return Ok(Progress::answered(pos, answered, true));
            }
        }
        debug_assert!(pos <= input.len());
        Ok(Progress::answered(pos, answered, false).with_pending(pending))
    }
}

#[cfg(test)]
mod route_tests {
    //! Extra routes ([`Http::with_routes`]).

    use super::*;

    fn http() -> Http {
        Http::default().with_routes(|method, path| {
            (path == "/x").then(|| RouteReply {
                status: "201 Created",
                content_type: "text/x",
                allow: None,
                body: format!("{method} x").into_bytes(),
                close: method == "DELETE",
            })
        })
    }

    fn run(input: &[u8]) -> (Result<Progress, ProtoError>, String) {
        let mut out = Vec::new();
        let r = http().open().on_input(input, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn an_extra_route_answers_and_others_fall_through() {
        let (r, out) =
            run(b"GET /x?q=1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nHEAD /x HTTP/1.1\r\n\r\n");
        assert_eq!(r.unwrap().requests, 3);
        let parts: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
        assert!(parts[0].starts_with("201 Created\r\n"), "{out}");
        assert!(parts[0].contains("Content-Type: text/x\r\nContent-Length: 5\r\n"), "{out}");
        assert!(parts[0].ends_with("\r\n\r\nGET x"), "{out}");
        assert!(parts[1].starts_with("200 OK\r\n") && parts[1].ends_with("Hello, World!"));
        assert!(parts[2].starts_with("201 Created\r\n") && parts[2].ends_with("\r\n\r\n"), "{out}");
    }

    #[test]
    fn an_extra_route_can_close_and_its_request_body_is_discarded() {
        let (r, out) =
            run(b"DELETE /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n");
        let p = r.unwrap();
        assert!(p.close && p.requests == 1, "{p:?}");
        assert!(out.contains("Connection: close\r\n") && out.ends_with("DELETE x"), "{out}");
    }
}
