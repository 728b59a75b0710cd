//! The read path: a readiness event on a connection → reads into the per-loop buffer →
//! the handler's `data` callback → the unconsumed tail kept in the connection.
//!
//! Read until WouldBlock, a short read (the socket is drained; new bytes raise a new
//! edge) or the read budget; a connection cut short by the budget is read again after
//! the others are served (edge triggering would not report it again). The handler sees
//! leftover input plus the new bytes and says how much it consumed; only the tail is
//! kept, so an idle connection holds no input buffer. A handler that consumed part of its
//! input and left a rest is offered the rest again without a read (`offer_leftover`),
//! after its output is written and again when reading resumes below the low watermark:
//! it may have stopped at an output budget, and edge triggering brings no new event for
//! bytes already read. Every byte enters through
//! [`read_socket`]: the one place where a layer between socket and handler (TLS:
//! ciphertext in, plaintext out) would sit. A linked connection is read by `link.rs`
//! instead (no handler in between).

use std::io::{self, Read};

use super::EventLoop;
use super::conn::{
    CLOSING, HEARD, HUP_SEEN, PAUSED, READ_CLOSED, USER_PAUSED, WRITE_INTEREST, clear_keeping_small,
};
use crate::reactor::handler::{Action, CloseReason, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::bump;

impl<H: EventHandler> EventLoop<H> {
    /// One poll event on connection `key`: pending output first (it may unpause
    /// reading), then input.
    pub(super) fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, hup: bool) {
        let Some(c) = self.conns.get_mut(key) else { return };
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
    pub(super) fn on_readable(&mut self, key: usize) {
        for _ in 0..self.parts.config.read_budget {
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.has(PAUSED | READ_CLOSED | CLOSING | USER_PAUSED) {
                return;
            }
            if c.tls().is_some() {
                return self.on_readable_tls(key); // ciphertext in, plaintext to the handler
            }
            if c.link().is_some() {
                return self.forward(key);
            }
            let n = match read_socket(&c.sock, &mut self.rbuf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
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
            c.flags |= HEARD;
            c.active = self.now_tick;
            let (action, leftover) = self.deliver_fresh(key, n);
            if !self.after_callback(key, action) || (leftover && !self.offer_leftover(key)) {
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

    /// Reads again the connections whose read budget ran out this iteration.
    pub(super) fn continue_reads(&mut self) {
        if self.more_to_read.is_empty() {
            return;
        }
        for (key, generation) in std::mem::take(&mut self.more_to_read) {
            if self.is_current(key, generation) {
                self.on_readable(key);
            }
        }
    }

    /// Offers `key`'s unconsumed input to the handler again, without reading, for as long
    /// as it consumes some and the connection may be read (not paused by the high
    /// watermark, not closing). A handler that stopped early (an output budget: e.g. a
    /// pipeline of large replies) so goes on without a new readiness event, which
    /// edge-triggered polling would not bring for bytes already read; a partial request
    /// costs one call that consumes nothing. Returns whether the connection may be read.
    pub(super) fn offer_leftover(&mut self, key: usize) -> bool {
        loop {
            let Some(c) = self.conns.get(key) else { return false };
            if c.has(PAUSED | CLOSING | READ_CLOSED) {
                return false;
            }
            let before = c.input().len();
            if before == 0 {
                return true;
            }
            let action = self.deliver(key, 0);
            let progressed = self.conns.get(key).is_some_and(|c| c.input().len() < before);
            if !self.after_callback(key, action) {
                return false;
            }
            if !progressed {
                return true;
            }
        }
    }

    /// [`deliver`](Self::deliver) for `n` bytes just read (plaintext, for a TLS
    /// connection), then starts the incomplete-request clock when the call leaves the
    /// connection's first unconsumed bytes. Returns the handler's action and whether it
    /// consumed the input in part and left a rest (it may have stopped early: see
    /// [`offer_leftover`](Self::offer_leftover)).
    pub(super) fn deliver_fresh(&mut self, key: usize, n: usize) -> (Action, bool) {
        let input = self.conns[key].input().len();
        let action = self.deliver(key, n);
        let left = self.conns.get(key).map_or(0, |c| c.input().len());
        if input == 0
            && left > 0
            && self.timeouts.is_some()
            && let Some(b) = self.conns.get_mut(key).and_then(|c| c.bufs.as_deref_mut())
        {
            // A new incomplete request starts its clock.
            b.partial_since = self.now_tick;
            self.schedule(key);
        }
        (action, (1..input + n).contains(&left))
    }

    /// Hands `rbuf[..n]`, after any leftover input, to the handler and keeps the
    /// unconsumed tail.
    pub(super) fn deliver(&mut self, key: usize, n: usize) -> Action {
        let rbuf = std::mem::take(&mut self.rbuf);
        let action = self.dispatch_with_input(key, |h, conn, state, input| {
            if input.is_empty() {
                let data = &rbuf[..n];
                let (consumed, action) = h.data(conn, state, data);
                if consumed < n {
                    input.extend_from_slice(&data[consumed..]);
                }
                action
            } else {
                input.extend_from_slice(&rbuf[..n]);
                let (consumed, action) = h.data(conn, state, input);
                if consumed >= input.len() {
                    // Kept for reuse when small (as `Buffers::give_back` would).
                    clear_keeping_small(input);
                } else {
                    input.drain(..consumed);
                }
                action
            }
        });
        self.rbuf = rbuf;
        action
    }
}

/// One nonblocking `read` from a connection, retried only on EINTR: the only way bytes
/// enter the read path. `Ok(None)`: nothing to read now (WouldBlock); `Ok(Some(0))`:
/// end of input.
#[inline]
pub(super) fn read_socket(mut sock: &Stream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match sock.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
