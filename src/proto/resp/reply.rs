//! RESP2 reply encoding: every function appends one complete reply to `out`.
//!
//! Nothing here allocates beyond growing `out`; integers are formatted by hand into a
//! stack buffer (no `format!`).

/// `+OK\r\n`
pub(super) const OK: &[u8] = b"+OK\r\n";
/// `+PONG\r\n`
pub(super) const PONG: &[u8] = b"+PONG\r\n";
/// The RESP2 null bulk string, `$-1\r\n`.
pub(super) const NIL: &[u8] = b"$-1\r\n";
/// The RESP2 null array, `*-1\r\n`.
pub(super) const NIL_ARRAY: &[u8] = b"*-1\r\n";
/// An empty array, `*0\r\n`.
pub(super) const EMPTY_ARRAY: &[u8] = b"*0\r\n";
/// `:0\r\n`
pub(super) const ZERO: &[u8] = b":0\r\n";
/// `:1\r\n`
pub(super) const ONE: &[u8] = b":1\r\n";

/// `-ERR syntax error`
pub(super) const SYNTAX_ERR: &[u8] = b"-ERR syntax error\r\n";
/// `-ERR value is not an integer or out of range`
pub(super) const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
/// `-ERR increment or decrement would overflow`
pub(super) const OVERFLOW: &[u8] = b"-ERR increment or decrement would overflow\r\n";

/// Appends a pre-encoded reply (one of the constants above).
#[inline]
pub(super) fn raw(out: &mut Vec<u8>, reply: &[u8]) {
    out.extend_from_slice(reply);
}

/// Appends `-{msg}\r\n`. `msg` must hold no CR or LF (callers that echo user bytes go
/// through [`error_sanitized`]).
#[inline]
pub(super) fn error(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend_from_slice(msg);
    out.extend_from_slice(b"\r\n");
}

/// Appends `-{msg}\r\n` with every CR and LF of `msg` replaced by a space, as Redis does
/// for errors that quote user input, so the reply stays one line.
pub(super) fn error_sanitized(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(msg.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// Appends `+{s}\r\n`. `s` must hold no CR or LF.
#[inline]
pub(super) fn simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `v` (with a leading `-` when negative).
#[inline]
pub(super) fn decimal(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut buf = [0u8; 20];
    out.extend_from_slice(crate::proto::digits(v.unsigned_abs(), &mut buf));
}

/// Appends `{prefix}{n}\r\n`, the shape of integer, bulk-length and array-length lines.
#[inline]
fn line(out: &mut Vec<u8>, prefix: u8, n: i64) {
    out.push(prefix);
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the integer reply `:{v}\r\n`.
#[inline]
pub(super) fn int(out: &mut Vec<u8>, v: i64) {
    match v {
        0 => raw(out, ZERO),
        1 => raw(out, ONE),
        _ => line(out, b':', v),
    }
}

/// Appends the bulk string reply `${len}\r\n{data}\r\n`.
#[inline]
pub(super) fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 16);
    line(out, b'$', data.len() as i64);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk reply for `Some(data)`, or the null bulk string for `None`.
#[inline]
pub(super) fn opt_bulk(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        Some(d) => bulk(out, d),
        None => raw(out, NIL),
    }
}

/// Appends the array header `*{n}\r\n`; the caller appends `n` replies after it.
#[inline]
pub(super) fn array(out: &mut Vec<u8>, n: usize) {
    line(out, b'*', n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = b"x".to_vec();
        f(&mut v);
        v.split_off(1)
    }

    #[test]
    fn integers() {
        assert_eq!(enc(|o| int(o, 0)), b":0\r\n");
        assert_eq!(enc(|o| int(o, 1)), b":1\r\n");
        assert_eq!(enc(|o| int(o, -1)), b":-1\r\n");
        assert_eq!(enc(|o| int(o, 1234567890)), b":1234567890\r\n");
        assert_eq!(enc(|o| int(o, i64::MAX)), b":9223372036854775807\r\n");
        assert_eq!(enc(|o| int(o, i64::MIN)), b":-9223372036854775808\r\n");
        for v in [-1000i64, -10, -9, 9, 10, 99, 100, 65535] {
            assert_eq!(enc(|o| int(o, v)), format!(":{v}\r\n").into_bytes());
        }
    }

    #[test]
    fn bulks_and_arrays() {
        assert_eq!(enc(|o| bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(enc(|o| bulk(o, b"hello")), b"$5\r\nhello\r\n");
        assert_eq!(enc(|o| opt_bulk(o, None)), b"$-1\r\n");
        assert_eq!(enc(|o| array(o, 3)), b"*3\r\n");
        assert_eq!(enc(|o| simple(o, b"string")), b"+string\r\n");
        assert_eq!(enc(|o| error(o, b"ERR x")), b"-ERR x\r\n");
        assert_eq!(enc(|o| error_sanitized(o, b"ERR a\r\nb")), b"-ERR a  b\r\n");
    }
}
