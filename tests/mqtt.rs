//! The MQTT broker (`--proto mqtt`) over loopback: a real client crate (`rumqttc`), raw
//! packets built with evloop's own codec (for exact control: kills, malformed bytes,
//! silence), and `mosquitto_pub`/`mosquitto_sub` where Debian's `mosquitto-clients` is
//! installed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::child::{Kid, wait_status};
use evloop::broker::{BrokerMetrics, MqttConfig};
use evloop::proto::mqtt::{Connect, Limits, Packet, Publish, Will, decode};
use evloop::reactor::Config;
use evloop::serve::mqtt::{MqttServer, start};
use evloop::serve::{Engine, Settings};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

const WAIT: Duration = Duration::from_secs(5);

fn broker_with(loops: usize, config: MqttConfig, high_watermark: Option<usize>) -> MqttServer {
    let mut c = Config::new().listen("127.0.0.1:0").expect("address").loops(loops);
    if let Some(h) = high_watermark {
        c = c.watermarks(h / 4, h);
    }
    start(config, &Settings::from(c)).expect("broker starts")
}

fn broker(loops: usize) -> MqttServer {
    broker_with(loops, MqttConfig::default(), None)
}

fn addr(s: &MqttServer) -> SocketAddr {
    s.local_addrs()[0]
}

/// A client speaking raw packets.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

