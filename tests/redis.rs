//! The Redis RESP2 protocol end to end, on both engines: the `redis` crate as a real
//! client, raw sockets for pipelining, inline commands, protocol errors and garbage.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use evloop::proto::Protocol;
use evloop::proto::resp::{Redis, RespConfig};
use evloop::serve::{Engine, Served, start};
use redis::{Connection, FromRedisValue, Value};

fn serve(engine: Engine, loops: usize, cfg: RespConfig) -> Served {
    start(engine, Redis::new(cfg), local_config(loops)).expect("start redis server")
}

fn client(addr: SocketAddr) -> Connection {
    let url = format!("redis://{addr}/");
    let client = redis::Client::open(url.as_str()).expect("client");
    let con = client.get_connection().expect("redis connection");
    con.set_read_timeout(Some(LIMIT)).expect("timeout");
    con.set_write_timeout(Some(LIMIT)).expect("timeout");
    con
}

/// Runs one command given as words.
fn q<T: FromRedisValue>(con: &mut Connection, words: &[&str]) -> T {
    try_q(con, words).unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

fn try_q<T: FromRedisValue>(con: &mut Connection, words: &[&str]) -> redis::RedisResult<T> {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c.query(con)
}

/// Reads until the server closes (EOF, or a reset after its last bytes); panics on a
/// timeout, so a server that never closes fails the test.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return v,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return v,
            Err(e) => panic!(
                "no close from the server ({e}); got {} bytes: {:?}",
                v.len(),
                String::from_utf8_lossy(&v[v.len().saturating_sub(200)..])
            ),
        }
    }
}

/// Sends `request` in one write and returns everything the server sends before closing.
fn request_then_close(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    send(&mut s, request);
    read_until_closed(&mut s)
}

fn ping_still_answers(s: &mut TcpStream) {
    send(s, b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(read_n(s, 7), b"+PONG\r\n");
}

// 1. Strings, counters, multi-key commands.

fn basic_commands(engine: Engine) {
    let server = serve(engine, 2, RespConfig::default());
    let mut con = client(server.local_addrs()[0]);

    assert_eq!(q::<String>(&mut con, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "greeting"]), Some("hello".into()));
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "missing"]), None);
    let bin: Vec<u8> = (0..=255u8).collect();
    assert_eq!(redis::cmd("SET").arg("bin").arg(&bin[..]).query::<String>(&mut con).unwrap(), "OK");
    assert_eq!(q::<Vec<u8>>(&mut con, &["GET", "bin"]), bin, "binary-safe");

    assert_eq!(q::<i64>(&mut con, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut con, &["INCR", "n"]), 2);
    assert_eq!(q::<i64>(&mut con, &["INCRBY", "n", "40"]), 42);
    assert_eq!(q::<i64>(&mut con, &["INCRBY", "n", "-50"]), -8);
    assert_eq!(q::<i64>(&mut con, &["DECR", "n"]), -9);
    assert_eq!(q::<i64>(&mut con, &["DECRBY", "n", "1"]), -10);
    assert_eq!(q::<String>(&mut con, &["GET", "n"]), "-10");
    let e = try_q::<i64>(&mut con, &["INCR", "greeting"]).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "INCR on a string: {e}");
    assert_eq!(e.code(), Some("ERR"), "{e}");
    let e = try_q::<i64>(&mut con, &["INCRBY", "n", "x"]).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    assert_eq!(
        q::<String>(&mut con, &["GET", "greeting"]),
        "hello",
        "a failed INCR changes nothing"
    );

    assert_eq!(q::<i64>(&mut con, &["APPEND", "a", "foo"]), 3);
    assert_eq!(q::<i64>(&mut con, &["APPEND", "a", "barbaz"]), 9);
    assert_eq!(q::<String>(&mut con, &["GET", "a"]), "foobarbaz");
    assert_eq!(q::<i64>(&mut con, &["STRLEN", "a"]), 9);
    assert_eq!(q::<i64>(&mut con, &["STRLEN", "missing"]), 0);

    assert_eq!(q::<String>(&mut con, &["MSET", "k1", "v1", "k2", "v2", "k3", "v3"]), "OK");
    assert_eq!(
        q::<Vec<Option<String>>>(&mut con, &["MGET", "k1", "nope", "k3"]),
        vec![Some("v1".into()), None, Some("v3".into())]
    );
    assert_eq!(q::<Vec<Option<String>>>(&mut con, &["MGET", "k2"]), vec![Some("v2".into())]);

    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k1", "k2", "nope", "k1"]), 3);
    assert_eq!(q::<i64>(&mut con, &["DEL", "k1", "k2", "nope"]), 2);
    assert_eq!(q::<i64>(&mut con, &["DEL", "k1"]), 0);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k1", "k2", "k3"]), 1);
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "k1"]), None);
    drop(con);
    server.shutdown().unwrap();
}

