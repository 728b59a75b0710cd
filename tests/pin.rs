//! `Config::pin` (`--pin`): each loop thread is pinned to one CPU, loop `i` to the `i`-th
//! CPU this process may run on (modulo their number). Read back from
//! `/proc/self/task/*/status`. Alone in its test binary, so no other server's loop
//! threads are in the process.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use evloop::proto::echo::Echo;
use evloop::reactor::Server;
use evloop::serve::ProtoHandler;

/// Expands a `Cpus_allowed_list` value such as `0-3,8,10-11`.
fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

fn allowed(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in status");
    cpu_list(line)
}

/// (thread name, allowed CPUs) of every thread of this process named `evloop-loop-*`.
fn loop_threads() -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        let name = comm.trim().to_string();
        if !name.starts_with("evloop-loop-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        v.push((name, allowed(&status)));
    }
    v.sort();
    v
}

#[test]
fn pinned_loops_each_run_on_their_own_cpu() {
    let process = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(!process.is_empty());
    const LOOPS: usize = 3;
    let server = Server::bind(local_config(LOOPS).reuseport(false).pin(true)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| ProtoHandler::new(Echo)).unwrap();
    // Round-robin: three connections reach all three loops, so each has started (and
    // pinned itself before making its handler).
    let mut conns = Vec::new();
    for _ in 0..LOOPS {
        let mut c = connect(addr);
        send(&mut c, b"x");
        assert_eq!(read_n(&mut c, 1), b"x");
        conns.push(c);
    }
    let threads = loop_threads();
    assert_eq!(threads.len(), LOOPS, "{threads:?}");
    for (name, cpus) in &threads {
        let i: usize = name.trim_start_matches("evloop-loop-").parse().unwrap();
        assert_eq!(cpus, &vec![process[i % process.len()]], "{name} affinity");
    }
    running.shutdown().unwrap();

    // Without pin, loop threads keep the process's whole mask.
    let server = Server::bind(local_config(2)).unwrap();
    let running = server.start(|_| ProtoHandler::new(Echo)).unwrap();
    let mut c = connect(running.local_addrs()[0]);
    send(&mut c, b"x");
    assert_eq!(read_n(&mut c, 1), b"x");
    for (name, cpus) in loop_threads() {
        assert_eq!(cpus, process, "{name} unpinned");
    }
    running.shutdown().unwrap();
}
