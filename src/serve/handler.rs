//! [`ProtoHandler`]: the reactor's [`EventHandler`] for a [`Protocol`]. It only moves
//! bytes between the reactor's connection buffers and the one protocol adapter
//! ([`crate::net::session`]), which the std and tokio engines drive too, and turns the
//! adapter's request-timeout decisions into the reactor's request deadline
//! ([`Conn::set_request_deadline`]; when it passes, [`EventHandler::timeout`] sends the
//! session's last words, e.g. HTTP's `408`, and closes).

use std::sync::Arc;
use std::time::Duration;

use crate::net::ProtoMetrics;
use crate::net::session::{self, RequestTimeouts};
use crate::proto::{Pending, Protocol};
use crate::reactor::{Action, Conn, Datagram, EventHandler};

/// How often each loop calls [`Protocol::tick`].
const PROTOCOL_TICK: Duration = Duration::from_secs(1);

/// An [`EventHandler`] that runs one [`Protocol`] session per connection.
///
/// A protocol error's reply is queued after any replies the session produced, then the
/// connection closes once the output is flushed.
#[derive(Debug, Clone)]
pub struct ProtoHandler<P: Protocol> {
    proto: P,
    metrics: Arc<ProtoMetrics>,
    loop_id: usize,
    timeouts: RequestTimeouts,
}

/// A connection's state under [`ProtoHandler`]: the protocol session and where its
/// current request stands (for the request timeouts).
#[derive(Debug)]
pub struct ProtoConn<S> {
    /// The protocol's per-connection state machine.
    pub session: S,
    /// What the last call left pending.
    pending: Pending,
}

impl<P: Protocol> ProtoHandler<P> {
    /// A handler for `proto` (cloned once per loop), with counters of its own and no
    /// request timeouts.
    pub fn new(proto: P) -> Self {
        let metrics = Arc::new(ProtoMetrics::new(proto.name(), 1));
        ProtoHandler { proto, metrics, loop_id: 0, timeouts: RequestTimeouts::default() }
    }

    /// A handler for loop `loop_id` that counts requests and errors into `metrics`.
    pub fn with_metrics(proto: P, metrics: Arc<ProtoMetrics>, loop_id: usize) -> Self {
        ProtoHandler { proto, metrics, loop_id, timeouts: RequestTimeouts::default() }
    }

    /// The same handler with the header and body timeouts `timeouts` (see
    /// [`RequestTimeouts`]).
    pub fn request_timeouts(mut self, timeouts: RequestTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
}

impl<P: Protocol> EventHandler for ProtoHandler<P> {
    type State = ProtoConn<P::Session>;

    fn opened(&mut self, _conn: &mut Conn<'_>) -> (Self::State, Action) {
        (ProtoConn { session: self.proto.new_session(), pending: Pending::None }, Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, st: &mut Self::State, input: &[u8]) -> (usize, Action) {
        let step = session::drive(&mut st.session, input, conn.out(), &self.metrics, self.loop_id);
        if let Some(deadline) = self.timeouts.after(st.pending, &step) {
            conn.set_request_deadline(deadline);
        }
        st.pending = step.pending;
        (step.consumed, if step.close { Action::Close } else { Action::None })
    }

    /// The header or body timeout passed: the session's last words (HTTP: `408`), then a
    /// close once they are written.
    fn timeout(&mut self, conn: &mut Conn<'_>, st: &mut Self::State) -> Action {
        session::timed_out(&mut st.session, conn.out(), &self.metrics);
        st.pending = Pending::None;
        Action::Close
    }

    /// A datagram is one request for a fresh session; its replies (or its error reply)
    /// go back as one datagram.
    fn datagram(&mut self, dgram: &mut Datagram<'_>, data: &[u8]) {
        session::datagram(&self.proto, data, dgram.out(), &self.metrics, self.loop_id);
    }

    fn tick(&mut self) -> Option<Duration> {
        self.proto.tick();
        Some(PROTOCOL_TICK)
    }
}
