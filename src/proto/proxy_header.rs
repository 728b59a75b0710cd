//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2), sans-IO.
//!
//! This module owns the wire format only: [`parse`] looks at the first bytes of a
//! connection and says "need more", "here is the header and its length" or "this is not a
//! valid header"; [`encode_v1`], [`encode_v2`] and [`encode_v2_local`] produce the bytes a
//! sender writes before any payload. No sockets, no timers: the engine that accepts
//! connections applies the header timeout and decides what to do with the addresses.
//!
//! Contract of [`parse`] (and [`parse_with_limit`]):
//!
//! - it never asks for more than the format allows: [`Parsed::NeedMore`] is returned only
//!   while the input is shorter than [`V1_MAX_LEN`] (for a v1 header) or than 16 plus the
//!   declared length (for v2), and a v2 header whose declared total exceeds the limit
//!   ([`V2_DEFAULT_MAX_LEN`] by default) is rejected as soon as its 16-byte fixed part is in;
//! - input that cannot start a header is rejected at the first byte that differs from both
//!   signatures (`PROXY ` and `\r\n\r\n\0\r\nQUIT\n`), so `GET / HTTP/1.1` fails at once;
//! - on success it reports how many bytes the header took ([`Parsed::Done::consumed`]);
//!   the bytes after it are payload and are not looked at;
//! - it never panics and allocates only the list of TLV positions.
//!
//! Deviations and choices: v1 ports must be plain decimal digits (at most 5, no sign);
//! v2 address families and protocols other than the ones the specification lists are
//! rejected, as the specification requires. For the `LOCAL` command the addresses are
//! ignored (reported as `None`) as the specification requires, but the family byte must
//! still be valid. `AF_UNIX` addresses are recognised ([`Transport::UnixStream`],
//! [`Transport::UnixDgram`]) but not returned (a path is not a `SocketAddr`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

#[cfg(test)]
mod tests;

/// The longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX_LEN: usize = 107;
/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The default cap on a v2 header's total length (16-byte fixed part + declared length).
pub const V2_DEFAULT_MAX_LEN: usize = 4096;
/// The fixed part of a v2 header: signature, version/command, family/protocol, length.
pub const V2_FIXED_LEN: usize = 16;

const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// Which version of the protocol the header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text format (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary format (starts with [`V2_SIGNATURE`]).
    V2,
}

/// The v2 command. v1 headers are always [`Command::Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The connection was relayed on behalf of a client; the addresses are the client's.
    Proxy,
    /// The connection was made by the proxy itself (e.g. a health check); use the real
    /// peer address. [`ProxyHeader::source`] and [`ProxyHeader::destination`] are `None`.
    Local,
}

/// The transport the header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP over IPv4 (v1 `TCP4`, v2 `0x11`).
    Tcp4,
    /// TCP over IPv6 (v1 `TCP6`, v2 `0x21`).
    Tcp6,
    /// UDP over IPv4 (v2 `0x12`); addresses are reported.
    Udp4,
    /// UDP over IPv6 (v2 `0x22`); addresses are reported.
    Udp6,
    /// Unix stream socket (v2 `0x31`); addresses are not reported.
    UnixStream,
    /// Unix datagram socket (v2 `0x32`); addresses are not reported.
    UnixDgram,
    /// v2 `AF_UNSPEC` (`0x00`): no addresses.
    Unspec,
    /// v1 `UNKNOWN`: no addresses.
    Unknown,
}

/// One TLV of a v2 header: its type byte and where its value lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The type byte (`PP2_TYPE_ALPN` = 0x01, `PP2_TYPE_AUTHORITY` = 0x02, ...).
    pub kind: u8,
    /// The value's byte range, counted from the start of the header (the input slice
    /// given to [`parse`]); see [`Tlv::value`].
    pub range: Range<usize>,
}

impl Tlv {
    /// The value's bytes within `header`, the same input slice that was parsed (or any
    /// slice starting at the same header). Empty if `header` is too short.
    pub fn value<'a>(&self, header: &'a [u8]) -> &'a [u8] {
        header.get(self.range.clone()).unwrap_or(&[])
    }
}

