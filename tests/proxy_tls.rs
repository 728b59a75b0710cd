//! `evloop proxy` terminating TLS (issue 13): rustls clients through a `tls://` proxy
//! listener to plain evloop backends: byte-exact bulk echo, RESP, half-close across the
//! TLS seam, plaintext byte metrics, a plaintext client on the TLS port closed without a
//! backend connect, and the `evloop proxy --listen tls://...` command line.

#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::child::{BIN, Kid, spawn_piped};
use common::*;
use evloop::net::tls::{TlsConfig, TlsFiles, TlsSetup};
use evloop::proto::echo::Echo;
use evloop::proto::resp::{Redis, RespConfig};
use evloop::proxy::health::HealthCheck;
use evloop::proxy::run::{Proxy, ProxyConfig, start};
use evloop::reactor::Config;
use evloop::serve::{self, Engine, Served, Settings};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A test CA and a server certificate it signs for `localhost` and 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evloop-ptls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        pki.issue("evloop proxy test CA");
        pki
    }

    /// Makes a CA named `name` and a server certificate it signs; writes them over the
    /// files.
    fn issue(&self, name: &str) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        std::fs::write(&self.ca, ca.pem()).expect("write");
        std::fs::write(&self.cert, cert.pem() + &ca.pem()).expect("write");
        std::fs::write(&self.key, key.serialize_pem()).expect("write");
    }

    fn files(&self) -> TlsFiles {
        TlsFiles { cert: self.cert.clone(), key: self.key.clone(), client_ca: None }
    }

    /// A one-loop config whose one listener, 127.0.0.1:0, is `tls://` with this
    /// certificate.
    fn tls_listener(&self) -> Config {
        let tls = TlsConfig::load(self.files(), Vec::new()).expect("tls config");
        Config::new()
            .listen("127.0.0.1:0")
            .expect("listen")
            .loops(1)
            .tls(TlsSetup::new(vec![0], Arc::new(tls)))
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).expect("ca") {
            roots.add(c.expect("cert")).expect("add");
        }
        let config = ClientConfig::builder_with_provider(evloop::net::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A one-loop proxy with one `tls://` listener (from `pki`) over `backends`.
fn tls_proxy(pki: &Pki, backends: &[SocketAddr]) -> Proxy {
    let config = pki.tls_listener();
    let cfg = ProxyConfig {
        backends: backends.iter().map(|a| a.to_string().parse().expect("spec")).collect(),
        check: HealthCheck::Off,
        ..ProxyConfig::default()
    };
    start(Settings::from(config), cfg).expect("start proxy")
}

fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(LIMIT)).expect("timeout");
    sock.set_write_timeout(Some(LIMIT)).expect("timeout");
    sock.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("name");
    StreamOwned::new(ClientConnection::new(config.clone(), name).expect("client"), sock)
}

fn echo_backend() -> Served {
    serve::start(Engine::Reactor, Echo, local_config(1)).expect("echo backend")
}

fn accepted(b: &Served) -> u64 {
    b.reactor().expect("reactor").stats().total().accepted
}

#[test]
fn a_tls_client_through_the_proxy_to_a_plain_echo_10_mb_each_way_byte_exact() {
    let pki = Pki::new();
    let echo = echo_backend();
    let p = tls_proxy(&pki, &[echo.local_addrs()[0]]);
    let mut s = tls_connect(p.local_addrs()[0], &pki.client_config());
    let total = 10 << 20;
    let data = pattern(total, 11);
    let mut back = vec![0u8; 256 * 1024];
    for chunk in data.chunks(256 * 1024) {
        s.write_all(chunk).expect("write");
        s.read_exact(&mut back[..chunk.len()]).expect("read");
        assert!(back[..chunk.len()] == *chunk, "echo byte-exact");
    }
    drop(s);
    // The per-backend counters count plaintext, not ciphertext.
    wait_until("counters", || {
        let t = p.pool().current().backends[0].totals();
        t.bytes_sent == total as u64 && t.bytes_received == total as u64
    });
    let stats = p.handle().stats().total();
    assert!(stats.tls_handshakes >= 1, "{stats:?}");
    p.shutdown().expect("shutdown");
}

#[test]
fn resp_over_tls_through_the_proxy_to_a_plain_redis() {
    let pki = Pki::new();
    let redis = serve::start(Engine::Reactor, Redis::new(RespConfig::default()), local_config(1))
        .expect("redis backend");
    let p = tls_proxy(&pki, &[redis.local_addrs()[0]]);
    let mut s = tls_connect(p.local_addrs()[0], &pki.client_config());
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .expect("write");
    let want = b"+OK\r\n$2\r\nv1\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("read");
    assert_eq!(got, want);
    p.shutdown().expect("shutdown");
}

