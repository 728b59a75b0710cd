//! [`MqttHandler`]: the reactor [`EventHandler`] of the broker, one per loop. It decodes
//! packets from a connection's input, answers on the connection's own output, and hands
//! publishes to the shared [`Broker`] for fan-out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use log::debug;

use super::{Broker, BrokerMetrics, CLEAN, ENDED, Msg, NOTIFY_PENDING, Named, Session};
use crate::proto::mqtt::{
    Connect, Packet, Publish, SUBACK_FAILURE, connack, decode, encode_publish, topic,
};
use crate::reactor::{Action, CloseReason, Conn, EventHandler};

/// The broker's handler for one loop.
pub struct MqttHandler {
    broker: Arc<Broker>,
    loop_id: usize,
}

impl MqttHandler {
    /// A handler for loop `loop_id` of `broker`.
    pub fn new(broker: Arc<Broker>, loop_id: usize) -> Self {
        MqttHandler { broker, loop_id }
    }
}

/// A connection's state (kept inline in the reactor's connection record): 24 bytes,
/// and nothing on the heap for a connected client that sent an empty client id, has
/// no subscription, no will and no QoS 2 exchange open.
///
/// | field       | bytes | what                                                       |
/// |-------------|-------|------------------------------------------------------------|
/// | `session`   | 8     | the [`Session`] (104 bytes, shared), when one is needed   |
/// | `extra`     | 8     | `Extra` (88 bytes, boxed): the will, QoS 2 ids             |
/// | `epoch`     | 4     | the session epoch this connection got (ownership check)    |
/// | `keepalive` | 2     | the client's keepalive, seconds (0: none)                  |
/// | `connected` | 1     | CONNECT accepted                                           |
///
/// A session exists from CONNECT for a client id (the client id map, takeovers and
/// persistent sessions need it, with the owner's `ConnHandle` for the wake), and from
/// the first granted SUBSCRIBE for a client that sent an empty id (fan-out needs it);
/// such a session is in no map and ends with the connection. The keepalive is the
/// reactor's request deadline (its timer wheel), re-armed from `keepalive` on reads.
pub struct MqttConn {
    session: Option<Arc<Session>>,
    extra: Option<Box<Extra>>,
    epoch: u32,
    keepalive: u16,
    connected: bool,
}

/// What only some connections need, boxed: 88 bytes.
#[derive(Default)]
struct Extra {
    /// The will (40 bytes; its topic and payload on the heap).
    will: Option<Msg>,
    /// QoS 2 packet ids received and not yet released (PUBREL); 48 bytes, its table
    /// allocated at the first QoS 2 PUBLISH.
    qos2: HashSet<u16>,
}

/// What handling one packet asks for.
enum Next {
    Go,
    Close,
    /// A protocol violation: counted, then a close (the will goes out).
    Violation(&'static str),
}

impl MqttConn {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The client looks idle (it sent a PINGREQ): frees what nothing is using.
    fn shed(&mut self) {
        if let Some(e) = &mut self.extra {
            if e.will.is_none() && e.qos2.is_empty() {
                self.extra = None;
            } else if e.qos2.is_empty() {
                e.qos2.shrink_to_fit();
            }
        }
        if let Some(s) = &self.session {
            let mut ss = s.lock();
            if ss.owned_by(self.epoch) {
                ss.shed();
            }
        }
    }
}

/// The keepalive's deadline: 1.5 × the client's.
fn keepalive_deadline(secs: u16) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_millis(u64::from(secs) * 1500))
}

