//! One event loop: a thread with its own poller, connections, read buffer and timers.
//!
//! Each iteration: poll (timeout = the nearest timer), then for every event either drain
//! the waker and run the queued commands, accept on this loop's own listener (reuseport),
//! or serve one connection: read until the socket is drained, a short read, or the read
//! budget; hand the unconsumed input to the handler; write its output at once. Whatever
//! the kernel does not take waits in the connection's output buffer under WRITABLE
//! interest, which is turned off again once the buffer drains.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::config::Config;
use super::conn::{CLOSING, Connection, HUP_SEEN, PAUSED, READ_CLOSED, WRITE_INTEREST};
use super::handle::{Command, LoopRemote, ServerHandle};
use super::handler::{Action, CloseReason, Conn, Detached, EventHandler, LoopInfo};
use super::listener::is_resource_exhaustion;
use super::stats::{LoopStats, bump};

/// Token of the loop's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// How long accepting pauses after the process ran out of descriptors or memory.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    /// (listen address index, listener) pairs owned by this loop alone.
    pub(crate) listeners: Vec<(usize, TcpListener)>,
    pub(crate) config: Arc<Config>,
    pub(crate) server: ServerHandle,
}

impl LoopParts {
    /// Registers this loop's own listeners in its poller.
    pub(crate) fn register_listeners(&mut self) -> io::Result<()> {
        for (i, (_, l)) in self.listeners.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(l, listener_token(i), Interest::READABLE)?;
        }
        Ok(())
    }
}

pub(crate) struct EventLoop<H: EventHandler> {
    handler: H,
    parts: LoopParts,
    conns: Slab<Connection<H::State>>,
    stats: Arc<LoopStats>,
    /// Per-loop read buffer: every read lands here first.
    rbuf: Vec<u8>,
    /// Per-loop output buffer for connections with nothing pending (the fast path).
    wbuf: Vec<u8>,
    next_generation: u64,
    next_tick: Option<Instant>,
    accept_retry: Option<Instant>,
    /// Connections closing with unflushed output, in deadline order.
    closing: VecDeque<(usize, u64, Instant)>,
    /// Connections whose read budget ran out while still readable.
    more_to_read: Vec<(usize, u64)>,
    stop: bool,
}

