//! TLS on the loop, in a build without the `tls` cargo feature: the same items as
//! `tls.rs`, none of which can do anything, since no TLS configuration can exist
//! ([`TlsConfig::load`](crate::net::tls::TlsConfig::load) is an error there). The seams
//! in the read, write and close paths compile unchanged.

use std::convert::Infallible;
use std::io;
use std::time::Instant;

use super::EventLoop;
use super::conn::Connection;
use crate::net::addr::Peer;
use crate::net::tls::ClientTls;
use crate::reactor::config::Config;
use crate::reactor::handler::EventHandler;
use crate::reactor::socket::Stream;
use crate::reactor::stats::LoopStats;

/// A TLS session: none exists in this build.
pub(crate) enum TlsSession {}

impl TlsSession {
    /// Never called: there is no session.
    pub(super) fn encrypt(&mut self, _plain: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
        match *self {}
    }

    /// Never called: there is no session.
    pub(super) fn encrypt_slice(&mut self, _data: &[u8], _out: &mut Vec<u8>) -> io::Result<()> {
        match *self {}
    }

    /// Never called: there is no session.
    pub(super) fn close_notify(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        match *self {}
    }
}

/// A loop's TLS state: none in this build.
pub(super) enum LoopTls {}

impl LoopTls {
    /// Always `None`.
    pub(super) fn of(_config: &Config) -> Option<LoopTls> {
        None
    }
}

/// Always `Ok(None)`: no listener is TLS.
pub(super) fn new_session(
    _tls: Option<&mut LoopTls>,
    _listener: usize,
    _key: usize,
    _generation: u64,
) -> Result<Option<Box<TlsSession>>, Infallible> {
    Ok(None)
}

impl<H: EventHandler> EventLoop<H> {
    /// Never called: no connection has a session.
    pub(super) fn on_readable_tls(&mut self, _key: usize) {}

    /// Always `None`.
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        None
    }

    /// Nothing to expire.
    pub(super) fn expire_handshakes(&mut self, _now: Instant) {}
}

impl<S> Connection<S> {
    /// Nothing to end.
    pub(super) fn end_tls(&mut self) {}
}

/// A client handshake: none exists in this build (no [`ClientTls`] can).
pub(super) enum ClientHandshake {}

/// Where a handshake stands: never asked in this build.
#[allow(dead_code)] // matched by `connect.rs`, never made without TLS
pub(super) enum HandshakeStep {
    /// Waiting.
    Pending,
    /// Done.
    Done,
    /// Failed.
    Failed(io::Error),
}

impl ClientHandshake {
    /// Always `Unsupported`: no TLS in this build (and no [`ClientTls`] can be made).
    pub(super) fn start(_tls: &ClientTls, _peer: Peer) -> io::Result<ClientHandshake> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "evloop is built without TLS"))
    }

    /// Never called.
    pub(super) fn peer(&self) -> Peer {
        match *self {}
    }

    /// Never called.
    pub(super) fn advance(&mut self, _sock: &Stream, _stats: &LoopStats) -> HandshakeStep {
        match *self {}
    }

    /// Never called.
    pub(super) fn into_session(self) -> Box<TlsSession> {
        match self {}
    }
}
