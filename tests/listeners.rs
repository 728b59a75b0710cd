//! Listener kinds: several addresses per server, Unix sockets, IPv6, UDP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use evloop::proto::Protocol;
use evloop::proto::echo::Echo;
use evloop::proto::frame::{self, Frame};
use evloop::proto::http::Http;
use evloop::proto::resp::Redis;
use evloop::reactor::{Action, Config, Conn, EventHandler, ListenAddr, Server};
use evloop::serve::{Engine, Served, start};

/// A fresh socket path under the temp dir (short enough for sun_path).
fn sock_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("evl-{}-{tag}-{n}.sock", std::process::id()))
}

fn unix_connect(path: &PathBuf) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect unix socket");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

fn exchange(s: &mut impl ReadWrite, send: &[u8], expect: &[u8]) {
    s.write_all(send).unwrap();
    let mut got = vec![0; expect.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expect));
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn serve_on(engine: Engine, proto: impl Protocol, listen: Vec<ListenAddr>) -> Served {
    let config = Config { listen, loops: 2, ..Config::default() };
    start(engine, proto, config).unwrap()
}

fn unix_runs_every_protocol(engine: Engine) {
    let path = sock_path("proto");
    let s = serve_on(engine, Echo, vec![ListenAddr::Unix(path.clone())]);
    exchange(&mut unix_connect(&path), b"hello unix", b"hello unix");
    s.shutdown().unwrap();
    assert!(!path.exists(), "socket file removed on clean shutdown");

    let s = serve_on(engine, Http::default(), vec![ListenAddr::Unix(path.clone())]);
    let mut c = unix_connect(&path);
    c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("Hello, World!"),
        "{reply}"
    );
    s.shutdown().unwrap();

    let s = serve_on(engine, Redis::default(), vec![ListenAddr::Unix(path.clone())]);
    exchange(&mut unix_connect(&path), b"SET k v\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n");
    s.shutdown().unwrap();

    let s = serve_on(engine, Frame::default(), vec![ListenAddr::Unix(path.clone())]);
    let mut framed = Vec::new();
    frame::encode(b"framed", &mut framed).unwrap();
    exchange(&mut unix_connect(&path), &framed, &framed);
    s.shutdown().unwrap();
}

#[test]
fn unix_sockets_run_every_protocol_reactor() {
    unix_runs_every_protocol(Engine::Reactor);
}

#[test]
fn unix_sockets_run_every_protocol_std() {
    unix_runs_every_protocol(Engine::Std);
}

fn tcp_and_unix_share_one_keyspace(engine: Engine) {
    let path = sock_path("mixed");
    let tcp: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let s = serve_on(
        engine,
        Redis::default(),
        vec![ListenAddr::Tcp(tcp), ListenAddr::Unix(path.clone())],
    );
    let mut t = connect(s.local_addrs()[0]);
    exchange(&mut t, b"SET shared 42\r\n", b"+OK\r\n");
    exchange(&mut unix_connect(&path), b"INCR shared\r\n", b":43\r\n");
    exchange(&mut t, b"GET shared\r\n", b"$2\r\n43\r\n");
    s.shutdown().unwrap();
}

#[test]
fn tcp_and_unix_listeners_share_one_keyspace_reactor() {
    tcp_and_unix_share_one_keyspace(Engine::Reactor);
}

#[test]
fn tcp_and_unix_listeners_share_one_keyspace_std() {
    tcp_and_unix_share_one_keyspace(Engine::Std);
}

/// Answers every read with the listener it came through: "index address".
struct WhichListener;

impl EventHandler for WhichListener {
    type State = ();
    fn opened(&mut self, _: &mut Conn<'_>) -> ((), Action) {
        ((), Action::None)
    }
    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        let line = match conn.listener_addr() {
            Some(a) => format!("{} {a}\n", conn.listener()),
            None => "none\n".into(),
        };
        conn.write(line.as_bytes());
        (input.len(), Action::None)
    }
}

