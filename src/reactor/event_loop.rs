//! One event loop: a thread with its own poller, connections, read buffer and timers.
//!
//! Each iteration: poll (timeout = the nearest timer), then for every event either drain
//! the waker and run the queued commands, accept on this loop's own listener (reuseport),
//! or serve one connection (the read and write paths are in `io.rs`): read until the
//! socket is drained, a short read, or the read budget; hand the unconsumed input to the
//! handler; write its output at once. Whatever the kernel does not take waits in the
//! connection's output buffer under WRITABLE interest, which is turned off again once
//! the buffer drains. Then the timers: the handler's tick, accept back-off, close
//! deadlines, and the connection timer wheel (idle and incomplete-request timeouts).

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, error, warn};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::config::Config;
use super::conn::{CLOSING, Connection};
use super::handle::{Command, LoopRemote, ServerHandle};
use super::handler::{Action, CloseReason, Conn, Datagram, EventHandler, LoopInfo};
use super::listener::configure_accepted;
use super::socket::{LoopSocket, Stream};
use super::stats::{LoopStats, bump};
use super::timer::{Tick, TimerWheel};
use crate::net::addr::Peer;
use crate::net::{ACCEPT_BACKOFF, is_resource_exhaustion};

/// Token of the loop's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Token of this loop's listener number `i` (reuseport mode).
fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// Everything a loop needs, created on the starting thread so errors surface there.
pub(crate) struct LoopParts {
    pub(crate) id: usize,
    pub(crate) loops: usize,
    pub(crate) poll: Poll,
    pub(crate) rx: Receiver<Command>,
    pub(crate) remote: LoopRemote,
    /// (listen address index, socket) pairs owned by this loop alone: reuseport TCP
    /// listeners and UDP sockets.
    pub(crate) listeners: Vec<(usize, LoopSocket)>,
    pub(crate) config: Arc<Config>,
    pub(crate) server: ServerHandle,
}

impl LoopParts {
    /// Registers this loop's own listeners in its poller.
    pub(crate) fn register_listeners(&mut self) -> io::Result<()> {
        for (i, (_, l)) in self.listeners.iter_mut().enumerate() {
            self.poll.registry().register(l, listener_token(i), Interest::READABLE)?;
        }
        Ok(())
    }
}

/// Connection timeouts in wheel ticks, when any is configured.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) idle: Option<Tick>,
    pub(crate) request: Option<Tick>,
}

