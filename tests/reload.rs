//! SIGHUP with `--config FILE` (the `evloop` binary as a child process, loopback only):
//! the proxy's backends swapped without dropping an established connection, the log
//! level changed at runtime, a broken file logged and ignored, and a changed `listen`
//! named as needing a restart.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::child::spawn_piped;

/// A config file under the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("evloop-reload-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write a temp file");
        TempFile(path)
    }

    /// Replaces the file at once (write a sibling, rename), as a careful editor does:
    /// a SIGHUP never reads it half written.
    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write the new config file");
        std::fs::rename(&tmp, &self.0).expect("replace the config file");
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An evloop child whose stderr is read line by line; killed on drop.
struct Evloop {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Evloop {
    fn start(args: &[&str]) -> Evloop {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evloop"));
        cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
        let (child, lines) = spawn_piped(cmd);
        Evloop { child, lines, seen: Vec::new() }
    }

    /// Waits (up to 20 s) for a stderr line containing all of `parts`; returns it.
    fn wait_line(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(e) => {
                    panic!("no line with {parts:?} ({e}); stderr so far:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// The address of the ready line (`... on ADDR ...`).
    fn ready(&mut self, prefix: &str) -> SocketAddr {
        let line = self.wait_line(&[prefix]);
        let rest = line.split(" on ").nth(1).expect("an address in the ready line");
        let addr = rest.split([' ', ',']).next().expect("address");
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e} in {line}"))
    }

    fn hangup(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }
}

impl Drop for Evloop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo backend on a loopback port, counting the connections it accepted.
fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

fn echo_ok(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).is_ok() && got == msg
}

fn proxy_file(backends: &[SocketAddr], listen: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "# evloop proxy\nlisten = [\"{listen}\"]\nloops = 1\nhealth-check = \"off\"\n\
         backend = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn sighup_rereads_the_proxy_config_backends_keeping_established_connections() {
    let ((a, a_n), (b, b_n), (c, c_n)) = (echo_backend(), echo_backend(), echo_backend());
    let file = TempFile::new("proxy.toml", &proxy_file(&[a, b], "127.0.0.1:0"));
    let mut p = Evloop::start(&["proxy", "--config", file.path()]);
    let addr = p.ready("evloop: proxying on");
    // Round-robin over a and b.
    let mut old: Vec<TcpStream> = (0..4u8)
        .map(|i| {
            let mut s = connect(addr);
            assert!(echo_ok(&mut s, &[i; 16]));
            s
        })
        .collect();
    assert_eq!((a_n.load(Ordering::SeqCst), b_n.load(Ordering::SeqCst)), (2, 2));
    // Swap b for c.
    file.write(&proxy_file(&[a, c], "127.0.0.1:0"));
    p.hangup();
    p.wait_line(&["backends:", &format!("+{c}"), &format!("-{b}")]);
    for i in 0..4u8 {
        let mut s = connect(addr);
        assert!(echo_ok(&mut s, &[i; 8]));
    }
    assert_eq!(b_n.load(Ordering::SeqCst), 2, "no new connection reaches the removed backend");
    assert_eq!(c_n.load(Ordering::SeqCst), 2, "new connections reach the new backend");
    for s in &mut old {
        assert!(echo_ok(s, b"still there"), "a connection through a removed backend dropped");
    }
    // A changed `listen` needs a restart: named, and the listener stays.
    file.write(&proxy_file(&[a, c], "127.0.0.1:1"));
    p.hangup();
    p.wait_line(&["`listen` changed in", file.path(), "needs a restart"]);
    p.wait_line(&["backends: unchanged (2)"]);
    let mut s = connect(addr);
    assert!(echo_ok(&mut s, b"same listener"));
}

#[test]
fn sighup_changes_the_log_level_and_a_broken_file_changes_nothing() {
    let base = "proto = \"http\"\nlisten = [\"127.0.0.1:0\"]\nloops = 1\n";
    let file = TempFile::new("serve.toml", base);
    let mut s = Evloop::start(&["serve", "--config", file.path()]);
    let addr = s.ready("evloop: serving http on");
    let bad_request = |addr| {
        let mut c = connect(addr);
        let _ = c.write_all(b"NONSENSE\r\n\r\n");
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    };
    // At info, a bad request logs no debug line (its line would come before the next).
    bad_request(addr);
    // Switch to debug: said, and debug lines appear.
    file.write(&format!("{base}verbose = 1\n"));
    s.hangup();
    s.wait_line(&["log level: info -> debug"]);
    assert!(!s.seen.iter().any(|l| l.contains("DEBUG")), "{:?}", s.seen);
    bad_request(addr);
    s.wait_line(&["DEBUG", "http:"]);
    // A file that no longer parses: error naming file:line, everything kept.
    file.write(&format!("{base}verbose = 1\nloops = \n"));
    s.hangup();
    s.wait_line(&["ERROR", &format!("{}:5", file.path()), "keeping the configuration"]);
    let mut c = connect(addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut head = [0u8; 12];
    c.read_exact(&mut head).expect("still serving");
    assert_eq!(&head, b"HTTP/1.1 200");
    // Back to info.
    file.write(base);
    s.hangup();
    s.wait_line(&["log level: debug -> info"]);
}
