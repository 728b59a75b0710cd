//! The std::net engine: one blocking thread per connection, driving the same sans-IO
//! [`Protocol`] code through the same adapter ([`crate::net::session`]) as the reactor,
//! so a benchmark of the two compares engines, not protocols (`evloop serve --engine std`).
//!
//! One acceptor thread per listen address (TCP or Unix) blocks in `accept` and does
//! nothing else but spawn: every connection gets its own thread (a 64 KiB stack), which
//! sets the socket up, reads into a buffer, lets the session consume what it can and
//! writes the replies with blocking `write_all` (so backpressure is the kernel's). So the
//! acceptor keeps up with clients connecting as fast as loopback allows, and the
//! `listen(2)` backlog (`--backlog`) only has to absorb the time a spawn takes. A
//! connection costs one descriptor (its thread and the shutdown path share the socket
//! through an `Arc`, no `dup`) and one thread; where the thread cannot be spawned
//! (`EAGAIN`: `threads-max`, `pid_max`, `RLIMIT_NPROC`, memory) that connection is
//! closed and counted ([`Running::spawn_failures`]) with a rate-limited warning, and the
//! server goes on. [`capacity`] says how many connections this machine's limits allow.
//! A UDP address gets one thread that answers each datagram with a fresh session. A
//! housekeeping thread calls `Protocol::tick` once a second. Sockets are bound through
//! [`crate::net::bind`]; accept errors are classified by [`AcceptError::of`] and logged
//! through an [`AcceptLog`]. An inherited socket (`fd:N`, `systemd`; see
//! [`crate::net::activation`]) is served from a nonblocking duplicate whose acceptor
//! polls, so a stop needs no connection of its own and leaves the backlog to the next
//! process. A new connection counts as busy until its first request is read, so a drain
//! that begins meanwhile answers that request before closing it (and the acceptor still
//! hands over a connection it accepted as the drain began).
//!
//! Of the settings an engine may honour, this one has: `--max-conns` (a connection
//! counter: beyond it a new connection is closed at once) and `--idle-timeout` (a socket
//! read timeout: a connection that sends nothing for that long is closed) and a drain
//! ([`StopHandle::drain`]: stop accepting, close idle connections, let each connection
//! with a partial request finish it, and shut what is left at the deadline). It has no
//! request/header timeout. [`StopHandle::stop`] shuts every connection at once.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::net::ACCEPT_BACKOFF;

use log::{debug, warn};

use crate::net::session::{self, Buffered};
use crate::net::{
    AcceptError, AcceptLog, BindOptions, ListenAddr, ProtoMetrics, tcp_listener, udp_socket,
    unix_listener,
};
use crate::proto::Protocol;

/// What the std engine is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Addresses to serve (TCP, Unix or UDP); at least one.
    pub listen: Vec<ListenAddr>,
    /// Set `TCP_NODELAY` on accepted TCP connections.
    pub nodelay: bool,
    /// Permission bits of Unix socket files.
    pub unix_mode: Option<u32>,
    /// Backlog and buffer sizes of the listeners (`reuseport` is not used).
    pub bind: BindOptions,
    /// Most connections open at once; beyond it a new connection is closed at once.
    pub max_conns: Option<usize>,
    /// Close a connection that sends nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose replies to one read (what it would have to write at
    /// once) exceed this many bytes (`--max-output`); counted as protocol error
    /// `output_limit`.
    pub max_output: Option<usize>,
}

/// Read buffer size of each connection thread (and of each UDP thread: the largest
/// datagram it receives whole).
const READ_BUFFER: usize = 64 * 1024;
/// Stack size of connection threads: they only need the read buffer (on the heap) and
/// the protocol's call depth. Only touched pages cost memory; a small reservation keeps
/// spawning cheap at thousands of threads.
const CONN_STACK: usize = 64 * 1024;
/// Threads and descriptors a std engine server uses besides its connections.
const OVERHEAD: u64 = 64;
/// How often a UDP thread checks for a stop while no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(100);

