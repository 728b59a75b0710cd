//! evloop: an evio-style event-loop TCP server framework.
//!
//! - [`reactor`]: the engine — N loop threads, each with its own poller, waker and
//!   connections; SO_REUSEPORT listeners or one acceptor; buffered partial writes; the
//!   [`EventHandler`](reactor::EventHandler) callback API.
//! - [`proto`]: sans-IO protocols (echo, HTTP/1.1, Redis RESP2, length-prefixed frames).
//! - [`baseline`]: a std::net thread-per-connection engine driving the same protocols.
//! - [`serve`]: runs a protocol on either engine.
pub mod baseline;
pub mod load;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod reactor;
pub mod serve;
