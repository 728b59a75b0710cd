//! What a load client sends and how it checks each reply, per protocol.

use crate::proto::frame;

/// The outcome of looking at the front of a connection's input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Not a whole reply yet.
    Incomplete,
    /// A whole, correct reply of this many bytes.
    Ok(usize),
    /// A whole reply of this many bytes that is wrong (mismatched echo, error status, ...).
    Wrong(usize),
    /// Input that cannot be parsed: the connection is closed.
    Garbage,
}

/// A request/reply pattern. One value is shared by every connection of a run.
#[derive(Debug, Clone)]
pub(crate) enum Workload {
    /// Send `payload`, expect it back.
    Echo { payload: Vec<u8> },
    /// Send a frame carrying `payload`, expect the same frame back.
    Frame { framed: Vec<u8> },
    /// Send `request` (a GET), expect a 2xx response with a body.
    Http { request: Vec<u8> },
    /// Send `request` (one RESP command), expect a reply of kind `expect`.
    Redis { request: Vec<u8>, expect: RedisExpect },
}

/// The reply a Redis command must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisExpect {
    /// `+PONG`
    Pong,
    /// `+OK`
    Ok,
    /// A bulk string (or nil).
    Bulk,
}

impl Workload {
    /// Echo of `size` pseudo-random bytes.
    pub(crate) fn echo(size: usize) -> Workload {
        Workload::Echo { payload: payload(size) }
    }

    /// A frame with a `size`-byte payload.
    pub(crate) fn frame(size: usize) -> Workload {
        let mut framed = Vec::new();
        let _ = frame::encode(&payload(size), &mut framed);
        Workload::Frame { framed }
    }

    /// `GET path` over keep-alive HTTP/1.1.
    pub(crate) fn http(path: &str) -> Workload {
        let request = format!("GET {path} HTTP/1.1\r\nHost: evloop\r\n\r\n").into_bytes();
        Workload::Http { request }
    }

    /// A Redis command: `ping`, `set` (a `size`-byte value) or `get`, on one key.
    pub(crate) fn redis(command: &str, size: usize) -> Result<Workload, String> {
        let key = b"evloop:load".as_slice();
        let (args, expect): (Vec<&[u8]>, _) = match command {
            "ping" => (vec![b"PING"], RedisExpect::Pong),
            "set" => (vec![b"SET", key], RedisExpect::Ok),
            "get" => (vec![b"GET", key], RedisExpect::Bulk),
            other => {
                return Err(format!("unknown redis command {other:?} (use ping, set or get)"));
            }
        };
        let value = payload(size);
        let mut args = args;
        if command == "set" {
            args.push(&value);
        }
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            request.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            request.extend_from_slice(a);
            request.extend_from_slice(b"\r\n");
        }
        Ok(Workload::Redis { request, expect })
    }

    /// The bytes of one request.
    pub(crate) fn request(&self) -> &[u8] {
        match self {
            Workload::Echo { payload } => payload,
            Workload::Frame { framed } => framed,
            Workload::Http { request } | Workload::Redis { request, .. } => request,
        }
    }

    /// Checks the reply at the front of `input`.
    pub(crate) fn reply(&self, input: &[u8]) -> Reply {
        match self {
            Workload::Echo { payload: expected } | Workload::Frame { framed: expected } => {
                match input.get(..expected.len()) {
                    None => Reply::Incomplete,
                    Some(got) if got == expected.as_slice() => Reply::Ok(expected.len()),
                    Some(_) => Reply::Wrong(expected.len()),
                }
            }
            Workload::Http { .. } => http_reply(input),
            Workload::Redis { expect, .. } => redis_reply(input, *expect),
        }
    }
}

/// Deterministic printable payload, so mismatches are readable in a capture.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn http_reply(input: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Reply::Incomplete,
        Err(_) => return Reply::Garbage,
    };
    let Some(code) = resp.code else {
        return Reply::Garbage;
    };
    let mut body = 0usize;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()) {
                Some(n) => body = n,
                None => return Reply::Garbage,
            }
        }
    }
    let total = head + body;
    if input.len() < total {
        Reply::Incomplete
    } else if (200..300).contains(&code) {
        Reply::Ok(total)
    } else {
        Reply::Wrong(total)
    }
}

/// Position just past the CRLF that ends the line starting at `from`.
fn line_end(input: &[u8], from: usize) -> Option<usize> {
    input[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p + 2)
}

fn redis_reply(input: &[u8], expect: RedisExpect) -> Reply {
    let Some(&kind) = input.first() else {
        return Reply::Incomplete;
    };
    let Some(end) = line_end(input, 0) else {
        return if input.len() > 64 * 1024 { Reply::Garbage } else { Reply::Incomplete };
    };
    let line = &input[1..end - 2];
    match kind {
        b'+' => {
            let ok = match expect {
                RedisExpect::Pong => line == b"PONG",
                RedisExpect::Ok => line == b"OK",
                RedisExpect::Bulk => false,
            };
            if ok { Reply::Ok(end) } else { Reply::Wrong(end) }
        }
        b'-' | b':' => Reply::Wrong(end),
        b'$' => {
            let Some(len) = std::str::from_utf8(line).ok().and_then(|s| s.parse::<i64>().ok())
            else {
                return Reply::Garbage;
            };
            let total = if len < 0 { end } else { end + len as usize + 2 };
            if input.len() < total {
                Reply::Incomplete
            } else if expect == RedisExpect::Bulk {
                Reply::Ok(total)
            } else {
                Reply::Wrong(total)
            }
        }
        _ => Reply::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_replies() {
        let w = Workload::echo(6);
        assert_eq!(w.reply(b"abc"), Reply::Incomplete);
        assert_eq!(w.reply(b"abcdefabc"), Reply::Ok(6));
        assert_eq!(w.reply(b"abcdeX"), Reply::Wrong(6));
    }

    #[test]
    fn http_replies() {
        let w = Workload::http("/");
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        assert_eq!(w.reply(ok), Reply::Ok(ok.len()));
        assert_eq!(w.reply(&ok[..ok.len() - 1]), Reply::Incomplete);
        assert_eq!(
            w.reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            Reply::Wrong(45)
        );
        assert_eq!(w.reply(b"garbage\r\n\r\n"), Reply::Garbage);
    }

    #[test]
    fn redis_replies() {
        let set = Workload::redis("set", 3).unwrap();
        assert_eq!(set.request(), b"*3\r\n$3\r\nSET\r\n$11\r\nevloop:load\r\n$3\r\nabc\r\n");
        assert_eq!(set.reply(b"+OK\r\n"), Reply::Ok(5));
        assert_eq!(set.reply(b"-ERR x\r\n"), Reply::Wrong(8));
        let get = Workload::redis("get", 3).unwrap();
        assert_eq!(get.reply(b"$3\r\nabc\r\n"), Reply::Ok(9));
        assert_eq!(get.reply(b"$3\r\nab"), Reply::Incomplete);
        assert_eq!(get.reply(b"$-1\r\n"), Reply::Ok(5));
        assert_eq!(Workload::redis("ping", 0).unwrap().reply(b"+PONG\r\n"), Reply::Ok(7));
        assert!(Workload::redis("flushall", 0).is_err());
    }
}
