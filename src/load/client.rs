//! The load client's event handler: each connection keeps `pipeline` requests in flight,
//! checks every reply and records its latency.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::workload::{Reply, Workload};
use crate::reactor::{Action, CloseReason, Conn, EventHandler};

/// Run phases, shared by all loops.
pub(crate) const WARMUP: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;

/// What all loops share.
pub(crate) struct Shared {
    pub(crate) workload: Workload,
    pub(crate) pipeline: usize,
    pub(crate) phase: AtomicU8,
    /// Replies counted in the measure phase, all loops (for the progress line).
    pub(crate) progress: AtomicU64,
    /// Per-loop results, pushed when a loop's handler is dropped at shutdown.
    pub(crate) results: Mutex<Vec<Tally>>,
    /// Connections opened (by the loops' connect path).
    pub(crate) connected: AtomicU64,
    /// Connects that failed, and the first failure: (connection index, error).
    pub(crate) connect_failures: AtomicU64,
    pub(crate) first_failure: Mutex<Option<(u64, io::Error)>>,
}

/// Counts of one loop (or, merged, of a run), measure phase only unless noted.
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    /// Wrong replies and unparsable input (any phase).
    pub(crate) errors: u64,
    /// Connections that closed before the run ended (any phase).
    pub(crate) dropped: u64,
    pub(crate) latency_ns: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            requests: 0,
            bytes_out: 0,
            bytes_in: 0,
            errors: 0,
            dropped: 0,
            // 1 ns .. 100 s at 3 significant digits.
            latency_ns: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
        }
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
        self.errors += other.errors;
        self.dropped += other.dropped;
        let _ = self.latency_ns.add(&other.latency_ns);
    }
}

/// One loop's client handler.
pub(crate) struct Client {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tally: Tally,
}

/// Per connection: send times of the requests in flight, oldest first.
pub(crate) struct InFlight(VecDeque<Instant>);

impl Client {
    fn send(&mut self, conn: &mut Conn<'_>, flight: &mut InFlight, now: Instant, measuring: bool) {
        let req = self.shared.workload.request();
        conn.write(req);
        flight.0.push_back(now);
        if measuring {
            self.tally.bytes_out += req.len() as u64;
        }
    }
}

impl EventHandler for Client {
    type State = InFlight;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (InFlight, Action) {
        self.shared.connected.fetch_add(1, Ordering::AcqRel);
        let mut flight = InFlight(VecDeque::with_capacity(self.shared.pipeline));
        let now = Instant::now();
        for _ in 0..self.shared.pipeline {
            self.send(conn, &mut flight, now, false);
        }
        (flight, Action::None)
    }

    fn data(
        &mut self,
        conn: &mut Conn<'_>,
        flight: &mut InFlight,
        input: &[u8],
    ) -> (usize, Action) {
        let phase = self.shared.phase.load(Ordering::Relaxed);
        let measuring = phase == MEASURE;
        let now = Instant::now();
        let mut at = 0;
        let mut replies = 0;
        while at < input.len() {
            let n = match self.shared.workload.reply(&input[at..]) {
                Reply::Incomplete => break,
                Reply::Ok(n) => n,
                Reply::Wrong(n) => {
                    self.tally.errors += 1;
                    n
                }
                Reply::Garbage => {
                    self.tally.errors += 1;
                    return (input.len(), Action::Close);
                }
            };
            at += n;
            let Some(sent) = flight.0.pop_front() else {
                // A reply nobody asked for.
                self.tally.errors += 1;
                return (input.len(), Action::Close);
            };
            if measuring {
                replies += 1;
                self.tally.bytes_in += n as u64;
                let _ = self.tally.latency_ns.record((now - sent).as_nanos().max(1) as u64);
            }
            if phase != STOP {
                self.send(conn, flight, now, measuring);
            }
        }
        if replies > 0 {
            self.tally.requests += replies;
            self.shared.progress.fetch_add(replies, Ordering::Relaxed);
        }
        (at, Action::None)
    }

    fn connect_error(&mut self, tag: u64, err: io::Error) {
        let mut first = self.shared.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert((tag, err));
        self.shared.connect_failures.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&mut self, _state: InFlight, reason: CloseReason) {
        if !matches!(reason, CloseReason::Shutdown) {
            self.tally.dropped += 1;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let tally = std::mem::replace(&mut self.tally, Tally::new());
        self.shared.results.lock().unwrap_or_else(|e| e.into_inner()).push(tally);
    }
}
