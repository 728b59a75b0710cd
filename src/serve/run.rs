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
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::{Engine, Settings, start};
use crate::net::{ListenAddr, ProtoMetrics};
use crate::proto::Protocol;
use crate::reactor::{Balance, ServerHandle};

/// How long a drain may take when `--drain-timeout` is not given.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// HTTP's header timeout when `--header-timeout` is not given.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP's body timeout (between reads of a request body) when `--body-timeout` is not
/// given.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the command line asked for beyond [`Settings`]: each `Option` is `None` when the
/// flag was not given (the protocol's or engine's default applies).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--idle-timeout`: `Some(None)` is `off`.
    pub idle_timeout: Option<Option<Duration>>,
    /// `--header-timeout` (HTTP): `Some(None)` is `off`.
    pub header_timeout: Option<Option<Duration>>,
    /// `--body-timeout` (HTTP): `Some(None)` is `off`.
    pub body_timeout: Option<Option<Duration>>,
    /// `--max-output`: `Some(None)` is `off`; not given: [`Settings::max_output`] as is.
    pub max_output: Option<Option<usize>>,
    /// `--max-output-soft` and its period.
    pub max_output_soft: Option<(usize, Duration)>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<Duration>,
    /// `--balance`.
    pub balance: Option<Balance>,
    /// `--metrics ADDR`.
    pub metrics: Option<SocketAddr>,
    /// `--stats-interval`.
    pub stats_interval: Option<Duration>,
    /// `--config FILE`: re-reads it on SIGHUP ([`super::reload`]).
    pub reread: Option<super::reload::Rereader>,
}

