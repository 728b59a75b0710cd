//! Sans-IO protocols: bytes in, replies out, no sockets.
//!
//! Every protocol here is a state machine over `&[u8]`. An engine (the reactor, through
//! `serve`, or the std and tokio engines in `engines`) owns the sockets and the buffers; it hands
//! [`Protocol::on_input`] a connection's session (its per-connection state), the unconsumed
//! input of that connection and an output buffer, and the protocol appends its replies and
//! says how much input it consumed. The engine keeps only the unconsumed tail
//! and calls again when more bytes arrive, so a session never sees the same bytes twice
//! unless it left them unconsumed.
//!
//! This module imports nothing from the engines: a protocol knows nothing of sockets.

pub mod conn_info;
pub mod echo;
pub mod frame;
pub mod http;
pub mod mqtt;
pub mod proxy_header;
pub mod resp;
#[cfg(test)]
pub(crate) mod sim;

use std::fmt;

pub use conn_info::ConnInfo;

/// Where a connection stands in its current request after a call of
/// [`Protocol::on_input`]: what an engine's request timeouts follow (nginx's model: a
/// head timeout from the start of a request head to its end, and a between-reads timeout
/// while a body arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pending {
    /// No request in progress: the input was consumed up to a request boundary (or the
    /// session does not report requests).
    #[default]
    None,
    /// A request head (or a command, for protocols without bodies) is partially
    /// received. When the same call also answered requests ([`Progress::requests`] > 0)
    /// this is a *new* head that began in this call.
    Head,
    /// A request's head is complete and its body is being received.
    Body,
}

/// What a session did with one call of [`Protocol::on_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes of input consumed from the front of the slice (`<= input.len()`). The engine
    /// drops exactly these and presents the rest, followed by new bytes, next time.
    pub consumed: usize,
    /// The session wants the connection closed once the output written so far (including
    /// what this call appended) has been flushed, e.g. HTTP `Connection: close` or Redis
    /// `QUIT`. The engine stops reading the connection.
    pub close: bool,
    /// Requests answered in this call (for metrics; 0 where the notion does not apply).
    pub requests: usize,
    /// After this call, whether a request is partially received (see [`Pending`]); an
    /// engine's header and body timeouts follow it.
    pub pending: Pending,
}

impl Progress {
    /// Consumed `consumed` bytes; keep the connection open; no requests counted; nothing
    /// pending.
    pub fn consumed(consumed: usize) -> Self {
        Progress { consumed, close: false, requests: 0, pending: Pending::None }
    }

    /// Consumed `consumed` bytes, answering `requests` requests; `close` as above;
    /// nothing pending.
    pub fn answered(consumed: usize, requests: usize, close: bool) -> Self {
        Progress { consumed, close, requests, pending: Pending::None }
    }

    /// The same progress, with `pending` reported.
    pub fn with_pending(mut self, pending: Pending) -> Self {
        self.pending = pending;
        self
    }
}

/// A protocol error: the peer sent something the protocol cannot accept.
///
/// The engine sends what the session appended to the output buffer before it failed
/// (replies to earlier pipelined requests), then [`ProtoError::reply`], then closes the
/// connection after the output is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// A short, stable name of the error kind for metrics and logs, e.g. `"bad_request"`,
    /// `"head_too_large"`, `"bulk_too_large"`.
    pub kind: &'static str,
    /// Bytes to send to the peer before closing (may be empty: a plain close).
    pub reply: Vec<u8>,
    /// Requests answered by the same call before the error (their replies are already
    /// in the output buffer), so that an engine counts them like a successful call's
    /// [`Progress::requests`].
    pub requests: usize,
}

impl ProtoError {
    /// An error of `kind` that sends `reply` and then closes; no requests answered before it.
    pub fn new(kind: &'static str, reply: impl Into<Vec<u8>>) -> Self {
        ProtoError { kind, reply: reply.into(), requests: 0 }
    }

    /// The same error, recording that `requests` requests were answered before it.
    pub fn after(mut self, requests: usize) -> Self {
        self.requests = requests;
        self
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error ({})", self.kind)
    }
}

impl std::error::Error for ProtoError {}

