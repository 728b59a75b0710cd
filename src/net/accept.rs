//! Accept errors, the same for every engine: which ones mean "a resource ran out, back
//! off and retry" and which mean "this one connection went away, accept the next"; the
//! back-off delay; and a log that does not flood while the condition lasts.

use std::io;
use std::time::{Duration, Instant};

/// How long accepting pauses after a resource-exhaustion error (EMFILE and friends).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often, at most, a persisting accept error is summarised in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What an engine does with a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Nothing more to accept now (`WouldBlock`): wait for readiness.
    Drained,
    /// Interrupted: try again at once.
    Retry,
    /// A resource ran out (EMFILE, ENFILE, ENOBUFS, ENOMEM): pause accepting for
    /// [`ACCEPT_BACKOFF`] while open connections are served.
    BackOff,
    /// One connection failed (ECONNABORTED, EPERM, ...): skip it and accept the next.
    Skip,
}

impl AcceptError {
    /// Classifies an error returned by `accept`.
    pub fn of(e: &io::Error) -> AcceptError {
        match e.kind() {
            io::ErrorKind::WouldBlock => AcceptError::Drained,
            io::ErrorKind::Interrupted => AcceptError::Retry,
            _ if is_resource_exhaustion(e) => AcceptError::BackOff,
            _ => AcceptError::Skip,
        }
    }
}

/// Whether an accept error is about a resource running out (back off and retry later)
/// rather than about one aborted connection (skip it and accept the next).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Rate-limits the log of back-off pauses: the first pause is logged at WARN, then while
/// the condition persists at most one summary a minute says how many more there were.
/// A successful accept ends the episode (and logs how many pauses it had).
#[derive(Debug, Default)]
pub struct AcceptLog {
    /// Pauses since the last line logged, and when that line was.
    pending: u64,
    episode: u64,
    last: Option<Instant>,
}

impl AcceptLog {
    /// A log with no episode in progress.
    pub fn new() -> Self {
        AcceptLog::default()
    }

    /// Records one back-off pause caused by `e`; `who` names the loop or acceptor.
    pub fn back_off(&mut self, who: &str, e: &io::Error) {
        self.episode += 1;
        let now = Instant::now();
        match self.last {
            None => {
                log::warn!(
                    "{who}: accept: {e}; pausing accepts (logged again at most once a minute)"
                );
                self.last = Some(now);
            }
            Some(t) if now.duration_since(t) >= SUMMARY_EVERY => {
                self.pending += 1;
                log::warn!("{who}: accept: {e}; {} more pauses in the last minute", self.pending);
                self.pending = 0;
                self.last = Some(now);
            }
            Some(_) => self.pending += 1,
        }
    }

    /// Records a successful accept: ends an episode of pauses, if one was in progress.
    #[inline]
    pub fn accepted(&mut self, who: &str) {
        if self.last.is_some() {
            log::info!("{who}: accepting again after {} pauses", self.episode);
            *self = AcceptLog::default();
        }
    }

    /// Pauses in the current episode (0 when accepts are not failing).
    pub fn pauses(&self) -> u64 {
        self.episode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(
            AcceptError::of(&io::Error::from(io::ErrorKind::WouldBlock)),
            AcceptError::Drained
        );
        assert_eq!(
            AcceptError::of(&io::Error::from(io::ErrorKind::Interrupted)),
            AcceptError::Retry
        );
        assert_eq!(
            AcceptError::of(&io::Error::from_raw_os_error(libc::EMFILE)),
            AcceptError::BackOff
        );
        assert_eq!(
            AcceptError::of(&io::Error::from_raw_os_error(libc::ENFILE)),
            AcceptError::BackOff
        );
        assert_eq!(
            AcceptError::of(&io::Error::from_raw_os_error(libc::ECONNABORTED)),
            AcceptError::Skip
        );
    }

    #[test]
    fn episode_counts_and_resets() {
        let mut log = AcceptLog::new();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..5 {
            log.back_off("loop 0", &e);
        }
        assert_eq!(log.pauses(), 5);
        assert_eq!(log.pending, 4, "only the first pause was logged");
        log.accepted("loop 0");
        assert_eq!(log.pauses(), 0);
        assert!(log.last.is_none());
    }
}
