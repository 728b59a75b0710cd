//! Linux: an eventfd waker registered level-triggered in epoll, `sched_setaffinity`
//! pinning, and `SO_REUSEPORT` that load-balances connections across sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::{Poll, Token};

/// Linux hashes incoming connections over every `SO_REUSEPORT` socket of an address.
pub(crate) const REUSEPORT_SPREADS: bool = true;

/// An eventfd, registered **level-triggered** in the loop's epoll instance (see
/// [`Waker`](crate::reactor::waker::Waker) for why).
#[derive(Debug)]
pub(crate) struct WakerInner {
    fd: OwnedFd,
}

impl WakerInner {
    /// Creates the eventfd and adds it to `poll`'s epoll set under `token`.
    pub(crate) fn new(poll: &Poll, token: Token) -> io::Result<WakerInner> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Level-triggered on purpose (no EPOLLET). The event's u64 carries the token,
        // which is how mio reads tokens back on Linux.
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token.0 as u64 };
        // SAFETY: both descriptors are open and `ev` is a valid epoll_event that
        // outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(poll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WakerInner { fd })
    }

    /// Adds one to the eventfd counter, making the poller return.
    pub(crate) fn wake(&self) -> io::Result<()> {
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

    /// Resets the counter to zero, so the level-triggered registration stops firing.
    pub(crate) fn drain(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64. One read resets an eventfd
        // counter to zero; EAGAIN (already drained) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
    }
}

/// Pinning is available (it may still be refused per thread, e.g. by a cpuset).
pub(crate) fn pin_supported() -> io::Result<()> {
    Ok(())
}

/// Pins the calling thread to `cpu` (modulo the CPUs this process may run on). An error
/// when the kernel refuses; the caller then runs unpinned.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `allowed` is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set; the index is below CPU_SETSIZE.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .collect();
    let Some(&target) = cpus.get(cpu % cpus.len().max(1)) else {
        return Err(io::Error::other("no CPU in this thread's affinity mask"));
    };
    // SAFETY: as above, zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the index comes from `cpus`, all below CPU_SETSIZE.
    unsafe { libc::CPU_SET(target, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
