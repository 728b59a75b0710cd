//! `evloop proxy` end to end over loopback: real clients (the `redis` crate, `ureq`,
//! raw sockets) through the proxy to evloop backends; distribution per policy, bulk
//! byte-exactness (copy and splice), bounded memory with a client that never reads,
//! half-close, a backend killed or stalled, reload on SIGHUP, the metrics endpoint,
//! and the documented errors for bad flags and files.
//!
//! Backends run embedded (`evloop::serve::start`) or as `evloop serve` children; the
//! proxy runs embedded (`evloop::proxy::run::start`) or as an `evloop proxy` child where
//! a process is needed (signals, RSS, exit codes). Children are killed by PID on drop.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::child::BIN;
use common::*;
use evloop::proto::echo::Echo;
use evloop::proto::http::{Http, HttpConfig};
use evloop::proto::resp::{Redis, RespConfig};
use evloop::proxy::balance::Policy;
use evloop::proxy::health::HealthCheck;
use evloop::proxy::run::{Proxy, ProxyConfig, start};
use evloop::serve::{self, Engine, Served};

// ---- helpers ----

fn redis_backend() -> Served {
    serve::start(Engine::Reactor, Redis::new(RespConfig::default()), local_config(1))
        .expect("redis backend")
}

fn echo_backend() -> Served {
    serve::start(Engine::Reactor, Echo, local_config(1)).expect("echo backend")
}

/// Connections a backend has accepted so far.
fn accepted(b: &Served) -> u64 {
    b.reactor().expect("reactor").stats().total().accepted
}

/// A proxy over `backends` with `cfg` (its backends replaced), health checks off unless
/// `cfg` asks, on `loops` loops.
fn proxy(backends: &[SocketAddr], loops: usize, cfg: ProxyConfig) -> Proxy {
    let cfg = ProxyConfig {
        backends: backends.iter().map(|a| a.to_string().parse().expect("spec")).collect(),
        ..cfg
    };
    start(local_config(loops).into(), cfg).expect("start proxy")
}

fn no_checks() -> ProxyConfig {
    ProxyConfig { check: HealthCheck::Off, ..ProxyConfig::default() }
}

fn redis_client(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/").as_str()).expect("client");
    let con = client.get_connection().expect("redis connection");
    con.set_read_timeout(Some(LIMIT)).expect("timeout");
    con.set_write_timeout(Some(LIMIT)).expect("timeout");
    con
}

/// One SET and GET on a new connection through `addr`.
fn redis_round_trip(addr: SocketAddr, i: usize) {
    let mut con = redis_client(addr);
    let key = format!("k{i}");
    let () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).expect("SET");
    let v: usize = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
    assert_eq!(v, i);
}

/// Sends `msg` and expects it echoed.
fn echo_ok(s: &mut TcpStream, msg: &[u8]) -> bool {
    s.write_all(msg).is_ok() && {
        let mut buf = vec![0; msg.len()];
        s.read_exact(&mut buf).is_ok() && buf == msg
    }
}

