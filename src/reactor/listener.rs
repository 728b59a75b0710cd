//! Binding listening sockets of every kind (TCP and UDP with socket2, with or without
//! `SO_REUSEPORT`; Unix sockets with stale-file handling), and per-connection options.

use std::io;
use std::net::SocketAddr;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use mio::net::{TcpListener, UdpSocket, UnixListener};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use super::config::Config;
use super::socket::Stream;

/// A nonblocking socket for `addr` with the options every listener kind shares:
/// `SO_REUSEPORT` when asked, IPv6-only for IPv6 addresses, buffer sizes; then bound.
fn bound_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    reuseport: bool,
    config: &Config,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(n) = config.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = config.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds a nonblocking TCP listener on `addr`. With `config.reuseport`, several
/// listeners may bind the same address and the kernel spreads incoming connections
/// among them. Errors name the address.
pub(crate) fn bind(addr: SocketAddr, config: &Config) -> io::Result<TcpListener> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket =
        bound_socket(addr, Type::STREAM, Protocol::TCP, config.reuseport, config).map_err(ctx)?;
    socket.listen(config.backlog).map_err(ctx)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds a nonblocking UDP socket (with `SO_REUSEPORT` when asked, so each loop can have
/// its own). Errors name the address.
pub(crate) fn bind_udp(
    addr: std::net::SocketAddr,
    reuseport: bool,
    config: &Config,
) -> io::Result<UdpSocket> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on udp://{addr}: {e}"));
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(ctx)?;
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
    Ok(UdpSocket::from_std(socket.into()))
}

/// Makes `path` free for a new Unix socket: a socket file left behind by a server that
/// is gone (nothing accepts on it) is removed; a live socket, or a path that is not a
/// socket, is an error. Errors name the path.
pub(crate) fn clear_stale_unix(path: &Path) -> io::Result<()> {
    let ctx = |e: io::Error| {
        io::Error::new(e.kind(), format!("cannot listen on unix:{}: {e}", path.display()))
    };
    let Ok(meta) = fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(ctx(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ctx(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is listening on this socket",
        ))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            fs::remove_file(path).map_err(ctx)
        }
        Err(e) => Err(ctx(e)),
    }
}

/// Sets a socket file's permission bits.
pub(crate) fn set_unix_mode(path: &Path, mode: Option<u32>) -> io::Result<()> {
    let Some(mode) = mode else { return Ok(()) };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot set the mode of {}: {e}", path.display()))
    })
}

/// Binds a Unix domain listener at `path` (see [`clear_stale_unix`]), with permission
/// bits `mode` when given.
pub(crate) fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    clear_stale_unix(path)?;
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on unix:{}: {e}", path.display()))
    })?;
    set_unix_mode(path, mode)?;
    Ok(listener)
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