fn connect_packet(id: &str, clean: bool, keep_alive: u16, will: Option<Will>) -> Packet {
    Packet::Connect(Connect {
        protocol: "MQTT".into(),
        level: 4,
        clean_session: clean,
        keep_alive,
        client_id: id.into(),
        will,
        username: None,
        password: None,
    })
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Raw { s, buf: Vec::new() }
    }

    /// Connects and returns the CONNACK's (session_present, code).
    fn connect_with(addr: SocketAddr, p: Packet) -> (Raw, bool, u8) {
        let mut r = Raw::open(addr);
        r.send(&p);
        match r.recv(WAIT) {
            Some(Packet::ConnAck { session_present, code }) => (r, session_present, code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn connect(addr: SocketAddr, id: &str, clean: bool) -> Raw {
        let (r, _, code) = Raw::connect_with(addr, connect_packet(id, clean, 0, None));
        assert_eq!(code, 0);
        r
    }

    fn send(&mut self, p: &Packet) {
        let mut out = Vec::new();
        p.encode(&mut out);
        self.s.write_all(&out).expect("write");
    }

    fn send_raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    fn recv(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        let limits = Limits { max_packet: 1 << 24, ..Limits::default() };
        loop {
            if let Ok(Some((p, n))) = decode(&self.buf, &limits) {
                self.buf.drain(..n);
                return Some(p);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The next PUBLISH, skipping other packets.
    fn publish(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if let Packet::Publish(p) = self.recv(left)? {
                return Some(p);
            }
        }
    }

    fn subscribe(&mut self, filter: &str, qos: u8) {
        self.send(&Packet::Subscribe { pid: 1, filters: vec![(filter.into(), qos)] });
        match self.recv(WAIT) {
            Some(Packet::SubAck { pid: 1, codes }) => assert_eq!(codes, vec![qos.min(1)]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn pub_qos0(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain,
            topic: topic.into(),
            pid: None,
            payload: payload.to_vec(),
        }));
    }

    /// True when the server closes the connection within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let _ = self.s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// A rumqttc client whose event loop runs on a thread; incoming PUBLISHes (and SUBACKs,
/// PUBACKs) come out of the returned channel.
fn rumqtt(
    addr: SocketAddr,
    id: &str,
    f: impl FnOnce(&mut MqttOptions),
) -> (Client, mpsc::Receiver<Incoming>) {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    f(&mut o);
    let (client, mut conn) = Client::new(o, 1000);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(i)) => {
                    if tx.send(i).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

fn wait_for(rx: &mpsc::Receiver<Incoming>, pred: impl Fn(&Incoming) -> bool) -> Incoming {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.checked_duration_since(Instant::now()).expect("timed out waiting");
        let i = rx.recv_timeout(left).expect("event");
        if pred(&i) {
            return i;
        }
    }
}

fn publishes(rx: &mpsc::Receiver<Incoming>, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Incoming::Publish(p) = wait_for(rx, |i| matches!(i, Incoming::Publish(_))) {
            got.push((p.topic.clone(), p.payload.to_vec()));
        }
    }
    got
}

#[test]
fn pubsub_across_loops_with_wildcards() {
    let srv = broker(3);
    let a = addr(&srv);
    // Consecutive connections land on different loops (round-robin acceptor).
    let (s1, r1) = rumqtt(a, "sub-plus", |_| {});
    s1.subscribe("sensors/+/temp", QoS::AtMostOnce).expect("subscribe");
    wait_for(&r1, |i| matches!(i, Incoming::SubAck(_)));
    let (s2, r2) = rumqtt(a, "sub-hash", |_| {});
    s2.subscribe("#", QoS::AtMostOnce).expect("subscribe");
    wait_for(&r2, |i| matches!(i, Incoming::SubAck(_)));
    let (s3, r3) = rumqtt(a, "sub-sys", |_| {});
    s3.subscribe("$SYS/#", QoS::AtMostOnce).expect("subscribe");
    wait_for(&r3, |i| matches!(i, Incoming::SubAck(_)));
    let (p, rp) = rumqtt(a, "pub", |_| {});
    wait_for(&rp, |i| matches!(i, Incoming::ConnAck(_)));
    p.publish("$SYS/uptime", QoS::AtMostOnce, false, "1").expect("publish");
    for i in 0..100 {
        p.publish(format!("sensors/{}/temp", i % 3), QoS::AtMostOnce, false, i.to_string())
            .expect("publish");
    }
    p.publish("sensors/x/humidity", QoS::AtMostOnce, false, "h").expect("publish");
    let got1 = publishes(&r1, 100);
    let want: Vec<Vec<u8>> = (0..100).map(|i: i32| i.to_string().into_bytes()).collect();
    assert_eq!(got1.iter().map(|g| g.1.clone()).collect::<Vec<_>>(), want, "order per publisher");
    let got2 = publishes(&r2, 101);
    assert!(got2.iter().all(|(t, _)| !t.starts_with('$')), "# does not match $-topics");
    assert_eq!(got2[100].0, "sensors/x/humidity");
    let got3 = publishes(&r3, 1);
    assert_eq!(got3[0].0, "$SYS/uptime");
    let m = srv.broker().metrics();
    assert!(BrokerMetrics::level(&m.clients) >= 4);
    assert!(BrokerMetrics::level(&m.subscriptions) >= 3);
    let text = srv.render_metrics();
    assert!(text.contains("evloop_mqtt_clients_connected"), "{text}");
    assert!(text.contains("evloop_mqtt_messages_sent_total"), "{text}");
    // Packets are counted per loop; more than one loop handled some.
    let per_loop = srv.broker().proto_metrics().requests_per_loop();
    assert_eq!(per_loop.len(), 3);
    assert!(per_loop.iter().filter(|&&n| n > 0).count() >= 2, "{per_loop:?}");
    srv.shutdown().expect("shutdown");
}

#[test]
fn qos1_acknowledged_and_redelivered_to_persistent_session() {
    let srv = broker(2);
    let a = addr(&srv);
    // A persistent subscriber that goes away.
    let mut sub = Raw::connect(a, "persist", false);
    sub.subscribe("q/#", 1);
    sub.send(&Packet::Disconnect);
    assert!(sub.closed_within(WAIT));
    // QoS 1 publishes are acknowledged (rumqttc sees PUBACKs).
    let (p, rp) = rumqtt(a, "q-pub", |_| {});
    for i in 0..3 {
        p.publish("q/a", QoS::AtLeastOnce, false, format!("m{i}")).expect("publish");
    }
    for _ in 0..3 {
        wait_for(&rp, |i| matches!(i, Incoming::PubAck(_)));
    }
    // Back: session present, the three queued in order.
    let (mut sub, present, code) = Raw::connect_with(a, connect_packet("persist", false, 0, None));
    assert_eq!((present, code), (true, 0));
    let mut pids = Vec::new();
    for i in 0..3 {
        let m = sub.publish(WAIT).expect("queued message");
        assert_eq!((m.qos, m.payload), (1, format!("m{i}").into_bytes()));
        pids.push(m.pid.expect("pid"));
    }
    // Not acknowledged: dropped connection, reconnect, resent with DUP.
    drop(sub);
    thread::sleep(Duration::from_millis(200));
    let (mut sub, present, _) = Raw::connect_with(a, connect_packet("persist", false, 0, None));
    assert!(present);
    for (i, pid) in pids.iter().enumerate() {
        let m = sub.publish(WAIT).expect("redelivered");
        assert!(m.dup, "redelivery carries DUP");
        assert_eq!((m.pid, m.payload), (Some(*pid), format!("m{i}").into_bytes()));
        sub.send(&Packet::PubAck(*pid));
    }
    // A clean session discards it all.
    sub.send(&Packet::Disconnect);
    let (_sub, present, _) = Raw::connect_with(a, connect_packet("persist", true, 0, None));
    assert!(!present);
    srv.shutdown().expect("shutdown");
}

#[test]
fn retained_delivered_to_late_subscriber_replaced_and_cleared() {
    let srv = broker(2);
    let a = addr(&srv);
    let mut p = Raw::connect(a, "ret-pub", true);
    p.pub_qos0("home/door", b"open", true);
    p.pub_qos0("home/door", b"closed", true);
    p.pub_qos0("home/light", b"on", true);
    p.send(&Packet::PingReq);
    assert_eq!(p.recv(WAIT), Some(Packet::PingResp));
    let mut s = Raw::connect(a, "ret-sub", true);
    s.subscribe("home/door", 0);
    let m = s.publish(WAIT).expect("retained");
    assert!(m.retain);
    assert_eq!(m.payload, b"closed");
    // Live messages to existing subscribers carry retain = 0.
    p.pub_qos0("home/door", b"ajar", true);
    let m = s.publish(WAIT).expect("live");
    assert!(!m.retain);
    // Cleared by an empty retained publish.
    p.pub_qos0("home/door", b"", true);
    p.send(&Packet::PingReq);
    assert_eq!(p.recv(WAIT), Some(Packet::PingResp));
    let mut late = Raw::connect(a, "ret-late", true);
    late.subscribe("home/#", 0);
    let m = late.publish(WAIT).expect("light");
    assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("home/light", &b"on"[..]));
    assert!(late.publish(Duration::from_millis(300)).is_none(), "door was cleared");
    assert_eq!(BrokerMetrics::level(&srv.broker().metrics().retained), 1);
    srv.shutdown().expect("shutdown");
}

fn will(topic: &str, payload: &[u8]) -> Option<Will> {
    Some(Will { topic: topic.into(), payload: payload.to_vec(), qos: 0, retain: false })
}

#[test]
fn will_sent_on_killed_client_and_not_on_disconnect() {
    let srv = broker(2);
    let a = addr(&srv);
    let mut watcher = Raw::connect(a, "watcher", true);
    watcher.subscribe("status/#", 0);
    let (polite, _, _) =
        Raw::connect_with(a, connect_packet("polite", true, 0, will("status/polite", b"gone")));
    let mut polite = polite;
    polite.send(&Packet::Disconnect);
    assert!(polite.closed_within(WAIT));
    let (killed, _, _) =
        Raw::connect_with(a, connect_packet("killed", true, 0, will("status/killed", b"lost")));
    drop(killed);
    let m = watcher.publish(WAIT).expect("will");
    assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("status/killed", &b"lost"[..]));
    assert!(watcher.publish(Duration::from_millis(300)).is_none(), "no will after DISCONNECT");
    srv.shutdown().expect("shutdown");
}

#[test]
fn keepalive_expiry_closes_and_publishes_the_will() {
    let srv = broker(2);
    let a = addr(&srv);
    let mut watcher = Raw::connect(a, "ka-watcher", true);
    watcher.subscribe("ka/#", 0);
    let (mut quiet, _, code) =
        Raw::connect_with(a, connect_packet("ka-quiet", true, 1, will("ka/quiet", b"expired")));
    assert_eq!(code, 0);
    let t = Instant::now();
    assert!(quiet.closed_within(Duration::from_secs(4)), "closed after 1.5 x keepalive");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1300), "not before 1.5 x keepalive: {took:?}");
    let m = watcher.publish(WAIT).expect("will");
    assert_eq!(m.payload, b"expired");
    // A client that pings in time stays.
    let (mut live, _, _) = Raw::connect_with(a, connect_packet("ka-live", true, 1, None));
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(600));
        live.send(&Packet::PingReq);
        assert_eq!(live.recv(WAIT), Some(Packet::PingResp));
    }
    assert!(BrokerMetrics::get(&srv.broker().metrics().keepalive_expired) >= 1);
    srv.shutdown().expect("shutdown");
}

