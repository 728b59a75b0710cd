//! The protocols' fuzz target, in stable CI (issue 10): every protocol through the public
//! `Protocol` API, with random bytes and with valid pipelines that are then
//! mutated (bytes overwritten, runs inserted, cut short), fed whole and in random chunks
//! the way an engine feeds them. Properties:
//!
//! - no panic;
//! - chunking invariance: the output, the requests counted and the outcome (open, close
//!   requested, protocol error with its reply) are the same whatever the chunking;
//! - bounded input: what a session leaves unconsumed stays within its limits;
//! - bounded output for these non-amplifying pipelines (small values, no MGET fan-out);
//! - bounded time per call.
//!
//! Case counts are modest so the suite stays fast; raise `PROPTEST_CASES` to fuzz longer.

use std::time::{Duration, Instant};

use evloop::proto::echo::Echo;
use evloop::proto::frame::{Frame, FrameConfig};
use evloop::proto::http::{Http, HttpConfig};
use evloop::proto::resp::{Redis, RespConfig};
use evloop::proto::{Bound, Protocol};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;

/// What one connection's worth of input produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    requests: usize,
    /// `Some(kind)` when a protocol error ended the stream (its reply is in `out`).
    error: Option<&'static str>,
    close: bool,
    /// Unconsumed bytes when the input ran out.
    left: usize,
}

/// Per-call time bound: generous for a debug build on a loaded machine; an exponential
/// path (as the old glob matcher) blows through it by orders of magnitude.
const CALL_LIMIT: Duration = Duration::from_millis(500);

/// Feeds `input` to a fresh session in pieces of the given sizes (cycled; one piece of
/// everything when `cuts` is empty), keeping the unconsumed tail as an engine does and
/// stopping at a close or an error.
fn feed<P: Protocol>(mut s: Bound<P>, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut o = Outcome { out: Vec::new(), requests: 0, error: None, close: false, left: 0 };
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(input.len()).max(1);
        i += 1;
        let end = (at + n).min(input.len());
        pending.extend_from_slice(&input[at..end]);
        at = end;
        let start = Instant::now();
        let r = s.on_input(&pending, &mut o.out);
        let took = start.elapsed();
        assert!(took < CALL_LIMIT, "one call took {took:?} on {} bytes", pending.len());
        match r {
            Ok(p) => {
                assert!(p.consumed <= pending.len(), "consumed more than given");
                o.requests += p.requests;
                pending.drain(..p.consumed);
                if p.close {
                    o.close = true;
                    break;
                }
            }
            Err(e) => {
                o.requests += e.requests;
                o.out.extend_from_slice(&e.reply);
                o.error = Some(e.kind);
                pending.clear();
                break;
            }
        }
    }
    o.left = pending.len();
    o
}

