//! The proxy's data path: one [`ProxyHandler`] per loop, written on the reactor's public
//! callback API alone (what an embedder could write).
//!
//! For each accepted client: stop reading it ([`Conn::pause_reading`]), pick a backend
//! ([`Balancer::pick`] over the pool's current set), and [`Conn::connect`] to it with the
//! connect timeout. When the outbound connection opens, it [links](Conn::link_with)
//! itself to the client and the reactor moves the bytes both ways (backpressure,
//! half-close and errors across the pair are the reactor's). A failed or timed-out
//! connect ([`EventHandler::connect_failed`]) is retried on a backend not yet tried, up to
//! `retries` times; then the client is closed and counted as unserved. No byte of the
//! client's is read before its backend is connected, so a retry never loses any.
//!
//! **TLS termination** (`tls://` listeners): the reactor decrypts and encrypts at the
//! client's seams, so the pair is linked as usual (copied, never spliced). A TLS client
//! is not paused at accept, since its handshake must run; its backend is connected on
//! its first plaintext bytes (so a client that fails the handshake, e.g. plaintext on
//! the TLS port, never costs a backend connect), and those bytes wait, unconsumed and
//! with reading paused, until the link hands them to the backend. A protocol in which
//! the server speaks first therefore does not suit TLS termination here.
//!
//! **TLS to backends** (`,tls`): [`Conn::connect_tls`] with the `--backend-ca` roots
//! and the backend's name; the handshake completes before `opened`, so a backend whose
//! certificate is not trusted is a failed connect, retried on the next backend.
//!
//! Connect results feed the backends' passive health (`fall`/`rise`); byte counts come
//! from [`EventHandler::forwarded`] into per-loop counters (no lock, no channel).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::balance::{Balancer, Candidate, Policy};
use super::pool::{Backend, BackendSet, Pool};
use super::send_proxy::SendProxy;
use crate::capture::Direction;
use crate::net::tls::{ClientRoots, TlsSetup};
use crate::reactor::{Action, CloseReason, Conn, EventHandler, LinkOptions, Peer};
use crate::serve::capture::{Capture, CaptureHook, Captured};

/// What every loop's handler shares: the pool and the data-path settings.
#[derive(Debug)]
pub struct Shared {
    /// The backends, their health and counters.
    pub pool: Arc<Pool>,
    /// How backends are chosen.
    pub policy: Policy,
    /// How long one connect may take before it counts as failed.
    pub connect_timeout: Duration,
    /// Further backends tried after a failed connect, before giving up on a client.
    pub retries: u32,
    /// Move linked bytes with `splice(2)` (Linux).
    pub splice: bool,
    /// Write a PROXY header to each backend connection first (`--send-proxy`).
    pub send_proxy: Option<SendProxy>,
    /// Sampled traffic capture (`--capture`), when on.
    pub capture: Option<Arc<Capture>>,
    /// TLS on the `tls://` listeners, when any (their clients connect a backend on their
    /// first plaintext bytes, after the handshake).
    pub tls: Option<TlsSetup>,
    /// Roots for `,tls` backends (`--backend-ca`).
    pub backend_roots: Option<ClientRoots>,
}

/// A connection's role, the state the reactor keeps next to it.
#[derive(Debug)]
pub enum Side {
    /// An accepted client.
    Client {
        /// The client's IP (for the hash policies).
        ip: Option<IpAddr>,
        /// Backends tried, in order; the last is the one connecting or connected.
        tried: Vec<Arc<Backend>>,
        /// The tag of the connect in progress, if any.
        connecting: Option<u64>,
        /// Set when the client's traffic is sampled for capture.
        cap: Option<Captured>,
    },
    /// The proxy's connection to a backend, linked to its client (with the client's
    /// capture when it is sampled).
    Upstream(Arc<Backend>, Option<Captured>),
    /// An outbound connection whose client is gone; closed at once.
    Orphan,
}

/// One loop's proxy: its own balancer and cached backend set, and the connects it has
/// in flight.
pub struct ProxyHandler {
    loop_id: usize,
    shared: Arc<Shared>,
    set: Arc<BackendSet>,
    balancer: Balancer,
    candidates: Vec<Candidate>,
    skip: Vec<usize>,
    /// Connects in flight: tag → the backend being connected to.
    pending: HashMap<u64, Arc<Backend>>,
    next_tag: u64,
    /// With `send_proxy`: the header for each connect in flight (tag → bytes).
    proxy_headers: HashMap<u64, Vec<u8>>,
    /// This loop's side of `--capture`.
    capture: Option<CaptureHook>,
    /// Sampled clients' captures by the tag of their connect in flight.
    captures: HashMap<u64, Captured>,
}

