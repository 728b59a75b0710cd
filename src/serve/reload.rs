//! SIGHUP when the server was started with `--config FILE`: the command line re-reads
//! the file (a [`Rereader`], which also applies the log level and warns about keys that
//! need a restart) and this module applies what can change at runtime: the TLS
//! certificate, key and client CA (possibly from new paths; new connections use them)
//! and, for the proxy, the backend set (through the hook the proxy adds). A file that no
//! longer parses yields nothing and everything stays as it was.
//!
//! Without `--config`, SIGHUP keeps its old meaning ([`super::run::tls_reload`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use log::{error, info, warn};

use super::Settings;
use crate::net::tls::TlsFiles;
use crate::proxy::backend::BackendSpec;

/// What the re-read configuration file asks for, of the parts that can change at
/// runtime (the log level is applied by the [`Rereader`] itself).
#[derive(Debug, Clone, Default)]
pub struct Reread {
    /// The TLS files (`tls-cert`, `tls-key`, `tls-client-ca`), when both the
    /// certificate and the key are given.
    pub tls: Option<TlsFiles>,
    /// The proxy's `backend`s.
    pub backends: Vec<BackendSpec>,
    /// The proxy's `backends-file`.
    pub backends_file: Option<PathBuf>,
}

/// Re-reads the configuration file: `None` when it cannot be read or parsed (the
/// rereader has logged why, naming file and line), else what it now says.
#[derive(Clone)]
pub struct Rereader(pub Arc<dyn Fn() -> Option<Reread> + Send + Sync>);

impl fmt::Debug for Rereader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rereader")
    }
}

/// The extra step of a reload (e.g. the proxy's backends), given what the file says.
pub type ApplyHook = Box<dyn FnMut(&Reread) + Send>;

/// The SIGHUP hook of a server started with `--config`: re-reads the file with
/// `reread`; when it parses, reloads TLS (when `settings` has TLS on) from the files it
/// names now, then runs `other`. A failed TLS load keeps the certificate in force.
pub fn config_hangup(
    settings: &Settings,
    reread: Rereader,
    mut other: Option<ApplyHook>,
) -> Box<dyn FnMut() + Send> {
    let tls = settings.tls.as_ref().map(|t| t.config.clone());
    let mut files = tls.as_ref().and_then(|t| t.files().cloned());
    Box::new(move || {
        let Some(now) = (reread.0)() else { return };
        if let (Some(_), None) = (&tls, &now.tls) {
            warn!("tls: no tls-cert and tls-key in the file now; keeping the certificate in force");
        }
        if let (Some(tls), Some(new)) = (&tls, &now.tls) {
            match tls.reload_from(new) {
                Ok(()) => {
                    if files.as_ref().is_some_and(|old| old != new) {
                        info!(
                            "tls: reloaded {} (new paths; new connections use them)",
                            new.cert.display()
                        );
                    } else {
                        info!("tls: reloaded {}", new.cert.display());
                    }
                    files = Some(new.clone());
                }
                Err(e) => error!("tls: reload failed, keeping the certificate in force: {e}"),
            }
        }
        if let Some(h) = other.as_mut() {
            h(&now);
        }
    })
}
