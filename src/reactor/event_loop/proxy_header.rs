//! The PROXY-protocol step of the accept path ([`Config::accept_proxy`]): a connection
//! accepted on a TCP listener waits here, outside the connection slab, until its PROXY
//! header (v1 or v2, HAProxy's `proxy-protocol.txt`) is complete; then it is taken on as
//! any accepted connection (`open_accepted`), with the header's source address as its
//! peer, so `opened` and every later callback see the real client and no byte of the
//! header ever reaches the handler.
//!
//! How: the waiting socket is registered under its own token range ([`Tok::Header`]) and
//! read with `MSG_PEEK` into a small scratch buffer, which the sans-IO parser
//! ([`crate::proto::proxy_header`]) looks at. A header split across segments stays in
//! the kernel's receive queue until it is whole (nothing is buffered per connection
//! here); once it is, exactly its length is read off the socket, the socket is
//! deregistered, and `open_accepted` registers it as a connection: the payload that came
//! behind the header is still queued in the kernel, and registering a socket that holds
//! data reports it readable at once, so the ordinary read path (and a TLS layer, which
//! sits in that path) starts at the first payload byte.
//!
//! A missing, malformed or oversized header, an end of input before it is complete, or
//! one not complete within [`Config::proxy_header_timeout`] closes the socket before any
//! callback, counted in `proxy_header_errors` (the metric
//! `evloop_proxy_header_errors_total`); the connection's `max_conns` admission is
//! released. Every wait has the same timeout, so the deadlines form a FIFO queue.
//!
//! [`Config::accept_proxy`]: crate::reactor::Config::accept_proxy
//! [`Config::proxy_header_timeout`]: crate::reactor::Config::proxy_header_timeout

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::Interest;
use slab::Slab;

use super::EventLoop;
use super::token::Tok;
use crate::net::activation::InheritedKind;
use crate::net::addr::{ListenAddr, Peer};
use crate::proto::proxy_header::{self, Command, Parsed};
use crate::reactor::config::Config;
use crate::reactor::handler::{Conn, EventHandler};
use crate::reactor::socket::Stream;
use crate::reactor::stats::bump;

/// The most bytes a header may take (the parser's default v2 cap; v1 is 107 at most).
const MAX_HEADER: usize = proxy_header::V2_DEFAULT_MAX_LEN;

/// One loop's connections waiting for their PROXY header.
pub(super) struct HeaderWait {
    /// Per listen-address index: whether its connections start with a header (TCP
    /// listeners, when `accept_proxy` is on).
    wanted: Vec<bool>,
    timeout: Duration,
    waiting: Slab<Awaiting>,
    /// (deadline, slot, serial), oldest first; entries of waits already ended are
    /// skipped when they come due.
    deadlines: VecDeque<(Instant, usize, u64)>,
    next_serial: u64,
    /// Peek buffer, allocated at the first use.
    scratch: Vec<u8>,
}

/// A socket accepted and waiting for its header.
struct Awaiting {
    sock: Stream,
    /// The socket's peer (the balancer).
    peer: Peer,
    listener: usize,
    serial: u64,
}

/// What a peek at a waiting socket found.
#[derive(Debug, PartialEq, Eq)]
enum Peeked {
    /// Not all of the header is there yet.
    NeedMore,
    /// A complete header of `consumed` bytes; `source` is the client (`None` for
    /// `LOCAL`, `UNKNOWN` and families without addresses).
    Done { consumed: usize, source: Option<SocketAddr> },
    /// Not a valid header (or the input ended, or the socket failed): close.
    Failed(&'static str),
}

impl HeaderWait {
    /// The header step `config` asks for (inactive unless `accept_proxy` is on).
    pub(super) fn new(config: &Config) -> HeaderWait {
        let wanted = config.listen.iter().map(|l| config.accept_proxy && is_tcp(l)).collect();
        HeaderWait {
            wanted,
            timeout: config.proxy_header_timeout,
            waiting: Slab::new(),
            deadlines: VecDeque::new(),
            next_serial: 0,
            scratch: Vec::new(),
        }
    }

