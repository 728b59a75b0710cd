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
//! Layout: [`config`](Config) what to run; `server` binding and threads; `event_loop`
//! one loop; `conn` a connection's buffers; `acceptor` the single acceptor; `waker`
//! the cross-thread wake (eventfd on Linux); `handle` cross-thread handles; `stats`.

mod acceptor;
mod affinity;
mod config;
mod conn;
mod event_loop;
mod handle;
mod handler;
mod io;
pub(crate) mod listener;
mod server;
pub(crate) mod socket;
mod stats;
#[cfg(test)]
mod tests;
mod timer;
mod waker;

pub use crate::net::is_resource_exhaustion;
pub use crate::net::{ListenAddr, Peer};
pub use config::{Balance, Config};
pub use handle::{ConnHandle, HandleError, ServerHandle};
pub use handler::{Action, CloseReason, Conn, Datagram, Detached, EventHandler, LoopInfo};
pub use server::{Running, Server};
pub use socket::DetachedStream;
pub use stats::{LoopStats, ServerStats, StatsSnapshot};
