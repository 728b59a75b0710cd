//! The reactor's listeners: sockets bound through [`crate::net::bind`] and made
//! nonblocking for mio, and the per-connection options applied after accept.

use std::io;
use std::net::SocketAddr;

use std::path::Path;

use mio::net::{TcpListener, UdpSocket, UnixListener};
use socket2::{SockRef, TcpKeepalive};

use crate::net::bind::{self, BindOptions};

use super::config::Config;
use super::socket::Stream;

/// The binding options `config` asks for, with `SO_REUSEPORT` as given.
fn bind_options(config: &Config, reuseport: bool) -> BindOptions {
    BindOptions {
        reuseport,
        backlog: config.backlog,
        recv_buffer: config.recv_buffer,
        send_buffer: config.send_buffer,
    }
}

/// Binds a nonblocking TCP listener on `addr`. With `config.reuseport`, several
/// listeners may bind the same address and the kernel spreads incoming connections
/// among them. Errors name the address.
pub(crate) fn bind(addr: SocketAddr, config: &Config) -> io::Result<TcpListener> {
    let l = bind::tcp_listener(addr, &bind_options(config, config.reuseport))?;
    l.set_nonblocking(true)?;
    Ok(TcpListener::from_std(l))
}

/// Binds a nonblocking UDP socket (with `SO_REUSEPORT` when asked, so each loop can have
/// its own). Errors name the address.
pub(crate) fn bind_udp(
    addr: SocketAddr,
    reuseport: bool,
    config: &Config,
) -> io::Result<UdpSocket> {
    let s = bind::udp_socket(addr, &bind_options(config, reuseport))?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s))
}

/// Binds a nonblocking Unix domain listener at `path` (a stale socket file is replaced),
/// with permission bits `mode` when given.
pub(crate) fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    let l = bind::unix_listener(path, mode)?;
    l.set_nonblocking(true)?;
    Ok(UnixListener::from_std(l))
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