/// Formats `n` in decimal into the end of `buf` and returns the digits: integer replies
/// and lengths without `format!` or allocation.
#[inline]
pub(crate) fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A protocol: configuration and server-wide state (a Redis keyspace, say), shared by all
/// loops and threads of one server, plus the functions that run its per-connection state
/// machines. Cloning is cheap (an `Arc` or small config).
///
/// The per-connection state ([`Protocol::Session`]) holds only what differs between
/// connections; whatever all connections share (limits, routes, a keyspace) stays in the
/// protocol value, which every engine holds and passes to each call. So an idle connection
/// costs only its session (a few bytes for the protocols here: see each session's docs).
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The per-connection state: only what one connection needs between calls.
    type Session: Send + 'static;

    /// A short lowercase name: `"echo"`, `"http"`, `"redis"`, `"frame"`.
    fn name(&self) -> &'static str;

    /// A fresh session for a newly opened connection.
    fn new_session(&self) -> Self::Session;

    /// A fresh session for a newly opened connection that `conn` describes (engines
    /// call this one). Default: [`new_session`](Self::new_session), ignoring `conn`.
    fn new_session_for(&self, _conn: &ConnInfo) -> Self::Session {
        self.new_session()
    }

    /// Whether [`new_session_for`](Self::new_session_for) uses its [`ConnInfo`]: when
    /// false (the default) engines skip the system calls that gather it and call
    /// [`new_session`](Self::new_session).
    fn wants_conn_info(&self) -> bool {
        false
    }

    /// Handles the unconsumed input of the connection whose state is `session`.
    ///
    /// Appends a reply for every complete request in `input`, in order, to `out` (never
    /// clearing it: it may hold earlier output), and returns how many bytes were consumed.
    /// An incomplete request at the end is left unconsumed; the session must return an
    /// error rather than leave more than its configured limits unconsumed, so an engine's
    /// input buffer stays bounded. Must not panic on any input.
    fn on_input(
        &self,
        session: &mut Self::Session,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtoError>;

    /// A request timeout fired while a request was in progress (the last call reported
    /// [`Progress::pending`] other than `None`): appends what the peer should get before
    /// the engine closes the connection (HTTP: `408 Request Timeout` with
    /// `Connection: close`). The session is not called again. Default: nothing.
    fn on_timeout(&self, _session: &mut Self::Session, _out: &mut Vec<u8>) {}

    /// The connection is gone: releases what the session holds outside itself (Redis: its
    /// `CLIENT LIST` entry). Engines call it exactly once per session made with
    /// [`new_session`](Self::new_session) or [`new_session_for`](Self::new_session_for),
    /// before dropping the session (and, for sessions made with a descriptor, before
    /// closing it); the session is not called again. Default: nothing.
    fn closed(&self, _session: &mut Self::Session) {}

    /// Periodic maintenance (expiry sweeps, cached dates), called about once a second from
    /// every event-loop thread, and from one housekeeping thread by the std baseline.
    /// Must be cheap and must not block for long.
    fn tick(&self) {}

    /// A fresh session bound to a clone of this protocol (see [`Bound`]).
    fn open(&self) -> Bound<Self> {
        Bound::new(self.clone(), self.new_session())
    }

    /// A fresh session for the connection `conn` describes, bound to a clone of this
    /// protocol (see [`Bound`]).
    fn open_for(&self, conn: &ConnInfo) -> Bound<Self> {
        Bound::new(self.clone(), self.new_session_for(conn))
    }
}

/// A session together with its protocol, for code that drives one connection by hand
/// (tests, benchmarks, the std and tokio engines): the [`Protocol`] calls as methods, and
/// [`Protocol::closed`] when dropped.
pub struct Bound<P: Protocol> {
    proto: P,
    session: P::Session,
}

impl<P: Protocol> Bound<P> {
    /// Binds `session` (made by `proto`) to `proto`.
    pub fn new(proto: P, session: P::Session) -> Self {
        Bound { proto, session }
    }

    /// [`Protocol::on_input`] on this session.
    #[inline]
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, ProtoError> {
        self.proto.on_input(&mut self.session, input, out)
    }

    /// [`Protocol::on_timeout`] on this session.
    pub fn on_timeout(&mut self, out: &mut Vec<u8>) {
        self.proto.on_timeout(&mut self.session, out)
    }

    /// The protocol.
    pub fn proto(&self) -> &P {
        &self.proto
    }

    /// The session.
    pub fn session(&self) -> &P::Session {
        &self.session
    }

    /// The protocol and the session, for an engine's calls.
    pub fn parts(&mut self) -> (&P, &mut P::Session) {
        (&self.proto, &mut self.session)
    }
}

impl<P: Protocol> Drop for Bound<P> {
    fn drop(&mut self) {
        self.proto.closed(&mut self.session);
    }
}

impl<P: Protocol> fmt::Debug for Bound<P>
where
    P: fmt::Debug,
    P::Session: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound").field("proto", &self.proto).field("session", &self.session).finish()
    }
}
