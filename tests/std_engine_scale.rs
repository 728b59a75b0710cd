//! The std engine (a thread per connection) at thousands of connections (issue 10
//! item 3): its acceptor only accepts and spawns, so clients connecting back to back are
//! all taken, and every connection is answered.
//!
//! The server runs as a child process (`evloop serve --engine std`) and the clients in
//! this process: each side then needs one descriptor per connection, within this
//! machine's hard limit of 20,000 per process.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{Kid, ready_addr, spawn_piped};
use common::*;

/// Connections in the test; `EVLOOP_SCALE_CONNECTIONS` overrides it for a manual run (up
/// to about 19,000 on this machine).
const CONNECTIONS: usize = 5000;

#[test]
fn five_thousand_connections_each_get_their_round_trip() {
    let n = std::env::var("EVLOOP_SCALE_CONNECTIONS").ok().and_then(|v| v.parse().ok());
    let connections: usize = n.unwrap_or(CONNECTIONS);
    evloop::net::limits::raise_nofile(connections as u64 + 256).expect("open-file limit");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evloop"));
    cmd.args(["serve", "--engine", "std", "--listen", "127.0.0.1:0", "--backlog", "4096"]);
    // Killed on drop, so a failing assertion does not leave the server running.
    let (child, rx) = spawn_piped(cmd);
    let child = Kid::new(child);
    let mut lines = Vec::new();
    let addr: SocketAddr = loop {
        let line = rx.recv_timeout(LIMIT).expect("ready line");
        if line.starts_with("evloop: serving") {
            break ready_addr(&line);
        }
        lines.push(line);
    };
    let started = Instant::now();
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        conns.push(s);
    }
    let connected = started.elapsed();
    // Every connection sends a 64-byte message, then every reply is read.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&pattern(64, i as u64)).unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    let mut reply = [0u8; 64];
    for (i, s) in conns.iter_mut().enumerate() {
        s.read_exact(&mut reply).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(reply[..], pattern(64, i as u64)[..], "reply {i}");
    }
    let answered = started.elapsed();
    drop(conns);
    drop(child);
    eprintln!("{connections} connections in {connected:?}, all answered after {answered:?}");
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(!lines.iter().any(|l| l.contains("cannot spawn")), "{lines:?}");
}