#[test]
fn the_data_callback_knows_its_listener() {
    let path = sock_path("which");
    let config = Config::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .listen("127.0.0.1:0")
        .unwrap()
        .listen_on(ListenAddr::Unix(path.clone()))
        .loops(2)
        .reuseport(true);
    let server = Server::bind(config).unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(server.listeners().len(), 3);
    let running = server.start(|_| WhichListener).unwrap();
    let line = |s: &mut dyn ReadWrite| {
        s.write_all(b"?").unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(line(&mut connect(addrs[0])), format!("0 {}\n", addrs[0]));
    assert_eq!(line(&mut connect(addrs[1])), format!("1 {}\n", addrs[1]));
    assert_eq!(line(&mut unix_connect(&path)), format!("2 unix:{}\n", path.display()));
    running.shutdown().unwrap();
}

#[test]
fn stale_socket_file_is_replaced_live_one_refused_other_files_kept() {
    // Stale: a listener that went away leaves its file behind.
    let stale = sock_path("stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let s = serve_on(Engine::Reactor, Echo, vec![ListenAddr::Unix(stale.clone())]);
    exchange(&mut unix_connect(&stale), b"ok", b"ok");

    // Live: the server above is listening on it.
    let config = Config::new().listen_on(ListenAddr::Unix(stale.clone())).loops(1);
    let err = Server::bind(config).expect_err("a live socket is refused");
    let msg = err.to_string();
    assert!(msg.contains(&stale.display().to_string()) && msg.contains("listening"), "{msg}");
    exchange(&mut unix_connect(&stale), b"still", b"still");
    s.shutdown().unwrap();

    // Not a socket: never deleted.
    let file = sock_path("regular");
    std::fs::write(&file, b"precious").unwrap();
    let config = Config::new().listen_on(ListenAddr::Unix(file.clone())).loops(1);
    let err = Server::bind(config).expect_err("a regular file is refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn unix_socket_mode_is_applied() {
    let path = sock_path("mode");
    let config = Config {
        unix_mode: Some(0o600),
        ..Config::new().listen_on(ListenAddr::Unix(path.clone()))
    };
    let s = start(Engine::Reactor, Echo, config).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.shutdown().unwrap();
}

/// Skipped (passes without checking) on a machine without an IPv6 loopback, as its name
/// says; it then prints `SKIPPED` on stdout, which `.ci/run` shows (`--nocapture`).
#[test]
fn ipv6_loopback_serves_skipped_without_ipv6() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        println!("SKIPPED ipv6_loopback_serves_skipped_without_ipv6: no IPv6 loopback ({e})");
        return;
    }
    println!("ran ipv6_loopback_serves_skipped_without_ipv6: IPv6 loopback present");
    for engine in [Engine::Reactor, Engine::Std] {
        let s = serve_on(engine, Echo, vec!["[::1]:0".parse().unwrap()]);
        let addr = s.local_addrs()[0];
        assert!(addr.is_ipv6());
        exchange(&mut connect(addr), b"six", b"six");
        s.shutdown().unwrap();
    }
}

fn udp_client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn udp_addr(s: &Served) -> SocketAddr {
    s.listeners()
        .iter()
        .find_map(|l| match l {
            ListenAddr::Udp(a) => Some(*a),
            _ => None,
        })
        .expect("a UDP listener")
}

fn udp_echo_10000(engine: Engine, reuseport: bool) {
    let udp: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config =
        Config { listen: vec![ListenAddr::Udp(udp)], loops: 2, reuseport, ..Config::default() };
    let s = start(engine, Echo, config).unwrap();
    let addr = udp_addr(&s);
    const CLIENTS: usize = 5;
    const EACH: usize = 2000;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            thread::spawn(move || {
                let c = udp_client();
                let mut buf = [0u8; 256];
                for i in 0..EACH {
                    let msg = format!("client {id} datagram {i}");
                    // A lost datagram is retried (UDP may drop); a wrong reply fails.
                    let mut tries = 0;
                    loop {
                        c.send_to(msg.as_bytes(), addr).unwrap();
                        match c.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                assert_eq!(from, addr);
                                assert_eq!(&buf[..n], msg.as_bytes());
                                break;
                            }
                            Err(_) if tries < 3 => tries += 1,
                            Err(e) => panic!("no reply to {msg:?}: {e}"),
                        }
                    }
                }
                EACH
            })
        })
        .collect();
    let matched: usize = clients.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(matched, CLIENTS * EACH);
    if let Some(h) = s.reactor() {
        // A loop counts a reply after sending it, so the client can see the reply first:
        // wait for the counters to catch up instead of reading them once.
        wait_until("every datagram counted in and out", || {
            let t = h.stats().total();
            t.datagrams_in >= (CLIENTS * EACH) as u64
                && t.datagrams_out + t.datagrams_dropped == t.datagrams_in
        });
        let t = h.stats().total();
        assert_eq!((t.accepted, t.open), (0, 0), "UDP has no connections");
    }
    s.shutdown().unwrap();
}