/// A child process (`evloop ...`) killed by its PID when dropped; its stderr is
/// collected line by line.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null());
        let (child, lines) = child::spawn_piped(cmd);
        Proc { child, lines, log: Vec::new() }
    }

    /// Waits for a stderr line containing `what` and returns it.
    fn wait_line(&mut self, what: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {what:?}; stderr so far: {:#?}", self.log),
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill");
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `HOST:PORT` after `marker` in `line`.
fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// An `evloop proxy` child on an ephemeral port with `args`; returns it, its address,
/// and its metrics address when `--metrics` was given.
fn proxy_child(args: &[&str]) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let mut all = vec!["proxy", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut p = Proc::spawn(&all);
    let ready = p.wait_line("evloop: proxying on ");
    let addr = addr_after(&ready, "proxying on ");
    let metrics = args
        .contains(&"--metrics")
        .then(|| addr_after(&p.wait_line("metrics at http://"), "metrics at http://"));
    (p, addr, metrics)
}

/// A two-loop `evloop proxy` child without active checks, with a metrics endpoint.
fn proxy_child_with_metrics(args: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let mut all = args.to_vec();
    all.extend(["--loops", "2", "--metrics", "127.0.0.1:0", "--health-check", "off"]);
    let (p, addr, metrics) = proxy_child(&all);
    (p, addr, metrics.expect("metrics addr"))
}

/// An `evloop serve` child (echo, one loop) on an ephemeral port.
fn echo_child() -> (Proc, SocketAddr) {
    let mut p = Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--loops", "1"]);
    let addr = addr_after(&p.wait_line("evloop: serving echo on "), "serving echo on ");
    (p, addr)
}

/// `GET /metrics` from `addr`, as text.
fn scrape(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    send(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8(read_to_end(&mut s)).expect("utf-8");
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// The value of the series `name{backend="b"}` in `text`.
fn series(text: &str, name: &str, backend: &str) -> Option<u64> {
    let key = format!("{name}{{backend=\"{backend}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

// ---- distribution per policy (redis crate, two evloop Redis backends) ----

#[test]
fn round_robin_splits_100_redis_connections_50_50() {
    let (a, b) = (redis_backend(), redis_backend());
    let p = proxy(&[a.local_addrs()[0], b.local_addrs()[0]], 2, no_checks());
    for i in 0..100 {
        redis_round_trip(p.local_addrs()[0], i);
    }
    wait_until("100 accepted", || accepted(&a) + accepted(&b) == 100);
    assert_eq!((accepted(&a), accepted(&b)), (50, 50));
    p.shutdown().expect("shutdown");
}

#[test]
fn weighted_3_to_1_and_source_hash_sticky() {
    let (a, b) = (redis_backend(), redis_backend());
    let specs: Vec<_> =
        [format!("{},weight=3", a.local_addrs()[0]), b.local_addrs()[0].to_string()]
            .iter()
            .map(|s| s.parse().expect("spec"))
            .collect();
    let cfg = ProxyConfig { backends: specs, policy: Policy::Weighted, ..no_checks() };
    let p = start(local_config(1).into(), cfg).expect("proxy");
    for i in 0..100 {
        redis_round_trip(p.local_addrs()[0], i);
    }
    wait_until("100 accepted", || accepted(&a) + accepted(&b) == 100);
    assert_eq!((accepted(&a), accepted(&b)), (75, 25));
    p.shutdown().expect("shutdown");

    // source-hash: every connection from 127.0.0.1 lands on the same backend.
    let (c, d) = (redis_backend(), redis_backend());
    let cfg = ProxyConfig { policy: Policy::SourceHash, ..no_checks() };
    let p = proxy(&[c.local_addrs()[0], d.local_addrs()[0]], 2, cfg);
    for i in 0..20 {
        redis_round_trip(p.local_addrs()[0], i);
    }
    wait_until("20 accepted", || accepted(&c) + accepted(&d) == 20);
    let mut split = [accepted(&c), accepted(&d)];
    split.sort();
    assert_eq!(split, [0, 20]);
    p.shutdown().expect("shutdown");
}

#[test]
fn least_conn_balances_open_connections_and_random_uses_both() {
    let (a, b) = (echo_backend(), echo_backend());
    let cfg = ProxyConfig { policy: Policy::LeastConn, ..no_checks() };
    let p = proxy(&[a.local_addrs()[0], b.local_addrs()[0]], 1, cfg);
    let mut held = Vec::new();
    for i in 0..10u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 16]));
        held.push(s);
    }
    wait_until("10 accepted", || accepted(&a) + accepted(&b) == 10);
    assert_eq!((accepted(&a), accepted(&b)), (5, 5));
    drop(held);
    p.shutdown().expect("shutdown");

    let (c, d) = (echo_backend(), echo_backend());
    let cfg = ProxyConfig { policy: Policy::Random, ..no_checks() };
    let p = proxy(&[c.local_addrs()[0], d.local_addrs()[0]], 1, cfg);
    for _ in 0..40 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, b"x"));
    }
    wait_until("40 accepted", || accepted(&c) + accepted(&d) == 40);
    assert!(accepted(&c) >= 5 && accepted(&d) >= 5, "{} / {}", accepted(&c), accepted(&d));
    p.shutdown().expect("shutdown");
}

