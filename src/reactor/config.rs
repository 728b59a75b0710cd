//! Server configuration: what to listen on and how the loops behave.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::net::addr::ListenAddr;
use crate::net::tls::TlsSetup;

/// How the single acceptor (used when reuseport is off) picks a loop for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Loops in turn: 0, 1, 2, ..., 0, 1, ...
    #[default]
    RoundRobin,
    /// The loop with the fewest open connections at the moment of the accept.
    LeastConnections,
    /// A hash of the peer's IP address (not its port), so one client host always lands on
    /// the same loop.
    SourceHash,
}

/// Configuration of a [`Server`](super::Server). Build one with [`Config::new`] and the
/// chained setters; every field has a sane default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on: TCP, Unix sockets, UDP. May be empty for a reactor that only serves
    /// connections handed to it with [`ServerHandle::attach`](super::ServerHandle::attach)
    /// (a client, say).
    pub listen: Vec<ListenAddr>,
    /// Permission bits for Unix socket files (e.g. `0o660`); `None` leaves the umask's.
    pub unix_mode: Option<u32>,
    /// Number of event-loop threads; 0 means one per available CPU.
    pub loops: usize,
    /// One `SO_REUSEPORT` listener per loop (the kernel spreads connections) instead of
    /// one acceptor thread handing connections to loops. Linux only: where the kernel
    /// does not spread connections over such sockets (macOS, the BSDs) the acceptor is
    /// used anyway, and a warning says so once.
    pub reuseport: bool,
    /// Pin loop `i` to CPU `i % cpus` (Linux; elsewhere [`Server::bind`] fails with
    /// `Unsupported`). A thread the kernel refuses to pin runs unpinned, with a warning.
    ///
    /// [`Server::bind`]: super::Server::bind
    pub pin: bool,
    /// Loop choice of the single acceptor (ignored with `reuseport`).
    pub balance: Balance,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Set `TCP_NODELAY` on accepted connections (default on).
    pub nodelay: bool,
    /// Size of each loop's read buffer: the most bytes one `read` call asks for.
    pub read_buffer: usize,
    /// Above this many bytes of pending output a connection is no longer read.
    pub high_watermark: usize,
    /// Reading a paused connection resumes once its pending output drops to this.
    pub low_watermark: usize,
    /// Reads per readiness event before the loop serves other connections (fairness).
    pub read_budget: usize,
    /// How long a connection closing with unflushed output waits for its peer to read
    /// before it is dropped anyway.
    pub close_timeout: Duration,
    /// Close connections with no bytes read or written for this long (off by default).
    pub idle_timeout: Option<Duration>,
    /// Close a connection that holds an incomplete request (unconsumed input) for this
    /// long, counted from the first byte of that request — the slowloris defence
    /// (HTTP's `--header-timeout`). Off by default.
    pub request_timeout: Option<Duration>,
    /// Hard limit of a connection's pending output (bytes queued and not yet taken by
    /// the kernel), as Redis's `client-output-buffer-limit`: a connection above it after
    /// a callback's output was written is closed at once ([`CloseReason::OutputLimit`],
    /// counted), its pending output dropped. The high watermark only stops *reading*;
    /// this bounds what a peer that does not read can make the server hold. Default
    /// 64 MiB; `None`: no limit.
    ///
    /// [`CloseReason::OutputLimit`]: super::CloseReason::OutputLimit
    pub max_output: Option<usize>,
    /// Soft limit of pending output: (bytes, period): a connection whose pending output
    /// stays above `bytes` for `period` is closed as by the hard limit. Off by default.
    pub max_output_soft: Option<(usize, Duration)>,
    /// Most connections open at once in the whole server; beyond it new connections are
    /// accepted and closed at once (counted as rejected). `None`: no limit.
    pub max_conns: Option<usize>,
    /// TCP keepalive on accepted connections: (idle time before probes, probe interval).
    pub keepalive: Option<(Duration, Duration)>,
    /// `SO_RCVBUF` of listeners (inherited by accepted connections).
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF` of listeners (inherited by accepted connections).
    pub send_buffer: Option<usize>,
    /// Catch a panic in a handler callback: the connection it was serving is closed
    /// (the panic is logged) and the loop goes on. Off: the panic ends the loop thread
    /// and shuts the server down.
    pub catch_panics: bool,
    /// TLS on some TCP listeners (rustls, on the loops): which ones, the certificate
    /// configuration, the handshake timeout. `None`: no TLS.
    pub tls: Option<TlsSetup>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            unix_mode: None,
            loops: 0,
            reuseport: false,
            pin: false,
            balance: Balance::RoundRobin,
            backlog: 1024,
            nodelay: true,
            read_buffer: 64 * 1024,
            high_watermark: 1024 * 1024,
            low_watermark: 256 * 1024,
            read_budget: 16,
            close_timeout: Duration::from_secs(10),
            idle_timeout: None,
            request_timeout: None,
            max_output: Some(64 << 20),
            max_output_soft: None,
            max_conns: None,
            keepalive: None,
            recv_buffer: None,
            send_buffer: None,
            catch_panics: true,
            tls: None,
        }
    }
}

impl Config {
    /// A default configuration with no listen address yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a TCP listener on every address `addr` resolves to (e.g.
    /// `"127.0.0.1:5000"`, `"localhost:0"`).
    pub fn listen(mut self, addr: impl ToSocketAddrs) -> io::Result<Self> {
        self.listen.extend(addr.to_socket_addrs()?.map(ListenAddr::Tcp));
        Ok(self)
    }

    /// Adds a listener of any kind: TCP, Unix socket or UDP.
    pub fn listen_on(mut self, addr: ListenAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// The TCP addresses among the listeners, in order.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listen
            .iter()
            .filter_map(|l| match l {
                ListenAddr::Tcp(a) => Some(*a),
                _ => None,
            })
            .collect()
    }

    /// Sets the number of loops (0 = one per CPU).
    pub fn loops(mut self, n: usize) -> Self {
        self.loops = n;
        self
    }

    /// Turns per-loop `SO_REUSEPORT` listeners on or off.
    pub fn reuseport(mut self, on: bool) -> Self {
        self.reuseport = on;
        self
    }

    /// Turns CPU pinning of loop threads on or off.
    pub fn pin(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// Sets the acceptor's balance policy.
    pub fn balance(mut self, b: Balance) -> Self {
        self.balance = b;
        self
    }

    /// Sets the pending-output watermarks (`low <= high`).
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.low_watermark = low;
        self.high_watermark = high;
        self
    }

    /// Sets the per-loop read buffer size (at least 512 bytes is used).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// Sets the idle timeout (`None`: off).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Sets the incomplete-request timeout (`None`: off).
    pub fn request_timeout(mut self, t: Option<Duration>) -> Self {
        self.request_timeout = t;
        self
    }

    /// Sets the hard limit of pending output per connection (`None`: no limit).
    pub fn max_output(mut self, bytes: Option<usize>) -> Self {
        self.max_output = bytes;
        self
    }

    /// Sets the server-wide connection limit (`None`: no limit).
    pub fn max_conns(mut self, n: Option<usize>) -> Self {
        self.max_conns = n;
        self
    }

    /// Serves TLS on the listeners `tls.listeners` names (positions in `listen`).
    pub fn tls(mut self, tls: TlsSetup) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The loop count this configuration resolves to (`loops`, or the CPU count for 0).
    pub fn effective_loops(&self) -> usize {
        if self.loops > 0 {
            self.loops
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Checks the values for consistency.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if self.low_watermark > self.high_watermark {
            return bad("low watermark is above the high watermark");
        }
        if self.read_budget == 0 {
            return bad("read budget must be at least 1");
        }
        if let Some(tls) = &self.tls
            && tls
                .listeners
                .iter()
                .any(|&i| !matches!(self.listen.get(i), Some(ListenAddr::Tcp(_))))
        {
            return bad("a TLS listener must be a TCP listener");
        }
        Ok(())
    }
}