#[test]
fn takeover_by_client_id_closes_the_old_connection() {
    let srv = broker(3);
    let a = addr(&srv);
    let mut old = Raw::connect(a, "device-7", true);
    old.subscribe("cmd/7", 0);
    let mut new = Raw::connect(a, "device-7", true);
    assert!(old.closed_within(WAIT), "old connection closed");
    new.subscribe("cmd/7", 0);
    let mut p = Raw::connect(a, "cmd-pub", true);
    p.pub_qos0("cmd/7", b"reboot", false);
    assert_eq!(new.publish(WAIT).expect("to new").payload, b"reboot");
    assert!(BrokerMetrics::get(&srv.broker().metrics().takeovers) >= 1);
    // rumqttc: the same through a client crate.
    let (_c1, r1) = rumqtt(a, "twin", |_| {});
    wait_for(&r1, |i| matches!(i, Incoming::ConnAck(_)));
    let (mut c2, _, _) = Raw::connect_with(a, connect_packet("twin", true, 0, None));
    c2.send(&Packet::PingReq);
    assert_eq!(c2.recv(WAIT), Some(Packet::PingResp));
    srv.shutdown().expect("shutdown");
}

#[test]
fn malformed_packets_close_without_disturbing_other_clients() {
    let config = MqttConfig {
        limits: Limits { max_packet: 4096, ..Limits::default() },
        ..MqttConfig::default()
    };
    let srv = broker_with(2, config, None);
    let a = addr(&srv);
    let mut bystander = Raw::connect(a, "bystander", true);
    bystander.subscribe("ok", 0);
    let mut p = Raw::connect(a, "ok-pub", true);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("bad remaining length", vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], true),
        ("reserved flags on SUBSCRIBE", vec![0x80, 6, 0, 1, 0, 1, b'a', 0], true),
        ("reserved type 0", vec![0x00, 0], true),
        ("PUBLISH qos 3", vec![0x36, 5, 0, 1, b'a', 0, 1], true),
        ("packet over --max-packet", vec![0x30, 0x80, 0x80, 0x01], true),
        ("wildcard in topic name", vec![0x30, 3, 0, 1, b'#'], true),
        ("PUBLISH before CONNECT", vec![0x30, 3, 0, 1, b'a'], false),
        ("PINGREQ before CONNECT", vec![0xc0, 0], false),
        ("bad protocol name", vec![0x10, 8, 0, 2, b'X', b'Y', 4, 2, 0, 0], false),
    ];
    for (name, bytes, connected) in cases {
        let mut bad =
            if connected { Raw::connect(a, &format!("bad-{name}"), true) } else { Raw::open(a) };
        bad.send_raw(&bytes);
        assert!(bad.closed_within(WAIT), "{name}: closed");
        p.pub_qos0("ok", name.as_bytes(), false);
        assert_eq!(
            bystander.publish(WAIT).expect("bystander still served").payload,
            name.as_bytes()
        );
    }
    // An unsupported protocol level gets CONNACK 1.
    let mut c = connect_packet("lvl", true, 0, None);
    if let Packet::Connect(ref mut c) = c {
        c.level = 5;
    }
    let (_r, _, code) = Raw::connect_with(a, c);
    assert_eq!(code, 1);
    // An empty client id: assigned with a clean session, refused (2) without.
    let (_r, _, code) = Raw::connect_with(a, connect_packet("", true, 0, None));
    assert_eq!(code, 0);
    let (_r, _, code) = Raw::connect_with(a, connect_packet("", false, 0, None));
    assert_eq!(code, 2);
    assert!(BrokerMetrics::get(&srv.broker().metrics().protocol_errors) >= 9);
    srv.shutdown().expect("shutdown");
}

