//! The Engine abstraction: [`Backend`] is what `serve` needs of an engine (start a
//! protocol from [`Settings`], say what it honours, describe itself in the ready line);
//! [`RunningServer`] and [`Stopper`] are a running server of any engine. [`Engine`] names
//! the engines that exist and is the one place that registers them (and the one place
//! that knows the tokio engine is behind a cargo feature).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Settings;
use super::handler::ProtoHandler;
use crate::engines;
use crate::net::session::RequestTimeouts;
use crate::net::{ListenAddr, ProtoMetrics};
use crate::proto::Protocol;
use crate::reactor::{self, Server, ServerHandle};

/// Which settings an engine honours (beyond listen addresses, loops and `TCP_NODELAY`,
/// which all do). The command line refuses a flag for a setting its engine lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Unix domain socket listeners.
    pub unix: bool,
    /// UDP listeners.
    pub udp: bool,
    /// `--reuseport` holds (the reactor: one listener per loop instead of one acceptor;
    /// the tokio engine: always on).
    pub reuseport: bool,
    /// `--pin`, `--balance`, watermarks, read buffer: the reactor's tuning.
    pub reactor_tuning: bool,
    /// `--max-conns`.
    pub max_conns: bool,
    /// `--idle-timeout`.
    pub idle_timeout: bool,
    /// `--header-timeout` and `--body-timeout` (request timeouts).
    pub request_timeout: bool,
    /// TCP keepalive (`--keepalive`).
    pub keepalive: bool,
    /// Graceful drain on the first signal (`--drain-timeout`).
    pub drain: bool,
    /// `--max-output` (and the soft limit on the reactor).
    pub output_limit: bool,
    /// `--max-output-soft`.
    pub output_soft_limit: bool,
    /// TLS listeners (`tls://`, [`Settings::tls`]).
    pub tls: bool,
}

impl Capabilities {
    /// Nothing beyond TCP listeners, loops and `TCP_NODELAY`.
    pub const NONE: Capabilities = Capabilities {
        unix: false,
        udp: false,
        reuseport: false,
        reactor_tuning: false,
        max_conns: false,
        idle_timeout: false,
        request_timeout: false,
        keepalive: false,
        drain: false,
        output_limit: false,
        output_soft_limit: false,
        tls: false,
    };
    /// Everything.
    pub const ALL: Capabilities = Capabilities {
        unix: true,
        udp: true,
        reuseport: true,
        reactor_tuning: true,
        max_conns: true,
        idle_timeout: true,
        request_timeout: true,
        keepalive: true,
        drain: true,
        output_limit: true,
        output_soft_limit: true,
        tls: true,
    };
}

/// What [`Backend::start`] returns.
pub type Started = io::Result<Box<dyn RunningServer>>;

/// An engine, as `serve` drives it.
pub trait Backend {
    /// The engine's name (the `--engine` value).
    const NAME: &'static str;
    /// What it honours.
    const CAPABILITIES: Capabilities;

    /// Binds `settings.listen` and serves `proto` on it, counting into `metrics` (one slot
    /// per loop). Errors name the address that could not be bound.
    fn start<P: Protocol>(
        &self,
        proto: P,
        settings: &Settings,
        metrics: Arc<ProtoMetrics>,
    ) -> Started;

    /// The engine's part of the ready line, e.g. `engine reactor, 2 loops, reuseport on`.
    fn describe(&self, settings: &Settings) -> String;
}

/// A running server of any engine.
pub trait RunningServer: Send {
    /// Every listener in configuration order, ports resolved.
    fn listeners(&self) -> Vec<ListenAddr>;
    /// The bound TCP addresses, ports resolved.
    fn local_addrs(&self) -> &[SocketAddr];
    /// The reactor's handle, on the reactor.
    fn reactor(&self) -> Option<ServerHandle> {
        None
    }
    /// Something that stops the server from any thread.
    fn stopper(&self) -> Arc<dyn Stopper>;
    /// Waits until the server has stopped.
    fn wait(self: Box<Self>) -> io::Result<()>;
}

/// Stops a running server from any thread.
pub trait Stopper: Send + Sync {
    /// Begins shutdown; returns at once.
    fn stop(&self);
    /// Begins a graceful shutdown bounded by `timeout`; engines without a drain stop.
    fn drain(&self, _timeout: Duration) {
        self.stop();
    }
}

/// Something done with a [`Backend`] chosen at run time (see [`Engine::apply`]).
pub trait WithBackend {
    /// The result.
    type Out;
    /// Does it with `backend`.
    fn with<B: Backend>(self, backend: B) -> Self::Out;
}

