//! TLS on the loops (issue 13): rustls clients against `tls://` listeners, with
//! certificates made at test time by `rcgen` (a CA, a server certificate it signs for
//! `localhost`/127.0.0.1, a client certificate it signs, and a rogue self-signed client).
//!
//! In-process servers go through `serve::start` with a reactor [`Config`] carrying a
//! [`TlsSetup`]; the command-line tests (SIGHUP reload, error lines, curl/openssl/redis-cli)
//! run the `evloop` binary.

#![cfg(feature = "tls")]

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::child::Kid;
use common::{LIMIT, checksum, child, pattern, wait_until};
use evloop::net::tls::{ALPN_HTTP1, TlsConfig, TlsFiles, TlsSetup};
use evloop::net::{ListenAddr, ListenSpec};
use evloop::proto::echo::Echo;
use evloop::proto::http::{Http, HttpConfig};
use evloop::proto::resp::Redis;
use evloop::reactor::{Config, StatsSnapshot};
use evloop::serve::{Engine, Served, start};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

// ---- certificates ---------------------------------------------------------------------

/// A test PKI on disk: CA, server and client certificates (PEM files in a fresh folder).
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

impl Pki {
    fn new() -> Pki {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evloop-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue-key.pem"),
            dir,
        };
        pki.issue("evloop test CA");
        pki
    }

    /// Makes a CA named `name` and, signed by it, the server and client certificates;
    /// writes them over the files.
    fn issue(&self, name: &str) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let rogue = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
        write(&self.ca, ca.pem());
        write(&self.cert, server.pem() + &ca.pem());
        write(&self.key, server_key.serialize_pem());
        write(&self.client_cert, client.pem());
        write(&self.client_key, client_key.serialize_pem());
        write(&self.rogue_cert, rogue.cert.pem());
        write(&self.rogue_key, rogue.signing_key.serialize_pem());
    }

    fn files(&self, mtls: bool) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: mtls.then(|| self.ca.clone()),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: String) {
    std::fs::write(path, text).unwrap();
}

// ---- clients --------------------------------------------------------------------------

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A client configuration trusting the CA in `ca`, optionally presenting a client
/// certificate, limited to `versions` (empty: TLS 1.2 and 1.3).
fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let versions = if versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        versions.to_vec()
    };
    let builder = ClientConfig::builder_with_provider(evloop::net::tls::provider())
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> =
                CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS client stream to `addr` (blocking, with timeouts); the handshake happens on
/// first use.
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    sock.set_write_timeout(Some(LIMIT)).unwrap();
    sock.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(config.clone(), name).unwrap(), sock)
}

/// Completes the handshake (or returns its error).
fn handshake(s: &mut Tls) -> io::Result<()> {
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    // TLS 1.3: the server's verdict on a client certificate comes after the client's
    // Finished; one round trip of application data surfaces a refusal.
    Ok(())
}

/// Reads until `pred` holds for what was read, or EOF.
fn read_until(s: &mut impl Read, got: &mut Vec<u8>, pred: impl Fn(&[u8]) -> bool) {
    let mut buf = [0u8; 16 * 1024];
    while !pred(got) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {} bytes", got.len()),
        }
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---- servers --------------------------------------------------------------------------

/// A reactor config with a plain listener (position 0) and a TLS one (position 1) on
/// loopback ports, TLS from `files`.
fn tls_config(files: TlsFiles, alpn: &[u8], loops: usize) -> Config {
    let alpn = if alpn.is_empty() { Vec::new() } else { vec![alpn.to_vec()] };
    let tls = TlsConfig::load(files, alpn).unwrap();
    Config::new()
        .listen("127.0.0.1:0")
        .unwrap()
        .listen("127.0.0.1:0")
        .unwrap()
        .loops(loops)
        .tls(TlsSetup::new(vec![1], Arc::new(tls)))
}

/// HTTP on a plain and a TLS (ALPN http/1.1) listener with `loops` loops.
fn https_server(pki: &Pki, loops: usize) -> Served {
    start(
        Engine::Reactor,
        Http::new(HttpConfig::default()),
        tls_config(pki.files(false), ALPN_HTTP1, loops),
    )
    .unwrap()
}

fn stats(served: &Served) -> StatsSnapshot {
    served.reactor().unwrap().stats().total()
}

fn plain_addr(served: &Served) -> SocketAddr {
    served.local_addrs()[0]
}

