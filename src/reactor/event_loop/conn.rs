//! One connection as the loop stores it (socket, state, generation, flags, timer
//! stamps; its in-flight bytes and its rare parts, TLS, link, origin and PROXY peer,
//! each behind an optional box), and the ways a connection ends: close, detach, and the
//! close of every connection when the loop stops. A linked connection that ends takes
//! its partner with it (see `link.rs`).
//!
//! An idle connection holds no buffers: its [`Buffers`] box is given back (to a small
//! per-thread free list) once input and output are empty, and the fast path reads into
//! and writes from per-loop scratch buffers.

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

/// A connection's record in the loop's slab: only what every connection needs, with
/// what is rare or passing kept behind two optional boxes.
///
/// Fields and sizes (64-bit Linux), `S` being the handler's state:
///
/// | field        | size | what                                                      |
/// |--------------|------|-----------------------------------------------------------|
/// | `sock`       | 8    | the socket (`Stream`: kind + descriptor)                  |
/// | `generation` | 8    | unique within the loop (`ConnId`)                         |
/// | `bufs`       | 8    | `Option<Box<Buffers>>`: `None` while idle                 |
/// | `extra`      | 8    | `Option<Box<Extra>>`: `None` for a plain accepted one     |
/// | `alive`      | 8    | `Option<Arc<..>>`: a handle's shared part, once one exists|
/// | `listener`   | 2    | listen address index (`u16::MAX`: attached/outbound)      |
/// | `active`     | 4    | tick of the last bytes read or written                    |
/// | `timer_at`   | 4    | tick of the live timer-wheel entry (`Tick::MAX`: none)    |
/// | `deadline`   | 4    | the handler's request deadline (`Tick::MAX`: none)        |
/// | `flags`      | 2    | the bit flags above                                       |
/// | `state`      | `S`  | the handler's per-connection state                        |
///
/// Total 56 bytes for `S = ()` ([`CONNECTION_BOUND`], asserted by a test; in debug
/// builds mio's sockets carry a 16-byte selector id, so `sock` is 24 there). The
/// slab's entry needs no room of its own for its vacant/occupied tag (it uses the
/// niche in `sock`'s kind), so a slot costs `56 + size_of::<S>()` rounded to 8.
///
/// An idle, plain accepted connection owns no heap memory in the reactor: no buffers
/// (the fast path reads into and writes from per-loop buffers; [`Buffers`], 64 bytes,
/// exist only while bytes are in flight), no peer address (asked of the kernel when
/// wanted, see `Conn::peer_addr`), no [`Extra`] (TLS, linked, outbound and PROXY
/// connections only). Beyond the slot: a handle's shared part once `Conn::handle` was
/// called, and a 12-byte timer-wheel entry while timeouts or a request deadline are on.
pub(super) struct Connection<S> {
    pub(super) sock: Stream,
    pub(super) state: S,
    pub(super) generation: u64,
    /// Unconsumed input and pending output, while there is any (see [`Buffers`]).
    pub(super) bufs: Option<Box<Buffers>>,
    /// What few connections have: TLS, a link, an origin, a PROXY peer.
    pub(super) extra: Option<Box<Extra>>,
    /// Set to false when the connection goes away; allocated only once a handle exists.
    /// Inline, not in `extra`: some protocols (the broker) give every connection a
    /// handle, and the extras would cost them far more than this pointer.
    pub(super) alive: Option<Arc<HandleShared>>,
    /// Index of the listen address it came from; `u16::MAX` when none (attached,
    /// outbound). `Server::new` refuses more listen addresses than fit.
    pub(super) listener: u16,
    /// Wheel tick of the last bytes read or written (kept only when timeouts are on).
    pub(super) active: Tick,
    /// Tick of this connection's live timer-wheel entry; `Tick::MAX` when none.
    pub(super) timer_at: Tick,
    /// Tick of the handler's request deadline (`Conn::set_request_deadline`);
    /// `Tick::MAX` when none. Inline: protocols re-arm it per request.
    pub(super) deadline: Tick,
    pub(super) flags: u16,
}

/// The documented bound on `size_of::<Connection<()>>()` (see [`Connection`]).
#[cfg(test)]
pub(super) const CONNECTION_BOUND: usize = 48 + std::mem::size_of::<Stream>();

/// A connection's in-flight bytes: allocated when input is left unconsumed or output is
/// left unwritten, and given back (to a small per-thread free list, so a busy
/// connection does not allocate per request) once both are empty again.
pub(super) struct Buffers {
    /// Unconsumed input.
    pub(super) input: Vec<u8>,
    /// Pending output; bytes before `out_pos` are already written.
    pub(super) output: Vec<u8>,
    pub(super) out_pos: usize,
    /// Wheel tick at which the current unconsumed input began.
    pub(super) partial_since: Tick,
    /// Tick since which pending output has been above the soft output limit;
    /// `Tick::MAX` when it is not.
    pub(super) over_soft: Tick,
}

/// Boxes kept per thread (per loop) for reuse.
const POOL_MAX: usize = 64;
/// Vectors up to this capacity stay with a pooled box.
pub(super) const POOL_KEEP_CAPACITY: usize = 4096;