#[test]
fn slow_subscriber_keeps_queued_bytes_bounded() {
    let config = MqttConfig { max_queued: 100, ..MqttConfig::default() };
    let srv = broker_with(2, config, Some(64 * 1024));
    let a = addr(&srv);
    // Two subscribers that never read: QoS 0 and QoS 1.
    let mut s0 = Raw::connect(a, "slow0", true);
    s0.subscribe("flood", 0);
    let mut s1 = Raw::connect(a, "slow1", true);
    s1.subscribe("flood", 1);
    let mut p = Raw::connect(a, "flooder", true);
    let payload = vec![b'x'; 16 * 1024];
    let n = 3000; // 48 MiB per subscriber
    for i in 0..n {
        // QoS 1: the QoS 0 subscriber gets QoS 0, the other QoS 1.
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "flood".into(),
            pid: Some(i as u16 + 1),
            payload: payload.clone(),
        }));
    }
    for _ in 0..n {
        assert!(matches!(p.recv(Duration::from_secs(30)), Some(Packet::PubAck(_))));
    }
    let m = srv.broker().metrics();
    let sent = BrokerMetrics::get(&m.sent);
    let dropped = BrokerMetrics::get(&m.dropped);
    // What was passed on is bounded by the watermark, the kernel's socket buffers, the
    // in-flight window and the queue bound; the rest was dropped and counted.
    assert!(sent < n as u64, "sent {sent} of {}", 2 * n);
    assert_eq!(sent + dropped + 100, 2 * n as u64, "sent {sent}, dropped {dropped}, 100 queued");
    // Both are still connected and served once they read.
    drop(s0);
    let mut got = 0;
    while s1.publish(Duration::from_millis(500)).is_some() {
        got += 1;
    }
    assert!(got > 0);
    srv.shutdown().expect("shutdown");
}

