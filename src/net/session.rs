//! The one protocol adapter: drives a sans-IO [`Protocol`] session over bytes in / bytes out for
//! every engine (the reactor through `serve`'s handler, the std and tokio engines
//! directly), so a benchmark of engines compares engines, not protocol code.
//!
//! It lives in the engine-neutral layer rather than in `serve` because the engines sit
//! below `serve` (imports point one way: `serve → engines → net`), and all of them must
//! share it.
//!
//! What it does with one call: hands the unconsumed input to the session, counts the
//! requests it answered, and turns a protocol error into metrics (by kind), the error's
//! reply appended after the replies already produced, and a close.
//!
//! Request timeouts (nginx's model) are decided here too, for every engine alike:
//! [`RequestTimeouts::after`] turns what the session reports ([`Pending`]) into "arm the
//! header timeout", "arm the body timeout", "clear" or "leave as is", and [`timed_out`]
//! gets the session's last words (HTTP: `408`) when one fires.

use std::sync::Arc;
use std::time::Duration;

use crate::net::counters::ProtoMetrics;
use crate::proto::{Bound, Pending, Protocol};

/// What the engine does after one [`drive`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Bytes consumed from the front of the input (`<= input.len()`).
    pub consumed: usize,
    /// Close the connection once `out` has been written.
    pub close: bool,
    /// Requests answered by the call.
    pub requests: usize,
    /// Whether a request is partially received after the call.
    pub pending: Pending,
}

/// The request timeouts of nginx's model: a head must be complete within `header` of its
/// first byte (not re-armed by reads while the same head is incomplete), and while a body
/// arrives each read that makes progress on it must come within `body` of the last.
/// `None` turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTimeouts {
    /// From the start of a request head to its end (`--header-timeout`).
    pub header: Option<Duration>,
    /// Between reads of a request body (`--body-timeout`).
    pub body: Option<Duration>,
}

impl RequestTimeouts {
    /// How a connection's request deadline changes after a call of the session that
    /// returned `step`, when the call before it left `before` pending: `Some(Some(d))`
    /// arms it `d` from now, `Some(None)` clears it, `None` leaves it as it is.
    ///
    /// - nothing pending: cleared (if anything was pending before);
    /// - a head pending: armed with `header` when the head is new (nothing or a body was
    ///   pending before, or requests were answered in this call, so this head began in
    ///   it); left as is while the same head stays incomplete;
    /// - a body pending: armed with `body` (every call is a read that made progress).
    pub fn after(&self, before: Pending, step: &Step) -> Option<Option<Duration>> {
        match step.pending {
            Pending::None => (before != Pending::None).then_some(None),
            Pending::Head => (before != Pending::Head || step.requests > 0).then_some(self.header),
            Pending::Body => Some(self.body),
        }
    }
}

/// A request timeout fired: appends the session's last words (HTTP: `408 Request
/// Timeout` with `Connection: close`) to `out` and counts a `request_timeout` error. The
/// engine closes the connection once `out` is written.
pub fn timed_out<P: Protocol>(
    proto: &P,
    session: &mut P::Session,
    out: &mut Vec<u8>,
    metrics: &ProtoMetrics,
) {
    proto.on_timeout(session, out);
    metrics.add_error("request_timeout");
}

/// Hands `input` (the connection's unconsumed bytes) to `proto` for `session`; replies are appended
/// to `out`. Requests are counted into slot `slot` of `metrics`. On a protocol error the
/// requests answered before it and the error are counted, its reply appended to `out`, all input consumed and `close` set.
#[inline]
pub fn drive<P: Protocol>(
    proto: &P,
    session: &mut P::Session,
    input: &[u8],
    out: &mut Vec<u8>,
    metrics: &ProtoMetrics,
    slot: usize,
) -> Step {
    match proto.on_input(session, input, out) {
        Ok(p) => {
            metrics.add_requests(slot, p.requests as u64);
            let consumed = p.consumed.min(input.len());
            Step { consumed, close: p.close, requests: p.requests, pending: p.pending }
        }
        Err(e) => {
            metrics.add_requests(slot, e.requests as u64);
            metrics.add_error(e.kind);
            log::debug!("{}: {e}", metrics.proto());
            out.extend_from_slice(&e.reply);
            Step {
                consumed: input.len(),
                close: true,
                requests: e.requests,
                pending: Pending::None,
            }
        }
    }
}

