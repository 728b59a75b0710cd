//! Child-process scaffolding for tests that run the `evloop` binary: spawn and wait
//! for the ready line, signal, wait for the exit code, kill on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::LIMIT;

/// The `evloop` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_evloop");

/// `evloop ARGS` with `RUST_LOG=info` and stdin closed.
pub fn evloop(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("RUST_LOG", "info").stdin(Stdio::null());
    c
}

/// Forwards each stderr line to a channel from a background thread.
pub fn stderr_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (up to [`LIMIT`]) for the first line on `rx` starting with `prefix`.
pub fn line_starting(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let line = rx.recv_timeout(LIMIT).expect("ready line");
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// Waits (up to [`LIMIT`]) for the `evloop: serving ...` line on `rx`.
pub fn ready_line(rx: &mpsc::Receiver<String>) -> String {
    line_starting(rx, "evloop: serving")
}

/// The address in a ready line (`... on ADDR ...`).
pub fn ready_addr(line: &str) -> SocketAddr {
    let addr = line.split(" on ").nth(1).and_then(|s| s.split(' ').next()).expect("address");
    addr.trim_end_matches(',').parse().expect("address")
}

/// Spawns a prepared command with stdout null and stderr piped; returns the child and
/// its stderr lines (see [`stderr_lines`]). The command's other settings (arguments,
/// environment, stdin) are the caller's.
pub fn spawn_piped(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let rx = stderr_lines(child.stderr.take().expect("stderr"));
    (child, rx)
}

/// Spawns a prepared command (stdout null, stderr piped) and waits for its ready line;
/// returns the child, the address from the ready line and the line.
pub fn spawn_child_ready(cmd: Command) -> (Child, SocketAddr, String) {
    let (child, rx) = spawn_piped(cmd);
    let line = ready_line(&rx);
    let addr = ready_addr(&line);
    (child, addr, line)
}

/// Sends `sig` to the child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of our own live child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

/// Waits (up to [`LIMIT`], then kills and panics) for the child's exit status.
pub fn wait_status(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("server did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the child's exit code (panics if it was killed by a signal).
pub fn wait_exit(mut child: Child) -> i32 {
    wait_status(&mut child).code().expect("exited, not killed")
}

/// A child killed (by its PID) on drop unless it exited.
pub struct Kid(pub Option<Child>);

impl Kid {
    pub fn new(child: Child) -> Kid {
        Kid(Some(child))
    }

    /// The child (panics if already taken).
    pub fn child(&self) -> &Child {
        self.0.as_ref().expect("child")
    }

    /// Takes the child out, so the guard no longer kills it.
    pub fn take(&mut self) -> Child {
        self.0.take().expect("child")
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
