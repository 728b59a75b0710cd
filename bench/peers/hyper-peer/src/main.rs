//! A hyper peer for scripts/bench.sh: `hyper-peer 127.0.0.1:PORT` answers every HTTP/1.1
//! request with `200 OK` and `Hello, World!` (keep-alive, pipelined replies flushed
//! together), on a current_thread tokio runtime: one thread.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    let h = rsp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("hyper-peer"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(rsp)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("hyper-peer: {what}: {e}");
    std::process::exit(1);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(addr) = std::env::args().nth(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: hyper-peer 127.0.0.1:PORT");
        std::process::exit(2);
    };
    let sock = TcpSocket::new_v4().unwrap_or_else(|e| fail("socket", e));
    sock.set_reuseaddr(true).unwrap_or_else(|e| fail("SO_REUSEADDR", e));
    sock.bind(addr).unwrap_or_else(|e| fail("bind", e));
    let listener = sock.listen(4096).unwrap_or_else(|e| fail("listen", e));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: say so, keep serving the others.
                eprintln!("hyper-peer: accept: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
