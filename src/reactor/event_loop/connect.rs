//! The connect path: outbound connections opened by a loop without blocking.
//!
//! [`Conn::connect`] (from a callback) and [`ServerHandle::connect`] (from any thread,
//! through the loop's channel) both end in [`Dialer::start`]: a nonblocking `connect`
//! (socket2), the socket registered for WRITABLE under [`Tok::Dial`] in the loop's
//! dialer slab, and the connect timeout an entry in the dialer's [`TimerWheel`]. A
//! connect in flight has no handler state yet, which is why it lives in its own slab
//! and not in the connection slab.
//!
//! On the first writable (or error) event, `SO_ERROR` and `getpeername` say how it
//! ended ([`Stream::connect_result`]): connected, it leaves the dialer and is taken on
//! by `open` exactly as an accepted connection is (socket options, `opened`, then the
//! ordinary read and write paths), flagged outbound with its [`Origin`]; failed or timed
//! out, the handler hears of it: [`EventHandler::connect_failed`] on the requester (if
//! still open), or [`EventHandler::connect_error`] for a connect from outside the loops.
//! A connect that fails at once (refused while still in `connect`) is reported the same
//! way, after the current callback, never from inside it.
//!
//! With [`Conn::connect_tls`], a completed connect first runs the client TLS handshake
//! while still in the dialer (`tls.rs`, `ClientHandshake`): `opened` comes once it is
//! done, and a failed handshake (an untrusted or misnamed certificate, EOF) is a failed
//! connect, reported and counted (`connect_errors`, `tls_handshake_errors`) like a
//! refused one; the connect timeout covers the handshake too.
//!
//! [`Conn::connect`]: crate::reactor::Conn::connect
//! [`Conn::connect_tls`]: crate::reactor::Conn::connect_tls
//! [`ServerHandle::connect`]: crate::reactor::ServerHandle::connect
//! [`EventHandler::connect_failed`]: crate::reactor::EventHandler::connect_failed
//! [`EventHandler::connect_error`]: crate::reactor::EventHandler::connect_error

use std::io;
use std::time::{Duration, Instant};

use log::{debug, error};
use mio::{Interest, Registry};
use slab::Slab;

use super::conn::CLOSING;
use super::tls::{ClientHandshake, HandshakeStep};
use super::{Ctx, EventLoop, Tok, guard};
use crate::net::tls::ClientTls;
use crate::reactor::handler::{ConnId, ConnectAddr, EventHandler, Origin};
use crate::reactor::socket::Stream;
use crate::reactor::stats::bump;
use crate::reactor::timer::{self, TimerWheel};

/// One connect in flight.
pub(super) struct Dialing {
    sock: Stream,
    origin: Origin,
    /// The generation the connection will have once open (its [`ConnId`]'s).
    generation: u64,
    /// Client TLS to start once connected ([`Conn::connect_tls`]).
    tls: Option<ClientTls>,
    /// The client handshake, once connected with `tls` (boxed: rare).
    handshake: Option<Box<ClientHandshake>>,
}

/// A connect that ended badly, waiting to be reported.
struct Failure {
    origin: Origin,
    err: io::Error,
}

/// A loop's connects in flight, their timeouts, and failures not yet reported.
pub(crate) struct Dialer {
    dialing: Slab<Dialing>,
    /// Connect timeouts: (dialer slot, generation, tick).
    wheel: TimerWheel,
    expired: Vec<timer::Entry>,
    /// Failures to report after the current callback (or command).
    failed: Vec<Failure>,
}

impl Dialer {
    pub(super) fn new() -> Dialer {
        Dialer {
            dialing: Slab::new(),
            wheel: TimerWheel::new(Instant::now()),
            expired: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Starts connecting to `to`. `Err` only when no socket could be made or registered;
    /// a connect that fails at once is queued as a failure.
    fn start(
        &mut self,
        registry: &Registry,
        to: &ConnectAddr,
        timeout: Option<Duration>,
        origin: Origin,
        generation: u64,
        tls: Option<ClientTls>,
    ) -> io::Result<()> {
        let (mut sock, started) = Stream::connect(to)?;
        if let Err(err) = started {
            self.failed.push(Failure { origin, err });
            return Ok(());
        }
        let entry = self.dialing.vacant_entry();
        let i = entry.key();
        registry.register(&mut sock, Tok::Dial(i).token(), Interest::WRITABLE)?;
        entry.insert(Dialing { sock, origin, generation, tls, handshake: None });
        if let Some(t) = timeout {
            let due = self.wheel.tick_of(Instant::now() + t);
            self.wheel.insert(i, generation, due);
        }
        Ok(())
    }

    /// When the loop must wake for a connect timeout or a failure to report.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if !self.failed.is_empty() {
            return Some(Instant::now());
        }
        self.wheel.next_deadline()
    }
}

