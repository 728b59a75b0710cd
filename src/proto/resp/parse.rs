//! The request parser: RESP2 multibulk (`*N\r\n$len\r\n...`) and inline commands.
//!
//! [`Scratch::parse`] looks at the front of a connection's unconsumed input and either finds one
//! complete command, finds an incomplete one (and remembers how far it got), or fails with
//! the protocol error Redis would send.
//!
//! Arguments are not copied: for multibulk commands [`Scratch::ranges`] holds index ranges
//! into the input. Inline commands need unescaping, so their arguments are written to
//! [`Scratch::scratch`] (inline is the slow, human path) and the ranges index that. Those
//! buffers are per thread; what must survive between calls (a command read in part) is a
//! connection's boxed [`Partial`], which exists only while such a command does.
//!
//! ## Resuming incomplete multibulk commands
//!
//! The engine hands back exactly the bytes left unconsumed followed by new ones, so the
//! parser remembers a partially read multibulk command (arguments found so far, where the
//! next header starts, the length of a bulk whose payload has not fully arrived). A large
//! value that trickles in is therefore checked in O(1) per call (`input.len() >= needed`),
//! never rescanned. Should an engine hand in less input than last time, the state is
//! dropped and the command parsed again from the start (no panic, no out-of-bounds index).
//!
//! ## Limits, and how they differ from Redis
//!
//! Redis looks for the end of a line anywhere in its buffer and only complains about a
//! missing one once the buffer grows past 64 KiB. Here the end of a line (the `\n` of an
//! inline command, the `\r` of a `*`/`$` length line) must lie within the first
//! `max_inline + 2` bytes, so the outcome does not depend on how the stream was chunked.
//! A request's total size is capped by `max_request`; Redis has the similar
//! `client-query-buffer-limit`.

use std::cell::RefCell;

use super::RespConfig;
use crate::proto::ProtoError;

/// What [`Scratch::parse`] found at the front of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed {
    /// The command at the front is not complete; nothing to consume yet.
    Incomplete,
    /// `n` bytes that hold no command (an empty inline line, `*0`, `*-1`): consume them.
    Skip(usize),
    /// A complete command of `len` bytes whose arguments are in [`Scratch::ranges`],
    /// indexing the input (`inline == false`) or [`Scratch::scratch`] (`inline == true`).
    Command { len: usize, inline: bool },
}

/// How far [`Scratch::multibulk`] got: what it found, or where a command not yet fully
/// arrived stopped (for the caller to remember).
type Step = Result<Parsed, Pending>;

/// A multibulk command read in part.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// Arguments still to read.
    remaining: usize,
    /// Offset (from the command's first byte) of the next bulk header, or of the pending
    /// bulk's payload when `bulk` is set.
    pos: usize,
    /// Length of the bulk whose header was read but whose payload has not arrived.
    bulk: Option<usize>,
}

/// A connection's command read in part: what the parser remembers between calls, boxed
/// in the session only while such a command exists (an idle connection holds none).
#[derive(Debug)]
pub(super) enum Partial {
    /// A multibulk command: where its parsing stands and the argument ranges found so far.
    Multibulk { p: Pending, ranges: Vec<(usize, usize)> },
    /// An inline line: this many leading bytes are known to hold no `\n`.
    Inline { scanned: usize },
}

/// The parser's reusable buffers: one per thread (see [`with_scratch`]), not per
/// connection, so the hot path allocates nothing and an idle connection holds none.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Argument ranges of the last command returned (see [`Parsed::Command`]).
    pub(super) ranges: Vec<(usize, usize)>,
    /// Unescaped inline arguments of the last inline command.
    pub(super) scratch: Vec<u8>,
    /// Commands executed on this thread, to run a small expiry step every so many.
    pub(super) executed: u32,
}

/// Scratch capacity (in elements) kept by a thread between calls; more is freed.
const KEEP_SCRATCH: usize = 4096;

impl Scratch {
    const fn new() -> Self {
        Scratch { ranges: Vec::new(), scratch: Vec::new(), executed: 0 }
    }

    /// Frees buffers that one huge command grew beyond what the thread should keep.
    #[inline]
    fn trim(&mut self) {
        if self.ranges.capacity() > KEEP_SCRATCH || self.scratch.capacity() > KEEP_SCRATCH * 16 {
            self.free();
        }
    }

    #[cold]
    fn free(&mut self) {
        if self.ranges.capacity() > KEEP_SCRATCH {
            self.ranges = Vec::new();
        }
        if self.scratch.capacity() > KEEP_SCRATCH * 16 {
            self.scratch = Vec::new();
        }
    }
}

