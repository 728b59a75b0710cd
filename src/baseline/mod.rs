//! The std::net baseline: one blocking thread per connection, driving the same sans-IO
//! [`Protocol`] code as the reactor, so a benchmark of the two
//! compares engines, not protocols (`evloop serve --engine std`).
//!
//! One acceptor thread per listen address (TCP or Unix) blocks in `accept`; every
//! connection gets its own thread that reads into a buffer, lets the session consume what
//! it can and writes the replies with blocking `write_all` (so backpressure is the
//! kernel's). A UDP address gets one thread that answers each datagram with a fresh
//! session. A housekeeping thread calls `Protocol::tick` once a second.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};

use crate::metrics::ProtoMetrics;
use crate::net::{ListenAddr, clear_stale_unix, set_unix_mode};
use crate::proto::{Protocol, Session};

#[cfg(feature = "tokio")]
pub mod tokio;

/// Read buffer size of each connection thread (and of each UDP thread: the largest
/// datagram it receives whole).
const READ_BUFFER: usize = 64 * 1024;
/// Stack size of connection threads: they only need the read buffer (on the heap) and
/// the protocol's call depth.
const CONN_STACK: usize = 256 * 1024;
/// How often a UDP thread checks for a stop while no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(100);

/// A connection stream of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
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
}

struct State {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Open connections (a clone of each socket), so shutdown can unblock their reads.
    conns: Mutex<HashMap<u64, Conn>>,
    drained: Condvar,
    accepted: AtomicU64,
}

