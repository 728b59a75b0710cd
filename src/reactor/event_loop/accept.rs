//! The accept path, for both ways of accepting:
//!
//! - `--reuseport` (Linux): every loop has its own listener and accepts on it in a loop
//!   ([`EventLoop::accept`]); the kernel spreads connections, so no loop is woken for a
//!   connection it does not get;
//! - otherwise: the single [`Acceptor`] thread waits on the one listener per address (and
//!   on every Unix listener) and hands each connection to a loop chosen by the balance
//!   policy ([`Picker`]) over the loop's channel and waker.
//!
//! Both go through one routine, [`Accepting::next`]: accept one connection, admit it
//! against `max_conns`, and sort failures with [`AcceptError::of`]: WouldBlock ends the
//! burst, ECONNABORTED and friends skip one connection, EMFILE/ENFILE pause accepting for
//! [`ACCEPT_BACKOFF`] (open connections go on being served) with the rate-limited
//! [`AcceptLog`]. A connection then ends up in [`EventLoop::open`], which also takes on
//! connections handed over with `ServerHandle::attach`: per-connection socket options,
//! registration, and the handler's `opened`.
//!
//! The connect path (`connect.rs`) ends there as well, through `open_outbound`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, error, warn};
use mio::{Events, Interest, Poll};
use socket2::{SockRef, TcpKeepalive};

use super::conn::{Connection, Extra, OUTBOUND};
use super::tls::{self, TlsSession};
use super::{EventLoop, Tok, guard};
use crate::net::addr::Peer;
use crate::net::{ACCEPT_BACKOFF, AcceptError, AcceptLog};
use crate::reactor::config::{Balance, Config};
use crate::reactor::handle::{Command, LoopRemote, ServerHandle, Shared};
use crate::reactor::handler::{Conn, EventHandler, Origin};
use crate::reactor::socket::{Listener, Stream};
use crate::reactor::stats::{LoopStats, bump};

/// One accepting thread's side of the accept path: who it is (for the log), its
/// rate-limited log of back-off pauses, and the end of the current pause.
#[derive(Debug)]
pub(super) struct Accepting {
    who: String,
    log: AcceptLog,
    retry_at: Option<Instant>,
}

impl Accepting {
    /// `who` names the thread in log lines ("loop 3", "acceptor").
    pub(super) fn new(who: String) -> Self {
        Accepting { who, log: AcceptLog::new(), retry_at: None }
    }

    /// Accepts the next connection waiting on `listener` and admits it against the
    /// server's `max_conns` (a connection over the limit is closed at once and counted
    /// as rejected). `None` when nothing more is waiting, or when accepting must pause:
    /// then [`retry_at`](Self::retry_at) says until when.
    pub(super) fn next(
        &mut self,
        listener: &Listener,
        stats: &LoopStats,
        shared: &Shared,
    ) -> Option<(Stream, Peer)> {
        loop {
            let e = match listener.accept() {
                Ok((stream, peer)) => {
                    self.log.accepted(&self.who);
                    if shared.admit() {
                        return Some((stream, peer));
                    }
                    bump(&stats.rejected, 1);
                    continue; // dropping the stream closes it
                }
                Err(e) => e,
            };
            match AcceptError::of(&e) {
                AcceptError::Drained => {
                    bump(&stats.accept_would_block, 1);
                    return None;
                }
                AcceptError::Retry => {}
                AcceptError::BackOff => {
                    bump(&stats.accept_errors, 1);
                    self.log.back_off(&self.who, &e);
                    self.retry_at = Some(Instant::now() + ACCEPT_BACKOFF);
                    return None;
                }
                AcceptError::Skip => {
                    bump(&stats.accept_errors, 1);
                    debug!("{}: accept: {e}", self.who);
                }
            }
        }
    }

    /// When the current back-off pause ends (`None`: accepting is not paused).
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// True (once) when a pause has ended by `now`: time to accept on every listener.
    fn retry_due(&mut self, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            return true;
        }
        false
    }

    /// Ends a pause for good (the listeners are going away).
    pub(super) fn stop(&mut self) {
        self.retry_at = None;
    }
}

// ---- a loop's own listeners (reuseport) -------------------------------------------

