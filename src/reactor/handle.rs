//! Reaching loops and connections from other threads: [`ConnHandle`], [`ServerHandle`]
//! (including outbound connects started from outside the loops).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::handler::ConnectAddr;
use super::socket::Stream;
use super::stats::{LoopStats, ServerStats};
use super::waker::Waker;
use crate::net::addr::{ListenAddr, Peer};

/// A message to a loop, sent over its channel and followed by a wake.
pub(crate) enum Command {
    /// A connection for this loop to own: accepted by the single acceptor (`admitted`:
    /// already counted against `max_conns`) or attached by the user.
    Register { stream: Stream, peer: Peer, listener: usize, admitted: bool },
    /// Call `woken` for the connection, if it is still the same one.
    Wake { key: usize, generation: u64 },
    /// Queue bytes on the connection, if it is still the same one.
    Write { key: usize, generation: u64, bytes: Vec<u8> },
    /// Call `writable` once the connection's queued output is at the low watermark.
    NotifyWritable { key: usize, generation: u64 },
    /// Start an outbound connection ([`ServerHandle::connect`]).
    Connect { to: ConnectAddr, timeout: Option<Duration>, tag: u64 },
    /// Stop accepting, close idle connections, let the others finish, stop by the deadline.
    Drain(std::time::Instant),
    /// Stop the loop.
    Shutdown,
}

/// The sending side of one loop: its channel, waker and counters, shared (one pointer)
/// by every [`ConnHandle`] of the loop, so a handle costs 32 B however much a loop knows.
#[derive(Clone)]
pub(crate) struct LoopRemote(Arc<RemoteParts>);

impl LoopRemote {
    pub(crate) fn new(parts: RemoteParts) -> Self {
        LoopRemote(Arc::new(parts))
    }
}

impl std::ops::Deref for LoopRemote {
    type Target = RemoteParts;
    #[inline]
    fn deref(&self) -> &RemoteParts {
        &self.0
    }
}

/// What a [`LoopRemote`] points at.
pub(crate) struct RemoteParts {
    pub(crate) id: usize,
    /// Every listener of the server (for `Conn::listener_addr`).
    pub(crate) listeners: Arc<[ListenAddr]>,
    pub(crate) tx: Sender<Command>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stats: Arc<LoopStats>,
    /// The loop's (low, high) pending-output watermarks, for [`ConnHandle::try_write`].
    pub(crate) watermarks: (usize, usize),
}

impl LoopRemote {
    /// Sends a command and wakes the loop. Fails only when the loop has stopped.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), HandleError> {
        self.tx.send(cmd).map_err(|_| HandleError::LoopStopped)?;
        self.waker.wake().map_err(|_| HandleError::LoopStopped)
    }
}

/// Why a [`ConnHandle`] call could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// The connection has closed (or been detached).
    Closed,
    /// The loop that owned the connection has stopped.
    LoopStopped,
    /// [`ConnHandle::try_write`]: the connection's queued output is above the high
    /// watermark; nothing was queued. Try again after
    /// [`EventHandler::writable`](super::EventHandler::writable) (see
    /// [`ConnHandle::notify_writable`]).
    WouldBlock,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Closed => f.write_str("connection is closed"),
            HandleError::LoopStopped => f.write_str("event loop has stopped"),
            HandleError::WouldBlock => f.write_str("connection output is above its high watermark"),
        }
    }
}

impl std::error::Error for HandleError {}

/// What a connection shares with its handles: whether it is open, and how much output
/// is queued for it (for [`ConnHandle::try_write`]). Allocated with the first handle.
#[derive(Debug)]
pub(crate) struct HandleShared {
    alive: AtomicBool,
    /// Bytes sent by handles that the loop has not taken yet.
    in_channel: AtomicUsize,
    /// The connection's pending output, as its loop last published it.
    pending: AtomicUsize,
}

