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
//! Connect results feed the backends' passive health (`fall`/`rise`); byte counts come
//! from [`EventHandler::forwarded`] into per-loop counters (no lock, no channel).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::balance::{Balancer, Candidate, Policy};
use super::pool::{Backend, BackendSet, Pool};
use crate::reactor::{Action, CloseReason, Conn, EventHandler, LinkOptions, Peer};

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
    },
    /// The proxy's connection to a backend, linked to its client.
    Upstream(Arc<Backend>),
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
            shared,
            set,
            balancer,
            candidates: Vec::new(),
            skip: Vec::new(),
            pending: HashMap::new(),
            next_tag: 0,
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
        match conn.connect(&backend.spec().addr, Some(self.shared.connect_timeout), tag) {
            Ok(_) => {
                log::trace!("loop {}: connecting to {}", self.loop_id, backend.spec().name);
                tried.push(backend.clone());
                self.pending.insert(tag, backend);
                Some(tag)
            }
            Err(e) => {
                log::warn!("cannot connect to backend {}: {e}", backend.spec().name);
                None
            }
        }
    }

    /// Gives up on a client: counted, and closed.
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
            backend.success(self.shared.pool.health());
            backend.opened(self.loop_id);
            let opts = LinkOptions { splice: self.shared.splice };
            let action = match conn.link_with(client, opts) {
                Ok(()) => Action::None,
                Err(e) => {
                    log::debug!("cannot link to the client: {e}");
                    Action::Close
                }
            };
            return (Side::Upstream(backend), action);
        }
        // A client: hold its bytes in the kernel until its backend is connected.
        conn.pause_reading();
        let ip = match conn.peer_addr() {
            Peer::Inet(a) => Some(a.ip()),
            Peer::Unix => None,
        };
        let mut tried = Vec::new();
        let connecting = self.connect_next(conn, ip, &mut tried);
        let action = if connecting.is_some() { Action::None } else { self.unserved(tried.len()) };
        (Side::Client { ip, tried, connecting }, action)
    }

    fn data(&mut self, _: &mut Conn<'_>, _: &mut Side, input: &[u8]) -> (usize, Action) {
        // Clients are paused until linked, and linked connections are read by the
        // reactor; nothing should arrive here. Drop it rather than buffer it.
        (input.len(), Action::None)
    }

    fn connect_failed(
        &mut self,
        conn: &mut Conn<'_>,
        state: &mut Side,
        tag: u64,
        err: io::Error,
    ) -> Action {
        let Some(backend) = self.pending.remove(&tag) else { return Action::Close };
        log::debug!("connect to backend {} failed: {err}", backend.spec().name);
        backend.connect_error(self.loop_id);
        backend.failure(self.shared.pool.health(), &err);
        let Side::Client { ip, tried, connecting } = state else { return Action::Close };
        *connecting = None;
        if tried.len() > self.shared.retries as usize {
            return self.unserved(tried.len());
        }
        let ip = *ip;
        *connecting = self.connect_next(conn, ip, tried);
        if connecting.is_some() { Action::None } else { self.unserved(tried.len()) }
    }

    #[inline]
    fn forwarded(&mut self, state: &mut Side, n: usize) {
        match state {
            Side::Client { tried, .. } => {
                if let Some(b) = tried.last() {
                    b.sent(self.loop_id, n as u64);
                }
            }
            Side::Upstream(b) => b.received(self.loop_id, n as u64),
            Side::Orphan => {}
        }
    }

    fn closed(&mut self, state: Side, _reason: CloseReason) {
        match state {
            Side::Client { connecting: Some(tag), .. } => {
                // Its connect, if it completes, finds no entry and closes at once.
                self.pending.remove(&tag);
            }
            Side::Upstream(b) => b.closed(self.loop_id),
            Side::Client { .. } | Side::Orphan => {}
        }
    }
}