#[test]
fn qos2_publish_answered_by_the_spec_and_mqtt_3_1_accepted() {
    let srv = broker(2);
    let a = addr(&srv);
    let mut old = Packet::Connect(Connect {
        protocol: "MQIsdp".into(),
        level: 3,
        clean_session: true,
        keep_alive: 0,
        client_id: "v31-sub".into(),
        will: None,
        username: Some("user".into()),
        password: Some(b"secret".to_vec()),
    });
    let (mut sub, _, code) = Raw::connect_with(a, old.clone());
    assert_eq!(code, 0, "MQTT 3.1 accepted");
    sub.subscribe("q2", 2); // granted 1
    let mut p = Raw::connect(a, "q2-pub", true);
    let q2 = |dup| {
        Packet::Publish(Publish {
            dup,
            qos: 2,
            retain: false,
            topic: "q2".into(),
            pid: Some(9),
            payload: b"once".to_vec(),
        })
    };
    p.send(&q2(false));
    assert_eq!(p.recv(WAIT), Some(Packet::PubRec(9)));
    p.send(&q2(true));
    assert_eq!(p.recv(WAIT), Some(Packet::PubRec(9)));
    p.send(&Packet::PubRel(9));
    assert_eq!(p.recv(WAIT), Some(Packet::PubComp(9)));
    let m = sub.publish(WAIT).expect("delivered");
    assert_eq!((m.qos, m.payload.as_slice()), (1, &b"once"[..]));
    sub.send(&Packet::PubAck(m.pid.expect("pid")));
    assert!(sub.publish(Duration::from_millis(300)).is_none(), "delivered once");
    // 3.1 refuses client ids over 23 characters.
    if let Packet::Connect(c) = &mut old {
        c.client_id = "x".repeat(24);
    }
    let (_r, _, code) = Raw::connect_with(a, old);
    assert_eq!(code, 2);
    srv.shutdown().expect("shutdown");
}

#[test]
fn unsubscribe_stops_delivery_and_clean_sessions_leave_nothing_behind() {
    let srv = broker(2);
    let a = addr(&srv);
    let mut s = Raw::connect(a, "unsub", true);
    s.subscribe("u/+", 0);
    s.subscribe("u/x", 1);
    let mut p = Raw::connect(a, "unsub-pub", true);
    p.pub_qos0("u/x", b"1", false);
    assert_eq!(s.publish(WAIT).expect("one copy").payload, b"1");
    s.send(&Packet::Unsubscribe { pid: 4, filters: vec!["u/+".into(), "u/x".into()] });
    assert_eq!(s.recv(WAIT), Some(Packet::UnsubAck(4)));
    p.pub_qos0("u/x", b"2", false);
    assert!(s.publish(Duration::from_millis(300)).is_none());
    let m = srv.broker().metrics();
    assert_eq!(BrokerMetrics::level(&m.subscriptions), 0);
    s.subscribe("u/#", 0);
    drop(s);
    drop(p);
    let deadline = Instant::now() + WAIT;
    while (BrokerMetrics::level(&m.clients) > 0 || BrokerMetrics::level(&m.subscriptions) > 0)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(BrokerMetrics::level(&m.clients), 0);
    assert_eq!(BrokerMetrics::level(&m.subscriptions), 0);
    assert_eq!(BrokerMetrics::level(&m.sessions), 0);
    assert_eq!(srv.broker().session_count(), 0);
    srv.shutdown().expect("shutdown");
}

#[test]
fn takeover_of_a_persistent_session_keeps_its_subscriptions() {
    let srv = broker(3);
    let a = addr(&srv);
    let mut old = Raw::connect(a, "keeper", false);
    old.subscribe("k/#", 1);
    let (mut new, present, code) = Raw::connect_with(a, connect_packet("keeper", false, 0, None));
    assert_eq!((present, code), (true, 0));
    assert!(old.closed_within(WAIT));
    let mut p = Raw::connect(a, "k-pub", true);
    p.pub_qos0("k/1", b"still subscribed", false);
    assert_eq!(new.publish(WAIT).expect("delivered").payload, b"still subscribed");
    srv.shutdown().expect("shutdown");
}

#[test]
fn std_engine_refuses_mqtt() {
    let err = evloop::serve::mqtt::run(
        Engine::Std,
        MqttConfig::default(),
        Settings::default(),
        Default::default(),
    )
    .expect_err("refused");
    assert!(err.contains("reactor"), "{err}");
}

fn have_mosquitto() -> bool {
    let ok = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !ok {
        println!(
            "SKIPPED: mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)"
        );
    } else {
        println!("ran with mosquitto-clients");
    }
    ok
}

