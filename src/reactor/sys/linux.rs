//! Linux: an eventfd waker registered level-triggered in epoll, `sched_setaffinity`
//! pinning, `SO_REUSEPORT` that load-balances connections across sockets, and the
//! `splice(2)` pipes of linked pairs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// The capacity asked for a splice pipe (`F_SETPIPE_SZ`; the kernel may round it up or,
/// above `/proc/sys/fs/pipe-max-size`, refuse: the default size is kept then).
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// A nonblocking pipe that carries one direction of a spliced link: bytes spliced in
/// from one socket wait here until they are spliced out to the other. `len` counts what
/// is inside (the kernel does not say).
#[derive(Debug)]
pub(crate) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    len: usize,
    cap: usize,
}

impl Pipe {
    /// A fresh empty pipe, nonblocking on both ends.
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are fresh and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure (a size above the limit) is fine.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: fcntl F_GETPIPE_SZ only reads the pipe's size.
        let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let cap = if cap > 0 { cap as usize } else { 64 * 1024 };
        Ok(Pipe { r, w, len: 0, cap })
    }

    /// Bytes in the pipe.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Moves what `from` (a socket) holds into the pipe, up to its free room: the bytes
    /// moved (0: end of input). `WouldBlock` when the socket is drained — or the pipe
    /// full, which the caller tells apart by `len` (it fills only an empty pipe).
    pub(crate) fn fill_from(&mut self, from: RawFd) -> io::Result<usize> {
        let room = self.cap.saturating_sub(self.len).max(1);
        let n = splice(from, self.w.as_raw_fd(), room)?;
        self.len += n;
        Ok(n)
    }

    /// Moves what the pipe holds to `to` (a socket): the bytes moved. `WouldBlock`
    /// when the socket takes nothing more now.
    pub(crate) fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.r.as_raw_fd(), to, self.len)?;
        self.len -= n.min(self.len);
        Ok(n)
    }

    /// Reads whatever the pipe holds into `out` (when its link ends and the bytes must
    /// go out through the ordinary write path).
    pub(crate) fn empty_into(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.len > 0 {
            let at = out.len();
            out.resize(at + self.len, 0);
            // SAFETY: reads at most `self.len` bytes into the `self.len` bytes just
            // added to `out`; the descriptor is our open pipe.
            let n =
                unsafe { libc::read(self.r.as_raw_fd(), out[at..].as_mut_ptr().cast(), self.len) };
            if n <= 0 {
                out.truncate(at);
                return Err(if n == 0 {
                    io::ErrorKind::UnexpectedEof.into()
                } else {
                    io::Error::last_os_error()
                });
            }
            out.truncate(at + n as usize);
            self.len -= n as usize;
        }
        Ok(())
    }
}

/// One `splice(2)` of up to `len` bytes, nonblocking, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open (owned by the caller's sockets and pipe);
        // null offsets are required for pipes and sockets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `recv(2)` on a connected socket, issued as a raw system call: glibc's `recv` wrapper
/// is a pthread cancellation point that switches asynchronous cancellation on and off
/// around every call, work a loop thread (never cancelled) does not need on its hottest
/// path.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // Every argument goes as a full register (`c_long`): `syscall` reads six longs.
    let (fd, len) = (fd as libc::c_long, buf.len() as libc::c_long);
    // SAFETY: `buf` is writable for `buf.len()` bytes during the call; the address
    // arguments are null (no source address wanted).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            len,
            0 as libc::c_long,
            0usize,
            0usize,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `send(2)` with `MSG_NOSIGNAL` (a reset peer is an `EPIPE` error, not a `SIGPIPE`), as
/// a raw system call for the same reason as [`recv`].
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let (fd, len) = (fd as libc::c_long, buf.len() as libc::c_long);
    let flags = libc::MSG_NOSIGNAL as libc::c_long;
    // SAFETY: `buf` is readable for `buf.len()` bytes during the call; no address.
    let n =
        unsafe { libc::syscall(libc::SYS_sendto, fd, buf.as_ptr(), len, flags, 0usize, 0usize) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}
