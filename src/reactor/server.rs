//! Starting and stopping a server: binding every listener (made nonblocking for mio),
//! choosing between per-loop reuseport listeners and the single acceptor, spawning the
//! loop threads (and the acceptor's), joining them.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Once};
use std::thread::{self, JoinHandle};

use std::path::Path;

use log::warn;
use mio::Poll;
use mio::net::{TcpListener, UdpSocket, UnixListener};

use super::config::Config;
use super::event_loop::{Acceptor, EventLoop, LoopParts, Tok};
use super::handle::{LoopRemote, RemoteParts, ServerHandle, Shared};
use super::handler::EventHandler;
use super::socket::{Listener, UnixPaths};
use super::stats::{LoopStats, ServerStats};
use super::sys;
use super::waker::Waker;
use crate::net::addr::ListenAddr;
use crate::net::bind::{self, BindOptions};

/// A bound server, not yet running. [`Server::bind`] opens the listening sockets, so an
/// address in use is reported before any thread starts; [`Server::start`] runs it.
#[derive(Debug)]
pub struct Server {
    config: Config,
    loops: usize,
    /// TCP addresses, ports resolved.
    addrs: Vec<SocketAddr>,
    /// Every listener, ports resolved.
    listeners: Vec<ListenAddr>,
    /// The sockets each loop owns, by loop.
    per_loop: Vec<LoopSockets>,
    /// The single acceptor's listeners: Unix sockets always, TCP without reuseport.
    shared_listeners: Vec<(usize, Listener)>,
    /// Socket files to remove when the server stops.
    unix_paths: UnixPaths,
}

