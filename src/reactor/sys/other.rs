//! Every platform but Linux (macOS, the BSDs): a `mio::Waker`, no CPU pinning,
//! `SO_REUSEPORT` that does not spread connections (so the single acceptor is used), and
//! no `splice(2)` (linked pairs copy).

use std::io;
use std::os::fd::RawFd;

use mio::{Poll, Token};

/// On macOS and the BSDs `SO_REUSEPORT` lets sockets share an address but does not
/// balance connections across them (one socket gets them all).
pub(crate) const REUSEPORT_SPREADS: bool = false;

/// A `mio::Waker` (kqueue's user event on macOS and the BSDs).
#[derive(Debug)]
pub(crate) struct WakerInner {
    waker: mio::Waker,
}

impl WakerInner {
    /// Creates the waker, registered in `poll` under `token`.
    pub(crate) fn new(poll: &Poll, token: Token) -> io::Result<WakerInner> {
        Ok(WakerInner { waker: mio::Waker::new(poll.registry(), token)? })
    }

    /// Makes the poller return.
    pub(crate) fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    /// Nothing to drain: mio's waker resets itself when it fires.
    pub(crate) fn drain(&self) {}
}

/// CPU pinning is implemented for Linux only: an `Unsupported` error, which
/// [`Server::bind`](crate::reactor::Server::bind) returns when `pin` is asked for.
pub(crate) fn pin_supported() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning loop threads to CPUs (--pin) is supported on Linux only",
    ))
}

/// Never reached (`pin_supported` fails first); the same error.
pub(crate) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    pin_supported()
}

/// No `splice(2)` here: [`Pipe::new`] fails, so links use the copy path and the other
/// methods are never reached.
#[derive(Debug)]
pub(crate) struct Pipe(());

impl Pipe {
    /// `Unsupported`: splicing is Linux only.
    pub(crate) fn new() -> io::Result<Pipe> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "splice(2) is Linux only"))
    }

    pub(crate) fn len(&self) -> usize {
        0
    }

    pub(crate) fn fill_from(&mut self, _from: RawFd) -> io::Result<usize> {
        Pipe::new().map(|_| 0)
    }

    pub(crate) fn drain_to(&mut self, _to: RawFd) -> io::Result<usize> {
        Pipe::new().map(|_| 0)
    }

    pub(crate) fn empty_into(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        Ok(())
    }
}
