//! `ConnHandle` from other threads: many writers to many connections deliver every
//! message, in order per writer; writing to a closed connection is a clear error.

mod common;

use std::io::{BufRead, BufReader};
use std::thread;

use common::*;
use crossbeam_channel::{Sender, unbounded};
use evloop::reactor::{Action, Conn, ConnHandle, EventHandler, HandleError, Server};

struct Publish(Sender<ConnHandle>);

impl EventHandler for Publish {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        self.0.send(conn.handle()).expect("test alive");
        ((), Action::None)
    }
    fn data(&mut self, _: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        (input.len(), Action::None)
    }
}

const CONNS: usize = 8;
const WRITERS: usize = 4;
const MESSAGES: usize = 2000;

#[test]
fn many_writers_many_connections_nothing_lost_in_order() {
    let (tx, rx) = unbounded();
    let server = Server::bind(local_config(2)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Publish(tx.clone())).unwrap();

    let clients: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    let handles: Vec<ConnHandle> = (0..CONNS).map(|_| rx.recv_timeout(LIMIT).unwrap()).collect();
    assert!(handles.iter().any(|h| h.loop_id() == 0) && handles.iter().any(|h| h.loop_id() == 1));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let handles = handles.clone();
            thread::spawn(move || {
                for seq in 0..MESSAGES {
                    for h in &handles {
                        h.write(format!("{w} {seq}\n")).expect("connection open");
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            thread::spawn(move || {
                let mut next = [0usize; WRITERS];
                let mut lines = BufReader::new(c).lines();
                for _ in 0..WRITERS * MESSAGES {
                    let line = lines.next().expect("more lines").expect("read");
                    let (w, seq) = line.split_once(' ').expect("well-formed line");
                    let (w, seq): (usize, usize) = (w.parse().unwrap(), seq.parse().unwrap());
                    assert_eq!(seq, next[w], "writer {w}: out of order or lost");
                    next[w] += 1;
                }
                next
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), [MESSAGES; WRITERS]);
    }
    running.shutdown().unwrap();
}

#[test]
fn writing_to_a_closed_connection_is_an_error() {
    let (tx, rx) = unbounded();
    let server = Server::bind(local_config(1)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Publish(tx.clone())).unwrap();
    let h = running.handle();
    let client = connect(addr);
    let handle = rx.recv_timeout(LIMIT).unwrap();
    assert!(handle.is_alive());
    handle.write(&b"hi"[..]).unwrap();
    drop(client);
    wait_until("connection closed", || total(&h).closed == 1);
    assert!(!handle.is_alive());
    assert_eq!(handle.write(&b"late"[..]), Err(HandleError::Closed));
    assert_eq!(handle.wake(), Err(HandleError::Closed));
    running.shutdown().unwrap();
    assert_eq!(handle.write(&b"after"[..]), Err(HandleError::Closed));
}

/// Publishes each connection's handle, and signals `writable` calls.
struct Bounded {
    handles: Sender<ConnHandle>,
    writable: Sender<()>,
}

impl EventHandler for Bounded {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        self.handles.send(conn.handle()).expect("test alive");
        ((), Action::None)
    }
    fn data(&mut self, _: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        (input.len(), Action::None)
    }
    fn writable(&mut self, _: &mut Conn<'_>, _: &mut ()) -> Action {
        let _ = self.writable.send(());
        Action::None
    }
}

/// A producer thread writing through `try_write` to a client that does not read: the
/// queued bytes stay below the high watermark plus one message, the producer waits for
/// `writable` (asked with `notify_writable`), and once the client reads, everything
/// arrives byte-exact.
#[test]
fn try_write_is_bounded_and_writable_says_when_to_go_on() {
    const TOTAL: usize = 32 * 1024 * 1024;
    const MSG: usize = 16 * 1024;
    let high = 256 * 1024;
    let (htx, hrx) = unbounded();
    let (wtx, wrx) = unbounded::<()>();
    let config = local_config(1).watermarks(64 * 1024, high);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running =
        server.start(move |_| Bounded { handles: htx.clone(), writable: wtx.clone() }).unwrap();
    let h = running.handle();
    let mut client = connect_small_rcvbuf(addr);
    let handle = hrx.recv_timeout(LIMIT).unwrap();
    let data = pattern(TOTAL, 11);
    let producer = {
        let data = data.clone();
        let handle = handle.clone();
        thread::spawn(move || {
            let (mut at, mut max_queued, mut blocked) = (0, 0, 0);
            while at < TOTAL {
                match handle.try_write(&data[at..at + MSG]) {
                    Ok(()) => {
                        at += MSG;
                        max_queued = max_queued.max(handle.queued());
                    }
                    Err(HandleError::WouldBlock) => {
                        blocked += 1;
                        handle.notify_writable().unwrap();
                        wrx.recv_timeout(LIMIT).expect("writable after the client reads");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (max_queued, blocked)
        })
    };
    // The client does not read for a while: the producer must be held back.
    thread::sleep(std::time::Duration::from_millis(500));
    let queued = handle.queued();
    assert!(queued <= high + 2 * MSG, "queued {queued} while the client is not reading");
    let s = total(&h);
    assert!(s.peak_pending_output <= (high + 2 * MSG) as u64, "{s:?}");
    assert!(s.bytes_written < TOTAL as u64 / 2, "the producer was not held back: {s:?}");
    let got = read_n(&mut client, TOTAL);
    assert!(got == data, "bytes differ");
    let (max_queued, blocked) = producer.join().unwrap();
    assert!(blocked > 0);
    assert!(max_queued <= high + 2 * MSG, "max queued {max_queued}");
    running.shutdown().unwrap();
}