/// A parsed PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// v1 or v2.
    pub version: Version,
    /// `PROXY` or `LOCAL` (v1 is always `PROXY`).
    pub command: Command,
    /// The declared transport.
    pub transport: Transport,
    /// The original client's address: `Some` for `PROXY` with TCP/UDP over IPv4/IPv6,
    /// `None` otherwise.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the proxy's listener), as `source`.
    pub destination: Option<SocketAddr>,
    /// The v2 TLVs after the address block, in order (empty for v1). They are only
    /// located and bounds-checked, never interpreted.
    pub tlvs: Vec<Tlv>,
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are a valid prefix of a header; call again with more.
    NeedMore,
    /// A complete header; the first `consumed` bytes are the header, the rest is payload.
    Done {
        /// The header.
        header: ProxyHeader,
        /// The header's length in bytes.
        consumed: usize,
    },
}

/// Why the input is not an acceptable PROXY header. Every error is final: the connection
/// should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The first byte cannot start either signature: the peer sent no header at all.
    Missing,
    /// The input started like a signature but differs at the given offset.
    BadSignature {
        /// Offset of the first byte that matches neither signature.
        at: usize,
    },
    /// A v1 line that is malformed: wrong protocol word, field count, separator,
    /// character, or no CRLF within [`V1_MAX_LEN`] bytes.
    BadV1,
    /// An address or port that does not parse, or does not match the declared family
    /// (e.g. an IPv4 address in a `TCP6` line).
    BadAddress,
    /// v2 version nibble other than 2.
    UnsupportedVersion(u8),
    /// v2 command nibble other than `LOCAL` (0) or `PROXY` (1).
    UnsupportedCommand(u8),
    /// v2 family/protocol byte not listed in the specification.
    UnsupportedFamily(u8),
    /// The v2 header's total length (16 + declared) exceeds the limit.
    TooLarge {
        /// The declared total length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The v2 declared length is shorter than the address block of its family.
    AddressBlockTooShort,
    /// A v2 TLV whose length runs past the end of the header.
    TlvOverrun,
}

impl HeaderError {
    /// A short, stable name for metrics and logs (`"proxy_missing"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            HeaderError::Missing => "proxy_missing",
            HeaderError::BadSignature { .. } => "proxy_bad_signature",
            HeaderError::BadV1 => "proxy_bad_v1",
            HeaderError::BadAddress => "proxy_bad_address",
            HeaderError::UnsupportedVersion(_) => "proxy_unsupported_version",
            HeaderError::UnsupportedCommand(_) => "proxy_unsupported_command",
            HeaderError::UnsupportedFamily(_) => "proxy_unsupported_family",
            HeaderError::TooLarge { .. } => "proxy_too_large",
            HeaderError::AddressBlockTooShort => "proxy_address_block_too_short",
            HeaderError::TlvOverrun => "proxy_tlv_overrun",
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing => write!(f, "no PROXY protocol header"),
            HeaderError::BadSignature { at } => {
                write!(f, "bad PROXY protocol signature at byte {at}")
            }
            HeaderError::BadV1 => write!(f, "malformed PROXY v1 header"),
            HeaderError::BadAddress => write!(f, "bad address or port in PROXY header"),
            HeaderError::UnsupportedVersion(v) => {
                write!(f, "unsupported PROXY protocol version {v}")
            }
            HeaderError::UnsupportedCommand(c) => write!(f, "unsupported PROXY v2 command {c}"),
            HeaderError::UnsupportedFamily(b) => {
                write!(f, "unsupported PROXY v2 family/protocol 0x{b:02x}")
            }
            HeaderError::TooLarge { len, max } => {
                write!(f, "PROXY v2 header of {len} bytes exceeds the limit of {max}")
            }
            HeaderError::AddressBlockTooShort => {
                write!(f, "PROXY v2 length shorter than its address block")
            }
            HeaderError::TlvOverrun => write!(f, "PROXY v2 TLV runs past the header"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Parses a PROXY header (v1 or v2) at the start of `input`, with the v2 total length
/// capped at [`V2_DEFAULT_MAX_LEN`]. See the module docs for the contract.
pub fn parse(input: &[u8]) -> Result<Parsed, HeaderError> {
    parse_with_limit(input, V2_DEFAULT_MAX_LEN)
}

/// As [`parse`], with v2 headers longer than `v2_max_len` bytes in total (fixed part
/// included) rejected with [`HeaderError::TooLarge`]. A limit below the smallest header
/// (16 bytes) rejects every v2 header.
pub fn parse_with_limit(input: &[u8], v2_max_len: usize) -> Result<Parsed, HeaderError> {
    let Some(&first) = input.first() else {
        return Ok(Parsed::NeedMore);
    };
    if first == V1_PREFIX[0] {
        let n = input.len().min(V1_PREFIX.len());
        if let Some(at) = first_difference(&input[..n], &V1_PREFIX[..n]) {
            return Err(HeaderError::BadSignature { at });
        }
        if input.len() < V1_PREFIX.len() {
            return Ok(Parsed::NeedMore);
        }
        parse_v1(input)
    } else if first == V2_SIGNATURE[0] {
        let n = input.len().min(V2_SIGNATURE.len());
        if let Some(at) = first_difference(&input[..n], &V2_SIGNATURE[..n]) {
            return Err(HeaderError::BadSignature { at });
        }
        parse_v2(input, v2_max_len)
    } else {
        Err(HeaderError::Missing)
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn parse_v1(input: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &input[..input.len().min(V1_MAX_LEN)];
    // Every byte before the CRLF must be printable ASCII; reject early otherwise.
    let mut end = None;
    for (i, &b) in window.iter().enumerate().skip(V1_PREFIX.len()) {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(HeaderError::BadV1),
                None => {}
            },
            0x20..=0x7e => {}
            _ => return Err(HeaderError::BadV1),
        }
    }
    let Some(end) = end else {
        return if window.len() >= V1_MAX_LEN {
            Err(HeaderError::BadV1)
        } else {
            Ok(Parsed::NeedMore)
        };
    };
    let line = &input[V1_PREFIX.len()..end];
    let header = parse_v1_fields(line)?;
    Ok(Parsed::Done { header, consumed: end + 2 })
}

fn parse_v1_fields(line: &[u8]) -> Result<ProxyHeader, HeaderError> {
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().ok_or(HeaderError::BadV1)?;
    let transport = match proto {
        b"TCP4" => Transport::Tcp4,
        b"TCP6" => Transport::Tcp6,
        b"UNKNOWN" => {
            // The rest of the line (if any) is to be ignored, per the specification.
            return Ok(ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                transport: Transport::Unknown,
                source: None,
                destination: None,
                tlvs: Vec::new(),
            });
        }
        _ => return Err(HeaderError::BadV1),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(HeaderError::BadV1);
    };
    let v6 = transport == Transport::Tcp6;
    let src = parse_v1_ip(src, v6)?;
    let dst = parse_v1_ip(dst, v6)?;
    let sport = parse_v1_port(sport)?;
    let dport = parse_v1_port(dport)?;
    Ok(ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        transport,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
        tlvs: Vec::new(),
    })
}