impl<H: EventHandler> EventLoop<H> {
    pub(crate) fn new(handler: H, parts: LoopParts) -> Self {
        let rsize = parts.config.read_buffer.max(512);
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
            stop: false,
            parts,
        }
    }

    /// Runs until shutdown, then closes every connection.
    pub(crate) fn run(mut self) {
        let info = LoopInfo {
            id: self.parts.id,
            loops: self.parts.loops,
            addrs: self.parts.server.local_addrs().to_vec(),
            server: self.parts.server.clone(),
        };
        self.handler.serving(&info);
        self.next_tick = self.handler.tick().map(|d| Instant::now() + d);
        let mut events = Events::with_capacity(1024);
        while !self.stop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.parts.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(
                    "loop {}: poll failed: {e}; shutting the server down",
                    self.parts.id
                );
                self.parts.server.shutdown();
                break;
            }
            bump(&self.stats.poll_iterations, 1);
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.on_wake(),
                    Token(key) if key < usize::MAX - 1 - self.parts.listeners.len() => {
                        // Errors and hang-ups surface through read/write.
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.on_conn_event(key, readable, ev.is_writable(), ev.is_read_closed());
                    }
                    Token(t) => self.accept(usize::MAX - 1 - t),
                }
            }
            self.continue_reads();
            self.run_timers();
        }
        self.close_all();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.more_to_read.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = [
            self.next_tick,
            self.accept_retry,
            self.closing.front().map(|c| c.2),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    fn run_timers(&mut self) {
        if self.next_tick.is_none() && self.accept_retry.is_none() && self.closing.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = self.handler.tick().map(|d| now + d);
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
    }

    fn is_current(&self, key: usize, generation: u64) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.generation == generation)
    }

    // ---- waker and commands -------------------------------------------------------

    fn on_wake(&mut self) {
        self.parts.remote.waker.reset();
        bump(&self.stats.wakeups, 1);
        // Only what is queued now: later commands come with a wake of their own.
        for _ in 0..self.parts.rx.len() {
            let Ok(cmd) = self.parts.rx.try_recv() else {
                break;
            };
            match cmd {
                Command::Register {
                    stream,
                    peer,
                    listener,
                } => self.open(stream, peer, listener),
                Command::Wake { key, generation } => {
                    if self.accepts_commands(key, generation) {
                        let action = self.callback(key, |h, conn, state| h.woken(conn, state));
                        self.after_callback(key, action);
                    }
                }
                Command::Write {
                    key,
                    generation,
                    bytes,
                } => {
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

    // ---- accepting ----------------------------------------------------------------

    fn accept(&mut self, i: usize) {
        loop {
            let Some((index, listener)) = self.parts.listeners.get(i) else {
                return;
            };
            let index = *index;
            match listener.accept() {
                Ok((stream, peer)) => self.open(stream, peer, index),
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

    /// Takes on a new connection: registers it, then calls `opened`.
    fn open(&mut self, mut sock: TcpStream, peer: SocketAddr, listener: usize) {
        if self.parts.config.nodelay {
            let _ = sock.set_nodelay(true);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.parts
                .poll
                .registry()
                .register(&mut sock, Token(key), Interest::READABLE)
        {
            warn!(
                "loop {}: cannot register connection from {peer}: {e}",
                self.parts.id
            );
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
        let (state, action) = self.handler.opened(&mut conn);
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
        });
        bump(&self.stats.accepted, 1);
        bump(&self.stats.open, 1);
        self.after_callback(key, action);
    }

    // ---- reading ------------------------------------------------------------------

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, hup: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if hup {
            // The FIN came with this edge: no later event will report it.
            c.flags |= HUP_SEEN;
        }
        if writable && c.has(WRITE_INTEREST) {
            self.on_writable(key);
        }
        if readable {
            self.on_readable(key);
        }
    }

    /// Reads until the socket is drained (WouldBlock, or a short read unless the peer's
    /// FIN is known to be queued), the connection stops being readable, or the read
    /// budget is spent.
    fn on_readable(&mut self, key: usize) {
        for _ in 0..self.parts.config.read_budget {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.has(PAUSED | READ_CLOSED | CLOSING) {
                return;
            }
            let n = match (&c.sock).read(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(key, CloseReason::Error(e)),
            };
            bump(&self.stats.reads, 1);
            if n == 0 {
                c.flags |= READ_CLOSED;
                if c.pending() == 0 {
                    self.close(key, CloseReason::PeerClosed);
                }
                return;
            }
            bump(&self.stats.bytes_read, n as u64);
            let action = self.deliver(key, n);
            if !self.after_callback(key, action) {
                return;
            }
            if n < self.rbuf.len() && !self.conns[key].has(HUP_SEEN) {
                // A short read drained the socket; new bytes will raise a new edge.
                return;
            }
        }
        // Budget spent while the socket may still hold data: edge-triggered polling will
        // not report it again, so come back after serving the others.
        if let Some(c) = self.conns.get(key) {
            self.more_to_read.push((key, c.generation));
        }
    }

    fn continue_reads(&mut self) {
        if self.more_to_read.is_empty() {
            return;
        }
        for (key, generation) in std::mem::take(&mut self.more_to_read) {
            if self.is_current(key, generation) {
                self.on_readable(key);
            }
        }
    }

    /// Hands `rbuf[..n]`, after any leftover input, to the handler and keeps the
    /// unconsumed tail.
    fn deliver(&mut self, key: usize, n: usize) -> Action {
        let Self {
            handler,
            conns,
            rbuf,
            wbuf,
            parts,
            ..
        } = self;
        let c = &mut conns[key];
        let pending = c.pending();
        let Connection {
            sock,
            state,
            generation,
            peer,
            input,
            output,
            alive,
            listener,
            ..
        } = c;
        let mut conn = Conn {
            out: if pending > 0 { output } else { wbuf },
            peer: *peer,
            listener: listener_index(*listener),
            socket: sock,
            pending,
            remote: &parts.remote,
            key,
            generation: *generation,
            alive,
        };
        if input.is_empty() {
            let data = &rbuf[..n];
            let (consumed, action) = handler.data(&mut conn, state, data);
            if consumed < n {
                input.extend_from_slice(&data[consumed..]);
            }
            action
        } else {
            input.extend_from_slice(&rbuf[..n]);
            let (consumed, action) = handler.data(&mut conn, state, input);
            if consumed >= input.len() {
                *input = Vec::new();
            } else {
                input.drain(..consumed);
            }
            action
        }
    }

    /// Runs a callback that gets the connection's context and state (woken, ...).
    fn callback(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State) -> Action,
    ) -> Action {
        let Self {
            handler,
            conns,
            wbuf,
            parts,
            ..
        } = self;
        let c = &mut conns[key];
        let pending = c.pending();
        let Connection {
            sock,
            state,
            generation,
            peer,
            output,
            alive,
            listener,
            ..
        } = c;
        let mut conn = Conn {
            out: if pending > 0 { output } else { wbuf },
            peer: *peer,
            listener: listener_index(*listener),
            socket: sock,
            pending,
            remote: &parts.remote,
            key,
            generation: *generation,
            alive,
        };
        f(handler, &mut conn, state)
    }

    // ---- writing ------------------------------------------------------------------

    /// Writes what the callback produced, then carries out its action. Returns whether
    /// the connection is still open and may be read.
    fn after_callback(&mut self, key: usize, action: Action) -> bool {
        if let Err(e) = self.flush(key) {
            self.close(key, CloseReason::Error(e));
            return false;
        }
        match action {
            Action::None => {}
            Action::Close => {
                let c = &mut self.conns[key];
                c.flags |= CLOSING;
                if c.pending() > 0 {
                    let deadline = Instant::now() + self.parts.config.close_timeout;
                    self.closing.push_back((key, c.generation, deadline));
                }
            }
            Action::Shutdown => {
                self.stop = true;
                self.parts.server.shutdown();
                return false;
            }
            Action::Detach => {
                self.detach(key);
                return false;
            }
        }
        let c = &self.conns[key];
        if c.pending() == 0 && c.has(CLOSING | READ_CLOSED) {
            let reason = if c.has(CLOSING) {
                CloseReason::Closed
            } else {
                CloseReason::PeerClosed
            };
            self.close(key, reason);
            return false;
        }
        !c.has(PAUSED | CLOSING | READ_CLOSED)
    }

    /// Writes the output of a callback (or pending output) and sets WRITABLE interest
    /// and the read pause to match what is left.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        if !self.wbuf.is_empty() {
            // Fast path: nothing was pending, so the callback wrote into the loop's
            // buffer. One write; what the kernel does not take is kept, in order.
            let res = write_once(&c.sock, &self.wbuf);
            let written = match res {
                Ok(n) => {
                    bump(&self.stats.writes, 1);
                    bump(&self.stats.bytes_written, n as u64);
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    self.wbuf.clear();
                    return Err(e);
                }
            };
            if written < self.wbuf.len() {
                bump(&self.stats.partial_writes, 1);
                c.output.extend_from_slice(&self.wbuf[written..]);
            }
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * self.rbuf.len() {
                self.wbuf.shrink_to(self.rbuf.len());
            }
        } else if c.pending() > 0 && !c.has(WRITE_INTEREST) {
            c.write_pending(&self.stats)?;
        }
        let pending = c.pending();
        let cfg = &self.parts.config;
        if pending > 0 && !c.has(WRITE_INTEREST) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.parts
                .poll
                .registry()
                .reregister(&mut c.sock, Token(key), interest)?;
            c.flags |= WRITE_INTEREST;
        } else if pending == 0 && c.has(WRITE_INTEREST) && !c.has(CLOSING | READ_CLOSED) {
            self.parts
                .poll
                .registry()
                .reregister(&mut c.sock, Token(key), Interest::READABLE)?;
            c.flags &= !WRITE_INTEREST;
        }
        if pending > 0 {
            let peak = &self.stats.peak_pending_output;
            if pending as u64 > peak.load(Relaxed) {
                peak.store(pending as u64, Relaxed);
            }
            if pending > cfg.high_watermark {
                c.flags |= PAUSED;
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if let Err(e) = c.write_pending(&self.stats) {
            return self.close(key, CloseReason::Error(e));
        }
        let resume = c.has(PAUSED) && c.pending() <= self.parts.config.low_watermark;
        if resume {
            c.flags &= !PAUSED;
        }
        if self.after_callback(key, Action::None) && resume {
            // Bytes that arrived while paused raised no new edge: read them now.
            self.on_readable(key);
        }
    }

    // ---- closing ------------------------------------------------------------------

    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        c.mark_dead();
        bump(&self.stats.closed, 1);
        bump(&self.stats.open, u64::MAX); // wrapping -1
        // Dropping the socket closes it, which also removes it from epoll (we never
        // duplicate connection descriptors), saving an epoll_ctl per close.
        #[cfg(not(target_os = "linux"))]
        let _ = self.parts.poll.registry().deregister(&mut { c.sock });
        self.handler.closed(c.state, reason);
    }

    fn detach(&mut self, key: usize) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        c.mark_dead();
        let _ = c.write_pending(&self.stats);
        let _ = self.parts.poll.registry().deregister(&mut c.sock);
        bump(&self.stats.closed, 1);
        bump(&self.stats.open, u64::MAX);
        let output = c.output.split_off(c.out_pos);
        self.handler.detached(Detached {
            stream: c.sock.into(),
            state: c.state,
            input: c.input,
            output,
        });
    }

    /// At shutdown: one last nonblocking attempt to write pending output, then close.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let _ = self.conns[key].write_pending(&self.stats);
            self.close(key, CloseReason::Shutdown);
        }
    }
}

/// The listener index stored as u32 (u32::MAX for attached connections), as the API's usize.
fn listener_index(stored: u32) -> usize {
    if stored == u32::MAX {
        usize::MAX
    } else {
        stored as usize
    }
}

/// One nonblocking `write`, retried only on EINTR.
fn write_once(mut sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock.write(buf) {
            Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
