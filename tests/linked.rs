//! Linked pairs over real loopback sockets: a proxy built from `Conn::connect` +
//! `Conn::link` moves 100 MB each way byte-exact; a client that never reads keeps the
//! proxy's pending output bounded; half-close is forwarded; a reset on one side closes
//! the other. Each data test runs with the copy path and with `splice(2)`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use evloop::reactor::{
    Action, CloseReason, Config, Conn, ConnectAddr, EventHandler, LinkOptions, Running, Server,
};

/// Bytes forwarded, per direction, over all pairs of a proxy.
#[derive(Default)]
struct Counts {
    up: AtomicU64,
    down: AtomicU64,
    link_closed: AtomicU64,
}

/// A TCP proxy: every accepted client is paused, a backend connection is opened, and
/// the backend links itself to its client.
struct Proxy {
    backend: ConnectAddr,
    splice: bool,
    counts: Arc<Counts>,
}

/// `true` for the client side (bytes read from it go up to the backend).
struct Side {
    client: bool,
    bytes: u64,
}

impl EventHandler for Proxy {
    type State = Side;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (Side, Action) {
        match conn.requester() {
            None => {
                conn.pause_reading();
                let action = match conn.connect(&self.backend, Some(LIMIT), 0) {
                    Ok(_) => Action::None,
                    Err(_) => Action::Close,
                };
                (Side { client: true, bytes: 0 }, action)
            }
            Some(client) => {
                let opts = LinkOptions { splice: self.splice };
                let action = match conn.link_with(client, opts) {
                    Ok(()) => Action::None,
                    Err(_) => Action::Close,
                };
                (Side { client: false, bytes: 0 }, action)
            }
        }
    }

    fn data(&mut self, _: &mut Conn<'_>, _: &mut Side, _: &[u8]) -> (usize, Action) {
        panic!("a linked connection's input never reaches data");
    }

    fn forwarded(&mut self, side: &mut Side, n: usize) {
        side.bytes += n as u64;
    }

