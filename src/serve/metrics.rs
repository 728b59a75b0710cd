//! Prometheus metrics: the text exposition format of the reactor's per-loop counters and
//! the protocol counters ([`ProtoMetrics`]), and the `/metrics` endpoint, served by the
//! bundled HTTP protocol ([`Http`] with an extra route) on a one-loop reactor.
//!
//! Names follow Prometheus conventions: prefix `evloop_`, counters end in `_total`, a
//! `loop` label per event loop (`loop="acceptor"` for the single acceptor's counters).
//! The reactor's fields are listed once, in [`STATS_FAMILIES`].

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::handler::ProtoHandler;
use crate::net::{ListenAddr, ProtoMetrics};
use crate::proto::http::{Http, HttpConfig, RouteReply};
use crate::reactor::{Config, Running, Server, ServerStats, StatsSnapshot};

/// One metric family of the reactor's counters: name (without `evloop_`), type, help,
/// and the field of a [`StatsSnapshot`] it reads.
pub type StatsFamily = (&'static str, &'static str, &'static str, fn(&StatsSnapshot) -> u64);

/// Every reactor counter exported, in exposition order.
pub const STATS_FAMILIES: [StatsFamily; 26] = [
    ("connections_open", "gauge", "Connections open now.", |s| s.open),
    (
        "connections_accepted_total",
        "counter",
        "Connections taken on (loop=\"acceptor\": accepted and handed to a loop, so the same connections appear twice across labels).",
        |s| s.accepted,
    ),
    ("connections_closed_total", "counter", "Connections closed.", |s| s.closed),
    ("connections_rejected_total", "counter", "Connections closed at once by --max-conns.", |s| {
        s.rejected
    }),
    ("bytes_read_total", "counter", "Bytes read from connections.", |s| s.bytes_read),
    ("bytes_written_total", "counter", "Bytes written to connections.", |s| s.bytes_written),
    ("reads_total", "counter", "read calls that returned data or EOF.", |s| s.reads),
    ("writes_total", "counter", "write calls that wrote something.", |s| s.writes),
    ("partial_writes_total", "counter", "Writes the kernel took only part of.", |s| {
        s.partial_writes
    }),
    ("accept_would_block_total", "counter", "accept calls that found no connection.", |s| {
        s.accept_would_block
    }),
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
    (
        "output_limit_closes_total",
        "counter",
        "Connections closed for pending output over --max-output (or the soft limit).",
        |s| s.output_limit_closes,
    ),
    ("handler_panics_total", "counter", "Handler callbacks that panicked.", |s| s.panics),
    ("connects_total", "counter", "Outbound connections made.", |s| s.connects),
    ("connect_errors_total", "counter", "Outbound connects failed.", |s| s.connect_errors),
    ("connect_timeouts_total", "counter", "Outbound connects timed out.", |s| s.connect_timeouts),
    ("links_total", "counter", "Pairs of connections linked.", |s| s.links),
    ("forwarded_bytes_total", "counter", "Bytes moved by linked pairs.", |s| s.forwarded),
    ("spliced_bytes_total", "counter", "Forwarded bytes moved by splice(2).", |s| s.spliced),
    ("tls_handshakes_total", "counter", "TLS handshakes completed (full and resumed).", |s| {
        s.tls_handshakes
    }),
    (
        "tls_handshake_errors_total",
        "counter",
        "TLS connections closed before their handshake completed (TLS error, peer gone, timeout).",
        |s| s.tls_handshake_errors,
    ),
    ("tls_resumed_total", "counter", "TLS handshakes that resumed a session.", |s| s.tls_resumed),
];

/// Renders reactor counters (when given) and protocol counters in the Prometheus text
/// exposition format (version 0.0.4).
pub fn render(stats: Option<&ServerStats>, proto: &ProtoMetrics) -> String {
    let mut out = String::with_capacity(4096);
    if let Some(stats) = stats {
        render_stats(&mut out, stats);
    }
    let p = proto.proto();
    let _ = writeln!(
        out,
        "# HELP evloop_requests_total Requests answered by the protocol.\n# TYPE evloop_requests_total counter"
    );
    for (i, n) in proto.requests_per_loop().into_iter().enumerate() {
        let _ = writeln!(out, "evloop_requests_total{{proto=\"{p}\",loop=\"{i}\"}} {n}");
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

/// Appends the reactor's per-loop counters ([`STATS_FAMILIES`], a `loop` label per
/// loop and `loop="acceptor"` for the acceptor) in the Prometheus text format.
pub fn render_stats(out: &mut String, stats: &ServerStats) {
    let rows: Vec<(String, &StatsSnapshot)> = stats
        .loops
        .iter()
        .enumerate()
        .map(|(i, s)| (i.to_string(), s))
        .chain(stats.acceptor.as_ref().map(|s| ("acceptor".to_string(), s)))
        .collect();
    for (name, kind, help, field) in STATS_FAMILIES {
        let _ = writeln!(out, "# HELP evloop_{name} {help}\n# TYPE evloop_{name} {kind}");
        for (label, s) in &rows {
            let _ = writeln!(out, "evloop_{name}{{loop=\"{label}\"}} {}", field(s));
        }
    }
}

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` (the text `source` returns) on `addr` from a one-loop reactor
/// running the bundled HTTP protocol. Other paths get 404, other methods on `/metrics`
/// 405; each response closes its connection.
pub fn serve(
    addr: SocketAddr,
    source: impl Fn() -> String + Send + Sync + 'static,
) -> io::Result<Running> {
    let config = Config { listen: vec![ListenAddr::Tcp(addr)], loops: 1, ..Config::default() };
    let http = Http::new(HttpConfig::default()).with_routes(move |method, path| {
        let reply = |status, allow, body: Vec<u8>| RouteReply {
            status,
            content_type: CONTENT_TYPE,
            allow,
            body,
            close: true,
        };
        Some(match (method, path) {
            ("GET" | "HEAD", "/metrics") => reply("200 OK", None, source().into_bytes()),
            (_, "/metrics") => reply("405 Method Not Allowed", Some("GET, HEAD"), Vec::new()),
            _ => reply("404 Not Found", None, Vec::new()),
        })
    });
    let metrics = Arc::new(ProtoMetrics::new("metrics", 1));
    Server::bind(config)?
        .start(move |_| ProtoHandler::with_metrics(http.clone(), metrics.clone(), 0))
}