impl MqttHandler {
    fn connect(&self, conn: &mut Conn<'_>, st: &mut MqttConn, c: Connect) -> Next {
        let b = &self.broker;
        let refuse = |conn: &mut Conn<'_>, code| {
            Packet::ConnAck { session_present: false, code }.encode(conn.out());
            Next::Close
        };
        let known = matches!((c.protocol.as_str(), c.level), ("MQTT", 4) | ("MQIsdp", 3));
        if !known {
            if matches!(c.protocol.as_str(), "MQTT" | "MQIsdp") {
                return refuse(conn, connack::BAD_PROTOCOL);
            }
            return Next::Violation("unknown protocol name");
        }
        let anonymous = c.client_id.is_empty();
        if anonymous {
            if !c.clean_session || c.level == 3 {
                return refuse(conn, connack::ID_REJECTED);
            }
        } else if c.level == 3 && c.client_id.len() > 23 {
            return refuse(conn, connack::ID_REJECTED);
        }
        let will = match c.will {
            Some(w) if !topic::valid_name(&w.topic, &b.config.limits) => {
                return Next::Violation("invalid will topic");
            }
            Some(w) => Some(Msg {
                topic: w.topic.into(),
                payload: w.payload.into(),
                qos: w.qos,
                retain: w.retain,
            }),
            None => None,
        };
        let m = &b.metrics;
        if anonymous {
            // A fresh clean session that no other CONNECT can name: counted now, made
            // at its first subscription.
            if !b.admit() {
                return refuse(conn, connack::UNAVAILABLE);
            }
            Packet::ConnAck { session_present: false, code: connack::ACCEPTED }.encode(conn.out());
        } else {
            let owner = conn.handle();
            let mut sessions = b.sessions();
            let existing = sessions.get(c.client_id.as_str()).map(|n| n.0.clone());
            if existing.is_none() && !b.admit() {
                drop(sessions);
                return refuse(conn, connack::UNAVAILABLE);
            }
            let pending = conn.pending_output();
            let (session, present) = match existing {
                Some(s) => {
                    let mut ss = s.lock();
                    if let Some(old) = ss.owner.take() {
                        BrokerMetrics::inc(&m.takeovers);
                        let _ = old.wake();
                    }
                    if !c.clean_session && !ss.has(CLEAN) {
                        ss.owner = Some(owner);
                        ss.epoch = ss.epoch.wrapping_add(1);
                        st.epoch = ss.epoch;
                        ss.set(NOTIFY_PENDING, false);
                        Packet::ConnAck { session_present: true, code: connack::ACCEPTED }
                            .encode(conn.out());
                        // Resend what was in flight, then what queued while away.
                        let out = conn.out();
                        if let Some(q) = &ss.queues {
                            for (pid, msg) in &q.inflight {
                                encode_publish(
                                    out,
                                    &msg.topic,
                                    &msg.payload,
                                    1,
                                    *pid,
                                    msg.retain,
                                    true,
                                );
                                BrokerMetrics::inc(&m.sent);
                            }
                        }
                        let full = ss.drain(out, pending, &b.config, m);
                        ss.notify_if(full);
                        drop(ss);
                        drop(sessions);
                        (s, true)
                    } else {
                        ss.set(ENDED, true);
                        let subs = std::mem::take(&mut ss.subs);
                        drop(ss);
                        let fresh = Session::new(c.client_id.into(), Some(owner), c.clean_session);
                        sessions.replace(Named(fresh.clone()));
                        drop(sessions);
                        b.unsubscribe_all(s.key(), subs.split_terminator('\0'));
                        st.epoch = 0;
                        (fresh, false)
                    }
                }
                None => {
                    let fresh = Session::new(c.client_id.into(), Some(owner), c.clean_session);
                    sessions.insert(Named(fresh.clone()));
                    drop(sessions);
                    st.epoch = 0;
                    (fresh, false)
                }
            };
            if !present {
                Packet::ConnAck { session_present: false, code: connack::ACCEPTED }
                    .encode(conn.out());
            }
            st.session = Some(session);
        }
        BrokerMetrics::gauge(&m.clients, 1);
        st.connected = true;
        st.keepalive = c.keep_alive;
        conn.set_request_deadline(keepalive_deadline(c.keep_alive));
        if will.is_some() {
            st.extra().will = will;
        }
        Next::Go
    }

    fn packet(&self, conn: &mut Conn<'_>, st: &mut MqttConn, p: Packet) -> Next {
        if !st.connected {
            return match p {
                Packet::Connect(c) => self.connect(conn, st, c),
                _ => Next::Violation("packet before CONNECT"),
            };
        }
        let b = &self.broker;
        match p {
            Packet::Publish(p) => return publish(b, conn, st, p),
            Packet::PubAck(pid) => {
                if let Some(session) = &st.session {
                    let mut ss = session.lock();
                    if let Some(q) = &mut ss.queues
                        && let Some(i) = q.inflight.iter().position(|(p, _)| *p == pid)
                    {
                        q.inflight.remove(i);
                    }
                    let pending = conn.pending_output();
                    let full = ss.drain(conn.out(), pending, &b.config, &b.metrics);
                    ss.notify_if(full);
                }
            }
            Packet::PubRel(pid) => {
                if let Some(e) = &mut st.extra {
                    e.qos2.remove(&pid);
                }
                Packet::PubComp(pid).encode(conn.out());
            }
            // The broker never sends QoS 2, so these acknowledge nothing.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe { pid, filters } => {
                let limits = &b.config.limits;
                let mut codes = Vec::with_capacity(filters.len());
                let mut granted = Vec::new();
                for (f, q) in filters {
                    let q = q.min(1);
                    if topic::valid_filter(&f, limits) {
                        // A client that sent an empty id gets its session now.
                        let session = st.session.get_or_insert_with(|| {
                            Session::new(Box::default(), Some(conn.handle()), true)
                        });
                        if b.subscribe(session, &f, q) {
                            codes.push(q);
                            granted.push((f, q));
                            continue;
                        }
                    }
                    codes.push(SUBACK_FAILURE);
                }
                Packet::SubAck { pid, codes }.encode(conn.out());
                if let Some(session) = &st.session {
                    for (f, q) in granted {
                        for msg in b.retained_for(&f) {
                            deliver_local(b, conn, session, msg, q);
                        }
                    }
                }
            }
            Packet::Unsubscribe { pid, filters } => {
                if let Some(session) = &st.session {
                    for f in &filters {
                        b.unsubscribe(session, f);
                    }
                }
                Packet::UnsubAck(pid).encode(conn.out());
            }
            Packet::PingReq => {
                Packet::PingResp.encode(conn.out());
                st.shed();
            }
            Packet::Disconnect => {
                if let Some(e) = &mut st.extra {
                    e.will = None;
                }
                return Next::Close;
            }
            Packet::Connect(_) => return Next::Violation("second CONNECT"),
            Packet::ConnAck { .. }
            | Packet::SubAck { .. }
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                return Next::Violation("server-to-client packet from a client");
            }
        }
        Next::Go
    }
}

