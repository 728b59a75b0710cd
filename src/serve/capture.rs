//! Sampled traffic capture for `evloop serve --capture FILE.pcap` and `evloop proxy
//! --capture` (issue 12): the wiring between the handlers and [`crate::capture`]. The
//! proxy records what its linked pairs move (`EventHandler::forwarded_data`; a sampled
//! pair is linked without splice so its bytes pass through user space).
//!
//! One [`Capture`] per process owns the pcap [`Writer`] (its thread writes the file) and
//! the [`Sampler`]; each loop's [`ProtoHandler`](super::ProtoHandler) holds a
//! [`CaptureHook`] with its own [`LoopBuffer`] (made on the loop's first sampled
//! connection). For a sampled connection the handler records the bytes the session was
//! given for the first time (the input past the tail it left unconsumed last time) and
//! the bytes the session appended to the output, so the file shows exactly what went
//! over the wire in each direction. A loop only copies into its bounded buffer and never
//! waits; what does not fit is dropped and counted
//! (`evloop_capture_dropped_bytes_total`, [`Capture::dropped_bytes`]).
//!
//! Connections that are not sampled cost one branch per callback; capture off costs
//! the same branch on an `Option` that is `None`.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::capture::{CaptureStats, Direction, LoopBuffer, Sampler, Writer, WriterConfig};
use crate::reactor::Conn;

/// What to capture (the `--capture*` flags).
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// The pcap file to write (created or truncated).
    pub path: PathBuf,
    /// Capture one connection in this many (`1`: all, `0`: none).
    pub sample: u64,
    /// Stop writing once the file reaches this size.
    pub max_bytes: u64,
    /// Capture only connections opened during the first `window` of each minute.
    pub window: Option<Duration>,
    /// Bound of each loop's buffer (payload plus 64 bytes per record).
    pub loop_buffer_bytes: usize,
}

impl CaptureSpec {
    /// A spec for `path` with the defaults: 1 in 100, 100 MiB, no window, 8 MiB per loop.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CaptureSpec {
            path: path.into(),
            sample: 100,
            max_bytes: 100 << 20,
            window: None,
            loop_buffer_bytes: WriterConfig::default().loop_buffer_bytes,
        }
    }
}

/// A process's capture: the file's writer and the sampling decision, shared by the loops.
#[derive(Debug)]
pub struct Capture {
    writer: Mutex<Option<Writer>>,
    sampler: Sampler,
    /// The counters at [`finish`](Self::finish) (kept for the metrics after it).
    last: Mutex<CaptureStats>,
}

impl Capture {
    /// Creates the file and starts the writer thread.
    pub fn start(spec: &CaptureSpec) -> io::Result<Arc<Capture>> {
        let config = WriterConfig {
            max_bytes: spec.max_bytes,
            loop_buffer_bytes: spec.loop_buffer_bytes,
            ..WriterConfig::default()
        };
        let writer = Writer::create(&spec.path, config).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", spec.path.display()))
        })?;
        Ok(Arc::new(Capture {
            writer: Mutex::new(Some(writer)),
            sampler: Sampler::new(spec.sample, spec.window),
            last: Mutex::new(CaptureStats::default()),
        }))
    }

    /// The counters so far.
    pub fn stats(&self) -> CaptureStats {
        match self.writer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(w) => w.stats(),
            None => *self.last.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Payload bytes dropped because a loop's buffer was full.
    pub fn dropped_bytes(&self) -> u64 {
        self.stats().dropped_bytes
    }

    /// Appends the capture's Prometheus series to `out`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats();
        let _ = write!(
            out,
            "# HELP evloop_capture_dropped_bytes_total Captured payload bytes dropped because \
             a loop's capture buffer was full.\n# TYPE evloop_capture_dropped_bytes_total counter\n\
             evloop_capture_dropped_bytes_total {}\n\
             # HELP evloop_capture_bytes_written_total Bytes written to the capture file.\n\
             # TYPE evloop_capture_bytes_written_total counter\n\
             evloop_capture_bytes_written_total {}\n\
             # HELP evloop_capture_connections_total Connections captured.\n\
             # TYPE evloop_capture_connections_total counter\n\
             evloop_capture_connections_total {}\n",
            s.dropped_bytes, s.bytes_written, s.captured_connections
        );
    }

    /// Writes what is queued, closes the file and stops the thread (later records are
    /// dropped). Returns the final counters.
    pub fn finish(&self) -> io::Result<CaptureStats> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(w) = writer else { return Ok(self.stats()) };
        let stats = w.finish()?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok(stats)
    }

    fn loop_buffer(&self) -> Option<LoopBuffer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Writer::loop_buffer)
    }
}

