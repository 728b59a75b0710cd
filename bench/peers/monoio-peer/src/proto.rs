//! The peers' request handling, independent of any runtime: find whole requests at the
//! front of a connection's input and append their replies to an output buffer.
//!
//! - HTTP/1.1: every request (head, plus a `Content-Length` body if any) gets
//!   `200 OK` with `Hello, World!`, keep-alive, in order (pipelining), the same
//!   headers as `evloop serve --proto http` answers `GET /` with.
//! - RESP: arrays of bulk strings (and inline commands): `PING` -> `+PONG`,
//!   `SET k v` -> `+OK`, `GET k` -> the value or nil, anything else -> `-ERR`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The HTTP body of every reply.
pub const BODY: &[u8] = b"Hello, World!";
/// Longest request head or RESP line accepted before the connection is dropped.
const MAX_HEAD: usize = 64 * 1024;

/// Input that cannot be a request: the connection should be closed.
#[derive(Debug)]
pub struct Malformed;

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the IMF-fixdate of now (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted once
/// per second per thread.
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now {
            *d = (now, imf_fixdate(now));
        }
        out.extend_from_slice(&d.1);
    });
}

fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days.rem_euclid(7)) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut b = [b' '; 29];
    b.copy_from_slice(&s.as_bytes()[..29]);
    b
}

/// Appends one `200 OK` reply to `out`.
pub fn http_reply(server: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: ");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n");
    out.extend_from_slice(BODY);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Answers every whole HTTP request at the front of `input`; returns the bytes consumed.
pub fn http(input: &[u8], server: &str, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return if rest.len() > MAX_HEAD { Err(Malformed) } else { Ok(at) };
        };
        let head = &rest[..end];
        let mut body = 0usize;
        for line in head.split(|&b| b == b'\n').skip(1) {
            if let Some(colon) = line.iter().position(|&b| b == b':')
                && line[..colon].eq_ignore_ascii_case(b"content-length")
            {
                body = std::str::from_utf8(&line[colon + 1..])
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or(Malformed)?;
            }
        }
        let total = end + 4 + body;
        if rest.len() < total {
            return Ok(at);
        }
        http_reply(server, out);
        at += total;
    }
}

/// The keyspace of a RESP peer (one per thread).
pub type Store = HashMap<Vec<u8>, Vec<u8>>;

/// A parsed RESP command: its arguments and its length in bytes.
type Command<'a> = (Vec<&'a [u8]>, usize);

/// One whole RESP command at the front of `input`, or `None` when it is incomplete.
fn resp_command(input: &[u8]) -> Result<Option<Command<'_>>, Malformed> {
    let line = |from: usize| -> Result<Option<(&[u8], usize)>, Malformed> {
        match find(&input[from..], b"\r\n") {
            Some(p) => Ok(Some((&input[from..from + p], from + p + 2))),
            None if input.len() - from > MAX_HEAD => Err(Malformed),
            None => Ok(None),
        }
    };
    let number = |b: &[u8]| -> Result<usize, Malformed> {
        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(Malformed)
    };
    let Some((first, mut at)) = line(0)? else {
        return Ok(None);
    };
    if first.first() != Some(&b'*') {
        // An inline command (`PING`, as redis-cli or telnet send it).
        let args = first.split(|&b| b == b' ').filter(|a| !a.is_empty()).collect();
        return Ok(Some((args, at)));
    }
    let n = number(&first[1..])?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let Some((len, next)) = line(at)? else {
            return Ok(None);
        };
        if len.first() != Some(&b'$') {
            return Err(Malformed);
        }
        let len = number(&len[1..])?;
        if input.len() < next + len + 2 {
            return Ok(None);
        }
        args.push(&input[next..next + len]);
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

/// Answers every whole RESP command at the front of `input`; returns the bytes consumed.
pub fn resp(input: &[u8], store: &mut Store, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    let mut at = 0;
    while let Some((args, used)) = resp_command(&input[at..])? {
        at += used;
        let Some(name) = args.first() else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"GET") && args.len() == 2 {
            match store.get(args[1]) {
                Some(v) => {
                    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"$-1\r\n"),
            }
        } else if name.eq_ignore_ascii_case(b"SET") && args.len() == 3 {
            store.insert(args[1].to_vec(), args[2].to_vec());
            out.extend_from_slice(b"+OK\r\n");
        } else if name.eq_ignore_ascii_case(b"PING") {
            out.extend_from_slice(b"+PONG\r\n");
        } else {
            out.extend_from_slice(b"-ERR unknown command\r\n");
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn http_pipelined() {
        let mut out = Vec::new();
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /";
        assert_eq!(http(two, "p", &mut out).unwrap(), 54);
        assert_eq!(out.windows(13).filter(|w| *w == BODY).count(), 2);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab";
        assert_eq!(http(post, "p", &mut out).unwrap(), 0);
    }

    #[test]
    fn resp_commands() {
        let mut store = Store::new();
        let mut out = Vec::new();
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*2\r\n$3\r\nGET";
        assert_eq!(resp(input, &mut store, &mut out).unwrap(), input.len() - 11);
        assert_eq!(out, b"+OK\r\n$2\r\nvv\r\n+PONG\r\n");
    }
}