impl Server {
    /// Validates `config` and binds every listen address. TCP: one socket, or with
    /// `reuseport` one per loop. UDP: with `reuseport` one socket per loop, otherwise one
    /// socket owned by one loop. Unix: one socket, served through the acceptor (a stale
    /// socket file is replaced; a live one is an error). A port of 0 is resolved once
    /// and every loop shares the port the kernel chose. Errors name the address.
    ///
    /// Inherited sockets (`fd:N`, `systemd`; see [`crate::net::activation`]) are served
    /// through the acceptor (or, UDP, by one loop) even with `reuseport`, which is said
    /// once at info level; the server owns a duplicate of each, so the inherited
    /// descriptor stays open (and listening) after a drain, and an inherited Unix
    /// socket's file is never removed.
    ///
    /// Where `SO_REUSEPORT` does not spread connections (everywhere but Linux) a
    /// `reuseport` request is logged once and served by the single acceptor instead; where
    /// CPU pinning is unsupported, `pin` is an `Unsupported` error.
    pub fn bind(mut config: Config) -> io::Result<Server> {
        config.validate()?;
        if config.pin {
            sys::pin_supported()?;
        }
        if config.reuseport && !sys::REUSEPORT_SPREADS {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                warn!(
                    "SO_REUSEPORT does not spread connections on this platform; \
                     using the single acceptor instead"
                )
            });
            config.reuseport = false;
        }
        // `fd:N` and `systemd` become the inherited sockets they stand for (the command
        // line has resolved them already; this is for embedders).
        config.listen = crate::net::activation::resolve(std::mem::take(&mut config.listen), false)?;
        if config.listen.len() >= usize::from(u16::MAX) {
            // A connection stores its listener's index in 16 bits (`u16::MAX`: none).
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} listen addresses: at most 65534 are supported", config.listen.len()),
            ));
        }
        let loops = config.effective_loops();
        let mut addrs = Vec::new();
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut per_loop: Vec<LoopSockets> = (0..loops).map(|_| LoopSockets::default()).collect();
        let mut shared_listeners = Vec::new();
        let mut unix_paths = UnixPaths::default();
        let mut udp_count = 0;
        for (index, addr) in config.listen.iter().enumerate() {
            match addr {
                ListenAddr::Tcp(addr) => {
                    let first = bind_tcp(*addr, &config)?;
                    let actual = first.local_addr()?;
                    addrs.push(actual);
                    listeners.push(ListenAddr::Tcp(actual));
                    if config.reuseport {
                        per_loop[0].listeners.push((index, Listener::Tcp(first)));
                        for l in per_loop.iter_mut().skip(1) {
                            l.listeners.push((index, Listener::Tcp(bind_tcp(actual, &config)?)));
                        }
                    } else {
                        shared_listeners.push((index, Listener::Tcp(first)));
                    }
                }
                ListenAddr::Udp(addr) => {
                    let first = bind_udp(*addr, &config)?;
                    let actual = first.local_addr()?;
                    listeners.push(ListenAddr::Udp(actual));
                    if config.reuseport {
                        per_loop[0].udp.push((index, first));
                        for l in per_loop.iter_mut().skip(1) {
                            l.udp.push((index, bind_udp(actual, &config)?));
                        }
                    } else {
                        per_loop[udp_count % loops].udp.push((index, first));
                        udp_count += 1;
                    }
                }
                ListenAddr::Unix(path) => {
                    let l = bind_unix(path, config.unix_mode)?;
                    unix_paths.0.push(path.clone());
                    listeners.push(ListenAddr::Unix(path.clone()));
                    shared_listeners.push((index, Listener::Unix(l)));
                }
                ListenAddr::Inherited(inherited) => {
                    let (l, actual) = super::inherited::adopt(inherited, config.reuseport)?;
                    listeners.push(addr.clone());
                    match l {
                        super::inherited::Adopted::Stream(l) => {
                            if let Some(a) = actual {
                                addrs.push(a);
                            }
                            shared_listeners.push((index, l));
                        }
                        super::inherited::Adopted::Udp(u) => {
                            per_loop[udp_count % loops].udp.push((index, u));
                            udp_count += 1;
                        }
                    }
                }
                ListenAddr::Fd(_) | ListenAddr::Systemd => {
                    // `activation::resolve` above replaced every one of these.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{addr}: not resolved to an inherited socket"),
                    ));
                }
            }
        }
        Ok(Server { config, loops, addrs, listeners, per_loop, shared_listeners, unix_paths })
    }

    /// The bound TCP addresses, in configuration order, with ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every listener (TCP, Unix, UDP) in configuration order, ports resolved.
    pub fn listeners(&self) -> &[ListenAddr] {
        &self.listeners
    }

    /// Number of loops this server will run.
    pub fn loops(&self) -> usize {
        self.loops
    }

    /// Starts the loop threads (named `evloop-loop-<i>`) and, without reuseport, the
    /// acceptor thread (`evloop-acceptor`), then returns. `factory(i)` runs on loop `i`'s
    /// thread and makes its handler.
    pub fn start<H, F>(self, factory: F) -> io::Result<Running>
    where
        H: EventHandler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let Server { config, loops, addrs, listeners, per_loop, shared_listeners, unix_paths } =
            self;
        let listeners: Arc<[ListenAddr]> = listeners.into();
        let config = Arc::new(config);
        let mut parts = Vec::with_capacity(loops);
        let mut remotes = Vec::with_capacity(loops);
        let mut rxs = Vec::with_capacity(loops);
        let mut polls = Vec::with_capacity(loops);
        for id in 0..loops {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(&poll, Tok::Waker.token())?);
            let (tx, rx) = crossbeam_channel::unbounded();
            remotes.push(LoopRemote::new(RemoteParts {
                id,
                listeners: listeners.clone(),
                tx,
                waker,
                stats: Arc::new(LoopStats::default()),
                watermarks: (config.low_watermark, config.high_watermark),
            }));
            rxs.push(rx);
            polls.push(poll);
        }
        let acceptor = if shared_listeners.is_empty() {
            None
        } else {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(&poll, Tok::Waker.token())?);
            let stats = Arc::new(LoopStats::default());
            let a = Acceptor::new(poll, shared_listeners, config.balance, stats.clone())?;
            Some((a, waker, stats))
        };
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            acceptor_done: AtomicBool::new(acceptor.is_none()),
            open_total: std::sync::atomic::AtomicUsize::new(0),
            max_conns: config.max_conns,
            loops: remotes.clone(),
            acceptor: acceptor.as_ref().map(|(_, w, s)| (w.clone(), s.clone())),
            addrs,
            listeners,
            next_connect: std::sync::atomic::AtomicUsize::new(0),
            balance: config.balance,
        });
        let server = ServerHandle { shared: shared.clone() };
        for ((((id, poll), rx), remote), LoopSockets { listeners, udp }) in
            (0..loops).zip(polls).zip(rxs).zip(remotes).zip(per_loop)
        {
            let mut p = LoopParts {
                id,
                loops,
                poll,
                rx,
                remote,
                listeners,
                udp,
                config: config.clone(),
                server: server.clone(),
            };
            p.register_sockets()?;
            parts.push(p);
        }
        let factory = Arc::new(factory);
        let mut threads = Vec::with_capacity(loops + 1);
        for p in parts {
            let factory = factory.clone();
            let pin = config.pin;
            let guard = StopOnExit(server.clone());
            let t = thread::Builder::new().name(format!("evloop-loop-{}", p.id)).spawn(move || {
                let _guard = guard;
                if pin && let Err(e) = sys::pin_current_thread(p.id) {
                    warn!("loop {}: could not pin to a CPU ({e}); running unpinned", p.id);
                }
                let handler = factory(p.id);
                EventLoop::new(handler, p).run();
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    server.shutdown();
                    return Err(e);
                }
            }
        }
        if let Some((a, _, _)) = acceptor {
            let guard = StopOnExit(server.clone());
            let t = thread::Builder::new().name("evloop-acceptor".into()).spawn(move || {
                let _guard = guard;
                a.run(shared);
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    server.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(Running { handle: server, threads, unix_paths })
    }

    /// [`start`](Self::start), then wait until the server shuts down.
    pub fn serve<H, F>(self, factory: F) -> io::Result<()>
    where
        H: EventHandler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        self.start(factory)?.wait()
    }
}

