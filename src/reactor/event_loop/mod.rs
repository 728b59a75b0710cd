//! One event loop: a thread with its own poller, connections, read buffer and timers.
//! This file holds the loop's state and the poll loop itself; each path through it has
//! a file of its own, each adding one `impl` block to [`EventLoop`]:
//!
//! - `token.rs`: what a poll token stands for ([`Tok`]);
//! - `accept.rs`: the accept path, for this loop's own (reuseport) listeners and for the
//!   single [`Acceptor`] thread alike, and taking on a new connection (`open`);
//! - `proxy_header.rs`: the PROXY-protocol step between accept and `open` (a waiting
//!   socket of its own token range, peeked at until its header is whole; the header's
//!   client becomes the connection's peer). It runs before the read path, so a TLS
//!   layer there starts at the first byte after the header;
//! - `read.rs`: the read path (socket → per-loop buffer → handler, unconsumed tail kept);
//! - `write.rs`: the write path (callback output → socket, partial writes queued under
//!   WRITABLE interest, watermarks, close-after-flush);
//! - `conn.rs`: one connection's record and flags, and its end (close, detach);
//! - `connect.rs`: the connect path: nonblocking connects in flight (their own slab and
//!   poll tokens, a timer wheel for the connect timeout), completion by `SO_ERROR`, then
//!   `open` as for an accepted connection; failures to `connect_failed`/`connect_error`;
//! - `link.rs`: linked pairs: forwarding what one side reads to the other, backpressure
//!   across the pair, half-close forwarding, the pair's end;
//! - `tls.rs`: a connection's TLS session (rustls' sans-IO `ServerConnection`), the TLS
//!   read loop, encryption into the output buffer, handshake deadlines, `close_notify`;
//! - `udp.rs`: datagram sockets;
//! - `timers.rs`: the poll timeout, the handler's tick and the connection timeouts.
//!
//! A callback cannot touch other connections (the slab is borrowed for it), so what it
//! asks for beyond its own connection (a link, a read after `resume_reading`) is queued
//! in [`Ctx::ops`] and carried out in `after_callback`, right after its output is
//! written. A connect needs no slot in the slab until it completes, so [`Conn::connect`]
//! starts it at once (in [`Ctx`]'s dialer).
//!
//! Each iteration: poll (timeout = the nearest timer), then for every event either drain
//! the waker and run the queued commands, accept on this loop's own listener, serve a UDP
//! socket, or serve one connection (read, hand to the handler, write its output at once).
//! Then the reads and datagrams a budget cut short, then the timers.
//!
//! The loop's state is private to this module and its files; the rest of the reactor
//! sees [`EventLoop::new`] and [`EventLoop::run`], and [`LoopParts`] to build one.
//!
//! The unlinked paths pay one predictable branch each for links (`link.is_none()` in the
//! read and write paths); the connect path has its own token range ([`Tok::Dial`]).
//!
//! Room for what comes next, without a new indirection on the per-event path:
//! **TLS**: a per-connection session between the socket and the handler, at the two
//! seams `read.rs::read_socket` (ciphertext in, plaintext to the handler) and
//! `write.rs::write_socket` (plaintext out, ciphertext queued).

mod accept;
mod conn;
mod connect;
mod link;
mod proxy_header;
mod read;
mod timers;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;
mod token;
mod udp;
mod write;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use log::error;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll};
use slab::Slab;

pub(crate) use accept::Acceptor;
pub(crate) use conn::USER_PAUSED;
pub(crate) use token::Tok;

use super::config::Config;
use super::handle::{Command, LoopRemote, ServerHandle};
use super::handler::{Action, CloseReason, Conn, ConnId, EventHandler, LinkOptions, LoopInfo};
use super::socket::Listener;
use super::stats::{LoopStats, bump};
use super::timer::{Tick, TimerWheel};
use accept::Accepting;
use conn::{CLOSING, Connection, WANT_WRITABLE};
use connect::Dialer;
use proxy_header::HeaderWait;
use timers::Timeouts;

/// Connection slots a loop reserves up front (address space only; see `EventLoop::new`).
const SLAB_RESERVE: usize = 4096;

/// What a callback asked for beyond its own connection, carried out by the loop right
/// after the callback's output is written (`after_callback`).
#[derive(Debug)]
pub(crate) enum Op {
    /// Link `a` (the caller) with `b`.
    Link { a: ConnId, b: ConnId, opts: LinkOptions },
    /// Read this connection now (reading was resumed; edge triggering brings no new
    /// event for bytes that arrived meanwhile).
    ReadNow(ConnId),
}

/// The part of a loop a callback may change besides its own connection: connects in
/// flight, queued operations, the generation counter. A field of its own, so it can be
/// lent to [`Conn`] while a connection's record is borrowed.
pub(crate) struct Ctx {
    pub(super) dialer: Dialer,
    pub(crate) ops: Vec<Op>,
    pub(super) next_generation: u64,
}

