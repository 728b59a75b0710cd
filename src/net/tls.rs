//! TLS configuration, engine-neutral: loading a certificate chain, its private key and
//! (for mTLS) a client CA from PEM files into a rustls [`ServerConfig`] (TLS 1.2 and 1.3,
//! the `ring` provider, ALPN, session resumption by tickets and a session cache), and
//! swapping it at run time ([`TlsConfig::reload`], what `evloop serve` does on SIGHUP).
//!
//! The reactor reads [`TlsSetup`] (which listeners are TLS, the swappable configuration,
//! the handshake timeout) and runs rustls' sans-IO `ServerConnection` on its loops; see
//! `reactor/event_loop/tls.rs`. Nothing here does I/O on sockets.
//!
//! Built without the `tls` cargo feature (no rustls), [`TlsConfig::load`] is an error
//! saying so, and no TLS configuration can exist.
//!
//! Every error is one line that names the file it is about, for the command line to print
//! before exiting: a missing or unreadable file, a file with no PEM item of the expected
//! kind, a key that does not match the certificate.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "tls")]
use rustls::crypto::CryptoProvider;
#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
#[cfg(feature = "tls")]
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, WebPkiClientVerifier};
#[cfg(feature = "tls")]
use rustls::{RootCertStore, ServerConfig};
#[cfg(feature = "tls")]
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::{Mutex, PoisonError};

/// How long a TLS peer may take to complete its handshake, counted from accept, when no
/// other timeout is configured.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(feature = "tls")]
/// Sessions the server remembers for resumption by session ID (TLS 1.2 without tickets);
/// tickets need no server-side memory.
const SESSION_CACHE: usize = 4096;

/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where the certificate, the key and the optional client CA are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate issued by one
    /// of them (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS configuration, swappable while it runs: connections take the current
/// [`ServerConfig`] when they are accepted, so a reload affects new connections only.
///
/// The ticket key and the session cache are kept across reloads, so clients resume
/// sessions made before one.
pub struct TlsConfig {
    /// The files it was loaded from (`None`: built from a `ServerConfig`; no reload).
    files: Option<TlsFiles>,
    /// Bumped by every swap; loops compare it with the one they cached (one atomic load
    /// per accepted TLS connection, no lock).
    generation: AtomicU64,
    #[cfg(feature = "tls")]
    alpn: Vec<Vec<u8>>,
    #[cfg(feature = "tls")]
    ticketer: Option<Arc<dyn ProducesTickets>>,
    #[cfg(feature = "tls")]
    sessions: Arc<ServerSessionMemoryCache>,
    #[cfg(feature = "tls")]
    current: Mutex<Arc<ServerConfig>>,
}

/// The error of a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
const NO_TLS: &str = "this evloop was built without TLS (cargo feature `tls`)";

#[cfg(not(feature = "tls"))]
impl TlsConfig {
    /// Without the `tls` feature: always an error saying so.
    pub fn load(_files: TlsFiles, _alpn: Vec<Vec<u8>>) -> Result<TlsConfig, String> {
        Err(NO_TLS.into())
    }

    /// Without the `tls` feature: always an error saying so.
    pub fn reload(&self) -> Result<(), String> {
        Err(NO_TLS.into())
    }

    /// Without the `tls` feature: always an error saying so.
    pub fn reload_from(&self, _files: &TlsFiles) -> Result<(), String> {
        Err(NO_TLS.into())
    }
}

