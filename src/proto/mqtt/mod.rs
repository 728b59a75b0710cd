//! MQTT 3.1.1 (protocol level 4, and 3.1 `MQIsdp` level 3), sans-IO: the packet codec
//! ([`decode`] bytes → [`Packet`], [`Packet::encode`] back) and topic names and filters
//! ([`topic`]: validation, `+`/`#` matching with the `$`-topic rule).
//!
//! No sockets and no broker state here: the broker ([`crate::broker`]) drives this codec
//! over the reactor's connection buffers. Every malformed input is an [`Error`] (the
//! broker closes the connection, as the spec says), never a panic; lengths are checked
//! against [`Limits`] before anything is allocated, so a declared remaining length above
//! `max_packet` is refused before its bytes arrive.

#[cfg(test)]
mod tests;
pub mod topic;

use std::fmt;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet (fixed header + remaining length) accepted.
    pub max_packet: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_len: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_topic_levels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_packet: 1 << 20, max_topic_len: 4096, max_topic_levels: 64 }
    }
}

/// Why bytes are not a valid packet. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The remaining length used more than four bytes.
    BadRemainingLength,
    /// The packet is larger than [`Limits::max_packet`].
    TooLarge(usize),
    /// Packet type 0 or 15.
    ReservedType(u8),
    /// The fixed header's flags are not the ones the spec fixes for the packet type.
    ReservedFlags(u8),
    /// The packet's body does not match its type (too short, trailing bytes, a bad
    /// field); the text says which.
    Malformed(&'static str),
    /// A string is not UTF-8, or holds U+0000.
    BadString,
}

impl Error {
    /// A short kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadRemainingLength => "bad_remaining_length",
            Error::TooLarge(_) => "packet_too_large",
            Error::ReservedType(_) => "reserved_type",
            Error::ReservedFlags(_) => "reserved_flags",
            Error::Malformed(_) => "malformed",
            Error::BadString => "bad_string",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRemainingLength => f.write_str("remaining length longer than 4 bytes"),
            Error::TooLarge(n) => write!(f, "packet of {n} bytes is over the limit"),
            Error::ReservedType(t) => write!(f, "reserved packet type {t}"),
            Error::ReservedFlags(b) => write!(f, "reserved flags in fixed header 0x{b:02x}"),
            Error::Malformed(m) => write!(f, "malformed packet: {m}"),
            Error::BadString => f.write_str("string is not valid UTF-8 or holds U+0000"),
        }
    }
}

impl std::error::Error for Error {}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic it is published to.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// Published retained.
    pub retain: bool,
}

/// A CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name: `MQTT` (3.1.1) or `MQIsdp` (3.1).
    pub protocol: String,
    /// Protocol level: 4 for 3.1.1, 3 for 3.1.
    pub level: u8,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// The will, when the will flag is set.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
}

/// A PUBLISH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag (a redelivery).
    pub dup: bool,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (no wildcards; checked by the broker against [`topic::valid_name`]).
    pub topic: String,
    /// Packet identifier (QoS 1 and 2 only, never 0).
    pub pid: Option<u16>,
    /// Application payload.
    pub payload: Vec<u8>,
}

/// CONNACK return codes (3.1.1 §3.2.2.3).
pub mod connack {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0;
    /// The protocol level is not supported.
    pub const BAD_PROTOCOL: u8 = 1;
    /// The client identifier is not allowed.
    pub const ID_REJECTED: u8 = 2;
    /// The server cannot take the connection now.
    pub const UNAVAILABLE: u8 = 3;
}

/// SUBACK return code of a refused filter.
pub const SUBACK_FAILURE: u8 = 0x80;

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client → server).
    Connect(Connect),
    /// CONNACK (server → client).
    ConnAck {
        /// A session was resumed.
        session_present: bool,
        /// Return code ([`connack`]).
        code: u8,
    },
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK (QoS 1 acknowledgement).
    PubAck(u16),
    /// PUBREC (QoS 2, part 1).
    PubRec(u16),
    /// PUBREL (QoS 2, part 2).
    PubRel(u16),
    /// PUBCOMP (QoS 2, part 3).
    PubComp(u16),
    /// SUBSCRIBE: packet id and (filter, requested QoS) pairs.
    Subscribe {
        /// Packet identifier.
        pid: u16,
        /// Filters and their requested QoS.
        filters: Vec<(String, u8)>,
    },
    /// SUBACK: packet id and one return code per filter.
    SubAck {
        /// Packet identifier.
        pid: u16,
        /// Granted QoS or [`SUBACK_FAILURE`], per filter.
        codes: Vec<u8>,
    },
    /// UNSUBSCRIBE: packet id and filters.
    Unsubscribe {
        /// Packet identifier.
        pid: u16,
        /// Filters to remove.
        filters: Vec<String>,
    },
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect,
}

