//! TLS on the loop: a rustls sans-IO [`ServerConnection`] between a connection's socket
//! and its handler, on the loop that owns the connection (no extra thread, no async).
//!
//! - **Accept** (`open` in `accept.rs`): a connection from a TLS listener gets a
//!   [`TlsSession`] (boxed, so a plain connection's record grows by one pointer) made from
//!   the loop's cached `ServerConfig` (refreshed when [`TlsConfig`] was swapped, e.g. by
//!   a SIGHUP reload: one atomic load per TLS accept), and a handshake deadline.
//! - **Read** ([`EventLoop::on_readable_tls`], entered from `read.rs::on_readable` by the
//!   one "has a TLS session" branch): one large `read` of ciphertext into the loop's
//!   ciphertext buffer, fed to rustls from there (`read_tls` on the slice, then
//!   `process_new_packets`, record by record); the plaintext goes to the per-loop read
//!   buffer and from there to the handler exactly as on a plain connection (`deliver`).
//!   Reading goes on until the socket is drained (WouldBlock, or a short read), the read
//!   buffer is full (then the next budget round goes on) or the budget is spent.
//!   What rustls has to send (handshake flights, alerts, session tickets) is queued as
//!   ciphertext in the connection's output.
//! - **Write** (`write.rs::flush`, one branch): a TLS connection's callbacks always
//!   write into the per-loop buffer; [`TlsSession::encrypt`] turns it into ciphertext
//!   appended to the connection's output buffer, and the plain write path sends that:
//!   partial writes, WRITABLE interest, watermarks (on the ciphertext, a few bytes per
//!   16 KiB record above the plaintext) and close-after-flush all hold unchanged.
//! - **Linked** (`link.rs`): a linked TLS side's plaintext goes to its partner (the
//!   partner's bytes are encrypted into its output with [`TlsSession::encrypt_slice`]);
//!   its peer's `close_notify` ends its input; its partner's end of input makes it send
//!   `close_notify` ([`TlsSession::close_notify`]) before the write side is shut.
//! - **Close** (`conn.rs::close`): [`Connection::end_tls`] sends `close_notify` when the
//!   output is flushed and the session did not fail.
//! - **Handshake timeout**: deadlines from accept in a FIFO (the timeout is one value,
//!   so they are in order); `timers.rs` polls no longer than the first and calls
//!   [`EventLoop::expire_handshakes`].
//!
//! Counters: `tls_handshakes` (completed), `tls_resumed` (of those, resumed),
//! `tls_handshake_errors` (closed before completing: TLS error, EOF, timeout).
//!
//! An idle TLS connection holds what rustls keeps (the session value, about 1.2 KB, its
//! record keys, and the 4 KiB receive buffer it never frees; about 7.7 KB in all,
//! measured by `tests/tls.rs::idle_connection_memory`); the reactor keeps no plaintext
//! for it: input and output vectors are dropped when they
//! empty, as on a plain connection. `Action::Detach` on a TLS connection hands back the
//! raw socket mid-session (its session is dropped); detaching TLS is not supported.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use log::debug;
use rustls::{
    ClientConnection, Connection as RustlsConnection, HandshakeKind, ServerConfig, ServerConnection,
};