impl<H: EventHandler> EventLoop<H> {
    /// Accepts every connection waiting on this loop's listener `i`.
    pub(super) fn accept(&mut self, i: usize) {
        while let Some((index, listener)) = self.parts.listeners.get(i) {
            let index = *index;
            let shared = &self.parts.server.shared;
            let Some((stream, peer)) = self.accepting.next(listener, &self.stats, shared) else {
                return;
            };
            self.open(stream, peer, index);
        }
    }

    /// After a back-off pause: accept again on every listener of this loop.
    pub(super) fn accept_after_back_off(&mut self, now: Instant) {
        if self.accepting.retry_due(now) {
            for i in 0..self.parts.listeners.len() {
                self.accept(i);
            }
        }
    }

    /// Takes on a new connection (already admitted): socket options, registration, then
    /// `opened` and the write of what it produced.
    pub(super) fn open(&mut self, sock: Stream, peer: Peer, listener: usize) {
        if self.headers.wanted(listener) {
            // PROXY protocol: `open_accepted` runs once the header is in.
            return self.await_proxy_header(sock, peer, listener);
        }
        self.open_accepted(sock, peer, listener, false);
    }

    /// [`open`](Self::open) once any PROXY header is consumed (`peer`: the client it
    /// named, `proxied` true, kept with the connection; otherwise the socket's own peer,
    /// not kept): socket options, registration, the TLS session on a `tls://` listener
    /// (the PROXY header precedes the handshake, so TLS starts only here, never for
    /// outbound connections), `opened`.
    pub(super) fn open_accepted(
        &mut self,
        sock: Stream,
        peer: Peer,
        listener: usize,
        proxied: bool,
    ) {
        let extra = proxied.then(|| Box::new(Extra { peer: Some(peer), ..Extra::default() }));
        self.take_on(sock, peer, listener, None, extra);
    }

    /// Takes on an outbound connection that has just connected (registered already,
    /// under its dialer token): as [`open`](Self::open), with its origin and the
    /// generation its id was given when the connect started, and the client TLS
    /// session whose handshake completed in the dialer, if any.
    pub(super) fn open_outbound(
        &mut self,
        sock: Stream,
        peer: Peer,
        origin: Origin,
        generation: u64,
        client_tls: Option<Box<TlsSession>>,
    ) {
        let extra = Extra { origin: Some(origin), tls: client_tls, ..Extra::default() };
        self.take_on(sock, peer, usize::MAX, Some(generation), Some(Box::new(extra)));
    }