#[test]
fn basic_commands_reactor() {
    basic_commands(Engine::Reactor);
}

#[test]
fn basic_commands_std() {
    basic_commands(Engine::Std);
}

// 2. Expiry with real, short times.

/// Whole milliseconds since `t`, rounded up.
fn ms_since(t: Instant) -> i64 {
    t.elapsed().as_micros().div_ceil(1000) as i64
}

fn expiry(engine: Engine) {
    let server = serve(engine, 1, RespConfig::default());
    let mut con = client(server.local_addrs()[0]);

    // Bounds from the time that really passed, so a stalled scheduler cannot fail them:
    // the key may already be gone (-2) only if 100 ms did pass.
    let set_at = Instant::now();
    assert_eq!(q::<String>(&mut con, &["SET", "short", "v", "PX", "100"]), "OK");
    let pttl = q::<i64>(&mut con, &["PTTL", "short"]);
    let passed = ms_since(set_at);
    if passed < 100 {
        assert!((100 - passed - 1..=100).contains(&pttl), "PTTL {passed} ms after PX 100: {pttl}");
    } else {
        assert!(pttl == -2 || (1..=100).contains(&pttl), "PTTL {passed} ms after PX 100: {pttl}");
    }
    assert_eq!(q::<String>(&mut con, &["SET", "plain", "v"]), "OK");
    assert_eq!(q::<String>(&mut con, &["SET", "pexp", "v"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "pexp", "150"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "plain"]), -1);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "plain"]), -1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "missing"]), -2);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "missing"]), -2);

    thread::sleep(Duration::from_millis(300));
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "short"]), None);
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "pexp"]), None);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "short", "pexp", "plain"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "short"]), -2);

    let set_at = Instant::now();
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "plain", "100"]), 1);
    let ttl = q::<i64>(&mut con, &["TTL", "plain"]);
    let pttl = q::<i64>(&mut con, &["PTTL", "plain"]);
    let passed = ms_since(set_at);
    assert!(
        ttl <= 100 && ttl >= (100_000 - passed) / 1000 - 1,
        "TTL {passed} ms after EXPIRE 100: {ttl}"
    );
    assert!(
        (100_000 - passed - 1..=100_000).contains(&pttl),
        "PTTL {passed} ms after EXPIRE 100: {pttl}"
    );
    let set_at = Instant::now();
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "plain", "5000"]), 1);
    let pttl = q::<i64>(&mut con, &["PTTL", "plain"]);
    let ttl = q::<i64>(&mut con, &["TTL", "plain"]);
    let passed = ms_since(set_at);
    assert!(
        (5_000 - passed - 1..=5_000).contains(&pttl),
        "PTTL {passed} ms after PEXPIRE 5000: {pttl}"
    );
    assert!(
        ttl <= 5 && ttl >= (5_000 - passed) / 1000 - 1,
        "TTL {passed} ms after PEXPIRE 5000: {ttl}"
    );
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "plain"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "plain"]), -1);
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "plain"]), 0, "no TTL left");
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "missing"]), 0);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "missing", "10"]), 0);
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "missing", "10"]), 0);

    // A plain SET clears a TTL; a short PEXPIRE really expires.
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "plain", "100"]), 1);
    assert_eq!(q::<String>(&mut con, &["SET", "plain", "w"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["TTL", "plain"]), -1);
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "plain", "100"]), 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "plain"]), 0);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "plain"]), -2);
    drop(con);
    server.shutdown().unwrap();
}