impl ProxyHandler {
    /// The handler of loop `loop_id`.
    pub fn new(loop_id: usize, shared: Arc<Shared>) -> Self {
        let set = shared.pool.current();
        let mut balancer = Balancer::new(shared.policy, loop_id as u64);
        balancer
            .set_backends(set.backends.iter().map(|b| (b.spec().name.as_str(), b.spec().weight)));
        ProxyHandler {
            loop_id,
            set,
            balancer,
            candidates: Vec::new(),
            skip: Vec::new(),
            pending: HashMap::new(),
            next_tag: 0,
            proxy_headers: HashMap::new(),
            capture: shared.capture.clone().map(CaptureHook::new),
            captures: HashMap::new(),
            shared,
        }
    }

    /// Takes the pool's current set when a reload replaced it.
    fn refresh(&mut self) {
        if self.set.generation != self.shared.pool.generation() {
            self.set = self.shared.pool.current();
            let names = self.set.backends.iter().map(|b| (b.spec().name.as_str(), b.spec().weight));
            self.balancer.set_backends(names);
        }
    }

    /// Starts a connect for the client to a backend it has not tried yet (pushed onto
    /// `tried`) and returns its tag; `None` when no backend is eligible (none up, or all
    /// tried) or no socket could be made.
    fn connect_next(
        &mut self,
        conn: &mut Conn<'_>,
        ip: Option<IpAddr>,
        tried: &mut Vec<Arc<Backend>>,
        cap: Option<Captured>,
    ) -> Option<u64> {
        self.refresh();
        let pool = &self.shared.pool;
        self.set.candidates(pool.health(), pool.now_ms(), &mut self.candidates);
        self.skip.clear();
        for (i, b) in self.set.backends.iter().enumerate() {
            if tried.iter().any(|t| Arc::ptr_eq(t, b)) {
                self.skip.push(i);
            }
        }
        let i = self.balancer.pick(&self.candidates, ip, &self.skip)?;
        let backend = self.set.backends[i].clone();
        let tag = self.next_tag;
        self.next_tag += 1;
        let spec = backend.spec();
        let timeout = Some(self.shared.connect_timeout);
        let started = if spec.tls {
            // TLS to the backend: `opened` comes after its handshake; a certificate the
            // roots do not trust is a failed connect (the next backend is tried).
            let tls = match (&self.shared.backend_roots, spec.tls_name()) {
                (Some(roots), Some(name)) => roots.for_name(&name),
                _ => Err("no --backend-ca, or no name to verify".into()),
            };
            match tls {
                Ok(tls) => conn.connect_tls(&spec.addr, timeout, tag, &tls),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
            }
        } else {
            conn.connect(&spec.addr, timeout, tag)
        };
        match started {
            Ok(_) => {
                log::trace!("loop {}: connecting to {}", self.loop_id, backend.spec().name);
                tried.push(backend.clone());
                self.pending.insert(tag, backend);
                if let Some(c) = cap {
                    self.captures.insert(tag, c);
                }
                if let Some(v) = self.shared.send_proxy {
                    let dest = conn.local_addr().ok();
                    self.proxy_headers.insert(tag, v.header(conn.peer_addr().socket_addr(), dest));
                }
                Some(tag)
            }
            Err(e) => {
                log::warn!("cannot connect to backend {}: {e}", backend.spec().name);
                None
            }
        }
    }

    /// Gives up on a client: counted, and closed.
    /// Nothing to do while a backend connect is under way; else no backend is left.
    fn connecting_or_unserved(&self, connecting: bool, tried: usize) -> Action {
        if connecting { Action::None } else { self.unserved(tried) }
    }

    fn unserved(&self, tried: usize) -> Action {
        log::debug!("loop {}: no backend reachable for a client ({tried} tried)", self.loop_id);
        self.shared.pool.unserved(self.loop_id);
        Action::Close
    }
}

