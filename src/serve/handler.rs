//! [`ProtoHandler`]: the reactor's [`EventHandler`] for a [`Protocol`]. It only moves
//! bytes between the reactor's connection buffers and the one protocol adapter
//! ([`crate::net::session`]), which the std and tokio engines drive too.

use std::sync::Arc;
use std::time::Duration;

use crate::net::ProtoMetrics;
use crate::net::session;
use crate::proto::Protocol;
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
}

impl<P: Protocol> ProtoHandler<P> {
    /// A handler for `proto` (cloned once per loop), with counters of its own.
    pub fn new(proto: P) -> Self {
        let metrics = Arc::new(ProtoMetrics::new(proto.name(), 1));
        ProtoHandler { proto, metrics, loop_id: 0 }
    }

    /// A handler for loop `loop_id` that counts requests and errors into `metrics`.
    pub fn with_metrics(proto: P, metrics: Arc<ProtoMetrics>, loop_id: usize) -> Self {
        ProtoHandler { proto, metrics, loop_id }
    }
}

impl<P: Protocol> EventHandler for ProtoHandler<P> {
    type State = P::Session;

    fn opened(&mut self, _conn: &mut Conn<'_>) -> (P::Session, Action) {
        (self.proto.new_session(), Action::None)
    }

    fn data(
        &mut self,
        conn: &mut Conn<'_>,
        session: &mut P::Session,
        input: &[u8],
    ) -> (usize, Action) {
        let step = session::drive(session, input, conn.out(), &self.metrics, self.loop_id);
        (step.consumed, if step.close { Action::Close } else { Action::None })
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