/// The engines there are (the `--engine` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The event-loop reactor.
    #[default]
    Reactor,
    /// The std::net thread-per-connection engine.
    Std,
    /// Current-thread tokio runtimes, one per loop (cargo feature `tokio`).
    #[cfg(feature = "tokio")]
    Tokio,
}

impl Engine {
    /// Every engine in this build.
    pub const ALL: &[Engine] = &[
        Engine::Reactor,
        Engine::Std,
        #[cfg(feature = "tokio")]
        Engine::Tokio,
    ];

    /// Runs `f` with this engine's [`Backend`]: the one dispatch from name to engine.
    pub fn apply<W: WithBackend>(self, f: W) -> W::Out {
        match self {
            Engine::Reactor => f.with(ReactorBackend),
            Engine::Std => f.with(StdBackend),
            #[cfg(feature = "tokio")]
            Engine::Tokio => f.with(tokio_backend::TokioBackend),
        }
    }

    /// The engine's name (the `--engine` value).
    pub fn name(self) -> &'static str {
        struct Name;
        impl WithBackend for Name {
            type Out = &'static str;
            fn with<B: Backend>(self, _: B) -> &'static str {
                B::NAME
            }
        }
        self.apply(Name)
    }

    /// The engine named `name`, if this build has it.
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// What the engine honours.
    pub fn capabilities(self) -> Capabilities {
        struct Caps;
        impl WithBackend for Caps {
            type Out = Capabilities;
            fn with<B: Backend>(self, _: B) -> Capabilities {
                B::CAPABILITIES
            }
        }
        self.apply(Caps)
    }

    /// The engine's part of the ready line.
    pub fn describe(self, settings: &Settings) -> String {
        struct Describe<'a>(&'a Settings);
        impl WithBackend for Describe<'_> {
            type Out = String;
            fn with<B: Backend>(self, b: B) -> String {
                b.describe(self.0)
            }
        }
        self.apply(Describe(settings))
    }

    /// Starts `proto` on this engine (see [`Backend::start`]).
    pub fn start<P: Protocol>(
        self,
        proto: P,
        settings: &Settings,
        metrics: Arc<ProtoMetrics>,
    ) -> io::Result<Box<dyn RunningServer>> {
        struct Start<'a, P>(P, &'a Settings, Arc<ProtoMetrics>);
        impl<P: Protocol> WithBackend for Start<'_, P> {
            type Out = io::Result<Box<dyn RunningServer>>;
            fn with<B: Backend>(self, b: B) -> Self::Out {
                b.start(self.0, self.1, self.2)
            }
        }
        self.apply(Start(proto, settings, metrics))
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// "1 loop", "2 loops".
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The reactor.
struct ReactorBackend;

impl Backend for ReactorBackend {
    const NAME: &'static str = "reactor";
    const CAPABILITIES: Capabilities = Capabilities::ALL;

    fn start<P: Protocol>(
        &self,
        proto: P,
        settings: &Settings,
        metrics: Arc<ProtoMetrics>,
    ) -> Started {
        let server = Server::bind(settings.reactor_config())?;
        let timeouts =
            RequestTimeouts { header: settings.request_timeout, body: settings.body_timeout };
        let capture = settings.reactor.capture.clone();
        let running = server.start(move |id| {
            ProtoHandler::with_metrics(proto.clone(), metrics.clone(), id)
                .request_timeouts(timeouts)
                .capture(capture.clone())
        })?;
        Ok(Box::new(running))
    }

    /// Says whether `SO_REUSEPORT` listeners are in use: only TCP and UDP listeners that
    /// evloop binds have them; Unix sockets and inherited sockets go through the acceptor.
    fn describe(&self, s: &Settings) -> String {
        let inet = s.listen.iter().any(|l| !matches!(l, ListenAddr::Unix(_)));
        // Inherited sockets (fd:N, systemd) are one socket each: served by the acceptor.
        let own =
            s.listen.iter().any(|l| !matches!(l, ListenAddr::Unix(_) | ListenAddr::Inherited(_)));
        let reuseport = match (s.reuseport, inet) {
            (true, true) if !own => "reuseport off: inherited sockets use the acceptor",
            (true, true) => "reuseport on",
            (true, false) => "reuseport off: unix: listeners use the acceptor",
            (false, _) => "reuseport off",
        };
        format!("engine reactor, {}, {reuseport}", plural(s.effective_loops(), "loop"))
    }
}

