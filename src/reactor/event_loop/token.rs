//! Poll tokens: what each registration in a loop's (or the acceptor's) poller is.
//!
//! One typed scheme instead of arithmetic at every use. A token below
//! [`LISTENER_BASE`] is a connection's slab key, so the per-event decode of the common
//! case is one comparison; the waker is `usize::MAX`; listeners, connects in flight and
//! UDP sockets take three ranges above half of the token space (a slab never grows that
//! large).

use mio::Token;

/// First token of the listener range: `Listener(i)` is `LISTENER_BASE + i`.
const LISTENER_BASE: usize = usize::MAX / 2;
/// First token of the connect range: `Dial(i)` is `DIAL_BASE + i`.
const DIAL_BASE: usize = LISTENER_BASE + usize::MAX / 8;
/// First token of the UDP range: `Udp(i)` is `UDP_BASE + i`.
const UDP_BASE: usize = LISTENER_BASE + usize::MAX / 4;
/// The waker's token.
const WAKER: usize = usize::MAX;

/// What a poll event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// The loop's (or acceptor's) cross-thread waker.
    Waker,
    /// Listening socket number `i` of this poller.
    Listener(usize),
    /// UDP socket number `i` of this loop.
    Udp(usize),
    /// The connection in slab slot `key`.
    Conn(usize),
    /// The outbound connect in flight in slot `i` of the loop's dialer.
    Dial(usize),
}

impl Tok {
    /// The mio token that stands for `self`.
    #[inline]
    pub(crate) fn token(self) -> Token {
        Token(match self {
            Tok::Waker => WAKER,
            Tok::Listener(i) => LISTENER_BASE + i,
            Tok::Udp(i) => UDP_BASE + i,
            Tok::Dial(i) => DIAL_BASE + i,
            Tok::Conn(key) => key,
        })
    }

    /// What the token `t` stands for (the inverse of [`Tok::token`]).
    #[inline]
    pub(crate) fn of(t: Token) -> Tok {
        match t.0 {
            key if key < LISTENER_BASE => Tok::Conn(key),
            WAKER => Tok::Waker,
            t if t >= UDP_BASE => Tok::Udp(t - UDP_BASE),
            t if t >= DIAL_BASE => Tok::Dial(t - DIAL_BASE),
            t => Tok::Listener(t - LISTENER_BASE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for tok in [
            Tok::Waker,
            Tok::Conn(0),
            Tok::Conn(123_456),
            Tok::Listener(0),
            Tok::Listener(7),
            Tok::Udp(0),
            Tok::Udp(3),
            Tok::Dial(0),
            Tok::Dial(42),
        ] {
            assert_eq!(Tok::of(tok.token()), tok);
        }
    }
}