fn parse_v1_ip(field: &[u8], v6: bool) -> Result<IpAddr, HeaderError> {
    let text = std::str::from_utf8(field).map_err(|_| HeaderError::BadAddress)?;
    if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| HeaderError::BadAddress)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| HeaderError::BadAddress)
    }
}

fn parse_v1_port(field: &[u8]) -> Result<u16, HeaderError> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::BadAddress);
    }
    let n = field.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| HeaderError::BadAddress)
}

fn parse_v2(input: &[u8], max_len: usize) -> Result<Parsed, HeaderError> {
    // Check each fixed byte as soon as it is in, so garbage fails early.
    let (cmd, fam) = match input.get(12) {
        None => return Ok(Parsed::NeedMore),
        Some(&b) => {
            if b >> 4 != 2 {
                return Err(HeaderError::UnsupportedVersion(b >> 4));
            }
            let cmd = match b & 0x0f {
                0 => Command::Local,
                1 => Command::Proxy,
                c => return Err(HeaderError::UnsupportedCommand(c)),
            };
            match input.get(13) {
                None => return Ok(Parsed::NeedMore),
                Some(&f) => (cmd, f),
            }
        }
    };
    let (transport, addr_len) = match fam {
        0x00 => (Transport::Unspec, 0),
        0x11 => (Transport::Tcp4, 12),
        0x12 => (Transport::Udp4, 12),
        0x21 => (Transport::Tcp6, 36),
        0x22 => (Transport::Udp6, 36),
        0x31 => (Transport::UnixStream, 216),
        0x32 => (Transport::UnixDgram, 216),
        other => return Err(HeaderError::UnsupportedFamily(other)),
    };
    let (Some(&hi), Some(&lo)) = (input.get(14), input.get(15)) else {
        return Ok(Parsed::NeedMore);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    if total > max_len {
        return Err(HeaderError::TooLarge { len: total, max: max_len });
    }
    if len < addr_len {
        return Err(HeaderError::AddressBlockTooShort);
    }
    if input.len() < total {
        return Ok(Parsed::NeedMore);
    }
    let block = &input[V2_FIXED_LEN..V2_FIXED_LEN + addr_len];
    let (source, destination) = match (cmd, transport) {
        (Command::Proxy, Transport::Tcp4 | Transport::Udp4) => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(block[o], block[o + 1], block[o + 2], block[o + 3]))
            };
            let port = |o: usize| u16::from_be_bytes([block[o], block[o + 1]]);
            (Some(SocketAddr::new(ip(0), port(8))), Some(SocketAddr::new(ip(4), port(10))))
        }
        (Command::Proxy, Transport::Tcp6 | Transport::Udp6) => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&block[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([block[o], block[o + 1]]);
            (Some(SocketAddr::new(ip(0), port(32))), Some(SocketAddr::new(ip(16), port(34))))
        }
        _ => (None, None),
    };
    let tlvs = parse_tlvs(input, V2_FIXED_LEN + addr_len, total)?;
    let header =
        ProxyHeader { version: Version::V2, command: cmd, transport, source, destination, tlvs };
    Ok(Parsed::Done { header, consumed: total })
}