impl RunningServer for reactor::Running {
    fn listeners(&self) -> Vec<ListenAddr> {
        self.handle().listeners().to_vec()
    }
    fn local_addrs(&self) -> &[SocketAddr] {
        reactor::Running::local_addrs(self)
    }
    fn reactor(&self) -> Option<ServerHandle> {
        Some(self.handle())
    }
    fn stopper(&self) -> Arc<dyn Stopper> {
        Arc::new(self.handle())
    }
    fn wait(self: Box<Self>) -> io::Result<()> {
        reactor::Running::wait(*self)
    }
}

impl Stopper for ServerHandle {
    fn stop(&self) {
        self.shutdown();
    }
    fn drain(&self, timeout: Duration) {
        ServerHandle::drain(self, timeout);
    }
}

/// The std::net thread-per-connection engine.
struct StdBackend;

impl Backend for StdBackend {
    const NAME: &'static str = "std";
    const CAPABILITIES: Capabilities = Capabilities {
        unix: true,
        udp: true,
        max_conns: true,
        idle_timeout: true,
        drain: true,
        output_limit: true,
        ..Capabilities::NONE
    };

    fn start<P: Protocol>(&self, proto: P, s: &Settings, metrics: Arc<ProtoMetrics>) -> Started {
        let opts = engines::std::Options {
            listen: s.listen.clone(),
            nodelay: s.nodelay,
            unix_mode: s.unix_mode,
            bind: s.bind_options(),
            max_conns: s.max_conns,
            idle_timeout: s.idle_timeout,
            max_output: s.max_output,
        };
        Ok(Box::new(engines::std::start(proto, &opts, metrics)?))
    }

    fn describe(&self, _: &Settings) -> String {
        "engine std, thread per connection".into()
    }
}

/// [`RunningServer`] for an engine module whose `Running` has `local_addrs`,
/// `stop_handle` and `wait`; `$listeners` gives the listeners of the running server `$r`.
macro_rules! engine_running {
    ($($m:ident)::+, |$r:ident| $listeners:expr) => {
        impl RunningServer for $($m)::+::Running {
            fn listeners(&self) -> Vec<ListenAddr> {
                let $r = self;
                $listeners
            }
            fn local_addrs(&self) -> &[SocketAddr] {
                $($m)::+::Running::local_addrs(self)
            }
            fn stopper(&self) -> Arc<dyn Stopper> {
                Arc::new(self.stop_handle())
            }
            fn wait(self: Box<Self>) -> io::Result<()> {
                $($m)::+::Running::wait(*self)
            }
        }
    };
}

engine_running!(engines::std, |r| r.listeners().to_vec());

impl Stopper for engines::std::StopHandle {
    fn stop(&self) {
        engines::std::StopHandle::stop(self);
    }
    fn drain(&self, timeout: Duration) {
        engines::std::StopHandle::drain(self, timeout);
    }
}

#[cfg(feature = "tokio")]
mod tokio_backend {
    //! The tokio engine as a [`Backend`].

    use super::*;

    /// Current-thread tokio runtimes, one per loop.
    pub(super) struct TokioBackend;

    impl Backend for TokioBackend {
        const NAME: &'static str = "tokio";
        const CAPABILITIES: Capabilities = Capabilities { reuseport: true, ..Capabilities::NONE };

        /// Serves TCP only: any other listener is refused.
        fn start<P: Protocol>(
            &self,
            proto: P,
            s: &Settings,
            metrics: Arc<ProtoMetrics>,
        ) -> Started {
            if let Some(other) = s.listen.iter().find(|l| !matches!(l, ListenAddr::Tcp(_))) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot listen on {other}: the tokio engine serves TCP only"),
                ));
            }
            let addrs: Vec<SocketAddr> =
                s.listen.iter().filter_map(ListenAddr::socket_addr).collect();
            let running = engines::tokio::start_with(
                proto,
                &addrs,
                s.loops,
                s.nodelay,
                s.bind_options(),
                metrics,
            )?;
            Ok(Box::new(running))
        }

        fn describe(&self, s: &Settings) -> String {
            format!(
                "engine tokio, {}, reuseport on",
                plural(s.effective_loops(), "current-thread runtime")
            )
        }
    }

    engine_running!(engines::tokio, |r| r
        .local_addrs()
        .iter()
        .map(|a| ListenAddr::Tcp(*a))
        .collect());

    /// No drain: [`Stopper::drain`] stops at once.
    impl Stopper for engines::tokio::StopHandle {
        fn stop(&self) {
            engines::tokio::StopHandle::stop(self);
        }
    }
}
