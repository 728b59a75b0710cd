//! Per-loop counters, written by their own loop thread and readable from any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Adds `n` to a counter that only one thread ever writes: a plain load and store, no
/// locked read-modify-write on the hot path. Readers on other threads see a recent value.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Live counters of one loop (or of the acceptor thread). Each is written by exactly one
/// thread; read them with [`LoopStats::snapshot`].
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LoopStats {
    pub(crate) open: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) partial_writes: AtomicU64,
    pub(crate) accept_would_block: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) poll_iterations: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) dropped_commands: AtomicU64,
    pub(crate) peak_pending_output: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) output_limit_closes: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) datagrams_truncated: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) connect_timeouts: AtomicU64,
    pub(crate) links: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) spliced: AtomicU64,
    pub(crate) tls_handshakes: AtomicU64,
    pub(crate) tls_handshake_errors: AtomicU64,
    pub(crate) tls_resumed: AtomicU64,
}

/// A point-in-time copy of one loop's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections this loop took on (accepted itself, or handed over by the acceptor);
    /// outbound ones are in `connects`; for the acceptor, the connections it accepted and
    /// handed to a loop.
    pub accepted: u64,
    /// Connections closed (for any reason, including detach).
    pub closed: u64,
    /// Bytes read from connections.
    pub bytes_read: u64,
    /// Bytes written to connections.
    pub bytes_written: u64,
    /// `read` calls that returned data or EOF.
    pub reads: u64,
    /// `write` calls that wrote something.
    pub writes: u64,
    /// Writes that the kernel took only part of (the rest was buffered).
    pub partial_writes: u64,
    /// `accept` calls that found no connection waiting (EAGAIN).
    pub accept_would_block: u64,
    /// `accept` calls that failed otherwise (EMFILE, ECONNABORTED, ...).
    pub accept_errors: u64,
    /// Returns from the poller (`epoll_wait`).
    pub poll_iterations: u64,
    /// Times the loop's waker fired and was drained.
    pub wakeups: u64,
    /// Commands from a `ConnHandle` whose connection was already gone.
    pub dropped_commands: u64,
    /// The most output ever pending on one connection of this loop, in bytes (bounded by
    /// the high watermark plus what one callback writes).
    pub peak_pending_output: u64,
    /// Connections accepted and closed at once because `max_conns` was reached.
    pub rejected: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed by the incomplete-request timeout, and request deadlines
    /// (`Conn::set_request_deadline`) that passed.
    pub request_timeouts: u64,
    /// Connections closed for exceeding the output limits (`Config::max_output`,
    /// `Config::max_output_soft`).
    pub output_limit_closes: u64,
    /// Handler callbacks that panicked (their connection was closed).
    pub panics: u64,
    /// UDP datagrams received.
    pub datagrams_in: u64,
    /// UDP reply datagrams sent.
    pub datagrams_out: u64,
    /// UDP datagrams larger than the read buffer (delivered truncated).
    pub datagrams_truncated: u64,
    /// UDP replies the kernel refused (dropped).
    pub datagrams_dropped: u64,
    /// Outbound connections that connected (opened by the connect path).
    pub connects: u64,
    /// Outbound connects that failed, timeouts included.
    pub connect_errors: u64,
    /// Outbound connects that failed by their timeout (also in `connect_errors`).
    pub connect_timeouts: u64,
    /// Pairs of connections linked.
    pub links: u64,
    /// Bytes linked pairs moved from one side to the other (copied or spliced).
    pub forwarded: u64,
    /// Of `forwarded`, the bytes moved with `splice(2)` (never in user space; they are
    /// counted in `bytes_read` and `bytes_written` as well).
    pub spliced: u64,
    /// TLS handshakes completed (full and resumed).
    pub tls_handshakes: u64,
    /// TLS connections closed before their handshake completed: a TLS error (a
    /// plaintext client, an unknown client CA, ...), the peer closing, or the handshake
    /// timeout.
    pub tls_handshake_errors: u64,
    /// TLS handshakes that resumed an earlier session (ticket or session ID).
    pub tls_resumed: u64,
}

impl LoopStats {
    /// Reads every counter (relaxed; the values may be a moment apart).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            open: self.open.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            closed: self.closed.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            reads: self.reads.load(Relaxed),
            writes: self.writes.load(Relaxed),
            partial_writes: self.partial_writes.load(Relaxed),
            accept_would_block: self.accept_would_block.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            poll_iterations: self.poll_iterations.load(Relaxed),
            wakeups: self.wakeups.load(Relaxed),
            dropped_commands: self.dropped_commands.load(Relaxed),
            peak_pending_output: self.peak_pending_output.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
            output_limit_closes: self.output_limit_closes.load(Relaxed),
            panics: self.panics.load(Relaxed),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            datagrams_truncated: self.datagrams_truncated.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            connect_timeouts: self.connect_timeouts.load(Relaxed),
            links: self.links.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            spliced: self.spliced.load(Relaxed),
            tls_handshakes: self.tls_handshakes.load(Relaxed),
            tls_handshake_errors: self.tls_handshake_errors.load(Relaxed),
            tls_resumed: self.tls_resumed.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Field-wise sum of several snapshots (the maximum, for `peak_pending_output`).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a StatsSnapshot>) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in all {
            t.open += s.open;
            t.accepted += s.accepted;
            t.closed += s.closed;
            t.bytes_read += s.bytes_read;
            t.bytes_written += s.bytes_written;
            t.reads += s.reads;
            t.writes += s.writes;
            t.partial_writes += s.partial_writes;
            t.accept_would_block += s.accept_would_block;
            t.accept_errors += s.accept_errors;
            t.poll_iterations += s.poll_iterations;
            t.wakeups += s.wakeups;
            t.dropped_commands += s.dropped_commands;
            t.peak_pending_output = t.peak_pending_output.max(s.peak_pending_output);
            t.rejected += s.rejected;
            t.idle_timeouts += s.idle_timeouts;
            t.request_timeouts += s.request_timeouts;
            t.output_limit_closes += s.output_limit_closes;
            t.panics += s.panics;
            t.datagrams_in += s.datagrams_in;
            t.datagrams_out += s.datagrams_out;
            t.datagrams_truncated += s.datagrams_truncated;
            t.datagrams_dropped += s.datagrams_dropped;
            t.connects += s.connects;
            t.connect_errors += s.connect_errors;
            t.connect_timeouts += s.connect_timeouts;
            t.links += s.links;
            t.forwarded += s.forwarded;
            t.spliced += s.spliced;
            t.tls_handshakes += s.tls_handshakes;
            t.tls_handshake_errors += s.tls_handshake_errors;
            t.tls_resumed += s.tls_resumed;
        }
        t
    }
}

/// Counters of a whole server: one snapshot per loop, plus the acceptor's when there is one.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Per-loop snapshots, indexed by loop id.
    pub loops: Vec<StatsSnapshot>,
    /// The single acceptor's counters (its polls, accepts and accept errors), when
    /// reuseport is off.
    pub acceptor: Option<StatsSnapshot>,
}

impl ServerStats {
    /// Sum over loops and the acceptor. A connection the acceptor hands to a loop is
    /// counted once in `accepted` (by the loop that took it on), not twice.
    pub fn total(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::sum(self.loops.iter().chain(self.acceptor.as_ref()));
        if let Some(a) = &self.acceptor {
            t.accepted -= a.accepted;
        }
        t
    }
}