use super::EventLoop;
use super::conn::{
    Buffers, CLOSING, Connection, HEARD, HUP_SEEN, PAUSED, READ_CLOSED, USER_PAUSED,
};
use super::write::write_socket;
use crate::net::addr::Peer;
use crate::net::tls::{ClientTls, TlsConfig, TlsSetup};
use crate::reactor::config::Config;
use crate::reactor::handler::{Action, CloseReason, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::{LoopStats, bump};

/// The per-loop buffer is cut back to this after a large plaintext write was encrypted.
const WBUF_KEEP: usize = 64 * 1024;

/// The most plaintext one TLS record rustls holds back (partly read) may yield, with room
/// to spare: 16 KiB of plaintext, plus expansion, plus the header.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// One connection's TLS session.
pub(crate) struct TlsSession {
    /// The rustls session (a server's, for a connection from a `tls://` listener).
    conn: RustlsConnection,
    /// The handshake has not completed yet (it is counted once when it does).
    handshaking: bool,
    /// A TLS or socket error ended the session: no `close_notify` after its alert.
    failed: bool,
    /// Ciphertext read but not yet fed to rustls because the read buffer filled (empty,
    /// unallocated, nearly always).
    stash: Vec<u8>,
}

/// What one [`TlsSession::read`] did.
#[derive(Default)]
struct TlsRead {
    /// Plaintext bytes placed at the front of the buffer.
    plain: usize,
    /// Ciphertext bytes read from the socket.
    cipher: usize,
    /// `read` calls that returned data or EOF.
    reads: u64,
    /// The socket said WouldBlock: nothing more to read until the next edge.
    drained: bool,
    /// The peer closed (TCP EOF, or `close_notify`) and all its plaintext is delivered.
    eof: bool,
    /// A socket or TLS error: the connection ends.
    error: Option<io::Error>,
}

impl TlsSession {
    /// Reads and decrypts into `buf` until the socket is drained, the peer closed, or
    /// `buf` is (nearly) full.
    ///
    /// Ciphertext is read with one large `read` into the loop's `cbuf` and fed to rustls
    /// from there (rustls' own socket reads take 4 KiB at a time), sized so that the
    /// plaintext it can yield (plus one record rustls may hold from before) fits in what
    /// is left of `buf`. A short read means the socket is drained, as on the plain path,
    /// unless the peer's FIN is known to be queued (`hup_seen`). rustls is read from only
    /// once its plaintext is all taken, so its own plaintext bound is never hit.
    fn read(
        &mut self,
        mut sock: &Stream,
        cbuf: &mut [u8],
        buf: &mut [u8],
        hup_seen: bool,
    ) -> TlsRead {
        let mut r = TlsRead::default();
        loop {
            // Ciphertext kept from an earlier call whose buffer filled: fed first.
            if !self.stash.is_empty() && self.plain_taken(buf, &mut r) {
                let stash = std::mem::take(&mut self.stash);
                let mut rest: &[u8] = &stash;
                self.feed(&mut rest, buf, &mut r);
                self.stash = rest.to_vec();
                if r.error.is_some() || !self.stash.is_empty() {
                    return r;
                }
            }
            if !self.plain_taken(buf, &mut r) || r.eof || r.error.is_some() {
                return r;
            }
            let room = buf.len() - r.plain;
            let want = room.saturating_sub(MAX_RECORD).min(cbuf.len());
            if want < 4096 {
                if r.plain > 0 {
                    return r; // deliver first, then read on with an empty buffer
                }
                // A small read buffer: let rustls read for itself (4 KiB at a time).
                match self.conn.read_tls(&mut sock) {
                    Ok(n) => {
                        r.reads += 1;
                        r.cipher += n;
                        if let Err(e) = self.conn.process_new_packets() {
                            return self.fail(r, io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        r.drained = true;
                        return r;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.fail(r, e),
                }
                continue;
            }
            let n = match sock.read(&mut cbuf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    r.drained = true;
                    return r;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(r, e),
            };
            r.reads += 1;
            r.cipher += n;
            if n == 0 {
                // TCP EOF: rustls notes it; its reader then says how the peer ended.
                let _ = self.conn.read_tls(&mut io::empty());
                continue;
            }
            let mut rest: &[u8] = &cbuf[..n];
            self.feed(&mut rest, buf, &mut r);
            if !rest.is_empty() && r.error.is_none() {
                self.stash = rest.to_vec();
            }
            if r.error.is_some() {
                return r;
            }
            if n < want && !hup_seen {
                // A short read drained the socket (new bytes raise a new edge): done,
                // unless plaintext or ciphertext is still held back (the buffer filled).
                r.drained = self.plain_taken(buf, &mut r) && self.stash.is_empty();
                return r;
            }
        }
    }

    /// Moves rustls' plaintext into `buf`. True when rustls holds none any more (and
    /// `buf` has room); notes the peer's end and errors in `r`.
    fn plain_taken(&mut self, buf: &mut [u8], r: &mut TlsRead) -> bool {
        if r.plain == buf.len() {
            return false;
        }
        match self.conn.reader().read(&mut buf[r.plain..]) {
            Ok(0) => r.eof = true, // close_notify received, everything before it taken
            Ok(n) => r.plain += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => r.eof = true, // TCP EOF
            Err(e) => {
                self.failed = true;
                r.error = Some(e);
            }
        }
        r.plain < buf.len()
    }

    /// Feeds ciphertext from `rest` to rustls record by record, taking the plaintext into
    /// `buf` after each; stops early (leaving the rest in `rest`) when `buf` fills, on an
    /// error, or once the peer's `close_notify` is in (what follows it is ignored).
    fn feed(&mut self, rest: &mut &[u8], buf: &mut [u8], r: &mut TlsRead) {
        while !rest.is_empty() {
            match self.conn.read_tls(rest) {
                Ok(0) => {
                    *rest = &[];
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    r.error = Some(e);
                    return;
                }
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.failed = true;
                r.error = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                return;
            }
            if !self.plain_taken(buf, r) || r.error.is_some() {
                return;
            }
        }
    }

    /// Notes a fatal error.
    fn fail(&mut self, mut r: TlsRead, e: io::Error) -> TlsRead {
        self.failed = true;
        r.error = Some(e);
        r
    }

    /// Whether rustls has records to send (handshake flights, alerts, tickets).
    pub(super) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts the plaintext in `plain` (emptied) and appends every TLS record rustls
    /// has to send to `out`.
    pub(super) fn encrypt(&mut self, plain: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        self.encrypt_slice(plain, out)?;
        plain.clear();
        if plain.capacity() > 4 * WBUF_KEEP {
            plain.shrink_to(WBUF_KEEP);
        }
        Ok(())
    }

    /// Encrypts `data` (forwarded from a linked partner; empty: only what rustls has
    /// queued) and appends the TLS records to `out`. While the handshake is pending
    /// rustls keeps the plaintext and sends it once the handshake completes.
    pub(super) fn encrypt_slice(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }

    /// Queues `close_notify` (once; rustls ignores a second) and appends it to `out`:
    /// the TLS form of shutting the write side, for a linked pair's half-close.
    pub(super) fn close_notify(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.send_close_notify();
        self.encrypt_slice(&[], out)
    }
}

/// A loop's TLS state: the configuration it makes sessions from and the handshake
/// deadlines.
pub(super) struct LoopTls {
    setup: TlsSetup,
    /// The [`TlsConfig`] generation `config` was taken at.
    generation: u64,
    config: Arc<ServerConfig>,
    /// (key, generation, deadline) of connections accepted with a handshake to do, in
    /// accept order.
    handshakes: VecDeque<(usize, u64, Instant)>,
    /// The loop's ciphertext read buffer (the size of its plaintext read buffer).
    cbuf: Vec<u8>,
}

impl LoopTls {
    /// The loop's TLS state, when `config` has TLS listeners.
    pub(super) fn of(config: &Config) -> Option<LoopTls> {
        let setup = config.tls.clone()?;
        let (generation, current) = setup.config.current();
        let cbuf = vec![0; config.read_buffer.max(512)];
        Some(LoopTls { setup, generation, config: current, handshakes: VecDeque::new(), cbuf })
    }

    /// The configuration for a new connection: the cached one, unless it was swapped.
    fn config(&mut self) -> Arc<ServerConfig> {
        let source: &TlsConfig = &self.setup.config;
        if source.generation() != self.generation {
            (self.generation, self.config) = source.current();
        }
        self.config.clone()
    }
}

/// A TLS session for a connection arriving on `listener` (`Ok(None)`: not a TLS
/// listener, or the loop has no TLS), its handshake deadline noted under (`key`,
/// `generation`).
pub(super) fn new_session(
    tls: Option<&mut LoopTls>,
    listener: usize,
    key: usize,
    generation: u64,
) -> Result<Option<Box<TlsSession>>, rustls::Error> {
    let Some(tls) = tls.filter(|t| t.setup.is_tls(listener)) else {
        return Ok(None);
    };
    let mut conn = ServerConnection::new(tls.config())?;
    // The reactor drains rustls' buffers after every call: its own bounds would only
    // make large writes fail.
    conn.set_buffer_limit(None);
    let conn = RustlsConnection::Server(conn);
    if let Some(t) = tls.setup.handshake_timeout {
        tls.handshakes.push_back((key, generation, Instant::now() + t));
    }
    Ok(Some(Box::new(TlsSession { conn, handshaking: true, failed: false, stash: Vec::new() })))
}

impl<H: EventHandler> EventLoop<H> {
    /// The read path of a TLS connection (see the module docs): the plain path's loop
    /// with rustls between the socket and the read buffer.
    pub(super) fn on_readable_tls(&mut self, key: usize) {
        for _ in 0..self.parts.config.read_budget {
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.has(PAUSED | READ_CLOSED | CLOSING | USER_PAUSED) {
                return;
            }
            let hup_seen = c.has(HUP_SEEN);
            let Connection { sock, extra, bufs, active, .. } = c;
            let Some(tls) = extra.as_mut().and_then(|e| e.tls.as_deref_mut()) else { return };
            // A loop without TLS listeners (client sessions only) has no ciphertext
            // buffer: rustls then reads for itself, 4 KiB at a time.
            let cbuf = self.tls.as_mut().map_or(&mut [][..], |lt| &mut lt.cbuf[..]);
            let r = tls.read(sock, cbuf, &mut self.rbuf, hup_seen);
            bump(&self.stats.reads, r.reads);
            bump(&self.stats.bytes_read, r.cipher as u64);
            if r.cipher > 0 {
                *active = self.now_tick;
            }
            if tls.handshaking && !tls.conn.is_handshaking() {
                tls.handshaking = false;
                bump(&self.stats.tls_handshakes, 1);
                if tls.conn.handshake_kind() == Some(HandshakeKind::Resumed) {
                    bump(&self.stats.tls_resumed, 1);
                }
            }
            let handshaking = tls.handshaking;
            // Handshake flights, alerts, tickets: queued behind the pending output.
            let queued = if tls.wants_write() {
                tls.encrypt_slice(&[], &mut bufs.get_or_insert_with(Buffers::take).output)
            } else {
                Ok(())
            };
            if let Some(e) = r.error.or(queued.err()) {
                if handshaking {
                    bump(&self.stats.tls_handshake_errors, 1);
                    // (The peer, a `getpeername` call, only when the line is logged.)
                    debug!(
                        "loop {}: TLS handshake with {} failed: {e}",
                        self.parts.id,
                        c.peer_for_log()
                    );
                }
                // The alert rustls queued, if the kernel takes it now.
                let _ = c.write_pending(&self.stats);
                return self.close(key, CloseReason::Error(e));
            }
            let mut leftover = false;
            let linked = c.link().map(|l| l.peer);
            if let Some(peer) = linked {
                // A linked TLS side: its plaintext goes to the partner, not a handler.
                if r.plain > 0 {
                    c.flags |= HEARD;
                    if !self.pass(peer, r.plain) {
                        return;
                    }
                    self.forwarded(key, r.plain);
                    self.forwarded_data(key, r.plain);
                }
                if !self.after_callback(key, Action::None) {
                    return;
                }
                if r.eof {
                    if handshaking {
                        bump(&self.stats.tls_handshake_errors, 1);
                    }
                    return self.input_ended(key, peer);
                }
                if r.drained {
                    return;
                }
                continue;
            }
            let action = if r.plain > 0 {
                let (action, rest) = self.deliver_fresh(key, r.plain);
                leftover = rest;
                action
            } else {
                Action::None
            };
            if !self.after_callback(key, action) || (leftover && !self.offer_leftover(key)) {
                return;
            }
            if r.eof {
                let c = &mut self.conns[key];
                if handshaking {
                    bump(&self.stats.tls_handshake_errors, 1);
                }
                c.flags |= READ_CLOSED;
                if c.pending() == 0 {
                    self.close(key, CloseReason::PeerClosed);
                }
                return;
            }
            if r.drained {
                return;
            }
        }
        // Budget spent, or the read buffer filled: come back after serving the others.
        if let Some(c) = self.conns.get(key) {
            self.more_to_read.push((key, c.generation));
        }
    }

    /// The earliest handshake deadline, when one is pending.
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        self.tls.as_ref().and_then(|t| t.handshakes.front()).map(|h| h.2)
    }

    /// Closes the connections whose handshake deadline has passed before the handshake
    /// completed (counted as handshake errors).
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        loop {
            let Some(tls) = self.tls.as_mut() else { return };
            let Some(&(key, generation, deadline)) = tls.handshakes.front() else { return };
            if deadline > now {
                return;
            }
            tls.handshakes.pop_front();
            let Some(c) = self.conns.get(key).filter(|c| c.generation == generation) else {
                continue;
            };
            if c.tls().is_some_and(|t| t.handshaking) {
                bump(&self.stats.tls_handshake_errors, 1);
                debug!("loop {}: TLS handshake with {} timed out", self.parts.id, c.peer_for_log());
                let e = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
                self.close(key, CloseReason::Error(e));
            }
        }
    }
}

impl<S> Connection<S> {
    /// On close: a TLS connection whose output is all written sends `close_notify`
    /// (one nonblocking attempt; the peer may be gone).
    pub(super) fn end_tls(&mut self) {
        let pending = self.pending();
        let Some(tls) = self.extra.as_mut().and_then(|e| e.tls.as_deref_mut()) else { return };
        if tls.failed || pending > 0 {
            return;
        }
        let mut alert = Vec::new();
        if tls.close_notify(&mut alert).is_ok() {
            let _ = (&self.sock).write(&alert);
        }
    }
}

/// A client-side handshake on an outbound connection whose connect completed
/// ([`Conn::connect_tls`](crate::reactor::Conn::connect_tls)). It runs while the
/// connection is still in the dialer, so the handler's `opened` comes only once it is
/// done, and a failure (an untrusted certificate, a wrong name, EOF) is a failed
/// connect like a refused one; the connect timeout covers it.
pub(super) struct ClientHandshake {
    session: Box<TlsSession>,
    /// Handshake records not yet taken by the kernel (from `out_pos`).
    out: Vec<u8>,
    out_pos: usize,
    /// The peer, from the completed connect.
    peer: Peer,
}

/// Where a [`ClientHandshake`] stands after [`ClientHandshake::advance`].
pub(super) enum HandshakeStep {
    /// Waiting for the socket (readable or writable).
    Pending,
    /// Done: [`ClientHandshake::into_session`] gives the session for the connection.
    Done,
    /// Failed: the connect fails with this error.
    Failed(io::Error),
}

impl ClientHandshake {
    /// A client session for `tls`, its ClientHello queued.
    pub(super) fn start(tls: &ClientTls, peer: Peer) -> io::Result<ClientHandshake> {
        let mut conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        conn.set_buffer_limit(None);
        let session = Box::new(TlsSession {
            conn: RustlsConnection::Client(conn),
            handshaking: true,
            failed: false,
            stash: Vec::new(),
        });
        Ok(ClientHandshake { session, out: Vec::new(), out_pos: 0, peer })
    }

    /// The peer, from the completed connect.
    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// The session of a completed handshake.
    pub(super) fn into_session(self) -> Box<TlsSession> {
        self.session
    }

    /// Writes what rustls has to send and reads what the server sent, until the socket
    /// would block or the handshake is over.
    pub(super) fn advance(&mut self, mut sock: &Stream, stats: &LoopStats) -> HandshakeStep {
        loop {
            if let Err(e) = self.session.encrypt_slice(&[], &mut self.out) {
                return HandshakeStep::Failed(e);
            }
            while self.out_pos < self.out.len() {
                match write_socket(sock, &self.out[self.out_pos..]) {
                    Ok(n) => {
                        self.out_pos += n;
                        bump(&stats.writes, 1);
                        bump(&stats.bytes_written, n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return HandshakeStep::Pending;
                    }
                    Err(e) => return HandshakeStep::Failed(e),
                }
            }
            self.out.clear();
            self.out_pos = 0;
            if !self.session.conn.is_handshaking() {
                self.session.handshaking = false;
                bump(&stats.tls_handshakes, 1);
                return HandshakeStep::Done;
            }
            match self.session.conn.read_tls(&mut sock) {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed during the TLS handshake",
                    );
                    return HandshakeStep::Failed(e);
                }
                Ok(n) => {
                    bump(&stats.reads, 1);
                    bump(&stats.bytes_read, n as u64);
                    if let Err(e) = self.session.conn.process_new_packets() {
                        // The alert, if the kernel takes it now.
                        self.out.clear();
                        if self.session.encrypt_slice(&[], &mut self.out).is_ok() {
                            let _ = sock.write(&self.out);
                        }
                        return HandshakeStep::Failed(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HandshakeStep::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return HandshakeStep::Failed(e),
            }
        }
    }
}