    /// [`open`](Self::open) and [`open_outbound`](Self::open_outbound).
    fn take_on(
        &mut self,
        mut sock: Stream,
        peer: Peer,
        listener: usize,
        outbound: Option<u64>,
        mut extra: Option<Box<Extra>>,
    ) {
        if let Err(e) = configure_accepted(&sock, &self.parts.config)
            && !self.sockopt_warned
        {
            self.sockopt_warned = true;
            warn!(
                "loop {}: connection from {peer}: {e}; served without it (logged once per loop)",
                self.parts.id
            );
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Tok::Conn(key).token();
        let registry = self.parts.poll.registry();
        let registered = match outbound {
            None => registry.register(&mut sock, token, Interest::READABLE),
            Some(_) => registry.reregister(&mut sock, token, Interest::READABLE),
        };
        if let Err(e) = registered {
            warn!("loop {}: cannot register connection with {peer}: {e}", self.parts.id);
            if outbound.is_none() {
                self.parts.server.shared.release();
            }
            return;
        }
        let generation = match outbound {
            Some(generation) => generation,
            None => self.ctx.generation(),
        };
        let origin = extra.as_ref().and_then(|e| e.origin);
        let mut flags = if outbound.is_some() { OUTBOUND } else { 0 };
        // Outbound connections: the client session the dialer's handshake made, if any
        // (already in `extra`).
        let session = match outbound {
            Some(_) => Ok(None),
            None => tls::new_session(self.tls.as_mut(), listener, key, generation),
        };
        match session {
            Ok(None) => {}
            Ok(Some(tls)) => extra.get_or_insert_with(Box::default).tls = Some(tls),
            Err(e) => {
                warn!("loop {}: cannot start TLS for {peer}: {e}", self.parts.id);
                let _ = self.parts.poll.registry().deregister(&mut sock);
                self.parts.server.shared.release();
                return;
            }
        }
        let mut alive = None;
        let mut conn = Conn {
            out: &mut self.wbuf,
            peer: Some(peer),
            listener,
            socket: &sock,
            pending: 0,
            remote: &self.parts.remote,
            key,
            generation,
            alive: &mut alive,
            flags: &mut flags,
            linked: false,
            origin,
            ctx: &mut self.ctx,
            registry,
            deadline: None,
        };
        let handler = &mut self.handler;
        let deadline;
        let (state, action) =
            match guard(self.parts.config.catch_panics, || handler.opened(&mut conn)) {
                Ok(opened) => {
                    deadline = conn.deadline;
                    opened
                }
                Err(msg) => {
                    bump(&self.stats.panics, 1);
                    error!("loop {}: opened panicked for {peer}: {msg}; closing it", self.parts.id);
                    self.wbuf.clear();
                    if outbound.is_none() {
                        self.parts.server.shared.release();
                    }
                    return; // dropping `sock` closes it
                }
            };
        let mut c = Connection::new(sock, state, generation, extra);
        c.alive = alive;
        c.listener = u16::try_from(listener).unwrap_or(u16::MAX);
        c.flags = flags;
        c.active = self.now_tick;
        entry.insert(c);
        if outbound.is_some() {
            bump(&self.stats.connects, 1);
            self.outbound_keys.insert(generation, key);
        } else {
            bump(&self.stats.accepted, 1);
        }
        bump(&self.stats.open, 1);
        if self.timeouts.is_some() {
            self.now_tick = self.wheel.tick_of(Instant::now());
            self.conns[key].active = self.now_tick;
            self.schedule(key);
        }
        if let Some(d) = deadline {
            self.set_deadline(key, d);
        }
        self.after_callback(key, action);
    }
}

/// Applies the per-connection socket options of `config` (`TCP_NODELAY`, keepalive) to
/// a freshly accepted socket. Every option is tried; the first failure is returned,
/// naming the option.
fn configure_accepted(sock: &Stream, config: &Config) -> io::Result<()> {
    let Stream::Tcp(sock) = sock else { return Ok(()) };
    let ctx =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("cannot set {what}: {e}"));
    let mut result = Ok(());
    if config.nodelay
        && let Err(e) = sock.set_nodelay(true)
    {
        result = Err(ctx("TCP_NODELAY", e));
    }
    if let Some((idle, interval)) = config.keepalive {
        let ka = TcpKeepalive::new().with_time(idle).with_interval(interval);
        if let Err(e) = SockRef::from(sock).set_tcp_keepalive(&ka) {
            result = result.and(Err(ctx("TCP keepalive", e)));
        }
    }
    result
}

// ---- the single acceptor (reuseport off) --------------------------------------------

/// The single acceptor thread: the shared listeners are registered in its poller only,
/// never in a loop's, so no loop is woken for a connection it does not get.
pub(crate) struct Acceptor {
    poll: Poll,
    /// (listen address index, listener).
    listeners: Vec<(usize, Listener)>,
    balance: Balance,
    /// This thread's counters (`loop="acceptor"`): its polls, accepts and accept errors.
    stats: Arc<LoopStats>,
    accepting: Accepting,
}