fn parse_tlvs(input: &[u8], mut at: usize, end: usize) -> Result<Vec<Tlv>, HeaderError> {
    let mut tlvs = Vec::new();
    while at < end {
        if end - at < 3 {
            return Err(HeaderError::TlvOverrun);
        }
        let kind = input[at];
        let len = usize::from(u16::from_be_bytes([input[at + 1], input[at + 2]]));
        let start = at + 3;
        if end - start < len {
            return Err(HeaderError::TlvOverrun);
        }
        tlvs.push(Tlv { kind, range: start..start + len });
        at = start + len;
    }
    Ok(tlvs)
}

/// Puts both addresses in one family: if one is IPv6 and the other IPv4, the IPv4 one
/// becomes IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) => (v6(src), dst),
        (SocketAddr::V6(_), SocketAddr::V4(_)) => (src, v6(dst)),
        _ => (src, dst),
    }
}

/// The v1 header announcing a TCP connection from `src` (the client) to `dst` (the address
/// it connected to): `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`. Mixed families are sent
/// as `TCP6` with the IPv4 address IPv4-mapped.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {proto} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
        .into_bytes()
}

/// The v1 header for a connection whose addresses are unknown: `PROXY UNKNOWN\r\n`.
pub fn encode_v1_unknown() -> Vec<u8> {
    b"PROXY UNKNOWN\r\n".to_vec()
}

/// The v2 `PROXY` header for a TCP connection from `src` to `dst`, without TLVs. Mixed
/// families are sent as TCP over IPv6 with the IPv4 address IPv4-mapped.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    encode_v2_with_tlvs(src, dst, &[])
}

/// As [`encode_v2`], followed by the given TLVs `(type, value)`, in order.
///
/// # Panics
/// If a value is longer than 65,535 bytes or the TLVs together make the header's declared
/// length exceed 65,535 bytes (a caller's bug: the format cannot express it).
pub fn encode_v2_with_tlvs(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let mut addrs = Vec::with_capacity(36);
    let fam = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            0x21
        }
        _ => unreachable!("same_family returns one family"),
    };
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    encode_v2_raw(0x21, fam, &addrs, tlvs)
}

/// The v2 `LOCAL` header (family `AF_UNSPEC`, no addresses): for connections the sender
/// makes on its own behalf, such as health checks.
pub fn encode_v2_local() -> Vec<u8> {
    encode_v2_raw(0x20, 0x00, &[], &[])
}

fn encode_v2_raw(ver_cmd: u8, fam: u8, addrs: &[u8], tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let tlv_len: usize = tlvs.iter().map(|(_, v)| 3 + v.len()).sum();
    let len =
        u16::try_from(addrs.len() + tlv_len).expect("PROXY v2 header longer than 65,535 bytes");
    let mut out = Vec::with_capacity(V2_FIXED_LEN + usize::from(len));
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(ver_cmd);
    out.push(fam);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(addrs);
    for (kind, value) in tlvs {
        let vlen = u16::try_from(value.len()).expect("PROXY v2 TLV longer than 65,535 bytes");
        out.push(*kind);
        out.extend_from_slice(&vlen.to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}
