//! Binding listening sockets (socket2), with or without `SO_REUSEPORT`.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use super::config::Config;
use super::socket::Stream;

/// Binds a nonblocking TCP listener on `addr`. With `reuseport`, several listeners may
/// bind the same address and the kernel spreads incoming connections among them.
/// Errors name the address.
pub(crate) fn bind(addr: SocketAddr, config: &Config) -> io::Result<TcpListener> {
    let (reuseport, backlog) = (config.reuseport, config.backlog);
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(ctx)?;
    socket.set_reuse_address(true).map_err(ctx)?;
    #[cfg(unix)]
    if reuseport {
        socket.set_reuse_port(true).map_err(ctx)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(ctx)?;
    }
    if let Some(n) = config.recv_buffer {
        socket.set_recv_buffer_size(n).map_err(ctx)?;
    }
    if let Some(n) = config.send_buffer {
        socket.set_send_buffer_size(n).map_err(ctx)?;
    }
    socket.set_nonblocking(true).map_err(ctx)?;
    socket.bind(&addr.into()).map_err(ctx)?;
    socket.listen(backlog).map_err(ctx)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Applies per-connection socket options of `config` to a freshly accepted socket.
pub(crate) fn configure_accepted(sock: &Stream, config: &Config) {
    let Stream::Tcp(sock) = sock else { return };
    if config.nodelay {
        let _ = sock.set_nodelay(true);
    }
    if let Some((idle, interval)) = config.keepalive {
        let ka = TcpKeepalive::new().with_time(idle).with_interval(interval);
        if let Err(e) = SockRef::from(sock).set_tcp_keepalive(&ka) {
            log::debug!("cannot set TCP keepalive: {e}");
        }
    }
}

/// Whether an accept error is about a resource running out (back off and retry later)
/// rather than about one aborted connection (skip it and accept the next).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