thread_local! {
    /// This thread's parser buffers, lent to one call at a time.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Runs `f` with this thread's parser buffers (trimmed afterwards). A nested call, which
/// nothing makes, would get fresh ones.
#[inline]
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut sc) => {
            let r = f(&mut sc);
            sc.trim();
            r
        }
        Err(_) => f(&mut Scratch::new()),
    })
}

/// Error kinds and replies, worded as Redis words them.
fn err(kind: &'static str, msg: &str) -> ProtoError {
    let mut reply = Vec::with_capacity(msg.len() + 8);
    reply.extend_from_slice(b"-ERR Protocol error: ");
    reply.extend_from_slice(msg.as_bytes());
    reply.extend_from_slice(b"\r\n");
    ProtoError::new(kind, reply)
}

fn invalid_multibulk_len() -> ProtoError {
    err("invalid_multibulk_length", "invalid multibulk length")
}

fn invalid_bulk_len() -> ProtoError {
    err("invalid_bulk_length", "invalid bulk length")
}

fn expected_dollar(got: u8) -> ProtoError {
    let got = if got == b'\r' || got == b'\n' { b' ' } else { got };
    let mut reply = b"-ERR Protocol error: expected '$', got '".to_vec();
    reply.push(got);
    reply.extend_from_slice(b"'\r\n");
    ProtoError::new("expected_dollar", reply)
}

