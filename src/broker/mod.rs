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
//! A client that sends an empty client id gets a session no other CONNECT can name
//! (3.1.1 does not tell the client an assigned id): it is counted against
//! `max_sessions` but kept out of the client id map, and made only at its first
//! SUBSCRIBE.
//!
//! # Memory per idle client
//!
//! A connected client with an empty id, no subscription and no will costs the broker
//! its [`MqttConn`] (24 bytes inside the reactor's connection record) and nothing on
//! the heap. A client id adds a [`Session`] (104 bytes with its `Arc`, a third of it the
//! owner's 32-byte `ConnHandle`, plus the reactor's shared handle state it allocates),
//! the id's bytes and one pointer in the client id map; a subscription adds its
//! filter's bytes to the session and its entry in the tree. The will, QoS 1
//! queues and QoS 2 ids are allocated only when used; the queues and the QoS 2 ids are
//! freed again at a PINGREQ when empty.

mod handler;
mod tree;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use handler::{MqttConn, MqttHandler};

use crate::net::ProtoMetrics;
use crate::proto::mqtt::{Limits, encode_publish};
use crate::reactor::{ConnHandle, EventHandler, HandleError};
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

/// QoS 1 messages of a session: allocated at its first QoS 1 delivery, kept while
/// messages flow (freeing it whenever it empties would cost an allocation per message),
/// and freed once empty when the client shows it is idle (its PINGREQ).
#[derive(Default)]
struct Queues {
    /// QoS 1 messages sent and not yet acknowledged, oldest first.
    inflight: VecDeque<(u16, Msg)>,
    /// QoS 1 messages waiting to be sent (QoS already reduced to 1).
    queue: VecDeque<Msg>,
}

/// [`SessionState::flags`]: the session was asked for with clean session set.
const CLEAN: u8 = 1;
/// [`SessionState::flags`]: discarded (a clean reconnect or close replaced it):
/// deliveries and subscriptions are ignored.
const ENDED: u8 = 2;
/// [`SessionState::flags`]: a `notify_writable` is outstanding.
const NOTIFY_PENDING: u8 = 4;

/// A session's mutable part, behind the session's mutex. 64 bytes:
///
/// | field      | bytes | what                                                        |
/// |------------|-------|-------------------------------------------------------------|
/// | `owner`    | 32    | the owning connection's [`ConnHandle`] (the reactor's type)  |
/// | `subs`     | 16    | every filter, one allocation (empty: none)                   |
/// | `queues`   | 8     | [`Queues`], boxed, only while QoS 1 messages flow            |
/// | `epoch`    | 4     | which connection owns it (bumped on each takeover)           |
/// | `next_pid` | 2     | last packet id sent                                          |
/// | `flags`    | 1     | [`CLEAN`], [`ENDED`], [`NOTIFY_PENDING`]                     |
struct SessionState {
    /// The connection that owns the session now; `None` while the client is away.
    owner: Option<ConnHandle>,
    /// The session's filters, each followed by `\0` (an MQTT string cannot hold
    /// U+0000), in one allocation; their QoS is kept in the tree.
    subs: Box<str>,
    queues: Option<Box<Queues>>,
    /// Bumped each time a connection takes the session over: a connection owns the
    /// session while `owner` is set and `epoch` is the one it got.
    epoch: u32,
    next_pid: u16,
    flags: u8,
}

/// One client's session: its subscriptions and QoS 1 state, kept across connections
/// when the client asked for a persistent session.
///
/// 88 bytes (104 with the `Arc`'s counts): the client id (16, plus its bytes on the
/// heap; empty for a client that sent an empty id) and the mutex around its mutable
/// part (8 + 64: the owner's `ConnHandle` 32, the filters 16, the boxed QoS 1 queues
/// 8, epoch, packet id and flags 8). A connected client with an empty id and no
/// subscription has no `Session` at all ([`MqttConn`] says when one is made). Its
/// address is its key in the subscription tree (unique while the tree holds it).
pub struct Session {
    client_id: Box<str>,
    st: Mutex<SessionState>,
}

impl Session {
    /// A session with no owner, for the tree's tests.
    #[cfg(test)]
    pub(crate) fn for_test(id: u64) -> Arc<Session> {
        Session::new(format!("test-{id}").into(), None, true)
    }

