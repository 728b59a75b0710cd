//! Engine-neutral protocol counters: requests answered per loop (or runtime, or thread)
//! and protocol errors by kind. Every engine counts into them through the one protocol
//! adapter ([`crate::net::session`]); `serve` renders them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter alone on its cache lines (two, for the adjacent-line prefetcher).
#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Protocol-level counters of one server: requests answered per loop and protocol
/// errors by kind. Shared by all loops; each loop writes only its own request counter,
/// and errors (rare) take a lock.
#[derive(Debug)]
pub struct ProtoMetrics {
    proto: &'static str,
    /// One counter per loop, each on its own cache lines: loops never share a line.
    requests: Vec<Padded>,
    errors: Mutex<Vec<(&'static str, u64)>>,
}

impl ProtoMetrics {
    /// Counters for protocol `proto` on `loops` loops (or threads: the std engine uses
    /// slot 0 for all of them). At least one slot is made.
    pub fn new(proto: &'static str, loops: usize) -> Self {
        ProtoMetrics {
            proto,
            requests: (0..loops.max(1)).map(|_| Padded(AtomicU64::new(0))).collect(),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// The protocol's name, as given to [`ProtoMetrics::new`].
    pub fn proto(&self) -> &'static str {
        self.proto
    }

    /// Counts `n` requests answered on loop `id` (taken modulo the number of slots).
    #[inline]
    pub fn add_requests(&self, id: usize, n: u64) {
        if n > 0 {
            self.requests[id % self.requests.len()].0.fetch_add(n, Relaxed);
        }
    }

    /// Counts one protocol error of `kind` (e.g. `"bad_request"`).
    pub fn add_error(&self, kind: &'static str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => errors.push((kind, 1)),
        }
    }

    /// Requests answered, summed over loops.
    pub fn requests(&self) -> u64 {
        self.requests.iter().map(|r| r.0.load(Relaxed)).sum()
    }

    /// Requests answered, per loop slot, in slot order.
    pub fn requests_per_loop(&self) -> Vec<u64> {
        self.requests.iter().map(|r| r.0.load(Relaxed)).collect()
    }

    /// Protocol errors by kind, sorted by kind.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        e.sort();
        e
    }
}