/// Replaces each HTTP `Date:` value (29 bytes) with `D`, and drops interim
/// `100 Continue` responses (sent only when a body is still to come, so they depend on
/// the chunking by design).
fn normalise_http(bytes: &[u8]) -> Vec<u8> {
    const TAG: &[u8] = b"\r\nDate: ";
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(TAG) && bytes.len() >= i + TAG.len() + 29 {
            out.extend_from_slice(b"\r\nDate: D");
            i += TAG.len() + 29;
        } else if bytes[i..].starts_with(CONTINUE) {
            i += CONTINUE.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Asserts chunking invariance between a whole and a chunked feed, and the bounds.
fn check<P: Protocol>(
    fresh: impl Fn() -> P,
    input: &[u8],
    cuts: &[usize],
    max_left: usize,
    max_out: impl Fn(usize) -> usize,
    normalise: fn(&[u8]) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let whole = feed(fresh().open(), input, &[]);
    let chunked = feed(fresh().open(), input, cuts);
    let (a, b) = (normalise(&whole.out), normalise(&chunked.out));
    prop_assert_eq!(
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b),
        "output depends on the chunking"
    );
    prop_assert_eq!(whole.requests, chunked.requests, "requests counted differ");
    prop_assert_eq!(whole.error, chunked.error);
    prop_assert_eq!(whole.close, chunked.close);
    prop_assert!(whole.left <= max_left, "{} bytes left unconsumed", whole.left);
    prop_assert!(chunked.left <= max_left, "{} bytes left unconsumed", chunked.left);
    let bound = max_out(input.len());
    prop_assert!(
        whole.out.len() <= bound,
        "{} output bytes for {} input",
        whole.out.len(),
        input.len()
    );
    Ok(())
}

fn identity(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

/// A valid stream, then mutations: overwritten bytes, an inserted run, a cut.
fn mutate(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        valid,
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        prop::option::of((any::<Index>(), prop::collection::vec(any::<u8>(), 1..12))),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(mut v, flips, insert, cut)| {
            if v.is_empty() {
                return v;
            }
            for (i, b) in flips {
                let i = i.index(v.len());
                v[i] = b;
            }
            if let Some((i, run)) = insert {
                let i = i.index(v.len());
                v.splice(i..i, run);
            }
            if let Some(i) = cut {
                let i = i.index(v.len() + 1);
                v.truncate(i);
            }
            v
        })
}

/// Valid pipelines, mutated ones (most cases) and plain random bytes.
fn inputs(valid: impl Strategy<Value = Vec<u8>> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => valid.clone(),
        5 => mutate(valid),
        1 => prop::collection::vec(any::<u8>(), 0..600),
    ]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..24)
}

// ---- Redis ---------------------------------------------------------------------------

const RESP: RespConfig = RespConfig {
    max_bulk: 256,
    max_multibulk: 32,
    max_inline: 128,
    max_request: 2048,
    output_budget: 1 << 20,
    max_reply: 64 << 20,
};

fn word() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(prop::sample::select(b"abcxyz01*?[]^-\\".to_vec()), 1..8)
}

fn value() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// One non-amplifying, clock-independent command.
fn redis_command() -> impl Strategy<Value = Vec<u8>> + Clone {
    let key = prop::sample::select(vec![b"k".to_vec(), b"n".to_vec(), b"list".to_vec()]);
    prop_oneof![
        Just(multibulk(&[b"PING".to_vec()])),
        Just(b"PING\r\n".to_vec()),
        word().prop_map(|w| {
            let mut v = b"ECHO ".to_vec();
            v.extend_from_slice(&w);
            v.extend_from_slice(b"\r\n");
            v
        }),
        value().prop_map(|v| multibulk(&[b"ECHO".to_vec(), v])),
        (key.clone(), value()).prop_map(|(k, v)| multibulk(&[b"SET".to_vec(), k, v])),
        key.clone().prop_map(|k| multibulk(&[b"GET".to_vec(), k])),
        key.clone().prop_map(|k| multibulk(&[b"INCR".to_vec(), k])),
        key.clone().prop_map(|k| multibulk(&[b"DEL".to_vec(), k])),
        key.clone().prop_map(|k| multibulk(&[b"EXISTS".to_vec(), k])),
        key.clone().prop_map(|k| multibulk(&[b"STRLEN".to_vec(), k])),
        (key.clone(), value()).prop_map(|(k, v)| multibulk(&[b"APPEND".to_vec(), k, v])),
        (key.clone(), key.clone()).prop_map(|(a, b)| multibulk(&[b"MGET".to_vec(), a, b])),
        (word(), word()).prop_map(|(a, b)| multibulk(&[b"CONFIG".to_vec(), b"GET".to_vec(), a, b])),
        Just(multibulk(&[b"DBSIZE".to_vec()])),
        Just(multibulk(&[b"NOSUCH".to_vec(), b"x".to_vec()])),
    ]
}

fn redis_pipeline() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(redis_command(), 0..12).prop_map(|cmds| cmds.concat())
}

// ---- HTTP ----------------------------------------------------------------------------

