//! A monoio peer for scripts/bench.sh: `monoio-peer echo|http|redis 127.0.0.1:PORT`
//! serves one protocol on one thread (io_uring where the kernel allows it, else monoio's
//! epoll driver); `monoio-peer --driver` prints which driver it would use.
//!
//! Each connection is one task that reads into its own buffer, answers the whole
//! requests it holds (see `proto`), and writes the replies back before reading again.

mod proto;

use std::cell::RefCell;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// Bytes a connection reads at a time (its buffer grows for longer requests).
const READ: usize = 4096;

#[derive(Clone, Copy)]
enum Proto {
    Echo,
    Http,
    Redis,
}

async fn serve(mut s: TcpStream, proto: Proto, store: Rc<RefCell<proto::Store>>) {
    let mut input: Vec<u8> = Vec::with_capacity(READ);
    let mut out: Vec<u8> = Vec::with_capacity(READ);
    loop {
        if input.capacity() - input.len() < READ / 4 {
            input.reserve(READ);
        }
        let len = input.len();
        let cap = input.capacity();
        let (res, slice) = s.read(input.slice_mut(len..cap)).await;
        input = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let used = match proto {
            Proto::Echo => {
                // Echo: send the buffer itself back, then reuse it.
                let (res, buf) = s.write_all(input).await;
                input = buf;
                input.clear();
                if res.is_err() {
                    return;
                }
                continue;
            }
            Proto::Http => proto::http(&input, "monoio-peer", &mut out),
            Proto::Redis => proto::resp(&input, &mut store.borrow_mut(), &mut out),
        };
        let Ok(used) = used else { return };
        input.drain(..used);
        if !out.is_empty() {
            let (res, buf) = s.write_all(out).await;
            out = buf;
            out.clear();
            if res.is_err() {
                return;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--driver") {
        println!("{}", if monoio::utils::detect_uring() { "io_uring" } else { "epoll" });
        return;
    }
    let (proto, addr) = match args.as_slice() {
        [p, a] => (
            match p.as_str() {
                "echo" => Proto::Echo,
                "http" => Proto::Http,
                "redis" => Proto::Redis,
                _ => usage(),
            },
            a.clone(),
        ),
        _ => usage(),
    };
    let mut rt = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("monoio-peer: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let opts = ListenerOpts::new().backlog(4096).reuse_addr(true);
        let listener = match TcpListener::bind_with_config(addr.as_str(), &opts) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("monoio-peer: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        let store = Rc::new(RefCell::new(proto::Store::new()));
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    monoio::spawn(serve(s, proto, store.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: say so, keep serving the others.
                    eprintln!("monoio-peer: accept: {e}");
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    });
}

fn usage() -> ! {
    eprintln!("usage: monoio-peer echo|http|redis 127.0.0.1:PORT | monoio-peer --driver");
    std::process::exit(2);
}
