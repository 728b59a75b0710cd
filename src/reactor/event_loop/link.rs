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
//! - **Splicing** (Linux, [`LinkOptions::splice`]): each side's [`Link`] holds a pipe of
//!   the bytes coming to it; reading a side is `splice` socket → partner's pipe →
//!   partner's socket ([`EventLoop::forward_spliced`]), and the pipe's content counts as
//!   the partner's pending output for the watermarks, the half-close and the close.
//! - **TLS sides** (a connection with a TLS session, `tls.rs`): the pair always copies
//!   (splicing is silently off: the bytes must pass rustls). Reading a TLS side goes
//!   through its read path (`on_readable_tls`), which passes the decrypted plaintext to
//!   the partner instead of a handler; bytes passed into a TLS side are encrypted
//!   straight into its pending output (`TlsSession::encrypt_slice`), so the
//!   watermarks count its ciphertext as for any connection (rustls keeps no plaintext
//!   once its handshake is done; bytes forwarded into a side still handshaking wait in
//!   rustls, uncounted, until it completes: the proxy links only after the handshake,
//!   a client's at its first bytes, a backend's before `opened`). Half-close: a TLS peer's `close_notify` (or EOF) ends
//!   its input like a FIN; a TLS side whose partner's input ended sends `close_notify`
//!   behind its pending output, then shuts its write side.
//! - **Abnormal ends**: when one side closes any other way (error, reset, timeout,
//!   detach, a handler's close), `close` unlinks the partner, which stops reading,
//!   flushes its pending output (bounded by the close timeout) and closes as
//!   `LinkClosed` ([`EventLoop::partner_gone`]).

use std::io;
use std::os::fd::AsRawFd;

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
use crate::reactor::sys::Pipe;

/// One pipe per direction for a spliced link, or `None` (copy instead) when pipes
/// cannot be had: off Linux, or out of descriptors.
fn pipe_pair(loop_id: usize) -> Option<(Pipe, Pipe)> {
    match Pipe::new().and_then(|a| Ok((a, Pipe::new()?))) {
        Ok(pair) => Some(pair),
        Err(e) => {
            log::debug!("loop {loop_id}: no splice pipes ({e}); this link copies");
            None
        }
    }
}

/// A linked connection's partner, and with splicing the pipe of bytes coming to it.
pub(crate) struct Link {
    /// The partner's slab key and generation.
    pub(super) peer: usize,
    pub(super) peer_gen: u64,
    /// Spliced link: bytes read from the partner that wait here to be spliced into this
    /// connection (after its ordinary pending output). They count as its pending output.
    inbox: Option<Pipe>,
}

impl Link {
    /// Bytes waiting in the inbound pipe.
    #[inline]
    pub(super) fn inbox_len(&self) -> usize {
        self.inbox.as_ref().map_or(0, Pipe::len)
    }

