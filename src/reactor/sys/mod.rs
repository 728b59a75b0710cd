//! Platform code, chosen at compile time as mio does it: one file per platform family,
//! each offering the same small interface.
//!
//! - [`WakerInner`]: the kernel object behind a loop's [`Waker`](super::waker::Waker)
//!   (an eventfd on Linux, a `mio::Waker` elsewhere);
//! - [`pin_current_thread`]: CPU affinity for `--pin` (`sched_setaffinity` on Linux; an
//!   `Unsupported` error elsewhere);
//! - [`REUSEPORT_SPREADS`]: whether `SO_REUSEPORT` makes the kernel spread incoming
//!   connections over the sockets bound to one address (Linux). Where it does not
//!   (macOS, the BSDs) the server uses the single acceptor instead.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{REUSEPORT_SPREADS, WakerInner, pin_current_thread, pin_supported};

#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
pub(crate) use other::{REUSEPORT_SPREADS, WakerInner, pin_current_thread, pin_supported};