#[test]
fn consistent_hash_keeps_a_client_on_its_backend_and_moves_few_on_add() {
    // End to end: clients from 127.0.0.x (Linux routes all of 127/8 to loopback).
    let backends: Vec<Served> = (0..3).map(|_| echo_backend()).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.local_addrs()[0]).collect();
    let cfg = ProxyConfig { policy: Policy::ConsistentHash, ..no_checks() };
    let p = proxy(&addrs[..2], 1, cfg);
    let which = |ip: u8| -> usize {
        let before: Vec<u64> = backends.iter().map(accepted).collect();
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(&SocketAddr::from(([127, 0, 0, ip], 0)).into()).expect("bind");
        sock.connect(&p.local_addrs()[0].into()).expect("connect");
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        assert!(echo_ok(&mut s, b"ping"));
        let mut found = None;
        wait_until("the connection reaches a backend", || {
            found = backends.iter().map(accepted).zip(&before).position(|(n, b)| n > *b);
            found.is_some()
        });
        found.expect("a backend")
    };
    let ips: Vec<u8> = (1..=40).collect();
    let first: Vec<usize> = ips.iter().map(|&ip| which(ip)).collect();
    assert!(first.iter().all(|&b| b < 2));
    assert_eq!(ips.iter().map(|&ip| which(ip)).collect::<Vec<_>>(), first, "sticky per client IP");
    // Add a third backend: only clients moving to it change backend.
    let specs = addrs.iter().map(|a| a.to_string().parse().expect("spec")).collect();
    p.pool().reload(specs);
    let after: Vec<usize> = ips.iter().map(|&ip| which(ip)).collect();
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(first.iter().zip(&after).all(|(a, b)| a == b || *b == 2), "moves only to the new one");
    assert!(moved <= 40 / 3 + 8, "{moved} of 40 moved");
    p.shutdown().expect("shutdown");
}

// ---- protocols and bytes ----

#[test]
fn ureq_through_the_proxy_to_http() {
    let http = serve::start(Engine::Reactor, Http::new(HttpConfig::default()), local_config(1))
        .expect("http backend");
    let p = proxy(&[http.local_addrs()[0]], 1, ProxyConfig::default());
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(LIMIT)).build().into();
    for _ in 0..5 {
        let url = format!("http://{}/", p.local_addrs()[0]);
        let mut resp = agent.get(&url).call().expect("GET through the proxy");
        assert_eq!(resp.status(), 200);
        let body = resp.body_mut().read_to_string().expect("body");
        assert!(!body.is_empty());
    }
    p.shutdown().expect("shutdown");
}

/// Sends `total` bytes through `addr` to an echo backend while reading the echo;
/// returns the digests of what was sent and what came back.
fn bulk_echo(addr: SocketAddr, total: usize) -> (u64, u64, usize) {
    let mut s = connect(addr);
    let mut w = s.try_clone().expect("clone");
    let writer = thread::spawn(move || {
        let chunk = pattern(1 << 20, 7);
        let mut h = 0xcbf29ce484222325u64;
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            w.write_all(&chunk[..n]).expect("write");
            h = chunk[..n].iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
            sent += n;
        }
        w.shutdown(Shutdown::Write).expect("shutdown");
        h
    });
    let mut h = 0xcbf29ce484222325u64;
    let mut got = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h = buf[..n].iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        got += n;
    }
    (writer.join().expect("writer"), h, got)
}

fn hundred_mb_each_way(splice: bool) {
    let echo = echo_backend();
    let cfg = ProxyConfig { splice, ..ProxyConfig::default() };
    let p = proxy(&[echo.local_addrs()[0]], 1, cfg);
    let total = 100 << 20;
    let (sent, back, got) = bulk_echo(p.local_addrs()[0], total);
    assert_eq!(got, total);
    assert_eq!(sent, back, "digest of the echo differs");
    let name = echo.local_addrs()[0].to_string();
    wait_until("counters", || {
        let t = p.pool().current().backends[0].totals();
        t.bytes_sent == total as u64 && t.bytes_received == total as u64
    });
    let text = p.render_metrics();
    assert_eq!(series(&text, "evloop_backend_bytes_sent_total", &name), Some(total as u64));
    p.shutdown().expect("shutdown");
}

#[test]
fn hundred_mb_each_way_byte_exact_copy() {
    hundred_mb_each_way(false);
}