/// A client's PUBLISH: validated, acknowledged by its QoS, fanned out.
fn publish(b: &Broker, conn: &mut Conn<'_>, st: &mut MqttConn, p: Publish) -> Next {
    if !topic::valid_name(&p.topic, &b.config.limits) {
        return Next::Violation("invalid topic name");
    }
    let pid = p.pid.unwrap_or(0);
    if p.qos == 2 && !st.extra().qos2.insert(pid) {
        // A resend of one already delivered: acknowledge only.
        Packet::PubRec(pid).encode(conn.out());
        return Next::Go;
    }
    let msg =
        Msg { topic: p.topic.into(), payload: p.payload.into(), qos: p.qos, retain: p.retain };
    b.publish(msg);
    match p.qos {
        1 => Packet::PubAck(pid).encode(conn.out()),
        2 => Packet::PubRec(pid).encode(conn.out()),
        _ => {}
    }
    Next::Go
}

/// Delivers a retained message on the subscriber's own loop, straight into its output.
fn deliver_local(b: &Broker, conn: &mut Conn<'_>, session: &Session, msg: Msg, sub_qos: u8) {
    let m = &b.metrics;
    let qos = msg.qos.min(sub_qos).min(1);
    let mut ss = session.lock();
    if qos == 0 {
        encode_publish(conn.out(), &msg.topic, &msg.payload, 0, 0, true, false);
        BrokerMetrics::inc(&m.sent);
        return;
    }
    let msg = Msg { qos: 1, ..msg };
    ss.enqueue(msg, &b.config, m);
    let pending = conn.pending_output();
    ss.drain(conn.out(), pending, &b.config, m);
}