impl Ctx {
    /// [`Conn::connect`](crate::reactor::Conn::connect) and
    /// [`ServerHandle::connect`](crate::reactor::ServerHandle::connect): a generation for
    /// the new connection, then the connect itself.
    pub(crate) fn connect(
        &mut self,
        registry: &Registry,
        loop_id: usize,
        to: &ConnectAddr,
        timeout: Option<Duration>,
        origin: Origin,
        tls: Option<ClientTls>,
    ) -> io::Result<ConnId> {
        let generation = self.generation();
        self.dialer.start(registry, to, timeout, origin, generation, tls)?;
        Ok(ConnId { loop_id, key: ConnId::UNOPENED, generation })
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// A [`Command::Connect`](crate::reactor::handle::Command) from a `ServerHandle`.
    pub(super) fn connect_for_server(
        &mut self,
        to: &ConnectAddr,
        timeout: Option<Duration>,
        tag: u64,
    ) {
        let registry = self.parts.poll.registry();
        if let Err(err) = self.ctx.connect(
            registry,
            self.parts.id,
            to,
            timeout,
            Origin { tag, requester: None },
            None,
        ) {
            self.connect_failed(Origin { tag, requester: None }, err);
        }
    }

    /// A writable or error event on connect `i`: done (open it), failed (report it) or
    /// not yet (wait for the next event).
    pub(super) fn on_dial_event(&mut self, i: usize) {
        let Some(d) = self.ctx.dialer.dialing.get_mut(i) else { return };
        if d.handshake.is_some() {
            return self.advance_handshake(i);
        }
        let Some(result) = d.sock.connect_result() else { return };
        if let (Ok(peer), Some(tls)) = (&result, d.tls.take()) {
            // Connected, with TLS to speak: the handshake first, still in the dialer.
            let started = ClientHandshake::start(&tls, *peer).and_then(|h| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.parts.poll.registry().reregister(
                    &mut d.sock,
                    Tok::Dial(i).token(),
                    interest,
                )?;
                Ok(h)
            });
            match started {
                Ok(h) => {
                    d.handshake = Some(Box::new(h));
                    return self.advance_handshake(i);
                }
                Err(err) => {
                    let d = self.ctx.dialer.dialing.remove(i);
                    return self.connect_failed(d.origin, err);
                }
            }
        }
        let d = self.ctx.dialer.dialing.remove(i);
        match result {
            Ok(peer) => self.open_outbound(d.sock, peer, d.origin, d.generation, None),
            Err(err) => self.connect_failed(d.origin, err),
        }
    }

    /// Drives the client TLS handshake of connect `i`: done, the connection opens (with
    /// its session); failed, the connect fails (also counted as a handshake error).
    fn advance_handshake(&mut self, i: usize) {
        let Some(d) = self.ctx.dialer.dialing.get_mut(i) else { return };
        let Some(h) = d.handshake.as_mut() else { return };
        match h.advance(&d.sock, &self.stats) {
            HandshakeStep::Pending => {}
            HandshakeStep::Done => {
                let d = self.ctx.dialer.dialing.remove(i);
                if let Some(h) = d.handshake {
                    let peer = h.peer();
                    let session = h.into_session();
                    let generation = d.generation;
                    self.open_outbound(d.sock, peer, d.origin, generation, Some(session));
                    // The read that finished the handshake may also have brought data
                    // (a server that speaks first): rustls holds its plaintext, and the
                    // socket, drained, gives no readable edge for it. Read once more.
                    if let Some(&key) = self.outbound_keys.get(&generation) {
                        self.more_to_read.push((key, generation));
                    }
                }
            }
            HandshakeStep::Failed(err) => {
                let d = self.ctx.dialer.dialing.remove(i);
                bump(&self.stats.tls_handshake_errors, 1);
                debug!("loop {}: TLS handshake with a backend failed: {err}", self.parts.id);
                self.connect_failed(d.origin, err);
            }
        }
    }

    /// Counts a failed connect and tells the handler: `connect_failed` on the requester
    /// if it is still open, `connect_error` for a connect from outside the loops.
    fn connect_failed(&mut self, origin: Origin, err: io::Error) {
        bump(&self.stats.connect_errors, 1);
        let Origin { tag, requester } = origin;
        let Some(id) = requester else {
            let handler = &mut self.handler;
            if let Err(msg) =
                guard(self.parts.config.catch_panics, || handler.connect_error(tag, err))
            {
                bump(&self.stats.panics, 1);
                error!("loop {}: connect_error panicked: {msg}", self.parts.id);
            }
            return;
        };
        match self.resolve(id) {
            Some(key) if !self.conns[key].has(CLOSING) => {
                let action =
                    self.dispatch(key, |h, conn, state| h.connect_failed(conn, state, tag, err));
                self.after_callback(key, action);
            }
            _ => debug!(
                "loop {}: connect (tag {tag}) failed after its requester left: {err}",
                self.parts.id
            ),
        }
    }

    /// Reports the connects that failed at once, queued during callbacks. Failures of
    /// connects started while reporting wait for the next round (no recursion).
    pub(super) fn report_connect_failures(&mut self) {
        if self.ctx.dialer.failed.is_empty() {
            return;
        }
        for f in std::mem::take(&mut self.ctx.dialer.failed) {
            self.connect_failed(f.origin, f.err);
        }
    }

    /// Fails the connects whose timeout has passed.
    pub(super) fn expire_connects(&mut self, now: Instant) {
        if self.ctx.dialer.wheel.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let dialer = &mut self.ctx.dialer;
        let mut expired = std::mem::take(&mut dialer.expired);
        dialer.wheel.expire(now, &mut expired);
        for &(i, generation, _) in &expired {
            let dialer = &mut self.ctx.dialer;
            let i = i as usize;
            // (The entry holds the generation's low half: see `timer::Entry`.)
            if dialer.dialing.get(i).is_none_or(|d| d.generation as u32 != generation) {
                continue; // connected or failed already; the slot may be reused
            }
            // Dropping the socket closes it (and takes it out of the poller).
            let d = dialer.dialing.remove(i);
            bump(&self.stats.connect_timeouts, 1);
            let err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            self.connect_failed(d.origin, err);
        }
        expired.clear();
        self.ctx.dialer.expired = expired;
    }
}