    fn closed(&mut self, side: Side, reason: CloseReason) {
        let c = if side.client { &self.counts.up } else { &self.counts.down };
        c.fetch_add(side.bytes, Ordering::Relaxed);
        if matches!(reason, CloseReason::LinkClosed) {
            self.counts.link_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn proxy(backend: SocketAddr, splice: bool, config: Config) -> (SocketAddr, Running, Arc<Counts>) {
    proxy_to(ConnectAddr::Tcp(backend), splice, config)
}

fn proxy_to(
    backend: ConnectAddr,
    splice: bool,
    config: Config,
) -> (SocketAddr, Running, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let c = counts.clone();
    let running = server
        .start(move |_| Proxy { backend: backend.clone(), splice, counts: c.clone() })
        .unwrap();
    (addr, running, counts)
}

/// A deterministic byte stream, generated in chunks (8 bytes per xorshift step).
struct Stream(u64);

impl Stream {
    fn new(seed: u64) -> Stream {
        Stream(seed | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// A stream socket whose write side can be shut: TCP or Unix.
trait Half: Read + Write {
    fn shut(&self);
}

impl Half for TcpStream {
    fn shut(&self) {
        self.shutdown(Shutdown::Write).expect("shutdown");
    }
}

impl Half for UnixStream {
    fn shut(&self) {
        self.shutdown(Shutdown::Write).expect("shutdown");
    }
}

/// Writes `len` bytes of stream `seed`, then shuts the write side.
fn send_stream<S: Half>(mut s: S, len: usize, seed: u64) -> S {
    let mut g = Stream::new(seed);
    let mut buf = vec![0; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        g.fill(&mut buf[..n]);
        s.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    s.shut();
    s
}

/// Reads to EOF and checks it is exactly `len` bytes of stream `seed` (chunk sizes on
/// both sides are multiples of 8, so the stream lines up).
fn expect_stream(s: &mut impl Read, len: usize, seed: u64) {
    let mut g = Stream::new(seed);
    let mut got = vec![0; CHUNK];
    let mut want = vec![0; CHUNK];
    let mut at = 0;
    loop {
        let n = s.read(&mut got).expect("read");
        if n == 0 {
            break;
        }
        assert!(at + n <= len, "more than {len} bytes");
        // Compare against the stream in CHUNK-aligned pieces.
        let mut off = 0;
        while off < n {
            let in_chunk = at % CHUNK;
            if in_chunk == 0 {
                g.fill(&mut want[..CHUNK.min(len - at)]);
            }
            let take = (n - off).min(CHUNK - in_chunk);
            assert!(
                got[off..off + take] == want[in_chunk..in_chunk + take],
                "bytes differ near offset {at}"
            );
            at += take;
            off += take;
        }
    }
    assert_eq!(at, len, "stream ended early");
}

/// A backend that, for one connection, sends `down` bytes of stream 2 while it checks
/// it receives `up` bytes of stream 1, then closes.
fn backend_streams(up: usize, down: usize) -> (SocketAddr, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut r = s.try_clone().unwrap();
        let w = thread::spawn(move || send_stream(s, down, 2));
        expect_stream(&mut r, up, 1);
        w.join().unwrap();
    });
    (addr, t)
}

fn both_ways(splice: bool) {
    const MB100: usize = 100 * 1024 * 1024;
    let (backend, bt) = backend_streams(MB100, MB100);
    let (addr, running, counts) = proxy(backend, splice, local_config(1));
    let h = running.handle();
    let client = connect(addr);
    let mut r = client.try_clone().unwrap();
    let w = thread::spawn(move || send_stream(client, MB100, 1));
    expect_stream(&mut r, MB100, 2);
    w.join().unwrap();
    bt.join().unwrap();
    wait_until("pair closed", || total(&h).closed == 2);
    assert_eq!(counts.up.load(Ordering::Relaxed), MB100 as u64);
    assert_eq!(counts.down.load(Ordering::Relaxed), MB100 as u64);
    let s = total(&h);
    assert_eq!((s.links, s.forwarded, s.connects), (1, 2 * MB100 as u64, 1));
    if splice && cfg!(target_os = "linux") {
        assert_eq!(s.spliced, 2 * MB100 as u64, "{s:?}");
    }
    running.shutdown().unwrap();
}

#[test]
fn hundred_mb_each_way_byte_exact_copy() {
    both_ways(false);
}

#[test]
fn hundred_mb_each_way_byte_exact_splice() {
    both_ways(true);
}

fn half_close(splice: bool) {
    // The backend reads the whole request (to EOF), then answers 1 MiB and closes.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let bt = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let req = read_to_end(&mut s);
        assert_eq!(req, b"the whole request");
        send_stream(s, 1 << 20, 3);
    });
    let (addr, running, _) = proxy(backend, splice, local_config(1));
    let h = running.handle();
    let mut client = connect(addr);
    send(&mut client, b"the whole request");
    client.shutdown(Shutdown::Write).unwrap();
    expect_stream(&mut client, 1 << 20, 3);
    bt.join().unwrap();
    wait_until("pair closed", || total(&h).closed == 2);
    running.shutdown().unwrap();
}

#[test]
fn half_close_is_forwarded_copy() {
    half_close(false);
}

#[test]
fn half_close_is_forwarded_splice() {
    half_close(true);
}

/// The client sends 50 MB to an echoing backend and reads nothing for a while: the
/// proxy stops reading each side while the other's output is above the high
/// watermark, so its pending output stays bounded; then everything arrives.
fn never_reads(splice: bool) {
    const MB50: usize = 50 * 1024 * 1024;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let bt = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
    });
    let high = 256 * 1024;
    let config = local_config(1).watermarks(64 * 1024, high);
    let (addr, running, _) = proxy(backend, splice, config);
    let h = running.handle();
    let client = connect(addr);
    let mut r = client.try_clone().unwrap();
    let w = thread::spawn(move || send_stream(client, MB50, 5));
    // Wait until the flow has stalled: nothing forwarded for a while.
    let mut last = u64::MAX;
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = total(&h).forwarded;
        if now == last {
            break;
        }
        last = now;
    }
    let s = total(&h);
    assert!(s.forwarded < 2 * MB50 as u64, "the flow should have stalled: {s:?}");
    let bound = (high + 2 * 64 * 1024) as u64;
    assert!(s.peak_pending_output <= bound, "pending output {} > {bound}", s.peak_pending_output);
    expect_stream(&mut r, MB50, 5);
    w.join().unwrap();
    bt.join().unwrap();
    let s = total(&h);
    assert!(s.peak_pending_output <= bound, "pending output {} > {bound}", s.peak_pending_output);
    running.shutdown().unwrap();
}