#[test]
fn hundred_mb_each_way_byte_exact_splice() {
    hundred_mb_each_way(true);
}

#[test]
fn half_close_is_forwarded_and_the_answer_still_arrives() {
    // A backend that answers only after the client's end of input: the byte count and
    // then 1 MiB.
    let backend = answer_after_eof_backend();
    let p = proxy(&[backend], 1, no_checks());
    let mut s = connect(p.local_addrs()[0]);
    send(&mut s, &pattern(300_000, 1));
    s.shutdown(Shutdown::Write).expect("shutdown write");
    let answer = read_to_end(&mut s);
    let (head, body) = answer.split_at(answer.iter().position(|&b| b == b'\n').expect("line") + 1);
    assert_eq!(head, b"300000\n");
    assert_eq!(checksum(body), checksum(&pattern(1 << 20, 3)));
    p.shutdown().expect("shutdown");
}

#[test]
fn a_unix_socket_backend_and_the_idle_timeout() {
    let path = std::env::temp_dir().join(format!("evloop-proxy-{}-echo.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listen = format!("unix:{}", path.display());
    let echo = serve::start(
        Engine::Reactor,
        Echo,
        evloop::reactor::Config::new()
            .listen_on(evloop::net::ListenAddr::Unix(path.clone()))
            .loops(1),
    )
    .expect("unix echo backend");
    let mut settings: evloop::serve::Settings = local_config(1).into();
    settings.idle_timeout = Some(Duration::from_millis(300));
    let cfg = ProxyConfig { backends: vec![listen.parse().expect("spec")], ..no_checks() };
    let p = start(settings, cfg).expect("proxy");
    let mut s = connect(p.local_addrs()[0]);
    assert!(echo_ok(&mut s, b"over a unix socket"));
    // Idle past --idle-timeout: the pair is closed.
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(t.elapsed() >= Duration::from_millis(200), "closed after {:?}", t.elapsed());
    wait_until("closed upstream", || p.pool().current().backends[0].totals().active == 0);
    p.shutdown().expect("shutdown");
    drop(echo);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn small_writes_reach_the_backend_without_nagle_delay() {
    // A backend that answers only once it has both halves of a request: with Nagle on
    // the proxy's backend socket, the second half would wait for the ACK of the first,
    // which the backend delays (about 40 ms on Linux) as it has nothing to send yet.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = l.local_addr().expect("addr");
    thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut got = 0;
                while let Ok(n) = s.read(&mut buf[got..]) {
                    if n == 0 {
                        return;
                    }
                    got += n;
                    if got >= 20 {
                        let _ = s.write_all(b"ok");
                        got = 0;
                    }
                }
            });
        }
    });
    let p = proxy(&[backend], 1, no_checks());
    let mut s = connect(p.local_addrs()[0]);
    let mut slow = 0;
    for _ in 0..20 {
        let t = Instant::now();
        send(&mut s, b"0123456789");
        thread::sleep(Duration::from_millis(2));
        send(&mut s, b"abcdefghij");
        assert_eq!(read_n(&mut s, 2), b"ok");
        if t.elapsed() > Duration::from_millis(30) {
            slow += 1;
        }
    }
    assert!(slow <= 2, "{slow} of 20 requests took over 30 ms");
    p.shutdown().expect("shutdown");
}

#[test]
fn a_client_that_never_reads_keeps_the_proxy_rss_bounded() {
    let echo = echo_backend();
    let be = echo.local_addrs()[0].to_string();
    let (proc_, addr, _) =
        proxy_child(&["--backend", &be, "--loops", "1", "--health-check", "off"]);
    let before = proc_.rss_kib();
    let mut s = connect_small_rcvbuf(addr);
    s.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let chunk = pattern(1 << 20, 9);
    let mut sent = 0usize;
    while sent < 50 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // blocked: backpressure reached the client
        }
    }
    thread::sleep(Duration::from_millis(300));
    let after = proc_.rss_kib();
    eprintln!("proxy RSS {before} KiB -> {after} KiB; the client got {sent} bytes in");
    assert!(sent < 50 << 20, "all 50 MB went in although nothing was read");
    assert!(
        after < before + 16 * 1024,
        "proxy RSS grew from {before} KiB to {after} KiB ({sent} bytes sent)"
    );
}

