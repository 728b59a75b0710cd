//! evloop: an evio-style event-loop TCP server framework.
//!
//! Imports point one way: `serve → {reactor, engines, proto, net}`; `engines` and
//! `reactor` use `net` and `proto` and never each other; `proto` uses nothing of the crate.
//!
//! - [`net`]: the engine-neutral layer: addresses, binding, accept-error handling,
//!   protocol counters, and the one protocol adapter.
//! - [`reactor`]: the engine — N loop threads, each with its own poller, waker and
//!   connections; SO_REUSEPORT listeners or one acceptor; buffered partial writes; the
//!   [`EventHandler`](reactor::EventHandler) callback API.
//! - [`engines`]: the std::net thread-per-connection engine and the tokio engine.
//! - [`proto`]: sans-IO protocols (echo, HTTP/1.1, Redis RESP2, length-prefixed frames).
//! - [`broker`]: the MQTT 3.1.1 broker (sessions, topic tree, fan-out across loops).
//! - [`serve`]: runs a protocol on any engine, and the server's lifecycle.
//! - [`proxy`]: the L4 proxy and load balancer (backends, balancing, health, the data
//!   path on the reactor's public API, and its lifecycle, which reuses `serve`'s).
//! - [`capture`]: sampled traffic capture to pcap, and replay.
//! - [`load`]: the load generator.
pub mod broker;
pub mod capture;
pub mod engines;
pub mod load;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod reactor;
pub mod serve;