    /// Moves what waits in the inbound pipe to the end of `output` (the link is ending;
    /// the bytes go out through the ordinary write path, or with a detached stream).
    pub(super) fn empty_inbox_into(&mut self, output: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.inbox {
            Some(pipe) => pipe.empty_into(output),
            None => Ok(()),
        }
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// Links `a` (whose callback asked) with `b`. If `b` is not open or not free to
    /// link, `a` is closed (`NotConnected`), as [`Conn::link_with`] documents.
    ///
    /// [`Conn::link_with`]: crate::reactor::Conn::link_with
    pub(super) fn link(&mut self, a: ConnId, b: ConnId, opts: LinkOptions) {
        let Some(ka) = self.resolve(a) else { return };
        let free = |k: usize| {
            let c = &self.conns[k];
            c.link().is_none() && !c.has(CLOSING)
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
        let mut opts = opts;
        if self.conns[ka].tls().is_some() || self.conns[kb].tls().is_some() {
            // A TLS side's bytes must pass rustls: such a pair copies, never splices.
            opts.splice = false;
        }
        bump(&self.stats.links, 1);
        let pipes = if opts.splice { pipe_pair(self.parts.id) } else { None };
        let (pa, pb) = match pipes {
            Some((pa, pb)) => (Some(pa), Some(pb)),
            None => (None, None),
        };
        for (x, y, inbox) in [(ka, kb, pa), (kb, ka, pb)] {
            let peer_gen = self.conns[y].generation;
            let c = &mut self.conns[x];
            c.extra_mut().link = Some(Link { peer: y, peer_gen, inbox });
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
        let Some(b) = self.conns[from].bufs.as_deref_mut() else { return };
        let input = std::mem::take(&mut b.input);
        if input.is_empty() {
            return;
        }
        let n = input.len();
        let c = &mut self.conns[to];
        if let Some((tls, output)) = c.tls_and_output() {
            if let Err(e) = tls.encrypt_slice(&input, output) {
                return self.close(to, CloseReason::Error(e));
            }
        } else {
            c.push_output(input);
        }
        self.forwarded(from, n);
    }

    /// Counts `n` forwarded bytes and runs the handler's `forwarded` hook on the
    /// reading side's state.
    pub(super) fn forwarded(&mut self, reader: usize, n: usize) {
        bump(&self.stats.forwarded, n as u64);
        let Self { handler, conns, .. } = self;
        let state = &mut conns[reader].state;
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.forwarded(state, n)) {
            bump(&self.stats.panics, 1);
            error!("loop {}: forwarded panicked: {msg}; closing the pair", self.parts.id);
            self.close(reader, CloseReason::Panic(msg));
        }
    }

    /// Runs the handler's `forwarded_data` hook with the `n` bytes just copied from
    /// `reader` (still in the read buffer).
    pub(super) fn forwarded_data(&mut self, reader: usize, n: usize) {
        let Self { handler, conns, rbuf, .. } = self;
        let Some(c) = conns.get_mut(reader) else { return };
        let (state, data) = (&mut c.state, &rbuf[..n]);
        if let Err(msg) =
            guard(self.parts.config.catch_panics, || handler.forwarded_data(state, data))
        {
            bump(&self.stats.panics, 1);
            error!("loop {}: forwarded_data panicked: {msg}; closing the pair", self.parts.id);
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
            let Some(peer) = c.link().map(|l| l.peer) else { return };
            if self.conns[peer].link().is_some_and(|l| l.inbox.is_some()) {
                return self.forward_spliced(key, peer);
            }
            let c = &mut self.conns[key];
            let read = read_socket(&c.sock, &mut self.rbuf);
            if let Ok(Some(_)) = read {
                bump(&self.stats.reads, 1);
            }
            let n = match read {
                Ok(Some(0)) => return self.input_ended(key, peer),
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => return self.close(key, CloseReason::Error(e)),
            };
            bump(&self.stats.bytes_read, n as u64);
            c.active = self.now_tick;
            if !self.pass(peer, n) {
                return;
            }
            self.forwarded(key, n);
            self.forwarded_data(key, n);
            if n < self.rbuf.len() && self.conns.get(key).is_some_and(|c| !c.has(HUP_SEEN)) {
                return; // drained: new bytes raise a new edge
            }
        }
        if let Some(c) = self.conns.get(key) {
            self.more_to_read.push((key, c.generation));
        }
    }

    /// End of input on linked `key`: its partner's write side is shut once its output
    /// is written; the pair ends once both directions have.
    pub(super) fn input_ended(&mut self, key: usize, peer: usize) {
        self.conns[key].flags |= READ_CLOSED;
        self.conns[peer].flags |= FIN_PENDING;
        self.settle_link(peer);
        self.settle_link(key);
    }

    /// [`forward`](Self::forward) for a spliced link: socket `key` → the pipe in
    /// `peer`'s link → socket `peer`, the bytes never entering user space. The pipe is
    /// filled only when empty, so a `WouldBlock` while filling means the socket is
    /// drained; a pipe the partner cannot take pauses `key` like a full output does.
    fn forward_spliced(&mut self, key: usize, peer: usize) {
        for _ in 0..self.parts.config.read_budget {
            if !self.drain_inbox(peer) {
                return; // the partner closed on an error
            }
            let (Some(c), Some(p)) = (self.conns.get(key), self.conns.get(peer)) else { return };
            if c.has(PAUSED | READ_CLOSED | CLOSING | USER_PAUSED) {
                return;
            }
            if p.queued() > 0 {
                // The partner is full: wait for its writable event, which resumes `key`
                // (paused after the interest update, which may resume it).
                if let Err(e) = self.update_interest(peer) {
                    return self.close(peer, CloseReason::Error(e));
                }
                if let Some(c) = self.conns.get_mut(key) {
                    c.flags |= PAUSED;
                }
                return;
            }
            let from = c.sock.as_raw_fd();
            let Some(pipe) = self.conns[peer].link_mut().and_then(|l| l.inbox.as_mut()) else {
                return;
            };
            let n = match pipe.fill_from(from) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.close(key, CloseReason::Error(e)),
            };
            bump(&self.stats.reads, 1);
            if n == 0 {
                return self.input_ended(key, peer);
            }
            bump(&self.stats.bytes_read, n as u64);
            bump(&self.stats.spliced, n as u64);
            self.conns[key].active = self.now_tick;
            self.conns[peer].active = self.now_tick;
            self.forwarded(key, n);
        }
        if self.drain_inbox(peer)
            && let Some(c) = self.conns.get(key)
        {
            self.more_to_read.push((key, c.generation));
        }
    }

    /// Splices what waits in `key`'s inbound pipe into its socket, once its ordinary
    /// pending output is written (order is kept). False when `key` closed on an error.
    pub(super) fn drain_inbox(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        if c.pending() > 0 {
            return true;
        }
        let to = c.sock.as_raw_fd();
        let Some(pipe) = c.link_mut().and_then(|l| l.inbox.as_mut()) else { return true };
        while pipe.len() > 0 {
            match pipe.drain_to(to) {
                Ok(n) => {
                    bump(&self.stats.writes, 1);
                    bump(&self.stats.bytes_written, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.close(key, CloseReason::Error(e));
                    return false;
                }
            }
        }
        true
    }

    /// Writes `rbuf[..n]` to `to` (at once when nothing is pending there, else queued),
    /// then sets its interest and paces its partner. False when `to` was closed by an
    /// error (and so, through the link, is the reading side on its way out).
    pub(super) fn pass(&mut self, to: usize, n: usize) -> bool {
        let c = &mut self.conns[to];
        c.active = self.now_tick;
        let data = &self.rbuf[..n];
        if let Some((tls, output)) = c.tls_and_output() {
            // Into a TLS side: encrypted behind its pending ciphertext, then written.
            let sent = tls.encrypt_slice(data, output);
            if let Err(e) = sent.and_then(|()| c.write_pending(&self.stats)) {
                self.close(to, CloseReason::Error(e));
                return false;
            }
        } else if c.pending() == 0 {
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
                c.output_mut().extend_from_slice(&data[written..]);
            } else {
                return true; // all written: interest and pacing unchanged
            }
        } else {
            c.output_mut().extend_from_slice(data);
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
        if c.has(FIN_PENDING)
            && !c.has(WRITE_SHUT)
            && c.queued() == 0
            && let Some((tls, output)) = c.tls_and_output()
        {
            // TLS: `close_notify` goes out first; the socket is shut once it has.
            let sent = tls.close_notify(output);
            if let Err(e) = sent.and_then(|()| c.write_pending(&self.stats)) {
                self.close(key, CloseReason::Error(e));
                return false;
            }
        }
        if c.has(FIN_PENDING) && !c.has(WRITE_SHUT) && c.queued() == 0 {
            if let Err(e) = c.sock.shutdown_write() {
                self.close(key, CloseReason::Error(e));
                return false;
            }
            c.flags |= WRITE_SHUT;
        }
        let Some(peer) = c.link().map(|l| l.peer) else {
            return !c.has(PAUSED | CLOSING | READ_CLOSED | USER_PAUSED);
        };
        let done = |c: &Connection<H::State>| c.has(READ_CLOSED) && c.has(WRITE_SHUT);
        if done(c) && self.conns.get(peer).is_some_and(done) {
            // Both inputs ended, both outputs written and shut: the pair is over.
            for k in [key, peer] {
                self.conns[k].take_link();
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
        if let Some(mut link) = c.take_link() {
            // What its pipe holds still goes out, through the ordinary write path.
            let b = c.bufs_mut();
            if b.pending() == 0 {
                b.output.clear();
                b.out_pos = 0;
            }
            if let Err(e) = link.empty_inbox_into(&mut b.output) {
                error!("loop {}: cannot empty a splice pipe: {e}", self.parts.id);
            }
        }
        c.flags |= PARTNER_GONE;
        if c.has(CLOSING) {
            return; // already on its way out
        }
        self.after_callback(key, Action::Close);
    }
}