// ---- failures ----

#[test]
fn a_killed_backend_closes_its_clients_and_new_ones_go_to_the_survivor() {
    let (mut a, a_addr) = echo_child();
    let (_b, b_addr) = echo_child();
    let cfg = ProxyConfig { fall: 2, ..no_checks() };
    let p = proxy(&[a_addr, b_addr], 1, cfg);
    let mut clients: Vec<TcpStream> = (0..10u8)
        .map(|i| {
            let mut s = connect(p.local_addrs()[0]);
            assert!(echo_ok(&mut s, &[i; 100]));
            s
        })
        .collect();
    a.child.kill().expect("kill backend a");
    a.child.wait().expect("reap");
    // Poll every client without blocking until the killed backend's are closed.
    let mut closed = vec![false; clients.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.iter().filter(|c| **c).count() < 5 && Instant::now() < deadline {
        for (s, c) in clients.iter_mut().zip(closed.iter_mut()) {
            s.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => *c = true,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => *c = true,
                _ => {}
            }
            s.set_nonblocking(false).expect("blocking");
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(closed.iter().filter(|c| **c).count(), 5, "the killed backend's clients are closed");
    let alive = clients
        .iter_mut()
        .zip(&closed)
        .filter(|(_, c)| !**c)
        .map(|(s, _)| echo_ok(s, b"still"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(alive, 5, "the survivor's clients go on");
    for i in 0..20u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 10]), "new client {i} is served by the survivor");
    }
    let set = p.pool().current();
    assert!(!set.backends[0].is_up(), "the killed backend is down after --fall failures");
    assert!(set.backends[0].totals().connect_errors >= 2);
    p.shutdown().expect("shutdown");
}

#[test]
fn a_backend_that_never_accepts_times_out_and_the_next_one_serves() {
    // A listener with a backlog of 1 that never accepts: once its queue is full, SYNs
    // are dropped and connects time out.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    sock.listen(1).expect("listen");
    let stalled = sock.local_addr().expect("addr").as_socket().expect("inet");
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&stalled, Duration::from_millis(200)).ok())
        .collect();
    let good = echo_backend();
    let cfg = ProxyConfig { connect_timeout: Duration::from_millis(300), fall: 2, ..no_checks() };
    let p = proxy(&[stalled, good.local_addrs()[0]], 1, cfg);
    let t = Instant::now();
    for i in 0..6u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 8]), "client {i} is served after a retry");
    }
    let b = p.pool().current().backends[0].clone();
    eprintln!("stalled backend: {:?} after {:?}", b.totals(), t.elapsed());
    assert!(b.totals().connect_errors >= 2, "{:?}", b.totals());
    assert!(!b.is_up(), "down after --fall timed-out connects");
    assert!(t.elapsed() < Duration::from_secs(10));
    drop(fillers);
    p.shutdown().expect("shutdown");
}

#[test]
fn a_backend_that_accepts_and_never_answers_is_marked_down_by_the_redis_check() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stalled = l.local_addr().expect("addr");
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().map_while(Result::ok) {
            held.push(s); // accept, never answer
        }
    });
    let good = redis_backend();
    let cfg = ProxyConfig {
        check: HealthCheck::Redis,
        health_interval: Duration::from_millis(200),
        fall: 2,
        rise: 1,
        ..ProxyConfig::default()
    };
    let p = proxy(&[stalled, good.local_addrs()[0]], 1, cfg);
    let set = p.pool().current();
    wait_until("the stalled backend is down", || !set.backends[0].is_up());
    assert!(set.backends[1].is_up());
    for i in 0..10 {
        redis_round_trip(p.local_addrs()[0], i);
    }
    p.shutdown().expect("shutdown");
}

