//! `--send-proxy v1|v2`: the PROXY protocol header the proxy writes to each backend
//! connection before any client byte, so a PROXY-aware backend (`evloop serve
//! --accept-proxy`, HAProxy, nginx, ...) sees the client's address, not the proxy's.
//! The bytes come from the sans-IO encoder ([`crate::proto::proxy_header`]); the data
//! path ([`super::handler`]) writes them in the backend connection's `opened`, before
//! it links the pair, so they precede everything forwarded.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::proto::proxy_header;

/// Which header version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`).
    V2,
}

impl SendProxy {
    /// The header for a client at `client` that connected to `dest` (the proxy's
    /// listening address). Without both addresses (a Unix-socket client) v1 sends
    /// `PROXY UNKNOWN` and v2 a `LOCAL` header: the backend then uses the proxy's
    /// own address. Mixed families (an IPv4 client on an IPv6 listener) are sent with
    /// both mapped to IPv6.
    pub fn header(self, client: Option<SocketAddr>, dest: Option<SocketAddr>) -> Vec<u8> {
        let (Some(src), Some(dst)) = (client, dest) else {
            return match self {
                SendProxy::V1 => proxy_header::encode_v1_unknown(),
                SendProxy::V2 => proxy_header::encode_v2_local(),
            };
        };
        let (src, dst) = same_family(src, dst);
        match self {
            SendProxy::V1 => proxy_header::encode_v1(src, dst),
            SendProxy::V2 => proxy_header::encode_v2(src, dst),
        }
    }
}

/// Both addresses in one family: IPv6 (mapped) unless both are IPv4.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() { (a, b) } else { (v6(a), v6(b)) }
}

impl FromStr for SendProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(SendProxy::V1),
            "v2" | "2" => Ok(SendProxy::V2),
            _ => Err(format!("expected v1 or v2, got {s:?}")),
        }
    }
}

impl fmt::Display for SendProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::proxy_header::{Parsed, parse};

    #[test]
    fn headers_parse_back_to_the_client() {
        let c: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let d: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        for v in [SendProxy::V1, SendProxy::V2] {
            let h = v.header(Some(c), Some(d));
            let Ok(Parsed::Done { header, consumed }) = parse(&h) else { panic!("{v}") };
            assert_eq!(consumed, h.len());
            assert_eq!(header.source, Some(c));
        }
        let d6: SocketAddr = "[::1]:6000".parse().unwrap();
        let h = SendProxy::V1.header(Some(c), Some(d6));
        let Ok(Parsed::Done { header, .. }) = parse(&h) else { panic!() };
        assert_eq!(header.source.map(|s| s.port()), Some(4567));
        assert!(matches!(parse(&SendProxy::V2.header(None, None)), Ok(Parsed::Done { .. })));
        assert_eq!("v2".parse::<SendProxy>(), Ok(SendProxy::V2));
        assert!("v3".parse::<SendProxy>().is_err());
    }
}
