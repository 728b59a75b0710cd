//! How the single acceptor spreads connections (`--balance`): least-connections follows
//! the open counts (a round-robin acceptor fails it), source-hash keeps one client host
//! on one loop.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use common::*;
use evloop::proto::echo::Echo;
use evloop::reactor::{Balance, Server, ServerHandle};
use evloop::serve::ProtoHandler;

const LOOPS: usize = 3;

fn server(balance: Balance) -> (evloop::reactor::Running, SocketAddr, ServerHandle) {
    let server = Server::bind(local_config(LOOPS).reuseport(false).balance(balance)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| ProtoHandler::new(Echo)).unwrap();
    let h = running.handle();
    (running, addr, h)
}

/// Opens a connection (from `from`, when given), waits until it is served, and returns it
/// with the loop that took it.
fn open(h: &ServerHandle, addr: SocketAddr, from: Option<IpAddr>) -> (TcpStream, usize) {
    let before = h.stats();
    let mut c = match from {
        None => connect(addr),
        Some(ip) => {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            sock.bind(&SocketAddr::new(ip, 0).into()).expect("bind a loopback source");
            sock.connect(&addr.into()).expect("connect");
            let s: TcpStream = sock.into();
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            s
        }
    };
    send(&mut c, b"hi");
    assert_eq!(read_n(&mut c, 2), b"hi");
    let after = h.stats();
    let took: Vec<usize> =
        (0..LOOPS).filter(|&l| after.loops[l].accepted > before.loops[l].accepted).collect();
    assert_eq!(took.len(), 1, "one loop took the connection: {took:?}");
    (c, took[0])
}

#[test]
fn least_connections_picks_the_emptiest_loop() {
    let (running, addr, h) = server(Balance::LeastConnections);
    let mut conns: Vec<(TcpStream, usize)> = (0..LOOPS).map(|_| open(&h, addr, None)).collect();
    let mut per_loop: Vec<usize> = conns.iter().map(|c| c.1).collect();
    per_loop.sort_unstable();
    assert_eq!(per_loop, (0..LOOPS).collect::<Vec<_>>(), "one connection per loop");
    // Empty loops 2, 1, 0 in turn: each time the next connection must go to the loop just
    // emptied. Round-robin (0, 1, 2, ...) cannot follow a descending order.
    for emptied in (0..LOOPS).rev() {
        let at = conns.iter().position(|c| c.1 == emptied).expect("a connection on the loop");
        drop(conns.swap_remove(at));
        wait_until("the close is seen", || h.stats().loops[emptied].open == 0);
        let (c, took) = open(&h, addr, None);
        assert_eq!(
            took, emptied,
            "new connection went to loop {took}, not the empty loop {emptied}"
        );
        conns.push((c, took));
    }
    drop(conns);
    running.shutdown().unwrap();
}

#[test]
fn source_hash_keeps_a_host_on_one_loop() {
    let (running, addr, h) = server(Balance::SourceHash);
    let mut keep = Vec::new();
    let mut loops_used = std::collections::BTreeSet::new();
    for host in 1..=20u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        let (c, first) = open(&h, addr, Some(ip));
        keep.push(c);
        for _ in 0..3 {
            let (c, again) = open(&h, addr, Some(ip));
            assert_eq!(again, first, "{ip}: connections on loops {first} and {again}");
            keep.push(c);
        }
        loops_used.insert(first);
    }
    // A hash, not a constant: 20 hosts do not all land on one loop.
    assert!(loops_used.len() > 1, "20 source addresses all on loops {loops_used:?}");
    drop(keep);
    running.shutdown().unwrap();
}
