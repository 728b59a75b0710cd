//! The PROXY protocol end to end over loopback (issue 12): `--accept-proxy` on the
//! reactor (v1 and v2 headers whole and byte by byte, LOCAL, TLVs; malformed, truncated
//! and slow headers closed with nothing reaching the protocol, counted), Redis
//! `CLIENT INFO`/`CLIENT LIST` showing the header's client, `evloop proxy --send-proxy`
//! in front of `serve --accept-proxy` keeping the client address, source-hash balancing
//! on the header's address, and HAProxy in front of two `evloop serve` processes
//! (skipped, saying why, when `haproxy` is not installed).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::child::{BIN, Kid};
use common::*;
use evloop::proto::proxy_header::{encode_v1, encode_v2, encode_v2_local, encode_v2_with_tlvs};
use evloop::proto::resp::{Redis, RespConfig};
use evloop::proxy::balance::Policy;
use evloop::proxy::health::HealthCheck;
use evloop::proxy::run::{ProxyConfig, start as start_proxy};
use evloop::proxy::send_proxy::SendProxy;
use evloop::reactor::Config;
use evloop::serve::{self, Engine, Served};

fn proxied_config(timeout: Duration) -> Config {
    let mut c = local_config(1);
    c.accept_proxy = true;
    c.proxy_header_timeout = timeout;
    c
}

fn redis_server(config: Config) -> Served {
    serve::start(Engine::Reactor, Redis::new(RespConfig::default()), config).expect("redis")
}

fn header_errors(s: &Served) -> u64 {
    s.reactor().expect("reactor").stats().total().proxy_header_errors
}

/// Sends an inline command and reads one bulk reply's payload (or a line reply).
fn query(s: &mut TcpStream, cmd: &str) -> String {
    send(s, format!("{cmd}\r\n").as_bytes());
    read_reply(s)
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut b).expect("reply byte");
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
}

fn read_reply(s: &mut TcpStream) -> String {
    let line = read_line(s);
    match line.strip_prefix('$') {
        Some(n) => match n.parse::<usize>() {
            Ok(n) => {
                let body = read_n(s, n + 2);
                String::from_utf8_lossy(&body[..n]).into_owned()
            }
            Err(_) => line,
        },
        None => line,
    }
}

/// The value of `field=` in a CLIENT INFO line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// Whether the server closed `s` without sending anything (a FIN, or a reset when
/// unread bytes were left in its socket).
fn closed_silently(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    }
}

#[test]
fn accept_proxy_v1_and_v2_whole_or_byte_by_byte_give_client_info_the_real_client() {
    let server = redis_server(proxied_config(Duration::from_secs(10)));
    let addr = server.local_addrs()[0];
    let dst: SocketAddr = "192.0.2.1:6379".parse().unwrap();
    let sources: [SocketAddr; 2] =
        ["203.0.113.7:40001".parse().unwrap(), "[2001:db8::5]:40002".parse().unwrap()];
    for src in &sources {
        for (version, split) in [(1, false), (1, true), (2, false), (2, true), (3, true)] {
            let header = match version {
                1 if src.is_ipv4() => encode_v1(*src, dst),
                1 => encode_v1(*src, "[2001:db8::1]:6379".parse().unwrap()),
                2 if src.is_ipv4() => encode_v2(*src, dst),
                2 => encode_v2(*src, "[2001:db8::1]:6379".parse().unwrap()),
                // v2 with TLVs (ALPN, authority): skipped.
                _ if src.is_ipv4() => encode_v2_with_tlvs(*src, dst, &[(1, b"h2"), (2, b"x.y")]),
                _ => encode_v2_with_tlvs(
                    *src,
                    "[2001:db8::1]:6379".parse().unwrap(),
                    &[(1, b"h2"), (2, b"x.y")],
                ),
            };
            let mut c = connect(addr);
            if split {
                for b in &header {
                    send(&mut c, &[*b]);
                    std::thread::sleep(Duration::from_millis(1));
                }
            } else {
                // Header and first command in one segment.
                let mut all = header.clone();
                all.extend_from_slice(b"PING\r\n");
                send(&mut c, &all);
                assert_eq!(read_reply(&mut c), "+PONG");
            }
            let info = query(&mut c, "CLIENT INFO");
            let want = format!("{}:{}", src.ip(), src.port());
            assert_eq!(field(&info, "addr"), want, "v{version} split={split}: {info}");
            assert_eq!(field(&info, "laddr"), format!("{}:{}", addr.ip(), addr.port()));
            assert_eq!(field(&info, "db"), "0");
            assert_eq!(field(&info, "cmd"), "client|info");
            assert!(field(&info, "fd").parse::<i64>().expect("fd") > 0, "{info}");
        }
    }
    assert_eq!(header_errors(&server), 0);
    server.shutdown().expect("shutdown");
}