fn tls_addr(served: &Served) -> SocketAddr {
    served.local_addrs()[1]
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const HELLO: &[u8] = b"Hello, World!";

// ---- tests ----------------------------------------------------------------------------

#[test]
fn https_get_with_keep_alive_and_pipelining() {
    let pki = Pki::new();
    let served = https_server(&pki, 2);
    let config = client_config(&pki.ca, None, &[], &[ALPN_HTTP1]);
    let mut s = tls_connect(tls_addr(&served), &config);
    let mut got = Vec::new();
    // Keep-alive: three requests one after the other on one connection.
    for i in 1..=3 {
        s.write_all(GET).unwrap();
        read_until(&mut s, &mut got, |g| count(g, HELLO) == i);
    }
    assert_eq!(s.conn.alpn_protocol(), Some(ALPN_HTTP1), "ALPN offers http/1.1");
    // Pipelining: 32 requests in one write.
    got.clear();
    s.write_all(&GET.repeat(32)).unwrap();
    read_until(&mut s, &mut got, |g| count(g, HELLO) == 32);
    assert_eq!(count(&got, b"HTTP/1.1 200 OK"), 32);
    // Connection: close gets the response, close_notify, then EOF: a clean end.
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("close_notify ends the stream cleanly (no UnexpectedEof)");
    assert!(rest.ends_with(HELLO));
    // The plain listener of the same server speaks plain HTTP.
    let mut plain = common::connect(plain_addr(&served));
    plain.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut plain, &mut got, |g| count(g, HELLO) == 1);
    let st = stats(&served);
    assert_eq!(st.tls_handshakes, 1);
    assert_eq!(st.tls_handshake_errors, 0);
    served.shutdown().unwrap();
}

#[test]
fn sessions_resume_by_ticket_and_by_session_id() {
    let pki = Pki::new();
    let served = start(Engine::Reactor, Echo, tls_config(pki.files(false), b"", 1)).unwrap();
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&pki.ca, None, &[versions], &[]);
        for round in 0..2 {
            let mut s = tls_connect(tls_addr(&served), &config);
            s.write_all(b"ping").unwrap();
            let mut got = Vec::new();
            read_until(&mut s, &mut got, |g| g.len() == 4);
            let kind = s.conn.handshake_kind();
            if round == 1 {
                assert_eq!(kind, Some(HandshakeKind::Resumed), "{versions:?}");
            }
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
    let st = stats(&served);
    assert_eq!(st.tls_handshakes, 4);
    assert_eq!(st.tls_resumed, 2);
    served.shutdown().unwrap();
}

/// 50 MB written without reading until the echo backs up in the server (above half the
/// high watermark, reading paused), then read back whole and byte-exact while the rest is
/// written: nothing lost on partial writes of ciphertext, memory bounded.
#[test]
fn echo_of_50_mb_sent_before_reading_comes_back_byte_exact() {
    echo_sent_before_reading(50_000_000, None);
}

/// The same with read buffers too small for the one-large-read path (rustls reads for
/// itself) and just above it.
#[test]
fn echo_with_small_read_buffers_comes_back_byte_exact() {
    for rbuf in [512, 4096, 24 * 1024, 40 * 1024] {
        echo_sent_before_reading(4_000_000, Some(rbuf));
    }
}