#[test]
fn mosquitto_pubsub_and_retained_skipped_without_mosquitto_clients() {
    if !have_mosquitto() {
        return;
    }
    let srv = broker(3);
    let a = addr(&srv);
    let port = a.port().to_string();
    let pub_ = |args: &[&str]| {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .status()
            .expect("mosquitto_pub");
        assert!(st.success());
    };
    pub_(&["-t", "m/retained", "-m", "kept", "-r", "-q", "1"]);
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "m/#", "-v", "-C", "3", "-W", "5", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // Subscribed once the broker counts the subscription.
    let deadline = Instant::now() + WAIT;
    while BrokerMetrics::level(&srv.broker().metrics().subscriptions) < 1
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    pub_(&["-t", "m/a", "-m", "one"]);
    pub_(&["-t", "m/b/c", "-m", "two", "-q", "1"]);
    let out = sub.wait_with_output().expect("mosquitto_sub output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "m/retained kept\nm/a one\nm/b/c two\n");
    // A real client killed (SIGKILL): its will goes out.
    let mut watcher = Raw::connect(a, "m-watcher", true);
    watcher.subscribe("m/status/#", 0);
    let mut victim = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "x", "-i", "victim"])
        .args(["--will-topic", "m/status/victim", "--will-payload", "lost"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let deadline = Instant::now() + WAIT;
    while !srv.broker().is_connected("victim") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    victim.kill().expect("kill");
    let _ = victim.wait();
    let m = watcher.publish(WAIT).expect("will of the killed client");
    assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("m/status/victim", &b"lost"[..]));
    srv.shutdown().expect("shutdown");
}

#[test]
fn cli_serves_mqtt_and_refuses_other_engines() {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_evloop");
    let out = Command::new(bin)
        .args(["serve", "--proto", "mqtt", "--engine", "std", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run evloop");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reactor engine only"));
    let mut child = Command::new(bin)
        .args(["serve", "--proto", "mqtt", "--loops", "2", "--listen", "127.0.0.1:0"])
        .args(["--max-packet", "64K"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn evloop");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("evloop: serving mqtt on "))
        .expect("ready line");
    let a: SocketAddr = ready
        .trim_start_matches("evloop: serving mqtt on ")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("address in the ready line");
    let mut s = Raw::connect(a, "cli-sub", true);
    s.subscribe("t", 0);
    let mut p = Raw::connect(a, "cli-pub", true);
    p.pub_qos0("t", b"via the binary", false);
    assert_eq!(s.publish(WAIT).expect("delivered").payload, b"via the binary");
    // --max-packet: a 100 KiB publish closes the publisher.
    p.pub_qos0("t", &vec![0u8; 100 * 1024], false);
    assert!(p.closed_within(WAIT));
    // SAFETY: signalling our own child process by its id.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
}

// ---- the shared lifecycle (`evloop serve --proto mqtt` through `serve::run`) ----------

/// `evloop serve --proto mqtt ARGS` with `RUST_LOG=info`, `inherit` (when given) passed
/// as fd 3; returns the child (killed on drop), the ready line and the later stderr lines.
fn spawn_mqtt(
    args: &[&str],
    inherit: Option<std::os::fd::RawFd>,
) -> (Kid, String, mpsc::Receiver<String>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evloop"));
    cmd.args(["serve", "--proto", "mqtt", "--loops", "2"]).args(args);
    cmd.env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(fd) = inherit {
        // SAFETY: runs in the forked child before exec and calls only dup2(2) and
        // fcntl(2), which are async-signal-safe; `fd` is the test's open listener.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("spawn evloop");
    let stderr = child.stderr.take().expect("stderr");
    let child = Kid::new(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  server: {line}");
            let _ = tx.send(line);
        }
    });
    let mut before = Vec::new();
    let ready = loop {
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no ready line: {before:?}"));
        if line.starts_with("evloop: serving mqtt on ") {
            break line;
        }
        before.push(line);
    };
    // Lines logged before the ready line (the metrics address) come back first.
    let (tx2, rx2) = mpsc::channel();
    thread::spawn(move || {
        for l in before.into_iter().chain(rx.iter()) {
            if tx2.send(l).is_err() {
                break;
            }
        }
    });
    (child, ready, rx2)
}

/// The first address in a ready line (`tls://` dropped).
fn ready_addr(ready: &str) -> SocketAddr {
    ready
        .trim_start_matches("evloop: serving mqtt on ")
        .trim_start_matches("tls://")
        .split([' ', ','])
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address in the ready line: {ready}"))
}

/// SIGTERM, then the exit code (waiting up to [`common::LIMIT`], then killing it).
fn terminate(mut kid: Kid) -> Option<i32> {
    let mut child = kid.take();
    // SAFETY: signalling our own child process by its id.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_status(&mut child).code()
}

/// `GET /metrics` from `addr`: the body.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).expect("metrics response");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    got.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn cli_mqtt_serves_an_inherited_fd_listener() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = listener.local_addr().unwrap();
    let (child, ready, _rx) = spawn_mqtt(&["--listen", "fd:3"], Some(listener.as_raw_fd()));
    assert!(ready.contains("fd:3"), "{ready}");
    let mut s = Raw::connect(a, "fd-sub", true);
    s.subscribe("inherited/#", 0);
    let mut p = Raw::connect(a, "fd-pub", true);
    p.pub_qos0("inherited/x", b"through fd 3", false);
    assert_eq!(s.publish(WAIT).expect("delivered").payload, b"through fd 3");
    drop(listener);
    assert_eq!(terminate(child), Some(0));
}