#[test]
fn local_header_keeps_the_socket_peer_and_client_list_shows_every_client() {
    let server = redis_server(proxied_config(Duration::from_secs(10)));
    let addr = server.local_addrs()[0];
    let mut local = connect(addr);
    send(&mut local, &encode_v2_local());
    let own = local.local_addr().expect("addr");
    let info = query(&mut local, "CLIENT INFO");
    assert_eq!(field(&info, "addr"), format!("{}:{}", own.ip(), own.port()));

    let mut named = connect(addr);
    send(&mut named, &encode_v1("198.51.100.9:1234".parse().unwrap(), addr));
    assert_eq!(query(&mut named, "CLIENT SETNAME worker-1"), "+OK");
    assert_eq!(query(&mut named, "CLIENT GETNAME"), "worker-1");
    assert!(query(&mut named, "CLIENT ID").starts_with(':'));
    send(&mut named, b"SET k v\r\n");
    assert_eq!(read_reply(&mut named), "+OK");

    let list = query(&mut local, "CLIENT LIST");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let other = lines.iter().find(|l| l.contains("name=worker-1")).expect("named client");
    assert_eq!(field(other, "addr"), "198.51.100.9:1234");
    assert_eq!(field(other, "cmd"), "set");
    assert_eq!(field(other, "flags"), "N");
    assert!(field(other, "age").parse::<u64>().is_ok());
    assert!(field(other, "idle").parse::<u64>().is_ok());
    drop(named);
    wait_until("the closed client leaves CLIENT LIST", || {
        query(&mut local, "CLIENT LIST").lines().count() == 1
    });
    server.shutdown().expect("shutdown");
}

#[test]
fn missing_malformed_truncated_oversized_and_slow_headers_are_closed_and_counted() {
    let server = redis_server(proxied_config(Duration::from_millis(400)));
    let addr = server.local_addrs()[0];
    let protocol = server.proto_metrics().clone();
    // No header: a plain command is never answered.
    let mut c = connect(addr);
    send(&mut c, b"PING\r\n");
    assert!(closed_silently(&mut c));
    // Malformed v1.
    let mut c = connect(addr);
    send(&mut c, b"PROXY TCP4 1.2.3.4 nonsense\r\nPING\r\n");
    assert!(closed_silently(&mut c));
    // Oversized v2 (declared length over the cap).
    let mut c = connect(addr);
    let mut big = evloop::proto::proxy_header::V2_SIGNATURE.to_vec();
    big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    send(&mut c, &big);
    assert!(closed_silently(&mut c));
    // Truncated: half a header, then the end of input.
    let mut c = connect(addr);
    send(&mut c, b"PROXY TCP4 1.2.3.4 ");
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(closed_silently(&mut c));
    // Slow: half a header and silence, closed by the header timeout.
    let started = Instant::now();
    let mut c = connect(addr);
    send(&mut c, b"PROXY TCP4 1.2.3.4 5.6.7.8 ");
    assert!(closed_silently(&mut c));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    wait_until("5 header errors", || header_errors(&server) == 5);
    // Nothing reached the protocol: no session, no request, no protocol error.
    let stats = server.reactor().expect("reactor").stats().total();
    assert_eq!(stats.accepted, 0, "{stats:?}");
    assert_eq!(protocol.requests(), 0);
    // A good one still works.
    let mut ok = connect(addr);
    send(&mut ok, &encode_v1("10.0.0.1:1".parse().unwrap(), addr));
    assert_eq!(query(&mut ok, "PING"), "+PONG");
    server.shutdown().expect("shutdown");
}

