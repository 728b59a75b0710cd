//! Length-prefixed frames: a 4-byte big-endian payload length, then the payload.
//!
//! The classic answer to TCP's "sticky" and split packets: a reader knows where each
//! message ends however the stream was cut. [`decode`] and [`encode`] are the reusable
//! codec (an embedder can frame its own messages in a data callback); [`Frame`] is the
//! `--proto frame` server, which echoes each whole frame back.

use std::fmt;

use super::{Pending, Progress, ProtoError, Protocol};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// Frame limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// Largest payload accepted, in bytes (default 16 MiB). A header announcing more is
    /// an error and the connection is closed.
    pub max_frame: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig { max_frame: 16 << 20 }
    }
}

/// A frame whose header announces more than the limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The announced payload length.
    pub len: u64,
    /// The limit in force.
    pub max: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame of {} bytes exceeds the limit of {} bytes", self.len, self.max)
    }
}

impl std::error::Error for FrameTooLarge {}

/// Decodes the first frame of `input`.
///
/// Returns `Ok(Some((payload, frame_len)))` when a whole frame is present (`frame_len`
/// = header + payload bytes to consume), `Ok(None)` when more bytes are needed, or an
/// error as soon as the header announces more than `max` payload bytes (before the
/// payload is buffered, so memory stays bounded by the limit).
pub fn decode(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameTooLarge> {
    let Some(header) = input.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > max {
        return Err(FrameTooLarge { len: len as u64, max });
    }
    let total = HEADER_LEN + len;
    Ok(input.get(HEADER_LEN..total).map(|payload| (payload, total)))
}

/// Appends a frame carrying `payload` to `out`. Fails when the payload does not fit a
/// 32-bit length.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    let len = u32::try_from(payload.len())
        .map_err(|_| FrameTooLarge { len: payload.len() as u64, max: u32::MAX as usize })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The frame echo protocol (`--proto frame`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Frame {
    config: FrameConfig,
}

impl Frame {
    /// A frame echo server with these limits.
    pub fn new(config: FrameConfig) -> Self {
        Frame { config }
    }
}

/// One frame connection: stateless between frames, zero bytes (the limit is the
/// protocol's, a partial frame stays in the engine's input buffer).
#[derive(Debug, Default)]
pub struct FrameSession;

impl Protocol for Frame {
    type Session = FrameSession;
    fn name(&self) -> &'static str {
        "frame"
    }
    fn new_session(&self) -> FrameSession {
        FrameSession
    }

    fn on_input(
        &self,
        _: &mut FrameSession,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtoError> {
        let (mut at, mut frames) = (0, 0);
        loop {
            match decode(&input[at..], self.config.max_frame) {
                Ok(Some((_, len))) => {
                    out.extend_from_slice(&input[at..at + len]);
                    at += len;
                    frames += 1;
                }
                Ok(None) => {
                    let pending = if at < input.len() { Pending::Head } else { Pending::None };
                    return Ok(Progress::answered(at, frames, false).with_pending(pending));
                }
                Err(_) => {
                    return Err(ProtoError::new("frame_too_large", Vec::new()).after(frames));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in payloads {
            encode(p, &mut v).unwrap();
        }
        v
    }

    #[test]
    fn codec_round_trip() {
        let v = framed(&[b"hello", b"", b"world!"]);
        assert_eq!(&v[..9], b"\0\0\0\x05hello");
        let (p, n) = decode(&v, 100).unwrap().unwrap();
        assert_eq!((p, n), (&b"hello"[..], 9));
        let (p, n2) = decode(&v[n..], 100).unwrap().unwrap();
        assert_eq!((p, n2), (&b""[..], 4));
        assert_eq!(decode(&v[..3], 100), Ok(None));
        assert_eq!(decode(&v[..8], 100), Ok(None));
    }

    #[test]
    fn oversized_header_fails_before_payload_arrives() {
        let header = 1000u32.to_be_bytes();
        assert_eq!(decode(&header, 999), Err(FrameTooLarge { len: 1000, max: 999 }));
        let mut s = Frame::new(FrameConfig { max_frame: 999 }).open();
        let mut out = Vec::new();
        let e =
            s.on_input(&framed(&[b"ok"]).into_iter().chain(header).collect::<Vec<_>>(), &mut out);
        let e = e.unwrap_err();
        assert_eq!(e.kind, "frame_too_large");
        assert_eq!(e.requests, 1, "the frame echoed before the error is counted");
        assert_eq!(out, framed(&[b"ok"]), "frames before the bad one are still echoed");
    }

    #[test]
    fn error_counts_the_frames_answered_before_it() {
        let mut s = Frame::new(FrameConfig { max_frame: 10 }).open();
        let mut input = framed(&[b"a", b"bb", b"ccc"]);
        input.extend_from_slice(&11u32.to_be_bytes());
        let mut out = Vec::new();
        let e = s.on_input(&input, &mut out).unwrap_err();
        assert_eq!((e.kind, e.requests), ("frame_too_large", 3));
        let e = Frame::default().open().on_input(&11u32.to_be_bytes(), &mut out);
        assert!(e.is_ok(), "within the default limit: just incomplete");
    }

    /// Reference model: walks `input` frame by frame. Returns the bytes echoed, the
    /// frames answered, and whether a header over `max` ended the stream.
    fn model(input: &[u8], max: usize) -> (Vec<u8>, usize, bool) {
        let (mut at, mut frames) = (0, 0);
        while input.len() - at >= HEADER_LEN {
            let len = u32::from_be_bytes(input[at..at + 4].try_into().unwrap()) as usize;
            if len > max {
                return (input[..at].to_vec(), frames, true);
            }
            if input.len() - at - HEADER_LEN < len {
                break;
            }
            at += HEADER_LEN + len;
            frames += 1;
        }
        (input[..at].to_vec(), frames, false)
    }

    /// A valid stream of frames, then a few mutations: overwritten bytes (often in a
    /// header, turning it into a short, long or oversized length), a truncation, an
    /// inserted run.
    fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            proptest::option::of(any::<prop::sample::Index>()),
            proptest::option::of((
                any::<prop::sample::Index>(),
                proptest::collection::vec(any::<u8>(), 1..8),
            )),
        )
            .prop_map(|(payloads, flips, cut, insert)| {
                let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                let mut v = framed(&refs);
                if v.is_empty() {
                    return v;
                }
                for (i, b) in flips {
                    let i = i.index(v.len());
                    v[i] = b;
                }
                if let Some((i, bytes)) = insert {
                    let i = i.index(v.len());
                    v.splice(i..i, bytes);
                }
                if let Some(i) = cut {
                    let i = i.index(v.len());
                    v.truncate(i);
                }
                v
            })
    }

    #[test]
    fn session_echoes_whole_frames_only() {
        let mut s = Frame::default().open();
        let v = framed(&[b"abc", b"defg"]);
        let mut out = Vec::new();
        let p = s.on_input(&v[..10], &mut out).unwrap();
        assert_eq!(p.consumed, 7);
        assert_eq!(out, framed(&[b"abc"]));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_echo(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let stream = framed(&refs);
            let mut s = Frame::default().open();
            let (mut input, mut out, mut at) = (Vec::new(), Vec::new(), 0);
            for cut in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + cut).min(stream.len());
                input.extend_from_slice(&stream[at..end]);
                at = end;
                let p = s.on_input(&input, &mut out).unwrap();
                input.drain(..p.consumed);
            }
            prop_assert_eq!(out, stream);
            prop_assert!(input.is_empty());
        }

        #[test]
        fn garbage_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut s = Frame::new(FrameConfig { max_frame: 512 }).open();
            let mut out = Vec::new();
            match s.on_input(&bytes, &mut out) {
                Ok(p) => prop_assert!(bytes.len() - p.consumed < HEADER_LEN + 512),
                Err(e) => prop_assert_eq!(e.kind, "frame_too_large"),
            }
        }

        /// Valid streams, mutated: the session agrees with the model byte for byte,
        /// whole or split at random points, and counts exactly the frames it echoed.
        #[test]
        fn mutated_streams_match_the_model(
            stream in mutated_stream(),
            cuts in proptest::collection::vec(1usize..200, 1..20),
        ) {
            const MAX: usize = 512;
            let (want, want_frames, want_err) = model(&stream, MAX);
            // Whole.
            let mut s = Frame::new(FrameConfig { max_frame: MAX }).open();
            let mut out = Vec::new();
            match s.on_input(&stream, &mut out) {
                Ok(p) => {
                    prop_assert!(!want_err);
                    prop_assert_eq!(p.consumed, want.len());
                    prop_assert_eq!(p.requests, want_frames);
                    prop_assert!(stream.len() - p.consumed < HEADER_LEN + MAX);
                }
                Err(e) => {
                    prop_assert!(want_err);
                    prop_assert_eq!(e.requests, want_frames);
                }
            }
            prop_assert_eq!(&out, &want);
            // In pieces, as an engine would feed it.
            let mut s = Frame::new(FrameConfig { max_frame: MAX }).open();
            let (mut input, mut out, mut at, mut frames, mut failed) = (Vec::new(), Vec::new(), 0, 0, false);
            for cut in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + cut).min(stream.len());
                input.extend_from_slice(&stream[at..end]);
                at = end;
                match s.on_input(&input, &mut out) {
                    Ok(p) => {
                        frames += p.requests;
                        input.drain(..p.consumed);
                    }
                    Err(e) => {
                        frames += e.requests;
                        failed = true;
                        break;
                    }
                }
            }
            prop_assert_eq!(failed, want_err);
            prop_assert_eq!(frames, want_frames);
            prop_assert_eq!(out, want);
        }
    }
}
