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
