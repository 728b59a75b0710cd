//! The socket kinds a loop serves: TCP and Unix domain streams (one connection type) and
//! their listeners, each a mio `Source`; starting a nonblocking connect and reading its
//! outcome; the stream handed back on detach; the socket files a server removes when it
//! stops. (UDP sockets are plain `mio::net::UdpSocket`s.)

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::handler::ConnectAddr;
use crate::net::addr::Peer;

/// A connected stream: TCP or Unix domain.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A stream handed back by [`Action::Detach`](super::Action::Detach): still nonblocking,
/// registered with no loop.
#[derive(Debug)]
pub enum DetachedStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix domain socket connection.
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    /// The local address of a TCP connection (a `getsockname` call).
    pub(crate) fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Unix(_) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "a Unix socket has no IP address"))
            }
        }
    }

    /// The connection's peer (a `getpeername` call for TCP; a Unix socket's peer is
    /// always [`Peer::Unix`], no call made).
    pub(crate) fn peer(&self) -> io::Result<Peer> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Inet),
            Stream::Unix(_) => Ok(Peer::Unix),
        }
    }

    /// How a nonblocking connect ended, on a writable (or error) event: `None` while it
    /// is still in progress, else the peer or the error (`SO_ERROR`).
    pub(crate) fn connect_result(&self) -> Option<io::Result<Peer>> {
        let err = match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        };
        match err {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        let peer = match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Inet),
            Stream::Unix(s) => s.peer_addr().map(|_| Peer::Unix),
        };
        match peer {
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                None
            }
            r => Some(r),
        }
    }

    /// Shuts the write side down (sends FIN on TCP).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Starts a nonblocking connect to `to`. The outer `Err`: no socket could be made;
    /// the inner one: the connect failed at once (refused, no such file, ...). A
    /// connect in progress is `Ok`: its end comes as a writable event
    /// ([`connect_result`](Self::connect_result)).
    pub(crate) fn connect(to: &ConnectAddr) -> io::Result<(Stream, io::Result<()>)> {
        let (sock, addr) = match to {
            ConnectAddr::Tcp(a) => {
                let domain = Domain::for_address(*a);
                (Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?, Ok(SockAddr::from(*a)))
            }
            ConnectAddr::Unix(path) => {
                (Socket::new(Domain::UNIX, Type::STREAM, None)?, SockAddr::unix(path))
            }
        };
        sock.set_nonblocking(true)?;
        let result = addr.and_then(|a| match sock.connect(&a) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
            r => r,
        });
        let stream = match to {
            ConnectAddr::Tcp(_) => Stream::Tcp(TcpStream::from_std(sock.into())),
            ConnectAddr::Unix(_) => Stream::Unix(UnixStream::from_std(sock.into())),
        };
        Ok((stream, result))
    }

    pub(crate) fn into_detached(self) -> DetachedStream {
        match self {
            Stream::Tcp(s) => DetachedStream::Tcp(s.into()),
            Stream::Unix(s) => DetachedStream::Unix(s.into()),
        }
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return super::sys::recv(std::os::fd::AsRawFd::as_raw_fd(*self), buf);
        #[cfg(not(target_os = "linux"))]
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return super::sys::send(std::os::fd::AsRawFd::as_raw_fd(*self), buf);
        #[cfg(not(target_os = "linux"))]
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Implements mio's `Source` for an enum of sources by delegating to the variant held.
macro_rules! delegate_source {
    ($ty:ident { $($variant:ident),+ }) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $($ty::$variant(s) => s.register(r, t, i),)+
                }
            }

            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $($ty::$variant(s) => s.reregister(r, t, i),)+
                }
            }

            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self {
                    $($ty::$variant(s) => s.deregister(r),)+
                }
            }
        }
    };
}

delegate_source!(Stream { Tcp, Unix });

/// A listening socket: TCP or Unix domain.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Accepts one connection (nonblocking).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Peer::Inet(a))),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }
}

delegate_source!(Listener { Tcp, Unix });

/// The socket files a server created, removed once it has stopped cleanly.
#[derive(Debug, Default)]
pub(crate) struct UnixPaths(pub(crate) Vec<PathBuf>);

impl UnixPaths {
    pub(crate) fn remove(&self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}
