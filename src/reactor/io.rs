//! A loop's read and write paths, and closing.
//!
//! Read: into the per-loop buffer until WouldBlock, a short read (the socket is drained;
//! new bytes raise a new edge) or the read budget. The handler sees leftover input plus
//! the new bytes and says how much it consumed; only the tail is kept.
//!
//! Write: right after the callback returns, one `write` of what it produced. What the
//! kernel does not take stays in the connection's output buffer under WRITABLE interest
//! (no epoll_ctl on the fast path); above the high watermark the connection is not read
//! until its output drains to the low watermark.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use log::error;
use mio::{Interest, Token};

use super::conn::{CLOSING, Connection, HUP_SEEN, PAUSED, READ_CLOSED, WRITE_INTEREST};
use super::event_loop::{EventLoop, guard};
use super::handler::{Action, CloseReason, Conn, Detached, EventHandler};
use super::socket::Stream;
use super::stats::bump;

impl<H: EventHandler> EventLoop<H> {
    pub(crate) fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, hup: bool) {
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
    pub(crate) fn on_readable(&mut self, key: usize) {
        for _ in 0..self.parts.config.read_budget {
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.has(PAUSED | READ_CLOSED | CLOSING) {
                return;
            }
            let n = match (&c.sock).read(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
            let had_input = !c.input.is_empty();
            c.active = self.now_tick;
            let action = self.deliver(key, n);
            if !had_input
                && self.timeouts.is_some()
                && let Some(c) = self.conns.get_mut(key).filter(|c| !c.input.is_empty())
            {
                // A new incomplete request starts its clock.
                c.partial_since = self.now_tick;
                self.schedule(key);
            }
            if !self.after_callback(key, action) {
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

    pub(crate) fn continue_reads(&mut self) {
        if self.more_to_read.is_empty() {
            return;
        }
        for (key, generation) in std::mem::take(&mut self.more_to_read) {
            if self.is_current(key, generation) {
                self.on_readable(key);
            }
        }
    }

    /// Hands `rbuf[..n]`, after any leftover input, to the handler and keeps the
    /// unconsumed tail.
    fn deliver(&mut self, key: usize, n: usize) -> Action {
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
                    *input = Vec::new();
                } else {
                    input.drain(..consumed);
                }
                action
            }
        });
        self.rbuf = rbuf;
        action
    }

    /// Runs a callback that gets the connection's context and state (`woken`, ...).
    pub(crate) fn dispatch(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State) -> Action,
    ) -> Action {
        self.dispatch_with_input(key, |h, conn, state, _| f(h, conn, state))
    }

    /// Builds the callback context of connection `key` and runs `f` with it, its state
    /// and its leftover input. A panic in `f` (when caught) closes the connection:
    /// the returned `Action::Close` then finds it gone.
    fn dispatch_with_input(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State, &mut Vec<u8>) -> Action,
    ) -> Action {
        let Self { handler, conns, wbuf, parts, .. } = self;
        let c = &mut conns[key];
        let pending = c.pending();
        let Connection { sock, state, generation, peer, input, output, alive, listener, .. } = c;
        let mut conn = Conn {
            out: if pending > 0 { output } else { wbuf },
            peer: *peer,
            listener: listener_index(*listener),
            socket: sock,
            pending,
            remote: &parts.remote,
            key,
            generation: *generation,
            alive,
        };
        let peer = *peer;
        match guard(parts.config.catch_panics, || f(handler, &mut conn, state, input)) {
            Ok(action) => action,
            Err(msg) => {
                bump(&self.stats.panics, 1);
                error!(
                    "loop {}: handler panicked serving {peer}: {msg}; closing it",
                    self.parts.id
                );
                self.wbuf.clear();
                self.close(key, CloseReason::Panic(msg));
                Action::Close
            }
        }
    }

    /// Writes what the callback produced, then carries out its action. Returns whether
    /// the connection is still open and may be read.
    pub(crate) fn after_callback(&mut self, key: usize, action: Action) -> bool {
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
        if !self.wbuf.is_empty() {
            // Fast path: nothing was pending, so the callback wrote into the loop's
            // buffer. One write; what the kernel does not take is kept, in order.
            let written = match write_once(&c.sock, &self.wbuf) {
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
        if pending > 0 && !c.has(WRITE_INTEREST) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.parts.poll.registry().reregister(&mut c.sock, Token(key), interest)?;
            c.flags |= WRITE_INTEREST;
        } else if pending == 0 && c.has(WRITE_INTEREST) && !c.has(CLOSING | READ_CLOSED) {
            self.parts.poll.registry().reregister(&mut c.sock, Token(key), Interest::READABLE)?;
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

    fn on_writable(&mut self, key: usize) {
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

    // ---- closing ------------------------------------------------------------------

    pub(crate) fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(c) = self.conns.try_remove(key) else { return };
        c.mark_dead();
        bump(&self.stats.closed, 1);
        bump(&self.stats.open, u64::MAX); // wrapping -1
        self.parts.server.shared.release();
        // Dropping the socket closes it, which also removes it from epoll (we never
        // duplicate connection descriptors), saving an epoll_ctl per close.
        #[cfg(not(target_os = "linux"))]
        let _ = self.parts.poll.registry().deregister(&mut { c.sock });
        let (handler, state, peer) = (&mut self.handler, c.state, c.peer);
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.closed(state, reason)) {
            bump(&self.stats.panics, 1);
            error!("loop {}: closed panicked for {peer}: {msg}", self.parts.id);
        }
    }

    fn detach(&mut self, key: usize) {
        let Some(mut c) = self.conns.try_remove(key) else { return };
        c.mark_dead();
        let _ = c.write_pending(&self.stats);
        let _ = self.parts.poll.registry().deregister(&mut c.sock);
        bump(&self.stats.closed, 1);
        bump(&self.stats.open, u64::MAX);
        self.parts.server.shared.release();
        let output = c.output.split_off(c.out_pos);
        let detached =
            Detached { stream: c.sock.into_detached(), state: c.state, input: c.input, output };
        let handler = &mut self.handler;
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.detached(detached)) {
            bump(&self.stats.panics, 1);
            error!("loop {}: detached panicked: {msg}", self.parts.id);
        }
    }

    /// At shutdown: one last nonblocking attempt to write pending output, then close.
    pub(crate) fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let _ = self.conns[key].write_pending(&self.stats);
            self.close(key, CloseReason::Shutdown);
        }
    }
}

/// The listener index stored as u32 (u32::MAX for attached connections), as the API's usize.
fn listener_index(stored: u32) -> usize {
    if stored == u32::MAX { usize::MAX } else { stored as usize }
}

/// One nonblocking `write`, retried only on EINTR.
fn write_once(mut sock: &Stream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock.write(buf) {
            Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
