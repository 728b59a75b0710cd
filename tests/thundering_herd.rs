//! evio bug 2: one listening socket registered in every loop wakes every loop for each
//! connection (thundering herd). With 4 loops, both with SO_REUSEPORT listeners and with
//! the single acceptor, connections are opened one at a time and each is served (an
//! echo round trip) before the next: between two connections, only the loop that took
//! the connection may have returned from its poller. A listener shared by all loops
//! wakes the other three for every connection, so their poll iterations rise about three
//! times per connection; with one listener per loop (or the acceptor handing each
//! connection to one loop) they do not rise at all.

mod common;

use std::time::Duration;

use common::*;
use evloop::reactor::{Action, Conn, EventHandler, Server};

/// Echo with no timer: a loop of this server returns from its poller only for socket
/// events and wakes (the protocol adapter's once-a-second tick would add iterations).
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

const CONNS: usize = 60;
const LOOPS: usize = 4;

fn run(reuseport: bool) {
    let server = Server::bind(local_config(LOOPS).reuseport(reuseport)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Echo).unwrap();
    let h = running.handle();
    assert_eq!(h.stats().acceptor.is_some(), !reuseport);
    #[cfg(target_os = "linux")]
    {
        let regs = epoll_registrations_of_listeners(addr.port());
        let want = if reuseport { LOOPS } else { 1 };
        assert_eq!(regs.len(), want, "listening sockets on the port: {regs:?}");
        assert!(
            regs.values().all(|&n| n == 1),
            "each listening socket must be in exactly one poller; (inode, pollers): {regs:?}"
        );
    }
    // Let every loop reach its first blocking poll.
    std::thread::sleep(Duration::from_millis(100));

    let mut open = Vec::with_capacity(CONNS);
    // Poll iterations of loops that did not take the connection of their window.
    let mut foreign = 0u64;
    let mut takers = vec![0usize; LOOPS];
    let mut before = h.stats();
    for i in 0..CONNS {
        let mut c = connect(addr);
        send(&mut c, b"ping");
        assert_eq!(read_n(&mut c, 4), b"ping", "connection {i} served");
        open.push(c);
        let after = h.stats();
        let took: Vec<usize> =
            (0..LOOPS).filter(|&l| after.loops[l].accepted > before.loops[l].accepted).collect();
        assert_eq!(took.len(), 1, "connection {i} taken by exactly one loop: {took:?}");
        let taker = took[0];
        takers[taker] += 1;
        for l in (0..LOOPS).filter(|&l| l != taker) {
            foreign += after.loops[l].poll_iterations - before.loops[l].poll_iterations;
        }
        before = after;
    }
    // A late herd wake-up of the last connection still counts.
    std::thread::sleep(Duration::from_millis(100));
    let end = h.stats();
    for l in 0..LOOPS {
        foreign += end.loops[l].poll_iterations - before.loops[l].poll_iterations;
    }
    let accepted: u64 = end.loops.iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, CONNS as u64, "each connection taken by exactly one loop");
    if !reuseport {
        // Round-robin hands each loop the same share.
        assert_eq!(takers, vec![CONNS / LOOPS; LOOPS]);
        let empty = end.acceptor.expect("acceptor stats").accept_would_block;
        assert!(empty <= CONNS as u64, "{empty} empty accepts by the acceptor for {CONNS}");
    }
    // Loops never woken for connections they did not take: exactly 0 expected; a
    // shared listener gives about (LOOPS - 1) per connection.
    assert!(
        foreign <= (CONNS / 20) as u64,
        "{foreign} poll iterations in loops that did not take the connection \
         ({CONNS} connections, taken {takers:?}): loops are woken by a listener they share"
    );
    let loop_empty: u64 = end.loops.iter().map(|s| s.accept_would_block).sum();
    if !reuseport {
        assert_eq!(loop_empty, 0, "loops never call accept without reuseport");
    }
    drop(open);
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

/// For each listening TCP socket on `port` (by inode), the number of epoll instances of
/// this process that have it registered.
#[cfg(target_os = "linux")]
fn epoll_registrations_of_listeners(port: u16) -> std::collections::BTreeMap<u64, usize> {
    let mut regs = std::collections::BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                regs.insert(inode.parse::<u64>().expect("inode"), 0);
            }
        }
    }
    let fds = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    for fd in fds.flatten() {
        let is_epoll = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        // Another test's poller may close meanwhile: skip what cannot be read.
        let info_path = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(info_path) else { continue };
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let ino = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if let Some(n) = ino.and_then(|i| regs.get_mut(&i)) {
                *n += 1;
            }
        }
    }
    regs
}
