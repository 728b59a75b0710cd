//! The tokio engine: the same sans-IO [`Protocol`] code as the reactor and the std
//! baseline, run on tokio (`evloop serve --engine tokio`, cargo feature `tokio`).
//!
//! It exists for comparison in benchmarks: it is what a Rust user would most likely write
//! instead of using evloop, so the benchmark kit can put the reactor next to it with the
//! protocol code held constant. It is deliberately plain idiomatic tokio, not tuned.
//!
//! # Design
//!
//! - `loops` OS threads (`evloop-tokio-<i>`), each running its own tokio
//!   **current-thread** runtime (I/O and time drivers on), so a runtime and its
//!   connections never cross threads, like a reactor loop.
//! - Every runtime has its own listener per address, bound with `SO_REUSEPORT`
//!   through [`crate::net::bind`] on the caller's thread so bind errors come back from [`start`] and name the
//!   address; the kernel spreads connections among the runtimes. With port 0 the first
//!   runtime's listener picks the port and the others bind that same port.
//! - Each connection is a task spawned on its runtime. It reads into a 64 KiB buffer,
//!   hands the session the unconsumed input (keeping only the unconsumed tail between
//!   reads), writes the replies of one read with one `write_all` (so backpressure is
//!   tokio's: the task waits until the kernel takes the bytes), and closes after flushing
//!   when the session asks to close or fails with a protocol error (whose reply is sent
//!   first). Peer half-close ends the input; the replies already made still go out.
//! - Every runtime calls [`Protocol::tick`] about once a second.
//! - Stopping is a `tokio::sync::watch` flag shared by all runtimes: the accept loops,
//!   the tick task and every connection task `select!` on it, so [`StopHandle::stop`]
//!   ends accepting and drops every connection (abortive for pending output, as the std
//!   engine's shutdown of its sockets). Each runtime then waits (bounded) for its
//!   connection tasks, and its thread ends; [`Running::wait`] joins the threads.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::net::session::Buffered;
use crate::net::{ACCEPT_BACKOFF, AcceptError, AcceptLog, BindOptions, ProtoMetrics, tcp_listener};
use crate::proto::Protocol;

/// Read buffer size of each connection task.
const READ_BUFFER: usize = 64 * 1024;
/// How often each runtime calls [`Protocol::tick`].
const TICK: Duration = Duration::from_secs(1);
/// How long a stopping runtime waits for its connection tasks to end.
const DRAIN: Duration = Duration::from_secs(5);

/// A running tokio engine server.
///
/// Dropping it (and every [`StopHandle`]) without [`StopHandle::stop`] leaves the server
/// running detached, like the std engine's threads.
pub struct Running {
    addrs: Vec<SocketAddr>,
    stop: Arc<watch::Sender<bool>>,
    accepted: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

/// A cloneable handle that stops a tokio engine server from any thread.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<watch::Sender<bool>>,
}

/// Binds `addrs` once per runtime with `SO_REUSEPORT` and starts serving `proto` on
/// `loops` threads (0 = one per CPU), each with a current-thread tokio runtime.
///
/// Errors (binding, building a runtime, spawning a thread) come back from here; bind
/// errors name the address (`cannot listen on ADDR: ...`). With `nodelay`, every accepted
/// connection gets `TCP_NODELAY`. Requests answered on runtime `i` are counted into slot
/// `i` of `metrics`, protocol errors by kind.
pub fn start<P: Protocol>(
    proto: P,
    addrs: &[SocketAddr],
    loops: usize,
    nodelay: bool,
    metrics: Arc<ProtoMetrics>,
) -> io::Result<Running> {
    start_with(proto, addrs, loops, nodelay, BindOptions::default(), metrics)
}