#[test]
fn cli_mqtt_metrics_show_broker_and_reactor_series() {
    let (child, ready, rx) = spawn_mqtt(
        &["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--stats-interval", "1s"],
        None,
    );
    let a = ready_addr(&ready);
    let metrics = loop {
        let line = rx.recv_timeout(WAIT).expect("the metrics line");
        if let Some(rest) = line.split("metrics at http://").nth(1) {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    let mut s = Raw::connect(a, "m-sub", true);
    s.subscribe("m", 0);
    let mut p = Raw::connect(a, "m-pub", true);
    p.pub_qos0("m", b"counted", false);
    assert_eq!(s.publish(WAIT).expect("delivered").payload, b"counted");
    let body = scrape(&metrics);
    for series in [
        "evloop_mqtt_",
        "evloop_connections_open{loop=\"0\"}",
        "evloop_connections_open{loop=\"1\"}",
        "evloop_requests_total{proto=\"mqtt\",loop=\"0\"}",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    // The stats line of the shared lifecycle.
    let deadline = Instant::now() + WAIT;
    while !rx.recv_timeout(WAIT).expect("a stats line").contains("stats: ") {
        assert!(Instant::now() < deadline, "no stats line");
    }
    assert_eq!(terminate(child), Some(0));
}

#[cfg(feature = "tls")]
/// A PKI on disk for the TLS test: a CA and a server certificate for localhost.
fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem() + &ca.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, ca.der().to_vec())
}

#[cfg(feature = "tls")]
#[test]
fn cli_mqtt_over_tls_connect_and_connack() {
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
    let dir = std::env::temp_dir().join(format!("evloop-mqtt-tls-{}", std::process::id()));
    let (cert, key, ca) = tls_files(&dir);
    let (child, ready, _rx) = spawn_mqtt(
        &[
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(ready.starts_with("evloop: serving mqtt on tls://127.0.0.1:"), "{ready}");
    let a = ready_addr(&ready);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca)).unwrap();
    let config = ClientConfig::builder_with_provider(evloop::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let sock = TcpStream::connect(a).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let conn = ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let mut out = Vec::new();
    connect_packet("tls-client", true, 0, None).encode(&mut out);
    tls.write_all(&out).expect("CONNECT over TLS");
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).expect("CONNACK over TLS");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // PINGREQ, PINGRESP: the session goes on over TLS.
    tls.write_all(&[0xc0, 0]).unwrap();
    let mut pong = [0u8; 2];
    tls.read_exact(&mut pong).expect("PINGRESP over TLS");
    assert_eq!(pong, [0xd0, 0]);
    assert_eq!(terminate(child), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_mqtt_accept_proxy_takes_the_header_then_connect() {
    let (child, ready, _rx) = spawn_mqtt(&["--listen", "127.0.0.1:0", "--accept-proxy"], None);
    let a = ready_addr(&ready);
    let mut r = Raw::open(a);
    r.send_raw(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 1883\r\n");
    r.send(&connect_packet("proxied", true, 0, None));
    match r.recv(WAIT) {
        Some(Packet::ConnAck { code: 0, .. }) => {}
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Without the header, the CONNECT is not a PROXY header: closed.
    let mut bare = Raw::open(a);
    bare.send(&connect_packet("bare", true, 0, None));
    assert!(bare.closed_within(WAIT), "a connection without a PROXY header was served");
    assert_eq!(terminate(child), Some(0));
}

#[test]
fn cli_mqtt_refuses_capture_clearly() {
    let dir = std::env::temp_dir().join(format!("evloop-mqtt-cap-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["serve", "--proto", "mqtt", "--listen", "127.0.0.1:0", "--capture"])
        .arg(&dir)
        .output()
        .expect("run evloop");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--capture is not supported by --proto mqtt"), "{err}");
    assert!(!dir.exists(), "the refused capture created {}", dir.display());
}

/// Waits until `level` of the gauge `g` is `want` (or the deadline passes) and returns it.
fn gauge_settles(g: &std::sync::atomic::AtomicI64, want: i64) -> i64 {
    let deadline = Instant::now() + WAIT;
    while BrokerMetrics::level(g) != want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    BrokerMetrics::level(g)
}

#[test]
fn empty_client_ids_get_their_own_sessions_and_leave_nothing_behind() {
    let srv = broker(2);
    let a = addr(&srv);
    let m = srv.broker().metrics();
    let mut s1 = Raw::connect(a, "", true);
    let mut s2 = Raw::connect(a, "", true);
    let mut p = Raw::connect(a, "", true);
    // Three sessions, none taken over by another.
    assert_eq!(srv.broker().session_count(), 3);
    assert_eq!(BrokerMetrics::get(&m.takeovers), 0);
    s1.subscribe("anon/+", 1);
    s2.subscribe("anon/x", 0);
    // A SUBSCRIBE with only an invalid filter is refused and keeps nothing.
    p.send(&Packet::Subscribe { pid: 2, filters: vec![("anon/#/x".into(), 0)] });
    assert_eq!(p.recv(WAIT), Some(Packet::SubAck { pid: 2, codes: vec![0x80] }));
    assert_eq!(BrokerMetrics::level(&m.subscriptions), 2);
    p.pub_qos0("anon/x", b"zero", false);
    assert_eq!(s1.publish(WAIT).expect("s1 gets it").payload, b"zero");
    assert_eq!(s2.publish(WAIT).expect("s2 gets it").payload, b"zero");
    // QoS 1 to s1, acknowledged; after a PINGREQ (the idle client's queues are freed)
    // the next QoS 1 message still arrives with a fresh packet id.
    let q1 = |pid, payload: &[u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "anon/y".into(),
            pid: Some(pid),
            payload: payload.to_vec(),
        })
    };
    p.send(&q1(5, b"one"));
    assert_eq!(p.recv(WAIT), Some(Packet::PubAck(5)));
    let first = s1.publish(WAIT).expect("qos 1 delivered");
    assert_eq!((first.qos, first.payload.as_slice()), (1, &b"one"[..]));
    s1.send(&Packet::PubAck(first.pid.expect("pid")));
    s1.send(&Packet::PingReq);
    assert_eq!(s1.recv(WAIT), Some(Packet::PingResp));
    p.send(&q1(6, b"two"));
    assert_eq!(p.recv(WAIT), Some(Packet::PubAck(6)));
    let second = s1.publish(WAIT).expect("qos 1 delivered after PINGREQ");
    assert_eq!((second.qos, second.payload.as_slice()), (1, &b"two"[..]));
    assert_ne!(second.pid, first.pid, "packet ids keep counting");
    assert!(s2.publish(Duration::from_millis(200)).is_none(), "s2 is not on anon/y");
    drop((s1, s2, p));
    assert_eq!(gauge_settles(&m.clients, 0), 0);
    assert_eq!(BrokerMetrics::level(&m.subscriptions), 0);
    assert_eq!(BrokerMetrics::level(&m.sessions), 0);
    assert_eq!(srv.broker().session_count(), 0);
    srv.shutdown().expect("shutdown");
}

#[test]
fn max_sessions_counts_clients_without_an_id() {
    let config = MqttConfig { max_sessions: 2, ..MqttConfig::default() };
    let srv = broker_with(1, config, None);
    let a = addr(&srv);
    let anon = Raw::connect(a, "", true);
    let _named = Raw::connect(a, "named", true);
    for id in ["", "other"] {
        let (_r, _, code) = Raw::connect_with(a, connect_packet(id, true, 0, None));
        assert_eq!(code, 3, "{id:?} over max_sessions");
    }
    // A known id takes its session over even when full.
    let (_again, _, code) = Raw::connect_with(a, connect_packet("named", true, 0, None));
    assert_eq!(code, 0);
    drop(anon);
    assert_eq!(gauge_settles(&srv.broker().metrics().sessions, 1), 1);
    let (_r, _, code) = Raw::connect_with(a, connect_packet("", true, 0, None));
    assert_eq!(code, 0, "room again once the client without id left");
    srv.shutdown().expect("shutdown");
}

#[test]
fn will_and_qos2_state_survive_a_pingreq() {
    let srv = broker(1);
    let a = addr(&srv);
    let mut watcher = Raw::connect(a, "w-watch", true);
    watcher.subscribe("w/#", 0);
    let (mut c, _, code) =
        Raw::connect_with(a, connect_packet("", true, 0, will("w/gone", b"bye")));
    assert_eq!(code, 0);
    let q2 = |dup| {
        Packet::Publish(Publish {
            dup,
            qos: 2,
            retain: false,
            topic: "w/q2".into(),
            pid: Some(3),
            payload: b"x".to_vec(),
        })
    };
    c.send(&q2(false));
    assert_eq!(c.recv(WAIT), Some(Packet::PubRec(3)));
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(WAIT), Some(Packet::PingResp));
    // Still awaiting PUBREL: the resend is not delivered again.
    c.send(&q2(true));
    assert_eq!(c.recv(WAIT), Some(Packet::PubRec(3)));
    c.send(&Packet::PubRel(3));
    assert_eq!(c.recv(WAIT), Some(Packet::PubComp(3)));
    assert_eq!(watcher.publish(WAIT).expect("delivered once").topic, "w/q2");
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(WAIT), Some(Packet::PingResp));
    drop(c);
    let m = watcher.publish(WAIT).expect("the will, kept across PINGREQs");
    assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("w/gone", &b"bye"[..]));
    assert!(watcher.publish(Duration::from_millis(200)).is_none());
    srv.shutdown().expect("shutdown");
}
