//! `evloop load` against the real `evloop serve` binary: every protocol (and each Redis
//! command) runs clean, a server of the wrong protocol is reported as errors with a
//! non-zero exit, and `-c 0` is refused. Every child process is bounded in time.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::child::{ready_addr, spawn_piped};

/// Upper bound for any one child (only to avoid hanging; runs take well under a second).
const LIMIT: Duration = Duration::from_secs(20);

fn evloop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_evloop"));
    c.stdin(Stdio::null()).env_remove("RUST_LOG");
    c
}

/// A server child, killed when dropped (so a failing assertion never leaks it).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `evloop serve --proto PROTO --listen 127.0.0.1:0 --loops 1` and takes the address
/// from its ready line (`evloop: serving PROTO on 127.0.0.1:PORT (...)`).
fn serve(proto: &str) -> Server {
    let mut cmd = evloop();
    cmd.args(["serve", "--proto", proto, "--listen", "127.0.0.1:0", "--loops", "1", "-q"]);
    let (mut child, rx) = spawn_piped(cmd);
    let deadline = Instant::now() + LIMIT;
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("evloop: serving") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line from evloop serve --proto {proto}: {e}");
            }
        }
    };
    Server { child, addr: ready_addr(&line) }
}

/// What a finished child left.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `evloop ARGS`, killing it if it runs past [`LIMIT`].
fn run(args: &[&str]) -> Outcome {
    let mut child = evloop()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evloop");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("evloop {args:?} ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The value of `"key":NUMBER` in a one-line JSON object.
fn json_number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("no {key} in {json}")) + pat.len();
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().unwrap_or_else(|e| panic!("{key} in {json}: {e}"))
}

/// `evloop load ADDR --proto PROTO -c 4 -d 300ms --warmup 100ms --json EXTRA...`.
fn load(addr: SocketAddr, proto: &str, extra: &[&str]) -> Outcome {
    let addr = addr.to_string();
    let mut args = vec![
        "load", &addr, "--proto", proto, "-c", "4", "-d", "300ms", "--warmup", "100ms", "--json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The JSON line of a load run's stdout.
fn report(o: &Outcome) -> String {
    o.stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stdout: {:?} / stderr {:?}", o.stdout, o.stderr))
        .to_string()
}

/// A clean run: exit 0, no errors, no drops, some requests, sane rates.
fn clean(proto: &str, extra: &[&str]) {
    let server = serve(proto);
    let o = load(server.addr, proto, extra);
    assert_eq!(o.code, Some(0), "{proto} {extra:?}: stderr {:?}", o.stderr);
    let json = report(&o);
    assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
    assert_eq!(json_number(&json, "dropped"), 0.0, "{json}");
    assert!(json_number(&json, "requests") > 0.0, "{json}");
    assert!(json_number(&json, "rps") > 0.0, "{json}");
    let (p50, p99) = (json_number(&json, "p50"), json_number(&json, "p99"));
    assert!(p50 > 0.0 && p50 <= p99, "{json}");
}

#[test]
fn echo_runs_clean() {
    clean("echo", &[]);
}

#[test]
fn echo_pipelined_4k_runs_clean() {
    clean("echo", &["--size", "4K", "--pipeline", "4"]);
}

#[test]
fn http_runs_clean() {
    clean("http", &["--pipeline", "4"]);
}

#[test]
fn redis_ping_runs_clean() {
    clean("redis", &["--command", "ping"]);
}

#[test]
fn redis_set_runs_clean() {
    clean("redis", &["--command", "set", "--size", "64"]);
}

#[test]
fn redis_get_runs_clean() {
    clean("redis", &["--command", "get", "--pipeline", "4"]);
}

#[test]
fn frame_runs_clean() {
    clean("frame", &["--size", "100"]);
}

#[test]
fn wrong_protocol_is_errors_and_nonzero_exit() {
    // RESP commands to an echo server come back as arrays, never as +PONG.
    let server = serve("echo");
    let o = load(server.addr, "redis", &[]);
    assert_eq!(o.code, Some(1), "stdout {:?} stderr {:?}", o.stdout, o.stderr);
    let json = report(&o);
    assert!(json_number(&json, "errors") > 0.0, "{json}");
    assert!(o.stderr.contains("wrong replies"), "{:?}", o.stderr);
}

#[test]
fn nothing_listening_is_a_clean_failure() {
    // Bind, note the port, drop: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let o = run(&["load", &addr, "-c", "1", "-d", "100ms", "--warmup", "0ms", "--json"]);
    assert_eq!(o.code, Some(1), "{:?}", o.stderr);
    assert!(o.stderr.contains("cannot connect"), "{:?}", o.stderr);
}

#[test]
fn zero_connections_is_a_usage_error() {
    // No server needed: -c 0 must be refused before anything connects.
    let o = run(&["load", "127.0.0.1:9", "-c", "0", "-d", "100ms", "--json"]);
    assert!(o.stdout.trim().is_empty(), "{:?}", o.stdout);
    assert_eq!(o.code, Some(2), "a usage error: {:?}", o.stderr);
    assert!(
        o.stderr.contains("invalid value '0'") && o.stderr.contains("at least 1"),
        "{:?}",
        o.stderr
    );
}
