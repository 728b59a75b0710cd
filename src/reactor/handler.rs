//! The callback API an embedder implements: [`EventHandler`], and what a callback sees
//! of its connection: [`Conn`] (output, addresses, handle, and the outbound side:
//! [`Conn::connect`], [`Conn::link`], [`Conn::pause_reading`]), [`ConnId`], [`Origin`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use mio::Registry;

use super::event_loop::{Ctx, Op, USER_PAUSED};
use super::handle::{ConnHandle, HandleShared, LoopRemote, ServerHandle};
use super::socket::{DetachedStream, Stream};
use crate::net::addr::{ListenAddr, Peer};
use crate::net::tls::ClientTls;

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
    /// The connection was [linked](Conn::link) to one that ended abnormally (an error,
    /// a reset, a timeout, a handler's close); this side was closed with it, after its
    /// pending output was flushed.
    LinkClosed,
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
    /// The peer when known without a system call: from accept in `opened`, or the
    /// PROXY header's client. `None`: asked of the socket.
    pub(crate) peer: Option<Peer>,
    pub(crate) listener: usize,
    pub(crate) socket: &'a Stream,
    pub(crate) pending: usize,
    pub(crate) remote: &'a LoopRemote,
    pub(crate) key: usize,
    pub(crate) generation: u64,
    pub(crate) alive: &'a mut Option<Arc<HandleShared>>,
    pub(crate) flags: &'a mut u16,
    pub(crate) linked: bool,
    pub(crate) origin: Option<Origin>,
    pub(crate) ctx: &'a mut Ctx,
    pub(crate) registry: &'a Registry,
    /// A request deadline change asked for by this callback (applied after it returns).
    pub(crate) deadline: Option<Option<Duration>>,
}

/// Names one connection of one loop: loop id, slab key and a generation number unique
/// within the loop, so an id never matches a later connection that reuses the slot.
/// `Copy`; two ids are equal when they name the same connection.
///
/// Get one from [`Conn::id`], [`Conn::requester`] or [`Conn::connect`]; use it with
/// [`Conn::link`] on the same loop.
#[derive(Clone, Copy)]
pub struct ConnId {
    pub(crate) loop_id: usize,
    /// Slab key; [`ConnId::UNOPENED`] for an outbound connection still connecting (as
    /// [`Conn::connect`] returns it): the loop finds its key by generation.
    pub(crate) key: usize,
    pub(crate) generation: u64,
}

impl ConnId {
    /// The key of an id handed out before its connection had a slot.
    pub(crate) const UNOPENED: usize = usize::MAX;

    /// Id of the loop the connection belongs to.
    pub fn loop_id(&self) -> usize {
        self.loop_id
    }
}

impl PartialEq for ConnId {
    fn eq(&self, other: &Self) -> bool {
        // The generation alone is unique within a loop; the key may be unknown yet.
        self.loop_id == other.loop_id && self.generation == other.generation
    }
}

impl Eq for ConnId {}

impl std::hash::Hash for ConnId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.loop_id.hash(h);
        self.generation.hash(h);
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{})", self.loop_id, self.generation)
    }
}

/// Where an outbound connection goes: a TCP address (IPv4 or IPv6) or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectAddr {
    /// A TCP server.
    Tcp(SocketAddr),
    /// A Unix domain stream socket.
    Unix(PathBuf),
}

impl From<SocketAddr> for ConnectAddr {
    fn from(a: SocketAddr) -> Self {
        ConnectAddr::Tcp(a)
    }
}

