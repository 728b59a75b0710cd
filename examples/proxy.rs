//! A minimal TCP proxy on the public reactor API: every client is paused, a connection
//! to the backend is opened from the client's `opened`, and the backend connection
//! links itself to its client; from then on the reactor moves the bytes both ways
//! (with backpressure and half-close), and `forwarded` counts them per direction.
//!
//! `cargo run --release --example proxy -- 127.0.0.1:7000 127.0.0.1:6379 [splice]`,
//! then point a client at 127.0.0.1:7000. Each loop prints its byte counts every 10 s
//! of activity.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use evloop::reactor::{Action, Config, Conn, ConnectAddr, EventHandler, LinkOptions, Server};

/// One loop's proxy: where to connect, how to link, what went through.
struct Proxy {
    backend: ConnectAddr,
    link: LinkOptions,
    /// Bytes client → backend and backend → client, connections that failed to connect.
    up: u64,
    down: u64,
    failed: u64,
}

/// Which side a connection is: bytes read from a client go up, from a backend down.
enum Side {
    Client,
    Backend,
}

impl EventHandler for Proxy {
    type State = Side;

    fn opened(&mut self, conn: &mut Conn<'_>) -> (Side, Action) {
        match conn.requester() {
            // A client: hold its bytes in the kernel until the backend answers.
            None => {
                conn.pause_reading();
                let timeout = Some(Duration::from_secs(2));
                match conn.connect(&self.backend, timeout, 0) {
                    Ok(_) => (Side::Client, Action::None),
                    Err(_) => (Side::Client, Action::Close), // no socket to be had
                }
            }
            // Our backend connection: tie it to its client.
            Some(client) => match conn.link_with(client, self.link) {
                Ok(()) => (Side::Backend, Action::None),
                Err(_) => (Side::Backend, Action::Close),
            },
        }
    }

    fn data(&mut self, _: &mut Conn<'_>, _: &mut Side, input: &[u8]) -> (usize, Action) {
        // Only linked connections get bytes here, and theirs never reach `data`.
        (input.len(), Action::None)
    }

    fn forwarded(&mut self, side: &mut Side, n: usize) {
        match side {
            Side::Client => self.up += n as u64,
            Side::Backend => self.down += n as u64,
        }
    }

    fn connect_failed(&mut self, _: &mut Conn<'_>, _: &mut Side, _: u64, e: io::Error) -> Action {
        eprintln!("backend {}: {e}", self.backend);
        self.failed += 1;
        Action::Close // a real proxy would try the next backend here
    }

    fn tick(&mut self) -> Option<Duration> {
        if self.up + self.down + self.failed > 0 {
            println!("up {} B, down {} B, failed connects {}", self.up, self.down, self.failed);
        }
        Some(Duration::from_secs(10))
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage =
        || io::Error::new(io::ErrorKind::InvalidInput, "usage: proxy LISTEN BACKEND [splice]");
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let backend: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let link = LinkOptions { splice: args.next().as_deref() == Some("splice") };
    let config = Config::new().listen(listen)?.loops(1);
    println!("proxy {listen} -> {backend} ({})", if link.splice { "splice" } else { "copy" });
    Server::bind(config)?.serve(move |_| Proxy {
        backend: ConnectAddr::Tcp(backend),
        link,
        up: 0,
        down: 0,
        failed: 0,
    })
}
