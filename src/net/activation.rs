//! Sockets a server inherits instead of binding: `--listen fd:N` (an already-listening
//! socket passed as descriptor `N`) and `--listen systemd` (every socket systemd's socket
//! activation passes, read from `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES` as
//! `sd_listen_fds(3)` reads them).
//!
//! An inherited descriptor is inspected (`SO_TYPE`, `getsockname`, and on Linux
//! `SO_ACCEPTCONN`) and becomes a [`ListenAddr::Inherited`] naming its kind and local
//! address: a listening TCP or Unix stream socket, or a bound UDP socket.
//!
//! **Ownership.** The inherited descriptor itself is never closed by evloop: an engine
//! serves a duplicate of it ([`duplicate`]), and the original stays open until the
//! process exits. So a draining server drops only its duplicate: the socket stays
//! listening (it belongs to systemd, or to whoever passed it), connections that arrive
//! while the server restarts wait in the kernel's backlog for the next process, and an
//! inherited Unix socket's file is never removed.

use std::env;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use socket2::{SockRef, Type};

use super::addr::ListenAddr;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// What an inherited socket is, and its local address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InheritedKind {
    /// A listening TCP socket.
    Tcp(SocketAddr),
    /// A listening Unix domain stream socket (`None`: unnamed or abstract).
    Unix(Option<PathBuf>),
    /// A bound UDP socket.
    Udp(SocketAddr),
}

