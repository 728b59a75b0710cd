//! The per-loop side of capture: copy sampled bytes into a bounded queue, never block.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use crossbeam_channel::Sender;

use super::Direction;

/// What each queued record costs against the bound beyond its payload (the record itself,
/// the channel slot): keeps a flood of tiny records bounded too.
pub(crate) const RECORD_OVERHEAD: usize = 64;

/// One event on a captured connection, as the writer thread receives it.
#[derive(Debug)]
pub(crate) enum Record {
    Opened {
        conn: u64,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        ts: SystemTime,
    },
    /// `gap`: bytes of this direction dropped just before these (the writer skips that
    /// much sequence space, so a reader sees a hole, not a corrupt stream).
    Data {
        conn: u64,
        dir: Direction,
        bytes: Vec<u8>,
        gap: u64,
        ts: SystemTime,
    },
    Closed {
        conn: u64,
        ts: SystemTime,
    },
}

/// The accounting one [`LoopBuffer`] shares with the writer thread.
#[derive(Debug)]
pub(crate) struct LoopShared {
    pub(crate) capacity: usize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) dropped: AtomicU64,
}

/// A message to the writer thread.
pub(crate) enum Msg {
    Record { loop_id: u32, charge: usize, account: Arc<LoopShared>, record: Record },
    Stop,
}

/// One event loop's handle for capture: owned by the loop (`&mut self`, no locks taken).
///
/// Every call only copies bytes into a queue to the writer thread and returns at once:
/// it never waits for the writer or the disk. The queue is bounded per loop by
/// [`WriterConfig::loop_buffer_bytes`](super::WriterConfig) (payload plus a small per-record
/// overhead); what does not fit is dropped and counted in [`LoopBuffer::dropped_bytes`],
/// and the writer leaves a matching hole in that stream's sequence numbers.
///
/// Connection ids are the caller's (e.g. the loop's slab key plus a generation) and must be
/// unique among this buffer's open connections; different loops' buffers may reuse ids.
#[derive(Debug)]
pub struct LoopBuffer {
    pub(crate) loop_id: u32,
    pub(crate) shared: Arc<LoopShared>,
    pub(crate) tx: Sender<Msg>,
    /// Bytes dropped per (connection, direction) not yet reported to the writer.
    pub(crate) gaps: HashMap<(u64, Direction), u64>,
}

impl LoopBuffer {
    /// A sampled connection opened: `client` is the peer, `server` the local address;
    /// `None` for a Unix-socket side (the writer synthesises `127.0.0.2:<port>` for a client
    /// and `127.0.0.1:1` for a server; see [`Writer`](super::Writer)). Returns `false` if
    /// the buffer is full: the connection is then not captured and the caller should treat
    /// it as not sampled (records for it would be ignored by the writer anyway).
    pub fn opened(
        &mut self,
        conn_id: u64,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        ts: SystemTime,
    ) -> bool {
        self.push(RECORD_OVERHEAD, Record::Opened { conn: conn_id, client, server, ts }, true)
    }

    /// `bytes` went in `direction` on connection `conn_id` at `ts`. Copies them, or, if the
    /// buffer is full, drops them and adds their length to [`LoopBuffer::dropped_bytes`].
    /// Empty slices are ignored.
    pub fn record(&mut self, conn_id: u64, direction: Direction, bytes: &[u8], ts: SystemTime) {
        if bytes.is_empty() {
            return;
        }
        let charge = bytes.len() + RECORD_OVERHEAD;
        if !self.fits(charge) {
            self.shared.dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            *self.gaps.entry((conn_id, direction)).or_insert(0) += bytes.len() as u64;
            return;
        }
        let gap = self.gaps.remove(&(conn_id, direction)).unwrap_or(0);
        let record = Record::Data { conn: conn_id, dir: direction, bytes: bytes.to_vec(), gap, ts };
        if !self.push(charge, record, false) {
            self.shared.dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }

    /// Connection `conn_id` closed. Always queued, even over the bound (it is small and
    /// there is at most one per opened connection), so the writer can end the stream.
    pub fn closed(&mut self, conn_id: u64, ts: SystemTime) {
        self.gaps.remove(&(conn_id, Direction::ToServer));
        self.gaps.remove(&(conn_id, Direction::ToClient));
        self.push(RECORD_OVERHEAD, Record::Closed { conn: conn_id, ts }, false);
    }

    /// Payload bytes this buffer dropped because it was full (or the writer had stopped).
    pub fn dropped_bytes(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Bytes (payload plus per-record overhead) queued and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    fn fits(&self, charge: usize) -> bool {
        self.shared.in_flight.load(Ordering::Relaxed) + charge <= self.shared.capacity
    }

    /// Queues `record` charging `charge`; with `check`, only if it fits. Never blocks: the
    /// channel is unbounded and the bound is kept by the `in_flight` accounting (only this
    /// loop adds to it, so check-then-add cannot overshoot).
    fn push(&mut self, charge: usize, record: Record, check: bool) -> bool {
        if check && !self.fits(charge) {
            return false;
        }
        self.shared.in_flight.fetch_add(charge, Ordering::Relaxed);
        let msg = Msg::Record {
            loop_id: self.loop_id,
            charge,
            account: Arc::clone(&self.shared),
            record,
        };
        if self.tx.send(msg).is_err() {
            // The writer is gone: nothing will take the bytes.
            self.shared.in_flight.fetch_sub(charge, Ordering::Relaxed);
            return false;
        }
        true
    }
}