#[test]
fn expiry_reactor() {
    expiry(Engine::Reactor);
}

#[test]
fn expiry_std() {
    expiry(Engine::Std);
}

// 3. Pipelines through the redis crate.

fn pipelines(engine: Engine) {
    let server = serve(engine, 2, RespConfig::default());
    let mut con = client(server.local_addrs()[0]);

    let mut p = redis::pipe();
    for i in 0..40 {
        p.cmd("SET").arg(format!("key:{i}")).arg(format!("value-{i}"));
    }
    for i in 0..40 {
        p.cmd("GET").arg(format!("key:{i}"));
    }
    for _ in 0..20 {
        p.cmd("INCR").arg("pipe-counter");
    }
    let replies: Vec<Value> = p.query(&mut con).expect("pipeline of 100");
    assert_eq!(replies.len(), 100);
    for (i, r) in replies[..40].iter().enumerate() {
        assert_eq!(r, &Value::Okay, "reply {i}");
    }
    for (i, r) in replies[40..80].iter().enumerate() {
        assert_eq!(r, &Value::BulkString(format!("value-{i}").into_bytes()), "GET reply {i}");
    }
    for (i, r) in replies[80..].iter().enumerate() {
        assert_eq!(r, &Value::Int(i as i64 + 1), "INCR reply {i}");
    }

    let mut p = redis::pipe();
    for _ in 0..1000 {
        p.cmd("INCR").arg("thousand");
    }
    let counts: Vec<i64> = p.query(&mut con).expect("pipeline of 1000 INCRs");
    assert_eq!(counts, (1..=1000).collect::<Vec<i64>>());
    assert_eq!(q::<String>(&mut con, &["GET", "thousand"]), "1000");
    drop(con);
    server.shutdown().unwrap();
}

#[test]
fn pipelines_reactor() {
    pipelines(Engine::Reactor);
}

#[test]
fn pipelines_std() {
    pipelines(Engine::Std);
}

// 4. One keyspace shared by every loop.

