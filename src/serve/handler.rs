//! [`ProtoHandler`]: the reactor's [`EventHandler`] for a [`Protocol`]. It only moves
//! bytes between the reactor's connection buffers and the one protocol adapter
//! ([`crate::net::session`]), which the std and tokio engines drive too, and turns the
//! adapter's request-timeout decisions into the reactor's request deadline
//! ([`Conn::set_request_deadline`]; when it passes, [`EventHandler::timeout`] sends the
//! session's last words, e.g. HTTP's `408`, and closes).

use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use super::capture::{Capture, CaptureHook, Captured};
use crate::net::ProtoMetrics;
use crate::net::session::{self, RequestTimeouts};
use crate::proto::{ConnInfo, Pending, Protocol};
use crate::reactor::{Action, CloseReason, Conn, Datagram, Detached, EventHandler};

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
    /// Sampled traffic capture (`--capture`), when on.
    capture: Option<CaptureHook>,
    /// The capture state of this loop's sampled connections, found by
    /// [`ProtoConn::cap`]: kept here, not in every connection's state, as most
    /// connections are never sampled.
    sampled: Slab<Captured>,
}

/// A connection's state under [`ProtoHandler`]: the protocol session and where its
/// current request stands (for the request timeouts).
///
/// This is all the protocol layer keeps per connection in the reactor's slab (the
/// reactor's own record is separate); shared state (limits, routes, a keyspace) stays in
/// the handler's [`Protocol`] value and is passed to each call. On x86-64:
///
/// | protocol | `size_of::<ProtoConn<_>>()` | session | heap while idle |
/// |---|---|---|---|
/// | echo | 8 B | [`EchoSession`](crate::proto::echo::EchoSession), 0 B | none |
/// | frame | 8 B | [`FrameSession`](crate::proto::frame::FrameSession), 0 B | none |
/// | http | 16 B | [`HttpSession`](crate::proto::http::HttpSession), 8 B | none |
/// | redis | 24 B | [`RedisSession`](crate::proto::resp::RedisSession), 16 B | its `CLIENT LIST` slot, 40 B, in the server's registry |
///
/// Besides the session: `pending` (1 B) and `cap` (4 B), the index of the capture state
/// of a connection sampled by `--capture` in its handler's table (0: not sampled); the
/// state itself (16 B) lives there, for sampled connections only. The sizes are checked
/// by a unit test.
#[derive(Debug)]
pub struct ProtoConn<S> {
    /// The protocol's per-connection state machine.
    pub session: S,
    /// What the last call left pending.
    pending: Pending,
    /// 1 + the index of this connection's capture state in [`ProtoHandler`]'s table when
    /// it is sampled for capture; 0 when it is not.
    cap: u32,
}

impl<P: Protocol> ProtoHandler<P> {
    /// A handler for `proto` (cloned once per loop), with counters of its own and no
    /// request timeouts.
    pub fn new(proto: P) -> Self {
        let metrics = Arc::new(ProtoMetrics::new(proto.name(), 1));
        ProtoHandler {
            proto,
            metrics,
            loop_id: 0,
            timeouts: RequestTimeouts::default(),
            capture: None,
            sampled: Slab::new(),
        }
    }

    /// A handler for loop `loop_id` that counts requests and errors into `metrics`.
    pub fn with_metrics(proto: P, metrics: Arc<ProtoMetrics>, loop_id: usize) -> Self {
        ProtoHandler {
            proto,
            metrics,
            loop_id,
            timeouts: RequestTimeouts::default(),
            capture: None,
            sampled: Slab::new(),
        }
    }

