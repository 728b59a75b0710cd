//! Listen addresses (TCP, Unix domain sockets, UDP) and peer addresses.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Something a server listens on.
///
/// Written forms (what [`FromStr`] accepts):
/// `127.0.0.1:5000`, `[::1]:5000`, `localhost:5000`, `tcp://HOST:PORT`,
/// `unix:/path/to.sock` (or `unix://path`), `udp://HOST:PORT`,
/// `fd:N` (an inherited listening socket), `systemd` or `sd-listen` (every socket
/// passed by systemd's socket activation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A Unix domain stream socket at this path.
    Unix(PathBuf),
    /// A UDP socket: each datagram is one request, each reply one datagram.
    Udp(SocketAddr),
    /// `fd:N`: an already-listening socket inherited as descriptor `N`, not yet
    /// inspected (see [`activation::resolve`](super::activation::resolve)).
    Fd(i32),
    /// `systemd` (or `sd-listen`): every socket systemd passed (`LISTEN_FDS`), not yet
    /// read (see [`activation::resolve`](super::activation::resolve)).
    Systemd,
    /// An inherited socket, inspected: what `fd:N` and `systemd` resolve to.
    Inherited(super::activation::Inherited),
}

impl ListenAddr {
    /// Parses the written form, resolving host names; a name that resolves to several
    /// addresses gives several `ListenAddr`s.
    pub fn parse_all(s: &str) -> Result<Vec<ListenAddr>, String> {
        let bad = |e: &dyn fmt::Display| {
            format!(
                "invalid address {s:?}: {e} (expected HOST:PORT, tcp://HOST:PORT, udp://HOST:PORT or unix:PATH)"
            )
        };
        if let Some(path) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err(bad(&"empty socket path"));
            }
            // sun_path holds 108 bytes including the terminating NUL.
            if path.len() > 107 {
                return Err(bad(&"socket path longer than 107 bytes"));
            }
            return Ok(vec![ListenAddr::Unix(PathBuf::from(path))]);
        }
        if let Some(n) = s.strip_prefix("fd:") {
            return match n.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(vec![ListenAddr::Fd(fd)]),
                _ => Err(bad(&"fd: takes a descriptor number, e.g. fd:3")),
            };
        }
        if s == "systemd" || s == "sd-listen" {
            return Ok(vec![ListenAddr::Systemd]);
        }
        let (udp, hostport) = match s.strip_prefix("udp://") {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix("tcp://").unwrap_or(s)),
        };
        let addrs: Vec<SocketAddr> = hostport.to_socket_addrs().map_err(|e| bad(&e))?.collect();
        if addrs.is_empty() {
            return Err(bad(&"resolves to no address"));
        }
        Ok(addrs
            .into_iter()
            .map(|a| if udp { ListenAddr::Udp(a) } else { ListenAddr::Tcp(a) })
            .collect())
    }

    /// The socket address of a TCP or UDP listener.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(a) | ListenAddr::Udp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
            ListenAddr::Inherited(i) => match i.kind {
                super::activation::InheritedKind::Tcp(a)
                | super::activation::InheritedKind::Udp(a) => Some(a),
                super::activation::InheritedKind::Unix(_) => None,
            },
            ListenAddr::Fd(_) | ListenAddr::Systemd => None,
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    /// Parses the written form; a host name must resolve to exactly one address here
    /// (use [`ListenAddr::parse_all`] to keep them all).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut all = ListenAddr::parse_all(s)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(format!("address {s:?} resolves to {n} addresses; name one")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
            ListenAddr::Fd(fd) => write!(f, "fd:{fd}"),
            ListenAddr::Systemd => f.write_str("systemd"),
            ListenAddr::Inherited(i) => write!(f, "{i}"),
        }
    }
}

/// One `--listen` value: its addresses and whether they serve TLS.
///
/// `tls://HOST:PORT` (IPv4, `[v6]` or a name) is a TCP listener whose connections speak
/// TLS; every other form is parsed by [`ListenAddr::parse_all`] and is not TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The addresses (a name may resolve to several).
    pub addrs: Vec<ListenAddr>,
    /// Whether connections on them speak TLS.
    pub tls: bool,
}

impl ListenSpec {
    /// Parses a written listen address, `tls://HOST:PORT` included.
    pub fn parse(s: &str) -> Result<ListenSpec, String> {
        let Some(hostport) = s.strip_prefix("tls://") else {
            return Ok(ListenSpec { addrs: ListenAddr::parse_all(s)?, tls: false });
        };
        let addrs = ListenAddr::parse_all(hostport)
            .map_err(|_| format!("invalid address {s:?}: expected tls://HOST:PORT"))?;
        if addrs.iter().any(|a| !matches!(a, ListenAddr::Tcp(_))) {
            return Err(format!("invalid address {s:?}: TLS is served over TCP only"));
        }
        Ok(ListenSpec { addrs, tls: true })
    }
}

/// The address of a connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP (or UDP) peer.
    Inet(SocketAddr),
    /// A Unix domain socket peer (clients' sockets are normally unnamed).
    Unix,
}

impl Peer {
    /// The IP address and port, for TCP peers.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Inet(a) => Some(*a),
            Peer::Unix => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Inet(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix peer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_forms() {
        let one = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(one("127.0.0.1:5000"), Ok(ListenAddr::Tcp("127.0.0.1:5000".parse().unwrap())));
        assert_eq!(one("tcp://127.0.0.1:1"), Ok(ListenAddr::Tcp("127.0.0.1:1".parse().unwrap())));
        assert_eq!(one("[::1]:5000"), Ok(ListenAddr::Tcp("[::1]:5000".parse().unwrap())));
        assert_eq!(one("udp://127.0.0.1:53"), Ok(ListenAddr::Udp("127.0.0.1:53".parse().unwrap())));
        assert_eq!(one("unix:/tmp/x.sock"), Ok(ListenAddr::Unix("/tmp/x.sock".into())));
        assert_eq!(one("unix://rel.sock"), Ok(ListenAddr::Unix("rel.sock".into())));
        assert!(one("unix:").is_err());
        assert!(one(&format!("unix:/{}", "a".repeat(120))).is_err());
        assert!(one("nonsense").is_err());
        assert!(one("127.0.0.1").is_err());
        assert_eq!(one("udp://127.0.0.1:53").unwrap().to_string(), "udp://127.0.0.1:53");
        assert_eq!(one("unix:/tmp/x.sock").unwrap().to_string(), "unix:/tmp/x.sock");
        assert_eq!(one("fd:3"), Ok(ListenAddr::Fd(3)));
        assert_eq!(one("systemd"), Ok(ListenAddr::Systemd));
        assert_eq!(one("sd-listen"), Ok(ListenAddr::Systemd));
        assert!(one("fd:x").is_err() && one("fd:-1").is_err());
    }

    #[test]
    fn tls_forms() {
        let tls = ListenSpec::parse("tls://127.0.0.1:8443").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.addrs, vec![ListenAddr::Tcp("127.0.0.1:8443".parse().unwrap())]);
        let v6 = ListenSpec::parse("tls://[::1]:8443").unwrap();
        assert_eq!(v6.addrs, vec![ListenAddr::Tcp("[::1]:8443".parse().unwrap())]);
        assert!(!ListenSpec::parse("127.0.0.1:80").unwrap().tls);
        assert!(ListenSpec::parse("tls://unix:/tmp/x").is_err());
        assert!(ListenSpec::parse("tls://udp://127.0.0.1:1").is_err());
        assert!(ListenSpec::parse("tls://127.0.0.1").is_err());
    }
}