    /// Whether connections from listen address `listener` must start with a header.
    #[inline]
    pub(super) fn wanted(&self, listener: usize) -> bool {
        self.wanted.get(listener).copied().unwrap_or(false)
    }

    /// When the oldest wait times out (`None`: nothing waits).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }
}

/// A TCP listener: bound here, or inherited (`fd:N`, `systemd`) and found to be TCP.
fn is_tcp(l: &ListenAddr) -> bool {
    match l {
        ListenAddr::Tcp(_) => true,
        ListenAddr::Inherited(i) => matches!(i.kind, InheritedKind::Tcp(_)),
        _ => false,
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// Takes an accepted socket whose listener wants a PROXY header: registers it under
    /// a header token and waits for the header (it may be there already).
    pub(super) fn await_proxy_header(&mut self, mut sock: Stream, peer: Peer, listener: usize) {
        let w = &mut self.headers;
        let entry = w.waiting.vacant_entry();
        let slot = entry.key();
        let registry = self.parts.poll.registry();
        if let Err(e) = registry.register(&mut sock, Tok::Header(slot).token(), Interest::READABLE)
        {
            debug!("loop {}: cannot register connection with {peer}: {e}", self.parts.id);
            self.parts.server.shared.release();
            return;
        }
        let serial = w.next_serial;
        w.next_serial += 1;
        entry.insert(Awaiting { sock, peer, listener, serial });
        w.deadlines.push_back((Instant::now() + w.timeout, slot, serial));
        // The header may have come with the handshake: look now (edge triggering
        // reports it anyway on registration, but this saves a poll round).
        self.on_header_event(slot, false);
    }

    /// A readiness event on waiting socket `slot` (`hup`: the peer's FIN came with it).
    pub(super) fn on_header_event(&mut self, slot: usize, hup: bool) {
        let w = &mut self.headers;
        let Some(a) = w.waiting.get(slot) else { return };
        if w.scratch.is_empty() {
            w.scratch = vec![0; MAX_HEADER];
        }
        let peeked = match peek_header(&a.sock, &mut w.scratch) {
            Peeked::NeedMore if hup => Peeked::Failed("truncated"),
            p => p,
        };
        match peeked {
            Peeked::NeedMore => {}
            Peeked::Failed(kind) => self.header_failed(slot, kind),
            Peeked::Done { consumed, source } => {
                let mut a = w.waiting.remove(slot);
                if let Err(e) = discard(&a.sock, consumed) {
                    debug!("loop {}: {}: reading the PROXY header: {e}", self.parts.id, a.peer);
                    bump(&self.stats.proxy_header_errors, 1);
                    self.parts.server.shared.release();
                    return;
                }
                let _ = self.parts.poll.registry().deregister(&mut a.sock);
                let peer = source.map_or(a.peer, Peer::Inet);
                self.open_accepted(a.sock, peer, a.listener, source.is_some());
            }
        }
    }

    /// Closes waiting socket `slot` for a bad header of `kind` (counted).
    fn header_failed(&mut self, slot: usize, kind: &str) {
        let Some(a) = self.headers.waiting.try_remove(slot) else { return };
        bump(&self.stats.proxy_header_errors, 1);
        debug!("loop {}: {}: PROXY header {kind}; closing", self.parts.id, a.peer);
        self.parts.server.shared.release();
        // Dropping the socket closes it (and removes it from epoll).
    }

    /// Closes the waiting sockets whose header did not complete in time.
    pub(super) fn expire_proxy_headers(&mut self, now: Instant) {
        while let Some(&(due, slot, serial)) = self.headers.deadlines.front() {
            if due > now {
                return;
            }
            self.headers.deadlines.pop_front();
            if self.headers.waiting.get(slot).is_some_and(|a| a.serial == serial) {
                self.header_failed(slot, "timeout");
            }
        }
    }
}

/// Peeks at the bytes `sock` holds and parses them as a PROXY header.
fn peek_header(sock: &Stream, scratch: &mut [u8]) -> Peeked {
    let Stream::Tcp(tcp) = sock else { return Peeked::Failed("not_tcp") };
    let n = loop {
        match tcp.peek(scratch) {
            Ok(0) => return Peeked::Failed("missing"),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Peeked::NeedMore,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Peeked::Failed("socket_error"),
        }
    };
    match proxy_header::parse_with_limit(&scratch[..n], MAX_HEADER) {
        Ok(Parsed::NeedMore) if n >= scratch.len() => Peeked::Failed("too_large"),
        Ok(Parsed::NeedMore) => Peeked::NeedMore,
        Ok(Parsed::Done { header, consumed }) => {
            let source = match header.command {
                Command::Proxy => header.source,
                Command::Local => None,
            };
            Peeked::Done { consumed, source }
        }
        Err(e) => Peeked::Failed(e.kind()),
    }
}

/// Reads exactly `n` bytes (already peeked, so queued) off `sock` and drops them.
fn discard(mut sock: &Stream, mut n: usize) -> io::Result<()> {
    let mut buf = [0u8; 512];
    while n > 0 {
        let want = n.min(buf.len());
        match sock.read(&mut buf[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => n -= got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Conn<'_> {
    /// The address of the socket's own peer (a `getpeername` call): with
    /// [`Config::accept_proxy`](crate::reactor::Config::accept_proxy) the balancer's
    /// address, while [`peer_addr`](Self::peer_addr) is the client's from the PROXY
    /// header. Without a header both are the same. An error for a Unix socket connection.
    pub fn socket_peer_addr(&self) -> io::Result<SocketAddr> {
        match self.socket {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::Unix(_) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "a Unix socket has no IP address"))
            }
        }
    }

    /// The connection's file descriptor number (for display, e.g. Redis's `fd=`; do not
    /// close or read it).
    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::TcpStream, Stream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, Stream::Tcp(mio::net::TcpStream::from_std(s)))
    }

