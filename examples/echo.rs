//! An embedded echo server in about 30 lines: `cargo run --example echo`, then
//! `nc 127.0.0.1 7000` (or any TCP client) and type.

use evloop::reactor::{Action, Config, Conn, EventHandler, LoopInfo, Server};

struct Echo;

impl EventHandler for Echo {
    type State = u64; // bytes echoed on this connection

    fn serving(&mut self, info: &LoopInfo) {
        println!("loop {} of {} serving {:?}", info.id, info.loops, info.addrs);
    }

    fn opened(&mut self, conn: &mut Conn<'_>) -> (u64, Action) {
        println!("{} connected", conn.peer_addr());
        (0, Action::None)
    }

    fn data(&mut self, conn: &mut Conn<'_>, echoed: &mut u64, input: &[u8]) -> (usize, Action) {
        conn.write(input); // queued, written right after this returns; nothing is dropped
        *echoed += input.len() as u64;
        (input.len(), Action::None) // consumed everything
    }
}

fn main() -> std::io::Result<()> {
    let config = Config::new().listen("127.0.0.1:7000")?.loops(2).reuseport(true);
    Server::bind(config)?.serve(|_loop_id| Echo)
}
