//! `Conn::connect_tls` to a server that speaks first: the read that finishes the client
//! handshake also brings the server's first bytes (over TLS 1.2 the server's Finished
//! ends the handshake and its data follows in the same flight), so rustls holds their
//! plaintext while the socket is drained. They
//! must still reach `data` at once, not wait for the server's next bytes.
#![cfg(feature = "tls")]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;

use common::*;
use crossbeam_channel::{Sender, unbounded};
use evloop::net::tls::{ClientTls, provider};
use evloop::reactor::{Action, Conn, ConnectAddr, EventHandler, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};

const GREETING: &[u8] = b"+OK greeting from the backend\r\n";

/// Each accepted connection connects over TLS to `to`; what the outbound connection
/// receives goes to `seen`, a failed connect as its error text.
struct Greeted {
    to: ConnectAddr,
    tls: ClientTls,
    seen: Sender<Result<Vec<u8>, String>>,
}

impl EventHandler for Greeted {
    type State = ();

    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        if conn.origin().is_none() {
            conn.connect_tls(&self.to, Some(LIMIT), 1, &self.tls).expect("a socket");
        }
        ((), Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        if conn.origin().is_some() {
            let _ = self.seen.send(Ok(input.to_vec()));
        }
        (input.len(), Action::None)
    }

    fn connect_failed(
        &mut self,
        _: &mut Conn<'_>,
        _: &mut (),
        _: u64,
        err: std::io::Error,
    ) -> Action {
        let _ = self.seen.send(Err(err.to_string()));
        Action::Close
    }
}

/// A CA and a server certificate for "localhost" it signs: (client config trusting the
/// CA, server config with the certificate).
fn configs() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // TLS 1.2: the server's Finished comes last, so its first bytes follow it in the
    // same flight, the one the client's last handshake read takes.
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    (Arc::new(client), Arc::new(server))
}

/// A TLS server on a thread: greets in its first flight (queued before the handshake),
/// finishes the handshake, then says nothing more and holds the connection until the
/// client closes it.
fn greeting_backend(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut tls = ServerConnection::new(config).expect("server connection");
        std::io::Write::write_all(&mut tls.writer(), GREETING).expect("queue the greeting");
        while tls.is_handshaking() {
            if tls.complete_io(&mut tcp).is_err() {
                return;
            }
        }
        // Nothing more is sent: read until the client goes (or the timeout).
        while matches!(tls.complete_io(&mut tcp), Ok((n, _)) if n > 0) {}
    });
    addr
}

#[test]
fn a_server_that_speaks_first_is_heard_without_sending_again() {
    let (client, server) = configs();
    let backend = greeting_backend(server);
    let name = ServerName::try_from("localhost").expect("name");
    let (tx, rx) = unbounded();
    let evloop = Server::bind(local_config(1)).expect("bind");
    let addr = evloop.local_addrs()[0];
    let running = evloop
        .start(move |_| Greeted {
            to: ConnectAddr::Tcp(backend),
            tls: ClientTls::new(client.clone(), name.clone()),
            seen: tx.clone(),
        })
        .expect("start");
    let _client = connect(addr);
    let mut got = Vec::new();
    while got.len() < GREETING.len() {
        match rx.recv_timeout(LIMIT) {
            Ok(Ok(bytes)) => got.extend_from_slice(&bytes),
            Ok(Err(e)) => panic!("the TLS connect failed: {e}"),
            Err(_) => {
                panic!("no greeting within {LIMIT:?}; got {:?}", String::from_utf8_lossy(&got))
            }
        }
    }
    assert_eq!(got, GREETING);
    running.shutdown().expect("shutdown");
}
