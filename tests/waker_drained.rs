//! evio bug 1: an eventfd written but never read makes the poller spin at 100% CPU.
//! Here 100,000 wakes arrive from another thread; afterwards the idle loop must block in
//! the poller, making only a handful of iterations in 500 ms (a spinning poller makes
//! thousands). The waker is level-triggered, so a missing drain would show.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use crossbeam_channel::{Sender, unbounded};
use evloop::reactor::{Action, Conn, ConnHandle, EventHandler, Server};

struct Waked {
    handles: Sender<ConnHandle>,
    woken: Arc<AtomicU64>,
}

impl EventHandler for Waked {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        self.handles.send(conn.handle()).expect("test alive");
        ((), Action::None)
    }
    fn data(&mut self, _: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        (input.len(), Action::None)
    }
    fn woken(&mut self, conn: &mut Conn<'_>, _: &mut ()) -> Action {
        if self.woken.fetch_add(1, Ordering::Relaxed) + 1 == WAKES {
            conn.write(b"done");
        }
        Action::None
    }
}

const WAKES: u64 = 100_000;

#[test]
fn waker_is_drained_and_idle_loop_blocks() {
    let (tx, rx) = unbounded();
    let woken = Arc::new(AtomicU64::new(0));
    let w = woken.clone();
    let server = Server::bind(local_config(1)).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Waked { handles: tx.clone(), woken: w.clone() }).unwrap();
    let h = running.handle();

    let mut client = connect(addr);
    let handle = rx.recv_timeout(LIMIT).expect("opened");
    let waker = std::thread::spawn(move || {
        for _ in 0..WAKES {
            handle.wake().expect("wake");
        }
    });
    waker.join().unwrap();
    assert_eq!(read_n(&mut client, 4), b"done");
    assert_eq!(woken.load(Ordering::Relaxed), WAKES, "every wake is delivered");

    let before = h.stats().loops[0];
    std::thread::sleep(Duration::from_millis(500));
    let after = h.stats().loops[0];
    let iterations = after.poll_iterations - before.poll_iterations;
    assert!(
        iterations <= 5,
        "idle loop made {iterations} poll iterations in 500 ms: the waker is not drained"
    );
    assert!(before.wakeups >= 1);
    running.shutdown().unwrap();
}
