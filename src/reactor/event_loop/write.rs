//! The write path: callback output (or bytes from a `ConnHandle`) → socket, with what the
//! kernel does not take queued in order; WRITABLE interest on and off; the high/low
//! watermarks that pause and resume reading; close-after-flush and its deadline.
//!
//! Right after a callback returns, one `write` of what it produced (no epoll_ctl on the
//! fast path: a connection with nothing pending writes from the per-loop buffer). A
//! partial write keeps the rest in the connection's output buffer and turns WRITABLE
//! interest on; it goes off again once the buffer is empty. Above the high watermark the
//! connection is not read until its output drains to the low watermark, and then it is
//! read at once (edge triggering brings no new event for bytes already queued). A
//! connection asked to close keeps its output until it is written or the close timeout
//! passes. Every byte leaves through [`write_socket`]: the one place where a layer
//! between handler and socket (TLS: plaintext in, ciphertext queued) would sit.
//!
//! For a linked connection the watermarks pace its *partner*: above the high watermark
//! the partner is not read, at the low one it is read again (`link.rs`).
//!
//! A large rest of a fast-path write is handed over as the buffer itself (no second copy
//! of a large reply). After each write the output limits are enforced
//! (`within_output_limits`): pending output over `Config::max_output` closes the
//! connection at once; over the soft limit starts a clock the timers check.

use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::Interest;

