//! The callback API an embedder implements: [`EventHandler`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::handle::{ConnHandle, LoopRemote, ServerHandle};
use super::socket::{DetachedStream, Stream};
use crate::net::addr::{ListenAddr, Peer};

/// What the reactor should do with a connection after a callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Keep going.
    #[default]
    None,
    /// Stop reading, flush the pending output (bounded by
    /// [`Config::close_timeout`](super::Config::close_timeout)), then close.
    Close,
    /// Shut the whole server down (every loop stops and `serve` returns).
    Shutdown,
    /// Hand the socket back: the connection leaves the reactor and
    /// [`EventHandler::detached`] receives the stream with its unconsumed input and
    /// unflushed output.
    Detach,
}

/// Why a connection was closed, passed to [`EventHandler::closed`].
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed its side (read returned EOF) and all output was flushed.
    PeerClosed,
    /// A handler returned [`Action::Close`] and the output was flushed.
    Closed,
    /// Closing gave up on unflushed output after the close timeout.
    FlushTimeout,
    /// The server is shutting down (or draining, and the connection was idle).
    Shutdown,
    /// No bytes moved either way for [`Config::idle_timeout`](super::Config::idle_timeout).
    IdleTimeout,
    /// An incomplete request sat unconsumed for
    /// [`Config::request_timeout`](super::Config::request_timeout), or a request
    /// deadline ([`Conn::set_request_deadline`]) passed and
    /// [`EventHandler::timeout`] asked for a close without writing anything.
    RequestTimeout,
    /// Pending output exceeded [`Config::max_output`](super::Config::max_output), or
    /// stayed above the soft limit for its period; the output was dropped.
    OutputLimit,
    /// A handler callback panicked with this message while serving the connection.
    Panic(String),
    /// A socket error (e.g. connection reset by peer).
    Error(io::Error),
}

/// A connection the reactor handed back after [`Action::Detach`].
#[derive(Debug)]
pub struct Detached<S> {
    /// The socket, still in nonblocking mode and no longer registered with any loop.
    pub stream: DetachedStream,
    /// The connection's state value.
    pub state: S,
    /// Input the handler had not consumed.
    pub input: Vec<u8>,
    /// Output the reactor had not yet written (it was tried once before detaching).
    pub output: Vec<u8>,
}

/// Facts about the loop a handler runs on, passed to [`EventHandler::serving`].
#[derive(Debug, Clone)]
pub struct LoopInfo {
    /// This loop's id, `0..loops`.
    pub id: usize,
    /// How many loops the server runs.
    pub loops: usize,
    /// Every listener of the server, in configuration order (ports resolved when `:0`
    /// was asked for).
    pub addrs: Vec<ListenAddr>,
    /// A handle to the server, e.g. to shut it down from a tick.
    pub server: ServerHandle,
}

/// One connection as a callback sees it: its output buffer, addresses and handle.
///
/// Output appended here is written right after the callback returns; what the kernel
/// does not take stays queued, in order, until it can be written.
pub struct Conn<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) peer: Peer,
    pub(crate) listener: usize,
    pub(crate) socket: &'a Stream,
    pub(crate) pending: usize,
    pub(crate) remote: &'a LoopRemote,
    pub(crate) key: usize,
    pub(crate) generation: u64,
    pub(crate) alive: &'a mut Option<Arc<AtomicBool>>,
    /// A request deadline change asked for by this callback (applied after it returns).
    pub(crate) deadline: Option<Option<Duration>>,
}

