//! One connection as the loop stores it (socket, state, leftover input, pending output,
//! flags, timer stamps), and the ways a connection ends: close, detach, and the close of
//! every connection when the loop stops.
//!
//! An idle connection holds no buffers: input and output vectors are dropped when they
//! empty, and the fast path reads into and writes from per-loop scratch buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::error;

use super::tls::TlsSession;
use super::{EventLoop, guard};
use crate::net::addr::Peer;
use crate::reactor::handler::{CloseReason, Detached, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::bump;
use crate::reactor::timer::Tick;

/// WRITABLE interest is registered (pending output is waiting for the kernel).
pub(super) const WRITE_INTEREST: u8 = 1;
/// The peer closed its side (read returned EOF).
pub(super) const READ_CLOSED: u8 = 2;
/// Close once pending output is flushed; read no more.
pub(super) const CLOSING: u8 = 4;
/// Not read because pending output is above the high watermark.
pub(super) const PAUSED: u8 = 8;
/// The poller reported the peer's FIN (EPOLLRDHUP) together with data: a short read no
/// longer means "drained", so reading goes on until it returns EOF.
pub(super) const HUP_SEEN: u8 = 16;

/// A connection's record in the loop's slab.
pub(super) struct Connection<S> {
    pub(super) sock: Stream,
    pub(super) state: S,
    pub(super) generation: u64,
    pub(super) peer: Peer,
    /// Unconsumed input (empty, unallocated, on the fast path).
    pub(super) input: Vec<u8>,
    /// Pending output; bytes before `out_pos` are already written.
    pub(super) output: Vec<u8>,
    pub(super) out_pos: usize,
    /// Set to false when the connection goes away; allocated only once a handle exists.
    pub(super) alive: Option<Arc<AtomicBool>>,
    pub(super) listener: u32,
    pub(super) flags: u8,
    /// Wheel tick of the last bytes read or written (kept only when timeouts are on).
    pub(super) active: Tick,
    /// Wheel tick at which the current unconsumed input began.
    pub(super) partial_since: Tick,
    /// Tick of this connection's live timer-wheel entry; `Tick::MAX` when none.
    pub(super) timer_at: Tick,
    /// The TLS session of a connection from a TLS listener (see `tls.rs`).
    pub(super) tls: Option<Box<TlsSession>>,
}

impl<S> Connection<S> {
    /// Bytes of output waiting for the kernel.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.output.len() - self.out_pos
    }

    #[inline]
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// True when nothing is in flight: no unconsumed input, no pending output.
    pub(super) fn is_idle(&self) -> bool {
        self.input.is_empty() && self.pending() == 0
    }

    /// Marks the connection gone for any `ConnHandle` that points at it.
    fn mark_dead(&self) {
        if let Some(a) = &self.alive {
            a.store(false, Ordering::Release);
        }
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// Removes connection `key` (if still there), closes its socket and calls `closed`.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut c) = self.conns.try_remove(key) else { return };
        c.mark_dead();
        c.end_tls();
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

    /// Hands connection `key` back to the handler ([`Action::Detach`]): one last attempt
    /// to write its pending output, then the socket leaves the loop with what is left.
    ///
    /// [`Action::Detach`]: crate::reactor::Action::Detach
    pub(super) fn detach(&mut self, key: usize) {
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
    pub(super) fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let _ = self.conns[key].write_pending(&self.stats);
            self.close(key, CloseReason::Shutdown);
        }
    }
}
