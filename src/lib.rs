//! evloop: an evio-style event-loop TCP server framework.
pub mod proto;