use super::conn::{
    CLOSING, Connection, HEARD, PARTNER_GONE, PAUSED, READ_CLOSED, USER_PAUSED, WANT_WRITABLE,
    WRITE_INTEREST, clear_keeping_small,
};
use super::{EventLoop, Tok};
use crate::reactor::handler::{Action, CloseReason, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::{LoopStats, bump};
use crate::reactor::timer::Tick;

impl<H: EventHandler> EventLoop<H> {
    /// Queues `bytes` from a [`ConnHandle`](crate::reactor::ConnHandle) behind the
    /// connection's pending output and writes what the kernel takes now.
    pub(super) fn queue(&mut self, key: usize, bytes: Vec<u8>) {
        let c = &mut self.conns[key];
        if c.tls().is_some() {
            self.wbuf.extend_from_slice(&bytes); // plaintext: encrypted by `flush`
        } else {
            c.push_output(bytes);
        }
        self.after_callback(key, Action::None);
    }

    /// Writes what the callback produced, carries out what it queued ([`Op`]s), then
    /// its action. Returns whether the connection is still open and may be read.
    ///
    /// [`Op`]: super::Op
    pub(super) fn after_callback(&mut self, key: usize, action: Action) -> bool {
        let Some(c) = self.conns.get(key) else {
            return false; // closed by a panic in the callback
        };
        let generation = c.generation;
        if let Err(e) = self.flush(key) {
            self.close(key, CloseReason::Error(e));
            return false;
        }
        if !self.ctx.ops.is_empty() {
            self.apply_ops();
            if !self.is_current(key, generation) {
                return false;
            }
        }
        if !self.within_output_limits(key) {
            return false;
        }
        // Nothing in flight any more: the buffers go back to the free list.
        self.conns[key].tidy();
        match action {
            Action::None => {}
            Action::Close => {
                let c = &mut self.conns[key];
                c.flags |= CLOSING;
                if c.queued() > 0 {
                    let deadline = Instant::now() + self.parts.config.close_timeout;
                    self.closing.push_back((key, c.generation, deadline));
                }
            }
            Action::Shutdown => {
                self.stop = true;
                self.parts.server.shutdown();
                return false;
            }
            Action::Detach => {
                self.detach(key);
                return false;
            }
        }
        let c = &self.conns[key];
        if c.pending() == 0 {
            if c.has(CLOSING) && c.queued() == 0 {
                let reason =
                    if c.has(PARTNER_GONE) { CloseReason::LinkClosed } else { CloseReason::Closed };
                self.close(key, reason);
                return false;
            }
            if c.has(READ_CLOSED) && c.link().is_none() {
                self.close(key, CloseReason::PeerClosed);
                return false;
            }
        }
        if c.link().is_some() {
            return self.settle_link(key);
        }
        if self.draining.is_some() && c.is_idle() && c.has(HEARD) {
            // Draining: its request is answered and flushed; nothing more is accepted.
            // (One not yet heard from, e.g. opened during the drain, is served first.)
            self.close(key, CloseReason::Shutdown);
            return false;
        }
        !c.has(PAUSED | CLOSING | READ_CLOSED | USER_PAUSED)
    }

    /// Writes the output of a callback (or pending output) and sets WRITABLE interest
    /// and the read pause to match what is left.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        if let Some((tls, output)) = c.tls_and_output() {
            tls.encrypt(&mut self.wbuf, output)?; // plaintext → ciphertext pending
        }
        if !self.wbuf.is_empty() {
            // Fast path: nothing was pending, so the callback wrote into the loop's
            // buffer. One write; what the kernel does not take is kept, in order.
            let written = match write_socket(&c.sock, &self.wbuf) {
                Ok(n) => {
                    bump(&self.stats.writes, 1);
                    bump(&self.stats.bytes_written, n as u64);
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    self.wbuf.clear();
                    return Err(e);
                }
            };
            if written < self.wbuf.len() {
                bump(&self.stats.partial_writes, 1);
                let b = c.bufs_mut();
                if self.wbuf.len() - written > self.rbuf.len() && b.output.is_empty() {
                    // A large rest: hand the buffer itself over instead of copying it (a
                    // second copy of a large reply doubles the memory it takes).
                    b.output =
                        std::mem::replace(&mut self.wbuf, Vec::with_capacity(self.rbuf.len()));
                    b.out_pos = written;
                } else {
                    b.output.extend_from_slice(&self.wbuf[written..]);
                }
            }
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * self.rbuf.len() {
                self.wbuf.shrink_to(self.rbuf.len());
            }
        } else if c.pending() > 0 && !c.has(WRITE_INTEREST) {
            c.write_pending(&self.stats)?;
        }
        let registry = self.parts.poll.registry();
        let high = self.parts.config.high_watermark;
        if let Some((partner, queued)) = c.settle_output(registry, key, &self.stats, high)? {
            self.pace_partner(partner, queued);
        }
        Ok(())
    }

    /// Sets WRITABLE interest and the read pause to match the queued output of `key`:
    /// its own reading for an unlinked connection, its partner's for a linked one.
    pub(super) fn update_interest(&mut self, key: usize) -> io::Result<()> {
        let registry = self.parts.poll.registry();
        let high = self.parts.config.high_watermark;
        let c = &mut self.conns[key];
        if let Some((partner, queued)) = c.settle_output(registry, key, &self.stats, high)? {
            self.pace_partner(partner, queued);
        }
        Ok(())
    }

    /// Enforces the output limits on `key`'s pending output (after a write): above
    /// `max_output` it is closed at once; above the soft limit its clock starts (the
    /// timers close it if it stays above for the period). Counted in
    /// `output_limit_closes`. Returns whether the connection is still open.
    fn within_output_limits(&mut self, key: usize) -> bool {
        let cfg = &self.parts.config;
        let c = &mut self.conns[key];
        let pending = c.pending();
        if cfg.max_output.is_some_and(|max| pending > max) {
            bump(&self.stats.output_limit_closes, 1);
            self.close(key, CloseReason::OutputLimit);
            return false;
        }
        if let Some((soft, _)) = cfg.max_output_soft
            && let Some(b) = c.bufs.as_deref_mut()
        {
            // (No buffers: nothing pending, and so not over the limit.)
            if pending <= soft {
                b.over_soft = Tick::MAX;
            } else if b.over_soft == Tick::MAX {
                b.over_soft = self.now_tick;
                self.schedule(key);
            }
        }
        true
    }

    /// The socket of `key` can take more: write pending output, resume reading below the
    /// low watermark.
    pub(super) fn on_writable(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let before = c.queued();
        if let Err(e) = c.write_pending(&self.stats) {
            return self.close(key, CloseReason::Error(e));
        }
        if c.link().is_some() && !self.drain_inbox(key) {
            return; // closed by an error
        }
        let c = &mut self.conns[key];
        if c.queued() < before {
            c.active = self.now_tick;
        }
        // (A linked connection's PAUSED is about its partner: see `update_interest`.)
        let resume =
            c.link().is_none() && c.has(PAUSED) && c.pending() <= self.parts.config.low_watermark;
        if resume {
            c.flags &= !PAUSED;
        }
        if self.after_callback(key, Action::None) && resume && self.offer_leftover(key) {
            // Bytes that arrived while paused raised no new edge: read them now.
            self.on_readable(key);
        }
        self.check_writable(key);
    }

    /// Calls the handler's `writable` if a handle asked for it
    /// ([`ConnHandle::notify_writable`]) and the queued output (pending plus what
    /// handles have in the channel) is at or below the low watermark.
    ///
    /// [`ConnHandle::notify_writable`]: crate::reactor::ConnHandle::notify_writable
    pub(super) fn check_writable(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.has(WANT_WRITABLE) || c.has(CLOSING) {
            return;
        }
        let queued = c.alive().map_or(c.queued(), |h| h.queued());
        if queued > self.parts.config.low_watermark {
            return;
        }
        c.flags &= !WANT_WRITABLE;
        let action = self.dispatch(key, |h, conn, state| h.writable(conn, state));
        self.after_callback(key, action);
    }

    /// Closes the connections whose close-after-flush deadline has passed with output
    /// still unwritten.
    pub(super) fn expire_closing(&mut self, now: Instant) {
        while let Some(&(key, generation, deadline)) = self.closing.front() {
            if deadline > now {
                break;
            }
            self.closing.pop_front();
            if self.is_current(key, generation) {
                self.close(key, CloseReason::FlushTimeout);
            }
        }
    }
}

