//! The std::net baseline: one blocking thread per connection, driving the same sans-IO
//! [`Protocol`](crate::proto::Protocol) code as the reactor, so a benchmark of the two
//! compares engines, not protocols (`evloop serve --engine std`).
//!
//! One acceptor thread per listen address blocks in `accept`; every connection gets its
//! own thread that reads into a buffer, lets the session consume what it can and writes
//! the replies with blocking `write_all` (so backpressure is the kernel's). A
//! housekeeping thread calls [`Protocol::tick`](crate::proto::Protocol::tick) once a second.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};

use crate::metrics::ProtoMetrics;
use crate::proto::{Protocol, Session};

#[cfg(feature = "tokio")]
pub mod tokio;

/// Read buffer size of each connection thread.
const READ_BUFFER: usize = 64 * 1024;
/// Stack size of connection threads: they only need the read buffer (on the heap) and
/// the protocol's call depth.
const CONN_STACK: usize = 256 * 1024;

struct State {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Open connections (a clone of each socket), so shutdown can unblock their reads.
    conns: Mutex<HashMap<u64, TcpStream>>,
    drained: Condvar,
    accepted: AtomicU64,
}

/// A running std baseline server.
pub struct Running {
    addrs: Vec<SocketAddr>,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

/// A cloneable handle that stops a std baseline server from any thread.
#[derive(Clone)]
pub struct StopHandle {
    addrs: Vec<SocketAddr>,
    state: Arc<State>,
}

/// Binds `addrs` and starts serving `proto`: one acceptor thread per address and one
/// thread per connection. Errors name the address that could not be bound.
/// Requests and protocol errors are counted into `metrics` (slot 0).
pub fn start<P: Protocol>(
    proto: P,
    addrs: &[SocketAddr],
    nodelay: bool,
    metrics: Arc<ProtoMetrics>,
) -> io::Result<Running> {
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listen address configured"));
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let l = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    let bound = listeners.iter().map(|l| l.local_addr()).collect::<io::Result<Vec<_>>>()?;
    let state = Arc::new(State {
        stop: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        drained: Condvar::new(),
        accepted: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for l in listeners {
        let (proto, state, metrics) = (proto.clone(), state.clone(), metrics.clone());
        threads.push(
            thread::Builder::new()
                .name("evloop-std-accept".into())
                .spawn(move || accept_loop(l, proto, state, nodelay, metrics))?,
        );
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
    Ok(Running { addrs: bound, state, threads })
}

fn accept_loop<P: Protocol>(
    listener: TcpListener,
    proto: P,
    state: Arc<State>,
    nodelay: bool,
    metrics: Arc<ProtoMetrics>,
) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("std engine: accept: {e}");
                if crate::reactor::is_resource_exhaustion(&e) {
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        if nodelay {
            let _ = stream.set_nodelay(true);
        }
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

/// Serves one connection until EOF, an error, or the session asks to close.
fn serve_conn<S: Session>(
    mut stream: TcpStream,
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
        let data: &[u8] = if input.is_empty() {
            &buf[..n]
        } else {
            input.extend_from_slice(&buf[..n]);
            &input
        };
        let (consumed, close) = match session.on_input(data, &mut out) {
            Ok(p) => {
                metrics.add_requests(0, p.requests as u64);
                (p.consumed.min(data.len()), p.close)
            }
            Err(e) => {
                metrics.add_error(e.kind);
                out.extend_from_slice(&e.reply);
                (data.len(), true)
            }
        };
        if input.is_empty() {
            input.extend_from_slice(&buf[consumed..n]);
        } else {
            input.drain(..consumed);
        }
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
    /// The bound addresses, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// A handle that can stop the server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { addrs: self.addrs.clone(), state: self.state.clone() }
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
        for addr in &self.addrs {
            // Unblock `accept` with a connection of our own.
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(match target {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
        }
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.state.drained.notify_all();
    }
}