    /// A fresh session: no subscriptions, nothing in flight or queued.
    fn new(client_id: Box<str>, owner: Option<ConnHandle>, clean: bool) -> Arc<Session> {
        Arc::new(Session {
            client_id,
            st: Mutex::new(SessionState {
                owner,
                subs: Box::default(),
                queues: None,
                epoch: 0,
                next_pid: 0,
                flags: if clean { CLEAN } else { 0 },
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's key in the subscription tree and in a publish's target set: its
    /// address, unique while the tree holds a reference to it.
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// The client identifier; empty for a client that connected with an empty one
    /// (3.1.1 does not tell a client the id a server assigns, so no other CONNECT can
    /// name, resume or take over such a session: it is kept out of the client id map).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// A session in the client id map, hashed and compared by its client id (so the map
/// holds one pointer per session, and the id's bytes once, in the session).
struct Named(Arc<Session>);

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Named {}

impl Hash for Named {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.0.client_id.as_ref().hash(state);
    }
}

impl Borrow<str> for Named {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl SessionState {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// True when the connection that got `epoch` owns the session now.
    fn owned_by(&self, epoch: u32) -> bool {
        self.owner.is_some() && self.epoch == epoch
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.next_pid
    }

    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    fn queue_is_empty(&self) -> bool {
        self.queues.as_ref().is_none_or(|q| q.queue.is_empty())
    }

    fn inflight_len(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.inflight.len())
    }

    /// Frees the QoS 1 queues when nothing is in them (the client is idle).
    fn shed(&mut self) {
        if self.queues.as_ref().is_some_and(|q| q.inflight.is_empty() && q.queue.is_empty()) {
            self.queues = None;
        }
    }

    /// The session's filters.
    fn filters(&self) -> std::str::SplitTerminator<'_, char> {
        self.subs.split_terminator('\0')
    }

    fn has_filter(&self, filter: &str) -> bool {
        self.filters().any(|f| f == filter)
    }

    fn add_filter(&mut self, filter: &str) {
        let mut all = String::with_capacity(self.subs.len() + filter.len() + 1);
        all.push_str(&self.subs);
        all.push_str(filter);
        all.push('\0');
        self.subs = all.into_boxed_str();
    }

    /// Removes `filter`; true when it was there.
    fn remove_filter(&mut self, filter: &str) -> bool {
        if !self.has_filter(filter) {
            return false;
        }
        let mut all = String::with_capacity(self.subs.len() - filter.len() - 1);
        for f in self.filters().filter(|f| *f != filter) {
            all.push_str(f);
            all.push('\0');
        }
        self.subs = all.into_boxed_str();
        true
    }

    /// Queues a QoS 1 message (oldest dropped past the bound) and asks the owner's loop
    /// to drain once writable.
    fn enqueue(&mut self, msg: Msg, cfg: &MqttConfig, m: &BrokerMetrics) {
        let queue = &mut self.queues().queue;
        if queue.len() >= cfg.max_queued.max(1) {
            queue.pop_front();
            BrokerMetrics::inc(&m.dropped);
        }
        queue.push_back(msg);
        self.notify_if(true);
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
        let mut pid = self.next_pid;
        let Some(q) = self.queues.as_mut() else { return false };
        let mut full = false;
        while !q.queue.is_empty() {
            if q.inflight.len() >= cfg.max_inflight.max(1) {
                break;
            }
            if out.len().max(pending) >= cfg.high_watermark {
                full = true;
                break;
            }
            let Some(msg) = q.queue.pop_front() else { break };
            pid = pid.checked_add(1).unwrap_or(1);
            encode_publish(out, &msg.topic, &msg.payload, 1, pid, msg.retain, false);
            BrokerMetrics::inc(&m.sent);
            q.inflight.push_back((pid, msg));
        }
        self.next_pid = pid;
        full
    }

    /// After a drain that left messages because the output is full: asks for
    /// `writable` (once).
    fn notify_if(&mut self, full: bool) {
        if full
            && !self.has(NOTIFY_PENDING)
            && let Some(o) = &self.owner
            && o.notify_writable().is_ok()
        {
            self.set(NOTIFY_PENDING, true);
        }
    }
}

/// The broker's shared state: sessions by client id, the subscription tree, retained
/// messages, counters. One per server, shared by every loop's [`MqttHandler`].
pub struct Broker {
    config: MqttConfig,
    /// Sessions with a client id (connected or away), by id. Clients that sent an
    /// empty id are counted in `metrics.sessions` only.
    sessions: Mutex<HashSet<Named>>,
    tree: RwLock<Node>,
    retained: RwLock<HashMap<Arc<str>, Msg>>,
    metrics: BrokerMetrics,
    /// Packets handled per loop (`evloop_requests_total{proto="mqtt"}`) and protocol
    /// errors by kind.
    proto: Arc<ProtoMetrics>,
}

impl Broker {
    /// A broker with `config` for a server of `loops` loops (the per-loop packet
    /// counters).
    pub fn new(config: MqttConfig, loops: usize) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            sessions: Mutex::new(HashSet::new()),
            tree: RwLock::new(Node::default()),
            retained: RwLock::new(HashMap::new()),
            metrics: BrokerMetrics::default(),
            proto: Arc::new(ProtoMetrics::new("mqtt", loops)),
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

    fn sessions(&self) -> MutexGuard<'_, HashSet<Named>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more session unless [`MqttConfig::max_sessions`] are kept already;
    /// false when full.
    fn admit(&self) -> bool {
        let max = i64::try_from(self.config.max_sessions).unwrap_or(i64::MAX);
        self.metrics
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Removes the session with `key` from `filters` in the tree.
    fn unsubscribe_all<'a>(&self, key: usize, filters: impl IntoIterator<Item = &'a str>) {
        let mut filters = filters.into_iter().peekable();
        if filters.peek().is_none() {
            return;
        }
        let mut tree = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        for f in filters {
            if tree.remove(f, key) {
                BrokerMetrics::gauge(&self.metrics.subscriptions, -1);
            }
        }
    }

    /// Subscribes `session` to `filter` at `qos`; false when over the session's bound.
    /// A session already ended (its connection is being closed) keeps nothing.
    fn subscribe(&self, session: &Arc<Session>, filter: &str, qos: u8) -> bool {
        // Lock order: session, then tree.
        let mut st = session.lock();
        if st.has(ENDED) {
            return true;
        }
        let known = st.has_filter(filter);
        if !known && st.filters().count() >= self.config.max_subscriptions {
            return false;
        }
        let new =
            self.tree.write().unwrap_or_else(PoisonError::into_inner).insert(filter, session, qos);
        if new {
            BrokerMetrics::gauge(&self.metrics.subscriptions, 1);
        }
        if !known {
            st.add_filter(filter);
        }
        true
    }

    fn unsubscribe(&self, session: &Session, filter: &str) {
        let removed = session.lock().remove_filter(filter);
        if removed {
            self.unsubscribe_all(session.key(), [filter]);
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
        let mut targets: HashMap<usize, (Arc<Session>, u8)> = HashMap::new();
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
        if st.has(ENDED) {
            return;
        }
        let Some(owner) = &st.owner else {
            if qos == 1 && !st.has(CLEAN) {
                st.enqueue(Msg { qos: 1, ..msg.clone() }, cfg, m);
            } else {
                BrokerMetrics::inc(&m.dropped);
            }
            return;
        };
        if qos == 0 {
            if !st.queue_is_empty() {
                BrokerMetrics::inc(&m.dropped);
                return;
            }
            let bytes = qos0.get_or_insert_with(|| {
                let mut b = Vec::new();
                encode_publish(&mut b, &msg.topic, &msg.payload, 0, 0, false, false);
                b
            });
            match owner.try_write(bytes) {
                Ok(()) => BrokerMetrics::inc(&m.sent),
                Err(_) => BrokerMetrics::inc(&m.dropped),
            }
            return;
        }
        let msg = Msg { qos: 1, ..msg.clone() };
        if !st.queue_is_empty() || st.inflight_len() >= cfg.max_inflight.max(1) {
            st.enqueue(msg, cfg, m);
            return;
        }
        let pid = st.pid();
        let mut bytes = Vec::with_capacity(msg.topic.len() + msg.payload.len() + 9);
        encode_publish(&mut bytes, &msg.topic, &msg.payload, 1, pid, msg.retain, false);
        let sent = st.owner.as_ref().map(|o| o.try_write(&bytes));
        match sent {
            Some(Ok(())) => {
                BrokerMetrics::inc(&m.sent);
                st.queues().inflight.push_back((pid, msg));
            }
            Some(Err(HandleError::WouldBlock)) => st.enqueue(msg, cfg, m),
            // The connection is going away: keep it for a persistent session.
            _ if !st.has(CLEAN) => st.enqueue(msg, cfg, m),
            _ => BrokerMetrics::inc(&m.dropped),
        }
    }

    /// True when a client with `client_id` is connected now.
    pub fn is_connected(&self, client_id: &str) -> bool {
        let session = self.sessions().get(client_id).map(|n| n.0.clone());
        session.is_some_and(|s| s.lock().owner.is_some())
    }

    /// Number of sessions kept: connected clients (those that sent an empty client id
    /// included) and persistent sessions away.
    pub fn session_count(&self) -> usize {
        usize::try_from(BrokerMetrics::level(&self.metrics.sessions)).unwrap_or(0)
    }
}

/// Checks that [`MqttHandler`] is an [`EventHandler`] (compile-time).
const _: fn() = || {
    fn is_handler<H: EventHandler>() {}
    is_handler::<MqttHandler>();
};