impl<S> Connection<S> {
    /// After output was written or queued: WRITABLE interest on while output is queued
    /// and off once it is written, the queued count published to handles, the peak
    /// recorded, and an unlinked connection paused above the `high` watermark. For a
    /// linked one, returns its partner and the queued count, for the caller to pace the
    /// partner's reading (`pace_partner`).
    #[inline]
    fn settle_output(
        &mut self,
        registry: &mio::Registry,
        key: usize,
        stats: &LoopStats,
        high: usize,
    ) -> io::Result<Option<(usize, usize)>> {
        let queued = self.queued();
        let token = Tok::Conn(key).token();
        if queued > 0 && !self.has(WRITE_INTEREST) {
            registry.reregister(&mut self.sock, token, Interest::READABLE | Interest::WRITABLE)?;
            self.flags |= WRITE_INTEREST;
        } else if queued == 0 && self.has(WRITE_INTEREST) && !self.has(CLOSING | READ_CLOSED) {
            registry.reregister(&mut self.sock, token, Interest::READABLE)?;
            self.flags &= !WRITE_INTEREST;
        }
        if let Some(h) = self.alive() {
            h.publish(queued);
        }
        if queued > 0 {
            let peak = &stats.peak_pending_output;
            if queued as u64 > peak.load(Relaxed) {
                peak.store(queued as u64, Relaxed);
            }
        }
        if let Some(link) = self.link() {
            return Ok(Some((link.peer, queued)));
        }
        if queued > high {
            self.flags |= PAUSED;
        }
        Ok(None)
    }

    /// Appends `bytes` to the pending output (taking the vector over when nothing is
    /// pending).
    pub(super) fn push_output(&mut self, bytes: Vec<u8>) {
        let b = self.bufs_mut();
        if b.pending() == 0 {
            b.output = bytes;
            b.out_pos = 0;
        } else {
            b.output.extend_from_slice(&bytes);
        }
    }

    /// Writes pending output until it is all written or the kernel buffer is full.
    pub(super) fn write_pending(&mut self, stats: &LoopStats) -> io::Result<()> {
        let Some(b) = self.bufs.as_deref_mut() else { return Ok(()) };
        while b.out_pos < b.output.len() {
            match write_socket(&self.sock, &b.output[b.out_pos..]) {
                Ok(n) => {
                    b.out_pos += n;
                    bump(&stats.writes, 1);
                    bump(&stats.bytes_written, n as u64);
                    if b.out_pos < b.output.len() {
                        bump(&stats.partial_writes, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if b.out_pos == b.output.len() {
            // All written: a large vector is freed now, a small one stays for reuse.
            clear_keeping_small(&mut b.output);
            b.out_pos = 0;
        } else if b.out_pos >= b.output.len() / 2 {
            // Amortised compaction: each byte moves at most once per halving.
            b.output.drain(..b.out_pos);
            b.out_pos = 0;
        }
        Ok(())
    }
}

/// One nonblocking `write` to a connection, retried only on EINTR: the only way bytes
/// leave the write path. Zero bytes written for a non-empty buffer is `WriteZero`.
#[inline]
pub(super) fn write_socket(mut sock: &Stream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock.write(buf) {
            Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
