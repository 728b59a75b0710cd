//! Line parsers for `Transfer-Encoding: chunked` (RFC 9112 §7.1). The incremental decoder
//! that drives them lives in the session; these only look at the front of a slice and never
//! consume a partial line, so every line waits whole in the engine's input buffer, which is
//! why each line has a bound.

use super::Fail;

/// The longest chunk-size line accepted (size, extensions and CRLF). Longer → `400`.
pub(super) const MAX_CHUNK_LINE: usize = 1024;

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Parses the chunk-size line at the front of `buf`: `1*HEXDIG [ BWS ";" ext ] CRLF`.
/// Extensions are ignored (they may hold any visible bytes, SP and HTAB).
///
/// `Ok(None)`: the line is not complete yet. `Ok(Some((line_len, size)))`: the line,
/// CRLF included, is `line_len` bytes. `Err(Fail::BadRequest)`: no hex digit, hex
/// overflow of `u64`, a bare LF, bad bytes, or no line end within [`MAX_CHUNK_LINE`].
pub(super) fn size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Fail> {
    if let Some(&first) = buf.first()
        && hex(first).is_none()
    {
        return Err(Fail::BadRequest);
    }
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_CHUNK_LINE { Err(Fail::BadRequest) } else { Ok(None) };
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(Fail::BadRequest);
    };
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(d) = line.get(i).copied().and_then(hex) {
        size = size.checked_mul(16).and_then(|s| s.checked_add(d)).ok_or(Fail::BadRequest)?;
        i += 1;
    }
    let mut rest = &line[i..];
    while let [b' ' | b'\t', tail @ ..] = rest {
        rest = tail;
    }
    match rest {
        [] => {}
        [b';', ext @ ..] if ext.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) => {}
        _ => return Err(Fail::BadRequest),
    }
    Ok(Some((lf + 1, size)))
}

/// Parses one trailer line at the front of `buf` (after the last chunk), allowing at most
/// `budget` bytes for it. Trailer fields are checked loosely (`name: value`, no folding)
/// and otherwise ignored.
///
/// `Ok(None)`: incomplete. `Ok(Some((line_len, end)))`: `end` is true for the empty line
/// that ends the message. Errors: `HeadTooLarge` past `budget`, `BadRequest` when malformed.
pub(super) fn trailer_line(buf: &[u8], budget: usize) -> Result<Option<(usize, bool)>, Fail> {
    let window = &buf[..buf.len().min(budget)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= budget { Err(Fail::HeadTooLarge) } else { Ok(None) };
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(Fail::BadRequest);
    };
    if line.is_empty() {
        return Ok(Some((lf + 1, true)));
    }
    let ok = !matches!(line[0], b' ' | b'\t' | b':')
        && line.contains(&b':')
        && line.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
    if ok { Ok(Some((lf + 1, false))) } else { Err(Fail::BadRequest) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines() {
        assert_eq!(size_line(b""), Ok(None));
        assert_eq!(size_line(b"1f"), Ok(None));
        assert_eq!(size_line(b"1f\r"), Ok(None));
        assert_eq!(size_line(b"1f\r\nxx"), Ok(Some((4, 31))));
        assert_eq!(size_line(b"A\r\n"), Ok(Some((3, 10))));
        assert_eq!(size_line(b"0\r\n"), Ok(Some((3, 0))));
        assert_eq!(size_line(b"5;name=val;x\r\n"), Ok(Some((14, 5))));
        assert_eq!(size_line(b"5 ; a=\"b c\"\r\n"), Ok(Some((13, 5))));
        assert_eq!(size_line(b"ffffffffffffffff\r\n"), Ok(Some((18, u64::MAX))));
        assert_eq!(size_line(b"10000000000000000\r\n"), Err(Fail::BadRequest));
        assert_eq!(size_line(b"zz\r\n"), Err(Fail::BadRequest));
        assert_eq!(size_line(b" 5\r\n"), Err(Fail::BadRequest));
        assert_eq!(size_line(b"5\n"), Err(Fail::BadRequest));
        assert_eq!(size_line(b"5x\r\n"), Err(Fail::BadRequest));
        assert_eq!(size_line(b"5;\x01\r\n"), Err(Fail::BadRequest));
        let mut long = b"5;".to_vec();
        long.resize(MAX_CHUNK_LINE, b'a');
        assert_eq!(size_line(&long[..MAX_CHUNK_LINE - 1]), Ok(None));
        assert_eq!(size_line(&long), Err(Fail::BadRequest));
    }

    #[test]
    fn trailer_lines() {
        assert_eq!(trailer_line(b"\r\n", 100), Ok(Some((2, true))));
        assert_eq!(trailer_line(b"\r", 100), Ok(None));
        assert_eq!(trailer_line(b"X-A: b\r\n\r\n", 100), Ok(Some((8, false))));
        assert_eq!(trailer_line(b"X-A: b", 100), Ok(None));
        assert_eq!(trailer_line(b"X-A: b", 6), Err(Fail::HeadTooLarge));
        assert_eq!(trailer_line(b"nocolon\r\n", 100), Err(Fail::BadRequest));
        assert_eq!(trailer_line(b" fold: x\r\n", 100), Err(Fail::BadRequest));
        assert_eq!(trailer_line(b"a: b\n", 100), Err(Fail::BadRequest));
    }
}
