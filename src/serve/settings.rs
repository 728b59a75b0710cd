//! [`Settings`]: what a server is asked to do, in terms every engine understands, and the
//! mapping from it to the reactor's [`Config`] (and back, so code written against the
//! reactor's `Config` can call [`start`](super::start) unchanged).

use std::time::Duration;

use crate::net::tls::TlsSetup;
use crate::net::{BindOptions, ListenAddr};
use crate::reactor::{Balance, Config};

/// Engine-neutral settings of a server. Which ones an engine honours is its
/// [`Capabilities`](super::Capabilities); the reactor honours all of them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to serve (TCP, Unix, UDP).
    pub listen: Vec<ListenAddr>,
    /// Event loops (reactor) or runtimes (tokio); 0 = one per CPU.
    pub loops: usize,
    /// One `SO_REUSEPORT` listener per loop instead of one acceptor.
    pub reuseport: bool,
    /// `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
    /// Permission bits of Unix socket files.
    pub unix_mode: Option<u32>,
    /// The `listen(2)` backlog.
    pub backlog: i32,
    /// `SO_RCVBUF` of listeners.
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF` of listeners.
    pub send_buffer: Option<usize>,
    /// TCP keepalive: (idle time before probes, probe interval).
    pub keepalive: Option<(Duration, Duration)>,
    /// Close connections idle this long.
    pub idle_timeout: Option<Duration>,
    /// The header timeout: a request head must be complete within this long of its
    /// first byte, else the protocol's last words (HTTP: `408`) and a close. The reactor
    /// gets it as a protocol-driven request deadline (not as
    /// [`Config::request_timeout`], which guesses from the unconsumed input).
    pub request_timeout: Option<Duration>,
    /// The body timeout: while a request body arrives, each read that makes progress on
    /// it must come within this long of the last.
    pub body_timeout: Option<Duration>,
    /// Hard limit of a connection's pending output (`--max-output`; see
    /// [`Config::max_output`]); `None`: none.
    pub max_output: Option<usize>,
    /// Soft output limit: (bytes, period) (see [`Config::max_output_soft`]).
    pub max_output_soft: Option<(usize, Duration)>,
    /// Most connections open at once.
    pub max_conns: Option<usize>,
    /// The reactor's own tuning.
    pub reactor: ReactorTuning,
    /// TLS on some TCP listeners (the reactor only; see [`Capabilities::tls`]).
    ///
    /// [`Capabilities::tls`]: super::Capabilities::tls
    pub tls: Option<TlsSetup>,
}

/// Settings only the reactor has (see [`Config`] for each one's meaning).
#[derive(Debug, Clone)]
pub struct ReactorTuning {
    /// Pin loop i to CPU i.
    pub pin: bool,
    /// How the acceptor picks a loop.
    pub balance: Balance,
    /// Per-loop read buffer.
    pub read_buffer: usize,
    /// Stop reading a connection above this much pending output.
    pub high_watermark: usize,
    /// Resume reading at this much pending output.
    pub low_watermark: usize,
    /// Reads per connection per readiness event.
    pub read_budget: usize,
    /// How long a closing connection may take to flush.
    pub close_timeout: Duration,
    /// Catch handler panics.
    pub catch_panics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Config::default().into()
    }
}

impl Settings {
    /// The loop count these settings resolve to (`loops`, or the CPU count for 0).
    pub fn effective_loops(&self) -> usize {
        Config { loops: self.loops, ..Config::default() }.effective_loops()
    }

    /// What binding a listener needs (`reuseport` as configured).
    pub fn bind_options(&self) -> BindOptions {
        BindOptions {
            reuseport: self.reuseport,
            backlog: self.backlog,
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
        }
    }

    /// The reactor's configuration for these settings.
    // Fields the reactor's `Config` may gain later keep their defaults.
    #[allow(clippy::needless_update)]
    pub fn reactor_config(&self) -> Config {
        let t = &self.reactor;
        Config {
            listen: self.listen.clone(),
            unix_mode: self.unix_mode,
            loops: self.loops,
            reuseport: self.reuseport,
            pin: t.pin,
            balance: t.balance,
            backlog: self.backlog,
            nodelay: self.nodelay,
            read_buffer: t.read_buffer,
            high_watermark: t.high_watermark,
            low_watermark: t.low_watermark,
            read_budget: t.read_budget,
            close_timeout: t.close_timeout,
            idle_timeout: self.idle_timeout,
            // Applied by the protocol handler as request deadlines (see the field docs).
            request_timeout: None,
            max_output: self.max_output,
            max_output_soft: self.max_output_soft,
            max_conns: self.max_conns,
            keepalive: self.keepalive,
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
            catch_panics: t.catch_panics,
            tls: self.tls.clone(),
            ..Config::default()
        }
    }
}

impl From<Config> for Settings {
    fn from(c: Config) -> Self {
        Settings {
            reactor: ReactorTuning {
                pin: c.pin,
                balance: c.balance,
                read_buffer: c.read_buffer,
                high_watermark: c.high_watermark,
                low_watermark: c.low_watermark,
                read_budget: c.read_budget,
                close_timeout: c.close_timeout,
                catch_panics: c.catch_panics,
            },
            listen: c.listen,
            loops: c.loops,
            reuseport: c.reuseport,
            nodelay: c.nodelay,
            unix_mode: c.unix_mode,
            backlog: c.backlog,
            recv_buffer: c.recv_buffer,
            send_buffer: c.send_buffer,
            keepalive: c.keepalive,
            idle_timeout: c.idle_timeout,
            request_timeout: c.request_timeout,
            body_timeout: None,
            max_output: c.max_output,
            max_output_soft: c.max_output_soft,
            max_conns: c.max_conns,
            tls: c.tls,
        }
    }
}