#[test]
fn client_that_never_reads_keeps_pending_output_bounded_copy() {
    never_reads(false);
}

#[test]
fn client_that_never_reads_keeps_pending_output_bounded_splice() {
    never_reads(true);
}

fn reset(splice: bool) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let (addr, running, counts) = proxy(backend, splice, local_config(1));
    let h = running.handle();
    let mut client = connect(addr);
    let (mut b, _) = l.accept().unwrap();
    b.set_read_timeout(Some(LIMIT)).unwrap();
    send(&mut client, b"ping");
    assert_eq!(read_n(&mut b, 4), b"ping");
    // Reset the client side (SO_LINGER 0, then close).
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    // The backend connection is closed by the proxy: EOF (or a reset).
    let mut rest = Vec::new();
    let _ = b.read_to_end(&mut rest);
    assert!(rest.is_empty());
    wait_until("both sides closed", || total(&h).closed == 2);
    assert_eq!(counts.link_closed.load(Ordering::Relaxed), 1);
    running.shutdown().unwrap();
}

#[test]
fn reset_on_one_side_closes_the_other_copy() {
    reset(false);
}

#[test]
fn reset_on_one_side_closes_the_other_splice() {
    reset(true);
}

#[test]
fn client_gone_before_its_backend_connects_ends_the_pair() {
    // The client (paused, so its FIN is not read yet) leaves before its backend
    // connects: once linked, its end of input is forwarded and the pair ends.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let (addr, running, _) = proxy(backend, false, local_config(1));
    let h = running.handle();
    let client = connect(addr);
    wait_until("client accepted", || total(&h).accepted == 1);
    drop(client);
    let (mut b, _) = l.accept().unwrap();
    b.set_read_timeout(Some(LIMIT)).unwrap();
    assert!(read_to_end(&mut b).is_empty());
    drop(b);
    wait_until("both sides closed", || total(&h).closed == 2);
    running.shutdown().unwrap();
}

/// Pauses every connection when it opens; a wake resumes it. Echoes what it reads.
struct PauseThenEcho(crossbeam_channel::Sender<evloop::reactor::ConnHandle>);

impl EventHandler for PauseThenEcho {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        conn.pause_reading();
        self.0.send(conn.handle()).unwrap();
        ((), Action::None)
    }
    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        conn.write(input);
        (input.len(), Action::None)
    }
    fn woken(&mut self, conn: &mut Conn<'_>, _: &mut ()) -> Action {
        conn.resume_reading();
        Action::None
    }
}

#[test]
fn paused_connection_is_read_at_once_when_resumed() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let server = Server::bind(local_config(1)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| PauseThenEcho(tx.clone())).unwrap();
    let h = running.handle();
    let mut client = connect(addr);
    let handle = rx.recv_timeout(LIMIT).unwrap();
    send(&mut client, b"held in the kernel");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(total(&h).bytes_read, 0, "read while paused");
    handle.wake().unwrap();
    // No new bytes arrive after the wake: the resumed connection must be read anyway.
    assert_eq!(read_n(&mut client, 18), b"held in the kernel");
    running.shutdown().unwrap();
}

/// TCP client, Unix socket backend: 16 MB each way, both link modes.
#[test]
fn tcp_to_unix_backend_both_modes() {
    const LEN: usize = 16 * 1024 * 1024;
    for splice in [false, true] {
        let path = std::env::temp_dir()
            .join(format!("evloop-linked-{}-{splice}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let bt = thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            let mut r = s.try_clone().unwrap();
            let w = thread::spawn(move || send_stream(s, LEN, 8));
            expect_stream(&mut r, LEN, 7);
            w.join().unwrap();
        });
        let (addr, running, _) = proxy_to(ConnectAddr::Unix(path.clone()), splice, local_config(1));
        let h = running.handle();
        let client = connect(addr);
        let mut r = client.try_clone().unwrap();
        let w = thread::spawn(move || send_stream(client, LEN, 7));
        expect_stream(&mut r, LEN, 8);
        w.join().unwrap();
        bt.join().unwrap();
        wait_until("pair closed", || total(&h).closed == 2);
        let s = total(&h);
        if splice && cfg!(target_os = "linux") {
            assert_eq!(s.spliced, 2 * LEN as u64, "{s:?}");
        }
        running.shutdown().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