impl Conn<'_> {
    /// Sets this connection's request deadline `after` from now (`None`: clears it).
    /// When it passes, [`EventHandler::timeout`] is called (once; set it again to be
    /// called again). Setting it replaces any earlier deadline; the last call in a
    /// callback wins. This is the protocol-driven alternative to
    /// [`Config::request_timeout`](super::Config::request_timeout): the handler says
    /// when a request begins and ends (e.g. an HTTP head timeout armed when a head
    /// begins and cleared when it completes) instead of the reactor guessing from the
    /// unconsumed input. Resolution is the timer wheel's (100 ms); the first use on a
    /// loop makes that loop keep wheel time (one clock read per poll iteration).
    pub fn set_request_deadline(&mut self, after: Option<Duration>) {
        self.deadline = Some(after);
    }

    /// Queues `bytes` to be written to the peer.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The output buffer itself, for protocols that append in place. Only append to it:
    /// it may already hold output not yet written.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Peer {
        self.peer
    }

    /// The local IP address and port of a TCP connection (a `getsockname` call); an
    /// error for a Unix socket connection (see [`listener_addr`](Self::listener_addr)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The listener this connection arrived on (`None` for an attached connection).
    pub fn listener_addr(&self) -> Option<&ListenAddr> {
        self.remote.listeners.get(self.listener)
    }

    /// Index of the configured listen address this connection arrived on (`usize::MAX`
    /// for a connection handed over with [`ServerHandle::attach`]).
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Bytes of earlier output still waiting for the kernel to take them.
    pub fn pending_output(&self) -> usize {
        self.pending
    }

    /// A `Send` handle to this connection, for waking or writing to it from other threads.
    pub fn handle(&mut self) -> ConnHandle {
        let alive = self.alive.get_or_insert_with(|| Arc::new(AtomicBool::new(true)));
        ConnHandle::new(self.remote, self.key, self.generation, alive.clone())
    }
}

/// One UDP datagram as [`EventHandler::datagram`] sees it: where it came from, and the
/// reply buffer.
pub struct Datagram<'a> {
    pub(crate) from: SocketAddr,
    pub(crate) listener: usize,
    pub(crate) truncated: bool,
    pub(crate) reply: &'a mut Vec<u8>,
}

impl Datagram<'_> {
    /// The sender's address.
    pub fn from(&self) -> SocketAddr {
        self.from
    }

    /// Index of the configured listen address it arrived on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// True when the datagram was larger than the loop's read buffer and `data` holds
    /// only its first part.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Appends to the reply (sent as one datagram after the callback).
    pub fn write(&mut self, bytes: &[u8]) {
        self.reply.extend_from_slice(bytes);
    }

    /// The reply buffer itself.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.reply
    }
}

/// The events of one event loop. One value per loop, made by the factory passed to
/// [`Server::start`](super::Server::start) on the loop's own thread, so it needs no locks
/// and need not be `Send`. Every method but [`opened`](Self::opened) and
/// [`data`](Self::data) has a default that does nothing.
///
/// Callbacks run on the loop thread: they must not block.
pub trait EventHandler: 'static {
    /// Per-connection state, owned by the reactor next to the connection.
    type State: 'static;

    /// The loop is ready and about to poll for the first time.
    fn serving(&mut self, _info: &LoopInfo) {}

    /// A connection was accepted onto this loop. Returns its state and an action (a
    /// greeting may be written through `conn`).
    fn opened(&mut self, conn: &mut Conn<'_>) -> (Self::State, Action);

    /// Bytes arrived. `input` is everything not yet consumed (earlier leftovers first).
    /// Returns how many bytes from its front are consumed (the rest is presented again
    /// with the next bytes) and an action.
    fn data(
        &mut self,
        conn: &mut Conn<'_>,
        state: &mut Self::State,
        input: &[u8],
    ) -> (usize, Action);

    /// [`ConnHandle::wake`] was called for this connection.
    fn woken(&mut self, _conn: &mut Conn<'_>, _state: &mut Self::State) -> Action {
        Action::None
    }

    /// The request deadline set with [`Conn::set_request_deadline`] passed. What is
    /// written to `conn` is sent (e.g. HTTP's `408 Request Timeout`) before the action is
    /// carried out. Default: [`Action::Close`] (closed with
    /// [`CloseReason::RequestTimeout`] when nothing was written).
    fn timeout(&mut self, _conn: &mut Conn<'_>, _state: &mut Self::State) -> Action {
        Action::Close
    }

    /// The connection is gone; its state is handed back.
    fn closed(&mut self, _state: Self::State, _reason: CloseReason) {}

    /// The connection was detached ([`Action::Detach`]); dropping the value closes it.
    fn detached(&mut self, _conn: Detached<Self::State>) {}

    /// A datagram arrived on a UDP listener. What is written to `dgram` goes back to
    /// the sender as one datagram (nothing written: no reply). UDP has no connections:
    /// no `opened`/`closed`, and no state kept between datagrams.
    fn datagram(&mut self, _dgram: &mut Datagram<'_>, _data: &[u8]) {}

    /// A timer: called once after [`serving`](Self::serving) and then after each delay it
    /// returns; `None` stops ticking.
    fn tick(&mut self) -> Option<Duration> {
        None
    }
}