impl HandleShared {
    pub(crate) fn new() -> HandleShared {
        HandleShared {
            alive: AtomicBool::new(true),
            in_channel: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    /// The connection is gone.
    pub(crate) fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// The loop took `n` bytes from the channel.
    pub(crate) fn taken(&self, n: usize) {
        self.in_channel.fetch_sub(n, Ordering::AcqRel);
    }

    /// The loop publishes the connection's pending output (only this thread writes it).
    #[inline]
    pub(crate) fn publish(&self, pending: usize) {
        self.pending.store(pending, Ordering::Relaxed);
    }

    /// Output queued for the connection: in the channel plus pending in the loop.
    pub(crate) fn queued(&self) -> usize {
        self.in_channel.load(Ordering::Acquire) + self.pending.load(Ordering::Relaxed)
    }
}

/// A `Send + Clone` reference to one connection, usable from any thread.
///
/// It names the connection by loop id, slab key and a generation number unique within
/// its loop, so once the connection closes and its slot is reused by a new connection,
/// commands sent through an old handle are dropped by the loop and never reach the new
/// connection.
///
/// Writing: [`write`](Self::write) always queues (unbounded: the caller bounds what it
/// sends); [`try_write`](Self::try_write) refuses with [`HandleError::WouldBlock`] once
/// the connection's queued output (bytes in the loop's channel plus its pending output)
/// is above the high watermark, and [`notify_writable`](Self::notify_writable) asks for
/// an [`EventHandler::writable`](super::EventHandler::writable) call once it is back at
/// the low one — so a worker pool answering through handles keeps memory bounded.
#[derive(Clone)]
pub struct ConnHandle {
    remote: LoopRemote,
    pub(crate) key: usize,
    pub(crate) generation: u64,
    shared: Arc<HandleShared>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle")
            .field("loop", &self.remote.id)
            .field("key", &self.key)
            .field("generation", &self.generation)
            .field("alive", &self.is_alive())
            .field("queued", &self.queued())
            .finish()
    }
}

impl ConnHandle {
    pub(crate) fn new(
        remote: &LoopRemote,
        key: usize,
        generation: u64,
        shared: Arc<HandleShared>,
    ) -> Self {
        ConnHandle { remote: remote.clone(), key, generation, shared }
    }

    /// A copy of this handle that claims its connection is alive, so a test can make a
    /// stale handle reach the loop and prove the loop's generation check drops it.
    #[cfg(test)]
    pub(crate) fn forged_alive(&self) -> ConnHandle {
        ConnHandle { shared: Arc::new(HandleShared::new()), ..self.clone() }
    }

    /// Id of the loop that owns the connection.
    pub fn loop_id(&self) -> usize {
        self.remote.id
    }

    /// False once the connection has closed or been detached. A true answer can be
    /// stale by the time it is used: a message may still be dropped if the connection
    /// closes before the loop sees it.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Asks the owning loop to call [`EventHandler::woken`](super::EventHandler::woken)
    /// for this connection.
    pub fn wake(&self) -> Result<(), HandleError> {
        if !self.is_alive() {
            return Err(HandleError::Closed);
        }
        self.remote.send(Command::Wake { key: self.key, generation: self.generation })
    }

    /// Queues `bytes` for the connection. Messages from one thread arrive in the order
    /// they were written; nothing is dropped while the connection stays open. Never
    /// refuses for lack of room: see [`try_write`](Self::try_write) for the bounded way.
    pub fn write(&self, bytes: impl Into<Vec<u8>>) -> Result<(), HandleError> {
        if !self.is_alive() {
            return Err(HandleError::Closed);
        }
        self.send_bytes(bytes.into())
    }

