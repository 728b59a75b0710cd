//! The socket kinds a loop serves: TCP and Unix domain streams (one connection type) and
//! their listeners, each a mio `Source`; the stream handed back on detach; the socket
//! files a server removes when it stops. (UDP sockets are plain `mio::net::UdpSocket`s.)

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

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

    pub(crate) fn into_detached(self) -> DetachedStream {
        match self {
            Stream::Tcp(s) => DetachedStream::Tcp(s.into()),
            Stream::Unix(s) => DetachedStream::Unix(s.into()),
        }
    }
}

impl Read for &Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
