//! The capture writer: a thread off the loops that owns the pcap file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::Direction;
use super::buffer::{LoopBuffer, LoopShared, Msg, Record};
use super::pcap::{ACK, FIN, MAX_SEGMENT, PSH, SNAPLEN, SYN, Segment, ethernet_frame};

/// Settings of a [`Writer`].
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Stop writing once the file would exceed this many bytes (the 24-byte file header is
    /// always written). Default 100 MiB.
    pub max_bytes: u64,
    /// The bound of each [`LoopBuffer`]: queued payload plus 64 bytes per record. Default
    /// 8 MiB.
    pub loop_buffer_bytes: usize,
    /// How often the writer flushes the file when records keep coming. Default 200 ms.
    pub flush_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_bytes: 100 << 20,
            loop_buffer_bytes: 8 << 20,
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// Counters of a capture, readable from any thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// Connections whose opening was written to the file.
    pub captured_connections: u64,
    /// Bytes written to the file (pcap headers included).
    pub bytes_written: u64,
    /// Payload bytes the loop buffers dropped because they were full
    /// (`evloop_capture_dropped_bytes_total`).
    pub dropped_bytes: u64,
    /// Whether `max_bytes` was reached (nothing is written after that).
    pub limit_reached: bool,
}

#[derive(Debug, Default)]
struct Shared {
    loops: Mutex<Vec<Arc<LoopShared>>>,
    connections: AtomicU64,
    bytes_written: AtomicU64,
    limit_reached: AtomicBool,
}

/// Owns a pcap file and the thread that writes it.
///
/// The file is standard pcap (microsecond timestamps, LINKTYPE_ETHERNET). Each captured
/// connection becomes a TCP stream between its client and server addresses: SYN, SYN-ACK,
/// ACK at open; one PSH-ACK segment per record (split into segments of at most 65,495
/// bytes) with sequence and acknowledgement numbers consistent in both directions; at
/// close a FIN from the server, a FIN from the client and a last ACK (the capture does not
/// know which side closed first). IPv4 and TCP checksums are computed. An IPv4-mapped
/// IPv6 address is written as IPv4; a mixed pair is written as IPv6. Unix-socket sides
/// (`None` addresses) become `127.0.0.2:<1024 + n mod 64512>` for the client (n = the
/// capture's connection counter) and `127.0.0.1:1` for the server.
///
/// Packets are written in the order the records reach the thread, with the records'
/// timestamps: within a loop they are in order; between loops they may be slightly out of
/// order (tcpdump and Wireshark accept that).
///
/// Dropping a `Writer` stops it like [`Writer::finish`], ignoring errors.
#[derive(Debug)]
pub struct Writer {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
    next_loop: AtomicUsize,
    config: WriterConfig,
}

impl Writer {
    /// Creates (truncates) the file at `path`, writes the pcap header and starts the thread.
    pub fn create(path: impl AsRef<Path>, config: WriterConfig) -> io::Result<Writer> {
        Writer::new(File::create(path)?, config)
    }

