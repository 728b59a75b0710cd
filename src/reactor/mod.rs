//! The reactor: N event-loop threads, listeners, buffered writes and the callback API.
//!
//! ```no_run
//! use evloop::reactor::{Action, Config, Conn, EventHandler, Server};
//!
//! struct Echo;
//! impl EventHandler for Echo {
//!     type State = ();
//!     fn opened(&mut self, _c: &mut Conn<'_>) -> ((), Action) {
//!         ((), Action::None)
//!     }
//!     fn data(&mut self, c: &mut Conn<'_>, _s: &mut (), input: &[u8]) -> (usize, Action) {
//!         c.write(input);
//!         (input.len(), Action::None)
//!     }
//! }
//!
//! let config = Config::new().listen("127.0.0.1:5000")?.loops(2);
//! Server::bind(config)?.serve(|_loop_id| Echo)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Layout
//!
//! Each path through the reactor has one file:
//!
//! - `mod.rs`: this map and the public API (re-exports);
//! - `config.rs`: [`Config`] and [`Balance`], what a server runs with;
//! - `server.rs`: [`Server`] and [`Running`]: binding every listener, choosing reuseport
//!   listeners or the single acceptor, starting, pinning and joining the threads;
//! - `handler.rs`: the callback API: [`EventHandler`], [`Conn`], [`Action`], [`Datagram`];
//! - `handle.rs`: reaching loops from other threads: [`ServerHandle`] (including
//!   outbound connects), [`ConnHandle`] (wake, write, and the bounded `try_write` with
//!   `notify_writable`), the loop command channel, server-wide admission (`max_conns`);
//! - `event_loop/`: one loop thread, its state private to it:
//!   - `mod.rs`: the loop's state, the poll loop, commands, running callbacks;
//!   - `token.rs`: the typed poll-token scheme (waker, listener, UDP, connection);
//!   - `accept.rs`: **the accept path**: per-loop reuseport listeners and the single
//!     acceptor thread with its balance policies, through one accept routine with the
//!     error back-off; taking on a connection (`open`), accepted or attached;
//!   - `proxy_header.rs`: the PROXY-protocol step of the accept path
//!     ([`Config::accept_proxy`]): a connection waits under its own token until its
//!     header is in, then `open` goes on with the client's address as the peer;
//!   - `read.rs`: **the read path**: socket → read buffer → handler, tail kept;
//!   - `write.rs`: **the write path**: output queue, flush, partial writes, WRITABLE
//!     interest on/off, watermarks, close-after-flush;
//!   - `connect.rs`: **the connect path**: nonblocking outbound connects, completion by
//!     `SO_ERROR`, connect timeouts, then `open` as for an accepted connection;
//!   - `link.rs`: **linked pairs**: forwarding between two connections (copy or
//!     `splice(2)`), backpressure across the pair, half-close, the pair's end;
//!   - `conn.rs`: a connection's record and flags; close and detach;
//!   - `tls.rs`: TLS sessions (rustls, sans-IO) between socket and handler, entered
//!     from the read path, the write path's flush and close (`tls_off.rs` without the
//!     `tls` feature);
//!   - `udp.rs`: datagram sockets;
//!   - `timers.rs`: poll timeout, handler tick, idle and request timeouts, handler
//!     request deadlines, the soft output limit;
//! - `timer.rs`: the timing wheel the connection timeouts use;
//! - `socket.rs`: the stream and listener kinds (TCP, Unix) as mio sources;
//! - `waker.rs`: the coalescing cross-thread wake;
//! - `stats.rs`: per-loop counters ([`LoopStats`]) and their snapshots;
//! - `sys/`: platform code behind `cfg`: the eventfd waker (Linux) or `mio::Waker`, CPU
//!   pinning, whether `SO_REUSEPORT` spreads connections, splice pipes (Linux).
//!
//! # Outbound connections and linked pairs
//!
//! A callback opens a connection with [`Conn::connect`] (or any thread with
//! [`ServerHandle::connect`]); once connected it is an ordinary connection whose
//! [`Conn::origin`] says who asked, and [`Conn::link`] ties it to another connection so
//! the reactor moves bytes between them. A proxy, in full (see `examples/proxy.rs`):
//!
//! ```no_run
//! use evloop::reactor::{Action, Config, Conn, ConnectAddr, EventHandler, Server};
//!
//! struct Proxy(ConnectAddr);
//! impl EventHandler for Proxy {
//!     type State = ();
//!     fn opened(&mut self, c: &mut Conn<'_>) -> ((), Action) {
//!         let ok = match c.requester() {
//!             None => {
//!                 c.pause_reading(); // until the backend is there
//!                 c.connect(&self.0, None, 0).is_ok()
//!             }
//!             Some(client) => c.link(client).is_ok(),
//!         };
//!         ((), if ok { Action::None } else { Action::Close })
//!     }
//!     fn data(&mut self, _: &mut Conn<'_>, _: &mut (), i: &[u8]) -> (usize, Action) {
//!         (i.len(), Action::None) // never called for linked connections
//!     }
//! }
//!
//! let backend = ConnectAddr::Tcp("127.0.0.1:6379".parse().unwrap());
//! let config = Config::new().listen("127.0.0.1:7000")?.loops(1);
//! Server::bind(config)?.serve(move |_| Proxy(backend.clone()))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Binding, addresses, accept-error classes and process limits are engine-neutral and
//! live in [`crate::net`].
//!
//! # Off Linux
//!
//! The reactor builds for macOS and the BSDs. There `SO_REUSEPORT` does not spread
//! connections, so a `reuseport` configuration is served by the single acceptor (logged
//! once), and `pin` is refused with an `Unsupported` error.

mod config;
mod event_loop;
mod handle;
mod handler;
mod inherited;
mod server;
mod socket;
mod stats;
mod sys;
#[cfg(test)]
mod tests;
mod timer;
mod waker;

pub use crate::net::is_resource_exhaustion;
pub use crate::net::{ListenAddr, Peer};
pub use config::{Balance, Config};
pub use handle::{ConnHandle, HandleError, ServerHandle};
pub use handler::{
    Action, CloseReason, Conn, ConnId, ConnectAddr, Datagram, Detached, EventHandler, LinkOptions,
    LoopInfo, Origin,
};
pub use server::{Running, Server};
pub use socket::DetachedStream;
pub use stats::{LoopStats, ServerStats, StatsSnapshot};
