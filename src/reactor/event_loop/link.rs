//! Linked pairs: two connections of one loop whose input flows into each other
//! ([`Conn::link`](crate::reactor::Conn::link)), with no handler in between.
//!
//! - **Making the link** ([`EventLoop::link`], after the callback that asked): each
//!   record gets a [`Link`] naming its partner; input either side holds unconsumed is
//!   moved behind the other's pending output (nothing lost, nothing reordered); both
//!   are read at once (bytes may have arrived while they were paused).
//! - **Forwarding** ([`EventLoop::forward`], the read path of a linked connection):
//!   read into the loop's buffer, one `write` to the partner when it has nothing
//!   pending, the rest queued in the partner's output; the handler's `forwarded` hook
//!   on the reading side's state.
//! - **Backpressure across the pair**: the write path's watermark check
//!   (`update_interest`) paces the *partner* of a linked connection
//!   ([`EventLoop::pace_partner`]): above the high watermark the partner is not read;
//!   at the low one it is read again at once.
//! - **Half-close**: end of input on A sets `FIN_PENDING` on B, and B's write side is
//!   shut once its pending output is written ([`EventLoop::settle_link`]); B → A goes
//!   on. Both inputs ended and both outputs written: both close as `PeerClosed`.
//! - **Abnormal ends**: when one side closes any other way (error, reset, timeout,
//!   detach, a handler's close), `close` unlinks the partner, which stops reading,
//!   flushes its pending output (bounded by the close timeout) and closes as
//!   `LinkClosed` ([`EventLoop::partner_gone`]).

use std::io;

use log::error;

use super::conn::{
    CLOSING, Connection, FIN_PENDING, HUP_SEEN, PARTNER_GONE, PAUSED, READ_CLOSED, USER_PAUSED,
    WRITE_SHUT,
};
use super::read::read_socket;
use super::write::write_socket;
use super::{EventLoop, guard};
use crate::reactor::handler::{Action, CloseReason, ConnId, EventHandler, LinkOptions};
use crate::reactor::stats::bump;

/// A linked connection's partner.
pub(crate) struct Link {
    /// The partner's slab key and generation.
    pub(super) peer: usize,
    pub(super) peer_gen: u64,
}

impl<H: EventHandler> EventLoop<H> {
    /// Links `a` (whose callback asked) with `b`. If `b` is not open or not free to
    /// link, `a` is closed (`NotConnected`), as [`Conn::link_with`] documents.
    ///
    /// [`Conn::link_with`]: crate::reactor::Conn::link_with
    pub(super) fn link(&mut self, a: ConnId, b: ConnId, _opts: LinkOptions) {
        let Some(ka) = self.resolve(a) else { return };
        let free = |k: usize| {
            let c = &self.conns[k];
            c.link.is_none() && !c.has(CLOSING)
        };
        if !free(ka) {
            return;
        }
        let Some(kb) = self.resolve(b).filter(|&kb| kb != ka && free(kb)) else {
            let e = io::Error::new(
                io::ErrorKind::NotConnected,
                "link: the other connection is closed or already linked",
            );
            return self.close(ka, CloseReason::Error(e));
        };
        bump(&self.stats.links, 1);
        for (x, y) in [(ka, kb), (kb, ka)] {
            let peer_gen = self.conns[y].generation;
            let c = &mut self.conns[x];
            c.link = Some(Box::new(Link { peer: y, peer_gen }));
            c.flags &= !(USER_PAUSED | PAUSED);
        }
        // Unconsumed input first, behind the output already queued.
        self.hand_over_input(ka, kb);
        self.hand_over_input(kb, ka);
        for (x, y) in [(ka, kb), (kb, ka)] {
            if self.conns.get(x).is_some_and(|c| c.has(READ_CLOSED))
                && let Some(c) = self.conns.get_mut(y)
            {
                c.flags |= FIN_PENDING;
            }
        }
        for k in [ka, kb] {
            if let Some(c) = self.conns.get(k) {
                let generation = c.generation;
                if self.after_callback(k, Action::None) {
                    // Bytes that arrived while it was paused raised no new edge.
                    self.more_to_read.push((k, generation));
                }
            }
        }
    }

    /// Moves the unconsumed input of `from` to the end of `to`'s pending output.
    fn hand_over_input(&mut self, from: usize, to: usize) {
        let input = std::mem::take(&mut self.conns[from].input);
        if input.is_empty() {
            return;
        }
        let n = input.len();
        let c = &mut self.conns[to];
        if c.pending() == 0 {
            c.output = input;
            c.out_pos = 0;
        } else {
            c.output.extend_from_slice(&input);
        }
        self.forwarded(from, n);
    }