#[test]
fn a_backup_backend_takes_clients_only_when_the_others_are_gone() {
    let (a, b) = (echo_backend(), echo_backend());
    let a_addr = a.local_addrs()[0];
    let specs = vec![
        a_addr.to_string().parse().expect("spec"),
        format!("{},backup", b.local_addrs()[0]).parse().expect("spec"),
    ];
    let cfg = ProxyConfig { backends: specs, fall: 1, ..no_checks() };
    let p = start(local_config(1).into(), cfg).expect("proxy");
    for i in 0..5u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 4]));
    }
    assert_eq!((accepted(&a), accepted(&b)), (5, 0));
    a.shutdown().expect("stop a");
    for i in 0..5u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 4]), "served by the backup");
    }
    assert_eq!(accepted(&b), 5);
    assert!(!p.pool().current().backends[0].is_up());
    p.shutdown().expect("shutdown");
}

#[test]
fn with_checks_off_a_down_backend_gets_a_trial_connection_per_interval() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let x_addr = l.local_addr().expect("addr");
    drop(l); // refused until revived
    let y = echo_backend();
    let cfg = ProxyConfig {
        fall: 1,
        rise: 1,
        health_interval: Duration::from_millis(300),
        ..no_checks()
    };
    let p = proxy(&[x_addr, y.local_addrs()[0]], 1, cfg);
    let x = p.pool().current().backends[0].clone();
    for i in 0..4u8 {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, &[i; 4]));
    }
    assert!(!x.is_up(), "down after one refused connect");
    // Revive it on the same port: within an interval a trial connection brings it up.
    let revived = serve::start(
        Engine::Reactor,
        Echo,
        evloop::reactor::Config::new().listen(x_addr).expect("addr").loops(1),
    )
    .expect("revive x");
    let t = Instant::now();
    wait_until("the trial brings x up", || {
        let mut s = connect(p.local_addrs()[0]);
        assert!(echo_ok(&mut s, b"t"));
        x.is_up()
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(accepted(&revived) >= 1);
    p.shutdown().expect("shutdown");
}

#[test]
fn no_backend_reachable_closes_the_client_and_counts_it() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = l.local_addr().expect("addr");
    drop(l);
    let p = proxy(&[dead], 1, no_checks());
    let mut s = connect(p.local_addrs()[0]);
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    wait_until("counted", || p.pool().unserved_total() == 1);
    assert!(p.render_metrics().contains("evloop_proxy_clients_unserved_total 1\n"));
    p.shutdown().expect("shutdown");
}

// ---- reload, metrics, errors (the binary) ----

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("evloop-proxy-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write file");
    path
}