fn echo_sent_before_reading(len: usize, read_buffer: Option<usize>) {
    let pki = Pki::new();
    let mut config = tls_config(pki.files(false), b"", 1);
    config.send_buffer = Some(64 * 1024);
    if let Some(r) = read_buffer {
        config.read_buffer = r;
    }
    let high = config.high_watermark as u64;
    let served = start(Engine::Reactor, Echo, config).unwrap();
    let h = served.reactor().unwrap();
    let data = pattern(len, 5);
    let sock = TcpStream::connect(tls_addr(&served)).unwrap();
    let client_cfg = client_config(&pki.ca, None, &[], &[]);
    let mut conn =
        ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    conn.set_buffer_limit(None);
    let mut sock_ref = &sock;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock_ref).unwrap();
    }
    sock.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let mut got: Vec<u8> = Vec::with_capacity(len);
    let mut reading = false;
    let mut buf = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let mut stalled_since = Instant::now();
    while got.len() < len {
        assert!(started.elapsed() < Duration::from_secs(120), "stuck at {} bytes", got.len());
        let mut progress = false;
        // Write: keep at most 1 MiB of ciphertext queued in the client.
        if sent < len && !conn.wants_write() {
            let n = (len - sent).min(256 * 1024);
            conn.writer().write_all(&data[sent..sent + n]).unwrap();
            sent += n;
        }
        while conn.wants_write() {
            match conn.write_tls(&mut sock_ref) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        if !reading {
            // Read nothing until the server holds a backlog and stops reading.
            if progress {
                stalled_since = Instant::now();
            } else if h.stats().total().peak_pending_output >= high / 2
                && stalled_since.elapsed() > Duration::from_millis(300)
            {
                reading = true;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        match conn.read_tls(&mut sock_ref) {
            Ok(0) => panic!("server closed after {} bytes", got.len()),
            Ok(_) => {
                conn.process_new_packets().unwrap();
                loop {
                    match conn.reader().read(&mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(got.len(), len);
    assert!(checksum(&got) == checksum(&data) && got == data, "echo differs from what was sent");
    let st = h.stats().total();
    assert!(st.partial_writes >= 1, "no partial write: the test proved nothing");
    let bound = high + 3 * 64 * 1024;
    assert!(
        st.peak_pending_output <= bound,
        "pending output {} over {bound}",
        st.peak_pending_output
    );
    served.shutdown().unwrap();
}

#[test]
fn mtls_accepts_a_client_certificate_from_the_ca_and_refuses_others() {
    let pki = Pki::new();
    let served = start(Engine::Reactor, Echo, tls_config(pki.files(true), b"", 1)).unwrap();
    let addr = tls_addr(&served);
    // A certificate the CA signed: served.
    let good = client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key)), &[], &[]);
    let mut s = tls_connect(addr, &good);
    s.write_all(b"hello").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.len() == 5);
    assert_eq!(got, b"hello");
    // No certificate, or one the CA did not sign: refused.
    let none = client_config(&pki.ca, None, &[], &[]);
    let rogue = client_config(&pki.ca, Some((&pki.rogue_cert, &pki.rogue_key)), &[], &[]);
    for config in [none, rogue] {
        let mut s = tls_connect(addr, &config);
        let refused = handshake(&mut s).is_err() || {
            let _ = s.write_all(b"hello");
            let mut buf = [0u8; 16];
            !matches!(s.read(&mut buf), Ok(n) if n > 0)
        };
        assert!(refused, "a client without a CA-signed certificate was served");
    }
    wait_until("two handshake errors counted", || stats(&served).tls_handshake_errors == 2);
    // The good connection is still served.
    s.write_all(b"again").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.len() == 5);
    assert_eq!(got, b"again");
    served.shutdown().unwrap();
}

#[test]
fn plaintext_on_a_tls_port_closes_only_that_connection() {
    let pki = Pki::new();
    let served = https_server(&pki, 1);
    let config = client_config(&pki.ca, None, &[], &[ALPN_HTTP1]);
    let mut tls = tls_connect(tls_addr(&served), &config);
    tls.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, |g| count(g, HELLO) == 1);
    let mut plain = common::connect(plain_addr(&served));
    plain.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut plain, &mut got, |g| count(g, HELLO) == 1);
    // Plain HTTP to the TLS port: an alert at most, then the close.
    let mut wrong = common::connect(tls_addr(&served));
    wrong.write_all(GET).unwrap();
    let mut answer = Vec::new();
    let _ = wrong.read_to_end(&mut answer);
    assert!(count(&answer, HELLO) == 0, "plaintext was served on the TLS port");
    assert!(answer.len() < 64, "more than an alert came back: {answer:?}");
    wait_until("the handshake error counted", || stats(&served).tls_handshake_errors == 1);
    // Everyone else is still served, on both listeners.
    tls.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, |g| count(g, HELLO) == 1);
    plain.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut plain, &mut got, |g| count(g, HELLO) == 1);
    served.shutdown().unwrap();
}

