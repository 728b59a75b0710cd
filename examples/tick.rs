//! A tick timer: every connection gets the time since it opened, once a second, from the
//! loop's timer. `cargo run --example tick`, then connect to 127.0.0.1:7001.

use std::time::{Duration, Instant};

use evloop::reactor::{Action, Config, Conn, ConnHandle, EventHandler, Server};

#[derive(Default)]
struct Clock {
    /// Handles of this loop's connections, with their open time.
    conns: Vec<(ConnHandle, Instant)>,
}

impl EventHandler for Clock {
    type State = ();

    fn opened(&mut self, conn: &mut Conn<'_>) -> ((), Action) {
        conn.write(b"ticking every second; send anything to quit\n");
        self.conns.push((conn.handle(), Instant::now()));
        ((), Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, _: &mut (), input: &[u8]) -> (usize, Action) {
        conn.write(b"bye\n");
        (input.len(), Action::Close) // closes after "bye" is flushed
    }

    fn tick(&mut self) -> Option<Duration> {
        // Writing through the handle queues to our own loop; closed ones are dropped.
        self.conns.retain(|(h, opened)| {
            let line = format!("{:.0?} since you connected\n", opened.elapsed());
            h.write(line).is_ok()
        });
        Some(Duration::from_secs(1)) // next tick
    }
}

fn main() -> std::io::Result<()> {
    let config = Config::new().listen("127.0.0.1:7001")?.loops(1);
    Server::bind(config)?.serve(|_| Clock::default())
}
