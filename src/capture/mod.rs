//! Sampled traffic capture to pcap, and replay of captures (issue 12, items 6 and 7).
//!
//! This module owns everything between "a loop saw these bytes on a sampled connection"
//! and "a pcap file on disk", and back from a pcap file to client streams:
//!
//! - [`Sampler`] decides, once per new connection, whether to capture it (1 in N, optionally
//!   only during the first part of each minute).
//! - [`LoopBuffer`] is what one event loop holds: it copies the bytes of sampled
//!   connections into a bounded queue and never blocks; when the bound is reached the
//!   bytes are dropped and counted.
//! - [`Writer`] owns the file and a thread off the loops that turns the queued records
//!   into a standard pcap file (LINKTYPE_ETHERNET, synthesised IPv4/IPv6 + TCP headers,
//!   handshake, consistent sequence numbers, FIN at close), up to a size cap.
//! - [`replay`](mod@replay) reads a pcap back into per-connection [`Stream`]s and plays the
//!   client side against a server.
//!
//! Wiring (for the reactor/CLI): make one [`Writer`] per process, one [`LoopBuffer`] per
//! loop with [`Writer::loop_buffer`], and one [`Sampler`] shared by the loops (or one per
//! loop). On accept: `if sampler.sample() { buf.opened(id, client, server, now) }`; on each
//! read/write of a sampled connection: `buf.record(id, Direction::..., bytes, now)`; on close:
//! `buf.closed(id, now)`. At shutdown: [`Writer::finish`].

mod buffer;
mod pcap;
pub mod replay;
mod sampler;
#[cfg(test)]
mod tests;
mod writer;

pub use buffer::LoopBuffer;
pub use replay::{
    Chunk, ReplayReport, Stream, StreamReport, read_streams, read_streams_from, replay,
};
pub use sampler::Sampler;
pub use writer::{CaptureStats, Writer, WriterConfig};

/// Which way bytes went on a captured connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: bytes the server read.
    ToServer,
    /// Server to client: bytes the server wrote.
    ToClient,
}
