//! Waking a loop (or the acceptor) from another thread.
//!
//! On Linux the waker is an eventfd registered **level-triggered** in the loop's epoll
//! instance, and the loop reads (drains) it every time it fires. Level triggering makes a
//! forgotten drain loud instead of silent: the poller would return at once forever (the
//! 100% CPU bug evio had), which the `waker_drained` test catches. Wakes are coalesced:
//! a sender writes the eventfd only when no wake is already pending. Elsewhere the kernel
//! object is a `mio::Waker`; both live in [`super::sys`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::{Poll, Token};

use super::sys::WakerInner;

/// A cross-thread wake-up for one loop. Shared behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Waker {
    pending: AtomicBool,
    inner: WakerInner,
}

impl Waker {
    /// Creates the waker and registers it in `poll` under `token`.
    pub(crate) fn new(poll: &Poll, token: Token) -> io::Result<Waker> {
        Ok(Waker { pending: AtomicBool::new(false), inner: WakerInner::new(poll, token)? })
    }

    /// Makes the loop's next (or current) poll return. Cheap when a wake is already
    /// pending: no syscall.
    pub(crate) fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.wake()
    }

    /// Called by the loop when the waker fired, before it processes its command
    /// channel: drains the kernel object, then re-arms coalescing.
    ///
    /// The order matters. A sender that finds the flag already set skips its eventfd
    /// write, relying on the one who set it. Draining first means every write that
    /// could belong to a flag setter after our re-arm lands after the drain and wakes
    /// the loop again; re-arming first would let the drain swallow such a write and
    /// strand the commands queued behind it.
    pub(crate) fn reset(&self) {
        self.inner.drain();
        // A read-modify-write, not a plain store: it reads from the last sender's
        // `swap(true)`, so every command sent before that swap is visible to the
        // channel reads that follow.
        self.pending.swap(false, Ordering::AcqRel);
    }
}
