//! Running a sans-IO [`Protocol`] on any engine, and the server's lifecycle.
//!
//! - [`Settings`]: what to serve on, engine-neutral (the reactor's own tuning sits in
//!   [`ReactorTuning`]); `serve` maps it to each engine's options.
//! - [`Backend`] (in `engine`): the Engine abstraction, one implementation per engine;
//!   [`Engine`] names them (the `--engine` flag) and is the one place that knows which
//!   exist.
//! - `handler`: the reactor's [`ProtoHandler`], which drives the one protocol adapter
//!   ([`crate::net::session`]) that the std and tokio engines drive too.
//! - [`run`](mod@run): the lifecycle of `evloop serve` (signals and drain, stats logging,
//!   metrics endpoint, ready line, per-protocol defaults).
//! - [`metrics`]: Prometheus text rendering and the `/metrics` endpoint.
//! - [`capture`]: sampled traffic capture (`--capture`) wired into the handler.
//! - [`reload`]: SIGHUP with `--config FILE` (TLS, backends, log level re-read).
//! - [`notify`]: `sd_notify` (`READY=1`, `STOPPING=1`) for systemd's `Type=notify`.
//!
//! ```no_run
//! use evloop::proto::echo::Echo;
//! use evloop::reactor::Config;
//! use evloop::serve::{Engine, start};
//!
//! let config = Config::new().listen("127.0.0.1:5000")?.loops(2);
//! let server = start(Engine::Reactor, Echo, config)?;
//! println!("listening on {:?}", server.local_addrs());
//! server.wait()?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod capture;
mod engine;
mod handler;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod reload;
pub mod run;
mod settings;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::{ListenAddr, ProtoMetrics};
use crate::proto::Protocol;
use crate::reactor::ServerHandle;

pub use engine::{Backend, Capabilities, Engine, RunningServer, Started, Stopper, WithBackend};
pub use handler::{ProtoConn, ProtoHandler};
pub use settings::{ReactorTuning, Settings};

/// Binds and starts `proto` on `engine` with `settings` (a [`Settings`], or a reactor
/// [`Config`](crate::reactor::Config), which converts losslessly). Each engine uses the
/// settings its [`Capabilities`] name and ignores the rest; the command line refuses a
/// flag the chosen engine would ignore ([`run::check_supported`]).
pub fn start<P: Protocol>(
    engine: Engine,
    proto: P,
    settings: impl Into<Settings>,
) -> io::Result<Served> {
    let settings = settings.into();
    if settings.tls.is_some() && !engine.capabilities().tls {
        return Err(io::Error::new(io::ErrorKind::Unsupported, tls_unsupported(engine)));
    }
    let metrics = Arc::new(ProtoMetrics::new(proto.name(), settings.effective_loops()));
    let running = engine.start(proto, &settings, metrics.clone())?;
    Ok(Served { running, metrics })
}

/// The error for TLS listeners on an engine without TLS.
pub(crate) fn tls_unsupported(engine: Engine) -> String {
    format!("tls:// listeners are served by the reactor engine only, not the {engine} engine")
}

/// A protocol server running on some engine.
pub struct Served {
    running: Box<dyn RunningServer>,
    metrics: Arc<ProtoMetrics>,
}

/// Stops a [`Served`] server from any thread. Cheap to clone.
#[derive(Clone)]
pub struct StopHandle(Arc<dyn Stopper>);

impl StopHandle {
    /// A handle over any engine's [`Stopper`] (a reactor's [`ServerHandle`], say).
    pub fn from_stopper(stopper: Arc<dyn Stopper>) -> Self {
        StopHandle(stopper)
    }

    /// Begins shutdown; returns at once.
    pub fn stop(&self) {
        self.0.stop();
    }

    /// Begins a graceful shutdown within `timeout` on an engine that drains (the
    /// reactor: [`ServerHandle::drain`]); the others stop at once.
    pub fn drain(&self, timeout: Duration) {
        self.0.drain(timeout);
    }
}

impl Served {
    /// Every listener (TCP, Unix, UDP) in configuration order, ports resolved.
    pub fn listeners(&self) -> Vec<ListenAddr> {
        self.running.listeners()
    }

    /// The bound TCP addresses, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.running.local_addrs()
    }

    /// The protocol's counters (requests, errors by kind).
    pub fn proto_metrics(&self) -> &Arc<ProtoMetrics> {
        &self.metrics
    }

    /// The reactor's handle (stats and shutdown), when running on the reactor.
    pub fn reactor(&self) -> Option<ServerHandle> {
        self.running.reactor()
    }

    /// A handle that stops the server from any thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.running.stopper())
    }

    /// Waits until the server has stopped.
    pub fn wait(self) -> io::Result<()> {
        self.running.wait()
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop_handle().stop();
        self.wait()
    }
}
