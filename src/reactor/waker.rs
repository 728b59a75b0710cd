//! Waking a loop from another thread.
//!
//! On Linux the waker is an eventfd registered **level-triggered** in the loop's epoll
//! instance, and the loop reads (drains) it every time it fires. Level triggering makes a
//! forgotten drain loud instead of silent: the poller would return at once forever (the
//! 100% CPU bug evio had), which the `waker_drained` test catches. Wakes are coalesced:
//! a sender writes the eventfd only when no wake is already pending.
//!
//! Elsewhere the waker is a `mio::Waker`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::{Poll, Token};

/// A cross-thread wake-up for one loop. Shared behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Waker {
    pending: AtomicBool,
    inner: sys::Inner,
}

impl Waker {
    /// Creates the waker and registers it in `poll` under `token`.
    pub(crate) fn new(poll: &Poll, token: Token) -> io::Result<Waker> {
        Ok(Waker { pending: AtomicBool::new(false), inner: sys::Inner::new(poll, token)? })
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

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use mio::{Poll, Token};

    #[derive(Debug)]
    pub(super) struct Inner {
        fd: OwnedFd,
    }

    impl Inner {
        pub(super) fn new(poll: &Poll, token: Token) -> io::Result<Inner> {
            // SAFETY: eventfd takes no pointers; the result is checked before use.
            let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // Level-triggered on purpose (no EPOLLET); see the module docs. The event's
            // u64 carries the token, which is how mio reads tokens back on Linux.
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token.0 as u64 };
            // SAFETY: both descriptors are open and `ev` is a valid epoll_event that
            // outlives the call.
            let rc = unsafe {
                libc::epoll_ctl(poll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Inner { fd })
        }

        pub(super) fn wake(&self) -> io::Result<()> {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an open eventfd.
            let rc = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                // EAGAIN: the counter is saturated, so the loop is certainly woken.
                if err.kind() != io::ErrorKind::WouldBlock {
                    return Err(err);
                }
            }
            Ok(())
        }

        pub(super) fn drain(&self) {
            let mut buf: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live u64. One read resets an eventfd
            // counter to zero; EAGAIN (already drained) is fine.
            let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    use mio::{Poll, Token};

    #[derive(Debug)]
    pub(super) struct Inner {
        waker: mio::Waker,
    }

    impl Inner {
        pub(super) fn new(poll: &Poll, token: Token) -> io::Result<Inner> {
            Ok(Inner { waker: mio::Waker::new(poll.registry(), token)? })
        }
        pub(super) fn wake(&self) -> io::Result<()> {
            self.waker.wake()
        }
        pub(super) fn drain(&self) {}
    }
}