/// A connection stream of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Addresses and descriptor, for [`Protocol::new_session_for`].
    fn info(&self) -> crate::proto::ConnInfo {
        use std::os::fd::AsRawFd;
        match self {
            Conn::Tcp(s) => crate::proto::ConnInfo {
                peer: s.peer_addr().ok(),
                local: s.local_addr().ok(),
                fd: Some(i64::from(s.as_raw_fd())),
            },
            Conn::Unix(s) => {
                crate::proto::ConnInfo { fd: Some(i64::from(s.as_raw_fd())), ..Default::default() }
            }
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nodelay(true),
            Conn::Unix(_) => Ok(()),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        }
    }
}

/// Through a shared reference, as `&TcpStream` reads: the connection's thread and the
/// shutdown path share one socket.
impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).read(buf),
            Conn::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).write(buf),
            Conn::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A bound listener of the std engine.
enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    Udp(UdpSocket),
    /// An inherited stream listener (`fd:N`, `systemd`): a nonblocking duplicate, polled,
    /// so a stop never needs a connection of our own on a socket another process shares.
    InheritedTcp(TcpListener),
    /// An inherited Unix listener, served as `InheritedTcp` is (its file is not removed).
    InheritedUnix(UnixListener),
}

struct State {
    stop: AtomicBool,
    /// Draining: a connection closes once it holds no partial request.
    draining: AtomicBool,
    /// How long [`Running::wait`] waits for connection threads after the acceptors end,
    /// in milliseconds (longer while draining).
    grace_ms: AtomicU64,
    next_id: AtomicU64,
    /// Open connections, so shutdown can unblock their reads.
    conns: Mutex<HashMap<u64, Tracked>>,
    drained: Condvar,
    accepted: AtomicU64,
    /// Connections accepted and not yet ended (what `--max-conns` counts).
    open: AtomicUsize,
    /// Connections closed at once because their thread could not be spawned.
    spawn_failures: AtomicU64,
}

/// An open connection as the server tracks it.
struct Tracked {
    /// The socket, shared with the connection's thread.
    conn: Arc<Conn>,
    /// The connection holds a partial request (or is handling input right now).
    busy: Arc<AtomicBool>,
}

/// How long [`Running::wait`] waits for connection threads after a plain stop.
const GRACE: Duration = Duration::from_secs(5);

