//! Socket activation and restarts that refuse nothing: the test plays systemd. It binds
//! the listening socket itself, starts `evloop serve` with it inherited as descriptor 3
//! (`LISTEN_FDS=1` + `LISTEN_PID` with `--listen systemd`, or `--listen fd:3`), keeps a
//! client connecting in a loop (one echo round trip per connection), and restarts the
//! server several times (SIGTERM, wait for the exit, start again on the same socket).
//! Every connection attempt must be served: none refused, none reset. Connections made
//! while no server runs wait in the kernel's backlog for the next one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound of any single wait (only to avoid hanging).
const LIMIT: Duration = Duration::from_secs(30);
/// Restarts per test.
const RESTARTS: usize = 3;
/// How long each server runs between restarts.
const UP: Duration = Duration::from_millis(300);

/// A child server, killed (by its PID) if the test ends early.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// SIGTERM, then waits for the exit; returns the exit status.
    fn terminate(mut self) -> i32 {
        let mut child = self.0.take().expect("running");
        // SAFETY: kill(2) with the pid of our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().expect("exited, not killed by a signal");
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit after SIGTERM");
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Makes `cmd` inherit `fd` as descriptor 3.
fn inherit_as_fd3(cmd: &mut Command, fd: RawFd) {
    // SAFETY: runs in the forked child before exec and calls only dup2(2) and fcntl(2),
    // which are async-signal-safe; `fd` is open in the parent (the test's listener) and so
    // in the child.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would leave FD_CLOEXEC set: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `cmd` (`what` names it in a failure) as a [`Server`] whose stderr lines are
/// echoed to the test's stderr (prefixed `who`) and sent to the returned channel.
fn spawn_echoing(
    cmd: &mut Command,
    what: &str,
    who: &'static str,
) -> (Server, mpsc::Receiver<String>) {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  {who}: {line}");
            let _ = tx.send(line);
        }
    });
    (Server(Some(child)), rx)
}

/// Starts `evloop serve` (echo, 2 loops) with `fd` inherited as descriptor 3 and waits
/// for its ready line. `systemd`: through `--listen systemd` with `LISTEN_FDS=1` and
/// `LISTEN_PID` set by a shell to its own pid just before it execs evloop (so the pid is
/// the server's); otherwise `--listen fd:3`.
fn spawn(fd: RawFd, systemd: bool, engine: &str) -> Server {
    let bin = env!("CARGO_BIN_EXE_evloop");
    let serve = ["serve", "--engine", engine, "--drain-timeout", "5s"];
    let mut cmd = if systemd {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .arg(bin)
            .args(serve)
            .args(["--listen", "systemd", "--reuseport", "--loops", "2"])
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "echo");
        c
    } else {
        let mut c = Command::new(bin);
        c.args(serve).args(["--listen", "fd:3"]);
        if engine == "reactor" {
            c.args(["--loops", "2"]);
        }
        c
    };
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    inherit_as_fd3(&mut cmd, fd);
    let (server, rx) = spawn_echoing(&mut cmd, "evloop", "server");
    loop {
        let line = rx.recv_timeout(LIMIT).expect("the server's ready line");
        if line.starts_with("evloop: serving") {
            assert!(line.contains("fd:3"), "{line}");
            return server;
        }
    }
}

/// What the client saw.
#[derive(Default)]
struct Tally {
    served: AtomicU64,
    /// Served although they were made while no server accepted (restart windows).
    served_while_down: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    other: AtomicU64,
}

/// One connection attempt: connect, send a line, read it back.
fn round_trip<S: Read + Write>(
    connect: &dyn Fn() -> io::Result<S>,
    seq: u64,
    set_timeout: &dyn Fn(&S),
) -> io::Result<()> {
    let mut s = connect()?;
    set_timeout(&s);
    let msg = format!("ping {seq:08}\n");
    s.write_all(msg.as_bytes())?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg.as_bytes() {
        return Err(io::Error::other("wrong echo"));
    }
    Ok(())
}