impl fmt::Display for ConnectAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectAddr::Tcp(a) => write!(f, "{a}"),
            ConnectAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How an outbound connection came to be, as its callbacks see it ([`Conn::origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The tag given to [`Conn::connect`] or [`ServerHandle::connect`].
    pub tag: u64,
    /// The connection whose callback called [`Conn::connect`]; `None` for a connect
    /// started with [`ServerHandle::connect`]. It may have closed since.
    pub requester: Option<ConnId>,
}

/// Options of a [link](Conn::link_with). The default copies through the loop's read
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkOptions {
    /// Move the bytes with `splice(2)` through a pipe per direction (Linux), so they
    /// never enter user space. Ignored (the copy path is used) where splice is not
    /// available or no pipe can be had. See [`Conn::link_with`].
    ///
    /// Worth it for bulk transfers: 1 GiB through a pair cost the proxy process about
    /// 0.31 s of CPU spliced against 0.5 s copied. For small request/response traffic
    /// it costs slightly more (a splice in and out per message, two pipe descriptors
    /// per connection): 64-byte echo through a proxy took about 14–16 µs of proxy CPU
    /// per request spliced against 13–14 µs copied. Hence off by default.
    pub splice: bool,
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

    /// The peer's address: with [`Config::accept_proxy`](super::Config::accept_proxy),
    /// the client the PROXY header named (see [`socket_peer_addr`](Self::socket_peer_addr)
    /// for the balancer's).
    ///
    /// Cost: free in [`EventHandler::opened`] (the address came with the accept or
    /// connect) and for a PROXY header's client; in other callbacks of a TCP connection
    /// it is a `getpeername` call, since the reactor does not keep the address of an
    /// idle connection (call it once in `opened` and keep it in the state if it is
    /// wanted often). Should the socket have lost its peer by then (reset), the answer
    /// is the unspecified address `0.0.0.0:0`. A Unix socket's peer is [`Peer::Unix`].
    pub fn peer_addr(&self) -> Peer {
        if let Some(p) = self.peer {
            return p;
        }
        self.socket.peer().unwrap_or(Peer::Inet(SocketAddr::from(([0, 0, 0, 0], 0))))
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
        let shared = self.alive.get_or_insert_with(|| {
            let s = HandleShared::new();
            s.publish(self.pending);
            Arc::new(s)
        });
        ConnHandle::new(self.remote, self.key, self.generation, shared.clone())
    }

    /// This connection's id (for [`link`](Self::link), or to tell connections apart).
    pub fn id(&self) -> ConnId {
        ConnId { loop_id: self.remote.id, key: self.key, generation: self.generation }
    }

    /// How this connection came to be: `Some` for an outbound connection opened with
    /// [`connect`](Self::connect) or [`ServerHandle::connect`], `None` for an accepted
    /// (or attached) one.
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The tag of an outbound connection (`None`: accepted).
    pub fn outbound_tag(&self) -> Option<u64> {
        self.origin.map(|o| o.tag)
    }

    /// The connection that asked for this outbound one (`None`: accepted, or started
    /// from outside the loops).
    pub fn requester(&self) -> Option<ConnId> {
        self.origin.and_then(|o| o.requester)
    }

    /// Starts an outbound connection to `to` on this loop, without blocking, and returns
    /// its id (equal to the [`id`](Self::id) it will have in its callbacks).
    ///
    /// - Connected: [`EventHandler::opened`] runs for the new connection as for an
    ///   accepted one, with [`origin`](Self::origin) = `{ tag, requester: this one }`
    ///   (typically it [links](Self::link) itself to [`requester`](Self::requester)).
    ///   From then on it is an ordinary connection: same read and write paths,
    ///   [`handle`](Self::handle), idle timeout, stats. It is not counted against
    ///   `max_conns` (which limits accepted connections).
    /// - Refused, unreachable, no such socket file, or not connected within `timeout`
    ///   (`None`: only the kernel's own limit, about two minutes for TCP):
    ///   [`EventHandler::connect_failed`] runs on this connection (if it is still open)
    ///   with `tag` and the error (`TimedOut` for the timeout), never synchronously from
    ///   within this call, so it may simply `connect` again to another address.
    ///
    /// `Err` only when no socket could be made (descriptor limit, ...); then no callback
    /// follows. The timeout's resolution is the timer wheel's (100 ms).
    pub fn connect(
        &mut self,
        to: &ConnectAddr,
        timeout: Option<Duration>,
        tag: u64,
    ) -> io::Result<ConnId> {
        let origin = Origin { tag, requester: Some(self.id()) };
        self.ctx.connect(self.registry, self.remote.id, to, timeout, origin, None)
    }

    /// [`connect`](Self::connect), then a client TLS handshake with `tls` (its roots and
    /// server name) before the connection counts as open: [`EventHandler::opened`] runs
    /// once the handshake is done, and the connection reads and writes plaintext from
    /// then on (it may be [linked](Self::link); such a pair copies, never splices). A
    /// handshake that fails (certificate not trusted or not for the name, the server
    /// closing) or does not finish within `timeout` (which covers connect and handshake)
    /// is a failed connect: [`EventHandler::connect_failed`] with the error.
    pub fn connect_tls(
        &mut self,
        to: &ConnectAddr,
        timeout: Option<Duration>,
        tag: u64,
        tls: &ClientTls,
    ) -> io::Result<ConnId> {
        let origin = Origin { tag, requester: Some(self.id()) };
        let tls = Some(tls.clone());
        self.ctx.connect(self.registry, self.remote.id, to, timeout, origin, tls)
    }

    /// Links this connection with `other` (an open connection of the same loop), with
    /// the copy path: see [`link_with`](Self::link_with).
    pub fn link(&mut self, other: ConnId) -> io::Result<()> {
        self.link_with(other, LinkOptions::default())
    }

    /// Ties this connection and `other` into a pair: from the end of this callback on,
    /// what is read from either is written to the other by the reactor, and
    /// [`EventHandler::data`] is no longer called for them. Input either holds
    /// unconsumed is forwarded first, after the output this callback wrote; no byte is
    /// lost or reordered. For each forward, [`EventHandler::forwarded`] runs on the
    /// reading side's state.
    ///
    /// - **Backpressure**: a side is not read while the other's pending output is above
    ///   the high watermark, and is read again (at once) when it drops to the low one.
    /// - **Half-close**: end of input on one side becomes `shutdown(Write)` on the other
    ///   once its pending output is written; the other direction keeps flowing. When both
    ///   sides have ended their input and everything is written, both close
    ///   ([`CloseReason::PeerClosed`]).
    /// - **Errors**: when one side closes any other way (a reset or socket error, a
    ///   timeout, an `Action::Close` from [`woken`](EventHandler::woken), shutdown),
    ///   the other stops reading, flushes its pending output (bounded by the close
    ///   timeout) and closes with [`CloseReason::LinkClosed`].
    ///
    /// Reading both is resumed (a [`pause_reading`](Self::pause_reading) ends). With
    /// `opts.splice` (Linux, TCP or Unix sockets) bytes move with `splice(2)` through a
    /// pipe per direction and never enter user space; the same rules hold, a pipe's
    /// content counting as the receiving side's pending output. Elsewhere the copy path
    /// is used.
    ///
    /// `Err(InvalidInput)` for `other` on another loop or this connection itself,
    /// `Err(AlreadyExists)` when this one is already linked. Whether `other` is still
    /// open (and unlinked) is known only when the link is made, after this callback:
    /// if it is not, *this* connection is closed ([`CloseReason::Error`],
    /// `NotConnected`). A TLS connection (a `tls://` listener's or one from
    /// [`connect_tls`](Self::connect_tls)) can be linked: its side's bytes pass through
    /// rustls, so such a pair copies and `opts.splice` is ignored.
    pub fn link_with(&mut self, other: ConnId, opts: LinkOptions) -> io::Result<()> {
        let invalid = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if other.loop_id != self.remote.id {
            return invalid("cannot link connections of different loops");
        }
        if other == self.id() {
            return invalid("cannot link a connection to itself");
        }
        if self.linked {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "already linked"));
        }
        self.linked = true;
        self.ctx.ops.push(Op::Link { a: self.id(), b: other, opts });
        Ok(())
    }

    /// Stops reading this connection: bytes stay in the kernel (the peer is throttled
    /// by TCP) and no [`data`](EventHandler::data) callback runs until
    /// [`resume_reading`](Self::resume_reading) or a [`link`](Self::link). Meant for
    /// the time an outbound connection is being set up: what arrives meanwhile is
    /// forwarded, in order, once linked. The end of input is not noticed while paused.
    pub fn pause_reading(&mut self) {
        *self.flags |= USER_PAUSED;
    }

    /// Ends [`pause_reading`](Self::pause_reading); what arrived meanwhile is read at once.
    pub fn resume_reading(&mut self) {
        if *self.flags & USER_PAUSED != 0 {
            *self.flags &= !USER_PAUSED;
            self.ctx.ops.push(Op::ReadNow(self.id()));
        }
    }

    /// True once [`link`](Self::link) was called for this connection.
    pub fn is_linked(&self) -> bool {
        self.linked
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

    /// An outbound connection that `requester` started with [`Conn::connect`] (its
    /// `tag`) failed: refused, unreachable, timed out (`ErrorKind::TimedOut`), ...
    /// Runs only while `requester` is still open; it may [`connect`](Conn::connect)
    /// again (another address, say) or close. Default: [`Action::Close`].
    fn connect_failed(
        &mut self,
        _requester: &mut Conn<'_>,
        _state: &mut Self::State,
        _tag: u64,
        _err: io::Error,
    ) -> Action {
        Action::Close
    }

    /// A connect started with [`ServerHandle::connect`] (its `tag`) failed on this
    /// loop. Default: logged at debug level.
    fn connect_error(&mut self, tag: u64, err: io::Error) {
        log::debug!("outbound connect (tag {tag}) failed: {err}");
    }

    /// `n` bytes read from a [linked](Conn::link) connection were passed to its
    /// partner; `state` is the reading connection's. Lets a proxy count bytes per
    /// direction without any channel. Runs on the hot path of linked pairs: keep it
    /// cheap.
    #[inline]
    fn forwarded(&mut self, _state: &mut Self::State, _n: usize) {}

    /// The bytes of a forward on the copy path, right after [`forwarded`](Self::forwarded)
    /// (same reading side's `state`): for a handler that samples traffic (the proxy's
    /// `--capture`). Not called for bytes moved with `splice(2)` (they never enter user
    /// space; link without splice to see them). Default: nothing (compiled away).
    #[inline]
    fn forwarded_data(&mut self, _state: &mut Self::State, _data: &[u8]) {}

    /// After [`ConnHandle::notify_writable`], the connection's pending output (with
    /// what handles have queued for it) dropped to the low watermark.
    fn writable(&mut self, _conn: &mut Conn<'_>, _state: &mut Self::State) -> Action {
        Action::None
    }
}