/// The default port of a bundled protocol (by [`Protocol::name`]); 5000 for others.
pub fn default_port(proto: &str) -> u16 {
    match proto {
        "http" => 8080,
        "redis" => 6380,
        "frame" => 5001,
        "mqtt" => super::mqtt::DEFAULT_PORT,
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
    if s.tls.is_some() && !caps.tls {
        return Err(super::tls_unsupported(engine));
    }
    let given = [
        (s.max_conns.is_some(), "--max-conns", caps.max_conns),
        (matches!(flags.idle_timeout, Some(Some(_))), "--idle-timeout", caps.idle_timeout),
        (matches!(flags.header_timeout, Some(Some(_))), "--header-timeout", caps.request_timeout),
        (matches!(flags.body_timeout, Some(Some(_))), "--body-timeout", caps.request_timeout),
        (flags.drain_timeout.is_some(), "--drain-timeout", caps.drain),
        (flags.max_output.is_some(), "--max-output", caps.output_limit),
        (flags.max_output_soft.is_some(), "--max-output-soft", caps.output_soft_limit),
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

/// The std engine holds a thread and a descriptor per connection: says how many this
/// machine's limits allow, as a warning when `--max-conns` asks for more (connections
/// beyond it would fail: accepts with EMFILE, or thread spawns with EAGAIN).
fn warn_std_capacity(max_conns: Option<usize>) {
    let Some((cap, by)) = crate::engines::std::capacity() else { return };
    match max_conns {
        Some(max) if max as u64 > cap => warn!(
            "--max-conns {max} is more than the std engine can hold here: about {cap} \
             connections (a thread and a descriptor each), limited by {by}"
        ),
        Some(_) => {}
        None => info!(
            "the std engine can hold about {cap} connections here (a thread and a descriptor \
             each), limited by {by}; --max-conns refuses beyond a bound of your choice"
        ),
    }
}

/// Serves `proto` on `engine` until SIGINT or SIGTERM: applies the protocol's defaults to
/// what `flags` leaves open and refuses flags the engine would ignore ([`prepare`]),
/// starts the server, then hands it to the [`Lifecycle`] ([`lifecycle`]: metrics
/// endpoint, signals, stats thread, the ready line on stderr) and waits. Errors are one
/// line, for the command line to print.
pub fn run<P: Protocol>(
    engine: Engine,
    proto: P,
    mut settings: Settings,
    flags: Flags,
) -> Result<(), String> {
    let name = proto.name();
    prepare(engine, name, &mut settings, &flags)?;
    let served = start(engine, proto, settings.clone()).map_err(|e| e.to_string())?;
    let mut counters = Counters::new(Some(served.proto_metrics().clone()), served.reactor());
    if let Some(c) = settings.reactor.capture.clone() {
        counters = counters.with_extra(move |out| c.render(out));
    }
    let ready = ready_line(engine, name, &settings, &served.listeners());
    let result = lifecycle(engine, &settings, &flags, served.stop_handle(), counters)
        .run(&ready, || served.wait());
    if let Some(c) = &settings.reactor.capture {
        super::capture::finish_and_log(c);
    }
    result
}

/// What every protocol's `evloop serve` does before it starts its server (shared by
/// [`run`] and [`super::mqtt::run`]): refuses flags the engine would ignore
/// ([`check_supported`]) and the HTTP-only timeouts elsewhere, defaults the listen
/// address to the protocol's port ([`default_port`]), resolves inherited sockets
/// (`fd:N`, `systemd`; LISTEN_* are unset: no thread of ours runs yet), applies the
/// protocol's timeouts and the output limits, warns about settings that do not apply,
/// and raises the open-file limit.
pub fn prepare(
    engine: Engine,
    name: &str,
    settings: &mut Settings,
    flags: &Flags,
) -> Result<(), String> {
    check_supported(engine, settings, flags)?;
    for (given, flag) in [
        (matches!(flags.header_timeout, Some(Some(_))), "--header-timeout"),
        (matches!(flags.body_timeout, Some(Some(_))), "--body-timeout"),
    ] {
        if given && name != "http" {
            return Err(format!("{flag} applies to --proto http only, not {name}"));
        }
    }
    let caps = engine.capabilities();
    if settings.listen.is_empty() {
        let addr = SocketAddr::from(([127, 0, 0, 1], default_port(name)));
        settings.listen.push(ListenAddr::Tcp(addr));
    }
    if settings.listen.iter().any(|l| matches!(l, ListenAddr::Fd(_) | ListenAddr::Systemd)) {
        if engine.name() == "tokio" {
            return Err(
                "inherited sockets (--listen fd:N, systemd) are not supported by the tokio \
                 engine; use --engine reactor or std"
                    .into(),
            );
        }
        // One address at a time, so that the `tls://` listeners' positions follow the
        // listen list as `systemd` grows it (one entry, every socket passed).
        let mut resolved = Vec::with_capacity(settings.listen.len());
        let mut position = Vec::with_capacity(settings.listen.len());
        let mut systemd = false;
        for addr in std::mem::take(&mut settings.listen) {
            position.push(resolved.len());
            if matches!(addr, ListenAddr::Systemd) && std::mem::replace(&mut systemd, true) {
                continue;
            }
            resolved.extend(
                crate::net::activation::resolve(vec![addr], true).map_err(|e| e.to_string())?,
            );
        }
        settings.listen = resolved;
        if let Some(tls) = settings.tls.as_mut() {
            tls.listeners = tls.listeners.iter().map(|&i| position[i]).collect();
        }
    }
    if settings.reactor.low_watermark > settings.reactor.high_watermark {
        return Err("--low-watermark must not exceed --high-watermark".into());
    }
    if caps.idle_timeout {
        settings.idle_timeout = flags.idle_timeout.unwrap_or_else(|| default_idle_timeout(name));
    }
    if caps.request_timeout && name == "http" {
        settings.request_timeout = flags.header_timeout.unwrap_or(Some(DEFAULT_HEADER_TIMEOUT));
        settings.body_timeout = flags.body_timeout.unwrap_or(Some(DEFAULT_BODY_TIMEOUT));
    }
    if let Some(b) = flags.balance {
        settings.reactor.balance = b;
    }
    if let Some(max) = flags.max_output {
        settings.max_output = max;
    }
    if flags.max_output_soft.is_some() {
        settings.max_output_soft = flags.max_output_soft;
    }
    warn_inapplicable(engine, settings, flags);
    raise_nofile();
    if engine == Engine::Std {
        warn_std_capacity(settings.max_conns);
    }
    Ok(())
}

/// The ready line of `evloop serve`: `evloop: serving NAME on ADDR, ... (ENGINE)`, the
/// `listeners` as bound (ports resolved), `tls://` before those that speak TLS.
pub fn ready_line(
    engine: Engine,
    name: &str,
    settings: &Settings,
    listeners: &[ListenAddr],
) -> String {
    let addrs: Vec<String> = listeners
        .iter()
        .enumerate()
        .map(|(i, a)| match &settings.tls {
            Some(t) if t.is_tls(i) => format!("tls://{a}"),
            _ => a.to_string(),
        })
        .collect();
    format!("evloop: serving {name} on {} ({})", addrs.join(", "), engine.describe(settings))
}

/// The [`Lifecycle`] of a started `evloop serve` server: drains when the engine can
/// (within `--drain-timeout`), the metrics endpoint and stats line as `flags` ask, over
/// `counters`, and SIGHUP reloading the TLS certificate when TLS is on ([`tls_reload`]).
pub fn lifecycle(
    engine: Engine,
    settings: &Settings,
    flags: &Flags,
    stop: super::StopHandle,
    counters: Counters,
) -> Lifecycle {
    Lifecycle {
        stop,
        drains: engine.capabilities().drain,
        engine: engine.name(),
        drain_timeout: flags.drain_timeout.unwrap_or(DEFAULT_DRAIN),
        metrics: flags.metrics,
        stats_interval: flags.stats_interval,
        counters,
        hangup: match flags.reread.clone() {
            Some(r) => Some(super::reload::config_hangup(settings, r, None)),
            None => tls_reload(settings, None),
        },
    }
}

/// The SIGHUP hook for `settings`: re-reads the TLS certificate and key when TLS is on
/// (new connections use them; a failed reload keeps the old ones), then runs `other`
/// (another hook, e.g. the proxy's configuration reload) when one is given. `None` when
/// there is nothing to do (SIGHUP then keeps its default action).
pub fn tls_reload(
    settings: &Settings,
    other: Option<Box<dyn FnMut() + Send>>,
) -> Option<Box<dyn FnMut() + Send>> {
    let Some(tls) = settings.tls.as_ref().map(|t| t.config.clone()) else {
        return other;
    };
    let mut other = other;
    Some(Box::new(move || {
        match tls.reload() {
            Ok(()) => info!("SIGHUP: TLS certificate and key reloaded; new connections use them"),
            Err(e) => error!("SIGHUP: TLS reload failed, keeping the old ones: {e}"),
        }
        if let Some(h) = other.as_mut() {
            h();
        }
    }))
}

/// Raises the open-file limit to the hard limit (a server's first step); a failure is
/// only a warning.
pub fn raise_nofile() {
    match crate::net::limits::raise_nofile_to_hard() {
        Ok(n) => debug!("open-file limit: {n}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Everything around a started server until it stops, shared by `evloop serve` and
/// `evloop proxy`: the metrics endpoint, the signal thread (the first SIGINT/SIGTERM
/// drains, or stops an engine that cannot drain; a second exits at once; SIGHUP calls
/// [`hangup`](Self::hangup) when one is given, and keeps its default action otherwise),
/// the stats-logging thread, and the ready line on stderr. Under systemd
/// (`NOTIFY_SOCKET`) the ready line goes out as `READY=1` and the first SIGINT/SIGTERM as
/// `STOPPING=1` ([`super::notify`]).
pub struct Lifecycle {
    /// Stops or drains the server.
    pub stop: super::StopHandle,
    /// Whether the engine drains (else a signal stops it at once).
    pub drains: bool,
    /// The engine's name, for log lines.
    pub engine: &'static str,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// `--metrics ADDR`.
    pub metrics: Option<SocketAddr>,
    /// `--stats-interval`.
    pub stats_interval: Option<Duration>,
    /// What the metrics endpoint and the stats line read.
    pub counters: Counters,
    /// Called on the signal thread for each SIGHUP (e.g. a reload).
    pub hangup: Option<Box<dyn FnMut() + Send>>,
}

impl Lifecycle {
    /// Starts the metrics endpoint, the signal and stats threads, prints `ready` on
    /// stderr, and runs `wait` (which returns when the server has stopped). Errors are
    /// one line, for the command line to print.
    pub fn run(
        self,
        ready: &str,
        wait: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), String> {
        let Lifecycle {
            stop,
            drains,
            engine,
            drain_timeout,
            metrics,
            stats_interval,
            counters,
            hangup,
        } = self;
        let metrics = match metrics {
            Some(addr) => {
                let c = counters.clone();
                let m =
                    super::metrics::serve(addr, move || c.render()).map_err(|e| e.to_string())?;
                info!("metrics at http://{}/metrics", m.local_addrs()[0]);
                Some(m)
            }
            None => None,
        };
        let mut wanted = vec![SIGINT, SIGTERM];
        if hangup.is_some() {
            wanted.push(SIGHUP);
        }
        let mut signals = signal_hook::iterator::Signals::new(&wanted)
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let signal_handle = signals.handle();
        let mut hangup = hangup;
        std::thread::Builder::new()
            .name("evloop-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        if let Some(h) = hangup.as_mut() {
                            h();
                        }
                        continue;
                    }
                    seen += 1;
                    if seen > 1 {
                        error!("second signal {sig}: exiting at once");
                        std::process::exit(1);
                    }
                    super::notify::stopping();
                    if drains {
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
        if let Some(every) = stats_interval {
            let c = counters.clone();
            std::thread::Builder::new()
                .name("evloop-stats".into())
                .spawn(move || c.log_every(every))
                .map_err(|e| format!("cannot start the stats thread: {e}"))?;
        }
        eprintln!("{ready}");
        // systemd (`Type=notify`) hears READY=1, the ready line as its status.
        super::notify::ready(ready.strip_prefix("evloop: ").unwrap_or(ready));
        let result = wait().map_err(|e| e.to_string());
        if let Some(m) = metrics
            && let Err(e) = m.shutdown()
        {
            debug!("metrics endpoint: {e}");
        }
        signal_handle.close();
        result
    }
}

/// Series appended to every scrape.
type ExtraSeries = dyn Fn(&mut String) + Send + Sync;

/// The counters the metrics endpoint and the stats line read: the protocol's (when a
/// protocol is served), the reactor's (when on the reactor), and any extra series.
#[derive(Clone)]
pub struct Counters {
    proto: Option<Arc<ProtoMetrics>>,
    reactor: Option<ServerHandle>,
    extra: Option<Arc<ExtraSeries>>,
}

impl Counters {
    /// Counters of a protocol and/or a reactor server.
    pub fn new(proto: Option<Arc<ProtoMetrics>>, reactor: Option<ServerHandle>) -> Self {
        Counters { proto, reactor, extra: None }
    }

    /// Adds series that `extra` appends to every scrape (after the others).
    pub fn with_extra(mut self, extra: impl Fn(&mut String) + Send + Sync + 'static) -> Self {
        self.extra = Some(Arc::new(extra));
        self
    }

    /// The Prometheus text of all of them.
    pub fn render(&self) -> String {
        let stats = self.reactor.as_ref().map(|h| h.stats());
        let mut out = match &self.proto {
            Some(p) => super::metrics::render(stats.as_ref(), p),
            None => {
                let mut out = String::with_capacity(4096);
                if let Some(s) = &stats {
                    super::metrics::render_stats(&mut out, s);
                }
                out
            }
        };
        if let Some(extra) = &self.extra {
            extra(&mut out);
        }
        out
    }

    /// Logs a one-line summary every `every` (runs until the process exits).
    fn log_every(&self, every: Duration) {
        let mut last = (Instant::now(), 0u64, 0u64, 0u64);
        loop {
            std::thread::sleep(every);
            let requests = self.proto.as_ref().map_or(0, |p| p.requests());
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