    /// As [`Writer::create`], writing to any sink.
    pub fn new<W: Write + Send + 'static>(out: W, config: WriterConfig) -> io::Result<Writer> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::native(),
        };
        let sink = Sink(Arc::new(Mutex::new(BufWriter::new(Box::new(out)))));
        let pcap = PcapWriter::with_header(sink.clone(), header).map_err(pcap_io_error)?;
        let shared = Arc::new(Shared::default());
        shared.bytes_written.store(24, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = WriterThread {
            rx,
            pcap: Some(pcap),
            sink,
            shared: Arc::clone(&shared),
            streams: HashMap::new(),
            frame: Vec::new(),
            max_bytes: config.max_bytes,
            flush_interval: config.flush_interval,
        };
        let thread =
            std::thread::Builder::new().name("evloop-capture".into()).spawn(move || state.run())?;
        Ok(Writer { tx, shared, thread: Some(thread), next_loop: AtomicUsize::new(0), config })
    }

    /// A new buffer for one event loop (call once per loop; each gets its own bound).
    pub fn loop_buffer(&self) -> LoopBuffer {
        let shared = Arc::new(LoopShared {
            capacity: self.config.loop_buffer_bytes,
            in_flight: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        if let Ok(mut loops) = self.shared.loops.lock() {
            loops.push(Arc::clone(&shared));
        }
        let loop_id = self.next_loop.fetch_add(1, Ordering::Relaxed) as u32;
        LoopBuffer { loop_id, shared, tx: self.tx.clone(), gaps: HashMap::new() }
    }

    /// The counters so far.
    pub fn stats(&self) -> CaptureStats {
        let dropped_bytes = match self.shared.loops.lock() {
            Ok(loops) => loops.iter().map(|l| l.dropped.load(Ordering::Relaxed)).sum(),
            Err(_) => 0,
        };
        CaptureStats {
            captured_connections: self.shared.connections.load(Ordering::Relaxed),
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            dropped_bytes,
            limit_reached: self.shared.limit_reached.load(Ordering::Relaxed),
        }
    }

    /// Writes every record queued so far, flushes and closes the file, and stops the
    /// thread. Connections still open are left open in the file (no FIN). Records queued
    /// after this are dropped and counted. Returns the final counters, or the first I/O
    /// error the writer met.
    pub fn finish(mut self) -> io::Result<CaptureStats> {
        self.stop()?;
        Ok(self.stats())
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let _ = self.tx.send(Msg::Stop);
        thread.join().map_err(|_| io::Error::other("capture writer thread panicked"))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One TCP stream being written.
struct StreamState {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of the client and of the server.
    next_seq: [u32; 2],
}

struct WriterThread {
    rx: Receiver<Msg>,
    /// `None` once writing stopped (size limit or I/O error).
    pcap: Option<PcapWriter<Sink>>,
    /// The file under `pcap`, for flushing (`PcapWriter` cannot flush).
    sink: Sink,
    shared: Arc<Shared>,
    streams: HashMap<(u32, u64), StreamState>,
    frame: Vec<u8>,
    max_bytes: u64,
    flush_interval: Duration,
}

impl WriterThread {
    fn run(mut self) -> io::Result<()> {
        let mut error: Option<io::Error> = None;
        let mut last_flush = Instant::now();
        loop {
            match self.rx.recv_timeout(self.flush_interval) {
                Ok(Msg::Record { loop_id, charge, account, record }) => {
                    account.in_flight.fetch_sub(charge, Ordering::Relaxed);
                    if let Err(e) = self.handle(loop_id, record) {
                        log::error!("capture: writing failed, capture stopped: {e}");
                        self.pcap = None;
                        error.get_or_insert(e);
                    }
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_flush.elapsed() >= self.flush_interval {
                last_flush = Instant::now();
                if let Err(e) = self.flush() {
                    error.get_or_insert(e);
                }
            }
        }
        // Records that raced with the stop are dropped and counted; later ones find the
        // receiver gone and count themselves.
        let WriterThread { rx, mut sink, .. } = self;
        for msg in rx.try_iter() {
            if let Msg::Record { charge, account, record, .. } = msg {
                account.in_flight.fetch_sub(charge, Ordering::Relaxed);
                if let Record::Data { bytes, .. } = record {
                    account.dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            }
        }
        drop(rx);
        if let Err(e) = sink.flush() {
            error.get_or_insert(e);
        }
        error.map_or(Ok(()), Err)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }

    fn handle(&mut self, loop_id: u32, record: Record) -> io::Result<()> {
        if self.pcap.is_none() {
            return Ok(());
        }
        match record {
            Record::Opened { conn, client, server, ts } => {
                let n = self.shared.connections.load(Ordering::Relaxed);
                let (client, server) = endpoints(client, server, n);
                let isn_c = isn(loop_id, conn, 0);
                let isn_s = isn(loop_id, conn, 1);
                let mut s = StreamState { client, server, next_seq: [isn_c, isn_s] };
                let wrote = self.segment(&s, true, isn_c, 0, SYN, &[], ts)?
                    && self.segment(&s, false, isn_s, isn_c.wrapping_add(1), SYN | ACK, &[], ts)?
                    && self.segment(
                        &s,
                        true,
                        isn_c.wrapping_add(1),
                        isn_s.wrapping_add(1),
                        ACK,
                        &[],
                        ts,
                    )?;
                if wrote {
                    s.next_seq = [isn_c.wrapping_add(1), isn_s.wrapping_add(1)];
                    self.shared.connections.fetch_add(1, Ordering::Relaxed);
                    self.streams.insert((loop_id, conn), s);
                }
            }
            Record::Data { conn, dir, bytes, gap, ts } => {
                let Some(mut s) = self.streams.remove(&(loop_id, conn)) else { return Ok(()) };
                let from_client = dir == Direction::ToServer;
                let (me, other) = if from_client { (0, 1) } else { (1, 0) };
                s.next_seq[me] = s.next_seq[me].wrapping_add(gap as u32);
                for chunk in bytes.chunks(MAX_SEGMENT) {
                    if !self.segment(
                        &s,
                        from_client,
                        s.next_seq[me],
                        s.next_seq[other],
                        PSH | ACK,
                        chunk,
                        ts,
                    )? {
                        return Ok(());
                    }
                    s.next_seq[me] = s.next_seq[me].wrapping_add(chunk.len() as u32);
                }
                self.streams.insert((loop_id, conn), s);
            }
            Record::Closed { conn, ts } => {
                let Some(s) = self.streams.remove(&(loop_id, conn)) else { return Ok(()) };
                let [c, sv] = s.next_seq;
                let _ = self.segment(&s, false, sv, c, FIN | ACK, &[], ts)?
                    && self.segment(&s, true, c, sv.wrapping_add(1), FIN | ACK, &[], ts)?
                    && self.segment(
                        &s,
                        false,
                        sv.wrapping_add(1),
                        c.wrapping_add(1),
                        ACK,
                        &[],
                        ts,
                    )?;
            }
        }
        Ok(())
    }

    /// Writes one segment; `Ok(false)` if the size limit stopped it (and all writing).
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        s: &StreamState,
        from_client: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
        ts: SystemTime,
    ) -> io::Result<bool> {
        let (src, dst) = if from_client { (s.client, s.server) } else { (s.server, s.client) };
        let ip_id = (seq ^ (seq >> 16)) as u16;
        ethernet_frame(
            &mut self.frame,
            &Segment { src, dst, from_client, seq, ack, flags, ip_id, payload },
        );
        let size = 16 + self.frame.len() as u64;
        let written = self.shared.bytes_written.load(Ordering::Relaxed);
        if written + size > self.max_bytes {
            log::warn!(
                "capture: file reached its size limit of {} bytes; capture stopped",
                self.max_bytes
            );
            self.shared.limit_reached.store(true, Ordering::Relaxed);
            self.pcap = None;
            return Ok(false);
        }
        let Some(pcap) = self.pcap.as_mut() else { return Ok(false) };
        let timestamp = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        let packet = PcapPacket::new(timestamp, self.frame.len() as u32, &self.frame);
        pcap.write_packet(&packet).map_err(pcap_io_error)?;
        self.shared.bytes_written.store(written + size, Ordering::Relaxed);
        Ok(true)
    }
}

/// The file, shared between the `PcapWriter` that writes to it and the writer thread that
/// flushes it (both on the writer thread: the lock is never contended).
#[derive(Clone)]
struct Sink(Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("capture sink poisoned"))?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().map_err(|_| io::Error::other("capture sink poisoned"))?.flush()
    }
}

fn pcap_io_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

/// A deterministic initial sequence number per stream and side.
fn isn(loop_id: u32, conn: u64, side: u64) -> u32 {
    let mut x =
        (u64::from(loop_id) << 56) ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (side << 40);
    x ^= 0x5851_F42D_4C95_7F2D;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 32)) as u32
}

/// The addresses written for a stream: Unix sides synthesised, IPv4-mapped IPv6 written as
/// IPv4, a mixed pair as IPv6.
fn endpoints(
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    n: u64,
) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let client = client.map(canonical).unwrap_or_else(|| {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 1024 + (n % 64_512) as u16)
    });
    let server = server
        .map(canonical)
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1));
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if client.is_ipv4() == server.is_ipv4() { (client, server) } else { (v6(client), v6(server)) }
}
