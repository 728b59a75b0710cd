//! The `evloop` binary: ready line, signals, flag and address errors.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn evloop(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_evloop"));
    c.args(args).env("RUST_LOG", "info").stdin(Stdio::null());
    c
}

/// Starts `evloop serve ARGS --listen 127.0.0.1:0` and returns the child with the address
/// taken from its ready line.
fn spawn_ready(args: &[&str]) -> (Child, SocketAddr, String) {
    let mut child = evloop(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx.recv_timeout(LIMIT).expect("ready line");
        if line.starts_with("evloop: serving") {
            break line;
        }
    };
    let addr = line.split(" on ").nth(1).unwrap().split(' ').next().unwrap().trim_end_matches(',');
    (child, addr.parse().unwrap(), line)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of our own live child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

fn wait_exit(mut child: Child) -> i32 {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed");
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("server did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
