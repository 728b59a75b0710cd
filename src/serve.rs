//! Running a sans-IO [`Protocol`] on any engine: the reactor (through
//! [`ProtoHandler`], the small adapter between the two), the std::net baseline, or (with
//! the cargo feature `tokio`) the tokio engine.
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

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use crate::baseline;
use crate::metrics::ProtoMetrics;
use crate::proto::{Protocol, Session};
use crate::reactor::{
    self, Action, Config, Conn, Datagram, EventHandler, ListenAddr, Server, ServerHandle,
};

/// Which engine runs the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The event-loop reactor.
    #[default]
    Reactor,
    /// The std::net thread-per-connection baseline.
    Std,
    /// Current-thread tokio runtimes, one per loop (cargo feature `tokio`).
    #[cfg(feature = "tokio")]
    Tokio,
}

/// How often each loop calls [`Protocol::tick`].
const PROTOCOL_TICK: Duration = Duration::from_secs(1);

/// An [`EventHandler`] that runs one [`Protocol`] session per connection.
///
/// A protocol error's reply is queued after any replies the session produced, then the
/// connection closes once the output is flushed.
#[derive(Debug, Clone)]
pub struct ProtoHandler<P: Protocol> {
    proto: P,
    metrics: Arc<ProtoMetrics>,
    loop_id: usize,
}

impl<P: Protocol> ProtoHandler<P> {
    /// A handler for `proto` (cloned once per loop), with counters of its own.
    pub fn new(proto: P) -> Self {
        let metrics = Arc::new(ProtoMetrics::new(proto.name(), 1));
        ProtoHandler { proto, metrics, loop_id: 0 }
    }

    /// A handler for loop `loop_id` that counts requests and errors into `metrics`.
    pub fn with_metrics(proto: P, metrics: Arc<ProtoMetrics>, loop_id: usize) -> Self {
        ProtoHandler { proto, metrics, loop_id }
    }
}

impl<P: Protocol> EventHandler for ProtoHandler<P> {
    type State = P::Session;

    fn opened(&mut self, _conn: &mut Conn<'_>) -> (P::Session, Action) {
        (self.proto.new_session(), Action::None)
    }

    fn data(
        &mut self,
        conn: &mut Conn<'_>,
        session: &mut P::Session,
        input: &[u8],
    ) -> (usize, Action) {
        match session.on_input(input, conn.out()) {
            Ok(p) => {
                self.metrics.add_requests(self.loop_id, p.requests as u64);
                (p.consumed.min(input.len()), if p.close { Action::Close } else { Action::None })
            }
            Err(e) => {
                self.metrics.add_requests(self.loop_id, e.requests as u64);
                self.metrics.add_error(e.kind);
                log::debug!("{} from {}: {e}", self.proto.name(), conn.peer_addr());
                conn.write(&e.reply);
                (input.len(), Action::Close)
            }
        }
    }

    /// A datagram is one request for a fresh session; its replies (or its error reply)
    /// go back as one datagram.
    fn datagram(&mut self, dgram: &mut Datagram<'_>, data: &[u8]) {
        match self.proto.new_session().on_input(data, dgram.out()) {
            Ok(p) => self.metrics.add_requests(self.loop_id, p.requests as u64),
            Err(e) => {
                self.metrics.add_requests(self.loop_id, e.requests as u64);
                self.metrics.add_error(e.kind);
                dgram.write(&e.reply);
            }
        }
    }

    fn tick(&mut self) -> Option<Duration> {
        self.proto.tick();
        Some(PROTOCOL_TICK)
    }
}

/// A protocol server running on either engine.
pub struct Served {
    inner: Inner,
    metrics: Arc<ProtoMetrics>,
}

enum Inner {
    Reactor(reactor::Running),
    Std(baseline::Running),
    #[cfg(feature = "tokio")]
    Tokio(baseline::tokio::Running),
}

/// Stops a [`Served`] server from any thread.
#[derive(Clone)]
pub enum StopHandle {
    /// The reactor's server handle.
    Reactor(ServerHandle),
    /// The std baseline's stop handle.
    Std(baseline::StopHandle),
    /// The tokio engine's stop handle.
    #[cfg(feature = "tokio")]
    Tokio(baseline::tokio::StopHandle),
}

