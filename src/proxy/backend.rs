//! Backend specifications: the `--backend` syntax (`HOST:PORT` or `unix:PATH`, then
//! options after commas: `weight=N`, `backup`, `tls` (speak TLS to it, verified against
//! `--backend-ca`), `sni=NAME` (the name its certificate must carry; default: the host
//! part when it is a name, else its IP address, matched against the certificate's IP
//! SANs with no SNI sent)) and the `--backends-file` format (one
//! backend per line, blank lines and `#` comments allowed). Parsing only; no sockets.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The largest `weight=` a backend may have.
pub const MAX_WEIGHT: u32 = 1000;

/// Where a backend listens: the reactor's outbound address ([`ConnectAddr`](crate::reactor::ConnectAddr)), a TCP
/// address or a Unix socket path.
pub use crate::reactor::ConnectAddr as BackendAddr;

/// One backend as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// The address as the user wrote it (before the first comma): the backend's name in
    /// logs and in the `backend` label of metrics.
    pub name: String,
    /// The resolved address.
    pub addr: BackendAddr,
    /// Relative share for `weighted` balancing (1..=[`MAX_WEIGHT`], default 1).
    pub weight: u32,
    /// Used only when no non-backup backend is up.
    pub backup: bool,
    /// Speak TLS to it (`,tls`).
    pub tls: bool,
    /// The TLS server name to verify (`,sni=NAME`); `None`: [`tls_name`](Self::tls_name)'s
    /// default.
    pub sni: Option<String>,
}

impl BackendSpec {
    /// The name a TLS backend's certificate is verified against: `sni=`, else the host
    /// part of the address as written (a DNS name, or an IP address: no SNI then).
    /// `None` for a Unix socket backend without `sni=`.
    pub fn tls_name(&self) -> Option<String> {
        if let Some(sni) = &self.sni {
            return Some(sni.clone());
        }
        if matches!(self.addr, BackendAddr::Unix(_)) {
            return None;
        }
        let hostport = self.name.strip_prefix("tcp://").unwrap_or(&self.name);
        let (host, _) = hostport.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Some(host.to_string())
    }
}

impl FromStr for BackendSpec {
    type Err = String;

