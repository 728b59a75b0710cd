//! White-box tests of the reactor that need crate internals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};

use super::{Action, Config, Conn, ConnHandle, EventHandler, HandleError, Server};

/// Echoes, publishes each connection's handle, and writes "woken" when woken.
struct Published(Sender<ConnHandle>);

impl EventHandler for Published {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        let _ = self.0.send(conn.handle());
        ((), Action::None)
    }
    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        conn.write(input);
        (input.len(), Action::None)
    }
    fn woken(&mut self, conn: &mut Conn<'_>, _: &mut ()) -> Action {
        conn.write(b"woken");
        Action::None
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A handle whose connection closed and whose slab slot was reused must not reach the
/// new connection: not through its own alive check, and not through the loop's
/// generation check when the alive check is bypassed (the race where the connection
/// closes after the check).
#[test]
fn stale_handle_never_reaches_the_connection_that_reused_its_slot() {
    let (tx, rx) = unbounded();
    let config = Config::new().listen("127.0.0.1:0").unwrap().loops(1);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Published(tx.clone())).unwrap();
    let h = running.handle();

    let first = TcpStream::connect(addr).unwrap();
    let old = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    drop(first);
    wait_until(|| h.stats().total().closed == 1);
    assert!(!old.is_alive());

    let mut second = TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let new = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((old.key, old.loop_id()), (new.key, new.loop_id()), "slot was reused");
    assert_ne!(old.generation, new.generation);

    assert_eq!(old.write(&b"stale"[..]), Err(HandleError::Closed));
    assert_eq!(old.wake(), Err(HandleError::Closed));
    let forged = old.forged_alive();
    forged.write(&b"stale"[..]).unwrap();
    forged.wake().unwrap();
    wait_until(|| h.stats().total().dropped_commands == 2);

    // The new connection saw nothing of it: its first bytes are its own echo.
    new.write(&b"fresh:"[..]).unwrap();
    new.wake().unwrap();
    second.write_all(b"echo").unwrap();
    let mut got = [0u8; 15];
    second.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"fresh:wokenecho");
    running.shutdown().unwrap();
}

/// Echoes.
struct Echo;

impl EventHandler for Echo {
    type State = ();
    fn opened(&mut self, _: &mut Conn<'_>) -> ((), Action) {
        ((), Action::None)
    }
    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        conn.write(input);
        (input.len(), Action::None)
    }
}

/// Connects `n` clients to `addr` one after another and checks each is served (echoed).
fn connect_and_ping(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
            c
        })
        .collect()
}

/// Without reuseport the acceptor thread's own counters show its work (issue 10 item 5):
/// it polls and it accepts every connection, and the total still counts each connection
/// once.
#[test]
fn acceptor_counts_what_it_accepts() {
    let config = Config::new().listen("127.0.0.1:0").unwrap().loops(2).reuseport(false);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Echo).unwrap();
    let h = running.handle();
    let _clients = connect_and_ping(addr, 6);
    wait_until(|| h.stats().total().accepted == 6);
    let stats = h.stats();
    let acceptor = stats.acceptor.expect("an acceptor without reuseport");
    assert!(acceptor.poll_iterations > 0, "acceptor polled: {acceptor:?}");
    assert_eq!(acceptor.accepted, 6, "acceptor accepted every connection: {acceptor:?}");
    assert_eq!(stats.total().accepted, 6, "counted once");
    assert_eq!(stats.loops.iter().map(|l| l.accepted).sum::<u64>(), 6);
    running.shutdown().unwrap();
}

/// A per-connection option the kernel refuses (a keepalive interval above Linux's
/// 32767 s cap) is warned about once per loop, and the connection is still served.
#[test]
fn refused_socket_option_still_serves() {
    let mut config = Config::new().listen("127.0.0.1:0").unwrap().loops(1);
    config.keepalive = Some((Duration::from_secs(100_000), Duration::from_secs(100_000)));
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Echo).unwrap();
    let _clients = connect_and_ping(addr, 3);
    assert_eq!(running.stats().total().accepted, 3);
    running.shutdown().unwrap();
}

/// `pin` works on Linux (each loop pinned, or warned about and unpinned) ...
#[cfg(target_os = "linux")]
#[test]
fn pin_is_supported_on_linux() {
    let config = Config::new().listen("127.0.0.1:0").unwrap().loops(2).pin(true);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Echo).unwrap();
    let _clients = connect_and_ping(addr, 2);
    running.shutdown().unwrap();
}

/// ... and is a clear `Unsupported` error elsewhere.
#[cfg(not(target_os = "linux"))]
#[test]
fn pin_is_unsupported_off_linux() {
    let config = Config::new().listen("127.0.0.1:0").unwrap().pin(true);
    let e = Server::bind(config).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
}

/// A handle is four words (loop pointer, key, generation, alive flag): a broker keeps one
/// per connected client, so what a loop knows must not be copied into each.
#[test]
fn a_conn_handle_is_four_words() {
    assert_eq!(std::mem::size_of::<ConnHandle>(), 32);
}