thread_local! {
    /// This thread's free `Buffers` boxes (each loop is a thread of its own).
    // The boxes themselves are what is reused (a connection holds a `Box<Buffers>`).
    #[allow(clippy::vec_box)]
    static POOL: std::cell::RefCell<Vec<Box<Buffers>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Default for Buffers {
    /// Empty, and not over the soft output limit (`over_soft` is `Tick::MAX`).
    fn default() -> Self {
        Buffers {
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            partial_since: 0,
            over_soft: Tick::MAX,
        }
    }
}

/// Empties `v`, keeping its allocation for reuse only when it is small (up to
/// [`POOL_KEEP_CAPACITY`]); a larger one is freed.
#[inline]
pub(super) fn clear_keeping_small(v: &mut Vec<u8>) {
    if v.capacity() > POOL_KEEP_CAPACITY {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

impl Buffers {
    /// An empty box, from the free list when it has one.
    pub(super) fn take() -> Box<Buffers> {
        POOL.with_borrow_mut(Vec::pop).unwrap_or_default()
    }

    /// Empties `b` and keeps it for reuse (dropped when the free list is full).
    pub(super) fn give_back(mut b: Box<Buffers>) {
        clear_keeping_small(&mut b.input);
        clear_keeping_small(&mut b.output);
        b.out_pos = 0;
        b.partial_since = 0;
        b.over_soft = Tick::MAX;
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(b);
            }
        });
    }

    /// Bytes of output waiting for the kernel.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.output.len() - self.out_pos
    }
}

/// [`Connection::peer_for_log`] from the record's parts.
fn log_peer(extra: Option<&Extra>, sock: &Stream) -> String {
    match extra.and_then(|e| e.peer).map(Ok).unwrap_or_else(|| sock.peer()) {
        Ok(p) => p.to_string(),
        Err(_) => "unknown peer".into(),
    }
}

/// The rarely present parts of a connection, boxed together.
#[derive(Default)]
pub(super) struct Extra {
    /// The client a PROXY header named (`None`: the socket's own peer).
    pub(super) peer: Option<Peer>,
    /// The TLS session of a connection from a TLS listener (see `tls.rs`), or of an
    /// outbound `connect_tls` one.
    pub(super) tls: Option<Box<TlsSession>>,
    /// The partner of a linked pair.
    pub(super) link: Option<Link>,
    /// Tag and requester of an outbound connection.
    pub(super) origin: Option<Origin>,
}

impl<S> Connection<S> {
    /// A new record; `extra` holds what the connection has beyond the common case.
    pub(super) fn new(sock: Stream, state: S, generation: u64, extra: Option<Box<Extra>>) -> Self {
        Connection {
            sock,
            state,
            generation,
            bufs: None,
            extra,
            alive: None,
            listener: u16::MAX,
            active: 0,
            timer_at: Tick::MAX,
            deadline: Tick::MAX,
            flags: 0,
        }
    }