    /// The same handler with the header and body timeouts `timeouts` (see
    /// [`RequestTimeouts`]).
    pub fn request_timeouts(mut self, timeouts: RequestTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The same handler, capturing sampled connections into `capture` (`None`: off).
    pub fn capture(mut self, capture: Option<Arc<Capture>>) -> Self {
        self.capture = capture.map(CaptureHook::new);
        self
    }
}

impl<P: Protocol> EventHandler for ProtoHandler<P> {
    type State = ProtoConn<P::Session>;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (Self::State, Action) {
        let session = if self.proto.wants_conn_info() {
            let info = ConnInfo {
                peer: conn.peer_addr().socket_addr(),
                local: conn.local_addr().ok(),
                fd: Some(i64::from(conn.fd())),
            };
            self.proto.new_session_for(&info)
        } else {
            self.proto.new_session()
        };
        let cap = match self.capture.as_mut().and_then(|h| h.opened(conn)) {
            Some(c) => u32::try_from(self.sampled.insert(c) + 1).unwrap_or(0),
            None => 0,
        };
        (ProtoConn { session, pending: Pending::None, cap }, Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, st: &mut Self::State, input: &[u8]) -> (usize, Action) {
        let from = (st.cap != 0).then(|| conn.out().len());
        if let (Some(h), Some(c)) = (self.capture.as_mut(), slot(&self.sampled, st.cap)) {
            h.input(c, input);
        }
        let step = session::drive(
            &self.proto,
            &mut st.session,
            input,
            conn.out(),
            &self.metrics,
            self.loop_id,
        );
        if let (Some(h), Some(c), Some(from)) =
            (self.capture.as_mut(), slot_mut(&mut self.sampled, st.cap), from)
        {
            h.output(c, conn.out(), from, input.len() - step.consumed);
        }
        if let Some(deadline) = self.timeouts.after(st.pending, &step) {
            conn.set_request_deadline(deadline);
        }
        st.pending = step.pending;
        (step.consumed, if step.close { Action::Close } else { Action::None })
    }

    /// The header or body timeout passed: the session's last words (HTTP: `408`), then a
    /// close once they are written.
    fn timeout(&mut self, conn: &mut Conn<'_>, st: &mut Self::State) -> Action {
        let from = conn.out().len();
        session::timed_out(&self.proto, &mut st.session, conn.out(), &self.metrics);
        st.pending = Pending::None;
        if let (Some(h), Some(c)) = (self.capture.as_mut(), slot_mut(&mut self.sampled, st.cap)) {
            let tail = c.tail();
            h.output(c, conn.out(), from, tail);
        }
        Action::Close
    }

    fn closed(&mut self, mut st: Self::State, _reason: CloseReason) {
        self.proto.closed(&mut st.session);
        if let Some(c) = take(&mut self.sampled, st.cap)
            && let Some(h) = self.capture.as_mut()
        {
            h.closed(&c);
        }
    }

    /// Not used by this handler (it never detaches), but a detached session is released
    /// like a closed one.
    fn detached(&mut self, mut d: Detached<Self::State>) {
        self.proto.closed(&mut d.state.session);
        take(&mut self.sampled, d.state.cap);
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

/// The capture state at `cap` (see [`ProtoConn::cap`]), if the connection is sampled.
#[inline]
fn slot(sampled: &Slab<Captured>, cap: u32) -> Option<&Captured> {
    if cap == 0 { None } else { sampled.get(cap as usize - 1) }
}

/// [`slot`], mutable.
#[inline]
fn slot_mut(sampled: &mut Slab<Captured>, cap: u32) -> Option<&mut Captured> {
    if cap == 0 { None } else { sampled.get_mut(cap as usize - 1) }
}

/// Removes the capture state at `cap` when the connection ends.
fn take(sampled: &mut Slab<Captured>, cap: u32) -> Option<Captured> {
    if cap == 0 { None } else { sampled.try_remove(cap as usize - 1) }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::ProtoConn;
    use crate::proto::echo::EchoSession;
    use crate::proto::frame::FrameSession;
    use crate::proto::http::HttpSession;
    use crate::proto::resp::RedisSession;

    /// What an idle connection costs the protocol layer (see [`ProtoConn`]'s table): the
    /// bounds the per-connection memory budget relies on.
    #[test]
    fn per_connection_state_is_small() {
        assert_eq!(size_of::<EchoSession>(), 0);
        assert_eq!(size_of::<FrameSession>(), 0);
        assert!(size_of::<HttpSession>() <= 8, "{}", size_of::<HttpSession>());
        assert!(size_of::<RedisSession>() <= 16, "{}", size_of::<RedisSession>());
        assert_eq!(size_of::<ProtoConn<EchoSession>>(), 8);
        assert_eq!(size_of::<ProtoConn<FrameSession>>(), 8);
        assert!(size_of::<ProtoConn<HttpSession>>() <= 16);
        assert!(size_of::<ProtoConn<RedisSession>>() <= 24);
    }
}
