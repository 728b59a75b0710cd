//! Tests of capture: pcap written and read back byte-exact (IPv4, IPv6, segments over
//! 64 KiB), tcpdump's view of it, bounded loop buffers, the size cap, the sampler with an
//! injected clock, reassembly of ordinary captures, and replay against an echo server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::buffer::{LoopShared, Msg, Record};
use super::pcap::{ACK, Segment, ethernet_frame};
use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("evloop-capture-{}-{n}-{name}.pcap", std::process::id()))
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

/// Recognisable bytes of length `n` seeded by `seed`.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// One captured event: direction, bytes, milliseconds.
type Event = (Direction, Vec<u8>, u64);

struct Conn {
    id: u64,
    client: SocketAddr,
    server: SocketAddr,
    /// (direction, bytes, ms)
    events: Vec<Event>,
}

fn two_connections() -> Vec<Conn> {
    let big = pattern(100 * 1024, 7);
    vec![
        Conn {
            id: 1,
            client: sa("10.1.2.3:40000"),
            server: sa("10.9.9.9:6379"),
            events: vec![
                (Direction::ToServer, b"*1\r\n$4\r\nPING\r\n".to_vec(), 10),
                (Direction::ToClient, b"+PONG\r\n".to_vec(), 11),
                (Direction::ToServer, b"SET-hello-world".to_vec(), 20),
                (Direction::ToServer, big.clone(), 30),
                (Direction::ToClient, b"+OK\r\n".to_vec(), 31),
                (Direction::ToClient, pattern(70_000, 3), 40),
            ],
        },
        Conn {
            id: 2,
            client: sa("[2001:db8::5]:50000"),
            server: sa("[2001:db8::1]:8080"),
            events: vec![
                (Direction::ToServer, b"GET /v6-request HTTP/1.1\r\n\r\n".to_vec(), 12),
                (
                    Direction::ToClient,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv6".to_vec(),
                    13,
                ),
                (Direction::ToServer, pattern(5, 1), 25),
                (Direction::ToClient, pattern(66_000, 9), 26),
            ],
        },
    ]
}

fn write_capture(path: &PathBuf, conns: &[Conn], config: WriterConfig) -> CaptureStats {
    let writer = Writer::create(path, config).unwrap();
    let mut buf = writer.loop_buffer();
    for c in conns {
        assert!(buf.opened(c.id, Some(c.client), Some(c.server), at(c.events[0].2 - 1)));
    }
    let mut all: Vec<(u64, &Conn, &Event)> =
        conns.iter().flat_map(|c| c.events.iter().map(move |e| (e.2, c, e))).collect();
    all.sort_by_key(|e| e.0);
    for (_, c, (dir, bytes, ms)) in all {
        buf.record(c.id, *dir, bytes, at(*ms));
    }
    for c in conns {
        buf.closed(c.id, at(100));
    }
    writer.finish().unwrap()
}

fn concat(events: &[Event], dir: Direction) -> Vec<u8> {
    events.iter().filter(|e| e.0 == dir).flat_map(|e| e.1.iter().copied()).collect()
}

