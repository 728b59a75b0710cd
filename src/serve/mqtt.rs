//! `evloop serve --proto mqtt`: the MQTT broker ([`crate::broker`]) on the reactor, run
//! through the same preparation and [`Lifecycle`](super::run::Lifecycle) as the other
//! protocols (inherited sockets, `tls://` with SIGHUP reload, `--accept-proxy`, signals
//! and drain, sd_notify, `/metrics` with the broker's counters added, stats line, ready
//! line). Only the reactor engine runs it: fan-out writes to other connections through
//! the reactor's cross-loop [`ConnHandle`](crate::reactor::ConnHandle)s, which the std
//! and tokio engines lack.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::run::{Counters, Flags, lifecycle, prepare, ready_line};
use super::{Engine, Settings, StopHandle};
use crate::broker::{Broker, MqttConfig};
use crate::reactor::{Running, Server, ServerHandle};

/// Why `--capture` is refused with `--proto mqtt`.
pub const CAPTURE_REFUSED: &str = "--capture is not supported by --proto mqtt (the broker's \
     connections do not go through the capturing protocol handler); leave it out";

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

    /// What the metrics endpoint and the stats line read: the reactor's counters,
    /// packets per loop and errors by kind (`evloop_requests_total{proto="mqtt"}`,
    /// `evloop_protocol_errors_total`), then the broker's `evloop_mqtt_*` families.
    pub fn counters(&self) -> Counters {
        let broker = self.broker.clone();
        Counters::new(Some(broker.proto_metrics().clone()), Some(self.handle()))
            .with_extra(move |out| broker.metrics().render(out))
    }

    /// Prometheus text: the reactor's counters and the broker's.
    pub fn render_metrics(&self) -> String {
        self.counters().render()
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

/// Starts a broker with `config` on the reactor as `settings` say (the high watermark
/// in `config` is taken from `settings`).
pub fn start(mut config: MqttConfig, settings: &Settings) -> io::Result<MqttServer> {
    config.high_watermark = settings.reactor.high_watermark;
    let broker = Broker::new(config, settings.effective_loops());
    let b = broker.clone();
    let running = Server::bind(settings.reactor_config())?.start(move |id| b.handler(id))?;
    Ok(MqttServer { running, broker })
}

/// Serves MQTT until SIGINT or SIGTERM through the same preparation and lifecycle as
/// every other protocol ([`super::run::prepare`], [`super::run::lifecycle`]): inherited
/// sockets (`fd:N`, `systemd`), `tls://` listeners with SIGHUP reload, `--accept-proxy`,
/// sd_notify, the metrics endpoint (the reactor's and the protocol's series, then the
/// broker's `evloop_mqtt_*`), the stats line and the ready line. Refuses engines other
/// than the reactor, the HTTP-only timeouts, and `--capture` (the broker's connections
/// do not go through the capturing protocol handler).
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
    for (given, flag) in [
        (flags.header_timeout.is_some(), "--header-timeout"),
        (flags.body_timeout.is_some(), "--body-timeout"),
    ] {
        if given {
            return Err(format!("{flag} applies to --proto http only, not mqtt"));
        }
    }
    if settings.reactor.capture.is_some() {
        return Err(CAPTURE_REFUSED.into());
    }
    prepare(engine, "mqtt", &mut settings, &flags)?;
    // The keepalive does the broker's idle detection; --idle-timeout may add one.
    settings.request_timeout = None;
    settings.body_timeout = None;
    let server = start(config, &settings).map_err(|e| e.to_string())?;
    let handle = server.handle();
    let counters = server.counters();
    let ready = ready_line(engine, "mqtt", &settings, handle.listeners());
    let stop = StopHandle::from_stopper(Arc::new(handle));
    lifecycle(engine, &settings, &flags, stop, counters).run(&ready, || server.wait())
}