    /// [`write`](Self::write) with backpressure: `Err(WouldBlock)` (and nothing queued)
    /// while the connection's [`queued`](Self::queued) output is above the loop's high
    /// watermark. So what one connection holds stays below the high watermark plus one
    /// message per writing thread. In order with `write`s from the same thread.
    pub fn try_write(&self, bytes: &[u8]) -> Result<(), HandleError> {
        if !self.is_alive() {
            return Err(HandleError::Closed);
        }
        if self.queued() > self.remote.watermarks.1 {
            return Err(HandleError::WouldBlock);
        }
        self.send_bytes(bytes.to_vec())
    }

    fn send_bytes(&self, bytes: Vec<u8>) -> Result<(), HandleError> {
        let n = bytes.len();
        self.shared.in_channel.fetch_add(n, Ordering::AcqRel);
        let sent =
            self.remote.send(Command::Write { key: self.key, generation: self.generation, bytes });
        if sent.is_err() {
            self.shared.taken(n);
        }
        sent
    }

    /// Bytes queued for the connection: sent through handles and not yet taken by its
    /// loop, plus its pending output as the loop last published it (a moment old).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Asks for one [`EventHandler::writable`](super::EventHandler::writable) call on
    /// the connection's loop as soon as its queued output is at or below the low
    /// watermark (at once if it already is). A producer that got
    /// [`HandleError::WouldBlock`] calls this, then waits for the handler to tell it.
    pub fn notify_writable(&self) -> Result<(), HandleError> {
        if !self.is_alive() {
            return Err(HandleError::Closed);
        }
        self.remote.send(Command::NotifyWritable { key: self.key, generation: self.generation })
    }
}

/// State shared by all handles of one server.
pub(crate) struct Shared {
    pub(crate) shutdown: AtomicBool,
    /// Set by [`ServerHandle::drain`]: accepting has stopped.
    pub(crate) draining: AtomicBool,
    /// The acceptor thread has ended (true from the start when there is none): it hands
    /// no more connections to the loops, so a draining loop with none left may end.
    pub(crate) acceptor_done: AtomicBool,
    /// Connections open in the whole server, kept only when `max_conns` is set.
    pub(crate) open_total: std::sync::atomic::AtomicUsize,
    pub(crate) max_conns: Option<usize>,
    pub(crate) loops: Vec<LoopRemote>,
    pub(crate) acceptor: Option<(Arc<Waker>, Arc<LoopStats>)>,
    /// The TCP addresses, ports resolved.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Every listener, in configuration order, ports resolved.
    pub(crate) listeners: Arc<[ListenAddr]>,
    /// Round-robin position of [`ServerHandle::connect`].
    pub(crate) next_connect: AtomicUsize,
    /// The acceptor's policy, which [`ServerHandle::connect`] follows too.
    pub(crate) balance: super::config::Balance,
}

impl Shared {
    /// Counts a new connection against `max_conns`; false when the limit is reached
    /// (the caller closes the connection at once).
    pub(crate) fn admit(&self) -> bool {
        let Some(max) = self.max_conns else { return true };
        if self.open_total.fetch_add(1, Ordering::AcqRel) >= max {
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Uncounts a closed connection.
    pub(crate) fn release(&self) {
        if self.max_conns.is_some() {
            self.open_total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A `Send + Clone` handle to a running server: shut it down, read its counters.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle").field("addrs", &self.shared.addrs).finish()
    }
}

impl ServerHandle {
    /// Asks every loop (and the acceptor) to stop. Returns at once; the threads exit
    /// after their current iteration and close their connections.
    pub fn shutdown(&self) {
        if self.shared.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        for l in &self.shared.loops {
            let _ = l.send(Command::Shutdown);
        }
        if let Some((waker, _)) = &self.shared.acceptor {
            let _ = waker.wake();
        }
    }

    /// Graceful shutdown: every loop (and the acceptor) stops accepting at once, closes
    /// its idle connections, lets connections with a request in flight (unconsumed
    /// input or unflushed output) finish and close, and stops when none are left or at
    /// `timeout`, whichever comes first (then the rest are closed as by [`shutdown`]).
    /// Returns at once; [`Running::wait`](super::Running::wait) waits for the end.
    ///
    /// [`shutdown`]: Self::shutdown
    pub fn drain(&self, timeout: std::time::Duration) {
        if self.shared.draining.swap(true, Ordering::AcqRel) || self.is_shutting_down() {
            return;
        }
        let deadline = std::time::Instant::now() + timeout;
        for l in &self.shared.loops {
            let _ = l.send(Command::Drain(deadline));
        }
        if let Some((waker, _)) = &self.shared.acceptor {
            let _ = waker.wake();
        }
    }

    /// True once shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// The TCP addresses the server listens on, with ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// Every listener (TCP, Unix, UDP) in configuration order, ports resolved.
    pub fn listeners(&self) -> &[ListenAddr] {
        &self.shared.listeners
    }

    /// Hands an already connected socket (an outbound client connection, say) to loop
    /// `loop_id % loops`, which takes it on like an accepted one: `opened` runs on that
    /// loop, with [`Conn::listener`](super::Conn::listener) = `usize::MAX`.
    pub fn attach(&self, loop_id: usize, stream: std::net::TcpStream) -> std::io::Result<()> {
        let peer = Peer::Inet(stream.peer_addr()?);
        stream.set_nonblocking(true)?;
        let remote = &self.shared.loops[loop_id % self.shared.loops.len()];
        let stream = Stream::Tcp(mio::net::TcpStream::from_std(stream));
        let cmd = Command::Register { stream, peer, listener: usize::MAX, admitted: false };
        remote.send(cmd).map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Starts an outbound connection to `to` on a loop chosen as the acceptor chooses
    /// one for an accepted connection ([`Config::balance`]: the loop with the fewest
    /// open connections for `LeastConnections`, else round-robin — an outbound
    /// connection has no source address to hash), and returns that loop's id.
    ///
    /// The loop connects without blocking, as [`Conn::connect`] does: once connected,
    /// [`EventHandler::opened`] runs there with [`Conn::origin`] = `{ tag, requester: None }`; a failure (refused, timed out
    /// after `timeout`, ...) goes to that loop's [`EventHandler::connect_error`] with
    /// `tag`. `Err` only when the server has stopped.
    ///
    /// [`Config::balance`]: super::Config::balance
    /// [`Conn::connect`]: super::Conn::connect
    /// [`Conn::origin`]: super::Conn::origin
    /// [`EventHandler::opened`]: super::EventHandler::opened
    /// [`EventHandler::connect_error`]: super::EventHandler::connect_error
    pub fn connect(
        &self,
        to: ConnectAddr,
        timeout: Option<Duration>,
        tag: u64,
    ) -> Result<usize, HandleError> {
        let loops = &self.shared.loops;
        let loop_id = match self.shared.balance {
            super::config::Balance::LeastConnections => (0..loops.len())
                .min_by_key(|&i| loops[i].stats.open.load(Ordering::Relaxed))
                .unwrap_or(0),
            _ => self.shared.next_connect.fetch_add(1, Ordering::Relaxed),
        };
        self.connect_on(loop_id, to, timeout, tag)
    }

    /// [`connect`](Self::connect) on loop `loop_id % loops`; returns that loop's id.
    pub fn connect_on(
        &self,
        loop_id: usize,
        to: ConnectAddr,
        timeout: Option<Duration>,
        tag: u64,
    ) -> Result<usize, HandleError> {
        let id = loop_id % self.shared.loops.len();
        self.shared.loops[id].send(Command::Connect { to, timeout, tag })?;
        Ok(id)
    }

    /// Number of loops the server runs.
    pub fn loops(&self) -> usize {
        self.shared.loops.len()
    }

    /// A snapshot of every loop's counters (and the acceptor's).
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            loops: self.shared.loops.iter().map(|l| l.stats.snapshot()).collect(),
            acceptor: self.shared.acceptor.as_ref().map(|(_, s)| s.snapshot()),
        }
    }
}
