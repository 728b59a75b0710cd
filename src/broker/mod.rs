//! The MQTT 3.1.1 broker on the reactor's public API: sessions, the subscription tree,
//! retained messages, wills, takeover, keepalive and fan-out across loops. The wire
//! format is [`crate::proto::mqtt`] (sans-IO); this module owns the state that spans
//! connections, and [`MqttHandler`] is the reactor [`EventHandler`] that drives it. An
//! MQTT broker is not a request/response [`Protocol`](crate::proto::Protocol) (a
//! PUBLISH on one connection writes to many others), so it is an `EventHandler` of its
//! own rather than a `ProtoHandler`; the std and tokio engines do not run it.
//!
//! # Sharing: one tree behind an `RwLock`, per-session locks, direct cross-loop writes
//!
//! The subscription tree (`tree.rs`) is **one tree shared by all loops behind an
//! `RwLock`**, not one tree per loop. Publishes far outnumber (un)subscribes in the
//! workloads a broker serves, so matching takes the read lock and loops match in
//! parallel; a per-loop tree would have to forward every PUBLISH to every loop (a
//! channel message and a wake per loop per message, even for loops with no matching
//! subscriber) and keep N copies of the subscriptions. With the shared tree the
//! publishing loop knows exactly which sessions want the message and writes to each
//! subscriber's connection directly with [`ConnHandle::try_write`] (the reactor's
//! bounded cross-loop write path). The read lock is held only while matching (the
//! matching sessions are collected, then the lock is released before any write).
//!
//! Each [`Session`] has its own small mutex (packet ids, QoS 1 in-flight window, queue,
//! owner connection), so deliveries to different subscribers never contend. Lock order:
//! sessions map → one session → tree; a session lock is never held while taking the map
//! or the tree.
//!
//! **Order**: one publisher's messages are handled on its loop thread in arrival order,
//! and `try_write`s from one thread arrive in order, so each subscriber sees one
//! publisher's messages (per topic, and overall) in the order they were published.
//! Messages a session had to queue are written before any later one (while a session's
//! queue is not empty, new messages join the queue).
//!
//! **Backpressure**: `try_write` refuses once the subscriber's queued output (in the
//! loop's channel plus its pending output) is above the high watermark. Then a QoS 0
//! message is dropped and counted (`messages_dropped`); a QoS 1 message joins the
//! session's queue, bounded by [`MqttConfig::max_queued`] (oldest dropped and counted),
//! and [`ConnHandle::notify_writable`] asks for [`EventHandler::writable`], which drains
//! the queue on the subscriber's own loop. So a subscriber that stops reading costs at
//! most the high watermark (plus one message per publishing loop) and `max_queued`
//! messages. QoS 1 deliveries in flight (sent, not yet PUBACKed) are bounded by
//! [`MqttConfig::max_inflight`] and are resent (DUP) when a persistent session resumes.
//!
//! **Keepalive**: the reactor's per-connection request deadline
//! ([`Conn::set_request_deadline`](crate::reactor::Conn::set_request_deadline), on its 100 ms timer wheel) is re-armed at 1.5 × the
//! keepalive on every read; when it passes, [`EventHandler::timeout`] closes the
//! connection (and the will goes out). No timer per client beyond the wheel's slot.
//!
//! **Documented choices**: QoS 2 PUBLISH from clients is accepted by the spec's method
//! (delivered once at receipt, PUBREC, then PUBCOMP on PUBREL; a DUP with a packet id
//! awaiting PUBREL is not delivered again); subscriptions are granted at most QoS 1
//! (the spec lets a server downgrade), so the broker never sends QoS 2. User names and
//! passwords are accepted without checks (no authentication). A takeover closes the old
//! connection as a server close, so its will is published (as \[MQTT-3.1.2-8\] says for a
//! close without DISCONNECT); a server shutdown does not publish wills (every subscriber
//! is being closed too). QoS 0 messages for an offline persistent session are
//! dropped and counted; QoS 1 ones are queued (bounded). Persistent sessions live in
//! memory until a clean CONNECT with their id (3.1.1 has no session expiry), bounded by
//! [`MqttConfig::max_sessions`] × [`MqttConfig::max_queued`]. A SUBSCRIBE with wildcards
//! scans the retained messages (a plain filter is one lookup).

mod handler;
mod tree;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use handler::{MqttConn, MqttHandler};