/// A running std engine server.
pub struct Running {
    addrs: Vec<SocketAddr>,
    listeners: Vec<ListenAddr>,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

/// A cloneable handle that stops a std engine server from any thread.
#[derive(Clone)]
pub struct StopHandle {
    listeners: Vec<ListenAddr>,
    state: Arc<State>,
}

/// Binds `opts.listen` (TCP, Unix or UDP) and starts serving `proto`: one acceptor
/// thread per stream address and one thread per connection; one thread per UDP address.
/// A stale Unix socket file is replaced, a live one refused; `unix_mode` sets socket
/// files' permission bits. Errors name the address that could not be bound. Requests and
/// protocol errors are counted into `metrics` (slot 0).
pub fn start<P: Protocol>(
    proto: P,
    opts: &Options,
    metrics: Arc<ProtoMetrics>,
) -> io::Result<Running> {
    let addrs = &opts.listen;
    let bind = BindOptions { reuseport: false, ..opts.bind };
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listen address configured"));
    }
    let mut bound = Vec::with_capacity(addrs.len());
    let mut resolved = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match addr {
            ListenAddr::Tcp(a) => {
                let l = tcp_listener(*a, &bind)?;
                resolved.push(ListenAddr::Tcp(l.local_addr()?));
                bound.push(Bound::Tcp(l));
            }
            ListenAddr::Udp(a) => {
                let u = udp_socket(*a, &bind)?;
                u.set_read_timeout(Some(UDP_POLL))?;
                resolved.push(ListenAddr::Udp(u.local_addr()?));
                bound.push(Bound::Udp(u));
            }
            ListenAddr::Unix(path) => {
                let l = unix_listener(path, opts.unix_mode)?;
                resolved.push(addr.clone());
                bound.push(Bound::Unix(l, path.clone()));
            }
            ListenAddr::Inherited(inherited) => {
                resolved.push(addr.clone());
                bound.push(adopt(inherited)?);
            }
            ListenAddr::Fd(_) | ListenAddr::Systemd => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{addr}: resolve it first (net::activation::resolve)"),
                ));
            }
        }
    }
    let state = Arc::new(State {
        stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        grace_ms: AtomicU64::new(GRACE.as_millis() as u64),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        drained: Condvar::new(),
        accepted: AtomicU64::new(0),
        open: AtomicUsize::new(0),
        spawn_failures: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    let limits = Limits {
        max_conns: opts.max_conns,
        idle_timeout: opts.idle_timeout,
        max_output: opts.max_output,
        nodelay: opts.nodelay,
    };
    for b in bound {
        let (proto, state, metrics) = (proto.clone(), state.clone(), metrics.clone());
        let name = if matches!(b, Bound::Udp(_)) { "evloop-std-udp" } else { "evloop-std-accept" };
        threads.push(thread::Builder::new().name(name.into()).spawn(move || match b {
            Bound::Tcp(l) => {
                accept_loop(|| Ok(Conn::Tcp(l.accept()?.0)), proto, state, metrics, limits)
            }
            Bound::Unix(l, path) => {
                accept_loop(|| Ok(Conn::Unix(l.accept()?.0)), proto, state, metrics, limits);
                let _ = std::fs::remove_file(path);
            }
            Bound::Udp(u) => udp_loop(u, proto, state, metrics),
            Bound::InheritedTcp(l) => {
                let st = state.clone();
                let accept =
                    move || Ok(Conn::Tcp(TcpStream::from(accept_polled(l.as_fd(), &st.stop)?)));
                accept_loop(accept, proto, state, metrics, limits)
            }
            Bound::InheritedUnix(l) => {
                let st = state.clone();
                let accept = move || {
                    let s = accept_polled(l.as_fd(), &st.stop)?;
                    Ok(Conn::Unix(UnixStream::from(std::os::fd::OwnedFd::from(s))))
                };
                accept_loop(accept, proto, state, metrics, limits)
            }
        })?);
    }
    let (p, st) = (proto, state.clone());
    threads.push(thread::Builder::new().name("evloop-std-tick".into()).spawn(move || {
        while !st.stop.load(Ordering::Acquire) {
            p.tick();
            let guard = st.conns.lock().unwrap_or_else(|e| e.into_inner());
            // Doubles as an interruptible one-second sleep: `stop` notifies.
            let _ = st.drained.wait_timeout(guard, Duration::from_secs(1));
        }
    })?);
    let tcp = resolved.iter().filter_map(|l| match l {
        ListenAddr::Tcp(a) => Some(*a),
        _ => None,
    });
    Ok(Running { addrs: tcp.collect(), listeners: resolved, state, threads })
}

/// An inherited socket as the std engine serves it: a duplicate (the inherited
/// descriptor stays open), nonblocking for stream listeners so that accepting can poll.
fn adopt(inherited: &crate::net::activation::Inherited) -> io::Result<Bound> {
    use crate::net::activation::{InheritedKind, duplicate};
    let fd = duplicate(inherited.fd)?;
    Ok(match inherited.kind {
        InheritedKind::Tcp(_) => {
            let l = TcpListener::from(fd);
            l.set_nonblocking(true)?;
            Bound::InheritedTcp(l)
        }
        InheritedKind::Unix(_) => {
            let l = UnixListener::from(fd);
            l.set_nonblocking(true)?;
            Bound::InheritedUnix(l)
        }
        InheritedKind::Udp(_) => {
            let u = UdpSocket::from(fd);
            u.set_nonblocking(false)?;
            u.set_read_timeout(Some(UDP_POLL))?;
            Bound::Udp(u)
        }
    })
}

/// Accepts on a nonblocking inherited listener, polling so that `stop` is seen within
/// [`UDP_POLL`]; once `stop` is set nothing more is accepted, and what waits in the
/// backlog stays there for the next process. The accepted stream is blocking.
fn accept_polled(listener: BorrowedFd<'_>, stop: &AtomicBool) -> io::Result<socket2::Socket> {
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        if !crate::net::activation::wait_readable(&listener.as_raw_fd(), UDP_POLL)? {
            continue;
        }
        if stop.load(Ordering::Acquire) {
            continue;
        }
        match socket2::SockRef::from(&listener).accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The per-connection limits the std engine enforces.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_conns: Option<usize>,
    idle_timeout: Option<Duration>,
    max_output: Option<usize>,
    nodelay: bool,
}

fn accept_loop<P: Protocol>(
    mut accept: impl FnMut() -> io::Result<Conn>,
    proto: P,
    state: Arc<State>,
    metrics: Arc<ProtoMetrics>,
    limits: Limits,
) {
    let mut log = AcceptLog::new();
    let mut spawn_log = SpawnLog { last: None, since: 0 };
    loop {
        let stream = accept();
        // Once stopped nothing more is accepted; but a connection accepted just as a
        // drain began is still served (then the loop ends), never dropped unanswered.
        let last = state.stop.load(Ordering::Acquire);
        if last && !(stream.is_ok() && state.draining.load(Ordering::Acquire)) {
            return;
        }
        let stream = match stream {
            Ok(s) => {
                log.accepted("std engine");
                s
            }
            Err(e) => {
                match AcceptError::of(&e) {
                    AcceptError::BackOff => {
                        log.back_off("std engine", &e);
                        thread::sleep(ACCEPT_BACKOFF);
                    }
                    AcceptError::Drained | AcceptError::Retry => {}
                    AcceptError::Skip => debug!("std engine: accept: {e}"),
                }
                continue;
            }
        };
        'conn: {
            if limits.max_conns.is_some_and(|max| state.open.load(Ordering::Acquire) >= max) {
                debug!("std engine: --max-conns reached; closing a new connection");
                break 'conn;
            }
            state.open.fetch_add(1, Ordering::AcqRel);
            state.accepted.fetch_add(1, Ordering::Relaxed);
            let (proto, st, metrics) = (proto.clone(), state.clone(), metrics.clone());
            let spawned = thread::Builder::new()
                .name("evloop-std-conn".into())
                .stack_size(CONN_STACK)
                .spawn(move || conn_thread(stream, proto, metrics, limits, &st));
            if let Err(e) = spawned {
                // The closure, and the socket in it, is dropped: that connection is closed.
                let _conns = state.conns.lock().unwrap_or_else(|e| e.into_inner());
                if state.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                    state.drained.notify_all();
                }
                state.spawn_failures.fetch_add(1, Ordering::Relaxed);
                spawn_log.failed(&e);
            }
        }
        if last {
            return;
        }
    }
}