#[test]
fn half_close_through_tls_is_forwarded_and_the_answer_ends_with_close_notify() {
    // A backend that answers only after the client's end of input.
    let backend = answer_after_eof_backend();
    let pki = Pki::new();
    let p = tls_proxy(&pki, &[backend]);
    let mut s = tls_connect(p.local_addrs()[0], &pki.client_config());
    s.write_all(&pattern(300_000, 1)).expect("write");
    s.conn.send_close_notify();
    s.flush().expect("flush");
    s.sock.shutdown(Shutdown::Write).expect("shutdown write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("a clean end (close_notify), not a truncation");
    let (head, body) = answer.split_at(answer.iter().position(|&b| b == b'\n').expect("line") + 1);
    assert_eq!(head, b"300000\n");
    assert_eq!(checksum(body), checksum(&pattern(1 << 20, 3)));
    p.shutdown().expect("shutdown");
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_closed_without_a_backend_connect() {
    let pki = Pki::new();
    let echo = echo_backend();
    let p = tls_proxy(&pki, &[echo.local_addrs()[0]]);
    let mut s = connect(p.local_addrs()[0]);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    // The server answers with an alert, then closes.
    assert!(closed_within(&mut s, LIMIT), "closed");
    wait_until("handshake error counted", || p.handle().stats().total().tls_handshake_errors == 1);
    assert_eq!(accepted(&echo), 0, "no backend connect");
    assert_eq!(p.pool().current().backends[0].totals().connections, 0);
    // A TLS client is still served.
    let mut t = tls_connect(p.local_addrs()[0], &pki.client_config());
    t.write_all(b"ping").expect("write");
    let mut got = [0u8; 4];
    t.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"ping");
    p.shutdown().expect("shutdown");
}

/// Runs `cmd` (an `evloop proxy` with one tls:// listener using `pki`'s certificate, to
/// an echo backend), checks an echo through it, then issues a new CA and certificate and
/// sends SIGHUP: a client trusting only the new CA must get in.
fn serves_then_reloads_on_sighup(pki: &Pki, cmd: Command) {
    // Killed by its PID when dropped.
    let (child, lines) = spawn_piped(cmd);
    let child_proc = Kid::new(child);
    let ready = loop {
        let line = lines.recv_timeout(LIMIT).expect("a ready line");
        if line.contains("proxying on ") {
            break line;
        }
    };
    let rest = &ready[ready.find("proxying on ").expect("marker") + "proxying on ".len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || ".:".contains(c))).unwrap_or(rest.len());
    let addr: SocketAddr = rest[..end].parse().expect("addr");
    let mut s = tls_connect(addr, &pki.client_config());
    let msg = pattern(100_000, 2);
    s.write_all(&msg).expect("write");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("read");
    assert!(got == msg);
    // SIGHUP re-reads the certificate and key: a client trusting only a new CA gets in.
    pki.issue("evloop proxy second CA");
    let new = pki.client_config();
    // SAFETY: kill(2) on our own child's PID.
    assert_eq!(unsafe { libc::kill(child_proc.child().id() as i32, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let mut s = tls_connect(addr, &new);
        if s.write_all(b"new").is_ok() && {
            let mut got = [0u8; 3];
            s.read_exact(&mut got).is_ok()
        } {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new certificate was never served");
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn evloop_proxy_listens_on_tls_with_the_serve_tls_flags_and_reloads_on_sighup() {
    let pki = Pki::new();
    let echo = echo_backend();
    let be = echo.local_addrs()[0].to_string();
    let (cert, key) = (pki.cert.to_str().expect("p"), pki.key.to_str().expect("p"));
    let mut cmd = Command::new(BIN);
    cmd.args(["proxy", "--listen", "tls://127.0.0.1:0", "--backend", &be])
        .args(["--tls-cert", cert, "--tls-key", key, "--handshake-timeout", "5s"])
        .args(["--health-check", "off"])
        .stdin(Stdio::null());
    serves_then_reloads_on_sighup(&pki, cmd);
    // Missing key: one clear line, exit 1.
    let out = Command::new(BIN)
        .args(["proxy", "--listen", "tls://127.0.0.1:0", "--backend", &be, "--tls-cert", cert])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --tls-key"), "{err}");
}

#[test]
fn evloop_proxy_with_config_reloads_the_certificate_on_sighup() {
    let pki = Pki::new();
    let echo = echo_backend();
    let file = pki.dir.join("proxy.toml");
    let text = format!(
        "listen = [\"tls://127.0.0.1:0\"]\nbackend = [\"{}\"]\nhealth-check = \"off\"\n\
         tls-cert = \"{}\"\ntls-key = \"{}\"\n",
        echo.local_addrs()[0],
        pki.cert.display(),
        pki.key.display()
    );
    std::fs::write(&file, text).expect("write config");
    let mut cmd = Command::new(BIN);
    cmd.args(["proxy", "--config"]).arg(&file).stdin(Stdio::null());
    serves_then_reloads_on_sighup(&pki, cmd);
}

// ---- TLS to backends ------------------------------------------------------------------

/// An echo `tls://` backend with `pki`'s certificate.
fn tls_echo_backend(pki: &Pki) -> Served {
    let config = pki.tls_listener();
    serve::start(Engine::Reactor, Echo, Settings::from(config)).expect("tls echo backend")
}

/// A one-loop plain proxy over `backends` (written specs), trusting `ca`.
fn proxy_to(backends: &[String], ca: &Pki) -> Proxy {
    let config = Config::new().listen("127.0.0.1:0").expect("listen").loops(1);
    let cfg = ProxyConfig {
        backends: backends.iter().map(|b| b.parse().expect("spec")).collect(),
        check: HealthCheck::Off,
        backend_ca: Some(ca.ca.clone()),
        ..ProxyConfig::default()
    };
    start(Settings::from(config), cfg).expect("start proxy")
}

/// Echo through `addr`, 4 MB in 256 KiB steps, byte-exact.
fn echo_4mb(addr: SocketAddr) {
    let mut s = connect(addr);
    let data = pattern(4 << 20, 5);
    let mut back = vec![0u8; 256 * 1024];
    for chunk in data.chunks(256 * 1024) {
        s.write_all(chunk).expect("write");
        s.read_exact(&mut back[..chunk.len()]).expect("read");
        assert!(back[..chunk.len()] == *chunk, "echo byte-exact");
    }
}

#[test]
fn the_proxy_speaks_tls_to_a_tls_backend_byte_exact() {
    let pki = Pki::new();
    let backend = tls_echo_backend(&pki);
    let addr = backend.local_addrs()[0];
    // By IP address (an IP SAN, no SNI), and by name with sni=.
    for spec in [format!("{addr},tls"), format!("{addr},tls,sni=localhost")] {
        let p = proxy_to(std::slice::from_ref(&spec), &pki);
        echo_4mb(p.local_addrs()[0]);
        let t = p.pool().current().backends[0].totals();
        assert_eq!(t.connect_errors, 0);
        wait_until("counters", || {
            let t = p.pool().current().backends[0].totals();
            t.bytes_sent == 4 << 20 && t.bytes_received == 4 << 20
        });
        p.shutdown().expect("shutdown");
    }
}

#[test]
fn a_backend_with_an_untrusted_certificate_is_a_failed_connect_and_the_next_one_serves() {
    let (pki, rogue) = (Pki::new(), Pki::new());
    let bad = tls_echo_backend(&rogue); // signed by another CA
    let good = tls_echo_backend(&pki);
    let specs = [format!("{},tls", bad.local_addrs()[0]), format!("{},tls", good.local_addrs()[0])];
    let p = proxy_to(&specs, &pki);
    for _ in 0..2 {
        // Round robin starts somewhere; each client ends up on the good one.
        let mut s = connect(p.local_addrs()[0]);
        s.write_all(b"hello").expect("write");
        let mut got = [0u8; 5];
        s.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello");
    }
    let set = p.pool().current();
    let bad_name = bad.local_addrs()[0].to_string();
    let bad_totals = set.backends.iter().find(|b| b.spec().name == bad_name).expect("bad").totals();
    assert!(bad_totals.connect_errors >= 1, "{bad_totals:?}");
    assert_eq!(bad_totals.bytes_sent, 0);
    let stats = p.handle().stats().total();
    assert!(stats.tls_handshake_errors >= 1, "{stats:?}");
    p.shutdown().expect("shutdown");
}

#[test]
fn tls_backends_need_backend_ca() {
    let cfg = ProxyConfig {
        backends: vec!["127.0.0.1:7001,tls".parse().expect("spec")],
        ..ProxyConfig::default()
    };
    let err = cfg.load_backends().expect_err("refused");
    assert!(err.contains(",tls needs --backend-ca FILE"), "{err}");
}

#[test]
fn a_bad_sni_and_a_plaintext_health_check_are_refused_when_backends_load() {
    let ca = Pki::new();
    let with = |backend: &str, check: HealthCheck| ProxyConfig {
        backends: vec![backend.parse().expect("spec")],
        backend_ca: Some(ca.ca.clone()),
        check,
        ..ProxyConfig::default()
    };
    let err = with("127.0.0.1:7001,tls,sni=a b", HealthCheck::Off).load_backends();
    let err = err.expect_err("a name with a space is refused");
    assert!(err.contains("`a b` is not a valid TLS server name"), "{err}");
    for check in [HealthCheck::Http("/".into()), HealthCheck::Redis] {
        let err = with("127.0.0.1:7001,tls", check).load_backends().expect_err("refused");
        assert!(err.contains(",tls backends take --health-check tcp or off"), "{err}");
    }
    for check in [HealthCheck::Tcp, HealthCheck::Off] {
        let cfg = with("127.0.0.1:7001,tls,sni=localhost", check);
        assert_eq!(cfg.load_backends().expect("accepted").len(), 1);
    }
}