impl EventHandler for MqttHandler {
    type State = MqttConn;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (MqttConn, Action) {
        conn.set_request_deadline(Some(self.broker.config.connect_timeout));
        let st = MqttConn { session: None, extra: None, epoch: 0, keepalive: 0, connected: false };
        (st, Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn, input: &[u8]) -> (usize, Action) {
        let limits = self.broker.config.limits;
        let mut used = 0;
        let mut packets = 0;
        let proto = &self.broker.proto;
        let lid = self.loop_id;
        let close = |packets| {
            proto.add_requests(lid, packets);
            (input.len(), Action::Close)
        };
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match decode(rest, &limits) {
                Ok(None) => break,
                Ok(Some((packet, n))) => {
                    used += n;
                    packets += 1;
                    match self.packet(conn, st, packet) {
                        Next::Go => {}
                        Next::Close => return close(packets),
                        Next::Violation(why) => {
                            debug!("mqtt: closing {:?}: {why}", conn.id());
                            BrokerMetrics::inc(&self.broker.metrics.protocol_errors);
                            proto.add_error("protocol_violation");
                            return close(packets);
                        }
                    }
                }
                Err(e) => {
                    debug!("mqtt: closing {:?}: {e}", conn.id());
                    BrokerMetrics::inc(&self.broker.metrics.protocol_errors);
                    proto.add_error(e.kind());
                    return close(packets);
                }
            }
        }
        proto.add_requests(lid, packets);
        if st.connected && st.keepalive > 0 {
            conn.set_request_deadline(keepalive_deadline(st.keepalive));
        }
        (used, Action::None)
    }

    /// A takeover: the session now belongs to another connection.
    fn woken(&mut self, _conn: &mut Conn<'_>, st: &mut MqttConn) -> Action {
        match &st.session {
            Some(s) if !s.lock().owned_by(st.epoch) => Action::Close,
            _ => Action::None,
        }
    }

    /// Keepalive (1.5 × the client's) or CONNECT timeout: close; the will goes out.
    fn timeout(&mut self, _conn: &mut Conn<'_>, _st: &mut MqttConn) -> Action {
        BrokerMetrics::inc(&self.broker.metrics.keepalive_expired);
        Action::Close
    }

    fn writable(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn) -> Action {
        let Some(session) = &st.session else { return Action::None };
        let b = &self.broker;
        let mut ss = session.lock();
        if !ss.owned_by(st.epoch) {
            return Action::None;
        }
        ss.set(NOTIFY_PENDING, false);
        let pending = conn.pending_output();
        let full = ss.drain(conn.out(), pending, &b.config, &b.metrics);
        ss.notify_if(full);
        Action::None
    }

    fn closed(&mut self, st: MqttConn, reason: CloseReason) {
        if !st.connected {
            return;
        }
        let b = &self.broker;
        BrokerMetrics::gauge(&b.metrics.clients, -1);
        // No wills on a server shutdown: every subscriber is being closed too.
        if let Some(will) = st.extra.and_then(|e| e.will)
            && !matches!(reason, CloseReason::Shutdown)
        {
            b.publish(will);
        }
        let Some(session) = st.session else {
            debug!("mqtt: client without id closed: {reason:?}");
            BrokerMetrics::gauge(&b.metrics.sessions, -1);
            return;
        };
        debug!("mqtt: client {:?} closed: {reason:?}", session.client_id());
        let mut ss = session.lock();
        if !ss.owned_by(st.epoch) {
            return;
        }
        ss.owner = None;
        ss.set(NOTIFY_PENDING, false);
        if !ss.has(CLEAN) {
            return;
        }
        ss.set(ENDED, true);
        let subs = std::mem::take(&mut ss.subs);
        drop(ss);
        if session.client_id.is_empty() {
            BrokerMetrics::gauge(&b.metrics.sessions, -1);
        } else {
            let mut sessions = b.sessions();
            if sessions.get(session.client_id()).is_some_and(|s| Arc::ptr_eq(&s.0, &session)) {
                sessions.remove(session.client_id());
                BrokerMetrics::gauge(&b.metrics.sessions, -1);
            }
        }
        b.unsubscribe_all(session.key(), subs.split_terminator('\0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection record and the session stay as small as their doc comments
    /// say (an idle client costs the reactor's record plus these).
    #[test]
    fn per_connection_sizes() {
        assert!(size_of::<MqttConn>() <= 24, "MqttConn is {} bytes", size_of::<MqttConn>());
        assert!(size_of::<Extra>() <= 88, "Extra is {} bytes", size_of::<Extra>());
        assert!(size_of::<Session>() <= 88, "Session is {} bytes", size_of::<Session>());
        assert!(size_of::<super::super::Queues>() <= 64);
    }
}
