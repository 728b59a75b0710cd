//! Reading captures back into TCP streams, and replaying their client side.
//!
//! [`read_streams`] reads a pcap file (ours, or tcpdump's over Ethernet, raw IP, BSD
//! loopback or Linux cooked SLL/SLL2; not pcapng) into one [`Stream`] per TCP connection,
//! in order of first appearance. Each direction is reassembled by sequence number:
//! retransmitted bytes are kept once, and a hole (bytes never captured) is skipped, so
//! later bytes are kept (out-of-order segments are therefore not reordered). The client is
//! the side that sent the SYN; without a SYN in the capture, the side with the higher port
//! (ties: the first sender). A SYN on a 4-tuple whose stream already carried data or a FIN
//! starts a new stream.
//!
//! [`replay`] plays the client side of each stream against a server: one blocking
//! connection per stream, driven by two threads (one sends, one reads the replies
//! concurrently), all streams started together and each delayed by its recorded start
//! offset from the capture's first stream; within a stream, chunks are sent at their
//! recorded offsets; all times are scaled by `1/speed`. Streams therefore overlap as they
//! did when captured. Meant for sampled captures (hundreds of streams, not millions: two
//! threads per stream exist for the whole replay).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapReader;

use super::Direction;
use super::pcap::{ACK, FIN, SYN, dissect};

/// Bytes sent one way at one moment of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Time since the stream's first packet.
    pub at: Duration,
    /// The bytes (consecutive segments with the same timestamp are merged).
    pub data: Vec<u8>,
}

/// One TCP connection read from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The client's address (the connecting side).
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// The time of the stream's first packet, since the Unix epoch.
    pub start: Duration,
    /// Client-to-server bytes, in order.
    pub to_server: Vec<Chunk>,
    /// Server-to-client bytes, in order.
    pub to_client: Vec<Chunk>,
}

impl Stream {
    /// Total client-to-server bytes.
    pub fn bytes_to_server(&self) -> u64 {
        self.to_server.iter().map(|c| c.data.len() as u64).sum()
    }

    /// Total server-to-client bytes.
    pub fn bytes_to_client(&self) -> u64 {
        self.to_client.iter().map(|c| c.data.len() as u64).sum()
    }

    /// All bytes of one direction, concatenated.
    pub fn bytes(&self, direction: Direction) -> Vec<u8> {
        let chunks = match direction {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        };
        chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
    }
}

/// Reads the TCP streams of the pcap file at `path`.
pub fn read_streams(path: impl AsRef<Path>) -> io::Result<Vec<Stream>> {
    read_streams_from(BufReader::new(File::open(path)?))
}

/// Reads the TCP streams of a pcap from any reader. Errors: not a pcap file (pcapng
/// included), a truncated or corrupt record, an I/O error. Non-TCP frames are skipped.
pub fn read_streams_from<R: Read>(input: R) -> io::Result<Vec<Stream>> {
    let mut reader = PcapReader::new(input).map_err(pcap_error)?;
    let linktype = u32::from(reader.header().datalink);
    let mut streams: Vec<Building> = Vec::new();
    let mut by_tuple: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(pcap_error)?;
        let Some(seg) = dissect(linktype, &packet.data) else { continue };
        let syn_only = seg.flags & (SYN | ACK) == SYN;
        let found = by_tuple
            .get(&(seg.src, seg.dst))
            .map(|&i| (i, Direction::ToServer))
            .or_else(|| by_tuple.get(&(seg.dst, seg.src)).map(|&i| (i, Direction::ToClient)));
        let (index, dir) = match found {
            Some((i, dir)) if !(syn_only && streams[i].used()) => (i, dir),
            _ => {
                let client_is_src =
                    if seg.flags & SYN != 0 { syn_only } else { seg.src.port() >= seg.dst.port() };
                let (client, server) =
                    if client_is_src { (seg.src, seg.dst) } else { (seg.dst, seg.src) };
                by_tuple.remove(&(seg.dst, seg.src));
                by_tuple.insert((client, server), streams.len());
                streams.push(Building::new(client, server, packet.timestamp));
                let dir = if client_is_src { Direction::ToServer } else { Direction::ToClient };
                (streams.len() - 1, dir)
            }
        };
        streams[index].add(dir, &seg, packet.timestamp);
    }
    Ok(streams.into_iter().map(|b| b.stream).collect())
}