/// A reader over a packet's body; every read checks the length.
struct Body<'a> {
    buf: &'a [u8],
}

impl<'a> Body<'a> {
    fn u8(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self.buf.split_first().ok_or(Error::Malformed("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()? as usize;
        if self.buf.len() < n {
            return Err(Error::Malformed("truncated"));
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, Error> {
        let b = self.bytes()?;
        let s = std::str::from_utf8(b).map_err(|_| Error::BadString)?;
        if s.contains('\0') {
            return Err(Error::BadString);
        }
        Ok(s.to_string())
    }

    fn pid(&mut self) -> Result<u16, Error> {
        match self.u16()? {
            0 => Err(Error::Malformed("packet identifier 0")),
            p => Ok(p),
        }
    }

    fn end(&self) -> Result<(), Error> {
        if self.buf.is_empty() { Ok(()) } else { Err(Error::Malformed("trailing bytes")) }
    }
}

/// Reads the fixed header: `Ok(None)` when more bytes are needed, else the first byte,
/// the remaining length and the header's size.
pub fn fixed_header(input: &[u8], limits: &Limits) -> Result<Option<(u8, usize, usize)>, Error> {
    let Some(&b0) = input.first() else { return Ok(None) };
    let kind = b0 >> 4;
    if kind == 0 || kind == 15 {
        return Err(Error::ReservedType(kind));
    }
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = input.get(1 + i) else { return Ok(None) };
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            let header = 2 + i;
            if header + len > limits.max_packet {
                return Err(Error::TooLarge(header + len));
            }
            return Ok(Some((b0, len, header)));
        }
    }
    Err(Error::BadRemainingLength)
}

/// Decodes one packet from the front of `input`: `Ok(None)` when it is not complete yet,
/// else the packet and how many bytes it took.
pub fn decode(input: &[u8], limits: &Limits) -> Result<Option<(Packet, usize)>, Error> {
    let Some((b0, len, header)) = fixed_header(input, limits)? else { return Ok(None) };
    let Some(body) = input.get(header..header + len) else { return Ok(None) };
    let packet = parse(b0, body)?;
    Ok(Some((packet, header + len)))
}

fn expect_flags(b0: u8, flags: u8) -> Result<(), Error> {
    if b0 & 0x0f == flags { Ok(()) } else { Err(Error::ReservedFlags(b0)) }
}

fn parse(b0: u8, body: &[u8]) -> Result<Packet, Error> {
    let mut r = Body { buf: body };
    let kind = b0 >> 4;
    let packet = match kind {
        1 => {
            expect_flags(b0, 0)?;
            Packet::Connect(parse_connect(&mut r)?)
        }
        2 => {
            expect_flags(b0, 0)?;
            let ack = r.u8()?;
            if ack & 0xfe != 0 {
                return Err(Error::Malformed("connack flags"));
            }
            Packet::ConnAck { session_present: ack == 1, code: r.u8()? }
        }
        3 => {
            let qos = (b0 >> 1) & 3;
            if qos == 3 {
                return Err(Error::Malformed("publish qos 3"));
            }
            let dup = b0 & 0x08 != 0;
            if qos == 0 && dup {
                return Err(Error::Malformed("dup set on qos 0"));
            }
            let topic = r.string()?;
            let pid = if qos > 0 { Some(r.pid()?) } else { None };
            let payload = std::mem::take(&mut r.buf).to_vec();
            Packet::Publish(Publish { dup, qos, retain: b0 & 1 != 0, topic, pid, payload })
        }
        4 | 5 | 7 | 11 => {
            expect_flags(b0, 0)?;
            let pid = r.pid()?;
            match kind {
                4 => Packet::PubAck(pid),
                5 => Packet::PubRec(pid),
                7 => Packet::PubComp(pid),
                _ => Packet::UnsubAck(pid),
            }
        }
        6 => {
            expect_flags(b0, 2)?;
            Packet::PubRel(r.pid()?)
        }
        8 => {
            expect_flags(b0, 2)?;
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while !r.buf.is_empty() {
                let f = r.string()?;
                let q = r.u8()?;
                if q > 2 {
                    return Err(Error::Malformed("subscribe qos"));
                }
                filters.push((f, q));
            }
            if filters.is_empty() {
                return Err(Error::Malformed("subscribe without filters"));
            }
            Packet::Subscribe { pid, filters }
        }
        9 => {
            expect_flags(b0, 0)?;
            let pid = r.pid()?;
            let codes = std::mem::take(&mut r.buf).to_vec();
            Packet::SubAck { pid, codes }
        }
        10 => {
            expect_flags(b0, 2)?;
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while !r.buf.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(Error::Malformed("unsubscribe without filters"));
            }
            Packet::Unsubscribe { pid, filters }
        }
        12..=14 => {
            expect_flags(b0, 0)?;
            match kind {
                12 => Packet::PingReq,
                13 => Packet::PingResp,
                _ => Packet::Disconnect,
            }
        }
        t => return Err(Error::ReservedType(t)),
    };
    r.end()?;
    Ok(packet)
}

fn parse_connect(r: &mut Body<'_>) -> Result<Connect, Error> {
    let protocol = r.string()?;
    let level = r.u8()?;
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(Error::Malformed("connect reserved flag"));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 3;
    let will_retain = flags & 0x20 != 0;
    let will = if will_flag {
        if will_qos == 3 {
            return Err(Error::Malformed("will qos 3"));
        }
        let topic = r.string()?;
        let payload = r.bytes()?.to_vec();
        Some(Will { topic, payload, qos: will_qos, retain: will_retain })
    } else {
        if will_qos != 0 || will_retain {
            return Err(Error::Malformed("will qos/retain without will"));
        }
        None
    };
    let username = if flags & 0x80 != 0 { Some(r.string()?) } else { None };
    if flags & 0x40 != 0 && username.is_none() && level >= 4 {
        return Err(Error::Malformed("password without user name"));
    }
    let password = if flags & 0x40 != 0 { Some(r.bytes()?.to_vec()) } else { None };
    Ok(Connect {
        protocol,
        level,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

/// Appends the fixed header of a packet with first byte `b0` and `len` remaining bytes.
pub fn put_header(out: &mut Vec<u8>, b0: u8, mut len: usize) {
    out.push(b0);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&s[..n]);
}

/// Appends a PUBLISH packet (`pid` is written only for QoS 1 and 2).
pub fn encode_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos: u8,
    pid: u16,
    retain: bool,
    dup: bool,
) {
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    let b0 = 0x30 | (u8::from(dup) << 3) | ((qos & 3) << 1) | u8::from(retain);
    out.reserve(5 + len);
    put_header(out, b0, len);
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

impl Packet {
    /// Appends the packet's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ack = |out: &mut Vec<u8>, b0: u8, pid: u16| {
            out.extend_from_slice(&[b0, 2]);
            out.extend_from_slice(&pid.to_be_bytes());
        };
        match self {
            Packet::Connect(c) => {
                let mut body = Vec::new();
                put_str(&mut body, c.protocol.as_bytes());
                body.push(c.level);
                let mut flags = u8::from(c.clean_session) << 1;
                if let Some(w) = &c.will {
                    flags |= 0x04 | (w.qos << 3) | (u8::from(w.retain) << 5);
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                body.push(flags);
                body.extend_from_slice(&c.keep_alive.to_be_bytes());
                put_str(&mut body, c.client_id.as_bytes());
                if let Some(w) = &c.will {
                    put_str(&mut body, w.topic.as_bytes());
                    put_str(&mut body, &w.payload);
                }
                if let Some(u) = &c.username {
                    put_str(&mut body, u.as_bytes());
                }
                if let Some(p) = &c.password {
                    put_str(&mut body, p);
                }
                put_header(out, 0x10, body.len());
                out.extend_from_slice(&body);
            }
            Packet::ConnAck { session_present, code } => {
                out.extend_from_slice(&[0x20, 2, u8::from(*session_present), *code]);
            }
            Packet::Publish(p) => encode_publish(
                out,
                &p.topic,
                &p.payload,
                p.qos,
                p.pid.unwrap_or(0),
                p.retain,
                p.dup,
            ),
            Packet::PubAck(pid) => ack(out, 0x40, *pid),
            Packet::PubRec(pid) => ack(out, 0x50, *pid),
            Packet::PubRel(pid) => ack(out, 0x62, *pid),
            Packet::PubComp(pid) => ack(out, 0x70, *pid),
            Packet::Subscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
                put_header(out, 0x82, len);
                out.extend_from_slice(&pid.to_be_bytes());
                for (f, q) in filters {
                    put_str(out, f.as_bytes());
                    out.push(*q);
                }
            }
            Packet::SubAck { pid, codes } => {
                put_header(out, 0x90, 2 + codes.len());
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(codes);
            }
            Packet::Unsubscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
                put_header(out, 0xa2, len);
                out.extend_from_slice(&pid.to_be_bytes());
                for f in filters {
                    put_str(out, f.as_bytes());
                }
            }
            Packet::UnsubAck(pid) => ack(out, 0xb0, *pid),
            Packet::PingReq => out.extend_from_slice(&[0xc0, 0]),
            Packet::PingResp => out.extend_from_slice(&[0xd0, 0]),
            Packet::Disconnect => out.extend_from_slice(&[0xe0, 0]),
        }
    }
}
