//! Frame synthesis and dissection: Ethernet + IPv4/IPv6 + TCP headers around a payload,
//! and the reverse for the link types tcpdump commonly writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The largest TCP payload in one synthesised segment: fits both the IPv4 total length
/// (65,535 - 20 - 20) and the IPv6 payload length fields.
pub(crate) const MAX_SEGMENT: usize = 65_495;
/// The pcap snap length we declare (tcpdump's default): above any frame we write.
pub(crate) const SNAPLEN: u32 = 262_144;

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// One TCP segment to synthesise.
pub(crate) struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub from_client: bool,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub ip_id: u16,
    pub payload: &'a [u8],
}

/// Writes the Ethernet frame of `seg` into `out` (cleared first). `src` and `dst` must be
/// of the same family.
pub(crate) fn ethernet_frame(out: &mut Vec<u8>, seg: &Segment<'_>) {
    out.clear();
    let (dst_mac, src_mac) =
        if seg.from_client { (SERVER_MAC, CLIENT_MAC) } else { (CLIENT_MAC, SERVER_MAC) };
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    let tcp_len = 20 + seg.payload.len();
    match (seg.src.ip(), seg.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let ip_start = out.len();
            out.push(0x45);
            out.push(0);
            out.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            out.extend_from_slice(&seg.ip_id.to_be_bytes());
            out.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
            out.push(64);
            out.push(6);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = checksum(0, &out[ip_start..ip_start + 20]);
            out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
            let mut pseudo = [0u8; 12];
            pseudo[..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = 6;
            pseudo[10..].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            tcp(out, seg, sum16(0, &pseudo));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&0x86DDu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            out.push(6);
            out.push(64);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&s.octets());
            pseudo[16..32].copy_from_slice(&d.octets());
            pseudo[32..36].copy_from_slice(&(tcp_len as u32).to_be_bytes());
            pseudo[39] = 6;
            tcp(out, seg, sum16(0, &pseudo));
        }
        _ => debug_assert!(false, "mixed address families"),
    }
}

fn tcp(out: &mut Vec<u8>, seg: &Segment<'_>, pseudo_sum: u64) {
    let start = out.len();
    out.extend_from_slice(&seg.src.port().to_be_bytes());
    out.extend_from_slice(&seg.dst.port().to_be_bytes());
    out.extend_from_slice(&seg.seq.to_be_bytes());
    out.extend_from_slice(&seg.ack.to_be_bytes());
    out.push(5 << 4);
    out.push(seg.flags);
    out.extend_from_slice(&65_535u16.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    out.extend_from_slice(seg.payload);
    let sum = checksum(pseudo_sum, &out[start..]);
    out[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with zero).
fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// The Internet checksum (RFC 1071) of `data` on top of a partial sum.
fn checksum(acc: u64, data: &[u8]) -> u16 {
    let mut acc = sum16(acc, data);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A TCP segment found in a captured frame.
#[derive(Debug)]
pub(crate) struct TcpSeen<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    /// The captured payload (may be shorter than `len` if the capture was truncated).
    pub payload: &'a [u8],
    /// The payload length the IP header declares.
    pub len: usize,
}

/// Finds the TCP segment in one frame of link type `linktype`: Ethernet (1, with 802.1Q
/// tags), BSD loopback (0, 108), raw IP (12, 14, 101), IPv4 (228), IPv6 (229), Linux
/// cooked SLL (113) and SLL2 (276). `None` for anything else (ARP, UDP, IP fragments,
/// IPv6 extension headers, truncated headers).
pub(crate) fn dissect(linktype: u32, frame: &[u8]) -> Option<TcpSeen<'_>> {
    let ip = match linktype {
        1 => {
            let mut at = 12;
            let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
            }
            matches!(ethertype, 0x0800 | 0x86DD).then_some(())?;
            frame.get(at + 2..)?
        }
        0 | 108 => frame.get(4..)?,
        12 | 14 | 101 | 228 | 229 => frame,
        113 => frame.get(16..)?,
        276 => frame.get(20..)?,
        _ => return None,
    };
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if *ip.get(9)? != 6 || frag & 0x3fff != 0 || ihl < 20 || total < ihl {
                return None;
            }
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], *ip.get(15)?));
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], *ip.get(19)?));
            tcp_seen(src, dst, ip.get(ihl..)?, total - ihl)
        }
        6 => {
            let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if *ip.get(6)? != 6 || ip.len() < 40 {
                return None;
            }
            let addr = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&ip[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            tcp_seen(addr(8), addr(24), &ip[40..], plen)
        }
        _ => None,
    }
}

fn tcp_seen(src: IpAddr, dst: IpAddr, tcp: &[u8], ip_payload_len: usize) -> Option<TcpSeen<'_>> {
    let off = usize::from(*tcp.get(12)? >> 4) * 4;
    if off < 20 || ip_payload_len < off {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let flags = *tcp.get(13)?;
    let len = ip_payload_len - off;
    let end = tcp.len().min(off + len);
    let payload = tcp.get(off..end).unwrap_or(&[]);
    Some(TcpSeen {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        seq,
        flags,
        payload,
        len,
    })
}
