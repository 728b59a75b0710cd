//! Active health checks (`--health-check tcp|http:/PATH|redis|off`): one thread, off the
//! loops, that every `--health-interval` connects to each backend of the current set with
//! a timeout, optionally asks it something, and feeds the result to the backend's
//! `fall`/`rise` counts. Passive checks (failed connects on the loops) use the same counts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::backend::BackendAddr;
use super::pool::Pool;

/// What an active check does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthCheck {
    /// No active checks (passive ones only; a down backend gets a trial connection per
    /// interval).
    Off,
    /// A TCP (or Unix) connect succeeds.
    #[default]
    Tcp,
    /// `GET PATH HTTP/1.0` answers with a 2xx or 3xx status.
    Http(String),
    /// `PING` answers `+PONG`.
    Redis,
}

impl FromStr for HealthCheck {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(HealthCheck::Off),
            "tcp" => Ok(HealthCheck::Tcp),
            "redis" => Ok(HealthCheck::Redis),
            _ => match s.strip_prefix("http:") {
                Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => {
                    Ok(HealthCheck::Http(p.to_string()))
                }
                _ => Err(format!(
                    "unknown health check `{s}` (expected tcp, http:/PATH, redis or off)"
                )),
            },
        }
    }
}

/// A stream to a backend, TCP or Unix.
enum Probe {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Probe {
    fn connect(addr: &BackendAddr, timeout: Duration) -> std::io::Result<Probe> {
        let p = match addr {
            BackendAddr::Tcp(a) => Probe::Tcp(TcpStream::connect_timeout(a, timeout)?),
            BackendAddr::Unix(path) => Probe::Unix(UnixStream::connect(path)?),
        };
        match &p {
            Probe::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
            Probe::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
        }
        Ok(p)
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Probe::Tcp(s) => s,
            Probe::Unix(s) => s,
        }
    }

    /// Sends `request`, then reads until `until` holds, EOF, or 4 KiB.
    fn ask(&mut self, request: &[u8], until: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<u8>> {
        let s = self.stream();
        s.write_all(request)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !until(&buf) && buf.len() < 4096 {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(buf)
    }
}

/// A byte stream both ways.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Runs one check of `addr`; `Err` says why it failed.
pub fn check(kind: &HealthCheck, addr: &BackendAddr, timeout: Duration) -> Result<(), String> {
    let mut p = Probe::connect(addr, timeout).map_err(|e| format!("connect: {e}"))?;
    match kind {
        HealthCheck::Off | HealthCheck::Tcp => Ok(()),
        HealthCheck::Redis => {
            let r = p.ask(b"PING\r\n", |b| b.contains(&b'\n')).map_err(|e| format!("PING: {e}"))?;
            if r.starts_with(b"+PONG") {
                Ok(())
            } else {
                Err(format!("PING answered {:?}", String::from_utf8_lossy(&r).trim_end()))
            }
        }
        HealthCheck::Http(path) => {
            let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let r = p
                .ask(req.as_bytes(), |b| b.windows(2).any(|w| w == b"\r\n"))
                .map_err(|e| format!("GET {path}: {e}"))?;
            let line = r.split(|&c| c == b'\r').next().unwrap_or(&[]);
            let status = line.split(|&c| c == b' ').nth(1).unwrap_or(&[]);
            match status.first() {
                Some(b'2' | b'3') if status.len() == 3 => Ok(()),
                _ => Err(format!("GET {path} answered {:?}", String::from_utf8_lossy(line))),
            }
        }
    }
}

/// The running checker; stops (and joins) when dropped or on [`Checker::stop`].
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts checking every backend of `pool`'s current set every `interval`, each
    /// with `timeout` (at most the interval).
    pub fn start(
        pool: Arc<Pool>,
        kind: HealthCheck,
        interval: Duration,
        timeout: Duration,
    ) -> std::io::Result<Checker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new().name("evloop-health".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let set = pool.current();
                for b in &set.backends {
                    match check(&kind, &b.spec().addr, timeout) {
                        Ok(()) => b.success(pool.health()),
                        Err(why) => {
                            log::debug!("health check of {}: {why}", b.spec().name);
                            b.failure(pool.health(), &why)
                        }
                    }
                }
                // Sleep in short steps so that stop is prompt.
                while !flag.load(Ordering::Relaxed) && started.elapsed() < interval {
                    thread::sleep(
                        interval.saturating_sub(started.elapsed()).min(Duration::from_millis(50)),
                    );
                }
            }
        })?;
        Ok(Checker { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_kinds() {
        assert_eq!("tcp".parse::<HealthCheck>(), Ok(HealthCheck::Tcp));
        assert_eq!("off".parse::<HealthCheck>(), Ok(HealthCheck::Off));
        assert_eq!("redis".parse::<HealthCheck>(), Ok(HealthCheck::Redis));
        assert_eq!(
            "http:/healthz".parse::<HealthCheck>(),
            Ok(HealthCheck::Http("/healthz".into()))
        );
        for bad in ["http:", "http:healthz", "udp", "http:/a b"] {
            assert!(bad.parse::<HealthCheck>().unwrap_err().contains("unknown health check"));
        }
    }

    /// A one-shot server answering `reply` to whatever comes first.
    fn answer(reply: &'static [u8]) -> BackendAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b);
                let _ = s.write_all(reply);
            }
        });
        BackendAddr::Tcp(addr)
    }

    #[test]
    fn checks_against_real_sockets() {
        let t = Duration::from_secs(2);
        assert_eq!(check(&HealthCheck::Redis, &answer(b"+PONG\r\n"), t), Ok(()));
        assert!(
            check(&HealthCheck::Redis, &answer(b"-ERR no\r\n"), t).unwrap_err().contains("-ERR no")
        );
        let http = HealthCheck::Http("/h".into());
        assert_eq!(check(&http, &answer(b"HTTP/1.1 204 No Content\r\n\r\n"), t), Ok(()));
        assert!(
            check(&http, &answer(b"HTTP/1.1 503 Busy\r\n\r\n"), t).unwrap_err().contains("503")
        );
        // Nothing listening: refused.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = BackendAddr::Tcp(l.local_addr().unwrap());
        drop(l);
        assert!(check(&HealthCheck::Tcp, &dead, t).unwrap_err().starts_with("connect:"));
    }
}
