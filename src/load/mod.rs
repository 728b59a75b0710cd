//! `evloop load`: a load generator whose client connections run on evloop's own reactor.
//!
//! Every connection keeps `pipeline` requests in flight; each reply is parsed and
//! checked (echo and frame byte-exact, HTTP status 2xx, RESP reply type), and its latency
//! recorded in an HDR histogram. A run is a warmup, then the measured duration; only the
//! measured part is reported. The client connections are opened by the loops themselves
//! (the reactor's connect path), at most 256 in flight at once.

mod client;
mod workload;

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Client, MEASURE, STOP, Shared, Tally, WARMUP};
pub(crate) use workload::Workload;

use crate::reactor::{Config, ConnectAddr, Server, ServerHandle};

/// Most connects in flight at once while a run sets up (so a server's listen backlog
/// is not flooded with SYNs it would drop).
const CONNECT_WINDOW: u64 = 256;
/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol a load run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadProto {
    /// Echo `size` bytes.
    Echo,
    /// Frames with `size`-byte payloads.
    Frame,
    /// HTTP GET of `path`.
    Http,
    /// Redis command `redis_command` (`set` values are `size` bytes).
    Redis,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: LoadProto,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Message / value size in bytes (echo, frame, redis set).
    pub size: usize,
    /// Measured duration.
    pub duration: Duration,
    /// Unmeasured warmup before it.
    pub warmup: Duration,
    /// Client loop threads.
    pub threads: usize,
    /// HTTP path.
    pub path: String,
    /// Redis command: ping, set or get.
    pub redis_command: String,
    /// Print a progress line every second to stderr (when it is a terminal).
    pub progress: bool,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Replies received and checked in the measured window.
    pub requests: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Bytes sent / received in the window.
    pub bytes_out: u64,
    /// Bytes received in the window.
    pub bytes_in: u64,
    /// Wrong or unparsable replies.
    pub errors: u64,
    /// Connections that closed before the end.
    pub dropped: u64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub latency_us: [f64; 5],
}

impl Report {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{{\"requests\":{},\"seconds\":{:.3},\"rps\":{:.1},\"mb_out_per_s\":{:.3},\"mb_in_per_s\":{:.3},\
             \"errors\":{},\"dropped\":{},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}}}",
            self.requests,
            self.seconds,
            self.rps(),
            self.bytes_out as f64 / self.seconds / 1e6,
            self.bytes_in as f64 / self.seconds / 1e6,
            self.errors,
            self.dropped,
            l[0],
            l[1],
            l[2],
            l[3],
            l[4]
        )
    }

    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "requests:   {} in {:.2} s = {:.0} req/s",
            self.requests,
            self.seconds,
            self.rps()
        );
        let _ = writeln!(
            s,
            "throughput: {:.2} MB/s out, {:.2} MB/s in",
            self.bytes_out as f64 / self.seconds / 1e6,
            self.bytes_in as f64 / self.seconds / 1e6
        );
        let _ = writeln!(
            s,
            "latency:    p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
            l[0], l[1], l[2], l[3], l[4]
        );
        let _ = write!(
            s,
            "errors:     {} wrong replies, {} connections dropped",
            self.errors, self.dropped
        );
        s
    }
}

/// Opens `cfg.connections` connections on the client loops (connection `i` on loop
/// `i % threads`) with at most [`CONNECT_WINDOW`] in flight, and waits until all are
/// open. The first failure ends it, naming the connection.
fn connect_all(cfg: &LoadConfig, shared: &Shared, handle: &ServerHandle) -> io::Result<()> {
    let total = cfg.connections as u64;
    let done = || {
        shared.connected.load(Ordering::Acquire) + shared.connect_failures.load(Ordering::Acquire)
    };
    let failure = || {
        let mut first = shared.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        first.take().map(|(i, e)| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to {} (connection {}): {e}", cfg.addr, i + 1),
            )
        })
    };
    let stopped = |_| io::Error::other("the client loops have stopped");
    for i in 0..total {
        while i - done().min(i) >= CONNECT_WINDOW {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(e) = failure() {
            return Err(e);
        }
        let to = ConnectAddr::Tcp(cfg.addr);
        handle.connect_on(i as usize, to, Some(CONNECT_TIMEOUT), i).map_err(stopped)?;
    }
    while done() < total {
        std::thread::sleep(Duration::from_millis(1));
    }
    failure().map_or(Ok(()), Err)
}

/// Runs the load and returns the report. Fails when connecting fails or the
/// configuration is impossible (e.g. more connections than descriptors allow).
pub fn run(cfg: &LoadConfig) -> io::Result<Report> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    if cfg.connections == 0 || cfg.pipeline == 0 || cfg.threads == 0 {
        return Err(invalid("connections, pipeline and threads must be at least 1".into()));
    }
    let workload = match cfg.proto {
        LoadProto::Echo => Workload::echo(cfg.size.max(1)),
        LoadProto::Frame => Workload::frame(cfg.size),
        LoadProto::Http => Workload::http(&cfg.path),
        LoadProto::Redis => Workload::redis(&cfg.redis_command, cfg.size).map_err(invalid)?,
    };
    crate::net::limits::raise_nofile(cfg.connections as u64 + 64)?;
    let shared = Arc::new(Shared {
        workload,
        pipeline: cfg.pipeline,
        phase: AtomicU8::new(WARMUP),
        progress: AtomicU64::new(0),
        results: Mutex::new(Vec::new()),
        connected: AtomicU64::new(0),
        connect_failures: AtomicU64::new(0),
        first_failure: Mutex::new(None),
    });
    let server = Server::bind(Config::new().loops(cfg.threads))?;
    let sh = shared.clone();
    let running = server.start(move |_| Client { shared: sh.clone(), tally: Tally::new() })?;
    let handle = running.handle();
    if let Err(e) = connect_all(cfg, &shared, &handle) {
        running.shutdown()?;
        return Err(e);
    }
    std::thread::sleep(cfg.warmup);
    shared.phase.store(MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    let show = cfg.progress && io::stderr().is_terminal();
    let mut last = 0;
    while start.elapsed() < cfg.duration {
        let left = cfg.duration.saturating_sub(start.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(1)));
        if show {
            let now = shared.progress.load(Ordering::Relaxed);
            eprint!("\r{:>6.1}s  {:>10} req/s  ", start.elapsed().as_secs_f64(), now - last);
            let _ = io::stderr().flush();
            last = now;
        }
    }
    shared.phase.store(STOP, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    if show {
        eprintln!();
    }
    running.shutdown()?;
    let mut total = Tally::new();
    for t in shared.results.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        total.merge(t);
    }
    let h = &total.latency_ns;
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(Report {
        requests: total.requests,
        seconds,
        bytes_out: total.bytes_out,
        bytes_in: total.bytes_in,
        errors: total.errors,
        dropped: total.dropped,
        latency_us: [
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
        ],
    })
}