#[test]
fn send_proxy_v1_and_v2_through_evloop_proxy_keep_the_client_address() {
    for version in [SendProxy::V1, SendProxy::V2] {
        let backend = redis_server(proxied_config(Duration::from_secs(10)));
        let cfg = ProxyConfig {
            backends: vec![backend.local_addrs()[0].to_string().parse().expect("spec")],
            check: HealthCheck::Off,
            send_proxy: Some(version),
            ..ProxyConfig::default()
        };
        let proxy = start_proxy(local_config(1).into(), cfg).expect("proxy");
        let mut c = connect(proxy.local_addrs()[0]);
        let me = c.local_addr().expect("addr");
        let info = query(&mut c, "CLIENT INFO");
        assert_eq!(field(&info, "addr"), format!("{}:{}", me.ip(), me.port()), "{version}");
        assert_eq!(query(&mut c, "PING"), "+PONG");
        assert_eq!(header_errors(&backend), 0);
        proxy.shutdown().expect("proxy shutdown");
        backend.shutdown().expect("backend shutdown");
    }
}

#[test]
fn source_hash_uses_the_headers_address() {
    let (a, b) = (redis_server(local_config(1)), redis_server(local_config(1)));
    let cfg = ProxyConfig {
        backends: [&a, &b]
            .iter()
            .map(|s| s.local_addrs()[0].to_string().parse().unwrap())
            .collect(),
        check: HealthCheck::Off,
        policy: Policy::SourceHash,
        ..ProxyConfig::default()
    };
    let mut settings: evloop::serve::Settings = local_config(1).into();
    settings.reactor.accept_proxy = true;
    let proxy = start_proxy(settings, cfg).expect("proxy");
    let paddr = proxy.local_addrs()[0];
    // Every socket comes from 127.0.0.1; the headers name 40 different hosts, each
    // twice (different ports): each host must land on one backend, and both backends
    // must get hosts.
    let mut landed = std::collections::HashMap::new();
    for round in 0..2u16 {
        for host in 0..40u8 {
            let src: SocketAddr = format!("10.9.{host}.{}:{}", host, 1000 + round).parse().unwrap();
            let mut c = connect(paddr);
            send(&mut c, &encode_v1(src, paddr));
            let id = query(&mut c, "CLIENT INFO");
            let backend_port = field(&id, "laddr").rsplit(':').next().unwrap_or("").to_string();
            if let Some(prev) = landed.insert(host, backend_port.clone()) {
                assert_eq!(prev, backend_port, "host {host} moved");
            }
        }
    }
    let distinct: std::collections::HashSet<_> = landed.values().collect();
    assert_eq!(distinct.len(), 2, "{landed:?}");
    proxy.shutdown().expect("shutdown");
    a.shutdown().expect("a");
    b.shutdown().expect("b");
}