impl TlsConfig {
    /// The files this configuration was loaded from.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.files.as_ref()
    }

    /// The swap count: changes whenever `set` or a successful
    /// [`reload`](Self::reload) installs a new configuration.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.files)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl TlsConfig {
    /// Loads `files` into a server configuration offering `alpn` (e.g. [`ALPN_HTTP1`]; empty:
    /// no ALPN). Errors are one line naming the file.
    pub fn load(files: TlsFiles, alpn: Vec<Vec<u8>>) -> Result<TlsConfig, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot set up TLS session tickets: {e}"))?;
        let sessions = ServerSessionMemoryCache::new(SESSION_CACHE);
        let built = build(&files, &alpn, Some(&ticketer), &sessions)?;
        Ok(TlsConfig {
            files: Some(files),
            alpn,
            ticketer: Some(ticketer),
            sessions,
            generation: AtomicU64::new(0),
            current: Mutex::new(built),
        })
    }

    /// Wraps a configuration built elsewhere (an embedder's). [`reload`](Self::reload)
    /// is then an error; [`set`](Self::set) swaps it.
    pub fn from_server_config(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig {
            files: None,
            alpn: config.alpn_protocols.clone(),
            ticketer: None,
            sessions: ServerSessionMemoryCache::new(1),
            generation: AtomicU64::new(0),
            current: Mutex::new(config),
        }
    }

    /// The configuration new connections use, with its generation.
    pub fn current(&self) -> (u64, Arc<ServerConfig>) {
        let guard = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation.load(Ordering::Acquire), guard.clone())
    }

    /// Installs `config` for the connections accepted from now on.
    pub fn set(&self, config: Arc<ServerConfig>) {
        let mut guard = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads the files again and installs the result. On an error (one line naming the
    /// file) the configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let Some(files) = &self.files else {
            return Err("this TLS configuration was not loaded from files".into());
        };
        let built = build(files, &self.alpn, self.ticketer.as_ref(), &self.sessions)?;
        self.set(built);
        Ok(())
    }

    /// Reads `files` (possibly other paths than those it was loaded from: a
    /// `--config` file changed on SIGHUP) and installs the result, keeping the ALPN
    /// list, ticket key and session cache. On an error the configuration in use stays.
    /// [`files`](Self::files) still names the files it was first loaded from.
    pub fn reload_from(&self, files: &TlsFiles) -> Result<(), String> {
        let built = build(files, &self.alpn, self.ticketer.as_ref(), &self.sessions)?;
        self.set(built);
        Ok(())
    }
}

/// Builds a server configuration from `files`.
#[cfg(feature = "tls")]
fn build(
    files: &TlsFiles,
    alpn: &[Vec<u8>],
    ticketer: Option<&Arc<dyn ProducesTickets>>,
    sessions: &Arc<ServerSessionMemoryCache>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "TLS certificate")?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "TLS client CA")? {
                roots.add(cert).map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "TLS key {} does not match the certificate {}",
            files.key.display(),
            files.cert.display()
        ),
        e => format!(
            "TLS certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ),
    })?;
    config.alpn_protocols = alpn.to_vec();
    config.session_storage = sessions.clone();
    if let Some(t) = ticketer {
        config.ticketer = t.clone();
    }
    Ok(Arc::new(config))
}

/// Reads the whole of a file, naming it in the error.
#[cfg(feature = "tls")]
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// Every certificate in a PEM file; at least one.
#[cfg(feature = "tls")]
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
#[cfg(feature = "tls")]
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path, "TLS key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "TLS key {}: no private key in it (expected PEM \"BEGIN PRIVATE KEY\", \
             \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
            path.display()
        ),
        e => format!("TLS key {}: bad PEM: {e}", path.display()),
    })
}

/// Which listeners of a server speak TLS, and how (reactor engine only).
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// Positions, in the server's listen list, of the TLS listeners (TCP only).
    pub listeners: Vec<usize>,
    /// The configuration new TLS connections take.
    pub config: Arc<TlsConfig>,
    /// Close a connection whose handshake is not complete this long after it was
    /// accepted (`None`: no limit).
    pub handshake_timeout: Option<Duration>,
}

impl TlsSetup {
    /// TLS on the listeners at `listeners` with `config`, and the default handshake timeout.
    pub fn new(listeners: Vec<usize>, config: Arc<TlsConfig>) -> TlsSetup {
        TlsSetup { listeners, config, handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT) }
    }

    /// Whether the listener at position `listener` speaks TLS.
    #[inline]
    pub fn is_tls(&self, listener: usize) -> bool {
        self.listeners.contains(&listener)
    }
}

