//! The engine-neutral layer every engine shares and none owns: listen and peer addresses,
//! binding listening sockets, classifying accept errors (with the back-off and its
//! rate-limited log), process limits, protocol counters, and the one protocol adapter
//! that drives a sans-IO session over bytes. Imports nothing of the crate but `proto`
//! (for the adapter); never an engine.

pub mod accept;
pub mod activation;
pub mod addr;
pub mod bind;
pub mod counters;
pub mod limits;
pub mod session;
pub mod tls;

pub use accept::{ACCEPT_BACKOFF, AcceptError, AcceptLog, is_resource_exhaustion};
pub use addr::{ListenAddr, ListenSpec, Peer};
pub use bind::{
    BindOptions, clear_stale_unix, set_unix_mode, tcp_listener, udp_socket, unix_listener,
};
pub use counters::ProtoMetrics;
