//! Cross-thread wake (evio's `Wake` pattern): each request line is answered by a worker
//! thread, which puts the answer in the connection's outbox and wakes the connection; the
//! loop then writes it from `woken`. `cargo run --example wake`, connect to 127.0.0.1:7002
//! and type lines.

use std::sync::{Arc, Mutex};
use std::thread;

use crossbeam_channel::{Sender, unbounded};
use evloop::reactor::{Action, Config, Conn, ConnHandle, EventHandler, Server};

/// Answers prepared by workers, waiting for the loop to write them.
type Outbox = Arc<Mutex<Vec<u8>>>;

struct Job {
    handle: ConnHandle,
    outbox: Outbox,
    line: Vec<u8>,
}

struct Front {
    jobs: Sender<Job>,
}

impl EventHandler for Front {
    type State = Outbox;

    fn opened(&mut self, _: &mut Conn<'_>) -> (Outbox, Action) {
        (Outbox::default(), Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, outbox: &mut Outbox, input: &[u8]) -> (usize, Action) {
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line = input[consumed..consumed + end + 1].to_vec();
            let job = Job { handle: conn.handle(), outbox: outbox.clone(), line };
            if self.jobs.send(job).is_err() {
                return (input.len(), Action::Close);
            }
            consumed += end + 1;
        }
        (consumed, Action::None) // a partial line stays for the next read
    }

    fn woken(&mut self, conn: &mut Conn<'_>, outbox: &mut Outbox) -> Action {
        let answers = std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner()));
        conn.write(&answers);
        Action::None
    }
}

fn main() -> std::io::Result<()> {
    let (jobs, queue) = unbounded::<Job>();
    for _ in 0..4 {
        let queue = queue.clone();
        thread::spawn(move || {
            for job in queue {
                let answer = job.line.to_ascii_uppercase(); // the "slow" work
                job.outbox.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&answer);
                let _ = job.handle.wake(); // Err(Closed) if the client left: fine
            }
        });
    }
    let config = Config::new().listen("127.0.0.1:7002")?.loops(2);
    Server::bind(config)?.serve(move |_| Front { jobs: jobs.clone() })
}