    fn settle() {
        std::thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn a_split_header_waits_in_the_kernel_and_only_the_header_is_read() {
        use std::io::Write;
        let (mut c, s) = pair();
        let mut scratch = vec![0; MAX_HEADER];
        assert_eq!(peek_header(&s, &mut scratch), Peeked::NeedMore);
        c.write_all(b"PROXY TCP4 1.2.3.4 ").unwrap();
        settle();
        assert_eq!(peek_header(&s, &mut scratch), Peeked::NeedMore);
        c.write_all(b"5.6.7.8 1111 2222\r\nPING\r\n").unwrap();
        settle();
        let got = peek_header(&s, &mut scratch);
        let source = Some("1.2.3.4:1111".parse().unwrap());
        assert_eq!(got, Peeked::Done { consumed: 38, source });
        discard(&s, 38).unwrap();
        let mut rest = [0u8; 16];
        let n = (&s).read(&mut rest).unwrap();
        assert_eq!(&rest[..n], b"PING\r\n");
    }

    #[test]
    fn bad_local_and_eof() {
        use std::io::Write;
        let (mut c, s) = pair();
        let mut scratch = vec![0; MAX_HEADER];
        c.write_all(&proxy_header::encode_v2_local()).unwrap();
        settle();
        assert!(matches!(peek_header(&s, &mut scratch), Peeked::Done { source: None, .. }));
        let (mut c, s) = pair();
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        settle();
        assert!(matches!(peek_header(&s, &mut scratch), Peeked::Failed(_)));
        let (c, s) = pair();
        drop(c);
        settle();
        assert_eq!(peek_header(&s, &mut scratch), Peeked::Failed("missing"));
    }
}