impl Timeouts {
    /// The tick at which `c` times out, as its stamps stand now.
    pub(crate) fn deadline<S>(&self, c: &Connection<S>) -> Option<Tick> {
        let idle = self.idle.map(|t| c.active.saturating_add(t));
        let request =
            self.request.filter(|_| !c.input.is_empty()).map(|t| c.partial_since.saturating_add(t));
        match (idle, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub(crate) struct EventLoop<H: EventHandler> {
    pub(crate) handler: H,
    pub(crate) parts: LoopParts,
    pub(crate) conns: Slab<Connection<H::State>>,
    pub(crate) stats: Arc<LoopStats>,
    /// Per-loop read buffer: every read lands here first.
    pub(crate) rbuf: Vec<u8>,
    /// Per-loop output buffer for connections with nothing pending (the fast path).
    pub(crate) wbuf: Vec<u8>,
    next_generation: u64,
    next_tick: Option<Instant>,
    accept_retry: Option<Instant>,
    /// Connections closing with unflushed output, in deadline order.
    pub(crate) closing: VecDeque<(usize, u64, Instant)>,
    /// Connections whose read budget ran out while still readable.
    pub(crate) more_to_read: Vec<(usize, u64)>,
    /// UDP sockets (listener positions) whose datagram budget ran out.
    more_datagrams: Vec<usize>,
    /// Idle and incomplete-request timeouts; `None` when neither is configured, and
    /// then no clock is read for them.
    pub(crate) timeouts: Option<Timeouts>,
    pub(crate) wheel: TimerWheel,
    /// The wheel tick of this iteration (updated only when timeouts are on).
    pub(crate) now_tick: Tick,
    expired: Vec<(usize, u64, Tick)>,
    /// Set while draining: the moment the loop stops regardless.
    pub(crate) draining: Option<Instant>,
    pub(crate) stop: bool,
}

impl<H: EventHandler> EventLoop<H> {
    pub(crate) fn new(handler: H, parts: LoopParts) -> Self {
        let rsize = parts.config.read_buffer.max(512);
        let cfg = &parts.config;
        let timeouts =
            (cfg.idle_timeout.is_some() || cfg.request_timeout.is_some()).then(|| Timeouts {
                idle: cfg.idle_timeout.map(TimerWheel::ticks),
                request: cfg.request_timeout.map(TimerWheel::ticks),
            });
        EventLoop {
            handler,
            stats: parts.remote.stats.clone(),
            conns: Slab::new(),
            rbuf: vec![0; rsize],
            wbuf: Vec::with_capacity(rsize),
            next_generation: 0,
            next_tick: None,
            accept_retry: None,
            closing: VecDeque::new(),
            more_to_read: Vec::new(),
            more_datagrams: Vec::new(),
            timeouts,
            wheel: TimerWheel::new(Instant::now()),
            now_tick: 0,
            expired: Vec::new(),
            draining: None,
            stop: false,
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
                match ev.token() {
                    WAKER => self.on_wake(),
                    Token(key) if key < usize::MAX - 1 - self.parts.listeners.len() => {
                        // Errors and hang-ups surface through read/write.
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.on_conn_event(key, readable, ev.is_writable(), ev.is_read_closed());
                    }
                    Token(t) => self.on_loop_socket(usize::MAX - 1 - t),
                }
            }
            self.continue_reads();
            for i in std::mem::take(&mut self.more_datagrams) {
                self.on_datagrams(i);
            }
            self.run_timers();
            if self.draining.is_some() && self.conns.is_empty() {
                break;
            }
        }
        self.close_all();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.more_to_read.is_empty() || !self.more_datagrams.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = [
            self.next_tick,
            self.accept_retry,
            self.closing.front().map(|c| c.2),
            self.wheel.next_deadline(),
            self.draining,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    fn run_timers(&mut self) {
        if self.next_tick.is_none()
            && self.accept_retry.is_none()
            && self.closing.is_empty()
            && self.wheel.next_deadline().is_none()
            && self.draining.is_none()
        {
            return;
        }
        let now = Instant::now();
        if self.next_tick.is_some_and(|t| t <= now) {
            self.run_tick(now);
        }
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            for i in 0..self.parts.listeners.len() {
                self.accept(i);
            }
        }
        while let Some(&(key, generation, deadline)) = self.closing.front() {
            if deadline > now {
                break;
            }
            self.closing.pop_front();
            if self.is_current(key, generation) {
                self.close(key, CloseReason::FlushTimeout);
            }
        }
        if self.wheel.next_deadline().is_some_and(|t| t <= now) {
            self.expire_timeouts(now);
        }
        if self.draining.is_some_and(|t| t <= now) {
            self.stop = true;
        }
    }

    /// Calls the handler's tick and schedules the next one.
    fn run_tick(&mut self, now: Instant) {
        let handler = &mut self.handler;
        match guard(self.parts.config.catch_panics, || handler.tick()) {
            Ok(next) => self.next_tick = next.map(|d| now + d),
            Err(msg) => {
                bump(&self.stats.panics, 1);
                error!("loop {}: tick panicked: {msg}; ticking stops", self.parts.id);
                self.next_tick = None;
            }
        }
    }

    /// Closes connections whose idle or incomplete-request timeout has passed, and
    /// moves the others' wheel entries to their current deadlines.
    fn expire_timeouts(&mut self, now: Instant) {
        let Some(timeouts) = self.timeouts else { return };
        self.now_tick = self.wheel.tick_of(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for &(key, generation, tick) in &expired {
            let Some(c) = self.conns.get_mut(key) else { continue };
            if c.generation != generation || c.timer_at != tick || c.has(CLOSING) {
                continue;
            }
            c.timer_at = Tick::MAX;
            let request_due = timeouts.request.is_some_and(|t| {
                !c.input.is_empty() && c.partial_since.saturating_add(t) <= self.now_tick
            });
            let idle_due =
                timeouts.idle.is_some_and(|t| c.active.saturating_add(t) <= self.now_tick);
            if request_due {
                bump(&self.stats.request_timeouts, 1);
                self.close(key, CloseReason::RequestTimeout);
            } else if idle_due {
                bump(&self.stats.idle_timeouts, 1);
                self.close(key, CloseReason::IdleTimeout);
            } else {
                self.schedule(key);
            }
        }
        expired.clear();
        self.expired = expired;
    }

    /// Makes sure the wheel holds an entry no later than `key`'s current deadline.
    pub(crate) fn schedule(&mut self, key: usize) {
        let Some(timeouts) = self.timeouts else { return };
        let c = &mut self.conns[key];
        let Some(due) = timeouts.deadline(c) else { return };
        if c.timer_at == Tick::MAX || due < c.timer_at {
            c.timer_at = due;
            self.wheel.insert(key, c.generation, due);
        }
    }

    pub(crate) fn is_current(&self, key: usize, generation: u64) -> bool {
        self.conns.get(key).is_some_and(|c| c.generation == generation)
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
                        let c = &mut self.conns[key];
                        if c.pending() == 0 {
                            c.output = bytes;
                            c.out_pos = 0;
                        } else {
                            c.output.extend_from_slice(&bytes);
                        }
                        self.after_callback(key, Action::None);
                    }
                }
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
        self.accept_retry = None;
        for (_, mut l) in self.parts.listeners.drain(..) {
            let _ = self.parts.poll.registry().deregister(&mut l);
        }
        let idle: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.is_idle()).map(|(k, _)| k).collect();
        for key in idle {
            self.close(key, CloseReason::Shutdown);
        }
    }

    // ---- accepting ----------------------------------------------------------------

    fn on_loop_socket(&mut self, i: usize) {
        match self.parts.listeners.get(i) {
            Some((_, LoopSocket::Listener(_))) => self.accept(i),
            Some((_, LoopSocket::Udp(_))) => self.on_datagrams(i),
            None => {}
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            let Some((index, LoopSocket::Listener(listener))) = self.parts.listeners.get(i) else {
                return;
            };
            let index = *index;
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.parts.server.shared.admit() {
                        self.open(stream, peer, index);
                    } else {
                        bump(&self.stats.rejected, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    bump(&self.stats.accept_would_block, 1);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    bump(&self.stats.accept_errors, 1);
                    if is_resource_exhaustion(&e) {
                        warn!("loop {}: accept: {e}; pausing accepts", self.parts.id);
                        self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                    debug!("loop {}: accept: {e}", self.parts.id);
                }
            }
        }
    }

    /// Takes on a new connection (already admitted): registers it, then calls `opened`.
    fn open(&mut self, mut sock: Stream, peer: Peer, listener: usize) {
        configure_accepted(&sock, &self.parts.config);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.parts.poll.registry().register(&mut sock, Token(key), Interest::READABLE)
        {
            warn!("loop {}: cannot register connection from {peer}: {e}", self.parts.id);
            self.parts.server.shared.release();
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut alive = None;
        let mut conn = Conn {
            out: &mut self.wbuf,
            peer,
            listener,
            socket: &sock,
            pending: 0,
            remote: &self.parts.remote,
            key,
            generation,
            alive: &mut alive,
        };
        let handler = &mut self.handler;
        let state = match guard(self.parts.config.catch_panics, || handler.opened(&mut conn)) {
            Ok((state, action)) => (state, action),
            Err(msg) => {
                bump(&self.stats.panics, 1);
                error!("loop {}: opened panicked for {peer}: {msg}; closing it", self.parts.id);
                self.wbuf.clear();
                self.parts.server.shared.release();
                return; // dropping `sock` closes it
            }
        };
        let (state, action) = state;
        entry.insert(Connection {
            sock,
            state,
            generation,
            peer,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            alive,
            listener: u32::try_from(listener).unwrap_or(u32::MAX),
            flags: 0,
            active: self.now_tick,
            partial_since: 0,
            timer_at: Tick::MAX,
        });
        bump(&self.stats.accepted, 1);
        bump(&self.stats.open, 1);
        if self.timeouts.is_some() {
            self.now_tick = self.wheel.tick_of(Instant::now());
            self.conns[key].active = self.now_tick;
            self.schedule(key);
        }
        self.after_callback(key, action);
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// Serves the datagrams waiting on UDP socket `i`: each is one `datagram` callback,
    /// and what the handler writes goes back to its sender as one datagram. A datagram
    /// larger than the read buffer is truncated (and counted); a reply the kernel will
    /// not take right now is dropped (and counted), as UDP allows.
    fn on_datagrams(&mut self, i: usize) {
        for _ in 0..DATAGRAM_BUDGET {
            let Some((index, LoopSocket::Udp(sock))) = self.parts.listeners.get(i) else { return };
            let index = *index;
            let (n, from) = match recv_datagram(sock, &mut self.rbuf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // e.g. ECONNREFUSED from an ICMP error for an earlier reply.
                    debug!("loop {}: udp recv: {e}", self.parts.id);
                    continue;
                }
            };
            bump(&self.stats.datagrams_in, 1);
            bump(&self.stats.bytes_read, n.min(self.rbuf.len()) as u64);
            let truncated = n > self.rbuf.len();
            if truncated {
                bump(&self.stats.datagrams_truncated, 1);
            }
            let data = &self.rbuf[..n.min(self.rbuf.len())];
            let mut dgram = Datagram { from, listener: index, truncated, reply: &mut self.wbuf };
            let handler = &mut self.handler;
            if let Err(msg) =
                guard(self.parts.config.catch_panics, || handler.datagram(&mut dgram, data))
            {
                bump(&self.stats.panics, 1);
                error!("loop {}: datagram handler panicked for {from}: {msg}", self.parts.id);
                self.wbuf.clear();
                continue;
            }
            if !self.wbuf.is_empty() {
                match sock.send_to(&self.wbuf, from) {
                    Ok(sent) => {
                        bump(&self.stats.datagrams_out, 1);
                        bump(&self.stats.bytes_written, sent as u64);
                    }
                    Err(e) => {
                        bump(&self.stats.datagrams_dropped, 1);
                        debug!("loop {}: udp reply to {from} dropped: {e}", self.parts.id);
                    }
                }
                self.wbuf.clear();
            }
        }
        // Budget spent: serve the others, then come back.
        self.more_datagrams.push(i);
    }
}

/// Datagrams served per readiness event before the loop turns to other work.
const DATAGRAM_BUDGET: usize = 256;

/// Receives one datagram into `buf`. Returns the datagram's full length (larger than
/// `buf` when it was truncated: `MSG_TRUNC`) and its sender.
fn recv_datagram(
    sock: &mio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the buffer is already
    // initialised; recvfrom only writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = socket2::SockRef::from(sock).recv_from_with_flags(uninit, libc::MSG_TRUNC)?;
    let from = from.as_socket().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
    })?;
    Ok((n, from))
}

/// Runs a handler callback, catching a panic when `catch` is on (the message is returned
/// as the error). With `catch` off a panic unwinds through the loop thread.
pub(crate) fn guard<R>(catch: bool, f: impl FnOnce() -> R) -> Result<R, String> {
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
