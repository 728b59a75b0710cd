//! A minimal engine for protocol tests (test builds only): keeps the unconsumed input,
//! appends chunks, calls the session once per chunk, drains what it consumed, and on a
//! protocol error appends the error's reply and stops, as an engine closing the
//! connection would.

use super::{Bound, ProtoError, Protocol};

pub(crate) struct Sim<P: Protocol> {
    pub(crate) session: Bound<P>,
    /// Input not consumed yet.
    pub(crate) buf: Vec<u8>,
    /// Everything the session wrote, error replies included.
    pub(crate) out: Vec<u8>,
    /// The session asked to close, or failed.
    pub(crate) closed: bool,
    pub(crate) error: Option<ProtoError>,
    /// The most input the session ever left unconsumed.
    pub(crate) max_unconsumed: usize,
}

impl<P: Protocol> Sim<P> {
    pub(crate) fn new(session: Bound<P>) -> Self {
        Sim {
            session,
            buf: Vec::new(),
            out: Vec::new(),
            closed: false,
            error: None,
            max_unconsumed: 0,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.closed {
            return;
        }
        self.buf.extend_from_slice(chunk);
        match self.session.on_input(&self.buf, &mut self.out) {
            Ok(p) => {
                assert!(p.consumed <= self.buf.len(), "consumed more than the input");
                self.buf.drain(..p.consumed);
                self.max_unconsumed = self.max_unconsumed.max(self.buf.len());
                self.closed = p.close;
            }
            Err(e) => {
                self.out.extend_from_slice(&e.reply);
                self.error = Some(e);
                self.closed = true;
            }
        }
    }
}