use crate::net::ProtoMetrics;
use crate::proto::mqtt::{Limits, encode_publish};
use crate::reactor::{ConnHandle, ConnId, EventHandler, HandleError};
use tree::Node;

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Packet size and topic limits.
    pub limits: Limits,
    /// QoS 1 deliveries sent and not yet acknowledged, per session.
    pub max_inflight: usize,
    /// QoS 1 messages queued per session (while its connection is slow, its in-flight
    /// window is full, or it is away); beyond it the oldest is dropped and counted.
    pub max_queued: usize,
    /// Subscriptions per session; a SUBSCRIBE beyond it gets the failure code.
    pub max_subscriptions: usize,
    /// Retained messages kept; beyond it new retained topics are not kept (counted as
    /// dropped).
    pub max_retained: usize,
    /// Sessions (connected and persistent ones away); beyond it CONNACK 3.
    pub max_sessions: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// The reactor's high watermark: a session's queue is drained into its connection
    /// while its output is below this.
    pub high_watermark: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            limits: Limits::default(),
            max_inflight: 32,
            max_queued: 1000,
            max_subscriptions: 1000,
            max_retained: 100_000,
            max_sessions: 1_000_000,
            connect_timeout: Duration::from_secs(10),
            high_watermark: 1 << 20,
        }
    }
}

/// The broker's counters, all relaxed atomics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Clients connected now.
    pub clients: AtomicI64,
    /// Sessions kept now (connected, and persistent ones away).
    pub sessions: AtomicI64,
    /// Subscriptions now.
    pub subscriptions: AtomicI64,
    /// Retained messages now.
    pub retained: AtomicI64,
    /// PUBLISH packets received from clients (wills included).
    pub received: AtomicU64,
    /// PUBLISH packets queued to subscribers' connections.
    pub sent: AtomicU64,
    /// Messages dropped: QoS 0 to a subscriber above its high watermark or away, QoS 1
    /// over a session's queue bound, retained over the retained bound.
    pub dropped: AtomicU64,
    /// Connections closed for a malformed packet or a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Connections closed by the keepalive (or the CONNECT timeout).
    pub keepalive_expired: AtomicU64,
    /// Connections closed because a new CONNECT took their client id over.
    pub takeovers: AtomicU64,
}

impl BrokerMetrics {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn gauge(c: &AtomicI64, d: i64) {
        c.fetch_add(d, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Reads a gauge.
    pub fn level(c: &AtomicI64) -> i64 {
        c.load(Ordering::Relaxed)
    }

    /// Appends the counters in the Prometheus text format (`evloop_mqtt_*`).
    pub fn render(&self, out: &mut String) {
        let gauges = [
            ("clients_connected", "MQTT clients connected now.", &self.clients),
            (
                "sessions",
                "MQTT sessions kept (connected and persistent ones away).",
                &self.sessions,
            ),
            ("subscriptions", "MQTT subscriptions.", &self.subscriptions),
            ("retained_messages", "MQTT retained messages.", &self.retained),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP evloop_mqtt_{name} {help}\n# TYPE evloop_mqtt_{name} gauge\nevloop_mqtt_{name} {}",
                Self::level(v)
            );
        }
        let counters = [
            ("messages_received_total", "PUBLISH packets received.", &self.received),
            ("messages_sent_total", "PUBLISH packets sent to subscribers.", &self.sent),
            (
                "messages_dropped_total",
                "Messages dropped (slow or absent subscribers, bounds).",
                &self.dropped,
            ),
            (
                "protocol_errors_total",
                "Connections closed for malformed packets.",
                &self.protocol_errors,
            ),
            (
                "keepalive_expired_total",
                "Connections closed by the keepalive or the CONNECT timeout.",
                &self.keepalive_expired,
            ),
            (
                "takeovers_total",
                "Connections taken over by a new CONNECT with their client id.",
                &self.takeovers,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP evloop_mqtt_{name} {help}\n# TYPE evloop_mqtt_{name} counter\nevloop_mqtt_{name} {}",
                Self::get(v)
            );
        }
    }
}

/// An application message on its way through the broker. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Arc<[u8]>,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

/// The connection that currently owns a session.
struct Owner {
    id: ConnId,
    handle: ConnHandle,
}

/// A session's mutable part.
struct SessionState {
    owner: Option<Owner>,
    clean: bool,
    /// Discarded (a clean reconnect replaced it): deliveries are ignored.
    ended: bool,
    /// The session's filters (their QoS is kept in the tree).
    subs: Vec<Box<str>>,
    next_pid: u16,
    /// QoS 1 messages sent and not yet acknowledged, oldest first.
    inflight: VecDeque<(u16, Msg)>,
    /// QoS 1 messages waiting to be sent (QoS already reduced to 1).
    queue: VecDeque<Msg>,
    /// A `notify_writable` is outstanding.
    notify_pending: bool,
}

/// One client's session: its subscriptions and QoS 1 state, kept across connections
/// when the client asked for a persistent session.
pub struct Session {
    id: u64,
    client_id: Arc<str>,
    st: Mutex<SessionState>,
}

impl Session {
    /// A session with no owner, for the tree's tests.
    #[cfg(test)]
    pub(crate) fn for_test(id: u64) -> Arc<Session> {
        Session::new(id, format!("test-{id}").into(), None, true)
    }