/// A socket the process inherited as descriptor `fd`, inspected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Inherited {
    /// The inherited descriptor (never closed by evloop; engines serve a duplicate).
    pub fd: RawFd,
    /// Its kind and local address.
    pub kind: InheritedKind,
    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`), when given.
    pub name: Option<String>,
}

impl fmt::Display for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fd:{} (", self.fd)?;
        match &self.kind {
            InheritedKind::Tcp(a) => write!(f, "{a}")?,
            InheritedKind::Unix(Some(p)) => write!(f, "unix:{}", p.display())?,
            InheritedKind::Unix(None) => f.write_str("unix")?,
            InheritedKind::Udp(a) => write!(f, "udp://{a}")?,
        }
        if let Some(name) = &self.name {
            write!(f, ", {name}")?;
        }
        f.write_str(")")
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Inspects descriptor `fd`: open, a socket, and either a listening TCP or Unix stream
/// socket or a bound UDP socket. Sets `FD_CLOEXEC` on it (children the server starts do
/// not inherit it). Errors name the descriptor and say what is wrong.
pub fn inspect(fd: RawFd, name: Option<String>) -> io::Result<Inherited> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on fd:{fd}: {e}"));
    if fd < 0 {
        return Err(invalid(format!("cannot listen on fd:{fd}: not a descriptor")));
    }
    set_cloexec(fd).map_err(ctx)?;
    // SAFETY: `set_cloexec` just checked that `fd` is open; the borrow lives only for this
    // function and the descriptor is not closed here (a `SockRef` never closes).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = SockRef::from(&borrowed);
    let ty = sock.r#type().map_err(ctx)?;
    let local = sock.local_addr().map_err(ctx)?;
    let kind = if let Some(addr) = local.as_socket() {
        if ty == Type::STREAM {
            InheritedKind::Tcp(addr)
        } else if ty == Type::DGRAM {
            InheritedKind::Udp(addr)
        } else {
            return Err(invalid(format!(
                "cannot listen on fd:{fd}: an internet socket that is neither TCP nor UDP"
            )));
        }
    } else if local.is_unix() {
        if ty != Type::STREAM {
            return Err(invalid(format!(
                "cannot listen on fd:{fd}: a Unix socket that is not a stream socket"
            )));
        }
        InheritedKind::Unix(local.as_pathname().map(PathBuf::from))
    } else {
        return Err(invalid(format!(
            "cannot listen on fd:{fd}: neither an internet nor a Unix socket"
        )));
    };
    if ty == Type::STREAM && !is_listening(&sock).map_err(ctx)? {
        return Err(invalid(format!(
            "cannot listen on fd:{fd}: the socket is not listening (listen(2) was not called)"
        )));
    }
    Ok(Inherited { fd, kind, name })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_listening(sock: &SockRef<'_>) -> io::Result<bool> {
    sock.is_listener()
}

/// Without `SO_ACCEPTCONN` the first `accept` tells.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn is_listening(_sock: &SockRef<'_>) -> io::Result<bool> {
    Ok(true)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD read and write descriptor flags only; an fd that is not
    // open gives EBADF, which is returned as an error.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBADF) {
            return Err(io::Error::new(e.kind(), "no such descriptor is open"));
        }
        return Err(e);
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The sockets systemd passed, as `sd_listen_fds(3)` finds them: none unless
/// `LISTEN_PID` is this process's id; `LISTEN_FDS` of them from descriptor 3 on, named
/// by `LISTEN_FDNAMES` (colon-separated) when set. Each is [`inspect`]ed (and gets
/// `FD_CLOEXEC`).
///
/// With `unset_env` the three variables are removed afterwards, so processes the server
/// starts do not see them. Removing environment variables is only sound while no other
/// thread reads the environment: pass `true` only before the process starts threads
/// (the command line does, before it starts the server).
pub fn listen_fds(unset_env: bool) -> io::Result<Vec<Inherited>> {
    let pid = env::var("LISTEN_PID").ok();
    let fds = env::var("LISTEN_FDS").ok();
    let names = env::var("LISTEN_FDNAMES").ok();
    if unset_env {
        // SAFETY: the caller promises no other thread is running (see above).
        unsafe {
            env::remove_var("LISTEN_PID");
            env::remove_var("LISTEN_FDS");
            env::remove_var("LISTEN_FDNAMES");
        }
    }
    parse_listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), std::process::id())?
        .into_iter()
        .map(|(fd, name)| inspect(fd, name))
        .collect()
}

/// The descriptors (and names) the three variables describe for process `me`.
fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> io::Result<Vec<(RawFd, Option<String>)>> {
    let none = || {
        invalid(
            "no sockets were passed by systemd (LISTEN_FDS and LISTEN_PID are not set for this \
             process; run under a .socket unit or systemd-socket-activate)"
                .into(),
        )
    };
    let (Some(pid), Some(fds)) = (pid, fds) else { return Err(none()) };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID is not a process id: {pid:?}")))?;
    if pid != me {
        return Err(invalid(format!(
            "the sockets in LISTEN_FDS are for process {pid}, not this one ({me})"
        )));
    }
    let n: RawFd = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 0 && *n <= 4096)
        .ok_or_else(|| invalid(format!("LISTEN_FDS is not a count of descriptors: {fds:?}")))?;
    if n == 0 {
        return Err(none());
    }
    let names: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    Ok((0..n)
        .map(|i| {
            let name = names.get(i as usize).filter(|s| !s.is_empty()).map(|s| s.to_string());
            (LISTEN_FDS_START + i, name)
        })
        .collect())
}

/// Replaces every `fd:N` ([`ListenAddr::Fd`]) and `systemd` ([`ListenAddr::Systemd`]) in
/// `listen` by the [`ListenAddr::Inherited`] sockets they stand for; other addresses
/// are kept as they are (so resolving twice is harmless). `unset_env`: as for
/// [`listen_fds`].
pub fn resolve(listen: Vec<ListenAddr>, unset_env: bool) -> io::Result<Vec<ListenAddr>> {
    let mut out = Vec::with_capacity(listen.len());
    let mut systemd = false;
    for addr in listen {
        match addr {
            ListenAddr::Fd(fd) => out.push(ListenAddr::Inherited(inspect(fd, None)?)),
            ListenAddr::Systemd if !systemd => {
                systemd = true;
                out.extend(listen_fds(unset_env)?.into_iter().map(ListenAddr::Inherited));
            }
            ListenAddr::Systemd => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// A new descriptor (with `FD_CLOEXEC`) for the same socket as inherited descriptor
/// `fd`, for an engine to own and close; the inherited one stays open.
pub fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor and touches nothing else; an fd that
    // is not open gives EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START) };
    if new < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cannot listen on fd:{fd}: {e}")));
    }
    // SAFETY: `new` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Whether `fd` is readable within `timeout` (a `poll(2)` on one descriptor); for
/// engines that block in `accept` and must notice a stop request.
pub fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn listen_env_is_checked_as_sd_listen_fds_does() {
        let me = 4242;
        assert!(parse_listen_env(None, None, None, me).is_err());
        assert!(parse_listen_env(Some("1"), Some("1"), None, me).is_err(), "another pid");
        assert!(parse_listen_env(Some("x"), Some("1"), None, me).is_err());
        assert!(parse_listen_env(Some("4242"), Some("-1"), None, me).is_err());
        assert!(parse_listen_env(Some("4242"), Some("0"), None, me).is_err());
        let two = parse_listen_env(Some("4242"), Some("2"), Some("web:"), me).unwrap();
        assert_eq!(two, vec![(3, Some("web".to_string())), (4, None)]);
    }

    #[test]
    fn inspect_tells_the_kinds_apart() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let got = inspect(tcp.as_raw_fd(), None).unwrap();
        assert_eq!(got.kind, InheritedKind::Tcp(tcp.local_addr().unwrap()));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = inspect(udp.as_raw_fd(), Some("dns".into())).unwrap();
        assert_eq!(got.kind, InheritedKind::Udp(udp.local_addr().unwrap()));
        assert!(got.to_string().contains("udp://") && got.to_string().contains("dns"));
        let dir = std::env::temp_dir().join(format!("evloop-act-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let got = inspect(unix.as_raw_fd(), None).unwrap();
        assert_eq!(got.kind, InheritedKind::Unix(Some(dir.clone())));
        let _ = std::fs::remove_file(&dir);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(inspect(file.as_raw_fd(), None).is_err(), "not a socket");
        assert!(inspect(100_000, None).unwrap_err().to_string().contains("fd:100000"));
        #[cfg(target_os = "linux")]
        {
            let s = socket2::Socket::new(socket2::Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
            let e = inspect(s.as_raw_fd(), None).unwrap_err();
            assert!(e.to_string().contains("not listening"), "{e}");
        }
    }

    #[test]
    fn resolve_keeps_other_addresses_and_duplicates_leave_the_original() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other: ListenAddr = "127.0.0.1:1".parse().unwrap();
        let got = resolve(vec![other.clone(), ListenAddr::Fd(tcp.as_raw_fd())], false).unwrap();
        assert_eq!(got[0], other);
        assert!(matches!(&got[1], ListenAddr::Inherited(i) if i.fd == tcp.as_raw_fd()));
        let dup = duplicate(tcp.as_raw_fd()).unwrap();
        assert_ne!(dup.as_raw_fd(), tcp.as_raw_fd());
        drop(dup);
        assert!(tcp.local_addr().is_ok(), "the original is still open");
    }
}