impl Ctx {
    /// A fresh generation number (unique within the loop).
    pub(super) fn generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }
}

/// Everything a loop needs, created on the starting thread so errors surface there.
pub(crate) struct LoopParts {
    pub(crate) id: usize,
    pub(crate) loops: usize,
    pub(crate) poll: Poll,
    pub(crate) rx: Receiver<Command>,
    pub(crate) remote: LoopRemote,
    /// (listen address index, listener) pairs owned by this loop alone (reuseport TCP).
    pub(crate) listeners: Vec<(usize, Listener)>,
    /// (listen address index, socket) pairs: the UDP sockets this loop serves.
    pub(crate) udp: Vec<(usize, UdpSocket)>,
    pub(crate) config: Arc<Config>,
    pub(crate) server: ServerHandle,
}

impl LoopParts {
    /// Registers this loop's own listeners and UDP sockets in its poller.
    pub(crate) fn register_sockets(&mut self) -> io::Result<()> {
        let registry = self.poll.registry();
        for (i, (_, l)) in self.listeners.iter_mut().enumerate() {
            registry.register(l, Tok::Listener(i).token(), Interest::READABLE)?;
        }
        for (i, (_, u)) in self.udp.iter_mut().enumerate() {
            registry.register(u, Tok::Udp(i).token(), Interest::READABLE)?;
        }
        Ok(())
    }
}

/// One loop's state. Built on its own thread by [`EventLoop::new`], then [`run`]
/// until shutdown.
///
/// [`run`]: EventLoop::run
pub(crate) struct EventLoop<H: EventHandler> {
    handler: H,
    parts: LoopParts,
    conns: Slab<Connection<H::State>>,
    stats: Arc<LoopStats>,
    /// Per-loop read buffer: every read lands here first.
    rbuf: Vec<u8>,
    /// Per-loop output buffer for connections with nothing pending (the fast path).
    wbuf: Vec<u8>,
    /// Where a callback of a connection without buffers leaves its unconsumed input;
    /// moved into the connection's buffers right after (empty between callbacks).
    spare_input: Vec<u8>,
    /// Connects in flight, queued operations, generations.
    ctx: Ctx,
    /// Slab keys of open outbound connections by generation, to resolve the ids
    /// [`Conn::connect`] returned before the connection had a key.
    outbound_keys: HashMap<u64, usize>,
    next_tick: Option<Instant>,
    /// This loop's side of the accept path: its back-off and rate-limited log.
    accepting: Accepting,
    /// A keepalive/nodelay setup failure was logged (once per loop).
    sockopt_warned: bool,
    /// Connections closing with unflushed output, in deadline order.
    closing: VecDeque<(usize, u64, Instant)>,
    /// Connections whose read budget ran out while still readable.
    more_to_read: Vec<(usize, u64)>,
    /// UDP sockets (positions in `parts.udp`) whose datagram budget ran out.
    more_datagrams: Vec<usize>,
    /// Idle and incomplete-request timeouts; `None` when neither is configured, and
    /// then no clock is read for them.
    timeouts: Option<Timeouts>,
    wheel: TimerWheel,
    /// The wheel tick of this iteration (updated only when timeouts are on).
    now_tick: Tick,
    expired: Vec<super::timer::Entry>,
    /// Set while draining: the moment the loop stops regardless.
    draining: Option<Instant>,
    stop: bool,
    /// Accepted connections waiting for their PROXY header (`proxy_header.rs`).
    headers: HeaderWait,
    /// TLS sessions' configuration and handshake deadlines (`None`: no TLS listener).
    tls: Option<tls::LoopTls>,
}

impl<H: EventHandler> EventLoop<H> {
    /// A loop over `parts`, serving with `handler`.
    pub(crate) fn new(handler: H, parts: LoopParts) -> Self {
        let rsize = parts.config.read_buffer.max(512);
        EventLoop {
            handler,
            stats: parts.remote.stats.clone(),
            // Reserved, not touched: a large allocation is mapped on its own, and only
            // the pages of slots in use become resident. Growing from empty instead
            // leaves each smaller copy behind in the thread's malloc arena.
            conns: Slab::with_capacity(SLAB_RESERVE),
            rbuf: vec![0; rsize],
            wbuf: Vec::with_capacity(rsize),
            spare_input: Vec::new(),
            ctx: Ctx { dialer: Dialer::new(), ops: Vec::new(), next_generation: 0 },
            outbound_keys: HashMap::new(),
            next_tick: None,
            accepting: Accepting::new(format!("loop {}", parts.id)),
            sockopt_warned: false,
            closing: VecDeque::new(),
            more_to_read: Vec::new(),
            more_datagrams: Vec::new(),
            timeouts: Timeouts::of(&parts.config),
            wheel: TimerWheel::new(Instant::now()),
            now_tick: 0,
            expired: Vec::new(),
            draining: None,
            stop: false,
            headers: HeaderWait::new(&parts.config),
            tls: tls::LoopTls::of(&parts.config),
            parts,
        }
    }

