//! The `evloop` binary: ready line, signals, flag and address errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Child;
use std::time::Duration;

use common::child::*;
use common::*;

/// Starts `evloop serve ARGS --listen 127.0.0.1:0` and returns the child with the address
/// taken from its ready line.
fn spawn_ready(args: &[&str]) -> (Child, SocketAddr, String) {
    spawn_child_ready(evloop(args))
}

#[test]
fn serves_echo_and_exits_zero_on_sigterm() {
    let (child, addr, line) =
        spawn_ready(&["serve", "--listen", "127.0.0.1:0", "--loops", "2", "--reuseport"]);
    assert!(line.contains("serving echo on 127.0.0.1:"), "{line}");
    assert!(line.contains("2 loops") && line.contains("reuseport on"), "{line}");
    let mut c = connect(addr);
    send(&mut c, b"hello evloop");
    assert_eq!(read_n(&mut c, 12), b"hello evloop");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn std_engine_exits_zero_on_sigint() {
    let (child, addr, line) = spawn_ready(&["serve", "--engine", "std", "--listen", "127.0.0.1:0"]);
    assert!(line.contains("engine std"), "{line}");
    let mut c = connect(addr);
    send(&mut c, b"abc");
    assert_eq!(read_n(&mut c, 3), b"abc");
    signal(&child, libc::SIGINT);
    assert_eq!(wait_exit(child), 0);
}

fn run_to_end(args: &[&str]) -> (i32, String) {
    let out = evloop(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn address_in_use_is_one_line_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_to_end(&["serve", "--listen", &addr]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn unbindable_address_is_one_line_exit_1() {
    // TEST-NET-1: not an address of this machine, so bind fails (no traffic is sent).
    let (code, err) = run_to_end(&["serve", "--listen", "192.0.2.1:5000"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("evloop: cannot listen on 192.0.2.1:5000"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_flags_get_clap_errors_exit_2() {
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--loops", "many"],
        &["serve", "--listen", "not an address"],
        &["serve", "--proto", "gopher"],
        &["serve", "--max-body", "12Q"],
        &["frobnicate"],
    ] {
        let (code, err) = run_to_end(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn help_explains_the_flags() {
    let out = evloop(&["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--loops", "--reuseport", "--pin", "--balance", "--engine", "--proto", "--listen"]
    {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn sigterm_drains_a_request_in_flight_then_exits_zero() {
    let (child, addr, _) = spawn_ready(&["serve", "--proto", "http", "--listen", "127.0.0.1:0"]);
    let mut idle = connect(addr);
    send(&mut idle, b"GET / HTTP/1.1\r\n\r\n");
    let mut head = Vec::new();
    while !head.ends_with(b"Hello, World!") {
        head.push(read_n(&mut idle, 1)[0]);
    }
    let mut busy = connect(addr);
    send(&mut busy, b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(200)); // the server has read the partial request
    signal(&child, libc::SIGTERM);
    assert!(read_to_end(&mut idle).is_empty(), "idle connection closed by the drain");
    send(&mut busy, b"cd");
    let reply = String::from_utf8(read_to_end(&mut busy)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nabcd"), "{reply}");
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn descriptor_exhaustion_neither_kills_nor_stops_the_server() {
    use std::os::unix::process::CommandExt;
    let mut cmd = evloop(&["serve", "--loops", "1", "--listen", "127.0.0.1:0"]);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, addr, _) = spawn_child_ready(cmd);
    // 200 connections against a 64-descriptor server: the kernel queues them, the
    // server accepts until EMFILE, then backs off and keeps serving what it holds.
    let mut clients: Vec<std::net::TcpStream> = (0..200).map(|_| connect(addr)).collect();
    let mut served = 0;
    for c in clients.iter_mut().take(20) {
        send(c, b"x");
        assert_eq!(read_n(c, 1), b"x");
        served += 1;
    }
    assert_eq!(served, 20);
    let mut last = clients.pop().unwrap();
    let _ = std::io::Write::write_all(&mut last, b"y");
    drop(clients);
    // Once descriptors free up, accepting resumes: the queued one and a new one are served.
    assert_eq!(read_n(&mut last, 1), b"y");
    let mut fresh = connect(addr);
    send(&mut fresh, b"fresh");
    assert_eq!(read_n(&mut fresh, 5), b"fresh");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn redis_on_tcp_and_a_unix_socket_shares_one_keyspace() {
    let path = std::env::temp_dir().join(format!("evl-cli-{}.sock", std::process::id()));
    let unix = format!("unix:{}", path.display());
    let (child, addr, line) =
        spawn_ready(&["serve", "--proto", "redis", "--listen", "127.0.0.1:0", "--listen", &unix]);
    assert!(line.contains(&unix), "ready line names both listeners: {line}");
    let mut tcp = connect(addr);
    send(&mut tcp, b"SET where both\r\n");
    assert_eq!(read_n(&mut tcp, 5), b"+OK\r\n");
    let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
    u.set_read_timeout(Some(LIMIT)).unwrap();
    std::io::Write::write_all(&mut u, b"GET where\r\n").unwrap();
    let mut got = [0u8; 10];
    std::io::Read::read_exact(&mut u, &mut got).unwrap();
    assert_eq!(&got, b"$4\r\nboth\r\n");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
    assert!(!path.exists(), "socket file removed on exit");
}

/// Starts `evloop ARGS` and returns the child with every stderr line up to and including
/// the ready line.
fn spawn_lines(args: &[&str]) -> (Child, Vec<String>) {
    let (child, rx) = spawn_piped(evloop(args));
    let mut lines: Vec<String> = Vec::new();
    while !lines.last().is_some_and(|l| l.starts_with("evloop: serving")) {
        lines.push(rx.recv_timeout(LIMIT).expect("ready line"));
    }
    (child, lines)
}

#[test]
fn reuseport_with_balance_warns_that_the_balance_is_ignored() {
    let (child, lines) = spawn_lines(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--loops",
        "2",
        "--reuseport",
        "--balance",
        "source-hash",
    ]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("--balance") && l.contains("ignored")),
        "{lines:?}"
    );
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn reuseport_with_only_unix_listeners_is_not_claimed_in_the_ready_line() {
    let path = std::env::temp_dir().join(format!("evloop-cli-rp-{}.sock", std::process::id()));
    let listen = format!("unix:{}", path.display());
    let (child, lines) =
        spawn_lines(&["serve", "--listen", &listen, "--loops", "1", "--reuseport"]);
    let ready = lines.last().unwrap();
    assert!(!ready.contains("reuseport on"), "{ready}");
    assert!(ready.contains("reuseport off"), "{ready}");
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("--reuseport does not apply")),
        "{lines:?}"
    );
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
    let _ = std::fs::remove_file(path);
}

#[test]
fn std_engine_refuses_flags_it_would_ignore() {
    for (flag, extra) in [
        ("--header-timeout", &["--proto", "http", "--header-timeout", "2s"][..]),
        ("--body-timeout", &["--proto", "http", "--body-timeout", "2s"][..]),
        ("--keepalive", &["--keepalive", "10s"][..]),
        ("--pin", &["--pin"][..]),
        ("--balance", &["--balance", "least-conn"][..]),
        ("--reuseport", &["--reuseport"][..]),
    ] {
        let mut args = vec!["serve", "--engine", "std", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (code, err) = run_to_end(&args);
        assert_eq!(code, 1, "{flag}: {err}");
        assert_eq!(err.lines().count(), 1, "{flag}: one line: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(err.contains("std engine"), "{flag}: {err}");
    }
}

#[test]
fn std_engine_enforces_max_conns() {
    let (child, addr, _) =
        spawn_ready(&["serve", "--engine", "std", "--listen", "127.0.0.1:0", "--max-conns", "2"]);
    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut c = connect(addr);
        send(&mut c, &[b'a' + i]);
        assert_eq!(read_n(&mut c, 1), [b'a' + i]);
        open.push(c);
    }
    let mut third = connect(addr);
    third.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = third.write_all(b"x");
    let mut buf = [0u8; 8];
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn std_engine_closes_idle_connections() {
    let (child, addr, _) = spawn_ready(&[
        "serve",
        "--engine",
        "std",
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "300ms",
    ]);
    let mut c = connect(addr);
    send(&mut c, b"hi");
    assert_eq!(read_n(&mut c, 2), b"hi");
    let start = std::time::Instant::now();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 8];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed by the idle timeout");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn std_engine_drains_a_request_in_flight_then_exits_zero() {
    let (child, addr, _) = spawn_ready(&[
        "serve",
        "--engine",
        "std",
        "--proto",
        "http",
        "--listen",
        "127.0.0.1:0",
        "--drain-timeout",
        "5s",
    ]);
    let mut idle = connect(addr);
    send(&mut idle, b"GET / HTTP/1.1\r\n\r\n");
    let mut head = Vec::new();
    while !head.ends_with(b"Hello, World!") {
        head.push(read_n(&mut idle, 1)[0]);
    }
    let mut busy = connect(addr);
    send(&mut busy, b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(200)); // the server has read the partial request
    signal(&child, libc::SIGTERM);
    assert!(read_to_end(&mut idle).is_empty(), "idle connection closed by the drain");
    send(&mut busy, b"cd");
    let reply = String::from_utf8(read_to_end(&mut busy)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nabcd"), "{reply}");
    assert_eq!(wait_exit(child), 0);
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_engine_refuses_flags_it_would_ignore() {
    for flag in ["--max-conns 2", "--idle-timeout 5s", "--drain-timeout 1s", "--pin"] {
        let mut args = vec!["serve", "--engine", "tokio", "--listen", "127.0.0.1:0"];
        args.extend(flag.split(' '));
        let (code, err) = run_to_end(&args);
        assert_eq!(code, 1, "{flag}: {err}");
        let name = flag.split(' ').next().unwrap();
        assert!(err.contains(name) && err.contains("tokio engine"), "{flag}: {err}");
    }
}

#[test]
fn std_engine_serves_protocol_metrics() {
    let (child, lines) = spawn_lines(&[
        "serve",
        "--engine",
        "std",
        "--proto",
        "http",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let url =
        lines.iter().find_map(|l| l.split("metrics at http://").nth(1)).expect("metrics line");
    let metrics: SocketAddr = url.trim_end_matches("/metrics").parse().unwrap();
    let ready = lines.last().unwrap();
    let addr = ready_addr(ready);
    let mut c = connect(addr);
    send(&mut c, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(read_to_end(&mut c).ends_with(b"Hello, World!"));
    let mut m = connect(metrics);
    send(&mut m, b"GET /metrics HTTP/1.1\r\n\r\n");
    let text = String::from_utf8(read_to_end(&mut m)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("evloop_requests_total{proto=\"http\",loop=\"0\"} 1\n"), "{text}");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 0);
}

#[test]
fn header_timeout_is_refused_for_protocols_other_than_http() {
    let (code, err) = run_to_end(&["serve", "--listen", "127.0.0.1:0", "--header-timeout", "2s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--header-timeout") && err.contains("http"), "{err}");
}

/// A request that outlasts `--drain-timeout`: the server stops waiting for it at the
/// deadline, closes it and still exits 0.
#[test]
fn drain_deadline_ends_a_stuck_request_and_exits_zero() {
    let (child, addr, _) = spawn_ready(&[
        "serve",
        "--proto",
        "http",
        "--drain-timeout",
        "1s",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut stuck = connect(addr);
    send(&mut stuck, b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(200)); // the server has read the partial request
    let t = std::time::Instant::now();
    signal(&child, libc::SIGTERM);
    // The request never completes; the connection ends at the deadline (EOF or reset).
    let mut buf = [0u8; 64];
    match std::io::Read::read(&mut stuck, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the unfinished request closed unanswered, got {other:?}"),
    }
    assert_eq!(wait_exit(child), 0, "exit status after the drain deadline");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "exited after {took:?}, before the deadline");
    assert!(took < Duration::from_secs(10), "exited only after {took:?}");
}

/// A second signal during the drain exits at once (status 1), not at the deadline.
#[test]
fn second_signal_during_the_drain_exits_at_once() {
    let (child, addr, _) = spawn_ready(&[
        "serve",
        "--proto",
        "http",
        "--drain-timeout",
        "60s",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut stuck = connect(addr);
    send(&mut stuck, b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300)); // draining, held up by `stuck`
    let t = std::time::Instant::now();
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child), 1, "second signal: exit status 1");
    assert!(t.elapsed() < Duration::from_secs(5), "exited only after {:?}", t.elapsed());
    drop(stuck);
}

/// The server-side socket of the one established connection on `port`, as `ss -tnmio`
/// shows it (its line and the indented detail line), or None.
fn ss_server_socket(port: u16) -> Option<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnmio", "state", "established", &format!("( sport = :{port} )")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.contains(&format!("127.0.0.1:{port} ")))?;
    Some(format!("{} {}", lines[at], lines.get(at + 1).unwrap_or(&"")))
}

/// `--keepalive`, `--keepalive-interval`, `--recv-buffer`, `--send-buffer` reach the
/// accepted socket, read back with `ss` (keepalive timer, skmem rb/tb). Needs `ss`
/// (iproute2); without it the test says SKIPPED on stdout (shown by `.ci/run`). The same
/// options are read back with getsockopt in `tests/socket_options.rs`.
#[test]
fn socket_flags_reach_accepted_sockets_skipped_without_ss() {
    let have_ss =
        std::process::Command::new("ss").arg("-V").output().is_ok_and(|o| o.status.success());
    if !have_ss {
        println!("SKIPPED socket_flags_reach_accepted_sockets_skipped_without_ss: no ss");
        return;
    }
    println!("ran socket_flags_reach_accepted_sockets_skipped_without_ss");
    let flags = [
        "serve",
        "--keepalive",
        "37s",
        "--keepalive-interval",
        "7s",
        "--recv-buffer",
        "48K",
        "--send-buffer",
        "40K",
        "--listen",
        "127.0.0.1:0",
    ];
    for with_flags in [true, false] {
        let args: &[&str] = if with_flags { &flags } else { &["serve", "--listen", "127.0.0.1:0"] };
        let (child, addr, _) = spawn_ready(args);
        let mut c = connect(addr);
        send(&mut c, b"x");
        assert_eq!(read_n(&mut c, 1), b"x");
        let line = ss_server_socket(addr.port()).expect("ss shows the accepted socket");
        let field = |name: &str| -> u64 {
            let at = line.find(name).unwrap_or_else(|| panic!("{name} in {line}")) + name.len();
            line[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        };
        if with_flags {
            let ka = field("timer:(keepalive,");
            assert!((30..=37).contains(&ka), "keepalive timer {ka} s for --keepalive 37s: {line}");
            // Linux reports twice the size asked for.
            assert!([48 * 1024, 96 * 1024].contains(&field(",rb")), "{line}");
            assert!([40 * 1024, 80 * 1024].contains(&field(",tb")), "{line}");
        } else {
            assert!(!line.contains("keepalive"), "keepalive off by default: {line}");
            assert_ne!(field(",rb"), 96 * 1024, "{line}");
        }
        signal(&child, libc::SIGTERM);
        assert_eq!(wait_exit(child), 0);
    }
}
