//! 200 concurrent echo connections over 4 loops, byte-exact, on both engines.

mod common;

use std::thread;

use common::*;
use evloop::proto::echo::Echo;
use evloop::reactor::Balance;
use evloop::serve::{Engine, start};

const CLIENTS: u64 = 200;
const ROUNDS: usize = 20;

fn run(engine: Engine, reuseport: bool, balance: Balance) {
    let config = local_config(4).reuseport(reuseport).balance(balance);
    let server = start(engine, Echo, config).unwrap();
    let addr = server.local_addrs()[0];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            thread::spawn(move || {
                let mut c = connect(addr);
                let mut total = 0;
                for round in 0..ROUNDS {
                    // Sizes from 1 byte to ~40 KiB, different per client and round.
                    let len = 1 + ((id as usize * 7919 + round * 104_729) % 40_000);
                    let msg = pattern(len, id * 1000 + round as u64);
                    send(&mut c, &msg);
                    assert_eq!(read_n(&mut c, len), msg, "client {id} round {round}");
                    total += len;
                }
                total as u64
            })
        })
        .collect();
    let sent: u64 = clients.into_iter().map(|t| t.join().expect("client")).sum();
    if let Some(h) = server.reactor() {
        let s = h.stats();
        assert_eq!(s.total().accepted, CLIENTS);
        assert!(s.loops.iter().all(|l| l.accepted > 0), "all 4 loops served: {:?}", s.loops);
        wait_until("echo bytes counted", || h.stats().total().bytes_written == sent);
    }
    server.shutdown().unwrap();
}

#[test]
fn reactor_round_robin() {
    run(Engine::Reactor, false, Balance::RoundRobin);
}

#[test]
fn reactor_reuseport() {
    run(Engine::Reactor, true, Balance::RoundRobin);
}

#[test]
fn reactor_least_connections() {
    run(Engine::Reactor, false, Balance::LeastConnections);
}

#[test]
fn std_engine() {
    run(Engine::Std, false, Balance::RoundRobin);
}
