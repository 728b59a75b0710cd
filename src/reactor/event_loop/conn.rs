//! One connection as the loop stores it (socket, state, leftover input, pending output,
//! flags, timer stamps, its link and origin when it has them), and the ways a connection
//! ends: close, detach, and the close of every connection when the loop stops. A linked
//! connection that ends takes its partner with it (see `link.rs`).
//!
//! An idle connection holds no buffers: input and output vectors are dropped when they
//! empty, and the fast path reads into and writes from per-loop scratch buffers.

use std::sync::Arc;

use log::error;

use super::link::Link;
use super::tls::TlsSession;
use super::{EventLoop, guard};
use crate::net::addr::Peer;
use crate::reactor::handle::HandleShared;
use crate::reactor::handler::{CloseReason, Detached, EventHandler, Origin};
use crate::reactor::socket::Stream;
use crate::reactor::stats::bump;
use crate::reactor::timer::Tick;

/// WRITABLE interest is registered (pending output is waiting for the kernel).
pub(super) const WRITE_INTEREST: u16 = 1;
/// The peer closed its side (read returned EOF).
pub(super) const READ_CLOSED: u16 = 2;
/// Close once pending output is flushed; read no more.
pub(super) const CLOSING: u16 = 4;
/// Not read because pending output is above the high watermark (a linked connection:
/// because its partner's pending output is).
pub(super) const PAUSED: u16 = 8;
/// The poller reported the peer's FIN (EPOLLRDHUP) together with data: a short read no
/// longer means "drained", so reading goes on until it returns EOF.
pub(super) const HUP_SEEN: u16 = 16;
/// Not read because the handler asked ([`Conn::pause_reading`]).
///
/// [`Conn::pause_reading`]: crate::reactor::Conn::pause_reading
pub(crate) const USER_PAUSED: u16 = 32;
/// Linked: the partner's input ended; shut this socket's write side once its pending
/// output is written.
pub(super) const FIN_PENDING: u16 = 64;
/// This socket's write side is shut down (`shutdown(Write)` done).
pub(super) const WRITE_SHUT: u16 = 128;
/// Opened by the connect path: not counted against `max_conns`; its id is findable by
/// generation (`outbound_keys`).
pub(super) const OUTBOUND: u16 = 256;
/// Closing because its linked partner ended abnormally (closed as `LinkClosed`).
pub(super) const PARTNER_GONE: u16 = 512;
/// A handle asked to hear when the queued output is back at the low watermark
/// (`ConnHandle::notify_writable`).
pub(super) const WANT_WRITABLE: u16 = 1024;
/// At least one byte has been read from the peer. A drain closes idle connections only
/// once they have been heard from: one accepted just before the drain (its first request
/// perhaps still on the way) is served first, not closed unanswered.
pub(super) const HEARD: u16 = 2048;

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
    pub(super) alive: Option<Arc<HandleShared>>,
    pub(super) listener: u32,
    pub(super) flags: u16,
    /// Wheel tick of the last bytes read or written (kept only when timeouts are on).
    pub(super) active: Tick,
    /// Wheel tick at which the current unconsumed input began.
    pub(super) partial_since: Tick,
    /// Tick of this connection's live timer-wheel entry; `Tick::MAX` when none.
    pub(super) timer_at: Tick,
    /// The TLS session of a connection from a TLS listener (see `tls.rs`).
    pub(super) tls: Option<Box<TlsSession>>,
    /// The partner of a linked pair (boxed: most connections have none).
    pub(super) link: Option<Box<Link>>,
    /// Tag and requester of an outbound connection.
    pub(super) origin: Option<Box<Origin>>,
    /// Tick of the handler's request deadline (`Conn::set_request_deadline`);
    /// `Tick::MAX` when none.
    pub(super) deadline: Tick,
    /// Tick since which pending output has been above the soft output limit;
    /// `Tick::MAX` when it is not.
    pub(super) over_soft: Tick,
}

impl<S> Connection<S> {
    /// Bytes of output waiting for the kernel.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.output.len() - self.out_pos
    }

    /// Bytes waiting for the kernel, including those a spliced link holds in this
    /// connection's inbound pipe.
    #[inline]
    pub(super) fn queued(&self) -> usize {
        self.pending() + self.link.as_ref().map_or(0, |l| l.inbox_len())
    }

    #[inline]
    pub(super) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// True when nothing is in flight: no unconsumed input, no pending output, and not
    /// linked (a linked pair is busy until it ends).
    pub(super) fn is_idle(&self) -> bool {
        self.input.is_empty() && self.pending() == 0 && self.link.is_none()
    }

    /// Marks the connection gone for any `ConnHandle` that points at it.
    fn mark_dead(&self) {
        if let Some(a) = &self.alive {
            a.mark_dead();
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
        self.forget(&c);
        let link = c.link.take();
        // Dropping the socket closes it, which also removes it from epoll (we never
        // duplicate connection descriptors), saving an epoll_ctl per close.
        #[cfg(not(target_os = "linux"))]
        let _ = self.parts.poll.registry().deregister(&mut { c.sock });
        let (handler, state, peer) = (&mut self.handler, c.state, c.peer);
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.closed(state, reason)) {
            bump(&self.stats.panics, 1);
            error!("loop {}: closed panicked for {peer}: {msg}", self.parts.id);
        }
        if let Some(link) = link {
            self.partner_gone(&link);
        }
    }

    /// What a closing or detached connection leaves behind: its `max_conns` count (an
    /// accepted one), its generation lookup (an outbound one).
    fn forget(&mut self, c: &Connection<H::State>) {
        if c.has(OUTBOUND) {
            self.outbound_keys.remove(&c.generation);
        } else {
            self.parts.server.shared.release();
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
        self.forget(&c);
        let mut output = c.output.split_off(c.out_pos);
        if let Some(mut link) = c.link.take() {
            if let Err(e) = link.empty_inbox_into(&mut output) {
                error!("loop {}: cannot empty a splice pipe: {e}", self.parts.id);
            }
            self.partner_gone(&link);
        }
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
            // Unlinked first, so closing one side does not flush-close the other.
            let Some(c) = self.conns.get_mut(key) else { continue };
            c.link = None;
            let _ = c.write_pending(&self.stats);
            self.close(key, CloseReason::Shutdown);
        }
    }
}