fn pcap_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// One direction's reassembly: the next expected sequence number.
#[derive(Default)]
struct Side {
    next: Option<u32>,
    fin: bool,
}

struct Building {
    stream: Stream,
    sides: [Side; 2],
}

impl Building {
    fn new(client: SocketAddr, server: SocketAddr, start: Duration) -> Building {
        Building {
            stream: Stream { client, server, start, to_server: Vec::new(), to_client: Vec::new() },
            sides: [Side::default(), Side::default()],
        }
    }

    fn used(&self) -> bool {
        !self.stream.to_server.is_empty()
            || !self.stream.to_client.is_empty()
            || self.sides.iter().any(|s| s.fin)
    }

    fn add(&mut self, dir: Direction, seg: &super::pcap::TcpSeen<'_>, ts: Duration) {
        let (side, chunks) = match dir {
            Direction::ToServer => (&mut self.sides[0], &mut self.stream.to_server),
            Direction::ToClient => (&mut self.sides[1], &mut self.stream.to_client),
        };
        if seg.flags & SYN != 0 {
            // A retransmitted SYN or SYN-ACK must not rewind a side already under way.
            side.next.get_or_insert(seg.seq.wrapping_add(1));
            return;
        }
        side.fin |= seg.flags & FIN != 0;
        if seg.len == 0 {
            return;
        }
        let next = *side.next.get_or_insert(seg.seq);
        let behind = next.wrapping_sub(seg.seq) as i32;
        let skip = if behind > 0 { behind as usize } else { 0 };
        if skip >= seg.len {
            return; // a retransmission of bytes already taken
        }
        side.next = Some(seg.seq.wrapping_add(seg.len as u32));
        let data = seg.payload.get(skip..).unwrap_or(&[]);
        if data.is_empty() {
            return;
        }
        let at = ts.saturating_sub(self.stream.start);
        match chunks.last_mut() {
            Some(last) if last.at == at => last.data.extend_from_slice(data),
            _ => chunks.push(Chunk { at, data: data.to_vec() }),
        }
    }
}

/// What one replayed stream did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The client address in the capture.
    pub client: SocketAddr,
    /// Bytes sent to the target.
    pub sent: u64,
    /// Bytes the target sent back.
    pub received: u64,
    /// Server-to-client bytes in the capture, for comparison with `received`.
    pub expected_received: u64,
    /// Why the stream stopped early (connect or I/O error), if it did.
    pub error: Option<String>,
}

/// What [`replay`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Streams replayed (one connection each).
    pub streams: usize,
    /// Bytes sent, all streams.
    pub bytes_sent: u64,
    /// Bytes received, all streams.
    pub bytes_received: u64,
    /// Per stream, in the order of `streams`.
    pub per_stream: Vec<StreamReport>,
}