#[test]
fn sighup_adds_and_removes_backends_without_dropping_connections() {
    let (a, b) = (echo_backend(), echo_backend());
    let (an, bn) = (a.local_addrs()[0].to_string(), b.local_addrs()[0].to_string());
    let file = temp_file("hup", &format!("# one backend\n{an}\n"));
    let f = file.to_str().expect("path");
    let (mut p, addr, metrics) = proxy_child_with_metrics(&["--backends-file", f]);
    let mut old: Vec<TcpStream> = (0..6u8)
        .map(|i| {
            let mut s = connect(addr);
            assert!(echo_ok(&mut s, &[i; 32]));
            s
        })
        .collect();
    assert_eq!(accepted(&a), 6);
    // Replace a with b.
    std::fs::write(&file, format!("{bn}\n")).expect("rewrite");
    p.signal(libc::SIGHUP);
    p.wait_line("backends reloaded");
    let text = scrape(metrics);
    assert_eq!(series(&text, "evloop_backend_up", &bn), Some(1), "{text}");
    assert_eq!(series(&text, "evloop_backend_up", &an), None, "{text}");
    for i in 0..6u8 {
        let mut s = connect(addr);
        assert!(echo_ok(&mut s, &[i; 8]));
    }
    assert_eq!((accepted(&a), accepted(&b)), (6, 6), "new connections go to the new set");
    for s in &mut old {
        assert!(echo_ok(s, b"still there"), "a connection to a removed backend was dropped");
    }
    // A bad file on SIGHUP: logged, old set kept.
    std::fs::write(&file, "nonsense\n").expect("rewrite");
    p.signal(libc::SIGHUP);
    p.wait_line("reload failed");
    let mut s = connect(addr);
    assert!(echo_ok(&mut s, b"kept"));
    // Both again.
    std::fs::write(&file, format!("{an}\n{bn}\n")).expect("rewrite");
    p.signal(libc::SIGHUP);
    wait_until("two backends", || series(&scrape(metrics), "evloop_backend_up", &an) == Some(1));
    for s in &mut old {
        assert!(echo_ok(s, b"and still"));
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn metrics_endpoint_counts_bytes_per_backend() {
    let echo = echo_backend();
    let be = echo.local_addrs()[0].to_string();
    let (_p, addr, metrics) = proxy_child_with_metrics(&["--backend", &be]);
    let mut s = connect(addr);
    let msg = pattern(12_345, 5);
    assert!(echo_ok(&mut s, &msg));
    send(&mut s, b"abc");
    assert_eq!(read_n(&mut s, 3), b"abc");
    drop(s);
    wait_until("closed", || {
        series(&scrape(metrics), "evloop_backend_connections_active", &be) == Some(0)
    });
    let text = scrape(metrics);
    assert_eq!(series(&text, "evloop_backend_up", &be), Some(1));
    assert_eq!(series(&text, "evloop_backend_connections_total", &be), Some(1));
    assert_eq!(series(&text, "evloop_backend_connect_errors_total", &be), Some(0));
    assert_eq!(series(&text, "evloop_backend_bytes_sent_total", &be), Some(12_348));
    assert_eq!(series(&text, "evloop_backend_bytes_received_total", &be), Some(12_348));
    assert!(text.contains("evloop_connections_open{loop=\"0\"}"), "per-loop series too");
    let forwarded: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("evloop_forwarded_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(forwarded, 2 * 12_348, "the loops' forwarded bytes, both directions");
}

/// Runs `evloop proxy ARGS` to completion; returns the exit code and stderr.
fn run_proxy(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("proxy").args(args).output().expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flags_and_backend_files_give_the_documented_errors() {
    let l = "--listen=127.0.0.1:0";
    // Malformed values: clap usage errors, exit 2, naming the flag.
    for (args, want) in [
        (vec!["--backend", "127.0.0.1"], "--backend"),
        (vec!["--backend", "127.0.0.1:1,weight=0"], "weight must be"),
        (vec!["--backend", "127.0.0.1:1", "--balance", "fastest"], "--balance"),
        (vec!["--backend", "127.0.0.1:1", "--connect-timeout", "0"], "--connect-timeout"),
        (vec!["--backend", "127.0.0.1:1", "--health-check", "udp"], "unknown health check"),
        (vec!["--backend", "127.0.0.1:1", "--fall", "0"], "--fall"),
    ] {
        let mut all = vec![l];
        all.extend(args.iter().copied());
        let (code, err) = run_proxy(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
    // Parses, cannot run: one line, exit 1.
    let bad = temp_file("bad", "127.0.0.1:7001\n\n127.0.0.1:notaport\n");
    let empty = temp_file("empty", "# nothing\n");
    let dup = temp_file("dup", "127.0.0.1:7001\n");
    for (args, want) in [
        (vec![], "no backends".to_string()),
        (
            vec!["--backend", "127.0.0.1:7001", "--listen", "udp://127.0.0.1:0"],
            "TCP and Unix stream connections only".into(),
        ),
        (
            vec!["--backend", "127.0.0.1:7001", "--listen", "tls://127.0.0.1:0"],
            "a tls:// listener needs --tls-cert FILE".into(),
        ),
        (
            vec!["--backends-file", "/nonexistent/b.txt"],
            "cannot read backends file /nonexistent/b.txt".into(),
        ),
        (
            vec!["--backends-file", bad.to_str().expect("p")],
            format!("backends file {}: line 3", bad.display()),
        ),
        (vec!["--backends-file", empty.to_str().expect("p")], "no backends".into()),
        (
            vec!["--backend", "127.0.0.1:7001", "--backends-file", dup.to_str().expect("p")],
            "listed twice".into(),
        ),
    ] {
        let mut all = vec![l];
        all.extend(args.iter().copied());
        let (code, err) = run_proxy(&all);
        assert_eq!(code, 1, "{all:?}: {err}");
        assert!(err.contains(&want), "{all:?}: {err}");
        assert!(err.lines().any(|line| line.starts_with("evloop: ")), "{err}");
    }
    for f in [bad, empty, dup] {
        let _ = std::fs::remove_file(f);
    }
}
