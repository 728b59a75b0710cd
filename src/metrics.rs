//! Prometheus metrics: protocol counters, the text exposition format, and a `/metrics`
//! endpoint served by the reactor itself.
//!
//! Names follow Prometheus conventions: prefix `evloop_`, counters end in `_total`, a
//! `loop` label per event loop (`loop="acceptor"` for the single acceptor's counters).

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::reactor::{
    Action, Config, Conn, EventHandler, ListenAddr, Running, Server, ServerStats, StatsSnapshot,
};

/// A counter alone on its cache lines (two, for the adjacent-line prefetcher).
#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Protocol-level counters of one server: requests answered per loop and protocol
/// errors by kind. Shared by all loops; each loop writes only its own request counter,
/// and errors (rare) take a lock.
#[derive(Debug)]
pub struct ProtoMetrics {
    proto: &'static str,
    /// One counter per loop, each on its own cache lines: loops never share a line.
    requests: Vec<Padded>,
    errors: Mutex<Vec<(&'static str, u64)>>,
}

impl ProtoMetrics {
    /// Counters for protocol `proto` on `loops` loops (or threads: the std engine uses
    /// slot 0 for all of them).
    pub fn new(proto: &'static str, loops: usize) -> Self {
        ProtoMetrics {
            proto,
            requests: (0..loops.max(1)).map(|_| Padded(AtomicU64::new(0))).collect(),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Counts `n` requests answered on loop `id`.
    #[inline]
    pub fn add_requests(&self, id: usize, n: u64) {
        if n > 0 {
            self.requests[id % self.requests.len()].0.fetch_add(n, Relaxed);
        }
    }

    /// Counts one protocol error of `kind` (e.g. `"bad_request"`).
    pub fn add_error(&self, kind: &'static str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => errors.push((kind, 1)),
        }
    }

    /// Requests answered, summed over loops.
    pub fn requests(&self) -> u64 {
        self.requests.iter().map(|r| r.0.load(Relaxed)).sum()
    }

    /// Protocol errors by kind, sorted by kind.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        e.sort();
        e
    }
}

/// Renders reactor counters (when given) and protocol counters in the Prometheus text
/// exposition format (version 0.0.4).
pub fn render(stats: Option<&ServerStats>, proto: &ProtoMetrics) -> String {
    let mut out = String::with_capacity(4096);
    if let Some(stats) = stats {
        let rows: Vec<(String, &StatsSnapshot)> = stats
            .loops
            .iter()
            .enumerate()
            .map(|(i, s)| (i.to_string(), s))
            .chain(stats.acceptor.as_ref().map(|s| ("acceptor".to_string(), s)))
            .collect();
        type Field = fn(&StatsSnapshot) -> u64;
        let families: [(&str, &str, &str, Field); 16] = [
            ("connections_open", "gauge", "Connections open now.", |s| s.open),
            ("connections_accepted_total", "counter", "Connections taken on.", |s| s.accepted),
            ("connections_closed_total", "counter", "Connections closed.", |s| s.closed),
            (
                "connections_rejected_total",
                "counter",
                "Connections closed at once by --max-conns.",
                |s| s.rejected,
            ),
            ("bytes_read_total", "counter", "Bytes read from connections.", |s| s.bytes_read),
            ("bytes_written_total", "counter", "Bytes written to connections.", |s| {
                s.bytes_written
            }),
            ("reads_total", "counter", "read calls that returned data or EOF.", |s| s.reads),
            ("writes_total", "counter", "write calls that wrote something.", |s| s.writes),
            ("partial_writes_total", "counter", "Writes the kernel took only part of.", |s| {
                s.partial_writes
            }),
            (
                "accept_would_block_total",
                "counter",
                "accept calls that found no connection.",
                |s| s.accept_would_block,
            ),
            ("accept_errors_total", "counter", "accept calls that failed.", |s| s.accept_errors),
            ("poll_iterations_total", "counter", "Returns from the poller.", |s| s.poll_iterations),
            ("wakeups_total", "counter", "Times the loop's waker fired.", |s| s.wakeups),
            ("idle_timeouts_total", "counter", "Connections closed by the idle timeout.", |s| {
                s.idle_timeouts
            }),
            (
                "request_timeouts_total",
                "counter",
                "Connections closed by the request/header timeout.",
                |s| s.request_timeouts,
            ),
            ("handler_panics_total", "counter", "Handler callbacks that panicked.", |s| s.panics),
        ];
        for (name, kind, help, field) in families {
            let _ = writeln!(out, "# HELP evloop_{name} {help}\n# TYPE evloop_{name} {kind}");
            for (label, s) in &rows {
                let _ = writeln!(out, "evloop_{name}{{loop=\"{label}\"}} {}", field(s));
            }
        }
    }
    let p = proto.proto;
    let _ = writeln!(
        out,
        "# HELP evloop_requests_total Requests answered by the protocol.\n# TYPE evloop_requests_total counter"
    );
    for (i, r) in proto.requests.iter().enumerate() {
        let _ = writeln!(
            out,
            "evloop_requests_total{{proto=\"{p}\",loop=\"{i}\"}} {}",
            r.0.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP evloop_protocol_errors_total Protocol errors (each answered and closed).\n# TYPE evloop_protocol_errors_total counter"
    );
    for (kind, n) in proto.errors() {
        let _ = writeln!(out, "evloop_protocol_errors_total{{proto=\"{p}\",kind=\"{kind}\"}} {n}");
    }
    out
}

/// Serves `GET /metrics` (the text `source` returns) on `addr` from a one-loop reactor.
/// Other paths get 404; each response closes its connection.
pub fn serve(
    addr: std::net::SocketAddr,
    source: impl Fn() -> String + Send + Sync + 'static,
) -> io::Result<Running> {
    let config = Config { listen: vec![ListenAddr::Tcp(addr)], loops: 1, ..Config::default() };
    let source = Arc::new(source);
    Server::bind(config)?.start(move |_| MetricsHandler { source: source.clone() })
}

/// Most bytes of request head the metrics endpoint reads before answering 431.
const MAX_HEAD: usize = 8192;

struct MetricsHandler {
    source: Arc<dyn Fn() -> String + Send + Sync>,
}

impl EventHandler for MetricsHandler {
    type State = ();

    fn opened(&mut self, _: &mut Conn<'_>) -> ((), Action) {
        ((), Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let (status, body) = match req.parse(input) {
            Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return (0, Action::None),
            Ok(httparse::Status::Partial) => ("431 Request Header Fields Too Large", String::new()),
            Err(_) => ("400 Bad Request", String::new()),
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                match (req.method, path) {
                    (Some("GET") | Some("HEAD"), "/metrics") => ("200 OK", (self.source)()),
                    (_, "/metrics") => ("405 Method Not Allowed", String::new()),
                    _ => ("404 Not Found", String::new()),
                }
            }
        };
        let head = req.method == Some("HEAD");
        let _ = write!(
            Out(conn),
            "HTTP/1.1 {status}\r\nServer: evloop\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if head { "" } else { &body }
        );
        (input.len(), Action::Close)
    }
}

/// `fmt::Write` into a connection's output.
struct Out<'a, 'b>(&'a mut Conn<'b>);

impl std::fmt::Write for Out<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}
