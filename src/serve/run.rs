//! The lifecycle of `evloop serve`: per-protocol defaults, refusing flags the chosen
//! engine would ignore, warnings for settings that do not apply, raising the open-file
//! limit, the metrics endpoint, the signal thread (first SIGINT/SIGTERM drains, a second
//! exits at once), the stats-logging thread, the ready line, and waiting for the end.
//! Inherited sockets (`--listen fd:N`, `systemd`) are resolved here, before any thread
//! starts ([`crate::net::activation`]); systemd hears `READY=1` with the ready line and
//! `STOPPING=1` at the drain ([`super::notify`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::{Engine, Settings, start};
use crate::net::{ListenAddr, ProtoMetrics};
use crate::proto::Protocol;
use crate::reactor::{Balance, ServerHandle};

/// How long a drain may take when `--drain-timeout` is not given.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// HTTP's header timeout when `--header-timeout` is not given.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the command line asked for beyond [`Settings`]: each `Option` is `None` when the
/// flag was not given (the protocol's or engine's default applies).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--idle-timeout`: `Some(None)` is `off`.
    pub idle_timeout: Option<Option<Duration>>,
    /// `--header-timeout` (HTTP): `Some(None)` is `off`.
    pub header_timeout: Option<Option<Duration>>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<Duration>,
    /// `--balance`.
    pub balance: Option<Balance>,
    /// `--metrics ADDR`.
    pub metrics: Option<SocketAddr>,
    /// `--stats-interval`.
    pub stats_interval: Option<Duration>,
}

/// The default port of a bundled protocol (by [`Protocol::name`]); 5000 for others.
pub fn default_port(proto: &str) -> u16 {
    match proto {
        "http" => 8080,
        "redis" => 6380,
        "frame" => 5001,
        _ => 5000,
    }
}

/// The idle timeout a protocol gets when `--idle-timeout` is not given: 60 s for the
/// request/response protocols (http, redis), none for streams (echo, frame).
pub fn default_idle_timeout(proto: &str) -> Option<Duration> {
    matches!(proto, "http" | "redis").then_some(Duration::from_secs(60))
}

/// Refuses a flag the engine would silently ignore. The error names the flag and the
/// engine. Flags left at their defaults are never refused.
pub fn check_supported(engine: Engine, s: &Settings, flags: &Flags) -> Result<(), String> {
    let caps = engine.capabilities();
    let given = [
        (s.max_conns.is_some(), "--max-conns", caps.max_conns),
        (matches!(flags.idle_timeout, Some(Some(_))), "--idle-timeout", caps.idle_timeout),
        (matches!(flags.header_timeout, Some(Some(_))), "--header-timeout", caps.request_timeout),
        (flags.drain_timeout.is_some(), "--drain-timeout", caps.drain),
        (s.keepalive.is_some(), "--keepalive", caps.keepalive),
        (s.reactor.pin, "--pin", caps.reactor_tuning),
        (flags.balance.is_some(), "--balance", caps.reactor_tuning),
        (s.reuseport, "--reuseport", caps.reuseport),
    ];
    if let Some((_, flag, _)) = given.iter().find(|(given, _, supported)| *given && !supported) {
        return Err(format!(
            "{flag} is not supported by the {engine} engine (it would do nothing there); \
             leave it out or use --engine reactor"
        ));
    }
    Ok(())
}

/// Warnings for settings that are accepted but do not apply to every listener.
fn warn_inapplicable(engine: Engine, s: &Settings, flags: &Flags) {
    if !s.reuseport || !engine.capabilities().reactor_tuning {
        return;
    }
    let unix = s.listen.iter().any(|l| matches!(l, ListenAddr::Unix(_)));
    let inet = s.listen.iter().any(|l| !matches!(l, ListenAddr::Unix(_)));
    if let Some(b) = flags.balance {
        if unix {
            warn!(
                "--balance {b:?} applies to unix: listeners only: with --reuseport the kernel \
                 spreads TCP and UDP connections"
            );
        } else {
            warn!(
                "--balance {b:?} is ignored: with --reuseport the kernel spreads connections \
                 (there is no acceptor to balance)"
            );
        }
    }
    if !inet {
        warn!(
            "--reuseport does not apply to unix: listeners: they are served through the acceptor"
        );
    }
}