/// A connection's thread: sets the socket up, tracks it (so a stop can shut it), serves
/// it, and untracks it.
fn conn_thread<P: Protocol>(
    stream: Conn,
    proto: P,
    metrics: Arc<ProtoMetrics>,
    limits: Limits,
    state: &State,
) {
    if limits.nodelay
        && let Err(e) = stream.set_nodelay()
    {
        debug!("std engine: cannot set TCP_NODELAY: {e}");
    }
    if let Some(t) = limits.idle_timeout
        && let Err(e) = stream.set_read_timeout(t)
    {
        debug!("std engine: cannot set the idle timeout: {e}");
    }
    let conn = Arc::new(stream);
    // Busy until its first request is read: a drain that begins now serves that request
    // instead of closing the connection unanswered.
    let busy = Arc::new(AtomicBool::new(true));
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let tracked = Tracked { conn: conn.clone(), busy: busy.clone() };
    state.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tracked);
    if state.stop.load(Ordering::Acquire) && !state.draining.load(Ordering::Acquire) {
        // Stopped (not draining) between the accept and now: a stop's shutdown may have
        // missed it. A drain serves it: its first request is answered, then it closes.
        let _ = conn.shutdown(Shutdown::Both);
    } else {
        let session =
            if proto.wants_conn_info() { proto.open_for(&conn.info()) } else { proto.open() };
        let session = Buffered::new(session, metrics, 0);
        // The session goes (and `Protocol::closed` runs) before the socket closes.
        if let Err(e) = serve_conn(&conn, session, &busy, state, limits.max_output) {
            debug!("std engine: connection: {e}");
        }
    }
    let mut conns = state.conns.lock().unwrap_or_else(|e| e.into_inner());
    conns.remove(&id);
    if state.open.fetch_sub(1, Ordering::AcqRel) == 1 {
        state.drained.notify_all();
    }
}