#[test]
fn a_stalled_handshake_is_cut_off_by_the_timeout() {
    let pki = Pki::new();
    let mut config = tls_config(pki.files(false), b"", 1);
    if let Some(t) = config.tls.as_mut() {
        t.handshake_timeout = Some(Duration::from_millis(300));
    }
    let served = start(Engine::Reactor, Echo, config).unwrap();
    let started = Instant::now();
    // One sends nothing at all; one sends half a ClientHello.
    let mut silent = common::connect(tls_addr(&served));
    let mut half = common::connect(tls_addr(&served));
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    for s in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n < 64, "closed, with an alert at most");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "closed too early: {took:?}");
    assert!(took < Duration::from_secs(5), "the handshake timeout did not fire: {took:?}");
    let st = stats(&served);
    assert_eq!(st.tls_handshake_errors, 2);
    // A client that completes its handshake in time is served past the timeout.
    let client = client_config(&pki.ca, None, &[], &[]);
    let mut s = tls_connect(tls_addr(&served), &client);
    handshake(&mut s).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(b"late").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.len() == 4);
    assert_eq!(got, b"late");
    served.shutdown().unwrap();
}

#[test]
fn redis_over_tls_set_and_get() {
    let pki = Pki::new();
    let served =
        start(Engine::Reactor, Redis::default(), tls_config(pki.files(false), b"", 1)).unwrap();
    let config = client_config(&pki.ca, None, &[], &[]);
    let mut s = tls_connect(tls_addr(&served), &config);
    assert_eq!(s.conn.alpn_protocol(), None);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.ends_with(b"value\r\n"));
    assert_eq!(got, b"+OK\r\n$5\r\nvalue\r\n");
    // The keyspace is the same on the plain listener.
    let mut plain = common::connect(plain_addr(&served));
    plain.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let mut got = Vec::new();
    read_until(&mut plain, &mut got, |g| g.ends_with(b"value\r\n"));
    served.shutdown().unwrap();
}

#[test]
fn engines_without_tls_refuse_tls_listeners() {
    let pki = Pki::new();
    let err = match start(Engine::Std, Echo, tls_config(pki.files(false), b"", 1)) {
        Err(e) => e,
        Ok(_) => panic!("the std engine took a TLS listener"),
    };
    assert!(err.to_string().contains("reactor"), "{err}");
}

// ---- command line ---------------------------------------------------------------------

fn evloop(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evloop"));
    cmd.args(args);
    cmd
}