/// How long to wait for more reply bytes after the last chunk was sent: short once at
/// least the captured reply size arrived, longer before.
const REPLY_GRACE_DONE: Duration = Duration::from_millis(100);
const REPLY_GRACE_WAITING: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Replays the client side of `streams` against `target` (see the module docs for the
/// threading and timing). `speed` scales time: 2.0 = twice as fast, `0` = no waiting.
/// After its last chunk a stream half-closes its connection and reads replies until the
/// server closes, or until it has gone quiet (100 ms once at least the captured reply
/// size came back, 2 s otherwise). Errors of single streams are in their
/// [`StreamReport::error`]; the function fails only for a negative or NaN `speed` or when
/// a thread cannot be started.
pub fn replay(streams: &[Stream], target: SocketAddr, speed: f64) -> io::Result<ReplayReport> {
    if speed.is_nan() || speed < 0.0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "replay speed must be 0 or more"));
    }
    let scale = |d: Duration| if speed == 0.0 { Duration::ZERO } else { d.div_f64(speed) };
    let first = streams.iter().map(|s| s.start).min().unwrap_or_default();
    let t0 = Instant::now();
    let per_stream = std::thread::scope(|scope| -> io::Result<Vec<StreamReport>> {
        let mut handles = Vec::with_capacity(streams.len());
        for stream in streams {
            let offset = scale(stream.start.saturating_sub(first));
            let handle = std::thread::Builder::new()
                .name("evloop-replay".into())
                .spawn_scoped(scope, move || replay_one(stream, target, t0 + offset, &scale))?;
            handles.push(handle);
        }
        Ok(handles
            .into_iter()
            .zip(streams)
            .map(|(h, s)| {
                h.join().unwrap_or_else(|_| StreamReport {
                    client: s.client,
                    sent: 0,
                    received: 0,
                    expected_received: s.bytes_to_client(),
                    error: Some("replay thread panicked".into()),
                })
            })
            .collect())
    })?;
    Ok(ReplayReport {
        streams: per_stream.len(),
        bytes_sent: per_stream.iter().map(|r| r.sent).sum(),
        bytes_received: per_stream.iter().map(|r| r.received).sum(),
        per_stream,
    })
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

fn replay_one(
    stream: &Stream,
    target: SocketAddr,
    start: Instant,
    scale: &dyn Fn(Duration) -> Duration,
) -> StreamReport {
    let expected = stream.bytes_to_client();
    let mut report = StreamReport {
        client: stream.client,
        sent: 0,
        received: 0,
        expected_received: expected,
        error: None,
    };
    sleep_until(start);
    let conn = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("connect to {target}: {e}"));
            return report;
        }
    };
    let reader = match conn.try_clone() {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(format!("clone socket: {e}"));
            return report;
        }
    };
    let sent_all = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let receiving = scope.spawn(|| receive(reader, expected, &sent_all));
        let mut writer = &conn;
        for chunk in &stream.to_server {
            sleep_until(start + scale(chunk.at));
            if let Err(e) = writer.write_all(&chunk.data) {
                report.error = Some(format!("send: {e}"));
                break;
            }
            report.sent += chunk.data.len() as u64;
        }
        let _ = conn.shutdown(Shutdown::Write);
        sent_all.store(true, std::sync::atomic::Ordering::Release);
        match receiving.join() {
            Ok((received, error)) => {
                report.received = received;
                if report.error.is_none() {
                    report.error = error;
                }
            }
            Err(_) => report.error = Some("receive thread panicked".into()),
        }
    });
    report
}

/// Reads replies until EOF, an error, or quiet after the sender finished.
fn receive(
    mut conn: TcpStream,
    expected: u64,
    sent_all: &std::sync::atomic::AtomicBool,
) -> (u64, Option<String>) {
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    if let Err(e) = conn.set_read_timeout(Some(Duration::from_millis(20))) {
        return (0, Some(format!("set read timeout: {e}")));
    }
    let mut last_data = Instant::now();
    let mut saw_sent_all = false;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (received, None),
            Ok(n) => {
                received += n as u64;
                last_data = Instant::now();
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (received, Some(format!("receive: {e}"))),
        }
        if sent_all.load(std::sync::atomic::Ordering::Acquire) {
            if !saw_sent_all {
                // Quiet time counts from the end of sending, not from the last reply.
                saw_sent_all = true;
                last_data = Instant::now();
            }
            let grace = if received >= expected { REPLY_GRACE_DONE } else { REPLY_GRACE_WAITING };
            if last_data.elapsed() >= grace {
                return (received, None);
            }
        }
    }
}
