//! Writing responses: a handful of `extend_from_slice` calls over static pieces, the cached
//! date, and a decimal `Content-Length` formatted on the stack. No `format!`, no allocation
//! beyond `out` growing.

use super::date::HttpDate;

/// Status lines (without `HTTP/1.1 ` and CRLF) used by this module.
pub(super) mod status {
    pub const OK: &[u8] = b"200 OK";
    pub const BAD_REQUEST: &[u8] = b"400 Bad Request";
    pub const NOT_FOUND: &[u8] = b"404 Not Found";
    pub const METHOD_NOT_ALLOWED: &[u8] = b"405 Method Not Allowed";
    pub const REQUEST_TIMEOUT: &[u8] = b"408 Request Timeout";
    pub const CONTENT_TOO_LARGE: &[u8] = b"413 Content Too Large";
    pub const FIELDS_TOO_LARGE: &[u8] = b"431 Request Header Fields Too Large";
    pub const NOT_IMPLEMENTED: &[u8] = b"501 Not Implemented";
    pub const VERSION_NOT_SUPPORTED: &[u8] = b"505 HTTP Version Not Supported";
}

/// `text/plain`
pub(super) const TEXT: &[u8] = b"text/plain";
/// `application/octet-stream`
pub(super) const OCTETS: &[u8] = b"application/octet-stream";
/// The body of `GET /` and `GET /plaintext`.
pub(super) const HELLO: &[u8] = b"Hello, World!";
/// The interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The `Connection` header a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnHeader {
    /// None: HTTP/1.1 persistent connection.
    Omit,
    /// `Connection: keep-alive` (an HTTP/1.0 client asked for it).
    KeepAlive,
    /// `Connection: close`: the connection closes after this response.
    Close,
}

/// One response to write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Response<'a> {
    /// e.g. [`status::OK`].
    pub status: &'static [u8],
    /// Value of an `Allow` header, if any.
    pub allow: Option<&'static [u8]>,
    pub content_type: &'static [u8],
    pub body: &'a [u8],
    /// HEAD: every header (Content-Length of `body` included) but no body.
    pub head_only: bool,
    pub conn: ConnHeader,
}

const HELLO_PREFIX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: evloop\r\nDate: ";
const HELLO_SUFFIX: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// The hot path: `200 Hello, World!` on a persistent HTTP/1.1 connection. Byte-identical
/// to [`write()`] with the same inputs.
#[inline]
pub(super) fn write_hello(out: &mut Vec<u8>, date: &HttpDate) {
    out.reserve(HELLO_PREFIX.len() + date.len() + HELLO_SUFFIX.len());
    out.extend_from_slice(HELLO_PREFIX);
    out.extend_from_slice(date);
    out.extend_from_slice(HELLO_SUFFIX);
}

/// Appends `r` to `out`: status line, `Server`, `Date`, optional `Allow`, `Content-Type`,
/// `Content-Length`, optional `Connection`, blank line, body (unless `head_only`).
pub(super) fn write(out: &mut Vec<u8>, date: &HttpDate, r: &Response<'_>) {
    let mut digits = [0u8; 20];
    let len = fmt_usize(r.body.len(), &mut digits);
    let body = if r.head_only { &[][..] } else { r.body };
    out.reserve(160 + r.status.len() + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(r.status);
    out.extend_from_slice(b"\r\nServer: evloop\r\nDate: ");
    out.extend_from_slice(date);
    if let Some(allow) = r.allow {
        out.extend_from_slice(b"\r\nAllow: ");
        out.extend_from_slice(allow);
    }
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(r.content_type);
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(len);
    out.extend_from_slice(match r.conn {
        ConnHeader::Omit => b"\r\n\r\n".as_slice(),
        ConnHeader::KeepAlive => b"\r\nConnection: keep-alive\r\n\r\n",
        ConnHeader::Close => b"\r\nConnection: close\r\n\r\n",
    });
    out.extend_from_slice(body);
}

/// Formats `n` in decimal into the end of `buf`, returning the digits.
pub(super) fn fmt_usize(n: usize, buf: &mut [u8; 20]) -> &[u8] {
    crate::proto::digits(n as u64, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_integers() {
        let mut b = [0u8; 20];
        for n in [0usize, 7, 10, 13, 99, 100, 1_048_576, usize::MAX] {
            assert_eq!(fmt_usize(n, &mut b), n.to_string().as_bytes());
        }
    }

    #[test]
    fn hello_fast_path_matches_general_writer() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let mut fast = Vec::new();
        write_hello(&mut fast, &date);
        let mut slow = Vec::new();
        let r = Response {
            status: status::OK,
            allow: None,
            content_type: TEXT,
            body: HELLO,
            head_only: false,
            conn: ConnHeader::Omit,
        };
        write(&mut slow, &date, &r);
        assert_eq!(fast, slow);
    }
}