/// A running std baseline server.
pub struct Running {
    addrs: Vec<SocketAddr>,
    listeners: Vec<ListenAddr>,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

/// A cloneable handle that stops a std baseline server from any thread.
#[derive(Clone)]
pub struct StopHandle {
    listeners: Vec<ListenAddr>,
    state: Arc<State>,
}

/// Binds `addrs` (TCP, Unix or UDP) and starts serving `proto`: one acceptor thread per
/// stream address and one thread per connection; one thread per UDP address. A stale
/// Unix socket file is replaced, a live one refused; `unix_mode` sets socket files'
/// permission bits. Errors name the address that could not be bound. Requests and
/// protocol errors are counted into `metrics` (slot 0).
pub fn start<P: Protocol>(
    proto: P,
    addrs: &[ListenAddr],
    nodelay: bool,
    unix_mode: Option<u32>,
    metrics: Arc<ProtoMetrics>,
) -> io::Result<Running> {
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listen address configured"));
    }
    let mut bound = Vec::with_capacity(addrs.len());
    let mut resolved = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
        match addr {
            ListenAddr::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(ctx)?;
                resolved.push(ListenAddr::Tcp(l.local_addr()?));
                bound.push(Bound::Tcp(l));
            }
            ListenAddr::Udp(a) => {
                let u = UdpSocket::bind(a).map_err(ctx)?;
                u.set_read_timeout(Some(UDP_POLL))?;
                resolved.push(ListenAddr::Udp(u.local_addr()?));
                bound.push(Bound::Udp(u));
            }
            ListenAddr::Unix(path) => {
                clear_stale_unix(path)?;
                let l = UnixListener::bind(path).map_err(ctx)?;
                set_unix_mode(path, unix_mode)?;
                resolved.push(addr.clone());
                bound.push(Bound::Unix(l, path.clone()));
            }
        }
    }
    let state = Arc::new(State {
        stop: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        drained: Condvar::new(),
        accepted: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for b in bound {
        let (proto, state, metrics) = (proto.clone(), state.clone(), metrics.clone());
        let name = if matches!(b, Bound::Udp(_)) { "evloop-std-udp" } else { "evloop-std-accept" };
        threads.push(thread::Builder::new().name(name.into()).spawn(move || match b {
            Bound::Tcp(l) => accept_loop(
                || {
                    let (s, _) = l.accept()?;
                    if nodelay {
                        let _ = s.set_nodelay(true);
                    }
                    Ok(Conn::Tcp(s))
                },
                proto,
                state,
                metrics,
            ),
            Bound::Unix(l, path) => {
                accept_loop(|| Ok(Conn::Unix(l.accept()?.0)), proto, state, metrics);
                let _ = std::fs::remove_file(path);
            }
            Bound::Udp(u) => udp_loop(u, proto, state, metrics),
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

fn accept_loop<P: Protocol>(
    mut accept: impl FnMut() -> io::Result<Conn>,
    proto: P,
    state: Arc<State>,
    metrics: Arc<ProtoMetrics>,
) {
    loop {
        let stream = accept();
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("std engine: accept: {e}");
                if crate::net::is_resource_exhaustion(&e) {
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                state.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id, clone);
            }
            Err(e) => {
                warn!("std engine: cannot track connection: {e}");
                continue;
            }
        }
        state.accepted.fetch_add(1, Ordering::Relaxed);
        let session = proto.new_session();
        let st = state.clone();
        let m = metrics.clone();
        let spawned = thread::Builder::new()
            .name("evloop-std-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                if let Err(e) = serve_conn(stream, session, &m) {
                    debug!("std engine: connection: {e}");
                }
                let mut conns = st.conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.remove(&id);
                if conns.is_empty() {
                    st.drained.notify_all();
                }
            });
        if let Err(e) = spawned {
            warn!("std engine: cannot spawn a connection thread: {e}");
            state.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
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
        match proto.new_session().on_input(&buf[..n], &mut out) {
            Ok(p) => metrics.add_requests(0, p.requests as u64),
            Err(e) => {
                metrics.add_requests(0, e.requests as u64);
                metrics.add_error(e.kind);
                out.extend_from_slice(&e.reply);
            }
        }
        if !out.is_empty() {
            if let Err(e) = sock.send_to(&out, from) {
                debug!("std engine: udp reply to {from}: {e}");
            }
            out.clear();
        }
    }
}

/// One read's worth of work for the blocking engines (std and tokio): hands the fresh
/// bytes, after any leftover `input`, to the session; keeps the unconsumed tail in
/// `input`; leaves the replies (and a protocol error's reply) in `out`; counts requests
/// and errors into metrics slot `slot`. Returns true when the connection must close
/// once `out` is written.
pub(crate) fn feed<S: Session>(
    session: &mut S,
    fresh: &[u8],
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
    metrics: &ProtoMetrics,
    slot: usize,
) -> bool {
    let from_input = !input.is_empty();
    if from_input {
        input.extend_from_slice(fresh);
    }
    let data: &[u8] = if from_input { input } else { fresh };
    let (consumed, close) = match session.on_input(data, out) {
        Ok(p) => {
            metrics.add_requests(slot, p.requests as u64);
            (p.consumed.min(data.len()), p.close)
        }
        Err(e) => {
            metrics.add_requests(slot, e.requests as u64);
            metrics.add_error(e.kind);
            debug!("protocol error: {e}");
            out.extend_from_slice(&e.reply);
            (data.len(), true)
        }
    };
    if from_input {
        input.drain(..consumed);
    } else {
        input.extend_from_slice(&fresh[consumed..]);
    }
    close
}

/// Serves one connection until EOF, an error, or the session asks to close.
fn serve_conn<S: Session>(
    mut stream: Conn,
    mut session: S,
    metrics: &ProtoMetrics,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut input: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let close = feed(&mut session, &buf[..n], &mut input, &mut out, metrics, 0);
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if close {
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

    /// A handle that can stop the server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { listeners: self.listeners.clone(), state: self.state.clone() }
    }

    /// Waits for the acceptor threads to end (after [`StopHandle::stop`]), then up to
    /// five seconds for connection threads to finish.
    pub fn wait(self) -> io::Result<()> {
        for t in self.threads {
            if t.join().is_err() {
                return Err(io::Error::other("a std engine thread panicked"));
            }
        }
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        let _ =
            self.state.drained.wait_timeout_while(conns, Duration::from_secs(5), |c| !c.is_empty());
        Ok(())
    }
}

impl StopHandle {
    /// Stops accepting, shuts every open connection down and wakes the threads.
    pub fn stop(&self) {
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
                ListenAddr::Udp(_) => {}
            }
        }
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.state.drained.notify_all();
    }
}