/// A crypto provider for clients and tests that want the same one the server uses.
#[cfg(feature = "tls")]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client-side TLS for an outbound connection ([`Conn::connect_tls`]): the rustls
/// client configuration (trusted roots) and the name the server's certificate must
/// carry (a DNS name, sent as SNI, or an IP address, matched against the certificate's
/// IP SANs and sent as no SNI). Cheap to clone (the configuration is shared).
///
/// Built without the `tls` cargo feature, [`ClientTls::from_ca_file`] is an error and no
/// value can exist.
///
/// [`Conn::connect_tls`]: crate::reactor::Conn::connect_tls
#[derive(Clone)]
pub struct ClientTls {
    #[cfg(feature = "tls")]
    pub(crate) config: Arc<rustls::ClientConfig>,
    #[cfg(feature = "tls")]
    pub(crate) name: rustls::pki_types::ServerName<'static>,
    /// Never made in a build without TLS (its constructor is an error).
    #[cfg(not(feature = "tls"))]
    _none: (),
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "tls")]
        return f.debug_struct("ClientTls").field("name", &self.name).finish_non_exhaustive();
        #[cfg(not(feature = "tls"))]
        f.write_str("ClientTls")
    }
}

#[cfg(feature = "tls")]
impl ClientTls {
    /// Client TLS with `config` (for tests and embedders), verifying `name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> ClientTls {
        ClientTls { config, name }
    }

    /// A client configuration (TLS 1.2 and 1.3, no client certificate) trusting the CA
    /// certificates in the PEM file `ca`; one line naming the file on error.
    pub fn roots_from_ca_file(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca, "backend CA")? {
            roots.add(cert).map_err(|e| format!("backend CA {}: {e}", ca.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Client TLS with `config` verifying `name`: a DNS name (sent as SNI) or an IP
    /// address (no SNI; the certificate needs it as an IP SAN).
    pub fn for_name(config: Arc<rustls::ClientConfig>, name: &str) -> Result<ClientTls, String> {
        Ok(ClientTls { config, name: server_name(name)? })
    }

    /// [`roots_from_ca_file`](Self::roots_from_ca_file) then [`for_name`](Self::for_name).
    pub fn from_ca_file(ca: &Path, name: &str) -> Result<ClientTls, String> {
        ClientTls::for_name(ClientTls::roots_from_ca_file(ca)?, name)
    }
}

/// `name` as a TLS server name (a DNS name or an IP address); the error says why not.
#[cfg(feature = "tls")]
fn server_name(name: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("`{name}` is not a valid TLS server name: {e}"))
}

/// Checks that `name` can be verified as a TLS server name (a DNS name or an IP
/// address), so a bad `sni=` is refused when the backends are loaded, not at each
/// connect. Always fine in a build without the `tls` feature (nothing speaks TLS there).
pub fn check_server_name(name: &str) -> Result<(), String> {
    #[cfg(feature = "tls")]
    return server_name(name).map(|_| ());
    #[cfg(not(feature = "tls"))]
    {
        let _ = name;
        Ok(())
    }
}

#[cfg(not(feature = "tls"))]
impl ClientTls {
    /// Always an error: this build has no TLS.
    pub fn from_ca_file(_ca: &std::path::Path, _name: &str) -> Result<ClientTls, String> {
        Err("TLS to backends needs evloop built with the `tls` feature".into())
    }
}

/// Trusted roots for TLS to servers (`evloop proxy --backend-ca`): a shared rustls
/// client configuration, from which [`ClientTls`] values are made per server name.
#[derive(Clone)]
pub struct ClientRoots {
    #[cfg(feature = "tls")]
    config: Arc<rustls::ClientConfig>,
    /// Never made in a build without TLS (its constructor is an error).
    #[cfg(not(feature = "tls"))]
    _none: (),
}

impl fmt::Debug for ClientRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientRoots")
    }
}

impl ClientRoots {
    /// The CA certificates in the PEM file `ca`; one line naming the file on error (and
    /// always an error in a build without the `tls` feature).
    pub fn from_ca_file(ca: &std::path::Path) -> Result<ClientRoots, String> {
        #[cfg(feature = "tls")]
        return Ok(ClientRoots { config: ClientTls::roots_from_ca_file(ca)? });
        #[cfg(not(feature = "tls"))]
        {
            let _ = ca;
            Err("TLS to backends needs evloop built with the `tls` feature".into())
        }
    }

    /// Client TLS with these roots verifying `name` (a DNS name or an IP address).
    pub fn for_name(&self, name: &str) -> Result<ClientTls, String> {
        #[cfg(feature = "tls")]
        return ClientTls::for_name(self.config.clone(), name);
        #[cfg(not(feature = "tls"))]
        {
            let _ = (name, self._none);
            Err("TLS to backends needs evloop built with the `tls` feature".into())
        }
    }
}
