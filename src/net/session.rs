//! The one protocol adapter: drives a sans-IO [`Session`] over bytes in / bytes out for
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

use std::sync::Arc;

use crate::net::counters::ProtoMetrics;
use crate::proto::{Protocol, Session};

/// What the engine does after one [`drive`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Bytes consumed from the front of the input (`<= input.len()`).
    pub consumed: usize,
    /// Close the connection once `out` has been written.
    pub close: bool,
}

/// Hands `input` (the connection's unconsumed bytes) to `session`; replies are appended
/// to `out`. Requests are counted into slot `slot` of `metrics`. On a protocol error the
/// requests answered before it and the error are counted, its reply appended to `out`, all input consumed and `close` set.
#[inline]
pub fn drive<S: Session>(
    session: &mut S,
    input: &[u8],
    out: &mut Vec<u8>,
    metrics: &ProtoMetrics,
    slot: usize,
) -> Step {
    match session.on_input(input, out) {
        Ok(p) => {
            metrics.add_requests(slot, p.requests as u64);
            Step { consumed: p.consumed.min(input.len()), close: p.close }
        }
        Err(e) => {
            metrics.add_requests(slot, e.requests as u64);
            metrics.add_error(e.kind);
            log::debug!("{}: {e}", metrics.proto());
            out.extend_from_slice(&e.reply);
            Step { consumed: input.len(), close: true }
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
    drive(&mut proto.new_session(), data, out, metrics, slot);
}

/// A session plus the unconsumed tail of its input, for engines that read into a
/// buffer of their own and keep no input between reads (the std and tokio engines).
pub struct Buffered<S> {
    session: S,
    /// Input the session left unconsumed, presented again before the next bytes.
    tail: Vec<u8>,
    metrics: Arc<ProtoMetrics>,
    slot: usize,
}

impl<S: Session> Buffered<S> {
    /// Drives `session`, counting into slot `slot` of `metrics`.
    pub fn new(session: S, metrics: Arc<ProtoMetrics>, slot: usize) -> Self {
        Buffered { session, tail: Vec::new(), metrics, slot }
    }

    /// Hands the fresh bytes, after any kept tail, to the session and keeps the new
    /// unconsumed tail; replies go to `out`. Returns true when the connection must close
    /// once `out` is written. Copies `fresh` only when a tail is kept or left.
    pub fn feed(&mut self, fresh: &[u8], out: &mut Vec<u8>) -> bool {
        if self.tail.is_empty() {
            let step = drive(&mut self.session, fresh, out, &self.metrics, self.slot);
            self.tail.extend_from_slice(&fresh[step.consumed..]);
            step.close
        } else {
            self.tail.extend_from_slice(fresh);
            let step = drive(&mut self.session, &self.tail, out, &self.metrics, self.slot);
            self.tail.drain(..step.consumed);
            step.close
        }
    }

    /// Whether input is kept that the session has not consumed (a request in progress).
    pub fn has_partial_input(&self) -> bool {
        !self.tail.is_empty()
    }
}