// ---- HAProxy in front of two `evloop serve` processes ----

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn wait_for_port(port: u16) {
    let end = Instant::now() + LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn haproxy() -> Option<String> {
    let out = Command::new("sh").args(["-c", "command -v haproxy"]).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

#[test]
fn haproxy_send_proxy_v2_to_two_evloop_serves_skipped_without_haproxy() {
    let Some(haproxy) = haproxy() else {
        println!(
            "SKIPPED haproxy_send_proxy_v2_to_two_evloop_serves_skipped_without_haproxy: \
             no haproxy (apt-get install haproxy; .ci/run does)"
        );
        return;
    };
    let ports = [free_port(), free_port()];
    let _serves: Vec<Kid> = ports
        .iter()
        .map(|p| {
            let child = Command::new(BIN)
                .args(["serve", "--proto", "redis", "--accept-proxy", "--loops", "1"])
                .args(["--listen", &format!("127.0.0.1:{p}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn evloop serve");
            Kid::new(child)
        })
        .collect();
    for p in ports {
        wait_for_port(p);
    }
    let front = free_port();
    let dir = std::env::temp_dir().join(format!("evloop-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("haproxy.cfg");
    let text = format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n\nfrontend redis_in\n    bind 127.0.0.1:{front}\n    \
         default_backend evloop\n\nbackend evloop\n    balance roundrobin\n    \
         server e1 127.0.0.1:{} send-proxy-v2\n    server e2 127.0.0.1:{} send-proxy-v2\n",
        ports[0], ports[1]
    );
    std::fs::write(&cfg, text).expect("write haproxy.cfg");
    let _front = Kid::new(
        Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy"),
    );
    wait_for_port(front);
    let mut seen_backends = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut c = connect(SocketAddr::from(([127, 0, 0, 1], front)));
        let me = c.local_addr().expect("addr");
        let info = query(&mut c, "CLIENT INFO");
        assert_eq!(field(&info, "addr"), format!("{}:{}", me.ip(), me.port()), "{info}");
        seen_backends.insert(field(&info, "laddr").to_string());
        let _ = c.write_all(b"QUIT\r\n");
    }
    assert_eq!(seen_backends.len(), 2, "round robin over both: {seen_backends:?}");
    let _ = std::fs::remove_dir_all(&dir);
    println!("ran haproxy_send_proxy_v2_to_two_evloop_serves_skipped_without_haproxy");
}

/// On the reactor's own API: `opened` already sees the header's client as
/// `peer_addr`, `socket_peer_addr` is the real socket peer, and `data` gets only the
/// payload, whether it came in the header's segment or later.
#[test]
fn opened_sees_the_client_and_data_never_sees_the_header() {
    use evloop::reactor::{Action, Conn, EventHandler, Server};
    struct Tell;
    impl EventHandler for Tell {
        type State = ();
        fn opened(&mut self, c: &mut Conn<'_>) -> ((), Action) {
            let line = format!(
                "peer={} socket={}\n",
                c.peer_addr(),
                c.socket_peer_addr().map_or("?".into(), |a| a.to_string())
            );
            c.write(line.as_bytes());
            ((), Action::None)
        }
        fn data(&mut self, c: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
            c.write(input);
            (input.len(), Action::None)
        }
    }
    let server = Server::bind(proxied_config(Duration::from_secs(10))).expect("bind");
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Tell).expect("start");
    for with_payload in [true, false] {
        let mut c = connect(addr);
        let me = c.local_addr().expect("addr");
        let mut bytes = encode_v2("198.18.0.1:777".parse().unwrap(), addr);
        if with_payload {
            bytes.extend_from_slice(b"hello");
        }
        send(&mut c, &bytes);
        let want = format!("peer=198.18.0.1:777 socket={me}\n");
        assert_eq!(read_n(&mut c, want.len()), want.as_bytes());
        if !with_payload {
            send(&mut c, b"hello");
        }
        assert_eq!(read_n(&mut c, 5), b"hello");
    }
    running.shutdown().expect("shutdown");
}

#[test]
fn flag_errors_are_reported() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) =
        run(&["serve", "--engine", "std", "--accept-proxy", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--accept-proxy needs --engine reactor"), "{err}");
    let (code, err) = run(&["proxy", "--backend", "127.0.0.1:1", "--send-proxy", "v3"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expected v1 or v2"), "{err}");
    let (code, err) = run(&["replay", "/nonexistent/x.pcap", "--target", "127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read /nonexistent/x.pcap"), "{err}");
}