/// Finds the byte `needle` in `hay`.
#[inline]
fn find(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// How a `*`/`$` length line at `start` ended.
enum Line {
    /// Not all of it has arrived.
    Incomplete,
    /// Digits end at `cr`; the next line starts at `next`.
    Done { cr: usize, next: usize },
    /// No `\r` within the allowed window.
    TooBig,
    /// A `\r` not followed by `\n`.
    BadEnd,
}

#[inline]
fn length_line(input: &[u8], start: usize, max_line: usize) -> Line {
    let window = max_line.saturating_add(2);
    let end = input.len().min(start.saturating_add(window));
    match find(&input[start..end], b'\r') {
        Some(i) => {
            let cr = start + i;
            match input.get(cr + 1) {
                None => Line::Incomplete,
                Some(b'\n') => Line::Done { cr, next: cr + 2 },
                Some(_) => Line::BadEnd,
            }
        }
        None if input.len() - start >= window => Line::TooBig,
        None => Line::Incomplete,
    }
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: optional `-`, no `+`,
/// no leading zeros (except `0` itself), no spaces, no overflow.
pub(super) fn parse_i64(s: &[u8]) -> Option<i64> {
    match s {
        [] => None,
        [b'0'] => Some(0),
        [b'-', digits @ ..] => {
            let v = parse_u64_strict(digits)?;
            if v <= i64::MAX as u64 + 1 { Some((v as i64).wrapping_neg()) } else { None }
        }
        digits => i64::try_from(parse_u64_strict(digits)?).ok(),
    }
}

/// Digits with a non-zero first digit, as a u64 (None on overflow or any other byte).
fn parse_u64_strict(digits: &[u8]) -> Option<u64> {
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

impl Scratch {
    /// Looks at the command at the front of `input` (which must not be empty), resuming
    /// from `partial` (the connection's command read in part, if any; updated).
    #[inline]
    pub(super) fn parse(
        &mut self,
        input: &[u8],
        cfg: &RespConfig,
        partial: &mut Option<Box<Partial>>,
    ) -> Result<Parsed, ProtoError> {
        if partial.is_some() {
            return self.resume(input, cfg, partial);
        }
        self.fresh(input, cfg, partial)
    }

    /// A command from its first byte (nothing remembered).
    #[inline(always)]
    fn fresh(
        &mut self,
        input: &[u8],
        cfg: &RespConfig,
        partial: &mut Option<Box<Partial>>,
    ) -> Result<Parsed, ProtoError> {
        match input.first() {
            None => Ok(Parsed::Incomplete),
            Some(b'*') => match self.multibulk_header(input, cfg)? {
                Ok(parsed) => Ok(parsed),
                Err(stopped) => {
                    self.remember(stopped, partial);
                    Ok(Parsed::Incomplete)
                }
            },
            Some(_) => self.inline(input, cfg, 0, partial, None),
        }
    }

    /// A multibulk command stopped incomplete at `p`: boxes where it stands and its ranges.
    #[cold]
    fn remember(&mut self, p: Pending, partial: &mut Option<Box<Partial>>) {
        *partial = Some(Box::new(Partial::Multibulk { p, ranges: self.ranges.clone() }));
    }

    /// Continues the command `partial` holds.
    #[cold]
    fn resume(
        &mut self,
        input: &[u8],
        cfg: &RespConfig,
        partial: &mut Option<Box<Partial>>,
    ) -> Result<Parsed, ProtoError> {
        let Some(mut b) = partial.take() else { return self.fresh(input, cfg, partial) };
        match &mut *b {
            Partial::Multibulk { p, ranges } if p.pos <= input.len() => {
                // Continue in this thread's buffer with the ranges found so far.
                let p = *p;
                std::mem::swap(&mut self.ranges, ranges);
                match self.multibulk(input, cfg, p)? {
                    Ok(parsed) => Ok(parsed),
                    Err(stopped) => {
                        // Still incomplete: the ranges go back to the connection.
                        if let Partial::Multibulk { p: at, ranges } = &mut *b {
                            *at = stopped;
                            std::mem::swap(&mut self.ranges, ranges);
                        }
                        *partial = Some(b);
                        Ok(Parsed::Incomplete)
                    }
                }
            }
            Partial::Inline { scanned } if input.first().is_some_and(|&c| c != b'*') => {
                let scanned = *scanned;
                self.inline(input, cfg, scanned, partial, Some(b))
            }
            // Shorter input than last time: parse it again from the start.
            _ => self.fresh(input, cfg, partial),
        }
    }

    /// A multibulk command from its `*` line; as [`Scratch::multibulk`], except that an
    /// incomplete `*` line is `Ok(Ok(Parsed::Incomplete))` (nothing to remember).
    #[inline(always)]
    fn multibulk_header(&mut self, input: &[u8], cfg: &RespConfig) -> Result<Step, ProtoError> {
        let (cr, next) = match length_line(input, 0, cfg.max_inline) {
            Line::Incomplete => return Ok(Ok(Parsed::Incomplete)),
            Line::TooBig => return Err(err("mbulk_count_too_big", "too big mbulk count string")),
            Line::BadEnd => return Err(invalid_multibulk_len()),
            Line::Done { cr, next } => (cr, next),
        };
        let n = parse_i64(&input[1..cr]).ok_or_else(invalid_multibulk_len)?;
        if n <= 0 {
            return Ok(Ok(Parsed::Skip(next)));
        }
        let n = usize::try_from(n).map_err(|_| invalid_multibulk_len())?;
        if n > cfg.max_multibulk {
            return Err(invalid_multibulk_len());
        }
        self.ranges.clear();
        // Never trust the count for more than a small preallocation.
        self.ranges.reserve(n.min(1024));
        self.multibulk(input, cfg, Pending { remaining: n, pos: next, bulk: None })
    }

    /// Reads the bulks of a multibulk command from `p` on, pushing their ranges: the
    /// complete command, or `Err` with where it stopped when not all has arrived.
    fn multibulk(
        &mut self,
        input: &[u8],
        cfg: &RespConfig,
        mut p: Pending,
    ) -> Result<Step, ProtoError> {
        while p.remaining > 0 {
            let len = match p.bulk {
                Some(len) => len,
                None => {
                    let (cr, next) = match length_line(input, p.pos, cfg.max_inline) {
                        Line::Incomplete => return Ok(Err(p)),
                        Line::TooBig => {
                            return Err(err("bulk_count_too_big", "too big bulk count string"));
                        }
                        Line::BadEnd => return Err(invalid_bulk_len()),
                        Line::Done { cr, next } => (cr, next),
                    };
                    if input[p.pos] != b'$' {
                        return Err(expected_dollar(input[p.pos]));
                    }
                    let len = parse_i64(&input[p.pos + 1..cr]).ok_or_else(invalid_bulk_len)?;
                    let len = usize::try_from(len).map_err(|_| invalid_bulk_len())?;
                    if len > cfg.max_bulk {
                        return Err(invalid_bulk_len());
                    }
                    p.pos = next;
                    if p.pos.saturating_add(len).saturating_add(2) > cfg.max_request {
                        return Err(err("request_too_big", "too big request"));
                    }
                    len
                }
            };
            let end = p.pos + len;
            if input.len() < end + 2 {
                p.bulk = Some(len);
                return Ok(Err(p));
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(err("bulk_not_crlf", "bulk data not followed by CRLF"));
            }
            self.ranges.push((p.pos, end));
            p.pos = end + 2;
            p.bulk = None;
            p.remaining -= 1;
        }
        Ok(Ok(Parsed::Command { len: p.pos, inline: false }))
    }

    /// An inline line; `scanned` leading bytes are known to hold no `\n`. `reuse` is the
    /// connection's partial box, if it had one, to keep when the line is still incomplete.
    fn inline(
        &mut self,
        input: &[u8],
        cfg: &RespConfig,
        scanned: usize,
        partial: &mut Option<Box<Partial>>,
        reuse: Option<Box<Partial>>,
    ) -> Result<Parsed, ProtoError> {
        let window = cfg.max_inline.saturating_add(2);
        let end = input.len().min(window);
        let from = scanned.min(end);
        let Some(i) = find(&input[from..end], b'\n') else {
            if input.len() >= window {
                return Err(err("inline_too_big", "too big inline request"));
            }
            let state = Partial::Inline { scanned: end };
            *partial = Some(match reuse {
                Some(mut b) => {
                    *b = state;
                    b
                }
                None => Box::new(state),
            });
            return Ok(Parsed::Incomplete);
        };
        let nl = from + i;
        let mut line_end = nl;
        if line_end > 0 && input[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        if !split_args(&input[..line_end], &mut self.scratch, &mut self.ranges) {
            return Err(err("unbalanced_quotes", "unbalanced quotes in request"));
        }
        if self.ranges.is_empty() {
            Ok(Parsed::Skip(nl + 1))
        } else {
            Ok(Parsed::Command { len: nl + 1, inline: true })
        }
    }
}

/// C's `isspace` in the "C" locale.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line into arguments with the rules of Redis's `sdssplitargs`:
/// blanks separate arguments; `"..."` supports `\n \r \t \b \a \xHH` and `\<any>`
/// escapes; `'...'` supports `\'`; a closing quote must be followed by a blank or the end;
/// a NUL byte ends the line (Redis works on C strings). Unescaped arguments go to
/// `scratch`, their ranges to `ranges`. Returns false on unbalanced quotes.
pub(super) fn split_args(
    line: &[u8],
    scratch: &mut Vec<u8>,
    ranges: &mut Vec<(usize, usize)>,
) -> bool {
    scratch.clear();
    ranges.clear();
    // Like a C string: reading past the end gives NUL.
    let at = |i: usize| -> u8 { line.get(i).copied().unwrap_or(0) };
    let mut p = 0;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return true;
        }
        let start = scratch.len();
        let (mut in_dq, mut in_sq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_dq {
                let hex = (c == b'\\' && at(p + 1) == b'x')
                    .then(|| Some(hex_val(at(p + 2))? * 16 + hex_val(at(p + 3))?))
                    .flatten();
                if let Some(byte) = hex {
                    scratch.push(byte);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    scratch.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return false;
                    }
                    done = true;
                } else if c == 0 {
                    return false;
                } else {
                    scratch.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    scratch.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return false;
                    }
                    done = true;
                } else if c == 0 {
                    return false;
                } else {
                    scratch.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => scratch.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        ranges.push((start, scratch.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RespConfig {
        RespConfig::default()
    }

    fn split(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        let (mut s, mut r) = (Vec::new(), Vec::new());
        split_args(line, &mut s, &mut r).then(|| r.iter().map(|&(a, b)| s[a..b].to_vec()).collect())
    }

    /// A thread's buffers and one connection's partial command, as the session uses them.
    #[derive(Default)]
    struct Parser {
        sc: Scratch,
        partial: Option<Box<Partial>>,
    }

    impl Parser {
        fn parse(&mut self, input: &[u8], cfg: &RespConfig) -> Result<Parsed, ProtoError> {
            self.sc.parse(input, cfg, &mut self.partial)
        }
    }

    fn args(p: &Parser, input: &[u8], inline: bool) -> Vec<Vec<u8>> {
        let buf = if inline { &p.sc.scratch[..] } else { input };
        p.sc.ranges.iter().map(|&(a, b)| buf[a..b].to_vec()).collect()
    }

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"12"), Some(12));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in
            [&b""[..], b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1a", b"9223372036854775808"]
        {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"99999999999999999999999"), None);
    }

    #[test]
    fn splits_like_sdssplitargs() {
        let v = |xs: &[&[u8]]| Some(xs.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
        assert_eq!(split(b"set a b"), v(&[b"set", b"a", b"b"]));
        assert_eq!(split(b"  set\t a  \r b "), v(&[b"set", b"a", b"b"]));
        assert_eq!(split(b""), v(&[]));
        assert_eq!(split(b"   "), v(&[]));
        assert_eq!(split(br#"set "a b" 'c d'"#), v(&[b"set", b"a b", b"c d"]));
        assert_eq!(split(br#""\n\r\t\b\a\\\"\x41\x7a\q""#), v(&[b"\n\r\t\x08\x07\\\"Azq"]));
        assert_eq!(split(br#""\x4g""#), v(&[b"x4g"]));
        assert_eq!(split(br#"'it\'s' '\n'"#), v(&[b"it's", b"\\n"]));
        assert_eq!(split(br#"ab"cd"e"#), None);
        assert_eq!(split(br#"ab"cd" e"#), v(&[b"abcd", b"e"]));
        assert_eq!(split(br#""""#), v(&[b""]));
        assert_eq!(split(b"\"abc"), None);
        assert_eq!(split(b"'abc"), None);
        assert_eq!(split(b"\"a\"b"), None);
        assert_eq!(split(b"'a'b"), None);
        assert_eq!(split(b"a\0b c"), v(&[b"a"]));
    }

    #[test]
    fn multibulk_complete_and_resumed() {
        let msg = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        let mut p = Parser::default();
        assert_eq!(p.parse(msg, &cfg()), Ok(Parsed::Command { len: msg.len(), inline: false }));
        assert_eq!(args(&p, msg, false), vec![b"GET".to_vec(), b"hello".to_vec()]);
        for cut in 1..msg.len() {
            let mut p = Parser::default();
            assert_eq!(p.parse(&msg[..cut], &cfg()), Ok(Parsed::Incomplete), "cut {cut}");
            assert_eq!(p.parse(msg, &cfg()), Ok(Parsed::Command { len: msg.len(), inline: false }));
            assert_eq!(args(&p, msg, false), vec![b"GET".to_vec(), b"hello".to_vec()]);
        }
    }

    #[test]
    fn shorter_input_than_before_restarts_cleanly() {
        let msg = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        let mut p = Parser::default();
        assert_eq!(p.parse(&msg[..20], &cfg()), Ok(Parsed::Incomplete));
        assert_eq!(p.parse(&msg[..3], &cfg()), Ok(Parsed::Incomplete));
        assert_eq!(p.parse(msg, &cfg()), Ok(Parsed::Command { len: msg.len(), inline: false }));
    }

    #[test]
    fn empty_and_null_multibulk_are_skipped() {
        let mut p = Parser::default();
        assert_eq!(p.parse(b"*0\r\n", &cfg()), Ok(Parsed::Skip(4)));
        assert_eq!(p.parse(b"*-1\r\n", &cfg()), Ok(Parsed::Skip(5)));
        assert_eq!(p.parse(b"\r\n", &cfg()), Ok(Parsed::Skip(2)));
        assert_eq!(p.parse(b"\n", &cfg()), Ok(Parsed::Skip(1)));
        assert_eq!(p.parse(b"  \t \r\n", &cfg()), Ok(Parsed::Skip(6)));
    }

    #[test]
    fn inline_line() {
        let mut p = Parser::default();
        let msg = b"SET k \"v w\"\r\nGET";
        assert_eq!(p.parse(msg, &cfg()), Ok(Parsed::Command { len: 13, inline: true }));
        assert_eq!(args(&p, msg, true), vec![b"SET".to_vec(), b"k".to_vec(), b"v w".to_vec()]);
        assert_eq!(p.parse(b"GET", &cfg()), Ok(Parsed::Incomplete));
        assert_eq!(p.parse(b"GET k", &cfg()), Ok(Parsed::Incomplete));
        assert_eq!(p.parse(b"GET k\n", &cfg()), Ok(Parsed::Command { len: 6, inline: true }));
    }

    #[test]
    fn bulk_must_end_with_crlf() {
        let mut p = Parser::default();
        let e = p.parse(b"*1\r\n$3\r\nGETxx", &cfg()).unwrap_err();
        assert_eq!(e.reply, b"-ERR Protocol error: bulk data not followed by CRLF\r\n");
    }

    #[test]
    fn request_size_is_capped() {
        let cfg = RespConfig { max_bulk: 100, max_request: 250, ..RespConfig::default() };
        let mut p = Parser::default();
        let mut msg = b"*3\r\n$100\r\n".to_vec();
        msg.extend_from_slice(&[b'a'; 100]);
        msg.extend_from_slice(b"\r\n$100\r\n");
        msg.extend_from_slice(&[b'b'; 100]);
        msg.extend_from_slice(b"\r\n$100\r\n");
        let e = p.parse(&msg, &cfg).unwrap_err();
        assert_eq!(e.reply, b"-ERR Protocol error: too big request\r\n");
    }
}
