//! Binding listening sockets of every kind: TCP and UDP through socket2 (with or without
//! `SO_REUSEPORT`, IPv6-only for IPv6 addresses, buffer sizes), and Unix domain sockets
//! with stale-file handling and permission bits. Sockets come back blocking, as std types;
//! an engine that wants them nonblocking sets that itself. Errors name the address.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

/// What every listener kind shares when it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    /// Set `SO_REUSEPORT`, so several sockets can bind the same address and the kernel
    /// spreads connections (or datagrams) among them.
    pub reuseport: bool,
    /// The `listen(2)` backlog (stream sockets).
    pub backlog: i32,
    /// `SO_RCVBUF`, when set (inherited by accepted connections).
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF`, when set (inherited by accepted connections).
    pub send_buffer: Option<usize>,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions { reuseport: false, backlog: 1024, recv_buffer: None, send_buffer: None }
    }
}

/// A socket for `addr` with the options every kind shares, then bound.
fn bound_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    opts: &BindOptions,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    if opts.reuseport {
        set_reuse_port(&socket)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(n) = opts.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))]
fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT is not available on this platform",
    ))
}

/// Binds a listening TCP socket on `addr` (blocking). Errors name the address.
pub fn tcp_listener(addr: SocketAddr, opts: &BindOptions) -> io::Result<std::net::TcpListener> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket = bound_socket(addr, Type::STREAM, Protocol::TCP, opts).map_err(ctx)?;
    socket.listen(opts.backlog).map_err(ctx)?;
    Ok(socket.into())
}

/// Binds a UDP socket on `addr` (blocking). `opts.backlog` does not apply. Errors name
/// the address.
pub fn udp_socket(addr: SocketAddr, opts: &BindOptions) -> io::Result<std::net::UdpSocket> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on udp://{addr}: {e}"));
    let socket = bound_socket(addr, Type::DGRAM, Protocol::UDP, opts).map_err(ctx)?;
    Ok(socket.into())
}

/// Makes `path` free for a new Unix socket: a socket file left behind by a server that
/// is gone (nothing accepts on it) is removed; a live socket, or a path that is not a
/// socket, is an error. Errors name the path.
pub fn clear_stale_unix(path: &Path) -> io::Result<()> {
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

/// Sets a socket file's permission bits (nothing when `mode` is `None`).
pub fn set_unix_mode(path: &Path, mode: Option<u32>) -> io::Result<()> {
    let Some(mode) = mode else { return Ok(()) };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot set the mode of {}: {e}", path.display()))
    })
}

/// Binds a Unix domain listener at `path` (blocking; see [`clear_stale_unix`]), with
/// permission bits `mode` when given.
pub fn unix_listener(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    clear_stale_unix(path)?;
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on unix:{}: {e}", path.display()))
    })?;
    set_unix_mode(path, mode)?;
    Ok(listener)
}
