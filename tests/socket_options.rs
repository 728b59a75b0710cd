//! Per-connection socket options from the configuration (`--keepalive`,
//! `--keepalive-interval`, `--no-nodelay`, `--recv-buffer`, `--send-buffer`), read back
//! with `getsockopt` on the server's side of an accepted connection: the handler detaches
//! each connection as it opens and hands the socket to the test.

mod common;

use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use common::*;
use evloop::reactor::{Action, Config, Conn, Detached, DetachedStream, EventHandler, Server};
use socket2::SockRef;

struct Hand(Sender<std::net::TcpStream>);

impl EventHandler for Hand {
    type State = ();
    fn opened(&mut self, _: &mut Conn<'_>) -> ((), Action) {
        ((), Action::Detach)
    }
    fn data(&mut self, _: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        (input.len(), Action::None)
    }
    fn detached(&mut self, conn: Detached<()>) {
        if let DetachedStream::Tcp(s) = conn.stream {
            let _ = self.0.send(s);
        }
    }
}

/// The server side of one accepted connection under `config`.
fn accepted(config: Config) -> std::net::TcpStream {
    let (tx, rx) = channel();
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Hand(tx.clone())).unwrap();
    let _client = connect(addr);
    let s = rx.recv_timeout(LIMIT).expect("accepted and detached");
    running.shutdown().unwrap();
    s
}

#[test]
fn defaults_nodelay_on_keepalive_off() {
    let s = accepted(local_config(1));
    let s = SockRef::from(&s);
    assert!(s.tcp_nodelay().unwrap(), "TCP_NODELAY is on by default");
    assert!(!s.keepalive().unwrap(), "keepalive is off by default");
}

#[test]
fn keepalive_nodelay_and_buffer_sizes_are_applied() {
    const RCV: usize = 48 * 1024;
    const SND: usize = 40 * 1024;
    let mut config = local_config(1);
    config.nodelay = false;
    config.keepalive = Some((Duration::from_secs(37), Duration::from_secs(7)));
    config.recv_buffer = Some(RCV);
    config.send_buffer = Some(SND);
    let s = accepted(config);
    let s = SockRef::from(&s);
    assert!(!s.tcp_nodelay().unwrap(), "--no-nodelay");
    assert!(s.keepalive().unwrap(), "SO_KEEPALIVE");
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(37));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(7));
    }
    // Linux reports twice the size asked for (bookkeeping overhead); others the size.
    let (rcv, snd) = (s.recv_buffer_size().unwrap(), s.send_buffer_size().unwrap());
    assert!((RCV..=2 * RCV).contains(&rcv), "SO_RCVBUF {rcv} for {RCV}");
    assert!((SND..=2 * SND).contains(&snd), "SO_SNDBUF {snd} for {SND}");
    // And they differ from what the kernel picks without the options.
    let d = accepted(local_config(1));
    let d = SockRef::from(&d);
    assert_ne!(d.recv_buffer_size().unwrap(), rcv);
    assert_ne!(d.send_buffer_size().unwrap(), snd);
}