impl StopHandle {
    /// Begins shutdown; returns at once.
    pub fn stop(&self) {
        match self {
            StopHandle::Reactor(h) => h.shutdown(),
            StopHandle::Std(h) => h.stop(),
            #[cfg(feature = "tokio")]
            StopHandle::Tokio(h) => h.stop(),
        }
    }

    /// Begins a graceful shutdown ([`ServerHandle::drain`]) on the reactor; the std and
    /// tokio engines have no drain and stop at once.
    pub fn drain(&self, timeout: Duration) {
        match self {
            StopHandle::Reactor(h) => h.drain(timeout),
            StopHandle::Std(h) => h.stop(),
            #[cfg(feature = "tokio")]
            StopHandle::Tokio(h) => h.stop(),
        }
    }
}

/// Binds and starts `proto` on `engine`. The std engine uses only `config.listen` and
/// `config.nodelay`, the tokio engine also `config.loops` (it always binds one
/// `SO_REUSEPORT` listener per loop); everything else configures the reactor.
pub fn start<P: Protocol>(engine: Engine, proto: P, config: Config) -> io::Result<Served> {
    let metrics = Arc::new(ProtoMetrics::new(proto.name(), config.effective_loops()));
    let inner = match engine {
        Engine::Reactor => {
            let server = Server::bind(config)?;
            let m = metrics.clone();
            Inner::Reactor(
                server.start(move |id| ProtoHandler::with_metrics(proto.clone(), m.clone(), id))?,
            )
        }
        Engine::Std => Inner::Std(baseline::start(
            proto,
            &config.listen,
            config.nodelay,
            config.unix_mode,
            metrics.clone(),
        )?),
        #[cfg(feature = "tokio")]
        Engine::Tokio => Inner::Tokio(baseline::tokio::start(
            proto,
            &tokio_addrs(&config)?,
            config.loops,
            config.nodelay,
            metrics.clone(),
        )?),
    };
    Ok(Served { inner, metrics })
}

/// The tokio engine serves TCP only.
#[cfg(feature = "tokio")]
fn tokio_addrs(config: &Config) -> io::Result<Vec<SocketAddr>> {
    if let Some(other) = config.listen.iter().find(|l| !matches!(l, ListenAddr::Tcp(_))) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot listen on {other}: the tokio engine serves TCP only"),
        ));
    }
    Ok(config.tcp_addrs())
}

impl Served {
    /// Every listener (TCP, Unix, UDP) in configuration order, ports resolved.
    pub fn listeners(&self) -> Vec<ListenAddr> {
        match &self.inner {
            Inner::Reactor(r) => r.handle().listeners().to_vec(),
            Inner::Std(s) => s.listeners().to_vec(),
            #[cfg(feature = "tokio")]
            Inner::Tokio(t) => t.local_addrs().iter().map(|a| ListenAddr::Tcp(*a)).collect(),
        }
    }

    /// The bound TCP addresses, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        match &self.inner {
            Inner::Reactor(r) => r.local_addrs(),
            Inner::Std(s) => s.local_addrs(),
            #[cfg(feature = "tokio")]
            Inner::Tokio(t) => t.local_addrs(),
        }
    }

    /// The protocol's counters (requests, errors by kind).
    pub fn proto_metrics(&self) -> &Arc<ProtoMetrics> {
        &self.metrics
    }

    /// The reactor's handle (stats and shutdown), when running on the reactor.
    pub fn reactor(&self) -> Option<ServerHandle> {
        match &self.inner {
            Inner::Reactor(r) => Some(r.handle()),
            Inner::Std(_) => None,
            #[cfg(feature = "tokio")]
            Inner::Tokio(_) => None,
        }
    }

    /// A handle that stops the server from any thread.
    pub fn stop_handle(&self) -> StopHandle {
        match &self.inner {
            Inner::Reactor(r) => StopHandle::Reactor(r.handle()),
            Inner::Std(s) => StopHandle::Std(s.stop_handle()),
            #[cfg(feature = "tokio")]
            Inner::Tokio(t) => StopHandle::Tokio(t.stop_handle()),
        }
    }

    /// Waits until the server has stopped.
    pub fn wait(self) -> io::Result<()> {
        match self.inner {
            Inner::Reactor(r) => r.wait(),
            Inner::Std(s) => s.wait(),
            #[cfg(feature = "tokio")]
            Inner::Tokio(t) => t.wait(),
        }
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop_handle().stop();
        self.wait()
    }
}