const HTTP: HttpConfig = HttpConfig { max_head_bytes: 512, max_headers: 8, max_body: 256 };

fn http_request() -> impl Strategy<Value = Vec<u8>> + Clone {
    let path = prop::sample::select(vec!["/", "/plaintext", "/echo", "/nope", "/?q=1"]);
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT"]);
    let conn =
        prop::sample::select(vec!["", "Connection: keep-alive\r\n", "Connection: close\r\n"]);
    let body = prop::collection::vec(any::<u8>(), 0..64);
    (method, path, conn, body, any::<bool>()).prop_map(|(m, p, c, body, chunked)| {
        let mut v = format!("{m} {p} HTTP/1.1\r\nHost: x\r\n{c}").into_bytes();
        if m == "POST" && chunked {
            v.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(17) {
                v.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                v.extend_from_slice(part);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
        } else if m == "POST" {
            v.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            v.extend_from_slice(&body);
        } else {
            v.extend_from_slice(b"\r\n");
        }
        v
    })
}

fn http_pipeline() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(http_request(), 0..6).prop_map(|r| r.concat())
}

// ---- frames --------------------------------------------------------------------------

const FRAME: FrameConfig = FrameConfig { max_frame: 512 };

fn frame_stream() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6).prop_map(|frames| {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&(f.len() as u32).to_be_bytes());
            v.extend_from_slice(&f);
        }
        v
    })
}

/// 128 cases per protocol unless `PROPTEST_CASES` asks for more.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 128;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn redis_fuzz(input in inputs(redis_pipeline()), cuts in cuts()) {
        // Each reply is at most a small value or a short error per request byte range:
        // GET/MGET of 40-byte values from requests of at least ~14 bytes.
        check(|| Redis::new(RESP), &input, &cuts, RESP.max_request.max(RESP.max_inline + 2),
              |n| 8 * n + 256, identity)?;
    }

    #[test]
    fn http_fuzz(input in inputs(http_pipeline()), cuts in cuts()) {
        // A response is a bounded head (~200 bytes) plus an echoed body no larger than
        // the request's; every request is at least ~16 bytes.
        check(|| Http::new(HTTP), &input, &cuts, HTTP.max_head_bytes + HTTP.max_body + 64,
              |n| 16 * n + 512, normalise_http)?;
    }

    #[test]
    fn frame_fuzz(input in inputs(frame_stream()), cuts in cuts()) {
        check(|| Frame::new(FRAME), &input, &cuts, 4 + FRAME.max_frame, |n| n, identity)?;
    }

    #[test]
    fn echo_fuzz(input in prop::collection::vec(any::<u8>(), 0..2000), cuts in cuts()) {
        let whole = feed(Echo.open(), &input, &[]);
        let chunked = feed(Echo.open(), &input, &cuts);
        prop_assert_eq!(&whole.out, &input);
        prop_assert_eq!(&chunked.out, &input);
        prop_assert_eq!((whole.left, chunked.left), (0, 0));
    }
}

/// The fuzz target must reach past the parsers: valid pipelines are answered in full
/// (a generator that only produced errors would make every property above vacuous).
#[test]
fn valid_pipelines_are_answered() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..32 {
        let input = redis_pipeline().new_tree(&mut runner).unwrap().current();
        let o = feed(Redis::new(RESP).open(), &input, &[7]);
        assert_eq!((o.error, o.left), (None, 0), "{}", String::from_utf8_lossy(&input));
        let input = http_pipeline().new_tree(&mut runner).unwrap().current();
        let o = feed(Http::new(HTTP).open(), &input, &[5]);
        assert_eq!(o.error, None, "{}", String::from_utf8_lossy(&input));
        assert!(o.close || o.left == 0);
        let input = frame_stream().new_tree(&mut runner).unwrap().current();
        let o = feed(Frame::new(FRAME).open(), &input, &[3]);
        assert_eq!((o.error, o.left, o.out.len()), (None, 0, input.len()));
    }
}
