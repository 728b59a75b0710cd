//! Platform code, chosen at compile time as mio does it: one file per platform family,
//! each offering the same small interface.
//!
//! - [`WakerInner`]: the kernel object behind a loop's [`Waker`](super::waker::Waker)
//!   (an eventfd on Linux, a `mio::Waker` elsewhere);
//! - [`pin_current_thread`]: CPU affinity for `--pin` (`sched_setaffinity` on Linux; an
//!   `Unsupported` error elsewhere);
//! - [`REUSEPORT_SPREADS`]: whether `SO_REUSEPORT` makes the kernel spread incoming
//!   connections over the sockets bound to one address (Linux). Where it does not
//!   (macOS, the BSDs) the server uses the single acceptor instead;
//! - [`Pipe`]: the pipe a spliced link moves bytes through (`splice(2)`, Linux); elsewhere
//!   `Pipe::new` fails with `Unsupported` and links use the copy path.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{
    Pipe, REUSEPORT_SPREADS, WakerInner, pin_current_thread, pin_supported, recv, send,
};

#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
pub(crate) use other::{Pipe, REUSEPORT_SPREADS, WakerInner, pin_current_thread, pin_supported};