impl Acceptor {
    /// An acceptor over `listeners`, registered in `poll` (whose waker, under
    /// [`Tok::Waker`], is the server's acceptor waker).
    pub(crate) fn new(
        poll: Poll,
        mut listeners: Vec<(usize, Listener)>,
        balance: Balance,
        stats: Arc<LoopStats>,
    ) -> io::Result<Acceptor> {
        for (i, (_, l)) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Tok::Listener(i).token(), Interest::READABLE)?;
        }
        let accepting = Accepting::new("acceptor".into());
        Ok(Acceptor { poll, listeners, balance, stats, accepting })
    }

    /// Accepts until shutdown or drain.
    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        let _done = AcceptorDone(shared.clone());
        let loops = &shared.loops;
        let waker = match &shared.acceptor {
            Some((w, _)) => w.clone(),
            None => return,
        };
        let mut picker = Picker { balance: self.balance, next: 0, handed: vec![0; loops.len()] };
        let mut events = Events::with_capacity(64);
        // Listener positions with work, reused across iterations (no allocation per wake).
        let mut ready: Vec<usize> = Vec::with_capacity(self.listeners.len());
        while !shared.shutdown.load(Ordering::Acquire) && !shared.draining.load(Ordering::Acquire) {
            let timeout =
                self.accepting.retry_at().map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("acceptor: poll failed: {e}; shutting the server down");
                ServerHandle { shared: shared.clone() }.shutdown();
                return;
            }
            bump(&self.stats.poll_iterations, 1);
            ready.clear();
            for ev in events.iter() {
                match Tok::of(ev.token()) {
                    Tok::Waker => waker.reset(),
                    Tok::Listener(i) => ready.push(i),
                    Tok::Udp(_) | Tok::Conn(_) | Tok::Dial(_) | Tok::Header(_) => {}
                }
            }
            if self.accepting.retry_due(Instant::now()) {
                ready.clear();
                ready.extend(0..self.listeners.len());
            }
            for &i in &ready {
                self.accept_all(i, &shared, &mut picker);
            }
        }
    }

    /// Accepts every connection waiting on listener `i` and hands each to a loop.
    fn accept_all(&mut self, i: usize, shared: &Shared, picker: &mut Picker) {
        let Some((index, listener)) = self.listeners.get(i) else { return };
        // Checked per connection: once draining, what waits in the backlog stays there
        // (for the next process, when the socket is inherited).
        while !shared.draining.load(Ordering::Acquire)
            && let Some((stream, peer)) = self.accepting.next(listener, &self.stats, shared)
        {
            bump(&self.stats.accepted, 1);
            let target = picker.pick(&shared.loops, &peer);
            let cmd = Command::Register { stream, peer, listener: *index, admitted: true };
            if shared.loops[target].send(cmd).is_err() {
                debug!("acceptor: loop {target} has stopped; dropping {peer}");
            }
        }
    }
}

/// Marks the acceptor ended (however its thread ends) and wakes every loop: a draining
/// loop waits for this before it ends, so a connection the acceptor accepted just as the
/// drain began is still registered and served, never dropped with the loop's channel.
struct AcceptorDone(Arc<Shared>);

impl Drop for AcceptorDone {
    fn drop(&mut self) {
        self.0.acceptor_done.store(true, Ordering::Release);
        for l in &self.0.loops {
            let _ = l.waker.wake();
        }
    }
}

/// The balance policy's state.
struct Picker {
    balance: Balance,
    next: usize,
    /// Connections handed to each loop so far (the loop's `closed` counter is subtracted
    /// to get its open count without waiting for it to process the hand-over).
    handed: Vec<u64>,
}

impl Picker {
    /// The loop that gets a new connection from `peer`.
    fn pick(&mut self, loops: &[LoopRemote], peer: &Peer) -> usize {
        let n = loops.len();
        let i = match self.balance {
            Balance::RoundRobin => {
                let i = self.next % n;
                self.next = self.next.wrapping_add(1);
                i
            }
            Balance::LeastConnections => (0..n)
                .min_by_key(|&i| {
                    let closed = loops[i].stats.closed.load(Ordering::Relaxed);
                    self.handed[i].saturating_sub(closed)
                })
                .unwrap_or(0),
            Balance::SourceHash => {
                let mut h = DefaultHasher::new();
                if let Some(a) = peer.socket_addr() {
                    a.ip().hash(&mut h);
                }
                (h.finish() % n as u64) as usize
            }
        };
        self.handed[i] += 1;
        i
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A keepalive setup failure is reported, naming the option, not swallowed.
    #[test]
    fn socket_option_failure_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sock = Stream::Tcp(mio::net::TcpStream::from_std(client));
        let ok = Config::new();
        assert!(configure_accepted(&sock, &ok).is_ok());
        // Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s: this one is refused.
        let mut bad = Config::new();
        bad.keepalive = Some((Duration::from_secs(100_000), Duration::from_secs(100_000)));
        if cfg!(target_os = "linux") {
            let e = configure_accepted(&sock, &bad).unwrap_err();
            assert!(e.to_string().contains("TCP keepalive"), "{e}");
        }
    }
}
