//! [`ConnInfo`]: what an engine knows about a connection when it starts a session
//! (addresses, descriptor), for protocols that show it (Redis `CLIENT LIST`). Plain
//! values: a protocol still knows nothing of sockets.

use std::net::SocketAddr;

/// Facts about a new connection, passed to [`Protocol::new_session_for`].
///
/// [`Protocol::new_session_for`]: super::Protocol::new_session_for
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client: the address a PROXY header named when the engine accepted one, else
    /// the socket's peer. `None` for a Unix socket or a datagram.
    pub peer: Option<SocketAddr>,
    /// The local address the client connected to. `None` for a Unix socket.
    pub local: Option<SocketAddr>,
    /// The connection's file descriptor number (for display); `None` when unknown.
    pub fd: Option<i64>,
}