/// One loop's side of the capture, held by its handler. Cloning gives a hook with no
/// buffer yet (each loop makes its own).
#[derive(Debug)]
pub struct CaptureHook {
    capture: Arc<Capture>,
    buf: Option<LoopBuffer>,
    next_id: u64,
}

impl Clone for CaptureHook {
    fn clone(&self) -> Self {
        CaptureHook::new(self.capture.clone())
    }
}

/// A sampled connection's capture state (kept in its handler state).
#[derive(Debug, Clone, Copy)]
pub struct Captured {
    id: u64,
    /// Input left unconsumed by the last call: presented again, not recorded twice.
    tail: usize,
}

impl Captured {
    /// Input bytes left unconsumed by the last call (already recorded).
    pub fn tail(&self) -> usize {
        self.tail
    }
}

impl CaptureHook {
    /// A hook for one loop of `capture`.
    pub fn new(capture: Arc<Capture>) -> Self {
        CaptureHook { capture, buf: None, next_id: 0 }
    }

    /// A connection opened: sampled or not. `Some` when it is captured.
    pub fn opened(&mut self, conn: &mut Conn<'_>) -> Option<Captured> {
        if !self.capture.sampler.sample() {
            return None;
        }
        if self.buf.is_none() {
            self.buf = self.capture.loop_buffer();
        }
        let buf = self.buf.as_mut()?;
        let id = self.next_id;
        self.next_id += 1;
        let (client, server) = (conn.peer_addr().socket_addr(), conn.local_addr().ok());
        buf.opened(id, client, server, SystemTime::now()).then_some(Captured { id, tail: 0 })
    }

    /// Records what is new in `input` (past the last tail) before the session sees it.
    pub fn input(&mut self, c: &Captured, input: &[u8]) {
        if let (Some(buf), Some(new)) = (self.buf.as_mut(), input.get(c.tail..)) {
            buf.record(c.id, Direction::ToServer, new, SystemTime::now());
        }
    }

    /// Records the output the session appended (`out[from..]`) and keeps the new tail.
    pub fn output(&mut self, c: &mut Captured, out: &[u8], from: usize, tail: usize) {
        c.tail = tail;
        if let (Some(buf), Some(new)) = (self.buf.as_mut(), out.get(from..)) {
            buf.record(c.id, Direction::ToClient, new, SystemTime::now());
        }
    }

    /// Records `data` going in `dir` on `c` (the proxy: bytes a linked pair moved).
    pub fn record(&mut self, c: &Captured, dir: Direction, data: &[u8]) {
        if let Some(buf) = self.buf.as_mut() {
            buf.record(c.id, dir, data, SystemTime::now());
        }
    }

    /// The connection closed.
    pub fn closed(&mut self, c: &Captured) {
        if let Some(buf) = self.buf.as_mut() {
            buf.closed(c.id, SystemTime::now());
        }
    }
}

/// Finishes `capture` at the end of a run and logs its counters (or the writer's error).
pub fn finish_and_log(capture: &Capture) {
    match capture.finish() {
        Ok(s) => log::info!(
            "capture: {} connections, {} bytes written, {} bytes dropped{}",
            s.captured_connections,
            s.bytes_written,
            s.dropped_bytes,
            if s.limit_reached { " (size limit reached)" } else { "" }
        ),
        Err(e) => log::error!("capture: {e}"),
    }
}