/// Runs `evloop` to its end; its exit code and stderr.
fn run_to_end(args: &[&str]) -> (i32, String) {
    let out = evloop(args).stdout(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Spawns `evloop`, waits for the ready line; the child (killed on drop, if a test fails
/// before it stops it), its listeners from the ready line (`tls://` kept), and its
/// further stderr lines.
fn spawn_ready(args: &[&str]) -> (Kid, Vec<String>, mpsc::Receiver<String>) {
    let (child, rx) = child::spawn_piped(evloop(args));
    let child = Kid::new(child);
    let line = child::ready_line(&rx);
    let list = line.split(" on ").nth(1).unwrap().split(" (").next().unwrap();
    (child, list.split(", ").map(str::to_string).collect(), rx)
}

fn signal(child: &Kid, sig: i32) {
    child::signal(child.child(), sig);
}

/// SIGTERM, then wait for the exit.
fn stop(mut child: Kid) {
    signal(&child, libc::SIGTERM);
    let _ = child.take().wait();
}

fn addr_of(listed: &str) -> SocketAddr {
    listed.trim_start_matches("tls://").parse().unwrap()
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let pki = Pki::new();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let (child, listed, rx) = spawn_ready(&[
        "serve",
        "--loops",
        "1",
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert!(listed[0].starts_with("tls://127.0.0.1:"), "{listed:?}");
    let addr = addr_of(&listed[0]);
    let old_ca = std::fs::read(&pki.ca).unwrap();
    let old = client_config(&pki.ca, None, &[], &[]);
    let mut before = tls_connect(addr, &old);
    handshake(&mut before).unwrap();
    // New files from another CA; then a reload that fails (a broken key) keeps them.
    pki.issue("evloop second CA");
    let new = client_config(&pki.ca, None, &[], &[]);
    assert_ne!(std::fs::read(&pki.ca).unwrap(), old_ca);
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut s = tls_connect(addr, &new);
        if handshake(&mut s).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = tls_connect(addr, &old);
    assert!(handshake(&mut s).is_err(), "the old certificate is still served after SIGHUP");
    // The connection made before the reload goes on.
    before.write_all(b"still").unwrap();
    let mut got = Vec::new();
    read_until(&mut before, &mut got, |g| g.len() == 5);
    std::fs::write(&pki.key, "not a key\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = loop {
        let line = rx.recv_timeout(LIMIT).expect("a log line about the failed reload");
        if line.contains("reload failed") {
            break line;
        }
    };
    assert!(line.contains(key), "the error names the file: {line}");
    let mut s = tls_connect(addr, &new);
    handshake(&mut s).expect("the last good certificate is kept after a failed reload");
    stop(child);
}

/// `--config FILE`: SIGHUP re-reads the file, and new certificate paths in it are
/// loaded for new connections.
#[test]
fn sighup_with_config_loads_the_certificate_from_new_paths() {
    let (first, second) = (Pki::new(), Pki::new());
    let conf = |pki: &Pki| {
        format!(
            "listen = [\"tls://127.0.0.1:0\"]\nloops = 1\ntls-cert = \"{}\"\ntls-key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        )
    };
    let file = first.dir.join("evloop.toml");
    std::fs::write(&file, conf(&first)).unwrap();
    let (child, listed, rx) = spawn_ready(&["serve", "--config", file.to_str().unwrap()]);
    let addr = addr_of(&listed[0]);
    let old = client_config(&first.ca, None, &[], &[]);
    let new = client_config(&second.ca, None, &[], &[]);
    let mut s = tls_connect(addr, &old);
    handshake(&mut s).expect("the first certificate");
    std::fs::write(&file, conf(&second)).unwrap();
    signal(&child, libc::SIGHUP);
    let wanted = format!("tls: reloaded {}", second.cert.display());
    loop {
        let line = rx.recv_timeout(LIMIT).expect("a log line about the reload");
        if line.contains(&wanted) {
            break;
        }
    }
    let mut s = tls_connect(addr, &new);
    handshake(&mut s).expect("the certificate from the new path after SIGHUP");
    let mut s = tls_connect(addr, &old);
    assert!(handshake(&mut s).is_err(), "the old certificate is still served after SIGHUP");
    stop(child);
}

#[test]
fn bad_tls_files_are_one_line_naming_the_file_exit_1() {
    let pki = Pki::new();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let missing = pki.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let other_key = pki.client_key.to_str().unwrap();
    let listen = ["serve", "--listen", "tls://127.0.0.1:0"];
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--tls-cert", missing, "--tls-key", key], missing, "cannot read"),
        (vec!["--tls-cert", cert, "--tls-key", missing], missing, "cannot read"),
        (vec!["--tls-cert", key, "--tls-key", key], key, "no certificate"),
        (vec!["--tls-cert", cert, "--tls-key", cert], cert, "no private key"),
        (vec!["--tls-cert", cert, "--tls-key", other_key], other_key, "does not match"),
        (vec!["--tls-key", key], "--tls-cert", "needs"),
        (vec!["--tls-cert", cert], "--tls-key", "needs"),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", missing],
            missing,
            "cannot read",
        ),
        (vec!["--tls-cert", cert, "--tls-key", key, "--engine", "std"], "reactor", "std"),
    ];
    for (flags, names, says) in cases {
        let args: Vec<&str> = listen.iter().copied().chain(flags.iter().copied()).collect();
        let (code, stderr) = run_to_end(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("evloop:")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(names) && lines[0].contains(says), "{args:?}: {}", lines[0]);
    }
}

#[test]
fn listen_spec_tls_form() {
    let spec = ListenSpec::parse("tls://[::1]:8443").unwrap();
    assert!(spec.tls);
    assert_eq!(spec.addrs, vec![ListenAddr::Tcp("[::1]:8443".parse().unwrap())]);
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// `curl --cacert`, `openssl s_client` and `redis-cli --tls` against `evloop serve`, where
/// they are installed (CI installs curl and openssl; see `.ci/run`).
#[test]
fn curl_openssl_and_redis_cli_skipped_without_curl() {
    if !have("curl") {
        println!("SKIPPED curl_openssl_and_redis_cli_skipped_without_curl: curl is not installed");
        return;
    }
    let pki = Pki::new();
    let (cert, key, ca) =
        (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap(), pki.ca.to_str().unwrap());
    let (child, listed, _rx) = spawn_ready(&[
        "serve",
        "--proto",
        "http",
        "--loops",
        "1",
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    let port = addr_of(&listed[0]).port();
    let url = format!("https://localhost:{port}/");
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca, "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args([url.as_str(), url.as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"Hello, World!Hello, World!");
    let mut ran = vec!["curl --cacert"];
    if have("openssl") || Command::new("openssl").arg("version").output().is_ok() {
        for version in ["-tls1_2", "-tls1_3"] {
            let mut s_client = Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile", ca])
                .args(["-servername", "localhost", "-alpn", "http/1.1", version])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = s_client.stdin.take().unwrap();
            stdin.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let out = s_client.wait_with_output().unwrap();
            drop(stdin);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("Verify return code: 0"), "{version}: {text}");
            assert!(text.contains("ALPN protocol: http/1.1"), "{version}: {text}");
            assert!(text.contains("Hello, World!"), "{version}: {text}");
        }
        ran.push("openssl s_client");
    } else {
        ran.push("(no openssl)");
    }
    stop(child);
    if have("redis-cli") {
        let (child, listed, _rx) = spawn_ready(&[
            "serve",
            "--proto",
            "redis",
            "--loops",
            "1",
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        let port = addr_of(&listed[0]).port().to_string();
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", ca, "--sni", "localhost", "-h", "127.0.0.1", "-p", &port])
            .args(["PING"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if String::from_utf8_lossy(&out.stderr).contains("not supported")
            || String::from_utf8_lossy(&out.stderr).contains("Unrecognized option")
        {
            ran.push("(redis-cli without TLS)");
        } else {
            assert!(
                text.contains("PONG"),
                "redis-cli: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ran.push("redis-cli --tls");
        }
        stop(child);
    } else {
        ran.push("(no redis-cli)");
    }
    println!("ran curl_openssl_and_redis_cli_skipped_without_curl: {}", ran.join(", "));
}

/// Resident memory of process `pid`, in bytes (Linux `/proc`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of server memory per idle connection, TLS (handshake done, one request answered)
/// and plain, at `EVLOOP_IDLE_CONNS` connections (default 10,000): run with
/// `cargo test --release --test tls idle -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run it by name"]
fn idle_connection_memory() {
    let n: usize =
        std::env::var("EVLOOP_IDLE_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let pki = Pki::new();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let (child, listed, _rx) = spawn_ready(&[
        "serve",
        "--loops",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--handshake-timeout",
        "off",
    ]);
    let (plain, tls) = (addr_of(&listed[0]), addr_of(&listed[1]));
    let config = client_config(&pki.ca, None, &[], &[]);
    // Warm up allocator pools and the session cache with a few connections first.
    let warm: Vec<Tls> = (0..100).map(|_| echo_once(tls, &config)).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss(child.child().id());
    let conns: Vec<Tls> = (0..n).map(|_| echo_once(tls, &config)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let with_tls = rss(child.child().id());
    // Plain connections as many as the descriptor limit leaves room for (both ends are
    // in this machine's limits).
    let m = n.min(18_000usize.saturating_sub(n)).max(1);
    let plains: Vec<TcpStream> = (0..m)
        .map(|_| {
            let mut s = common::connect(plain);
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let with_plain = rss(child.child().id());
    println!(
        "idle connections: {n} TLS, {} bytes each; {m} plain, {} bytes each",
        with_tls.saturating_sub(before) / n as u64,
        with_plain.saturating_sub(with_tls) / m as u64
    );
    println!(
        "of which the rustls ServerConnection value itself: {} bytes (plus its 4 KiB receive buffer and keys)",
        std::mem::size_of::<rustls::ServerConnection>()
    );
    drop((conns, plains));
    stop(child);
}

/// A TLS connection that has echoed one byte (handshake done, tickets received).
fn echo_once(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let mut s = tls_connect(addr, config);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    s
}

/// Greets in `opened` (before the handshake: rustls holds it until the handshake is
/// done) and hands its `ConnHandle` to the test.
struct Greeter(mpsc::Sender<evloop::reactor::ConnHandle>);

impl evloop::reactor::EventHandler for Greeter {
    type State = ();
    fn opened(&mut self, conn: &mut evloop::reactor::Conn<'_>) -> ((), evloop::reactor::Action) {
        conn.write(b"hello\n");
        let _ = self.0.send(conn.handle());
        ((), evloop::reactor::Action::None)
    }
    fn data(
        &mut self,
        conn: &mut evloop::reactor::Conn<'_>,
        _: &mut (),
        input: &[u8],
    ) -> (usize, evloop::reactor::Action) {
        conn.write(input);
        (input.len(), evloop::reactor::Action::None)
    }
}

#[test]
fn a_greeting_and_conn_handle_writes_go_out_encrypted() {
    let pki = Pki::new();
    let (tx, rx) = mpsc::channel();
    let server = evloop::reactor::Server::bind(tls_config(pki.files(false), b"", 1)).unwrap();
    let addr = server.local_addrs()[1];
    let running = server.start(move |_| Greeter(tx.clone())).unwrap();
    let config = client_config(&pki.ca, None, &[], &[]);
    let mut s = tls_connect(addr, &config);
    let mut got = Vec::new();
    handshake(&mut s).unwrap();
    read_until(&mut s, &mut got, |g| g.len() == 6);
    assert_eq!(got, b"hello\n");
    let handle = rx.recv_timeout(LIMIT).unwrap();
    handle.write(b"pushed ".repeat(10_000)).unwrap();
    s.write_all(b"echo").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.len() == 70_004);
    assert!(got.starts_with(b"pushed ") && got.ends_with(b"echo"), "in order");
    running.shutdown().unwrap();
}

#[test]
fn frames_over_tls_come_back_whole() {
    use evloop::proto::frame::{Frame, FrameConfig, encode};
    let pki = Pki::new();
    let served = start(
        Engine::Reactor,
        Frame::new(FrameConfig::default()),
        tls_config(pki.files(false), b"", 1),
    )
    .unwrap();
    let config = client_config(&pki.ca, None, &[], &[]);
    let mut s = tls_connect(tls_addr(&served), &config);
    let mut wire = Vec::new();
    for size in [0, 1, 1000, 100_000] {
        encode(&pattern(size, size as u64), &mut wire).unwrap();
    }
    s.write_all(&wire).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.len() == wire.len());
    assert!(got == wire, "frames echoed whole, in order");
    served.shutdown().unwrap();
}

/// Links each TLS connection, at its first bytes, to the plain connection opened before
/// it; reports every close as (listener, reason).
struct Linker {
    plain: Option<evloop::reactor::ConnId>,
    closes: mpsc::Sender<(usize, String)>,
}

impl evloop::reactor::EventHandler for Linker {
    type State = usize;
    fn opened(&mut self, conn: &mut evloop::reactor::Conn<'_>) -> (usize, evloop::reactor::Action) {
        if conn.listener() == 0 {
            self.plain = Some(conn.id());
        }
        (conn.listener(), evloop::reactor::Action::None)
    }
    fn data(
        &mut self,
        conn: &mut evloop::reactor::Conn<'_>,
        listener: &mut usize,
        input: &[u8],
    ) -> (usize, evloop::reactor::Action) {
        if *listener == 1 {
            conn.link(self.plain.expect("plain first")).unwrap();
            return (0, evloop::reactor::Action::None);
        }
        (input.len(), evloop::reactor::Action::None)
    }
    fn closed(&mut self, listener: usize, reason: evloop::reactor::CloseReason) {
        let _ = self.closes.send((listener, format!("{reason:?}")));
    }
}

#[test]
fn a_linked_tls_connection_forwards_plaintext_both_ways_and_half_closes() {
    let pki = Pki::new();
    let (tx, rx) = mpsc::channel();
    let server = evloop::reactor::Server::bind(tls_config(pki.files(false), b"", 1)).unwrap();
    let (plain, tls) = (server.local_addrs()[0], server.local_addrs()[1]);
    let running = server.start(move |_| Linker { plain: None, closes: tx.clone() }).unwrap();
    let mut p = TcpStream::connect(plain).unwrap();
    p.set_read_timeout(Some(LIMIT)).unwrap();
    p.write_all(b"x").unwrap(); // served: the plain connection is open on the loop
    std::thread::sleep(Duration::from_millis(100));
    let config = client_config(&pki.ca, None, &[], &[]);
    let mut s = tls_connect(tls, &config);
    handshake(&mut s).unwrap();
    // Decrypted into the plain side (the unconsumed first bytes included).
    s.write_all(b"link me").unwrap();
    let mut got = [0u8; 7];
    p.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"link me");
    // 1 MB each way, encrypted into the TLS side.
    let big = pattern(1 << 20, 7);
    p.write_all(&big).unwrap();
    let mut back = Vec::new();
    read_until(&mut s, &mut back, |g| g.len() >= big.len());
    assert!(back == big, "plain → TLS byte-exact");
    s.write_all(&big).unwrap();
    let mut there = vec![0u8; big.len()];
    p.read_exact(&mut there).unwrap();
    assert!(there == big, "TLS → plain byte-exact");
    // The plain side's FIN becomes close_notify: a clean end of the TLS stream ...
    p.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("close_notify, not a truncation");
    assert!(rest.is_empty());
    // ... while the other direction still flows; then the TLS side's close_notify
    // becomes the plain side's FIN.
    s.write_all(b"after").unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    let mut tail = Vec::new();
    p.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"after");
    let mut reasons = vec![rx.recv_timeout(LIMIT).unwrap(), rx.recv_timeout(LIMIT).unwrap()];
    reasons.sort();
    assert_eq!(reasons, vec![(0, "PeerClosed".into()), (1, "PeerClosed".into())]);
    running.shutdown().unwrap();
}

#[test]
fn an_incomplete_request_over_tls_gets_408_encrypted_then_close_notify() {
    let pki = Pki::new();
    let settings = evloop::serve::Settings {
        request_timeout: Some(Duration::from_millis(300)),
        ..evloop::serve::Settings::from(tls_config(pki.files(false), ALPN_HTTP1, 1))
    };
    let served = start(Engine::Reactor, Http::new(HttpConfig::default()), settings).unwrap();
    let config = client_config(&pki.ca, None, &[], &[ALPN_HTTP1]);
    let mut s = tls_connect(tls_addr(&served), &config);
    s.write_all(GET).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| count(g, HELLO) == 1);
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: loc").unwrap(); // and nothing more
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("408, then close_notify: a clean end");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert!(t0.elapsed() >= Duration::from_millis(200), "{:?}", t0.elapsed());
    served.shutdown().unwrap();
}

/// A PROXY protocol header, then the TLS handshake: the header is consumed in plaintext
/// before the TLS session starts (`--accept-proxy` on a `tls://` listener), whether the
/// ClientHello comes in a later segment or in the same write as the header; `CLIENT
/// INFO` over TLS names the header's client. A ClientHello without the header is a
/// header error, closed before any TLS work.
#[test]
fn a_proxy_header_then_a_tls_handshake_on_a_tls_listener() {
    let pki = Pki::new();
    let mut config = tls_config(pki.files(false), b"", 1);
    config.accept_proxy = true;
    config.proxy_header_timeout = Duration::from_secs(5);
    let served = start(Engine::Reactor, Redis::default(), config).unwrap();
    let client = client_config(&pki.ca, None, &[], &[]);
    let info = |s: &mut Tls| {
        s.write_all(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n").unwrap();
        let mut got = Vec::new();
        read_until(s, &mut got, |g| g.ends_with(b"\n\r\n"));
        String::from_utf8_lossy(&got).into_owned()
    };

    // The header in its own segment, then the handshake.
    let mut s = tls_connect(tls_addr(&served), &client);
    s.sock.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 6379\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    handshake(&mut s).unwrap();
    let line = info(&mut s);
    assert!(line.contains(" addr=203.0.113.7:4242 "), "{line}");

    // The header and the ClientHello in one write.
    let mut s = tls_connect(tls_addr(&served), &client);
    let mut first = b"PROXY TCP6 2001:db8::9 2001:db8::1 5151 6379\r\n".to_vec();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut first).unwrap();
    }
    s.sock.write_all(&first).unwrap();
    handshake(&mut s).unwrap();
    let line = info(&mut s);
    assert!(line.contains(" addr=2001:db8::9:5151 "), "{line}");

    // The plain listener still wants the header too, in plaintext.
    let mut plain = common::connect(plain_addr(&served));
    plain.write_all(b"PROXY TCP4 198.51.100.2 192.0.2.1 7000 6379\r\nCLIENT INFO\r\n").unwrap();
    let mut got = Vec::new();
    read_until(&mut plain, &mut got, |g| g.ends_with(b"\n\r\n"));
    assert!(String::from_utf8_lossy(&got).contains(" addr=198.51.100.2:7000 "));

    let st = stats(&served);
    assert_eq!((st.tls_handshakes, st.tls_handshake_errors, st.proxy_header_errors), (2, 0, 0));

    // A ClientHello with no header: a header error, no TLS handshake attempted.
    let mut s = tls_connect(tls_addr(&served), &client);
    assert!(handshake(&mut s).is_err());
    wait_until("the header error is counted", || stats(&served).proxy_header_errors == 1);
    let st = stats(&served);
    assert_eq!((st.tls_handshakes, st.tls_handshake_errors), (2, 0));
    served.shutdown().unwrap();
}
