//! The reactor's request deadline API, as an embedder uses it
//! (`Conn::set_request_deadline` and `EventHandler::timeout`): a deadline set in a
//! callback fires once, the handler's last words go out before the close, a cleared
//! deadline never fires, and the default `timeout` closes with `RequestTimeout`.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use evloop::reactor::{Action, CloseReason, Conn, EventHandler, Server};

/// Arms a deadline when a line begins, clears it when the line ends (`\n`), answers each
/// line with `ok`; on timeout says `late` (or, with `quiet`, uses the default).
struct Lines {
    quiet: bool,
    closed: mpsc::Sender<String>,
}

impl EventHandler for Lines {
    type State = ();

    fn opened(&mut self, _c: &mut Conn<'_>) -> ((), Action) {
        ((), Action::None)
    }

    fn data(&mut self, c: &mut Conn<'_>, _s: &mut (), input: &[u8]) -> (usize, Action) {
        match input.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                for _ in input[..=end].iter().filter(|&&b| b == b'\n') {
                    c.write(b"ok\n");
                }
                let partial = end + 1 < input.len();
                c.set_request_deadline(partial.then_some(Duration::from_millis(500)));
                (end + 1, Action::None)
            }
            None => {
                c.set_request_deadline(Some(Duration::from_millis(500)));
                (0, Action::None)
            }
        }
    }

    fn timeout(&mut self, c: &mut Conn<'_>, _s: &mut ()) -> Action {
        if !self.quiet {
            c.write(b"late\n");
        }
        Action::Close
    }

    fn closed(&mut self, _s: (), reason: CloseReason) {
        let _ = self.closed.send(format!("{reason:?}"));
    }
}

fn serve(quiet: bool) -> (evloop::reactor::Running, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::bind(local_config(1)).unwrap();
    let running = server.start(move |_| Lines { quiet, closed: tx.clone() }).unwrap();
    (running, rx)
}

#[test]
fn a_deadline_fires_once_with_the_handlers_last_words() {
    let (running, closed) = serve(false);
    let mut s = connect(running.local_addrs()[0]);
    send(&mut s, b"a complete line\nand a part");
    let started = Instant::now();
    let got = read_to_end(&mut s);
    let after = started.elapsed();
    assert_eq!(got, b"ok\nlate\n");
    assert!(after >= Duration::from_millis(350) && after < Duration::from_secs(5), "{after:?}");
    assert_eq!(closed.recv_timeout(LIMIT).unwrap(), "Closed");
    assert_eq!(running.handle().stats().total().request_timeouts, 1);
    running.handle().shutdown();
    running.wait().unwrap();
}

#[test]
fn a_cleared_deadline_never_fires_and_the_default_closes_with_request_timeout() {
    let (running, closed) = serve(true);
    let addr = running.local_addrs()[0];
    let mut s = connect(addr);
    send(&mut s, b"par");
    std::thread::sleep(Duration::from_millis(200));
    send(&mut s, b"t\n");
    assert_eq!(read_n(&mut s, 3), b"ok\n");
    // Cleared: well past the deadline, still served.
    std::thread::sleep(Duration::from_millis(1000));
    send(&mut s, b"x\n");
    assert_eq!(read_n(&mut s, 3), b"ok\n");
    // A part again, then nothing: the default closes without a word.
    send(&mut s, b"y");
    assert_eq!(read_to_end(&mut s), b"");
    assert_eq!(closed.recv_timeout(LIMIT).unwrap(), "RequestTimeout");
    running.handle().shutdown();
    running.wait().unwrap();
}
