//! evio bug 2: one listening socket registered in every loop wakes every loop for each
//! connection (thundering herd). With 4 loops, both with SO_REUSEPORT listeners and with
//! the single acceptor, 1,000 connections are each taken by exactly one loop, and the
//! accept calls that found nothing stay within connections + loops (a shared listener
//! would give about three empty accepts per connection).

mod common;

use common::*;
use evloop::proto::echo::Echo;
use evloop::reactor::Server;
use evloop::serve::ProtoHandler;

const CONNS: u64 = 1000;
const LOOPS: usize = 4;

fn run(reuseport: bool) {
    let server = Server::bind(local_config(LOOPS).reuseport(reuseport)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| ProtoHandler::new(Echo)).unwrap();
    let h = running.handle();
    for i in 0..CONNS {
        let mut c = connect(addr);
        if i % 100 == 0 {
            // Prove the connection is served, not just accepted.
            send(&mut c, b"ping");
            assert_eq!(read_n(&mut c, 4), b"ping");
        }
    }
    wait_until("all connections accepted", || total(&h).accepted == CONNS);
    let stats = h.stats();
    let per_loop: Vec<u64> = stats.loops.iter().map(|s| s.accepted).collect();
    assert_eq!(per_loop.iter().sum::<u64>(), CONNS, "each connection taken by exactly one loop");
    assert_eq!(stats.acceptor.is_some(), !reuseport);
    if reuseport {
        assert!(per_loop.iter().all(|&n| n > 0), "kernel spreads over all listeners: {per_loop:?}");
    } else {
        // Round-robin hands each loop exactly a quarter.
        assert_eq!(per_loop, vec![CONNS / LOOPS as u64; LOOPS]);
    }
    let empty = stats.total().accept_would_block;
    assert!(
        empty <= CONNS + LOOPS as u64,
        "{empty} empty accepts for {CONNS} connections: loops woken for connections they did not get"
    );
    running.shutdown().unwrap();
}

#[test]
fn reuseport_listeners_no_herd() {
    run(true);
}

#[test]
fn single_acceptor_no_herd() {
    run(false);
}