    /// A fresh session: no subscriptions, nothing in flight or queued.
    fn new(id: u64, client_id: Arc<str>, owner: Option<Owner>, clean: bool) -> Arc<Session> {
        Arc::new(Session {
            id,
            client_id,
            st: Mutex::new(SessionState {
                owner,
                clean,
                ended: false,
                subs: Vec::new(),
                next_pid: 0,
                inflight: VecDeque::new(),
                queue: VecDeque::new(),
                notify_pending: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl SessionState {
    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.next_pid
    }

    /// Queues a QoS 1 message (oldest dropped past the bound) and asks the owner's loop
    /// to drain once writable.
    fn enqueue(&mut self, msg: Msg, cfg: &MqttConfig, m: &BrokerMetrics) {
        if self.queue.len() >= cfg.max_queued.max(1) {
            self.queue.pop_front();
            BrokerMetrics::inc(&m.dropped);
        }
        self.queue.push_back(msg);
        if !self.notify_pending
            && let Some(o) = &self.owner
            && o.handle.notify_writable().is_ok()
        {
            self.notify_pending = true;
        }
    }

    /// Moves queued messages into the in-flight window and `out` while there is room;
    /// true when messages remain because the output is full.
    fn drain(
        &mut self,
        out: &mut Vec<u8>,
        pending: usize,
        cfg: &MqttConfig,
        m: &BrokerMetrics,
    ) -> bool {
        while !self.queue.is_empty() {
            if self.inflight.len() >= cfg.max_inflight.max(1) {
                return false;
            }
            if out.len().max(pending) >= cfg.high_watermark {
                return true;
            }
            let Some(msg) = self.queue.pop_front() else { break };
            let pid = self.pid();
            encode_publish(out, &msg.topic, &msg.payload, 1, pid, msg.retain, false);
            BrokerMetrics::inc(&m.sent);
            self.inflight.push_back((pid, msg));
        }
        false
    }
}

/// The broker's shared state: sessions by client id, the subscription tree, retained
/// messages, counters. One per server, shared by every loop's [`MqttHandler`].
pub struct Broker {
    config: MqttConfig,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    tree: RwLock<Node>,
    retained: RwLock<HashMap<Arc<str>, Msg>>,
    metrics: BrokerMetrics,
    /// Packets handled per loop (`evloop_requests_total{proto="mqtt"}`) and protocol
    /// errors by kind.
    proto: Arc<ProtoMetrics>,
    next_id: AtomicU64,
}

impl Broker {
    /// A broker with `config` for a server of `loops` loops (the per-loop packet
    /// counters).
    pub fn new(config: MqttConfig, loops: usize) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            sessions: Mutex::new(HashMap::new()),
            tree: RwLock::new(Node::default()),
            retained: RwLock::new(HashMap::new()),
            metrics: BrokerMetrics::default(),
            proto: Arc::new(ProtoMetrics::new("mqtt", loops)),
            next_id: AtomicU64::new(1),
        })
    }

    /// The broker's counters.
    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// Packets handled per loop and protocol errors by kind.
    pub fn proto_metrics(&self) -> &Arc<ProtoMetrics> {
        &self.proto
    }

    /// The broker's settings.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// A handler for one loop (the factory passed to
    /// [`Server::start`](crate::reactor::Server::start) calls this).
    pub fn handler(self: &Arc<Self>, loop_id: usize) -> MqttHandler {
        MqttHandler::new(self.clone(), loop_id)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_session(&self, client_id: Arc<str>, clean: bool, owner: Owner) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Session::new(id, client_id, Some(owner), clean)
    }

    /// Removes `subs` of session `id` from the tree.
    fn unsubscribe_all<I>(&self, id: u64, subs: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut tree = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        for f in subs {
            if tree.remove(f.as_ref(), id) {
                BrokerMetrics::gauge(&self.metrics.subscriptions, -1);
            }
        }
    }

    /// Subscribes `session` to `filter` at `qos`; false when over the session's bound.
    fn subscribe(&self, session: &Arc<Session>, filter: &str, qos: u8) -> bool {
        {
            let st = session.lock();
            let known = st.subs.iter().any(|f| &**f == filter);
            if !known && st.subs.len() >= self.config.max_subscriptions {
                return false;
            }
        }
        let new =
            self.tree.write().unwrap_or_else(PoisonError::into_inner).insert(filter, session, qos);
        if new {
            BrokerMetrics::gauge(&self.metrics.subscriptions, 1);
        }
        let mut st = session.lock();
        if !st.subs.iter().any(|f| &**f == filter) {
            st.subs.reserve_exact(1);
            st.subs.push(filter.into());
        }
        true
    }

    fn unsubscribe(&self, session: &Arc<Session>, filter: &str) {
        let removed = {
            let mut st = session.lock();
            let at = st.subs.iter().position(|f| &**f == filter);
            at.map(|i| st.subs.swap_remove(i))
        };
        if let Some(f) = removed {
            self.unsubscribe_all(session.id, [f]);
        }
    }

    /// Stores, replaces or (empty payload) clears the retained message of `msg.topic`.
    fn retain(&self, msg: &Msg) {
        let mut r = self.retained.write().unwrap_or_else(PoisonError::into_inner);
        if msg.payload.is_empty() {
            if r.remove(&msg.topic).is_some() {
                BrokerMetrics::gauge(&self.metrics.retained, -1);
            }
            return;
        }
        if !r.contains_key(&msg.topic) && r.len() >= self.config.max_retained {
            BrokerMetrics::inc(&self.metrics.dropped);
            return;
        }
        let stored = Msg { retain: true, ..msg.clone() };
        if r.insert(msg.topic.clone(), stored).is_none() {
            BrokerMetrics::gauge(&self.metrics.retained, 1);
        }
    }

    /// Retained messages matching `filter`.
    fn retained_for(&self, filter: &str) -> Vec<Msg> {
        let r = self.retained.read().unwrap_or_else(PoisonError::into_inner);
        if !filter.contains(['+', '#']) {
            return r.get(filter).cloned().into_iter().collect();
        }
        r.values()
            .filter(|m| crate::proto::mqtt::topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Publishes `msg` (from a client or a will): retained store, then every matching
    /// session, each at the lower of the message's and its subscription's QoS.
    pub(crate) fn publish(&self, msg: Msg) {
        BrokerMetrics::inc(&self.metrics.received);
        if msg.retain {
            self.retain(&msg);
        }
        let mut targets = HashMap::new();
        self.tree.read().unwrap_or_else(PoisonError::into_inner).matching(&msg.topic, &mut targets);
        if targets.is_empty() {
            return;
        }
        let fanned = Msg { retain: false, ..msg };
        let mut qos0: Option<Vec<u8>> = None;
        for (_, (session, sub_qos)) in targets {
            let qos = fanned.qos.min(sub_qos).min(1);
            self.deliver(&session, &fanned, qos, &mut qos0);
        }
    }

    /// Delivers `msg` to `session` from any thread, through its owner's [`ConnHandle`].
    fn deliver(&self, session: &Session, msg: &Msg, qos: u8, qos0: &mut Option<Vec<u8>>) {
        let m = &self.metrics;
        let cfg = &self.config;
        let mut st = session.lock();
        if st.ended {
            return;
        }
        let Some(owner) = &st.owner else {
            if qos == 1 && !st.clean {
                st.enqueue(Msg { qos: 1, ..msg.clone() }, cfg, m);
            } else {
                BrokerMetrics::inc(&m.dropped);
            }
            return;
        };
        if qos == 0 {
            if !st.queue.is_empty() {
                BrokerMetrics::inc(&m.dropped);
                return;
            }
            let bytes = qos0.get_or_insert_with(|| {
                let mut b = Vec::new();
                encode_publish(&mut b, &msg.topic, &msg.payload, 0, 0, false, false);
                b
            });
            match owner.handle.try_write(bytes) {
                Ok(()) => BrokerMetrics::inc(&m.sent),
                Err(_) => BrokerMetrics::inc(&m.dropped),
            }
            return;
        }
        let msg = Msg { qos: 1, ..msg.clone() };
        if !st.queue.is_empty() || st.inflight.len() >= cfg.max_inflight.max(1) {
            st.enqueue(msg, cfg, m);
            return;
        }
        let pid = st.pid();
        let mut bytes = Vec::with_capacity(msg.topic.len() + msg.payload.len() + 9);
        encode_publish(&mut bytes, &msg.topic, &msg.payload, 1, pid, msg.retain, false);
        let sent = st.owner.as_ref().map(|o| o.handle.try_write(&bytes));
        match sent {
            Some(Ok(())) => {
                BrokerMetrics::inc(&m.sent);
                st.inflight.push_back((pid, msg));
            }
            Some(Err(HandleError::WouldBlock)) => st.enqueue(msg, cfg, m),
            // The connection is going away: keep it for a persistent session.
            _ if !st.clean => st.enqueue(msg, cfg, m),
            _ => BrokerMetrics::inc(&m.dropped),
        }
    }

    /// True when a client with `client_id` is connected now.
    pub fn is_connected(&self, client_id: &str) -> bool {
        let session = self.sessions().get(client_id).cloned();
        session.is_some_and(|s| s.lock().owner.is_some())
    }

    /// Number of sessions kept.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }
}

/// Checks that [`MqttHandler`] is an [`EventHandler`] (compile-time).
const _: fn() = || {
    fn is_handler<H: EventHandler>() {}
    is_handler::<MqttHandler>();
};