fn shared_keyspace(engine: Engine) {
    const CONNS: usize = 8;
    const INCRS: i64 = 500;
    let server = serve(engine, 4, RespConfig::default());
    let addr = server.local_addrs()[0];
    let cons: Vec<Connection> = (0..CONNS).map(|_| client(addr)).collect();
    if let Some(h) = server.reactor() {
        let busy = h.stats().loops.iter().filter(|l| l.open > 0).count();
        assert!(busy >= 2, "8 connections all on one loop: the test shows nothing");
    }
    let workers: Vec<_> = cons
        .into_iter()
        .map(|mut con| {
            thread::spawn(move || {
                let mut last = 0;
                for _ in 0..INCRS {
                    let v = q::<i64>(&mut con, &["INCR", "shared"]);
                    assert!(v > last, "INCR went from {last} to {v}");
                    last = v;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut con = client(addr);
    assert_eq!(q::<i64>(&mut con, &["GET", "shared"]), CONNS as i64 * INCRS);
    drop(con);
    server.shutdown().unwrap();
}

#[test]
fn shared_keyspace_across_loops_reactor() {
    shared_keyspace(Engine::Reactor);
}

#[test]
fn shared_keyspace_across_loops_std() {
    shared_keyspace(Engine::Std);
}

// 5. Raw sockets: pipelining, inline commands, QUIT.

fn raw_socket(engine: Engine) {
    let server = serve(engine, 2, RespConfig::default());
    let addr = server.local_addrs()[0];
    let mut s = connect(addr);

    send(&mut s, &b"*1\r\n$4\r\nPING\r\n".repeat(16));
    assert_eq!(read_n(&mut s, 16 * 7), b"+PONG\r\n".repeat(16));
    // Nothing more than 16 replies: the next bytes answer the next command.
    send(&mut s, b"ECHO x\r\n");
    assert_eq!(read_n(&mut s, 7), b"$1\r\nx\r\n");

    send(&mut s, b"PING\r\n");
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
    let expect = b"+OK\r\n$11\r\nhello world\r\n";
    send(&mut s, b"SET a \"hello world\"\r\nGET a\r\n");
    assert_eq!(read_n(&mut s, expect.len()), expect);
    // Inline and multibulk mixed in one write, bare LF allowed inline.
    let expect = b"+PONG\r\n:1\r\n$5\r\nhello\r\n";
    send(&mut s, b"ping\n*2\r\n$6\r\nEXISTS\r\n$1\r\na\r\nECHO hello\r\n");
    assert_eq!(read_n(&mut s, expect.len()), expect);

    send(&mut s, b"QUIT\r\n");
    assert_eq!(read_until_closed(&mut s), b"+OK\r\n", "QUIT: +OK then EOF");

    // Commands after QUIT in the same write are not executed.
    let got =
        request_then_close(addr, b"*1\r\n$4\r\nQUIT\r\n*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$1\r\n1\r\n");
    assert_eq!(got, b"+OK\r\n");
    let mut s = connect(addr);
    send(&mut s, b"EXISTS q\r\n");
    assert_eq!(read_n(&mut s, 4), b":0\r\n");
    server.shutdown().unwrap();
}

#[test]
fn raw_socket_reactor() {
    raw_socket(Engine::Reactor);
}

#[test]
fn raw_socket_std() {
    raw_socket(Engine::Std);
}

// 6. Protocol errors close; command errors do not.

const INVALID_MULTIBULK: &[u8] = b"-ERR Protocol error: invalid multibulk length\r\n";
const INVALID_BULK: &[u8] = b"-ERR Protocol error: invalid bulk length\r\n";

fn protocol_errors(engine: Engine) {
    let server = serve(engine, 2, RespConfig { max_bulk: 1024, ..Default::default() });
    let addr = server.local_addrs()[0];
    let cases: &[(&[u8], &[u8])] = &[
        (b"*abc\r\n", INVALID_MULTIBULK),
        (b"*1\r\n$-5\r\n", INVALID_BULK),
        (b"*1\r\n$abc\r\n", INVALID_BULK),
        (b"*2\r\n$3\r\nGET\r\n$12x\r\n", INVALID_BULK),
        (b"*1\r\n$2048\r\n", INVALID_BULK),
        (b"*1\r\nX\r\n", b"-ERR Protocol error: expected '$', got 'X'\r\n"),
        (b"*1\r\n$4\r\nPINGxx\r\n", b"-ERR Protocol error: bulk data not followed by CRLF\r\n"),
        (b"SET k \"unbalanced\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        // Replies to earlier pipelined commands come first.
        (
            b"PING\r\n*1\r\n$4\r\nPING\r\n*abc\r\nPING\r\n",
            b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    for (request, reply) in cases {
        let got = request_then_close(addr, request);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // At exactly max_bulk the request is fine.
    let mut s = connect(addr);
    let mut req = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1024\r\n".to_vec();
    req.extend_from_slice(&[b'v'; 1024]);
    req.extend_from_slice(b"\r\n*2\r\n$6\r\nSTRLEN\r\n$3\r\nbig\r\n");
    send(&mut s, &req);
    assert_eq!(read_n(&mut s, 12), b"+OK\r\n:1024\r\n");

    // An inline line of 70 KiB with no newline.
    let got = request_then_close(addr, &vec![b'a'; 70 * 1024]);
    assert_eq!(String::from_utf8_lossy(&got), "-ERR Protocol error: too big inline request\r\n");
    // The limit is max_inline (64 KiB) plus a line ending: one byte more fails too.
    let got = request_then_close(addr, &vec![b'a'; (64 << 10) + 2]);
    assert_eq!(got, b"-ERR Protocol error: too big inline request\r\n");

    // Command errors are ordinary replies; the connection stays open.
    let mut s = connect(addr);
    let expect = b"-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n";
    send(&mut s, b"FOO bar baz\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut s, expect.len())),
        String::from_utf8_lossy(expect)
    );
    ping_still_answers(&mut s);
    let expect = b"-ERR unknown command 'nosuch', with args beginning with: \r\n";
    send(&mut s, b"*1\r\n$6\r\nnosuch\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut s, expect.len())),
        String::from_utf8_lossy(expect)
    );
    ping_still_answers(&mut s);
    let expect = b"-ERR wrong number of arguments for 'get' command\r\n";
    send(&mut s, b"*1\r\n$3\r\nGET\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut s, expect.len())),
        String::from_utf8_lossy(expect)
    );
    ping_still_answers(&mut s);
    send(&mut s, b"GET a b\r\n");
    assert_eq!(read_n(&mut s, expect.len()), expect);
    ping_still_answers(&mut s);
    let expect = b"-ERR value is not an integer or out of range\r\n";
    send(&mut s, b"SET s abc\r\nINCR s\r\n");
    assert_eq!(read_n(&mut s, 5), b"+OK\r\n");
    assert_eq!(read_n(&mut s, expect.len()), expect);
    ping_still_answers(&mut s);
    // Exactly one reply per command: nothing else is queued before EOF.
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    server.shutdown().unwrap();
}

#[test]
fn protocol_errors_reactor() {
    protocol_errors(Engine::Reactor);
}

#[test]
fn protocol_errors_std() {
    protocol_errors(Engine::Std);
}

// 7. Garbage in.

/// What a fresh session answers to `input` followed by EOF: its replies, plus the error
/// reply if the input holds a protocol error (`true`: the server closes by itself). The
/// server must send exactly this however the bytes were cut into reads.
fn expected_replies(input: &[u8]) -> (Vec<u8>, bool) {
    let mut session = Redis::default().open();
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match session.on_input(&input[at..], &mut out) {
            Ok(p) if p.close => return (out, true),
            Ok(p) if p.consumed == 0 => return (out, false),
            Ok(p) => at += p.consumed,
            Err(e) => {
                out.extend_from_slice(&e.reply);
                return (out, true);
            }
        }
    }
}

/// Truncated commands: a client that half-closes after one gets no reply, just EOF.
const TAILS: [&[u8]; 5] = [
    b"*3\r\n$3\r\nSET\r\n$1\r\nk",
    b"SET k v",
    b"*2\r\n$3\r\nGET\r\n$100\r\nabc",
    b"*",
    b"*2\r\n$4\r\nECHO\r\n$5\r\nhel",
];

/// Garbage of four kinds, then a truncated command.
fn garbage_input(i: u64) -> Vec<u8> {
    const GARBAGE: usize = 64 << 10;
    let noise = pattern(GARBAGE, 1000 + i);
    let mut input = Vec::new();
    match i % 4 {
        // Raw random bytes: inline lines that soon hold an unbalanced quote.
        0 => input.extend_from_slice(&noise),
        // Random lines without quotes or '*': some 250 unknown commands, all answered.
        1 => input.extend(noise.iter().map(|&b| match b {
            b'"' | b'\'' | b'*' => b'x',
            b => b,
        })),
        // A multibulk header, then random bytes where a bulk's CRLF should be.
        2 => {
            input.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$4\r\n");
            input.extend_from_slice(&noise);
        }
        // Random bytes as a well-formed binary value, echoed back byte for byte.
        _ => {
            input.extend_from_slice(format!("*2\r\n$4\r\nECHO\r\n${GARBAGE}\r\n").as_bytes());
            input.extend_from_slice(&noise);
            input.extend_from_slice(b"\r\n");
        }
    }
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(TAILS[(i / 4) as usize % TAILS.len()]);
    input
}

fn garbage(engine: Engine) {
    const CONNS: u64 = 20;
    let server = serve(engine, 4, RespConfig::default());
    let addr = server.local_addrs()[0];
    let start = Instant::now();
    let conns: Vec<_> = (0..CONNS)
        .map(|i| {
            let input = garbage_input(i);
            let (expect, server_closes) = expected_replies(&input);
            thread::spawn(move || {
                let mut s = connect(addr);
                let mut writer = s.try_clone().unwrap();
                let w = thread::spawn(move || {
                    // The server may close first; a failed write is not an error.
                    for piece in input.chunks(4096) {
                        if writer.write_all(piece).is_err() {
                            return;
                        }
                    }
                    let _ = writer.shutdown(Shutdown::Write);
                });
                let got = read_until_closed(&mut s);
                w.join().unwrap();
                (i, got, expect, server_closes)
            })
        })
        .collect();
    let mut kinds = [0; 2];
    for c in conns {
        let (i, got, expect, server_closes) = c.join().expect("garbage connection");
        kinds[usize::from(server_closes)] += 1;
        assert!(
            got == expect,
            "connection {i}: {} bytes back, expected {}; got ends {:?}, expected ends {:?}",
            got.len(),
            expect.len(),
            String::from_utf8_lossy(&got[got.len().saturating_sub(120)..]),
            String::from_utf8_lossy(&expect[expect.len().saturating_sub(120)..]),
        );
    }
    assert!(
        kinds[0] >= 5 && kinds[1] >= 5,
        "both endings exercised (EOF after a truncated command, protocol error): {kinds:?}"
    );
    assert!(start.elapsed() < LIMIT, "garbage connections took too long");

    let mut con = client(addr);
    assert_eq!(q::<String>(&mut con, &["SET", "after", "garbage"]), "OK");
    assert_eq!(q::<String>(&mut con, &["GET", "after"]), "garbage");
    drop(con);
    server.shutdown().unwrap();
}

#[test]
fn garbage_in_reactor() {
    garbage(Engine::Reactor);
}

#[test]
fn garbage_in_std() {
    garbage(Engine::Std);
}

/// A complete command or a truncated one, then at once a half-close (the FIN often
/// arrives together with the data): the server answers what is complete, then closes.
fn truncated_command_then_half_close(engine: Engine) {
    let server = serve(engine, 1, RespConfig::default());
    let addr = server.local_addrs()[0];
    for round in 0..5 {
        for (request, reply) in
            TAILS.iter().map(|t| (*t, &b""[..])).chain([(&b"PING\r\n"[..], &b"+PONG\r\n"[..])])
        {
            let mut s = connect(addr);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            send(&mut s, request);
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(
                read_until_closed(&mut s),
                reply,
                "round {round}, request {:?}",
                String::from_utf8_lossy(request)
            );
        }
    }
    server.shutdown().unwrap();
}

/// Regression: data and FIN read in one edge-triggered wakeup used to leave the
/// connection open forever (the short read ended the read loop before EOF was seen).
#[test]
fn truncated_command_then_half_close_reactor() {
    truncated_command_then_half_close(Engine::Reactor);
}

#[test]
fn truncated_command_then_half_close_std() {
    truncated_command_then_half_close(Engine::Std);
}

/// Issue 10 item 11: three PINGs and a bad bulk length in one write get four replies,
/// and the three answered requests are counted, on every engine.
fn requests_before_a_protocol_error_are_counted(engine: Engine) {
    let served = serve(engine, 1, RespConfig::default());
    let mut c = connect(served.local_addrs()[0]);
    send(&mut c, b"PING\r\nPING\r\nPING\r\n*1\r\n$-5\r\n");
    let got = read_to_end(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n+PONG\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    wait_until("requests counted", || served.proto_metrics().requests() >= 3);
    assert_eq!(served.proto_metrics().requests(), 3);
    served.shutdown().unwrap();
}

#[test]
fn requests_before_a_protocol_error_are_counted_reactor() {
    requests_before_a_protocol_error_are_counted(Engine::Reactor);
}

#[test]
fn requests_before_a_protocol_error_are_counted_std() {
    requests_before_a_protocol_error_are_counted(Engine::Std);
}
