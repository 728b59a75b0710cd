//! White-box tests of the reactor that need crate internals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};

use super::{Action, Config, Conn, ConnHandle, EventHandler, HandleError, Server};

/// Echoes, publishes each connection's handle, and writes "woken" when woken.
struct Published(Sender<ConnHandle>);

impl EventHandler for Published {
    type State = ();
    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        let _ = self.0.send(conn.handle());
        ((), Action::None)
    }
    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        conn.write(input);
        (input.len(), Action::None)
    }
    fn woken(&mut self, conn: &mut Conn<'_>, _: &mut ()) -> Action {
        conn.write(b"woken");
        Action::None
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A handle whose connection closed and whose slab slot was reused must not reach the
/// new connection: not through its own alive check, and not through the loop's
/// generation check when the alive check is bypassed (the race where the connection
/// closes after the check).
#[test]
fn stale_handle_never_reaches_the_connection_that_reused_its_slot() {
    let (tx, rx) = unbounded();
    let config = Config::new().listen("127.0.0.1:0").unwrap().loops(1);
    let server = Server::bind(config).unwrap();
    let addr = server.local_addrs()[0];
    let running = server.start(move |_| Published(tx.clone())).unwrap();
    let h = running.handle();

    let first = TcpStream::connect(addr).unwrap();
    let old = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    drop(first);
    wait_until(|| h.stats().total().closed == 1);
    assert!(!old.is_alive());

    let mut second = TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let new = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((old.key, old.loop_id()), (new.key, new.loop_id()), "slot was reused");
    assert_ne!(old.generation, new.generation);

    assert_eq!(old.write(&b"stale"[..]), Err(HandleError::Closed));
    assert_eq!(old.wake(), Err(HandleError::Closed));
    let forged = old.forged_alive();
    forged.write(&b"stale"[..]).unwrap();
    forged.wake().unwrap();
    wait_until(|| h.stats().total().dropped_commands == 2);

    // The new connection saw nothing of it: its first bytes are its own echo.
    new.write(&b"fresh:"[..]).unwrap();
    new.wake().unwrap();
    second.write_all(b"echo").unwrap();
    let mut got = [0u8; 15];
    second.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"fresh:wokenecho");
    running.shutdown().unwrap();
}
