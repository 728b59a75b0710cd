//! In-process loopback echo round trips: the latency of one request/reply over a real
//! TCP connection on 127.0.0.1, comparing the two engines on the same `Echo` protocol.
//!
//! For each engine (`reactor`: the event loop with one loop thread; `std`: the std::net
//! thread-per-connection baseline) an echo server is started on `127.0.0.1:0` inside this
//! process and one blocking `std::net::TcpStream` with `TCP_NODELAY` connects to it. One
//! iteration writes a message and reads the whole echo back:
//!
//! - `loopback_echo_6B/{reactor,std}`: 6 bytes out, 6 bytes back (pure round-trip latency:
//!   two syscalls on the client, a wakeup and a read + write on the server);
//! - `loopback_echo_4KiB/{reactor,std}`: 4 KiB out, 4 KiB back; throughput is reported as
//!   the 4 KiB payload per round trip.
//!
//! Client and server share the machine, so on a small VM the numbers include scheduler
//! noise; compare engines within one run. The servers are shut down at the end of each
//! benchmark function.
//!
//! Run with `cargo bench --bench loopback` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use evloop::proto::echo::Echo;
use evloop::reactor::Config;
use evloop::serve::{Engine, Served, start};

/// The engines compared, with their benchmark names.
const ENGINES: [(&str, Engine); 2] = [("reactor", Engine::Reactor), ("std", Engine::Std)];

/// An echo server on `engine` (one loop for the reactor) and a connected client.
fn echo_server(engine: Engine) -> (Served, TcpStream) {
    let config =
        Config::new().listen("127.0.0.1:0").expect("127.0.0.1:0 is a valid address").loops(1);
    let server = start(engine, Echo, config).expect("start the echo server");
    let addr = server.local_addrs()[0];
    let stream = TcpStream::connect(addr).expect("connect to the echo server");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    (server, stream)
}

/// One round trip: writes `msg`, reads exactly as many bytes back into `reply`.
fn round_trip(stream: &mut TcpStream, msg: &[u8], reply: &mut [u8]) {
    stream.write_all(msg).expect("write to the echo server");
    stream.read_exact(reply).expect("read the echo");
}

/// Benchmarks round trips of `msg` against each engine in `group`.
fn bench_engines(group: &mut BenchmarkGroup<'_, WallTime>, msg: &[u8]) {
    for (name, engine) in ENGINES {
        let (server, mut stream) = echo_server(engine);
        let mut reply = vec![0u8; msg.len()];
        // Warm the connection and check the echo once before timing.
        round_trip(&mut stream, msg, &mut reply);
        assert_eq!(reply, msg, "{name} engine must echo the message");
        group.bench_function(name, |b| {
            b.iter(|| {
                round_trip(&mut stream, black_box(msg), &mut reply);
                black_box(&reply);
            })
        });
        // Close the client first, so the std engine's connection thread ends too.
        drop(stream);
        server.shutdown().expect("shut the echo server down");
    }
}

fn loopback(c: &mut Criterion) {
    let mut group = c.benchmark_group("loopback_echo_6B");
    group.throughput(Throughput::Elements(1));
    bench_engines(&mut group, b"hello\n");
    group.finish();

    let msg: Vec<u8> = (0..4096).map(|i| i as u8).collect();
    let mut group = c.benchmark_group("loopback_echo_4KiB");
    group.throughput(Throughput::Bytes(msg.len() as u64));
    bench_engines(&mut group, &msg);
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
