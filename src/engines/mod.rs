//! Engines other than the reactor, side by side: the std::net thread-per-connection
//! baseline and (cargo feature `tokio`) the tokio engine. They run the same sans-IO
//! protocols through the same adapter ([`crate::net::session`]) as the reactor, and use
//! only the engine-neutral layer ([`crate::net`]) and [`crate::proto`]: never the reactor,
//! never each other.

pub mod std;
#[cfg(feature = "tokio")]
pub mod tokio;
