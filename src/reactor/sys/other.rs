//! Every platform but Linux (macOS, the BSDs): a `mio::Waker`, no CPU pinning, and
//! `SO_REUSEPORT` that does not spread connections (so the single acceptor is used).

use std::io;

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
