//! `evloop serve --proto mqtt`: the MQTT broker ([`crate::broker`]) on the reactor, with
//! the same lifecycle as the other protocols (signals and drain, `/metrics` with the
//! broker's counters added, stats line, ready line). Only the reactor engine runs it:
//! fan-out writes to other connections through the reactor's cross-loop
//! [`ConnHandle`](crate::reactor::ConnHandle)s, which the std and tokio engines lack.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::run::{DEFAULT_DRAIN, Flags, check_supported};
use super::{Engine, Settings};
use crate::broker::{Broker, MqttConfig};
use crate::net::{ListenAddr, ProtoMetrics};
use crate::reactor::{Running, Server, ServerHandle};

/// MQTT's registered port.
pub const DEFAULT_PORT: u16 = 1883;

/// A running broker: the reactor server and the broker's shared state.
pub struct MqttServer {
    running: Running,
    broker: Arc<Broker>,
}

impl MqttServer {
    /// The bound TCP addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.running.local_addrs()
    }

    /// The broker (counters, sessions).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The reactor's handle (stats, shutdown, drain).
    pub fn handle(&self) -> ServerHandle {
        self.running.handle()
    }

    /// Prometheus text: the reactor's counters and the broker's.
    pub fn render_metrics(&self) -> String {
        render(&self.broker, Some(&self.running.handle()))
    }

    /// Waits until the server has stopped.
    pub fn wait(self) -> io::Result<()> {
        self.running.wait()
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> io::Result<()> {
        self.running.shutdown()
    }
}

/// The reactor's counters, packets per loop and errors by kind
/// (`evloop_requests_total{proto="mqtt"}`, `evloop_protocol_errors_total`), then the
/// broker's `evloop_mqtt_*` families.
fn render(broker: &Broker, reactor: Option<&ServerHandle>) -> String {
    let proto: &ProtoMetrics = broker.proto_metrics();
    let mut out = super::metrics::render(reactor.map(|h| h.stats()).as_ref(), proto);
    broker.metrics().render(&mut out);
    out
}

/// Starts a broker with `config` on the reactor as `settings` say (the high watermark
/// in `config` is taken from `settings`).
pub fn start(mut config: MqttConfig, settings: &Settings) -> io::Result<MqttServer> {
    config.high_watermark = settings.reactor.high_watermark;
    let broker = Broker::new(config, settings.effective_loops());
    let b = broker.clone();
    let running = Server::bind(settings.reactor_config())?.start(move |id| b.handler(id))?;
    Ok(MqttServer { running, broker })
}

/// Serves MQTT until SIGINT or SIGTERM (the first drains, a second exits at once).
/// Refuses engines other than the reactor.
pub fn run(
    engine: Engine,
    config: MqttConfig,
    mut settings: Settings,
    flags: Flags,
) -> Result<(), String> {
    if engine != Engine::Reactor {
        return Err(format!(
            "--proto mqtt runs on the reactor engine only (fan-out writes to subscribers on \
             other loops through the reactor's connection handles); the {engine} engine \
             cannot run it: leave out --engine or use --engine reactor"
        ));
    }
    check_supported(engine, &settings, &flags)?;
    for (given, flag) in [
        (flags.header_timeout.is_some(), "--header-timeout"),
        (flags.body_timeout.is_some(), "--body-timeout"),
    ] {
        if given {
            return Err(format!("{flag} applies to --proto http only, not mqtt"));
        }
    }
    if settings.listen.is_empty() {
        settings.listen.push(ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))));
    }
    if settings.reactor.low_watermark > settings.reactor.high_watermark {
        return Err("--low-watermark must not exceed --high-watermark".into());
    }
    // The keepalive does the broker's idle detection; --idle-timeout may add one.
    settings.idle_timeout = flags.idle_timeout.flatten();
    settings.request_timeout = None;
    settings.body_timeout = None;
    if let Some(b) = flags.balance {
        settings.reactor.balance = b;
    }
    if let Some(max) = flags.max_output {
        settings.max_output = max;
    }
    if flags.max_output_soft.is_some() {
        settings.max_output_soft = flags.max_output_soft;
    }
    match crate::net::limits::raise_nofile_to_hard() {
        Ok(n) => debug!("open-file limit: {n}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
    let server = start(config, &settings).map_err(|e| e.to_string())?;
    let broker = server.broker.clone();
    let handle = server.handle();
    let metrics = match flags.metrics {
        Some(addr) => {
            let (b, h) = (broker.clone(), handle.clone());
            let m = super::metrics::serve(addr, move || render(&b, Some(&h)))
                .map_err(|e| e.to_string())?;
            info!("metrics at http://{}/metrics", m.local_addrs()[0]);
            Some(m)
        }
        None => None,
    };
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let drain_timeout = flags.drain_timeout.unwrap_or(DEFAULT_DRAIN);
    let stop = handle.clone();
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
                info!(
                    "signal {sig}: draining (up to {drain_timeout:?}); signal again to exit at once"
                );
                stop.drain(drain_timeout);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    if let Some(every) = flags.stats_interval {
        let (b, h) = (broker.clone(), handle.clone());
        std::thread::Builder::new()
            .name("evloop-stats".into())
            .spawn(move || log_every(&b, &h, every))
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    let addrs: Vec<String> = settings.listen.iter().map(|a| a.to_string()).collect();
    let addrs = if server.local_addrs().is_empty() {
        addrs
    } else {
        server.local_addrs().iter().map(|a| a.to_string()).collect()
    };
    eprintln!("evloop: serving mqtt on {} ({})", addrs.join(", "), engine.describe(&settings));
    let result = server.wait().map_err(|e| e.to_string());
    if let Some(m) = metrics
        && let Err(e) = m.shutdown()
    {
        debug!("metrics endpoint: {e}");
    }
    signal_handle.close();
    result
}

/// Logs a one-line summary every `every` (runs until the process exits).
fn log_every(b: &Broker, h: &ServerHandle, every: Duration) {
    use crate::broker::BrokerMetrics as M;
    loop {
        std::thread::sleep(every);
        let m = b.metrics();
        info!(
            "stats: {} open, {} clients, {} subscriptions, {} received, {} sent, {} dropped",
            h.stats().total().open,
            M::level(&m.clients),
            M::level(&m.subscriptions),
            M::get(&m.received),
            M::get(&m.sent),
            M::get(&m.dropped),
        );
    }
}
