//! Starting and stopping a server: binding, spawning loops (and the acceptor), joining.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};

use log::warn;
use mio::Poll;

use super::acceptor::Acceptor;
use super::affinity::pin_current_thread;
use super::config::Config;
use super::event_loop::{EventLoop, LoopParts, WAKER};
use super::handle::{LoopRemote, ServerHandle, Shared};
use super::handler::EventHandler;
use super::listener;
use super::socket::{Listener, LoopSocket, UnixPaths};
use super::stats::{LoopStats, ServerStats};
use super::waker::Waker;
use crate::net::addr::ListenAddr;

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
    /// Sockets each loop owns: reuseport TCP listeners, UDP sockets.
    per_loop: Vec<Vec<(usize, LoopSocket)>>,
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
    pub fn bind(config: Config) -> io::Result<Server> {
        config.validate()?;
        let loops = config.effective_loops();
        let mut addrs = Vec::new();
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut per_loop: Vec<Vec<(usize, LoopSocket)>> = (0..loops).map(|_| Vec::new()).collect();
        let mut shared_listeners = Vec::new();
        let mut unix_paths = UnixPaths::default();
        let mut udp_count = 0;
        for (index, addr) in config.listen.iter().enumerate() {
            match addr {
                ListenAddr::Tcp(addr) => {
                    let first = listener::bind(*addr, &config)?;
                    let actual = first.local_addr()?;
                    addrs.push(actual);
                    listeners.push(ListenAddr::Tcp(actual));
                    if config.reuseport {
                        per_loop[0].push((index, LoopSocket::Listener(Listener::Tcp(first))));
                        for l in per_loop.iter_mut().skip(1) {
                            let more = listener::bind(actual, &config)?;
                            l.push((index, LoopSocket::Listener(Listener::Tcp(more))));
                        }
                    } else {
                        shared_listeners.push((index, Listener::Tcp(first)));
                    }
                }
                ListenAddr::Udp(addr) => {
                    let first = listener::bind_udp(*addr, config.reuseport, &config)?;
                    let actual = first.local_addr()?;
                    listeners.push(ListenAddr::Udp(actual));
                    if config.reuseport {
                        per_loop[0].push((index, LoopSocket::Udp(first)));
                        for l in per_loop.iter_mut().skip(1) {
                            l.push((
                                index,
                                LoopSocket::Udp(listener::bind_udp(actual, true, &config)?),
                            ));
                        }
                    } else {
                        per_loop[udp_count % loops].push((index, LoopSocket::Udp(first)));
                        udp_count += 1;
                    }
                }
                ListenAddr::Unix(path) => {
                    let l = listener::bind_unix(path, config.unix_mode)?;
                    unix_paths.0.push(path.clone());
                    listeners.push(ListenAddr::Unix(path.clone()));
                    shared_listeners.push((index, Listener::Unix(l)));
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
            let waker = Arc::new(Waker::new(&poll, WAKER)?);
            let (tx, rx) = crossbeam_channel::unbounded();
            remotes.push(LoopRemote {
                id,
                listeners: listeners.clone(),
                tx,
                waker,
                stats: Arc::new(LoopStats::default()),
            });
            rxs.push(rx);
            polls.push(poll);
        }
        let acceptor = if shared_listeners.is_empty() {
            None
        } else {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(&poll, WAKER)?);
            let stats = Arc::new(LoopStats::default());
            let mut a = Acceptor {
                poll,
                listeners: shared_listeners,
                balance: config.balance,
                stats: stats.clone(),
            };
            a.register()?;
            Some((a, waker, stats))
        };
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            open_total: std::sync::atomic::AtomicUsize::new(0),
            max_conns: config.max_conns,
            loops: remotes.clone(),
            acceptor: acceptor.as_ref().map(|(_, w, s)| (w.clone(), s.clone())),
            addrs,
            listeners,
        });
        let server = ServerHandle { shared: shared.clone() };
        for ((((id, poll), rx), remote), listeners) in
            (0..loops).zip(polls).zip(rxs).zip(remotes).zip(per_loop)
        {
            let mut p = LoopParts {
                id,
                loops,
                poll,
                rx,
                remote,
                listeners,
                config: config.clone(),
                server: server.clone(),
            };
            p.register_listeners()?;
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
                if pin && !pin_current_thread(p.id) {
                    warn!("loop {}: could not pin to a CPU; running unpinned", p.id);
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