    /// Bytes of output waiting for the kernel.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.pending())
    }

    /// Unconsumed input (empty when none).
    #[inline]
    pub(super) fn input(&self) -> &[u8] {
        self.bufs.as_ref().map_or(&[], |b| &b.input)
    }

    /// The buffers, allocated (from the free list) when there are none.
    #[inline]
    pub(super) fn bufs_mut(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(Buffers::take)
    }

    /// The pending output vector (allocating the buffers when there are none).
    #[inline]
    pub(super) fn output_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bufs_mut().output
    }

    /// Gives the buffers back once nothing is in flight (no input, no pending output).
    #[inline]
    pub(super) fn tidy(&mut self) {
        if self.bufs.as_ref().is_some_and(|b| b.input.is_empty() && b.pending() == 0)
            && let Some(b) = self.bufs.take()
        {
            Buffers::give_back(b);
        }
    }

    /// Tick since which pending output has been above the soft limit (`Tick::MAX`: not).
    #[inline]
    pub(super) fn over_soft(&self) -> Tick {
        self.bufs.as_ref().map_or(Tick::MAX, |b| b.over_soft)
    }

    /// Tick at which the current unconsumed input began (`None`: no unconsumed input).
    #[inline]
    pub(super) fn partial_since(&self) -> Option<Tick> {
        self.bufs.as_deref().filter(|b| !b.input.is_empty()).map(|b| b.partial_since)
    }

    /// The extras, allocated when there are none.
    pub(super) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The TLS session, if any.
    #[inline]
    pub(super) fn tls(&self) -> Option<&TlsSession> {
        self.extra.as_ref()?.tls.as_deref()
    }

    /// The TLS session, if any, and the pending output (ciphertext) it writes into.
    #[inline]
    pub(super) fn tls_and_output(&mut self) -> Option<(&mut TlsSession, &mut Vec<u8>)> {
        let tls = self.extra.as_mut()?.tls.as_deref_mut()?;
        Some((tls, &mut self.bufs.get_or_insert_with(Buffers::take).output))
    }

    /// The link, if linked.
    #[inline]
    pub(super) fn link(&self) -> Option<&Link> {
        self.extra.as_ref()?.link.as_ref()
    }

    /// The link, if linked.
    #[inline]
    pub(super) fn link_mut(&mut self) -> Option<&mut Link> {
        self.extra.as_mut()?.link.as_mut()
    }

    /// Unlinks, returning the link it had.
    pub(super) fn take_link(&mut self) -> Option<Link> {
        self.extra.as_mut()?.link.take()
    }

    /// The handle's shared part, once a handle exists.
    #[inline]
    pub(super) fn alive(&self) -> Option<&Arc<HandleShared>> {
        self.alive.as_ref()
    }

    /// The peer for log lines: the PROXY header's client, else the socket's peer (a
    /// `getpeername` call; "unknown" when the socket has none any more).
    pub(super) fn peer_for_log(&self) -> String {
        log_peer(self.extra.as_deref(), &self.sock)
    }

    /// Bytes waiting for the kernel, including those a spliced link holds in this
    /// connection's inbound pipe.
    #[inline]
    pub(super) fn queued(&self) -> usize {
        self.pending() + self.link().map_or(0, |l| l.inbox_len())
    }

    #[inline]
    pub(super) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// True when nothing is in flight: no unconsumed input, no pending output, and not
    /// linked (a linked pair is busy until it ends).
    pub(super) fn is_idle(&self) -> bool {
        self.input().is_empty() && self.pending() == 0 && self.link().is_none()
    }

    /// Marks the connection gone for any `ConnHandle` that points at it.
    fn mark_dead(&self) {
        if let Some(a) = self.alive() {
            a.mark_dead();
        }
    }

    /// Unconsumed input and the output from `out_pos` on, taking the buffers apart.
    fn take_bytes(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.bufs.take() {
            Some(mut b) => {
                let output = b.output.split_off(b.out_pos);
                (std::mem::take(&mut b.input), output)
            }
            None => (Vec::new(), Vec::new()),
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
        let link = c.take_link();
        if let Some(b) = c.bufs.take() {
            Buffers::give_back(b);
        }
        // Dropping the socket (with `c`, when this returns) closes it, which on Linux also
        // removes it from epoll (we never duplicate connection descriptors), saving an
        // epoll_ctl per close; elsewhere it leaves the poller first.
        #[cfg(not(target_os = "linux"))]
        let _ = self.parts.poll.registry().deregister(&mut c.sock);
        let (handler, state) = (&mut self.handler, c.state);
        if let Err(msg) = guard(self.parts.config.catch_panics, || handler.closed(state, reason)) {
            bump(&self.stats.panics, 1);
            // `c.state` is gone to the callback: the parts, not `c.peer_for_log()`.
            let peer = log_peer(c.extra.as_deref(), &c.sock);
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
        let (input, mut output) = c.take_bytes();
        if let Some(mut link) = c.take_link() {
            if let Err(e) = link.empty_inbox_into(&mut output) {
                error!("loop {}: cannot empty a splice pipe: {e}", self.parts.id);
            }
            self.partner_gone(&link);
        }
        let detached = Detached { stream: c.sock.into_detached(), state: c.state, input, output };
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
            c.take_link();
            let _ = c.write_pending(&self.stats);
            self.close(key, CloseReason::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record stays within the bound its doc comment states.
    #[test]
    fn connection_record_stays_small() {
        let size = std::mem::size_of::<Connection<()>>();
        assert!(size <= CONNECTION_BOUND, "Connection<()> is {size} bytes");
        // The optional boxes cost one pointer each (the null niche).
        assert_eq!(std::mem::size_of::<Option<Box<Buffers>>>(), 8);
        assert_eq!(std::mem::size_of::<Option<Box<Extra>>>(), 8);
    }

    /// A connected TCP stream, as the loop holds one.
    fn stream() -> Stream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        Stream::Tcp(mio::net::TcpStream::from_std(s))
    }

    /// Buffers exist only while bytes are in flight, and a given-back box is reused.
    #[test]
    fn buffers_exist_only_while_bytes_are_in_flight() {
        let mut c = Connection::new(stream(), (), 1, None);
        assert!(c.bufs.is_none() && c.extra.is_none() && c.is_idle());
        c.bufs_mut().input.extend_from_slice(b"partial");
        c.tidy();
        assert_eq!(c.input(), b"partial");
        c.bufs_mut().input.clear();
        c.output_mut().extend_from_slice(b"queued");
        c.bufs_mut().out_pos = 2;
        assert_eq!(c.pending(), 4);
        c.tidy();
        assert!(c.bufs.is_some(), "pending output keeps the buffers");
        c.bufs_mut().out_pos = 6;
        let before: *const Buffers = &**c.bufs.as_ref().expect("buffers");
        c.tidy();
        assert!(c.bufs.is_none() && c.is_idle());
        // The next connection to need buffers gets the same box back, emptied.
        let again = c.bufs_mut();
        assert!(std::ptr::eq(before, again));
        assert!(again.input.is_empty() && again.pending() == 0);
        assert_eq!(again.over_soft, Tick::MAX);
    }
}
