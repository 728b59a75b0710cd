//! The single acceptor (reuseport off): one thread waits on the listeners and hands each
//! accepted connection to one loop chosen by the balance policy.
//!
//! The listeners are registered in this thread's poller only, never in a loop's, so no
//! loop is woken for a connection it does not get.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, error, warn};
use mio::{Events, Interest, Poll, Token};

use super::config::Balance;
use super::event_loop::WAKER;
use super::handle::{Command, LoopRemote, Shared};
use super::socket::Listener;
use super::stats::{LoopStats, bump};
use crate::net::ACCEPT_BACKOFF;
use crate::net::addr::Peer;
use crate::net::is_resource_exhaustion;

pub(crate) struct Acceptor {
    pub(crate) poll: Poll,
    /// (listen address index, listener).
    pub(crate) listeners: Vec<(usize, Listener)>,
    pub(crate) balance: Balance,
    pub(crate) stats: Arc<LoopStats>,
}

impl Acceptor {
    /// Registers the listeners (token = position) in the acceptor's poller.
    pub(crate) fn register(&mut self) -> io::Result<()> {
        for (i, (_, l)) in self.listeners.iter_mut().enumerate() {
            self.poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Accepts until shutdown.
    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        let loops = &shared.loops;
        let waker = match &shared.acceptor {
            Some((w, _)) => w.clone(),
            None => return,
        };
        let mut picker = Picker { balance: self.balance, next: 0, handed: vec![0; loops.len()] };
        let mut events = Events::with_capacity(64);
        let mut retry_at: Option<Instant> = None;
        // Listener positions with work, reused across iterations (no allocation per wake).
        let mut ready: Vec<usize> = Vec::with_capacity(self.listeners.len());
        while !shared.shutdown.load(Ordering::Acquire) && !shared.draining.load(Ordering::Acquire) {
            let timeout = retry_at.map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("acceptor: poll failed: {e}; shutting the server down");
                super::handle::ServerHandle { shared: shared.clone() }.shutdown();
                return;
            }
            ready.clear();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => waker.reset(),
                    Token(i) => ready.push(i),
                }
            }
            if retry_at.is_some_and(|t| t <= Instant::now()) {
                retry_at = None;
                ready.clear();
                ready.extend(0..self.listeners.len());
            }
            for &i in &ready {
                if self.accept_all(i, &shared, &mut picker) {
                    retry_at = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Accepts until WouldBlock. Returns true when accepting must pause (out of
    /// descriptors or memory).
    fn accept_all(&mut self, i: usize, shared: &Shared, picker: &mut Picker) -> bool {
        let loops = &shared.loops;
        let Some((index, listener)) = self.listeners.get(i) else { return false };
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if !shared.admit() {
                        bump(&self.stats.rejected, 1);
                        continue; // dropping the stream closes it
                    }
                    let target = picker.pick(loops, &peer);
                    let cmd = Command::Register { stream, peer, listener: *index, admitted: true };
                    if loops[target].send(cmd).is_err() {
                        debug!("acceptor: loop {target} has stopped; dropping {peer}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    bump(&self.stats.accept_would_block, 1);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    bump(&self.stats.accept_errors, 1);
                    if is_resource_exhaustion(&e) {
                        warn!("acceptor: accept: {e}; pausing accepts");
                        return true;
                    }
                    debug!("acceptor: accept: {e}");
                }
            }
        }
    }
}

/// The balance policy's state.
struct Picker {
    balance: Balance,
    next: usize,
    /// Connections handed to each loop so far (the loop's `closed` counter is subtracted
    /// to get its open count without waiting for it to process the hand-over).
    handed: Vec<u64>,
}

impl Picker {
    fn pick(&mut self, loops: &[LoopRemote], peer: &Peer) -> usize {
        let n = loops.len();
        let i = match self.balance {
            Balance::RoundRobin => {
                let i = self.next % n;
                self.next = self.next.wrapping_add(1);
                i
            }
            Balance::LeastConnections => (0..n)
                .min_by_key(|&i| {
                    let closed = loops[i].stats.closed.load(Ordering::Relaxed);
                    self.handed[i].saturating_sub(closed)
                })
                .unwrap_or(0),
            Balance::SourceHash => {
                let mut h = DefaultHasher::new();
                if let Some(a) = peer.socket_addr() {
                    a.ip().hash(&mut h);
                }
                (h.finish() % n as u64) as usize
            }
        };
        self.handed[i] += 1;
        i
    }
}