/// Answers one datagram: it is one request for a fresh session, and its replies (or its
/// error reply) go into `out`, to be sent back as one datagram.
pub fn datagram<P: Protocol>(
    proto: &P,
    data: &[u8],
    out: &mut Vec<u8>,
    metrics: &ProtoMetrics,
    slot: usize,
) {
    let mut session = proto.new_session();
    drive(proto, &mut session, data, out, metrics, slot);
    proto.closed(&mut session);
}

/// A session (bound to its protocol, so that dropping it calls [`Protocol::closed`]) plus
/// the unconsumed tail of its input, for engines that read into a buffer of their own and
/// keep no input between reads (the std and tokio engines).
pub struct Buffered<P: Protocol> {
    session: Bound<P>,
    /// Input the session left unconsumed, presented again before the next bytes.
    tail: Vec<u8>,
    metrics: Arc<ProtoMetrics>,
    slot: usize,
    /// The last call consumed part of its input and left a rest (see [`Buffered::again`]).
    again: bool,
}

impl<P: Protocol> Buffered<P> {
    /// Drives `session`, counting into slot `slot` of `metrics`.
    pub fn new(session: Bound<P>, metrics: Arc<ProtoMetrics>, slot: usize) -> Self {
        Buffered { session, tail: Vec::new(), metrics, slot, again: false }
    }

    /// Whether the session should be called again (`feed(&[], out)`) before the next
    /// read, once `out` has been written: the last call consumed some input and left a
    /// rest, as a session does when it stops at its output budget with complete
    /// requests still queued. (A partial request at the end costs one call that
    /// consumes nothing.) An engine that waited for new bytes instead could wait forever:
    /// the peer may be waiting for the replies.
    pub fn again(&self) -> bool {
        self.again
    }

    /// The counters this session counts into.
    pub fn metrics(&self) -> &ProtoMetrics {
        &self.metrics
    }

    /// Hands the fresh bytes, after any kept tail, to the session and keeps the new
    /// unconsumed tail; replies go to `out`. Returns true when the connection must close
    /// once `out` is written. Copies `fresh` only when a tail is kept or left.
    pub fn feed(&mut self, fresh: &[u8], out: &mut Vec<u8>) -> bool {
        let (proto, session) = self.session.parts();
        let step = if self.tail.is_empty() {
            let step = drive(proto, session, fresh, out, &self.metrics, self.slot);
            self.tail.extend_from_slice(&fresh[step.consumed..]);
            step
        } else {
            self.tail.extend_from_slice(fresh);
            let step = drive(proto, session, &self.tail, out, &self.metrics, self.slot);
            self.tail.drain(..step.consumed);
            if self.tail.is_empty() {
                // The request is done: an idle connection keeps no input buffer.
                self.tail = Vec::new();
            }
            step
        };
        self.again = step.consumed > 0 && !self.tail.is_empty() && !step.close;
        step.close
    }

    /// Whether input is kept that the session has not consumed (a request in progress).
    pub fn has_partial_input(&self) -> bool {
        !self.tail.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(requests: usize, pending: Pending) -> Step {
        Step { consumed: 0, close: false, requests, pending }
    }

    #[test]
    fn the_header_timeout_runs_from_the_start_of_each_head_and_the_body_timeout_per_read() {
        let (h, b) = (Duration::from_secs(10), Duration::from_secs(60));
        let t = RequestTimeouts { header: Some(h), body: Some(b) };
        // A head begins: armed; the same head still incomplete: left running.
        assert_eq!(t.after(Pending::None, &step(0, Pending::Head)), Some(Some(h)));
        assert_eq!(t.after(Pending::Head, &step(0, Pending::Head)), None);
        // A head completed, answered, and the next one began in the same call: re-armed.
        assert_eq!(t.after(Pending::Head, &step(1, Pending::Head)), Some(Some(h)));
        // A body: re-armed on every read.
        assert_eq!(t.after(Pending::Head, &step(0, Pending::Body)), Some(Some(b)));
        assert_eq!(t.after(Pending::Body, &step(0, Pending::Body)), Some(Some(b)));
        assert_eq!(t.after(Pending::Body, &step(1, Pending::Head)), Some(Some(h)));
        // Done: cleared once; nothing to do between requests.
        assert_eq!(t.after(Pending::Body, &step(1, Pending::None)), Some(None));
        assert_eq!(t.after(Pending::None, &step(3, Pending::None)), None);
        // A timeout turned off clears rather than arms.
        let off = RequestTimeouts { header: None, body: Some(b) };
        assert_eq!(off.after(Pending::Body, &step(1, Pending::Head)), Some(None));
    }
}
