//! evio bug 3: output dropped when a write was partial. The kernel buffer fills, the rest
//! must wait in the connection's output buffer and go out, in order, byte-exact.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use common::*;
use evloop::proto::echo::Echo;
use evloop::reactor::{Action, Conn, EventHandler, Server};
use evloop::serve::{Engine, ProtoHandler, start};

const BIG: usize = 64 << 20;

/// Writes 64 MiB as soon as a connection opens, then closes after flushing.
struct Firehose;

impl EventHandler for Firehose {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        conn.write(&pattern(BIG, 7));
        ((), Action::Close)
    }
    fn data(&mut self, _: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        (input.len(), Action::None)
    }
}

#[test]
fn sixty_four_mib_to_a_slow_reader_arrive_byte_exact() {
    let server = Server::bind(local_config(1)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| Firehose).unwrap();
    let h = running.handle();
    let mut client = connect_small_rcvbuf(addr);
    thread::sleep(Duration::from_millis(500));
    let got = read_to_end(&mut client);
    assert_eq!(got.len(), BIG);
    assert_eq!(checksum(&got), checksum(&pattern(BIG, 7)));
    let s = h.stats().total();
    assert!(s.partial_writes >= 1, "the kernel never refused bytes: the test proved nothing");
    assert_eq!(s.bytes_written, BIG as u64);
    running.shutdown().unwrap();
}

/// The slow path: a small server send buffer and a client that reads nothing for half a
/// second make the echo pile up in the connection's output buffer, so most of the 32 MiB
/// leave through the buffered flush (`write_pending`), not the one-shot fast path. The
/// client half-closes after sending, so a flush that dropped bytes shows as a short
/// stream followed by EOF instead of a read that waits forever.
#[test]
fn echo_of_32_mib_sent_before_reading_is_complete_and_bounded() {
    const LEN: usize = 32 << 20;
    let mut config = local_config(1);
    config.send_buffer = Some(16 * 1024);
    let (high, rbuf) = (config.high_watermark as u64, config.read_buffer as u64);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(|_| ProtoHandler::new(Echo)).unwrap();
    let h = running.handle();
    let data = pattern(LEN, 3);
    let client = connect_small_rcvbuf(addr);
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).expect("send 32 MiB");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    // Read nothing until the echo has backed up into the server's output buffer (the
    // kernel's buffers are full): from there on, output leaves only through the
    // buffered flush. Then a little longer, so the server pauses reading.
    wait_until("the echo backs up in the server", || {
        h.stats().total().peak_pending_output >= high / 2
    });
    thread::sleep(Duration::from_millis(200));
    let paused = h.stats().total();
    let mut reader = client;
    let mut got = Vec::with_capacity(LEN);
    reader.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(got.len(), LEN, "echoed bytes, then EOF");
    assert!(got == pattern(LEN, 3), "echo differs from what was sent");
    let s = h.stats().total();
    assert!(s.partial_writes >= 1, "no partial write happened: the test proved nothing");
    // Output was pending while the client did not read: it can only have left through
    // the buffered flush. Several watermarks' worth went that way.
    assert!(
        paused.peak_pending_output >= high / 2,
        "only {} bytes were pending while the client read nothing: the slow path was not taken",
        paused.peak_pending_output
    );
    assert!(
        s.partial_writes >= 32,
        "{} partial writes: the echo did not go out in buffered pieces",
        s.partial_writes
    );
    assert!(
        s.peak_pending_output <= high + rbuf,
        "pending output reached {} bytes, over high watermark {high} + read buffer {rbuf}",
        s.peak_pending_output
    );
    running.shutdown().unwrap();
}

fn half_close(engine: Engine) {
    const LEN: usize = 4 << 20;
    let server = start(engine, Echo, local_config(2)).unwrap();
    let mut client = connect(server.local_addrs()[0]);
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&pattern(LEN, 11)).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&mut client);
    sender.join().unwrap();
    assert_eq!(got.len(), LEN, "every echoed byte, then EOF");
    assert!(got == pattern(LEN, 11));
    let mut probe = [0u8; 1];
    assert_eq!(client.read(&mut probe).unwrap(), 0, "EOF after the echo");
    server.shutdown().unwrap();
}

#[test]
fn half_closed_client_gets_every_byte_then_eof_reactor() {
    half_close(Engine::Reactor);
}

#[test]
fn half_closed_client_gets_every_byte_then_eof_std() {
    half_close(Engine::Std);
}