/// The sockets one loop owns alone: reuseport TCP listeners and UDP sockets.
#[derive(Debug, Default)]
struct LoopSockets {
    listeners: Vec<(usize, Listener)>,
    udp: Vec<(usize, UdpSocket)>,
}

/// Shuts the whole server down when a loop or the acceptor thread dies by a panic, so the
/// other threads never keep running half a server. (A loop that ends normally, e.g. at
/// the end of its drain, leaves the others to finish theirs.)
struct StopOnExit(ServerHandle);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.shutdown();
        }
    }
}

/// A running server: its handle and threads.
#[derive(Debug)]
pub struct Running {
    handle: ServerHandle,
    threads: Vec<JoinHandle<()>>,
    /// Removed once the threads have been joined.
    unix_paths: UnixPaths,
}

impl Running {
    /// A cloneable handle for shutdown and stats from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.handle.local_addrs()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.handle.stats()
    }

    /// Waits until every thread has exited (after a shutdown from a handle, an action or
    /// a fatal loop error). Fails if a thread panicked.
    pub fn wait(self) -> io::Result<()> {
        let mut panicked = 0;
        for t in self.threads {
            if t.join().is_err() {
                panicked += 1;
            }
        }
        self.unix_paths.remove();
        if panicked > 0 {
            return Err(io::Error::other(format!("{panicked} server thread(s) panicked")));
        }
        Ok(())
    }

    /// Requests shutdown and waits for it.
    pub fn shutdown(self) -> io::Result<()> {
        self.handle.shutdown();
        self.wait()
    }
}

// ---- binding (through `crate::net::bind`, then nonblocking for mio) -----------------

/// The binding options `config` asks for.
fn bind_options(config: &Config) -> BindOptions {
    BindOptions {
        reuseport: config.reuseport,
        backlog: config.backlog,
        recv_buffer: config.recv_buffer,
        send_buffer: config.send_buffer,
    }
}

/// Binds a nonblocking TCP listener on `addr`. With `config.reuseport`, several
/// listeners may bind the same address and the kernel spreads incoming connections
/// among them. Errors name the address.
fn bind_tcp(addr: SocketAddr, config: &Config) -> io::Result<TcpListener> {
    let l = bind::tcp_listener(addr, &bind_options(config))?;
    l.set_nonblocking(true)?;
    Ok(TcpListener::from_std(l))
}

/// Binds a nonblocking UDP socket (with `SO_REUSEPORT` when `config.reuseport`, so each
/// loop can have its own). Errors name the address.
fn bind_udp(addr: SocketAddr, config: &Config) -> io::Result<UdpSocket> {
    let s = bind::udp_socket(addr, &bind_options(config))?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s))
}

/// Binds a nonblocking Unix domain listener at `path` (a stale socket file is replaced),
/// with permission bits `mode` when given.
fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    let l = bind::unix_listener(path, mode)?;
    l.set_nonblocking(true)?;
    Ok(UnixListener::from_std(l))
}
