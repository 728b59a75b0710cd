//! [`MqttHandler`]: the reactor [`EventHandler`] of the broker, one per loop. It decodes
//! packets from a connection's input, answers on the connection's own output, and hands
//! publishes to the shared [`Broker`] for fan-out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use log::debug;

use super::{Broker, BrokerMetrics, Msg, Owner, Session};
use crate::proto::mqtt::{
    Connect, Packet, Publish, SUBACK_FAILURE, connack, decode, encode_publish, topic,
};
use crate::reactor::{Action, CloseReason, Conn, ConnId, EventHandler};

/// The broker's handler for one loop.
pub struct MqttHandler {
    broker: Arc<Broker>,
    loop_id: usize,
    assigned: u64,
}

impl MqttHandler {
    /// A handler for loop `loop_id` of `broker`.
    pub fn new(broker: Arc<Broker>, loop_id: usize) -> Self {
        MqttHandler { broker, loop_id, assigned: 0 }
    }
}

/// A connection's state: before CONNECT, or its live session.
pub struct MqttConn {
    id: ConnId,
    live: Option<Box<Live>>,
}

/// A connected client.
struct Live {
    session: Arc<Session>,
    will: Option<Msg>,
    keepalive: Option<Duration>,
    /// QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
}

/// What handling one packet asks for.
enum Next {
    Go,
    Close,
    /// A protocol violation: counted, then a close (the will goes out).
    Violation(&'static str),
}

impl MqttHandler {
    fn connect(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn, c: Connect) -> Next {
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
        let mut client_id = c.client_id;
        if client_id.is_empty() {
            if !c.clean_session || c.level == 3 {
                return refuse(conn, connack::ID_REJECTED);
            }
            self.assigned += 1;
            client_id = format!("evloop-{}-{}-{}", self.loop_id, self.assigned, st.id_tag());
        } else if c.level == 3 && client_id.len() > 23 {
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
        let owner = Owner { id: conn.id(), handle: conn.handle() };
        let client_id: Arc<str> = client_id.into();
        let m = &b.metrics;
        let mut sessions = b.sessions();
        let existing = sessions.get(&client_id).cloned();
        if existing.is_none() && sessions.len() >= b.config.max_sessions {
            drop(sessions);
            return refuse(conn, connack::UNAVAILABLE);
        }
        let pending = conn.pending_output();
        let (session, present) = match existing {
            Some(s) => {
                let mut ss = s.lock();
                if let Some(old) = ss.owner.take() {
                    BrokerMetrics::inc(&m.takeovers);
                    let _ = old.handle.wake();
                }
                if !c.clean_session && !ss.clean {
                    ss.owner = Some(owner);
                    ss.notify_pending = false;
                    Packet::ConnAck { session_present: true, code: connack::ACCEPTED }
                        .encode(conn.out());
                    // Resend what was in flight, then what queued while away.
                    let out = conn.out();
                    for (pid, msg) in &ss.inflight {
                        encode_publish(out, &msg.topic, &msg.payload, 1, *pid, msg.retain, true);
                        BrokerMetrics::inc(&m.sent);
                    }
                    if ss.drain(out, pending, &b.config, m)
                        && let Some(o) = &ss.owner
                        && o.handle.notify_writable().is_ok()
                    {
                        ss.notify_pending = true;
                    }
                    drop(ss);
                    drop(sessions);
                    (s, true)
                } else {
                    ss.ended = true;
                    let subs = std::mem::take(&mut ss.subs);
                    drop(ss);
                    let fresh = b.new_session(client_id.clone(), c.clean_session, owner);
                    sessions.insert(client_id.clone(), fresh.clone());
                    drop(sessions);
                    b.unsubscribe_all(s.id, subs);
                    (fresh, false)
                }
            }
            None => {
                let fresh = b.new_session(client_id.clone(), c.clean_session, owner);
                sessions.insert(client_id.clone(), fresh.clone());
                drop(sessions);
                BrokerMetrics::gauge(&m.sessions, 1);
                (fresh, false)
            }
        };
        if !present {
            Packet::ConnAck { session_present: false, code: connack::ACCEPTED }.encode(conn.out());
        }
        BrokerMetrics::gauge(&m.clients, 1);
        let keepalive =
            (c.keep_alive > 0).then(|| Duration::from_millis(u64::from(c.keep_alive) * 1500));
        conn.set_request_deadline(keepalive);
        st.live = Some(Box::new(Live { session, will, keepalive, qos2: HashSet::new() }));
        Next::Go
    }

    fn packet(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn, p: Packet) -> Next {
        let Some(live) = st.live.as_mut() else {
            return match p {
                Packet::Connect(c) => self.connect(conn, st, c),
                _ => Next::Violation("packet before CONNECT"),
            };
        };
        let b = &self.broker;
        match p {
            Packet::Publish(p) => return publish(b, conn, live, p),
            Packet::PubAck(pid) => {
                let mut ss = live.session.lock();
                if let Some(i) = ss.inflight.iter().position(|(p, _)| *p == pid) {
                    ss.inflight.remove(i);
                }
                let pending = conn.pending_output();
                if ss.drain(conn.out(), pending, &b.config, &b.metrics)
                    && !ss.notify_pending
                    && let Some(o) = &ss.owner
                    && o.handle.notify_writable().is_ok()
                {
                    ss.notify_pending = true;
                }
            }
            Packet::PubRel(pid) => {
                live.qos2.remove(&pid);
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
                    if topic::valid_filter(&f, limits) && b.subscribe(&live.session, &f, q) {
                        codes.push(q);
                        granted.push((f, q));
                    } else {
                        codes.push(SUBACK_FAILURE);
                    }
                }
                Packet::SubAck { pid, codes }.encode(conn.out());
                for (f, q) in granted {
                    for msg in b.retained_for(&f) {
                        deliver_local(b, conn, &live.session, msg, q);
                    }
                }
            }
            Packet::Unsubscribe { pid, filters } => {
                for f in &filters {
                    b.unsubscribe(&live.session, f);
                }
                Packet::UnsubAck(pid).encode(conn.out());
            }
            Packet::PingReq => Packet::PingResp.encode(conn.out()),
            Packet::Disconnect => {
                live.will = None;
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

impl MqttConn {
    /// A short tag that makes assigned client ids unique across loops and restarts of
    /// the counter.
    fn id_tag(&self) -> String {
        format!("{:?}", self.id).chars().filter(char::is_ascii_digit).collect()
    }
}

/// A client's PUBLISH: validated, acknowledged by its QoS, fanned out.
fn publish(b: &Broker, conn: &mut Conn<'_>, live: &mut Live, p: Publish) -> Next {
    if !topic::valid_name(&p.topic, &b.config.limits) {
        return Next::Violation("invalid topic name");
    }
    let pid = p.pid.unwrap_or(0);
    if p.qos == 2 && !live.qos2.insert(pid) {
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
        (MqttConn { id: conn.id(), live: None }, Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn, input: &[u8]) -> (usize, Action) {
        let limits = self.broker.config.limits;
        let mut used = 0;
        let mut packets = 0;
        let proto = self.broker.proto.clone();
        let lid = self.loop_id;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match decode(rest, &limits) {
                Ok(None) => break,
                Ok(Some((packet, n))) => {
                    used += n;
                    packets += 1;
                    match self.packet(conn, st, packet) {
                        Next::Go => {}
                        Next::Close => {
                            proto.add_requests(lid, packets);
                            return (input.len(), Action::Close);
                        }
                        Next::Violation(why) => {
                            debug!("mqtt: closing {:?}: {why}", st.id);
                            BrokerMetrics::inc(&self.broker.metrics.protocol_errors);
                            proto.add_error("protocol_violation");
                            proto.add_requests(lid, packets);
                            return (input.len(), Action::Close);
                        }
                    }
                }
                Err(e) => {
                    debug!("mqtt: closing {:?}: {e}", st.id);
                    BrokerMetrics::inc(&self.broker.metrics.protocol_errors);
                    proto.add_error(e.kind());
                    proto.add_requests(lid, packets);
                    return (input.len(), Action::Close);
                }
            }
        }
        proto.add_requests(lid, packets);
        if let Some(live) = &st.live
            && live.keepalive.is_some()
        {
            conn.set_request_deadline(live.keepalive);
        }
        (used, Action::None)
    }

    /// A takeover: the session now belongs to another connection.
    fn woken(&mut self, _conn: &mut Conn<'_>, st: &mut MqttConn) -> Action {
        match &st.live {
            Some(live) if live.session.lock().owner.as_ref().is_none_or(|o| o.id != st.id) => {
                Action::Close
            }
            _ => Action::None,
        }
    }

    /// Keepalive (1.5 × the client's) or CONNECT timeout: close; the will goes out.
    fn timeout(&mut self, _conn: &mut Conn<'_>, _st: &mut MqttConn) -> Action {
        BrokerMetrics::inc(&self.broker.metrics.keepalive_expired);
        Action::Close
    }

    fn writable(&mut self, conn: &mut Conn<'_>, st: &mut MqttConn) -> Action {
        let Some(live) = &st.live else { return Action::None };
        let b = &self.broker;
        let mut ss = live.session.lock();
        if ss.owner.as_ref().is_none_or(|o| o.id != st.id) {
            return Action::None;
        }
        ss.notify_pending = false;
        let pending = conn.pending_output();
        if ss.drain(conn.out(), pending, &b.config, &b.metrics)
            && let Some(o) = &ss.owner
            && o.handle.notify_writable().is_ok()
        {
            ss.notify_pending = true;
        }
        Action::None
    }

    fn closed(&mut self, st: MqttConn, reason: CloseReason) {
        let Some(live) = st.live else { return };
        debug!("mqtt: {:?} closed: {reason:?}", st.id);
        let b = &self.broker;
        BrokerMetrics::gauge(&b.metrics.clients, -1);
        // No wills on a server shutdown: every subscriber is being closed too.
        if let Some(will) = live.will
            && !matches!(reason, CloseReason::Shutdown)
        {
            b.publish(will);
        }
        let session = live.session;
        let mut ss = session.lock();
        if ss.owner.as_ref().is_none_or(|o| o.id != st.id) {
            return;
        }
        ss.owner = None;
        ss.notify_pending = false;
        if !ss.clean {
            return;
        }
        ss.ended = true;
        let subs = std::mem::take(&mut ss.subs);
        drop(ss);
        {
            let mut sessions = b.sessions();
            if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                sessions.remove(&session.client_id);
                BrokerMetrics::gauge(&b.metrics.sessions, -1);
            }
        }
        b.unsubscribe_all(session.id, subs);
    }
}