/// How many connections this machine's limits let the std engine hold at most, and the
/// limit that binds first. A connection costs one descriptor (`RLIMIT_NOFILE`, as
/// raised) and one thread: `threads-max` and `pid_max` are system-wide (less the threads
/// that exist now), `RLIMIT_NPROC` is per user (less this user's threads, counted as all
/// threads: an upper bound). `None` where the limits cannot be read (not Linux).
pub fn capacity() -> Option<(u64, &'static str)> {
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    // The fourth field of /proc/loadavg is "runnable/existing" scheduling entities.
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let existing = loadavg.split_whitespace().nth(3)?.split('/').nth(1)?.parse::<u64>().ok()?;
    let nofile = crate::net::limits::nofile().ok()?;
    let mut limits = vec![
        (nofile.saturating_sub(OVERHEAD), "the open-file limit (RLIMIT_NOFILE)"),
        (read("/proc/sys/kernel/threads-max")?.saturating_sub(existing), "kernel.threads-max"),
        (read("/proc/sys/kernel/pid_max")?.saturating_sub(existing), "kernel.pid_max"),
    ];
    if let Ok(Some(nproc)) = crate::net::limits::nproc() {
        limits.push((nproc.saturating_sub(existing), "the process limit (RLIMIT_NPROC)"));
    }
    limits.into_iter().min_by_key(|l| l.0)
}

/// The warning for connection threads that cannot be spawned: the first at once, then at
/// most one a minute with the count since.
struct SpawnLog {
    last: Option<Instant>,
    since: u64,
}

impl SpawnLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn failed(&mut self, e: &io::Error) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        warn!(
            "std engine: cannot spawn a connection thread ({e}); closed {} connection(s) \
             (threads-max, pid_max, RLIMIT_NPROC or memory; see `evloop serve` start-up \
             warnings)",
            self.since
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

/// Answers each datagram with a fresh session; the reply is one datagram.
fn udp_loop<P: Protocol>(sock: UdpSocket, proto: P, state: Arc<State>, metrics: Arc<ProtoMetrics>) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out = Vec::new();
    while !state.stop.load(Ordering::Acquire) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) => {
                debug!("std engine: udp recv: {e}");
                continue;
            }
        };
        session::datagram(&proto, &buf[..n], &mut out, &metrics, 0);
        if !out.is_empty() {
            if let Err(e) = sock.send_to(&out, from) {
                debug!("std engine: udp reply to {from}: {e}");
            }
            out.clear();
        }
    }
}