#[test]
fn udp_echo_of_10000_datagrams_reactor_single_socket() {
    udp_echo_10000(Engine::Reactor, false);
}

#[test]
fn udp_echo_of_10000_datagrams_reactor_reuseport() {
    udp_echo_10000(Engine::Reactor, true);
}

#[test]
fn udp_echo_of_10000_datagrams_std() {
    udp_echo_10000(Engine::Std, false);
}

fn udp_redis(engine: Engine) {
    let tcp: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let udp: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let s = serve_on(engine, Redis::default(), vec![ListenAddr::Udp(udp), ListenAddr::Tcp(tcp)]);
    let addr = udp_addr(&s);
    let c = udp_client();
    let ask = |req: &[u8]| -> Vec<u8> {
        c.send_to(req, addr).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    assert_eq!(ask(b"PING\r\n"), b"+PONG\r\n");
    assert_eq!(ask(b"*3\r\n$3\r\nSET\r\n$1\r\nu\r\n$3\r\nudp\r\n"), b"+OK\r\n");
    assert_eq!(ask(b"GET u\r\n"), b"$3\r\nudp\r\n");
    assert_eq!(ask(b"*abc\r\n"), b"-ERR Protocol error: invalid multibulk length\r\n");
    // One keyspace for both listeners.
    exchange(&mut connect(s.local_addrs()[0]), b"GET u\r\n", b"$3\r\nudp\r\n");
    s.shutdown().unwrap();
}

#[test]
fn redis_over_udp_one_command_per_datagram_reactor() {
    udp_redis(Engine::Reactor);
}

#[test]
fn redis_over_udp_one_command_per_datagram_std() {
    udp_redis(Engine::Std);
}

#[test]
fn oversized_datagrams_are_truncated_and_counted() {
    let udp: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config::new().listen_on(ListenAddr::Udp(udp)).loops(1).read_buffer(1024);
    let s = start(Engine::Reactor, Echo, config).unwrap();
    let addr = udp_addr(&s);
    let c = udp_client();
    let big = pattern(3000, 5);
    c.send_to(&big, addr).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &big[..1024], "the first 1024 bytes, echoed");
    c.send_to(b"small", addr).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"small");
    let t = s.reactor().unwrap().stats().total();
    assert_eq!((t.datagrams_in, t.datagrams_truncated), (2, 1));
    s.shutdown().unwrap();
}

#[test]
fn a_taken_udp_port_is_an_error_naming_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = Config::new().listen_on(ListenAddr::Udp(addr)).loops(1);
    let err = start(Engine::Reactor, Echo, config).err().expect("port in use");
    assert!(err.to_string().contains(&format!("udp://{addr}")), "{err}");
}
