//! The `sd_notify(3)` protocol, written out: a service started by systemd with
//! `Type=notify` tells it when it is ready (`READY=1`) and when it begins to stop
//! (`STOPPING=1`) by sending one datagram to the Unix socket named in `$NOTIFY_SOCKET`
//! (a path, or a name in the abstract namespace when it starts with `@`). Outside systemd
//! the variable is unset and every call does nothing.
//!
//! ```no_run
//! evloop::serve::notify::ready("serving echo on 127.0.0.1:5000");
//! evloop::serve::notify::stopping();
//! ```

use std::io;
use std::os::unix::net::UnixDatagram;

/// The variable systemd sets to the notification socket's address.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, e.g. `"READY=1"`) to the
/// socket `$NOTIFY_SOCKET` names. `Ok(false)` when the variable is unset (not started
/// by systemd, or not as `Type=notify`); `Ok(true)` once the datagram is sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(addr) if !addr.is_empty() => {
            send_to(&addr.to_string_lossy(), state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to the notification socket `addr`: a path, or an
/// abstract name when it starts with `@` (Linux). Errors name the socket.
pub fn send_to(addr: &str, state: &str) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("sd_notify to {addr}: {e}"));
    let sock = UnixDatagram::unbound().map_err(ctx)?;
    if let Some(name) = addr.strip_prefix('@') {
        send_abstract(&sock, name.as_bytes(), state).map_err(ctx)?;
    } else {
        sock.send_to(state.as_bytes(), addr).map_err(ctx)?;
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names exist on Linux only"))
}

/// `READY=1` with a `STATUS=` line: the service is serving. A failure is logged (at
/// debug level when there is no systemd to tell) and otherwise ignored.
pub fn ready(status: &str) {
    log_failure(notify(&format!("READY=1\nSTATUS={status}")));
}

/// `STOPPING=1`: the service has begun to stop (draining). Failures as for [`ready`].
pub fn stopping() {
    log_failure(notify("STOPPING=1\nSTATUS=draining"));
}

fn log_failure(r: io::Result<bool>) {
    match r {
        Ok(true) => log::debug!("sd_notify sent"),
        Ok(false) => {}
        Err(e) => log::warn!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let path = std::env::temp_dir().join(format!("evloop-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1\nSTATUS=hi").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=hi");
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("evloop-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it() {
        let e = send_to("/nonexistent/evloop/notify.sock", "READY=1").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/evloop/notify.sock"), "{e}");
    }
}