/// Serves one connection until EOF, an error, the idle timeout, the session asks to
/// close, or a drain finds it without a partial request. `busy` tells a drain whether
/// the connection holds a partial request.
fn serve_conn<P: Protocol>(
    conn: &Conn,
    mut session: Buffered<P>,
    busy: &AtomicBool,
    state: &State,
    max_output: Option<usize>,
) -> io::Result<()> {
    let mut stream = conn;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let read = stream.read(&mut buf);
        busy.store(true, Ordering::Release);
        let n = match read {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                debug!("std engine: idle timeout; closing");
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut close = session.feed(&buf[..n], &mut out);
        loop {
            if max_output.is_some_and(|max| out.len() > max) {
                session.metrics().add_error("output_limit");
                debug!("std engine: {} bytes of output over --max-output; closing", out.len());
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            if !out.is_empty() {
                stream.write_all(&out)?;
                out.clear();
            }
            if close || !session.again() {
                break;
            }
            // The session stopped at its output budget: the rest once this is written.
            close = session.feed(&[], &mut out);
        }
        let partial = session.has_partial_input();
        busy.store(partial, Ordering::Release);
        if close || (!partial && state.draining.load(Ordering::Acquire)) {
            let _ = stream.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

impl Running {
    /// The bound TCP addresses, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every listener, in the order given, ports resolved.
    pub fn listeners(&self) -> &[ListenAddr] {
        &self.listeners
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because their thread could not be spawned.
    pub fn spawn_failures(&self) -> u64 {
        self.state.spawn_failures.load(Ordering::Relaxed)
    }

    /// A handle that can stop the server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { listeners: self.listeners.clone(), state: self.state.clone() }
    }

    /// Waits for the acceptor threads to end (after [`StopHandle::stop`] or
    /// [`StopHandle::drain`]), then up to five seconds (or the drain's deadline and a
    /// second) for connection threads to finish.
    pub fn wait(self) -> io::Result<()> {
        for t in self.threads {
            if t.join().is_err() {
                return Err(io::Error::other("a std engine thread panicked"));
            }
        }
        let grace = Duration::from_millis(self.state.grace_ms.load(Ordering::Acquire));
        // `open` counts a connection from its accept, before its thread has tracked it:
        // waiting on it (not on the tracked set) never exits under a connection that was
        // accepted just as the drain began.
        let state = &self.state;
        let conns = state.conns.lock().unwrap_or_else(|e| e.into_inner());
        let _ = state
            .drained
            .wait_timeout_while(conns, grace, |_| state.open.load(Ordering::Acquire) > 0);
        Ok(())
    }
}

impl StopHandle {
    /// Stops accepting, shuts every open connection down and wakes the threads.
    pub fn stop(&self) {
        self.stop_accepting();
        self.shut(|_| true);
    }

    /// Stops accepting and closes idle connections; a connection holding a partial
    /// request is served until it completes (then closed), or shut at `timeout`.
    /// Returns at once.
    pub fn drain(&self, timeout: Duration) {
        let grace = timeout.saturating_add(Duration::from_secs(1)).max(GRACE);
        self.state.grace_ms.store(grace.as_millis() as u64, Ordering::Release);
        self.state.draining.store(true, Ordering::Release);
        self.stop_accepting();
        self.shut(|t| !t.busy.load(Ordering::Acquire));
        let (state, handle) = (self.state.clone(), self.clone());
        let deadline = thread::Builder::new().name("evloop-std-drain".into()).spawn(move || {
            let conns = state.conns.lock().unwrap_or_else(|e| e.into_inner());
            let (conns, _) = state
                .drained
                .wait_timeout_while(conns, timeout, |_| state.open.load(Ordering::Acquire) > 0)
                .unwrap_or_else(|e| e.into_inner());
            drop(conns);
            handle.shut(|_| true);
        });
        if let Err(e) = deadline {
            warn!("std engine: cannot start the drain timer ({e}); stopping now");
            self.shut(|_| true);
        }
    }

    /// Shuts down the open connections `which` selects and wakes the threads.
    fn shut(&self, which: impl Fn(&Tracked) -> bool) {
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for t in conns.values().filter(|t| which(t)) {
            let _ = t.conn.shutdown(Shutdown::Both);
        }
        self.state.drained.notify_all();
    }

    /// Sets the stop flag and unblocks the acceptor threads (once).
    fn stop_accepting(&self) {
        if self.state.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        for l in &self.listeners {
            // Unblock `accept` with a connection of our own (UDP threads poll the flag).
            match l {
                ListenAddr::Tcp(addr) => {
                    let mut target = *addr;
                    if target.ip().is_unspecified() {
                        target.set_ip(match target {
                            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                        });
                    }
                    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
                }
                ListenAddr::Unix(path) => {
                    let _ = UnixStream::connect(path);
                }
                // UDP threads and inherited listeners poll the flag.
                ListenAddr::Udp(_)
                | ListenAddr::Inherited(_)
                | ListenAddr::Fd(_)
                | ListenAddr::Systemd => {}
            }
        }
    }
}
