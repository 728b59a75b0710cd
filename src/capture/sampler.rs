//! The per-connection capture decision: 1 in N, optionally only in a window of each minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Decides for each new connection whether it is captured.
///
/// A connection is sampled when it arrives inside the window (if any) and it is the
/// 1st, (N+1)th, (2N+1)th... connection *among those arriving inside the window*: exactly
/// one in N over any run of N in-window connections. `Sampler` is `Sync` (one relaxed
/// atomic counter), so loops may share one through an `Arc` or each keep their own.
#[derive(Debug)]
pub struct Sampler {
    every: u64,
    window: Option<Duration>,
    seen: AtomicU64,
}

impl Sampler {
    /// Samples 1 connection in `every` (`1` = all, `0` = none). `window`: capture only
    /// during the first `window` of each wall-clock minute (`None`, or a window of a minute
    /// or more, = always).
    pub fn new(every: u64, window: Option<Duration>) -> Sampler {
        let window = window.filter(|w| *w < Duration::from_secs(60));
        Sampler { every, window, seen: AtomicU64::new(0) }
    }

    /// Whether to capture a connection arriving now.
    pub fn sample(&self) -> bool {
        self.sample_at(SystemTime::now())
    }

    /// Whether to capture a connection arriving at `now` (an injectable clock for tests).
    pub fn sample_at(&self, now: SystemTime) -> bool {
        if self.every == 0 || !self.in_window(now) {
            return false;
        }
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }

    /// Whether `now` falls in the capture window (always true without one).
    pub fn in_window(&self, now: SystemTime) -> bool {
        let Some(window) = self.window else { return true };
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let into_minute = Duration::from_nanos((since_epoch.as_nanos() % 60_000_000_000) as u64);
        into_minute < window
    }
}
