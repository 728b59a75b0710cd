//! One connection as the loop stores it: socket, state, leftover input, pending output.
//!
//! An idle connection holds no buffers: input and output vectors are dropped when they
//! empty, and the fast path reads into and writes from per-loop scratch buffers.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::socket::Stream;
use super::stats::{LoopStats, bump};
use super::timer::Tick;
use crate::net::addr::Peer;

/// WRITABLE interest is registered (pending output is waiting for the kernel).
pub(crate) const WRITE_INTEREST: u8 = 1;
/// The peer closed its side (read returned EOF).
pub(crate) const READ_CLOSED: u8 = 2;
/// Close once pending output is flushed; read no more.
pub(crate) const CLOSING: u8 = 4;
/// Not read because pending output is above the high watermark.
pub(crate) const PAUSED: u8 = 8;
/// The poller reported the peer's FIN (EPOLLRDHUP) together with data: a short read no
/// longer means "drained", so reading goes on until it returns EOF.
pub(crate) const HUP_SEEN: u8 = 16;

pub(crate) struct Connection<S> {
    pub(crate) sock: Stream,
    pub(crate) state: S,
    pub(crate) generation: u64,
    pub(crate) peer: Peer,
    /// Unconsumed input (empty, unallocated, on the fast path).
    pub(crate) input: Vec<u8>,
    /// Pending output; bytes before `out_pos` are already written.
    pub(crate) output: Vec<u8>,
    pub(crate) out_pos: usize,
    /// Set to false when the connection goes away; allocated only once a handle exists.
    pub(crate) alive: Option<Arc<AtomicBool>>,
    pub(crate) listener: u32,
    pub(crate) flags: u8,
    /// Wheel tick of the last bytes read or written (kept only when timeouts are on).
    pub(crate) active: Tick,
    /// Wheel tick at which the current unconsumed input began.
    pub(crate) partial_since: Tick,
    /// Tick of this connection's live timer-wheel entry; `Tick::MAX` when none.
    pub(crate) timer_at: Tick,
}

impl<S> Connection<S> {
    /// Bytes of output waiting for the kernel.
    #[inline]
    pub(crate) fn pending(&self) -> usize {
        self.output.len() - self.out_pos
    }

    #[inline]
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Writes pending output until it is all written or the kernel buffer is full.
    pub(crate) fn write_pending(&mut self, stats: &LoopStats) -> io::Result<()> {
        while self.out_pos < self.output.len() {
            match (&self.sock).write(&self.output[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    bump(&stats.writes, 1);
                    bump(&stats.bytes_written, n as u64);
                    if self.out_pos < self.output.len() {
                        bump(&stats.partial_writes, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.output.len() {
            self.output = Vec::new();
            self.out_pos = 0;
        } else if self.out_pos >= self.output.len() / 2 {
            // Amortised compaction: each byte moves at most once per halving.
            self.output.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// True when nothing is in flight: no unconsumed input, no pending output.
    pub(crate) fn is_idle(&self) -> bool {
        self.input.is_empty() && self.pending() == 0
    }

    /// Marks the connection gone for any `ConnHandle` that points at it.
    pub(crate) fn mark_dead(&self) {
        if let Some(a) = &self.alive {
            a.store(false, Ordering::Release);
        }
    }
}