    /// Runs until shutdown (or the end of a drain), then closes every connection.
    pub(crate) fn run(mut self) {
        let info = LoopInfo {
            id: self.parts.id,
            loops: self.parts.loops,
            addrs: self.parts.server.listeners().to_vec(),
            server: self.parts.server.clone(),
        };
        self.handler.serving(&info);
        self.run_tick(Instant::now());
        let mut events = Events::with_capacity(1024);
        while !self.stop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.parts.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("loop {}: poll failed: {e}; shutting the server down", self.parts.id);
                self.parts.server.shutdown();
                break;
            }
            bump(&self.stats.poll_iterations, 1);
            if self.timeouts.is_some() {
                self.now_tick = self.wheel.tick_of(Instant::now());
            }
            for ev in events.iter() {
                match Tok::of(ev.token()) {
                    Tok::Conn(key) => {
                        // Errors and hang-ups surface through read/write.
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.on_conn_event(key, readable, ev.is_writable(), ev.is_read_closed());
                    }
                    Tok::Waker => self.on_wake(),
                    Tok::Listener(i) => self.accept(i),
                    Tok::Udp(i) => self.on_datagrams(i),
                    Tok::Dial(i) => self.on_dial_event(i),
                    Tok::Header(i) => self.on_header_event(i, ev.is_read_closed()),
                }
            }
            self.continue_reads();
            self.report_connect_failures();
            for i in std::mem::take(&mut self.more_datagrams) {
                self.on_datagrams(i);
            }
            self.run_timers();
            if self.draining.is_some() && self.conns.is_empty() && self.drained_for_good() {
                break;
            }
        }
        self.close_all();
    }

    /// A draining loop with no connections may end once the acceptor has ended and the
    /// connections it handed over before that (queued commands) are registered: false
    /// while any is left to serve.
    fn drained_for_good(&mut self) -> bool {
        if !self.parts.server.shared.acceptor_done.load(Ordering::Acquire) {
            return false;
        }
        // Everything the acceptor sent is queued by now (it sent before it ended).
        self.on_wake();
        self.conns.is_empty()
    }

    /// Whether slot `key` still holds the connection of that generation.
    fn is_current(&self, key: usize, generation: u64) -> bool {
        self.conns.get(key).is_some_and(|c| c.generation == generation)
    }

    /// The slab key of connection `id` if it is open on this loop.
    fn resolve(&self, id: ConnId) -> Option<usize> {
        if id.loop_id != self.parts.id {
            return None;
        }
        let key = if id.key == ConnId::UNOPENED {
            *self.outbound_keys.get(&id.generation)?
        } else {
            id.key
        };
        self.is_current(key, id.generation).then_some(key)
    }

    /// Carries out what the last callback queued ([`Op`]).
    fn apply_ops(&mut self) {
        for op in std::mem::take(&mut self.ctx.ops) {
            match op {
                Op::Link { a, b, opts } => self.link(a, b, opts),
                Op::ReadNow(id) => {
                    if let Some(key) = self.resolve(id) {
                        self.more_to_read.push((key, id.generation));
                    }
                }
            }
        }
    }

    // ---- waker and commands -------------------------------------------------------

    fn on_wake(&mut self) {
        self.parts.remote.waker.reset();
        bump(&self.stats.wakeups, 1);
        // Only what is queued now: later commands come with a wake of their own.
        for _ in 0..self.parts.rx.len() {
            let Ok(cmd) = self.parts.rx.try_recv() else { break };
            match cmd {
                Command::Register { stream, peer, listener, admitted } => {
                    if !admitted && !self.parts.server.shared.admit() {
                        bump(&self.stats.rejected, 1);
                        continue;
                    }
                    self.open(stream, peer, listener);
                }
                Command::Wake { key, generation } => {
                    if self.accepts_commands(key, generation) {
                        let action = self.dispatch(key, |h, conn, state| h.woken(conn, state));
                        self.after_callback(key, action);
                    }
                }
                Command::Write { key, generation, bytes } => {
                    if self.accepts_commands(key, generation) {
                        if let Some(h) = self.conns[key].alive() {
                            h.taken(bytes.len());
                        }
                        self.queue(key, bytes);
                        self.check_writable(key);
                    }
                }
                Command::NotifyWritable { key, generation } => {
                    if self.accepts_commands(key, generation) {
                        self.conns[key].flags |= WANT_WRITABLE;
                        self.check_writable(key);
                    }
                }
                Command::Connect { to, timeout, tag } => self.connect_for_server(&to, timeout, tag),
                Command::Drain(deadline) => self.start_draining(deadline),
                Command::Shutdown => self.stop = true,
            }
        }
    }

    /// Whether a handle's command may act on `key`: the same connection, not closing.
    fn accepts_commands(&self, key: usize, generation: u64) -> bool {
        match self.conns.get(key) {
            Some(c) if c.generation == generation && !c.has(CLOSING) => true,
            _ => {
                bump(&self.stats.dropped_commands, 1);
                false
            }
        }
    }

    /// Graceful shutdown: close the listeners and the idle connections; the rest close
    /// as they become idle (see `after_callback`), or at the deadline.
    fn start_draining(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        self.accepting.stop();
        let registry = self.parts.poll.registry();
        for (_, mut l) in self.parts.listeners.drain(..) {
            let _ = registry.deregister(&mut l);
        }
        for (_, mut u) in self.parts.udp.drain(..) {
            let _ = registry.deregister(&mut u);
        }
        // Not yet heard from: accepted just before the drain, its request may be in
        // flight; it is served (then closed as idle) or closed at the deadline.
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle() && c.has(conn::HEARD))
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.close(key, CloseReason::Shutdown);
        }
    }

    // ---- callbacks ----------------------------------------------------------------

    /// Runs a callback that gets the connection's context and state (`woken`, ...).
    fn dispatch(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State) -> Action,
    ) -> Action {
        self.dispatch_with_input(key, |h, conn, state, _| f(h, conn, state))
    }

    /// Builds the callback context of connection `key` and runs `f` with it, its state
    /// and its leftover input. A panic in `f` (when caught) closes the connection:
    /// the returned `Action::Close` then finds it gone.
    fn dispatch_with_input(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State, &mut Vec<u8>) -> Action,
    ) -> Action {
        let Self { handler, conns, wbuf, parts, ctx, spare_input, .. } = self;
        let c = &mut conns[key];
        let pending = c.pending();
        let Connection { sock, state, generation, bufs, extra, alive, listener, flags, .. } = c;
        // A TLS connection's output holds ciphertext: its callbacks write plaintext to `wbuf`.
        let tls = extra.as_ref().is_some_and(|e| e.tls.is_some());
        let (input, out) = match bufs.as_deref_mut() {
            Some(b) => {
                let out = if pending > 0 && !tls { &mut b.output } else { wbuf };
                (&mut b.input, out)
            }
            // No buffers: a rest the handler leaves goes to the spare vector first.
            None => (spare_input, wbuf),
        };
        let (peer, origin, linked) = match extra.as_deref() {
            Some(e) => (e.peer, e.origin, e.link.is_some()),
            None => (None, None, false),
        };
        let mut conn = Conn {
            out,
            peer,
            listener: listener_index(*listener),
            socket: sock,
            pending,
            remote: &parts.remote,
            key,
            generation: *generation,
            alive,
            flags,
            linked,
            origin,
            ctx,
            registry: parts.poll.registry(),
            deadline: None,
        };
        let result = guard(parts.config.catch_panics, || f(handler, &mut conn, state, input));
        let deadline = conn.deadline;
        if !self.spare_input.is_empty() {
            // A rest left by a connection that had no buffers: they are made now. The
            // vectors trade places, so the spare one keeps the (empty) pooled one's
            // allocation for the next rest.
            if let Some(c) = self.conns.get_mut(key) {
                std::mem::swap(&mut c.bufs_mut().input, &mut self.spare_input);
            }
            self.spare_input.clear();
        }
        match result {
            Ok(action) => {
                if let Some(d) = deadline {
                    self.set_deadline(key, d);
                }
                action
            }
            Err(msg) => {
                bump(&self.stats.panics, 1);
                let peer = self.conns.get(key).map(|c| c.peer_for_log()).unwrap_or_default();
                error!(
                    "loop {}: handler panicked serving {peer}: {msg}; closing it",
                    self.parts.id
                );
                self.wbuf.clear();
                self.close(key, CloseReason::Panic(msg));
                Action::Close
            }
        }
    }
}

/// The listener index stored as u16 (u16::MAX for attached connections), as the API's usize.
fn listener_index(stored: u16) -> usize {
    if stored == u16::MAX { usize::MAX } else { usize::from(stored) }
}

/// Runs a handler callback, catching a panic when `catch` is on (the message is returned
/// as the error). With `catch` off a panic unwinds through the loop thread.
fn guard<R>(catch: bool, f: impl FnOnce() -> R) -> Result<R, String> {
    if !catch {
        return Ok(f());
    }
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into())
    })
}