impl EventHandler for ProxyHandler {
    type State = Side;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (Side, Action) {
        if let Some(origin) = conn.origin() {
            // Our connection to a backend is up: tie it to its client.
            let (Some(backend), Some(client)) =
                (self.pending.remove(&origin.tag), origin.requester)
            else {
                return (Side::Orphan, Action::Close);
            };
            if let Some(header) = self.proxy_headers.remove(&origin.tag) {
                // Before the link: it goes out ahead of every forwarded byte.
                conn.write(&header);
            }
            backend.success(self.shared.pool.health());
            backend.opened(self.loop_id);
            let cap = self.captures.remove(&origin.tag);
            // A sampled pair is copied, not spliced, so its bytes can be recorded.
            let opts = LinkOptions { splice: self.shared.splice && cap.is_none() };
            let action = match conn.link_with(client, opts) {
                Ok(()) => Action::None,
                Err(e) => {
                    log::debug!("cannot link to the client: {e}");
                    Action::Close
                }
            };
            return (Side::Upstream(backend, cap), action);
        }
        let ip = match conn.peer_addr() {
            Peer::Inet(a) => Some(a.ip()),
            Peer::Unix => None,
        };
        let cap = self.capture.as_mut().and_then(|h| h.opened(conn));
        if self.shared.tls.as_ref().is_some_and(|t| t.is_tls(conn.listener())) {
            // TLS: read on so the handshake runs; the backend comes with the first bytes.
            let side = Side::Client { ip, tried: Vec::new(), connecting: None, cap };
            return (side, Action::None);
        }
        // A client: hold its bytes in the kernel until its backend is connected.
        conn.pause_reading();
        let mut tried = Vec::new();
        let connecting = self.connect_next(conn, ip, &mut tried, cap);
        let action = self.connecting_or_unserved(connecting.is_some(), tried.len());
        (Side::Client { ip, tried, connecting, cap }, action)
    }

    fn data(&mut self, conn: &mut Conn<'_>, state: &mut Side, input: &[u8]) -> (usize, Action) {
        match state {
            // A TLS client's first plaintext (its handshake done): keep it unconsumed,
            // stop reading, and connect; the link hands the bytes to the backend.
            Side::Client { ip, tried, connecting, cap } if tried.is_empty() => {
                conn.pause_reading();
                let (ip, cap) = (*ip, *cap);
                *connecting = self.connect_next(conn, ip, tried, cap);
                let action = self.connecting_or_unserved(connecting.is_some(), tried.len());
                (0, action)
            }
            // Waiting for the backend (offered again): keep the bytes.
            Side::Client { .. } => (0, Action::None),
            // Linked connections are read by the reactor; nothing should arrive here.
            // Drop it rather than buffer it.
            _ => (input.len(), Action::None),
        }
    }

    fn connect_failed(
        &mut self,
        conn: &mut Conn<'_>,
        state: &mut Side,
        tag: u64,
        err: io::Error,
    ) -> Action {
        self.proxy_headers.remove(&tag);
        self.captures.remove(&tag);
        let Some(backend) = self.pending.remove(&tag) else { return Action::Close };
        log::debug!("connect to backend {} failed: {err}", backend.spec().name);
        backend.connect_error(self.loop_id);
        backend.failure(self.shared.pool.health(), &err);
        let Side::Client { ip, tried, connecting, cap } = state else { return Action::Close };
        *connecting = None;
        if tried.len() > self.shared.retries as usize {
            return self.unserved(tried.len());
        }
        let (ip, cap) = (*ip, *cap);
        *connecting = self.connect_next(conn, ip, tried, cap);
        self.connecting_or_unserved(connecting.is_some(), tried.len())
    }

    #[inline]
    fn forwarded(&mut self, state: &mut Side, n: usize) {
        match state {
            Side::Client { tried, .. } => {
                if let Some(b) = tried.last() {
                    b.sent(self.loop_id, n as u64);
                }
            }
            Side::Upstream(b, _) => b.received(self.loop_id, n as u64),
            Side::Orphan => {}
        }
    }

    #[inline]
    fn forwarded_data(&mut self, state: &mut Side, data: &[u8]) {
        let Some(h) = self.capture.as_mut() else { return };
        match state {
            Side::Client { cap: Some(c), .. } => h.record(c, Direction::ToServer, data),
            Side::Upstream(_, Some(c)) => h.record(c, Direction::ToClient, data),
            _ => {}
        }
    }

    fn closed(&mut self, state: Side, _reason: CloseReason) {
        match state {
            Side::Client { connecting, cap, .. } => {
                if let Some(tag) = connecting {
                    // Its connect, if it completes, finds no entry and closes at once.
                    self.pending.remove(&tag);
                    self.proxy_headers.remove(&tag);
                    self.captures.remove(&tag);
                }
                if let (Some(h), Some(c)) = (self.capture.as_mut(), cap) {
                    h.closed(&c);
                }
            }
            Side::Upstream(b, _) => b.closed(self.loop_id),
            Side::Orphan => {}
        }
    }
}
