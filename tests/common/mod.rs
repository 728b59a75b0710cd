//! Helpers shared by the integration tests: servers on 127.0.0.1:0, clients with
//! timeouts so a broken server fails a test instead of hanging it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use evloop::reactor::{Config, ServerHandle, StatsSnapshot};

pub mod child;

/// Upper bound for any single wait in a test (only to avoid hanging).
pub const LIMIT: Duration = Duration::from_secs(30);

/// A config listening on an ephemeral loopback port.
pub fn local_config(loops: usize) -> Config {
    Config::new().listen("127.0.0.1:0").expect("loopback address").loops(loops)
}

/// Connects with read/write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.set_write_timeout(Some(LIMIT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Connects with a small fixed receive buffer (no autotuning), so a server writing to
/// this client fills the kernel's buffers quickly and must buffer the rest itself:
/// loopback receive buffers can otherwise grow to 32 MiB and absorb a whole test.
pub fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .expect("socket");
    sock.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.set_write_timeout(Some(LIMIT)).expect("timeout");
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read_to_end");
    v
}

/// Writes everything.
pub fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write_all");
}

/// True when the peer closes (EOF or reset) within `within`; a read timeout is not a
/// close. Data the peer sends before closing is read and ignored. Sets `s`'s read
/// timeout to `within`.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so big payloads are not all one value.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a checksum.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Polls `cond` every few milliseconds until it holds; panics after [`LIMIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sum of all loops' counters and the acceptor's.
pub fn total(h: &ServerHandle) -> StatsSnapshot {
    h.stats().total()
}

/// A backend for one connection that answers only after the client's end of input: the
/// byte count it read and a newline, then 1 MiB of `pattern(1 << 20, 3)`.
pub fn answer_after_eof_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let _ = s.write_all(format!("{}\n", got.len()).as_bytes());
            let _ = s.write_all(&pattern(1 << 20, 3));
        }
    });
    backend
}
