//! A may_minihttp peer for scripts/bench.sh: `may-peer 127.0.0.1:PORT` answers every
//! HTTP/1.1 request with `200 OK` and `Hello, World!` (keep-alive, pipelining), with one
//! may worker thread.

use std::io;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain");
        rsp.body("Hello, World!");
        Ok(())
    }
}

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: may-peer 127.0.0.1:PORT");
        std::process::exit(2);
    };
    may::config().set_workers(1);
    let server = match HttpServer(Hello).start(addr.as_str()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("may-peer: {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = server.join();
}
