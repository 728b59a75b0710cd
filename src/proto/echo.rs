//! Echo: every byte received is sent back unchanged.

use super::{Progress, ProtoError, Protocol};

/// The echo protocol (`--proto echo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

/// An echo connection: stateless, zero bytes (`size_of::<EchoSession>() == 0`).
#[derive(Debug, Default)]
pub struct EchoSession;

impl Protocol for Echo {
    type Session = EchoSession;
    fn name(&self) -> &'static str {
        "echo"
    }
    fn new_session(&self) -> EchoSession {
        EchoSession
    }
    #[inline]
    fn on_input(
        &self,
        _: &mut EchoSession,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtoError> {
        out.extend_from_slice(input);
        Ok(Progress::consumed(input.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_consumes_everything() {
        let mut s = Echo.open();
        let mut out = b"earlier".to_vec();
        let p = s.on_input(b"hello", &mut out).unwrap();
        assert_eq!(p, Progress::consumed(5));
        assert_eq!(out, b"earlierhello");
    }
}