#[test]
fn capture_read_back_byte_exact_ipv4_ipv6_and_big_segments() {
    let path = temp_path("roundtrip");
    let conns = two_connections();
    let stats = write_capture(&path, &conns, WriterConfig::default());
    assert_eq!(stats.captured_connections, 2);
    assert_eq!(stats.dropped_bytes, 0);
    assert!(!stats.limit_reached);
    assert_eq!(stats.bytes_written, std::fs::metadata(&path).unwrap().len());
    let streams = read_streams(&path).unwrap();
    assert_eq!(streams.len(), 2);
    for (s, c) in streams.iter().zip(&conns) {
        assert_eq!((s.client, s.server), (c.client, c.server));
        assert_eq!(s.bytes(Direction::ToServer), concat(&c.events, Direction::ToServer));
        assert_eq!(s.bytes(Direction::ToClient), concat(&c.events, Direction::ToClient));
        // One chunk per record (a big record's segments share a timestamp and merge).
        let want: Vec<(Duration, usize)> = c
            .events
            .iter()
            .filter(|e| e.0 == Direction::ToServer)
            .map(|e| (Duration::from_millis(e.2 - c.events[0].2 + 1), e.1.len()))
            .collect();
        let got: Vec<(Duration, usize)> =
            s.to_server.iter().map(|ch| (ch.at, ch.data.len())).collect();
        assert_eq!(got, want);
        assert_eq!(s.start, at(c.events[0].2 - 1).duration_since(UNIX_EPOCH).unwrap());
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn capture_readable_by_tcpdump_or_skip_without_tcpdump() {
    let Ok(out) = std::process::Command::new("tcpdump").arg("--version").output() else {
        println!("skipped: tcpdump is not installed (apt-get install tcpdump)");
        return;
    };
    assert!(out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty());
    let path = temp_path("tcpdump");
    let conns = two_connections();
    write_capture(&path, &conns, WriterConfig::default());
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new("tcpdump").arg("-r").arg(&path).args(args).output().unwrap();
        assert!(out.status.success(), "tcpdump failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&["-nn", "-A"]);
    let mut from = 0;
    for needle in ["PING", "PONG", "SET-hello-world", "+OK"] {
        let i = text[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing or out of order:\n{text}"));
        from += i;
    }
    for needle in [
        "10.1.2.3.40000 > 10.9.9.9.6379",
        "10.9.9.9.6379 > 10.1.2.3.40000",
        "2001:db8::5.50000 > 2001:db8::1.8080",
        "2001:db8::1.8080 > 2001:db8::5.50000",
        "GET /v6-request",
        "Flags [S]",
        "Flags [S.]",
        "Flags [F.]",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    // Checksums (IPv4 header and TCP) are right: tcpdump -vv flags wrong ones.
    let verbose = run(&["-nn", "-vv"]);
    assert!(!verbose.contains("incorrect"), "bad checksum:\n{verbose}");
    assert!(!verbose.contains("bad cksum"), "bad checksum:\n{verbose}");
    std::fs::remove_file(&path).unwrap();
}

/// A loop buffer whose records the test takes itself (no writer thread: deterministic).
fn detached_buffer(capacity: usize) -> (LoopBuffer, crossbeam_channel::Receiver<Msg>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = std::sync::Arc::new(LoopShared {
        capacity,
        in_flight: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
    });
    (LoopBuffer { loop_id: 0, shared, tx, gaps: Default::default() }, rx)
}

#[test]
fn full_loop_buffer_drops_and_counts() {
    let (mut buf, rx) = detached_buffer(1000);
    assert!(buf.opened(1, Some(sa("1.1.1.1:1")), Some(sa("2.2.2.2:2")), at(0)));
    buf.record(1, Direction::ToServer, &[1; 500], at(1)); // 64 + 564 = 628 queued
    assert_eq!(buf.dropped_bytes(), 0);
    buf.record(1, Direction::ToServer, &[2; 500], at(2)); // would be 1192: dropped
    buf.record(1, Direction::ToClient, &[3; 400], at(2)); // would be 1092: dropped
    assert_eq!(buf.dropped_bytes(), 900);
    assert_eq!(buf.queued_bytes(), 628);
    buf.record(1, Direction::ToServer, &[4; 250], at(3)); // 628 + 314 = 942: fits
    assert_eq!(buf.queued_bytes(), 942);
    assert!(!buf.opened(2, None, None, at(3)), "no room for another connection");
    buf.closed(1, at(4)); // always queued
    let records: Vec<Record> = rx
        .try_iter()
        .map(|m| match m {
            Msg::Record { record, .. } => record,
            Msg::Stop => panic!(),
        })
        .collect();
    assert_eq!(records.len(), 4);
    assert!(matches!(&records[2], Record::Data { gap: 500, bytes, .. } if bytes == &[4; 250]));
    assert!(matches!(records[3], Record::Closed { conn: 1, .. }));
    // The writer gone: everything is dropped and counted, never blocks.
    drop(rx);
    buf.record(1, Direction::ToServer, &[5; 10], at(5));
    assert_eq!(buf.dropped_bytes(), 910);
}

#[test]
fn dropped_bytes_leave_a_hole_in_the_sequence_space() {
    let path = temp_path("gap");
    let writer = Writer::create(&path, WriterConfig::default()).unwrap();
    let mut buf = writer.loop_buffer();
    buf.opened(7, Some(sa("1.2.3.4:1000")), Some(sa("5.6.7.8:80")), at(0));
    buf.record(7, Direction::ToServer, b"before", at(1));
    // As if 10 bytes had not fitted.
    buf.gaps.insert((7, Direction::ToServer), 10);
    buf.record(7, Direction::ToServer, b"after", at(2));
    buf.record(7, Direction::ToClient, b"reply", at(3));
    buf.closed(7, at(4));
    writer.finish().unwrap();
    let streams = read_streams(&path).unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].bytes(Direction::ToServer), b"beforeafter");
    assert_eq!(streams[0].bytes(Direction::ToClient), b"reply");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn loops_on_several_threads_reusing_connection_ids() {
    let path = temp_path("threads");
    let writer = Writer::create(&path, WriterConfig::default()).unwrap();
    std::thread::scope(|scope| {
        for l in 0..4u16 {
            let mut buf = writer.loop_buffer();
            scope.spawn(move || {
                // Every loop uses connection id 1; the writer keeps them apart.
                let client = SocketAddr::new([10, 0, 0, 1].into(), 30_000 + l);
                buf.opened(1, Some(client), Some(sa("10.0.0.2:80")), at(0));
                for i in 0..50u8 {
                    buf.record(
                        1,
                        Direction::ToServer,
                        &pattern(1000, i ^ l as u8),
                        at(u64::from(i)),
                    );
                    buf.record(1, Direction::ToClient, &[i; 10], at(u64::from(i)));
                }
                buf.closed(1, at(60));
            });
        }
    });
    let stats = writer.finish().unwrap();
    assert_eq!((stats.captured_connections, stats.dropped_bytes), (4, 0));
    let mut streams = read_streams(&path).unwrap();
    streams.sort_by_key(|s| s.client.port());
    assert_eq!(streams.len(), 4);
    for (l, s) in streams.iter().enumerate() {
        assert_eq!(s.client.port(), 30_000 + l as u16);
        let want: Vec<u8> = (0..50u8).flat_map(|i| pattern(1000, i ^ l as u8)).collect();
        assert_eq!(s.bytes(Direction::ToServer), want);
        assert_eq!(
            s.bytes(Direction::ToClient),
            (0..50u8).flat_map(|i| [i; 10]).collect::<Vec<u8>>()
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn max_bytes_is_respected() {
    let path = temp_path("max");
    let max = 10_000;
    let writer =
        Writer::create(&path, WriterConfig { max_bytes: max, ..WriterConfig::default() }).unwrap();
    let mut buf = writer.loop_buffer();
    buf.opened(1, Some(sa("1.2.3.4:1000")), Some(sa("5.6.7.8:80")), at(0));
    for i in 0..100 {
        buf.record(1, Direction::ToServer, &pattern(300, i), at(u64::from(i)));
    }
    buf.closed(1, at(200));
    let stats = writer.finish().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(stats.limit_reached);
    assert!(len <= max && len > max - 400, "file of {len} bytes");
    assert_eq!(stats.bytes_written, len);
    // What was written is a valid capture: a prefix of the stream.
    let streams = read_streams(&path).unwrap();
    let sent = streams[0].bytes(Direction::ToServer);
    let want: Vec<u8> = (0..100).flat_map(|i| pattern(300, i)).collect();
    assert!(!sent.is_empty() && want.starts_with(&sent));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unix_sockets_and_mapped_addresses_get_documented_addresses() {
    let path = temp_path("unix");
    let writer = Writer::create(&path, WriterConfig::default()).unwrap();
    let mut buf = writer.loop_buffer();
    buf.opened(1, None, None, at(0));
    buf.record(1, Direction::ToServer, b"x", at(1));
    buf.opened(2, Some(sa("[::ffff:10.0.0.1]:5000")), Some(sa("[::ffff:10.0.0.2]:80")), at(2));
    buf.record(2, Direction::ToServer, b"y", at(3));
    buf.opened(3, Some(sa("10.0.0.1:5001")), Some(sa("[::1]:80")), at(4));
    buf.record(3, Direction::ToServer, b"z", at(5));
    writer.finish().unwrap();
    let streams = read_streams(&path).unwrap();
    let pairs: Vec<_> = streams.iter().map(|s| (s.client, s.server)).collect();
    assert_eq!(
        pairs,
        vec![
            (sa("127.0.0.2:1024"), sa("127.0.0.1:1")),
            (sa("10.0.0.1:5000"), sa("10.0.0.2:80")),
            (sa("[::ffff:10.0.0.1]:5001"), sa("[::1]:80")),
        ]
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn sampler_one_in_n_exact_over_1000_connections() {
    for (n, want) in [(1, 1000), (10, 100), (7, 143), (100, 10), (1000, 1), (0, 0)] {
        let s = Sampler::new(n, None);
        let got = (0..1000).filter(|_| s.sample()).count();
        assert_eq!(got, want, "1 in {n}");
    }
    // The first connection is sampled, then every Nth.
    let s = Sampler::new(3, None);
    let picks: Vec<bool> = (0..7).map(|_| s.sample()).collect();
    assert_eq!(picks, [true, false, false, true, false, false, true]);
}

#[test]
fn sampler_window_with_injected_clock() {
    let minute = |m: u64, secs_in: u64, ms: u64| {
        UNIX_EPOCH
            + Duration::from_secs(1_700_000_040 + m * 60 + secs_in)
            + Duration::from_millis(ms)
    };
    // 1_700_000_040 is a whole minute.
    assert_eq!(1_700_000_040 % 60, 0);
    let s = Sampler::new(1, Some(Duration::from_secs(10)));
    assert!(s.sample_at(minute(0, 0, 0)));
    assert!(s.sample_at(minute(0, 9, 999)));
    assert!(!s.sample_at(minute(0, 10, 0)));
    assert!(!s.sample_at(minute(0, 59, 999)));
    assert!(s.sample_at(minute(5, 3, 0)));
    // Out-of-window connections do not count towards 1 in N.
    let s = Sampler::new(2, Some(Duration::from_secs(10)));
    let picks: Vec<bool> = [(0, 1), (0, 30), (0, 2), (0, 40), (1, 5)]
        .iter()
        .map(|&(m, sec)| s.sample_at(minute(m, sec, 0)))
        .collect();
    assert_eq!(picks, [true, false, false, false, true]);
    // A window of a minute or more means always.
    let s = Sampler::new(1, Some(Duration::from_secs(60)));
    assert!(s.sample_at(minute(0, 59, 0)));
}

/// Writes frames of one link type, as tcpdump would, from Ethernet frames.
fn write_pcap(path: &PathBuf, linktype: u32, frames: &[(Duration, Vec<u8>)]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header =
        PcapHeader { datalink: pcap_file::DataLink::from(linktype), ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (ts, eth) in frames {
        let ethertype = [eth[12], eth[13]];
        let data = match linktype {
            1 => eth.clone(),
            101 => eth[14..].to_vec(),
            113 => {
                let mut v =
                    vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0, 0, 1, ethertype[0], ethertype[1]];
                v.extend_from_slice(&eth[14..]);
                v
            }
            _ => unreachable!(),
        };
        w.write_packet(&PcapPacket::new(*ts, data.len() as u32, &data)).unwrap();
    }
}

#[test]
fn reader_dedupes_retransmissions_on_ethernet_raw_and_sll() {
    let c = sa("192.168.1.10:51000");
    let s = sa("192.168.1.1:6379");
    let seg = |from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]| {
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        let mut out = Vec::new();
        ethernet_frame(
            &mut out,
            &Segment { src, dst, from_client, seq, ack, flags, ip_id: 1, payload },
        );
        out
    };
    let ms = |n: u64| Duration::from_millis(1_000_000 + n);
    // No SYN in this capture (started mid-stream); a retransmission, an overlapping
    // retransmission and a duplicated reply.
    let frames = vec![
        (ms(0), seg(true, 1000, 5000, ACK, b"hello ")),
        (ms(1), seg(true, 1000, 5000, ACK, b"hello ")),
        (ms(2), seg(true, 1003, 5000, ACK, b"lo world")),
        (ms(3), seg(false, 5000, 1014, ACK, b"reply")),
        (ms(4), seg(false, 5000, 1014, ACK, b"reply")),
        (ms(5), seg(true, 1014, 5005, ACK, b"!")),
    ];
    for linktype in [1, 101, 113] {
        let path = temp_path(&format!("link{linktype}"));
        write_pcap(&path, linktype, &frames);
        let streams = read_streams(&path).unwrap();
        assert_eq!(streams.len(), 1, "link type {linktype}");
        let st = &streams[0];
        assert_eq!((st.client, st.server), (c, s));
        assert_eq!(st.bytes(Direction::ToServer), b"hello world!");
        assert_eq!(st.bytes(Direction::ToClient), b"reply");
        let ats: Vec<_> = st.to_server.iter().map(|ch| ch.at).collect();
        assert_eq!(ats, [Duration::ZERO, Duration::from_millis(2), Duration::from_millis(5)]);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn reader_rejects_non_pcap() {
    assert!(read_streams_from(&b"not a pcap file at all, really"[..]).is_err());
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn replay_against_echo_server_gets_same_byte_counts() {
    // An echo session captured, read back and replayed against a fresh echo server.
    let path = temp_path("replay");
    let conns: Vec<Conn> = (0..3)
        .map(|i| {
            let chunks = [pattern(10 + i, 1), pattern(100_000, 2), pattern(3, 3)];
            let mut events = Vec::new();
            for (k, ch) in chunks.iter().enumerate() {
                let t = 10 * (k as u64 + 1) + i as u64;
                events.push((Direction::ToServer, ch.clone(), t));
                events.push((Direction::ToClient, ch.clone(), t + 1));
            }
            Conn {
                id: i as u64,
                client: SocketAddr::new([10, 0, 0, 1].into(), 40000 + i as u16),
                server: sa("10.0.0.2:7"),
                events,
            }
        })
        .collect();
    write_capture(&path, &conns, WriterConfig::default());
    let streams = read_streams(&path).unwrap();
    assert_eq!(streams.len(), 3);
    let target = echo_server();
    for speed in [0.0, 10.0] {
        let started = std::time::Instant::now();
        let report = replay(&streams, target, speed).unwrap();
        assert_eq!(report.streams, 3);
        for (r, s) in report.per_stream.iter().zip(&streams) {
            assert_eq!(r.error, None);
            assert_eq!(r.sent, s.bytes_to_server());
            assert_eq!(r.received, r.sent);
            assert_eq!(r.expected_received, s.bytes_to_client());
            assert_eq!(r.received, r.expected_received);
        }
        assert_eq!(report.bytes_sent, report.bytes_received);
        assert_eq!(report.bytes_sent, streams.iter().map(Stream::bytes_to_server).sum::<u64>());
        if speed == 10.0 {
            // The last chunk of the last stream is 23 ms after the first stream's start
            // (2 ms stream offset + 21 ms into the stream): 2.3 ms at 10x.
            let took = started.elapsed();
            assert!(took >= Duration::from_micros(2_300), "took {took:?}");
        }
    }
    assert!(replay(&streams, target, -1.0).is_err());
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let report = replay(&streams[..1], dead, 0.0).unwrap();
    assert!(report.per_stream[0].error.is_some());
    std::fs::remove_file(&path).unwrap();
}
