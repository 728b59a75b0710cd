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

use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::Interest;

use super::conn::{CLOSING, Connection, PAUSED, READ_CLOSED, WRITE_INTEREST};
use super::{EventLoop, Tok};
use crate::reactor::handler::{Action, CloseReason, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::{LoopStats, bump};

impl<H: EventHandler> EventLoop<H> {
    /// Queues `bytes` from a [`ConnHandle`](crate::reactor::ConnHandle) behind the
    /// connection's pending output and writes what the kernel takes now.
    pub(super) fn queue(&mut self, key: usize, bytes: Vec<u8>) {
        let c = &mut self.conns[key];
        if c.tls.is_some() {
            self.wbuf.extend_from_slice(&bytes); // plaintext: encrypted by `flush`
        } else if c.pending() == 0 {
            c.output = bytes;
            c.out_pos = 0;
        } else {
            c.output.extend_from_slice(&bytes);
        }
        self.after_callback(key, Action::None);
    }

    /// Writes what the callback produced, then carries out its action. Returns whether
    /// the connection is still open and may be read.
    pub(super) fn after_callback(&mut self, key: usize, action: Action) -> bool {
        if !self.conns.contains(key) {
            return false; // closed by a panic in the callback
        }
        if let Err(e) = self.flush(key) {
            self.close(key, CloseReason::Error(e));
            return false;
        }
        match action {
            Action::None => {}
            Action::Close => {
                let c = &mut self.conns[key];
                c.flags |= CLOSING;
                if c.pending() > 0 {
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
        if c.pending() == 0 && c.has(CLOSING | READ_CLOSED) {
            let reason = if c.has(CLOSING) { CloseReason::Closed } else { CloseReason::PeerClosed };
            self.close(key, reason);
            return false;
        }
        if self.draining.is_some() && c.is_idle() {
            // Draining: its request is answered and flushed; nothing more is accepted.
            self.close(key, CloseReason::Shutdown);
            return false;
        }
        !c.has(PAUSED | CLOSING | READ_CLOSED)
    }

    /// Writes the output of a callback (or pending output) and sets WRITABLE interest
    /// and the read pause to match what is left.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        if let Some(tls) = c.tls.as_deref_mut() {
            tls.encrypt(&mut self.wbuf, &mut c.output)?; // plaintext → ciphertext pending
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
                c.output.extend_from_slice(&self.wbuf[written..]);
            }
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * self.rbuf.len() {
                self.wbuf.shrink_to(self.rbuf.len());
            }
        } else if c.pending() > 0 && !c.has(WRITE_INTEREST) {
            c.write_pending(&self.stats)?;
        }
        let pending = c.pending();
        let cfg = &self.parts.config;
        let token = Tok::Conn(key).token();
        if pending > 0 && !c.has(WRITE_INTEREST) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.parts.poll.registry().reregister(&mut c.sock, token, interest)?;
            c.flags |= WRITE_INTEREST;
        } else if pending == 0 && c.has(WRITE_INTEREST) && !c.has(CLOSING | READ_CLOSED) {
            self.parts.poll.registry().reregister(&mut c.sock, token, Interest::READABLE)?;
            c.flags &= !WRITE_INTEREST;
        }
        if pending > 0 {
            let peak = &self.stats.peak_pending_output;
            if pending as u64 > peak.load(Relaxed) {
                peak.store(pending as u64, Relaxed);
            }
            if pending > cfg.high_watermark {
                c.flags |= PAUSED;
            }
        }
        Ok(())
    }

    /// The socket of `key` can take more: write pending output, resume reading below the
    /// low watermark.
    pub(super) fn on_writable(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let before = c.pending();
        if let Err(e) = c.write_pending(&self.stats) {
            return self.close(key, CloseReason::Error(e));
        }
        if c.pending() < before {
            c.active = self.now_tick;
        }
        let resume = c.has(PAUSED) && c.pending() <= self.parts.config.low_watermark;
        if resume {
            c.flags &= !PAUSED;
        }
        if self.after_callback(key, Action::None) && resume {
            // Bytes that arrived while paused raised no new edge: read them now.
            self.on_readable(key);
        }
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
    /// Writes pending output until it is all written or the kernel buffer is full.
    pub(super) fn write_pending(&mut self, stats: &LoopStats) -> io::Result<()> {
        while self.out_pos < self.output.len() {
            match write_socket(&self.sock, &self.output[self.out_pos..]) {
                Ok(n) => {
                    self.out_pos += n;
                    bump(&stats.writes, 1);
                    bump(&stats.bytes_written, n as u64);
                    if self.out_pos < self.output.len() {
                        bump(&stats.partial_writes, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.output.len() {
            self.output = Vec::new();
            self.out_pos = 0;
        } else if self.out_pos >= self.output.len() / 2 {
            // Amortised compaction: each byte moves at most once per halving.
            self.output.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// One nonblocking `write` to a connection, retried only on EINTR: the only way bytes
/// leave the write path. Zero bytes written for a non-empty buffer is `WriteZero`.
#[inline]
fn write_socket(mut sock: &Stream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock.write(buf) {
            Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