/// Runs the client in a loop until `stop`, counting into `tally`.
fn client<S: Read + Write>(
    connect: impl Fn() -> io::Result<S>,
    set_timeout: impl Fn(&S),
    stop: &AtomicBool,
    down: &AtomicBool,
    tally: &Tally,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Acquire) {
        seq += 1;
        let was_down = down.load(Ordering::Acquire);
        match round_trip(&connect, seq, &set_timeout) {
            Ok(()) => {
                tally.served.fetch_add(1, Ordering::Relaxed);
                if was_down {
                    tally.served_while_down.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                eprintln!("attempt {seq}: {e}");
                let counter = match e.kind() {
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => &tally.refused,
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => &tally.reset,
                    _ => &tally.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts the server, runs the client across [`RESTARTS`] restarts, and checks the tally.
fn restart_refuses_nothing<S: Read + Write + 'static>(
    fd: RawFd,
    systemd: bool,
    engine: &str,
    connect: impl Fn() -> io::Result<S> + Send + 'static,
    set_timeout: impl Fn(&S) + Send + 'static,
) {
    let mut server = spawn(fd, systemd, engine);
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let c = {
        let (stop, down, tally) = (stop.clone(), down.clone(), tally.clone());
        thread::spawn(move || client(connect, set_timeout, &stop, &down, &tally))
    };
    let started = Instant::now();
    for _ in 0..RESTARTS {
        thread::sleep(UP);
        down.store(true, Ordering::Release);
        assert_eq!(server.terminate(), 0, "exit status after SIGTERM");
        server = spawn(fd, systemd, engine);
        down.store(false, Ordering::Release);
    }
    thread::sleep(UP);
    stop.store(true, Ordering::Release);
    c.join().expect("client thread");
    assert_eq!(server.terminate(), 0);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (served, while_down) = (get(&tally.served), get(&tally.served_while_down));
    let (refused, reset, other) = (get(&tally.refused), get(&tally.reset), get(&tally.other));
    println!(
        "{RESTARTS} restarts in {:?}: {served} connections served ({while_down} of them made \
         while no server was accepting), {refused} refused, {reset} reset, {other} other errors",
        started.elapsed()
    );
    assert_eq!((refused, reset, other), (0, 0, 0), "every attempt is served");
    assert!(served >= 100, "only {served} connections served");
    assert!(while_down >= 1, "no connection was made during a restart window");
}

fn set_tcp_timeout(s: &std::net::TcpStream) {
    let _ = s.set_read_timeout(Some(LIMIT));
    let _ = s.set_write_timeout(Some(LIMIT));
}

#[test]
fn tcp_restart_under_systemd_activation_refuses_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    restart_refuses_nothing(
        listener.as_raw_fd(),
        true,
        "reactor",
        move || std::net::TcpStream::connect_timeout(&addr, LIMIT),
        set_tcp_timeout,
    );
    drop(listener);
}

#[test]
fn unix_restart_on_an_inherited_fd_refuses_nothing_and_keeps_the_file() {
    let path = std::env::temp_dir().join(format!("evloop-activation-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let p = path.clone();
    restart_refuses_nothing(
        listener.as_raw_fd(),
        false,
        "reactor",
        move || std::os::unix::net::UnixStream::connect(&p),
        |s: &std::os::unix::net::UnixStream| {
            let _ = s.set_read_timeout(Some(LIMIT));
            let _ = s.set_write_timeout(Some(LIMIT));
        },
    );
    assert!(path.exists(), "the inherited socket's file was removed");
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn std_engine_tcp_restart_on_an_inherited_fd_refuses_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    restart_refuses_nothing(
        listener.as_raw_fd(),
        false,
        "std",
        move || std::net::TcpStream::connect_timeout(&addr, LIMIT),
        set_tcp_timeout,
    );
    drop(listener);
}

/// `--listen systemd` without LISTEN_FDS, and `fd:N` on something that is not a
/// listening socket, are clear errors.
#[test]
fn inherited_sockets_that_are_not_there_are_errors() {
    let bin = env!("CARGO_BIN_EXE_evloop");
    let out = Command::new(bin)
        .args(["serve", "--listen", "systemd"])
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .output()
        .expect("run evloop");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN_FDS"), "{err}");
    let out = Command::new(bin)
        .args(["serve", "--listen", "fd:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run evloop");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fd:0"), "{err}");
}

/// Under `Type=notify` systemd hears READY=1 once evloop serves and STOPPING=1 when it
/// starts draining: here a datagram socket of the test's plays `$NOTIFY_SOCKET`.
#[test]
fn notify_socket_hears_ready_then_stopping() {
    let path = std::env::temp_dir().join(format!("evloop-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(LIMIT)).expect("timeout");
    let child = Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--loops", "1"])
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn evloop");
    let server = Server(Some(child));
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n") && ready.contains("STATUS=serving echo"), "{ready}");
    assert_eq!(server.terminate(), 0);
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(buf[..n].starts_with(b"STOPPING=1"), "{}", String::from_utf8_lossy(&buf[..n]));
    let _ = std::fs::remove_file(&path);
}

/// `evloop proxy --listen fd:3`: the proxy serves an inherited listener too (here to an
/// echo backend of the test's); `systemd` without `LISTEN_FDS` is an error there as well.
#[test]
fn proxy_serves_an_inherited_listener() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the backend");
    let backend_addr = backend.local_addr().expect("backend address");
    thread::spawn(move || {
        for mut conn in backend.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let fd = listener.as_raw_fd();
    let bin = env!("CARGO_BIN_EXE_evloop");
    let mut cmd = Command::new(bin);
    cmd.args(["proxy", "--listen", "fd:3", "--loops", "1", "--health-check", "off"])
        .args(["--backend", &backend_addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    inherit_as_fd3(&mut cmd, fd);
    let (server, rx) = spawn_echoing(&mut cmd, "evloop proxy", "proxy");
    loop {
        let line = rx.recv_timeout(LIMIT).expect("the proxy's ready line");
        if line.starts_with("evloop: proxying") {
            assert!(line.contains("fd:3"), "{line}");
            break;
        }
    }
    let mut conn = std::net::TcpStream::connect(addr).expect("connect through the proxy");
    set_tcp_timeout(&conn);
    conn.write_all(b"through the proxy\n").expect("write");
    let mut got = [0u8; 18];
    conn.read_exact(&mut got).expect("the backend's echo");
    assert_eq!(&got, b"through the proxy\n");
    drop(conn);
    assert_eq!(server.terminate(), 0);

    let out = Command::new(bin)
        .args(["proxy", "--listen", "systemd", "--backend", &backend_addr.to_string()])
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .output()
        .expect("run evloop proxy");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN_FDS"), "{err}");
}

/// `--accept-proxy` applies to an inherited TCP listener as to a bound one: the PROXY
/// header is consumed and `CLIENT INFO` names the client it gives.
#[test]
fn accept_proxy_on_an_inherited_tcp_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let fd = listener.as_raw_fd();
    let bin = env!("CARGO_BIN_EXE_evloop");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--proto", "redis", "--listen", "fd:3", "--loops", "1", "--accept-proxy"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    inherit_as_fd3(&mut cmd, fd);
    let (server, rx) = spawn_echoing(&mut cmd, "evloop serve", "server");
    loop {
        let line = rx.recv_timeout(LIMIT).expect("the server's ready line");
        if line.starts_with("evloop: serving") {
            break;
        }
    }
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    set_tcp_timeout(&conn);
    conn.write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 4711 6379\r\nCLIENT INFO\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\n\r\n") {
        let n = conn.read(&mut buf).expect("the reply");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    assert!(line.contains(" addr=203.0.113.9:4711 "), "{line}");
    drop(conn);
    assert_eq!(server.terminate(), 0);
}