/// [`start`] with the listeners' backlog and buffer sizes from `bind` (its `reuseport` is
/// ignored: this engine always sets `SO_REUSEPORT`).
pub fn start_with<P: Protocol>(
    proto: P,
    addrs: &[SocketAddr],
    loops: usize,
    nodelay: bool,
    bind: BindOptions,
    metrics: Arc<ProtoMetrics>,
) -> io::Result<Running> {
    let bind = BindOptions { reuseport: true, ..bind };
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listen address configured"));
    }
    let loops =
        if loops > 0 { loops } else { thread::available_parallelism().map_or(1, |n| n.get()) };

    // Runtime 0 binds the addresses as given (resolving port 0); the others bind the
    // resolved addresses, so all runtimes share each port.
    let mut per_loop: Vec<Vec<std::net::TcpListener>> = Vec::with_capacity(loops);
    let mut bound: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for i in 0..loops {
        let mut listeners = Vec::with_capacity(addrs.len());
        for (j, &addr) in addrs.iter().enumerate() {
            let target = if i == 0 { addr } else { bound[j] };
            let l = tcp_listener(target, &bind)?;
            l.set_nonblocking(true).map_err(|e| listen_error(target, e))?;
            if i == 0 {
                bound.push(l.local_addr().map_err(|e| listen_error(addr, e))?);
            }
            listeners.push(l);
        }
        per_loop.push(listeners);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Arc::new(stop_tx);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::with_capacity(loops);
    let spawn_all = || -> io::Result<()> {
        for (i, std_listeners) in per_loop.into_iter().enumerate() {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
            let listeners = {
                // `from_std` registers with the runtime entered here.
                let _guard = rt.enter();
                std_listeners
                    .into_iter()
                    .map(TcpListener::from_std)
                    .collect::<io::Result<Vec<_>>>()?
            };
            let ctx = LoopCtx {
                proto: proto.clone(),
                nodelay,
                stop: stop_rx.clone(),
                accepted: accepted.clone(),
                metrics: metrics.clone(),
                id: i,
            };
            threads.push(
                thread::Builder::new()
                    .name(format!("evloop-tokio-{i}"))
                    .spawn(move || run_loop(rt, listeners, ctx))?,
            );
        }
        Ok(())
    };
    if let Err(e) = spawn_all() {
        // Stop the runtimes already started before reporting.
        stop.send_replace(true);
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    Ok(Running { addrs: bound, stop, accepted, threads })
}

/// Prefixes an error with the address it is about.
fn listen_error(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// What every task of one runtime shares.
struct LoopCtx<P> {
    proto: P,
    nodelay: bool,
    stop: watch::Receiver<bool>,
    accepted: Arc<AtomicU64>,
    metrics: Arc<ProtoMetrics>,
    /// This runtime's index: its request counter in `metrics`.
    id: usize,
}

/// Resolves once the stop flag is set. If every sender is gone without a stop (the
/// [`Running`] and all [`StopHandle`]s were dropped), the server can no longer be stopped
/// and keeps serving, like the std engine's detached threads: this never resolves.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|&s| s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The body of one loop thread: accept loops and the tick task until stopped, then a
/// bounded wait for the connection tasks.
fn run_loop<P: Protocol>(rt: Runtime, listeners: Vec<TcpListener>, ctx: LoopCtx<P>) {
    rt.block_on(async move {
        // Every accept loop and connection task holds a clone of `alive`; once all are
        // dropped, `recv` returns `None`.
        let (alive, mut drained) = mpsc::channel::<()>(1);
        let ctx = Arc::new(ctx);
        let accepts: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(l, ctx.clone(), alive.clone())))
            .collect();
        drop(alive);
        let ticker = {
            let (proto, mut stop) = (ctx.proto.clone(), ctx.stop.clone());
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = interval.tick() => proto.tick(),
                    }
                }
            })
        };
        let mut stop = ctx.stop.clone();
        stopped(&mut stop).await;
        for a in accepts {
            if let Err(e) = a.await {
                warn!("tokio engine: accept task: {e}");
            }
        }
        let _ = ticker.await;
        if tokio::time::timeout(DRAIN, drained.recv()).await.is_err() {
            warn!("tokio engine: connections still open after {DRAIN:?}; dropping them");
        }
    });
    // Dropping the runtime cancels whatever is left and closes its sockets.
    drop(rt);
}

/// Accepts connections on one listener until stopped, one task per connection.
async fn accept_loop<P: Protocol>(
    listener: TcpListener,
    ctx: Arc<LoopCtx<P>>,
    alive: mpsc::Sender<()>,
) {
    let mut stop = ctx.stop.clone();
    let mut log = AcceptLog::new();
    let who = format!("tokio engine {}", ctx.id);
    loop {
        let stream = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    log.accepted(&who);
                    stream
                }
                Err(e) => {
                    match AcceptError::of(&e) {
                        AcceptError::BackOff => {
                            log.back_off(&who, &e);
                            tokio::select! {
                                _ = stopped(&mut stop) => return,
                                _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                            }
                        }
                        AcceptError::Drained | AcceptError::Retry => {}
                        AcceptError::Skip => debug!("{who}: accept: {e}"),
                    }
                    continue;
                }
            },
        };
        if ctx.nodelay {
            let _ = stream.set_nodelay(true);
        }
        ctx.accepted.fetch_add(1, Ordering::Relaxed);
        let session = if ctx.proto.wants_conn_info() {
            use std::os::fd::AsRawFd;
            let info = crate::proto::ConnInfo {
                peer: stream.peer_addr().ok(),
                local: stream.local_addr().ok(),
                fd: Some(i64::from(stream.as_raw_fd())),
            };
            ctx.proto.open_for(&info)
        } else {
            ctx.proto.open()
        };
        let session = Buffered::new(session, ctx.metrics.clone(), ctx.id);
        let (ctx, alive) = (ctx.clone(), alive.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, session, &ctx).await {
                debug!("tokio engine: connection: {e}");
            }
            drop(alive);
        });
    }
}

/// Serves one connection until EOF, an error, the session asks to close, or the server
/// stops.
async fn serve_conn<P: Protocol>(
    mut stream: TcpStream,
    mut session: Buffered<P>,
    ctx: &LoopCtx<P>,
) -> io::Result<()> {
    let mut stop = ctx.stop.clone();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return Ok(()),
            r = stream.read(&mut buf) => match r {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            },
        };
        let mut close = session.feed(&buf[..n], &mut out);
        loop {
            if !out.is_empty() {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return Ok(()),
                    r = stream.write_all(&out) => r?,
                }
                out.clear();
            }
            if close || !session.again() {
                break;
            }
            // The session stopped at its output budget: the rest once this is written.
            close = session.feed(&[], &mut out);
        }
        if close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

impl Running {
    /// The bound addresses, ports resolved (shared by all runtimes).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections accepted so far, over all runtimes.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// A handle that can stop the server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { stop: self.stop.clone() }
    }

    /// Waits for every runtime thread to end (after [`StopHandle::stop`]); each waits at
    /// most five seconds for its connection tasks before dropping them.
    pub fn wait(self) -> io::Result<()> {
        let mut panicked = false;
        for t in self.threads {
            panicked |= t.join().is_err();
        }
        if panicked {
            return Err(io::Error::other("a tokio engine thread panicked"));
        }
        Ok(())
    }
}

impl StopHandle {
    /// Stops accepting on every runtime and ends every open connection; returns at once.
    /// Calling it again does nothing.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}