    /// Parses `ADDR[,weight=N][,backup]` where ADDR is `HOST:PORT`, `[v6]:PORT`,
    /// `tcp://HOST:PORT` or `unix:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut parts = s.split(',');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            return Err(format!("backend `{s}`: empty address"));
        }
        let addr = parse_addr(name).map_err(|e| format!("backend `{name}`: {e}"))?;
        let mut spec = BackendSpec {
            name: name.to_string(),
            addr,
            weight: 1,
            backup: false,
            tls: false,
            sni: None,
        };
        let mut seen_weight = false;
        for opt in parts {
            let opt = opt.trim();
            match opt.split_once('=') {
                Some(("weight", v)) if !seen_weight => {
                    seen_weight = true;
                    spec.weight = match v.trim().parse::<u32>() {
                        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => w,
                        _ => {
                            return Err(format!(
                                "backend `{name}`: weight must be an integer from 1 to {MAX_WEIGHT}, got `{v}`"
                            ));
                        }
                    };
                }
                None if opt == "backup" && !spec.backup => spec.backup = true,
                None if opt == "tls" && !spec.tls => spec.tls = true,
                Some(("sni", v)) if spec.sni.is_none() => {
                    let v = v.trim();
                    if v.is_empty() {
                        return Err(format!("backend `{name}`: empty sni="));
                    }
                    spec.sni = Some(v.to_string());
                }
                _ if opt.is_empty() => return Err(format!("backend `{name}`: empty option")),
                _ if opt == "backup"
                    || opt == "tls"
                    || opt.starts_with("weight=")
                    || opt.starts_with("sni=") =>
                {
                    return Err(format!("backend `{name}`: option `{opt}` given twice"));
                }
                _ => {
                    return Err(format!(
                        "backend `{name}`: unknown option `{opt}` (expected weight=N, backup, tls or sni=NAME)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// Parses a backend address: `unix:PATH` (or `unix://PATH`), `tcp://HOST:PORT`,
/// `HOST:PORT`, `[v6]:PORT`. A host name resolves to its first address.
fn parse_addr(s: &str) -> Result<BackendAddr, String> {
    if let Some(path) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
        if path.is_empty() {
            return Err("empty Unix socket path".into());
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    let hostport = s.strip_prefix("tcp://").unwrap_or(s);
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Ok(BackendAddr::Tcp(a));
    }
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err("expected HOST:PORT or unix:PATH".into());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("expected HOST:PORT (port 0-65535) or unix:PATH".into());
    }
    match hostport.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(BackendAddr::Tcp)
            .ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}

/// Parses a backends file's text: one backend per line in the `--backend` syntax; blank
/// lines and lines starting with `#` (after spaces) are skipped, as is anything after a
/// ` #`. Errors name the line. The same address twice, or no backend at all, is an error.
pub fn parse_backends(text: &str) -> Result<Vec<BackendSpec>, String> {
    let mut out: Vec<BackendSpec> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec: BackendSpec = line.parse().map_err(|e| format!("line {}: {e}", i + 1))?;
        check_unique(&out, &spec).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(spec);
    }
    if out.is_empty() {
        return Err("no backends (every line is blank or a comment)".into());
    }
    Ok(out)
}

/// An error when `spec`'s address is already in `set`.
pub fn check_unique(set: &[BackendSpec], spec: &BackendSpec) -> Result<(), String> {
    match set.iter().find(|b| b.addr == spec.addr) {
        Some(b) => Err(format!("backend `{}` is listed twice (as `{}`)", spec.name, b.name)),
        None => Ok(()),
    }
}

/// Reads and parses a backends file; errors name the file.
pub fn read_backends_file(path: &Path) -> Result<Vec<BackendSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read backends file {}: {e}", path.display()))?;
    parse_backends(&text).map_err(|e| format!("backends file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tls_and_sni() {
        let b: BackendSpec = "127.0.0.1:7001,tls".parse().unwrap();
        assert!(b.tls);
        assert_eq!(b.tls_name().as_deref(), Some("127.0.0.1"));
        let b: BackendSpec = "[::1]:7001,tls".parse().unwrap();
        assert_eq!(b.tls_name().as_deref(), Some("::1"));
        let b: BackendSpec = "localhost:7001,tls,weight=2".parse().unwrap();
        assert_eq!((b.tls, b.weight, b.tls_name().as_deref()), (true, 2, Some("localhost")));
        let b: BackendSpec = "127.0.0.1:7001,tls,sni=db.example".parse().unwrap();
        assert_eq!(b.tls_name().as_deref(), Some("db.example"));
        let b: BackendSpec = "unix:/tmp/b.sock,tls".parse().unwrap();
        assert_eq!(b.tls_name(), None);
        for bad in ["127.0.0.1:1,tls,tls", "127.0.0.1:1,sni=", "127.0.0.1:1,sni=a,sni=b"] {
            assert!(bad.parse::<BackendSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_forms_and_options() {
        let b: BackendSpec = "127.0.0.1:7001,weight=3".parse().unwrap();
        assert_eq!(b.name, "127.0.0.1:7001");
        assert_eq!(b.addr, BackendAddr::Tcp("127.0.0.1:7001".parse().unwrap()));
        assert_eq!((b.weight, b.backup), (3, false));
        let b: BackendSpec = "[::1]:7002, backup".parse().unwrap();
        assert_eq!(b.addr, BackendAddr::Tcp("[::1]:7002".parse().unwrap()));
        assert_eq!((b.weight, b.backup), (1, true));
        let b: BackendSpec = "unix:/tmp/b.sock,weight=2,backup".parse().unwrap();
        assert_eq!(b.addr, BackendAddr::Unix("/tmp/b.sock".into()));
        assert_eq!(b.addr.to_string(), "unix:/tmp/b.sock");
        let b: BackendSpec = "tcp://localhost:7003".parse().unwrap();
        assert!(matches!(b.addr, BackendAddr::Tcp(a) if a.port() == 7003));
    }

    #[test]
    fn rejects_bad_specs_by_name() {
        for (s, want) in [
            ("", "empty address"),
            ("127.0.0.1", "HOST:PORT"),
            ("127.0.0.1:99999", "HOST:PORT"),
            ("127.0.0.1:1,weight=0", "weight must be"),
            ("127.0.0.1:1,weight=x", "weight must be"),
            ("127.0.0.1:1,weight=1001", "weight must be"),
            ("127.0.0.1:1,weight=2,weight=3", "given twice"),
            ("127.0.0.1:1,backup,backup", "given twice"),
            ("127.0.0.1:1,fast", "unknown option `fast`"),
            ("127.0.0.1:1,", "empty option"),
            ("unix:", "empty Unix socket path"),
        ] {
            let e = s.parse::<BackendSpec>().unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn file_format() {
        let text = "# pool\n\n127.0.0.1:7001,weight=2\n  127.0.0.1:7002 # second\n#x\nunix:/tmp/x.sock,backup\n";
        let v = parse_backends(text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].name, "127.0.0.1:7002");
        assert!(v[2].backup);
        let e = parse_backends("127.0.0.1:1\nnonsense\n").unwrap_err();
        assert!(e.starts_with("line 2: backend `nonsense`"), "{e}");
        let e = parse_backends("127.0.0.1:1\n127.0.0.1:1,weight=2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("listed twice"), "{e}");
        assert!(parse_backends("# only\n\n").unwrap_err().contains("no backends"));
        let e = read_backends_file(Path::new("/nonexistent/evloop-backends")).unwrap_err();
        assert!(e.contains("cannot read backends file /nonexistent/evloop-backends"), "{e}");
    }
}
