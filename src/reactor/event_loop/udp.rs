//! UDP sockets on a loop: each datagram is one `datagram` callback, and what the handler
//! writes goes back to its sender as one datagram.

use std::io;

use log::{debug, error};

use super::{EventLoop, guard};
use crate::reactor::handler::{Datagram, EventHandler};
use crate::reactor::stats::bump;

/// Datagrams served per readiness event before the loop turns to other work.
const DATAGRAM_BUDGET: usize = 256;

impl<H: EventHandler> EventLoop<H> {
    /// Serves the datagrams waiting on UDP socket `i`. A datagram larger than the read
    /// buffer is truncated (and counted); a reply the kernel will not take right now is
    /// dropped (and counted), as UDP allows. When the budget runs out the socket is
    /// served again after the others.
    pub(super) fn on_datagrams(&mut self, i: usize) {
        for _ in 0..DATAGRAM_BUDGET {
            let Some((index, sock)) = self.parts.udp.get(i) else { return };
            let index = *index;
            let (n, from) = match recv_datagram(sock, &mut self.rbuf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // e.g. ECONNREFUSED from an ICMP error for an earlier reply.
                    debug!("loop {}: udp recv: {e}", self.parts.id);
                    continue;
                }
            };
            bump(&self.stats.datagrams_in, 1);
            bump(&self.stats.bytes_read, n.min(self.rbuf.len()) as u64);
            let truncated = n > self.rbuf.len();
            if truncated {
                bump(&self.stats.datagrams_truncated, 1);
            }
            let data = &self.rbuf[..n.min(self.rbuf.len())];
            let mut dgram = Datagram { from, listener: index, truncated, reply: &mut self.wbuf };
            let handler = &mut self.handler;
            if let Err(msg) =
                guard(self.parts.config.catch_panics, || handler.datagram(&mut dgram, data))
            {
                bump(&self.stats.panics, 1);
                error!("loop {}: datagram handler panicked for {from}: {msg}", self.parts.id);
                self.wbuf.clear();
                continue;
            }
            if !self.wbuf.is_empty() {
                match sock.send_to(&self.wbuf, from) {
                    Ok(sent) => {
                        bump(&self.stats.datagrams_out, 1);
                        bump(&self.stats.bytes_written, sent as u64);
                    }
                    Err(e) => {
                        bump(&self.stats.datagrams_dropped, 1);
                        debug!("loop {}: udp reply to {from} dropped: {e}", self.parts.id);
                    }
                }
                self.wbuf.clear();
            }
        }
        // Budget spent: serve the others, then come back.
        self.more_datagrams.push(i);
    }
}

/// Receives one datagram into `buf`. Returns the datagram's full length (larger than
/// `buf` when it was truncated: `MSG_TRUNC`) and its sender.
fn recv_datagram(
    sock: &mio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the buffer is already
    // initialised; recvfrom only writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = socket2::SockRef::from(sock).recv_from_with_flags(uninit, libc::MSG_TRUNC)?;
    let from = from.as_socket().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
    })?;
    Ok((n, from))
}
