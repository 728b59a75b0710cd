//! Adopting an inherited socket ([`crate::net::activation`]): the reactor serves a
//! nonblocking duplicate of the descriptor, so the inherited one is never closed (it
//! belongs to systemd, or to whoever passed it, and keeps listening across a restart).

use std::io;
use std::net::SocketAddr;
use std::sync::Once;

use log::info;
use mio::net::{TcpListener, UdpSocket, UnixListener};

use super::socket::Listener;
use crate::net::activation::{self, Inherited, InheritedKind};

/// What an inherited socket becomes in the reactor.
pub(super) enum Adopted {
    /// A stream listener, for the acceptor.
    Stream(Listener),
    /// A UDP socket, for one loop.
    Udp(UdpSocket),
}

/// A nonblocking duplicate of `inherited`, and its TCP address when it is TCP. With
/// `reuseport` it says once that inherited sockets go through the acceptor.
pub(super) fn adopt(
    inherited: &Inherited,
    reuseport: bool,
) -> io::Result<(Adopted, Option<SocketAddr>)> {
    if reuseport {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            info!(
                "inherited sockets are served through the single acceptor (--reuseport needs a \
                 socket per loop, which only evloop's own binding can make)"
            )
        });
    }
    let fd = activation::duplicate(inherited.fd)?;
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {inherited}: {e}"));
    Ok(match inherited.kind {
        InheritedKind::Tcp(_) => {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true).map_err(ctx)?;
            let actual = l.local_addr().map_err(ctx)?;
            (Adopted::Stream(Listener::Tcp(TcpListener::from_std(l))), Some(actual))
        }
        InheritedKind::Unix(_) => {
            let l = std::os::unix::net::UnixListener::from(fd);
            l.set_nonblocking(true).map_err(ctx)?;
            (Adopted::Stream(Listener::Unix(UnixListener::from_std(l))), None)
        }
        InheritedKind::Udp(_) => {
            let u = std::net::UdpSocket::from(fd);
            u.set_nonblocking(true).map_err(ctx)?;
            (Adopted::Udp(UdpSocket::from_std(u)), None)
        }
    })
}