    /// Counts `n` forwarded bytes and runs the handler's `forwarded` hook on the
    /// reading side's state.
    fn forwarded(&mut self, reader: usize, n: usize) {
        bump(&self.stats.forwarded, n as u64);
        let Self { handler, conns, .. } = self;
        let state = &mut conns[reader].state;
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.forwarded(state, n)) {
            bump(&self.stats.panics, 1);
            error!("loop {}: forwarded panicked: {msg}; closing the pair", self.parts.id);
            self.close(reader, CloseReason::Panic(msg));
        }
    }

    /// The read path of linked connection `key`: read, pass to the partner, until the
    /// socket is drained, the partner is full, or the read budget is spent.
    pub(super) fn forward(&mut self, key: usize) {
        for _ in 0..self.parts.config.read_budget {
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.has(PAUSED | READ_CLOSED | CLOSING | USER_PAUSED) {
                return;
            }
            let Some(peer) = c.link.as_ref().map(|l| l.peer) else { return };
            let n = match read_socket(&c.sock, &mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(key, CloseReason::Error(e)),
            };
            bump(&self.stats.reads, 1);
            if n == 0 {
                c.flags |= READ_CLOSED;
                self.conns[peer].flags |= FIN_PENDING;
                self.settle_link(peer);
                self.settle_link(key);
                return;
            }
            bump(&self.stats.bytes_read, n as u64);
            c.active = self.now_tick;
            if !self.pass(peer, n) {
                return;
            }
            self.forwarded(key, n);
            if n < self.rbuf.len() && self.conns.get(key).is_some_and(|c| !c.has(HUP_SEEN)) {
                return; // drained: new bytes raise a new edge
            }
        }
        if let Some(c) = self.conns.get(key) {
            self.more_to_read.push((key, c.generation));
        }
    }

    /// Writes `rbuf[..n]` to `to` (at once when nothing is pending there, else queued),
    /// then sets its interest and paces its partner. False when `to` was closed by an
    /// error (and so, through the link, is the reading side on its way out).
    fn pass(&mut self, to: usize, n: usize) -> bool {
        let c = &mut self.conns[to];
        c.active = self.now_tick;
        let data = &self.rbuf[..n];
        if c.pending() == 0 {
            let written = match write_socket(&c.sock, data) {
                Ok(w) => {
                    bump(&self.stats.writes, 1);
                    bump(&self.stats.bytes_written, w as u64);
                    w
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    self.close(to, CloseReason::Error(e));
                    return false;
                }
            };
            if written < n {
                bump(&self.stats.partial_writes, 1);
                c.output.extend_from_slice(&data[written..]);
            } else {
                return true; // all written: interest and pacing unchanged
            }
        } else {
            c.output.extend_from_slice(data);
        }
        if let Err(e) = self.update_interest(to) {
            self.close(to, CloseReason::Error(e));
            return false;
        }
        true
    }

    /// Pauses or resumes the reading of `partner` by the pending output (`pending`) of
    /// the connection it feeds.
    pub(super) fn pace_partner(&mut self, partner: usize, pending: usize) {
        let cfg = &self.parts.config;
        let Some(p) = self.conns.get_mut(partner) else { return };
        if pending > cfg.high_watermark {
            p.flags |= PAUSED;
        } else if pending <= cfg.low_watermark && p.has(PAUSED) {
            p.flags &= !PAUSED;
            // Read it now: edge triggering brings no new event for queued bytes.
            self.more_to_read.push((partner, p.generation));
        }
    }

    /// After output or end of input on linked connection `key`: shuts its write side
    /// once its partner's input has ended and its output is written, and closes the
    /// pair once both directions are done. Returns whether `key` is open and readable.
    pub(super) fn settle_link(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        if c.has(FIN_PENDING) && !c.has(WRITE_SHUT) && c.pending() == 0 {
            if let Err(e) = c.sock.shutdown_write() {
                self.close(key, CloseReason::Error(e));
                return false;
            }
            c.flags |= WRITE_SHUT;
        }
        let Some(peer) = c.link.as_ref().map(|l| l.peer) else {
            return !c.has(PAUSED | CLOSING | READ_CLOSED | USER_PAUSED);
        };
        let done = |c: &Connection<H::State>| c.has(READ_CLOSED) && c.has(WRITE_SHUT);
        if done(c) && self.conns.get(peer).is_some_and(done) {
            // Both inputs ended, both outputs written and shut: the pair is over.
            for k in [key, peer] {
                self.conns[k].link = None;
            }
            self.close(key, CloseReason::PeerClosed);
            self.close(peer, CloseReason::PeerClosed);
            return false;
        }
        !self.conns[key].has(PAUSED | CLOSING | READ_CLOSED | USER_PAUSED)
    }

    /// The partner named by `link` lost its other half abnormally: unlink it, stop
    /// reading it, and close it once its pending output is written (bounded by the
    /// close timeout).
    pub(super) fn partner_gone(&mut self, link: &Link) {
        if !self.is_current(link.peer, link.peer_gen) {
            return;
        }
        let key = link.peer;
        let c = &mut self.conns[key];
        c.link = None;
        c.flags |= PARTNER_GONE;
        if c.has(CLOSING) {
            return; // already on its way out
        }
        self.after_callback(key, Action::Close);
    }
}