/// Serves `proto` on `engine` until SIGINT or SIGTERM: applies the protocol's defaults to
/// what `flags` leaves open, refuses flags the engine would ignore
/// ([`check_supported`]), starts the server, the metrics endpoint and the stats thread,
/// prints the ready line (`evloop: serving ...`) on stderr, and waits. Errors are one
/// line, for the command line to print.
pub fn run<P: Protocol>(
    engine: Engine,
    proto: P,
    mut settings: Settings,
    flags: Flags,
) -> Result<(), String> {
    check_supported(engine, &settings, &flags)?;
    let name = proto.name();
    if matches!(flags.header_timeout, Some(Some(_))) && name != "http" {
        return Err(format!("--header-timeout applies to --proto http only, not {name}"));
    }
    let caps = engine.capabilities();
    if settings.listen.is_empty() {
        let addr = SocketAddr::from(([127, 0, 0, 1], default_port(name)));
        settings.listen.push(ListenAddr::Tcp(addr));
    }
    // `fd:N` and `systemd`: the inherited sockets, inspected (LISTEN_* are unset: no
    // thread of ours runs yet).
    if settings.listen.iter().any(|l| matches!(l, ListenAddr::Fd(_) | ListenAddr::Systemd)) {
        if engine.name() == "tokio" {
            return Err(
                "inherited sockets (--listen fd:N, systemd) are not supported by the tokio \
                 engine; use --engine reactor or std"
                    .into(),
            );
        }
        settings.listen =
            crate::net::activation::resolve(std::mem::take(&mut settings.listen), true)
                .map_err(|e| e.to_string())?;
    }
    if settings.reactor.low_watermark > settings.reactor.high_watermark {
        return Err("--low-watermark must not exceed --high-watermark".into());
    }
    if caps.idle_timeout {
        settings.idle_timeout = flags.idle_timeout.unwrap_or_else(|| default_idle_timeout(name));
    }
    if caps.request_timeout && name == "http" {
        settings.request_timeout = flags.header_timeout.unwrap_or(Some(DEFAULT_HEADER_TIMEOUT));
    }
    if let Some(b) = flags.balance {
        settings.reactor.balance = b;
    }
    warn_inapplicable(engine, &settings, &flags);
    match crate::net::limits::raise_nofile_to_hard() {
        Ok(n) => debug!("open-file limit: {n}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }

    let served = start(engine, proto, settings.clone()).map_err(|e| e.to_string())?;
    let counters = Counters { proto: served.proto_metrics().clone(), reactor: served.reactor() };
    let metrics = match flags.metrics {
        Some(addr) => {
            let c = counters.clone();
            let m = super::metrics::serve(addr, move || c.render()).map_err(|e| e.to_string())?;
            info!("metrics at http://{}/metrics", m.local_addrs()[0]);
            Some(m)
        }
        None => None,
    };
    let stop = served.stop_handle();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let drain_timeout = flags.drain_timeout.unwrap_or(DEFAULT_DRAIN);
    std::thread::Builder::new()
        .name("evloop-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    error!("second signal {sig}: exiting at once");
                    std::process::exit(1);
                }
                super::notify::stopping();
                if caps.drain {
                    info!(
                        "signal {sig}: draining (up to {drain_timeout:?}); signal again to exit at once"
                    );
                    stop.drain(drain_timeout);
                } else {
                    info!("signal {sig}: stopping (the {engine} engine does not drain)");
                    stop.stop();
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    if let Some(every) = flags.stats_interval {
        let c = counters.clone();
        std::thread::Builder::new()
            .name("evloop-stats".into())
            .spawn(move || c.log_every(every))
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    let addrs: Vec<String> = served.listeners().iter().map(|a| a.to_string()).collect();
    eprintln!("evloop: serving {name} on {} ({})", addrs.join(", "), engine.describe(&settings));
    super::notify::ready(&format!("serving {name} on {}", addrs.join(", ")));
    let result = served.wait().map_err(|e| e.to_string());
    if let Some(m) = metrics
        && let Err(e) = m.shutdown()
    {
        debug!("metrics endpoint: {e}");
    }
    signal_handle.close();
    result
}

/// The counters the metrics endpoint and the stats line read.
#[derive(Clone)]
struct Counters {
    proto: Arc<ProtoMetrics>,
    reactor: Option<ServerHandle>,
}

impl Counters {
    fn render(&self) -> String {
        super::metrics::render(self.reactor.as_ref().map(|h| h.stats()).as_ref(), &self.proto)
    }

    /// Logs a one-line summary every `every` (runs until the process exits).
    fn log_every(&self, every: Duration) {
        let mut last = (Instant::now(), 0u64, 0u64, 0u64);
        loop {
            std::thread::sleep(every);
            let requests = self.proto.requests();
            let now = Instant::now();
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
            let rate = requests.saturating_sub(last.1) as f64 / secs;
            let t = self.reactor.as_ref().map(|h| h.stats().total()).unwrap_or_default();
            match &self.reactor {
                Some(_) => info!(
                    "stats: {} open, {} accepted, {} rejected, {rate:.0} req/s, {:.2} MB/s in, {:.2} MB/s out",
                    t.open,
                    t.accepted,
                    t.rejected,
                    t.bytes_read.saturating_sub(last.2) as f64 / secs / 1e6,
                    t.bytes_written.saturating_sub(last.3) as f64 / secs / 1e6,
                ),
                None => info!("stats: {rate:.0} req/s"),
            }
            last = (now, requests, t.bytes_read, t.bytes_written);
        }
    }
}
