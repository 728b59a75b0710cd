//! The command line of `evloop`: clap definitions of `serve` and `load`, value parsers
//! (sizes, durations, timeouts, modes, addresses), and the mapping from flags to
//! [`Settings`]/[`Flags`] (for [`run`], which owns the server's lifecycle) and
//! to [`LoadConfig`]. `--config FILE` ([`config`]) and the packaging subcommands
//! (`completions`, `man`, `check-config`; [`extras`]) live in their own files.

pub mod config;
pub mod edge;
pub mod extras;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod size;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use evloop::load::{self, LoadConfig, LoadProto};
use evloop::net::tls::{ALPN_HTTP1, DEFAULT_HANDSHAKE_TIMEOUT, TlsConfig, TlsFiles, TlsSetup};
use evloop::net::{ListenAddr, ListenSpec};
use evloop::proto::echo::Echo;
use evloop::proto::frame::{Frame, FrameConfig};
use evloop::proto::http::{Http, HttpConfig};
use evloop::proto::resp::{Redis, RespConfig};
use evloop::reactor::Balance;
use evloop::serve::capture::Capture;
use evloop::serve::run::{Flags, run};
use evloop::serve::{Engine, ReactorTuning, Settings};
use size::{parse_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "evloop",
    version = extras::VERSION,
    about = "An evio-style event-loop TCP server: echo, HTTP/1.1, Redis and framed protocols",
    long_about = "evloop runs N event-loop threads, each with its own epoll poller, eventfd waker and \
                  connections, and serves a bundled protocol on them. `--engine std` runs the same \
                  protocol on a std::net thread-per-connection baseline for comparison.\n\n\
                  Logging: -v / -vv for more, -q for errors only, or RUST_LOG=evloop=debug."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only log errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a protocol until SIGINT or SIGTERM.
    ///
    /// Examples:
    ///   evloop serve                                  # echo on 127.0.0.1:5000, one loop per CPU
    ///   evloop serve --loops 4 --reuseport --pin
    ///   evloop serve --proto http --loops 1           # HTTP on 127.0.0.1:8080
    ///   evloop serve --proto redis                    # RESP2 on 127.0.0.1:6380
    ///   evloop serve --proto frame --listen 0.0.0.0:5001
    ///   evloop serve --proto mqtt                     # MQTT broker on 127.0.0.1:1883 (engine reactor only)
    ///   evloop serve --engine std                     # the thread-per-connection baseline
    ///   evloop serve --proto redis --listen 127.0.0.1:6380 --listen unix:evloop.sock \
    ///                --listen udp://127.0.0.1:6380      # one keyspace on all three
    ///   evloop serve --proto http --metrics 127.0.0.1:9100 --max-conns 10000
    ///   evloop serve --proto http --listen 127.0.0.1:8080 --listen tls://127.0.0.1:8443 \
    ///                --tls-cert cert.pem --tls-key key.pem   # HTTPS too; SIGHUP reloads them
    #[command(verbatim_doc_comment)]
    Serve(Box<ServeArgs>),
    /// Generate load against a server and report requests/s and latency.
    ///
    /// Client connections run on evloop's own reactor; every reply is checked, and any
    /// wrong reply makes the exit code 1. Examples:
    ///   evloop load 127.0.0.1:5000 -c 50 -d 10s                    # 6-byte echo ping-pong
    ///   evloop load 127.0.0.1:8080 --proto http -c 50 --pipeline 16
    ///   evloop load 127.0.0.1:6380 --proto redis --command set --size 64 --json
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    ///
    /// Examples:
    ///   evloop completions bash > ~/.local/share/bash-completion/completions/evloop
    ///   evloop completions fish > ~/.config/fish/completions/evloop.fish
    #[command(verbatim_doc_comment)]
    Completions(extras::CompletionsArgs),
    /// Print the man page (roff) on stdout: `evloop man > evloop.1`.
    Man,
    /// Check a --config file without starting anything (exit 0, or 1 with the error).
    CheckConfig(config::CheckConfigArgs),
    /// Proxy TCP (and Unix) connections to backends: an L4 load balancer with health
    /// checks, reload on SIGHUP and per-backend byte metrics.
    ///
    /// Examples:
    ///   evloop proxy --listen 127.0.0.1:6000 --backend 127.0.0.1:7001 --backend 127.0.0.1:7002
    ///   evloop proxy --backend 10.0.0.1:6379,weight=3 --backend 10.0.0.2:6379 --balance weighted
    ///   evloop proxy --backend 127.0.0.1:7001 --backend 127.0.0.1:7002,backup --health-check redis
    ///   evloop proxy --backends-file backends.txt --metrics 127.0.0.1:9100   # kill -HUP to reload
    #[command(verbatim_doc_comment)]
    Proxy(Box<proxy::ProxyArgs>),
    /// Replay the client side of a capture (evloop serve --capture) against a server:
    /// one connection per captured client stream, with the recorded gaps scaled by
    /// --speed; reports streams, bytes sent and reply bytes.
    ///
    /// Example:
    ///   evloop replay traffic.pcap --target 127.0.0.1:6380 --speed 0
    #[command(verbatim_doc_comment)]
    Replay(replay::ReplayArgs),
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Server address, HOST:PORT.
    #[arg(value_parser = parse_socket_addr, value_name = "ADDR")]
    addr: SocketAddr,
    /// Protocol to speak.
    #[arg(long, value_enum, default_value_t = ProtoKind::Echo)]
    proto: ProtoKind,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 50, value_name = "N", value_parser = at_least_one)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least_one)]
    pipeline: usize,
    /// Message size (echo, frame) or value size (redis set), bytes or K/M.
    #[arg(long, default_value = "6", value_parser = parse_size, value_name = "SIZE")]
    size: usize,
    /// Measured duration (e.g. 10s, 500ms, 2m).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    duration: Duration,
    /// Unmeasured warmup before it.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    warmup: Duration,
    /// Client event-loop threads.
    #[arg(short = 't', long, default_value_t = 1, value_name = "N", value_parser = at_least_one)]
    threads: usize,
    /// HTTP path to GET.
    #[arg(long, default_value = "/")]
    path: String,
    /// Redis command to send.
    #[arg(long = "command", value_parser = ["ping", "set", "get"], default_value = "ping")]
    redis_command: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Read flags from this TOML file (keys are the long flag names, e.g.
    /// `proto = "redis"`, `listen = ["127.0.0.1:6380"]`, `idle-timeout = "30s"`);
    /// flags on the command line override it. See `evloop check-config`. SIGHUP re-reads
    /// it: log level and TLS files apply at once, other changes need a restart.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Protocol to serve.
    #[arg(long, value_enum, default_value_t = ProtoKind::Echo)]
    proto: ProtoKind,
    #[command(flatten)]
    net: NetArgs,
    /// TLS flags (boxed: they are rarely given).
    #[command(flatten)]
    tls: Box<TlsArgs>,
    /// How the acceptor picks a loop (without --reuseport).
    /// Default: round-robin.
    #[arg(long, value_enum)]
    balance: Option<BalanceArg>,
    /// Engine: the event-loop reactor, or the std::net thread-per-connection baseline
    /// (or, in a build with the `tokio` feature, one current-thread tokio runtime per loop).
    /// A flag the chosen engine would ignore is refused. `--proto mqtt` runs on the reactor
    /// only (std and tokio refuse it).
    #[arg(long, default_value = "reactor", value_parser = engine_parser())]
    engine: Engine,
    /// http: largest request head (request line + headers), bytes or K/M.
    #[arg(long, default_value = "8K", value_parser = parse_size, value_name = "SIZE")]
    max_head_bytes: usize,
    /// http: most header fields in one request.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_headers: usize,
    /// http: largest request body (Content-Length or chunked total).
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    max_body: usize,
    /// redis: largest bulk string in a request.
    #[arg(long, default_value = "16M", value_parser = parse_size, value_name = "SIZE")]
    max_bulk: usize,
    /// redis: most elements in one multibulk request.
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "N")]
    max_multibulk: usize,
    /// Close connections idle (no bytes either way) this long; `off` disables.
    /// Default: off for echo and frame, 60s for http and redis (engines reactor, std).
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    idle_timeout: Option<Timeout>,
    /// http: a request head must be complete within this long of its first byte
    /// (slowloris defence), else `408 Request Timeout` and a close; `off` disables.
    /// Default: 10s (engine reactor).
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    header_timeout: Option<Timeout>,
    /// http: while a request body arrives, each read must come within this long of the
    /// last, else `408 Request Timeout` and a close; `off` disables. Default: 60s
    /// (engine reactor).
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    body_timeout: Option<Timeout>,
    /// Hard limit of a connection's pending output (as Redis's client-output-buffer-limit):
    /// a connection above it is closed at once and counted
    /// (evloop_output_limit_closes_total); redis also refuses an MGET whose reply would
    /// exceed it. `off` disables. Default: 64M (engines reactor, std).
    #[arg(long, value_parser = parse_size_or_off, value_name = "SIZE")]
    max_output: Option<SizeOrOff>,
    /// Soft limit of a connection's pending output: closed when above it for
    /// --max-output-soft-seconds. Off by default (engine reactor).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    max_output_soft: Option<usize>,
    /// The period of --max-output-soft.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", requires = "max_output_soft")]
    max_output_soft_seconds: u64,
    /// frame: largest frame payload accepted.
    #[arg(long, default_value = "16M", value_parser = parse_size, value_name = "SIZE")]
    max_frame: usize,
    /// mqtt: largest MQTT packet accepted (bigger ones close the connection).
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    max_packet: usize,
}

/// The listener, loop and socket flags `serve` and `proxy` share.
#[derive(Args, Debug)]
pub struct NetArgs {
    /// Address to listen on (repeatable; all are served by the same loops):
    /// `HOST:PORT`, `[::1]:PORT`, `tcp://HOST:PORT`, `unix:/path/to.sock`,
    /// `udp://HOST:PORT` (serve only), `tls://HOST:PORT` (TLS over TCP; needs
    /// --tls-cert and --tls-key, engine reactor), `fd:N` (an inherited listening socket,
    /// descriptor N), `systemd` (every socket systemd's socket activation passed).
    /// Default: 127.0.0.1 with the protocol's port (echo 5000, http 8080, redis 6380,
    /// frame 5001, mqtt 1883; proxy 6000).
    #[arg(short, long = "listen", value_name = "ADDR", value_parser = ListenSpec::parse)]
    listen: Vec<ListenSpec>,
    /// Permission bits of Unix socket files, in octal (e.g. 660).
    #[arg(long, value_parser = parse_mode, value_name = "OCTAL")]
    unix_mode: Option<u32>,
    /// Event-loop threads; 0 = one per CPU.
    #[arg(long, default_value_t = 0, value_name = "N")]
    loops: usize,
    /// One SO_REUSEPORT listener per loop (the kernel spreads connections) instead of
    /// one acceptor thread handing connections to loops.
    #[arg(long)]
    reuseport: bool,
    /// Pin loop i to CPU i (modulo the CPUs available).
    #[arg(long)]
    pin: bool,
    /// listen(2) backlog.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    backlog: i32,
    /// Leave Nagle's algorithm on (TCP_NODELAY is set by default).
    #[arg(long)]
    no_nodelay: bool,
    /// Per-loop read buffer size (bytes, or with K/M suffix).
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "SIZE")]
    read_buffer: usize,
    /// Stop reading a connection whose pending output exceeds this.
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    high_watermark: usize,
    /// Resume reading once pending output is down to this.
    #[arg(long, default_value = "256K", value_parser = parse_size, value_name = "SIZE")]
    low_watermark: usize,
    /// On SIGINT/SIGTERM: stop accepting, finish requests in flight and flush output,
    /// close idle connections, and exit within this long (a second signal exits at once).
    /// Default: 5s (engines reactor, std; the tokio engine stops at once).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Option<Duration>,
    /// Most connections open at once; beyond it new connections are closed at once
    /// (engines reactor, std).
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// TCP keepalive: idle time before the first probe (off by default).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    keepalive: Option<Duration>,
    /// TCP keepalive: interval between probes.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    keepalive_interval: Duration,
    /// SO_RCVBUF of the listening sockets (inherited by connections).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    recv_buffer: Option<usize>,
    /// SO_SNDBUF of the listening sockets (inherited by connections).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    send_buffer: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (protocol counters on every engine;
    /// connection counters on the reactor; per-backend series in proxy).
    #[arg(long, value_parser = parse_socket_addr, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Log a one-line summary of the counters this often (info level).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    stats_interval: Option<Duration>,
    #[command(flatten)]
    edge: edge::EdgeArgs,
}

impl NetArgs {
    /// The engine-neutral settings these flags ask for (timeouts left unset).
    fn settings(&self) -> Settings {
        Settings {
            listen: self.listen.iter().flat_map(|l| l.addrs.iter().cloned()).collect(),
            loops: self.loops,
            reuseport: self.reuseport,
            nodelay: !self.no_nodelay,
            unix_mode: self.unix_mode,
            backlog: self.backlog,
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
            keepalive: self.keepalive.map(|idle| (idle, self.keepalive_interval)),
            idle_timeout: None,
            request_timeout: None,
            body_timeout: None,
            max_output: Settings::default().max_output,
            max_output_soft: None,
            max_conns: self.max_conns.filter(|&n| n > 0),
            reactor: ReactorTuning {
                pin: self.pin,
                read_buffer: self.read_buffer,
                high_watermark: self.high_watermark,
                low_watermark: self.low_watermark,
                accept_proxy: self.edge.accept_proxy,
                proxy_header_timeout: self.edge.header_timeout(None),
                ..Settings::default().reactor
            },
            tls: None,
        }
    }

    /// The indices (in [`settings`](Self::settings)' `listen`) of the `tls://` listeners.
    fn tls_listeners(&self) -> Vec<usize> {
        let mut listeners = Vec::new();
        let mut index = 0;
        for spec in &self.listen {
            if spec.tls {
                listeners.extend(index..index + spec.addrs.len());
            }
            index += spec.addrs.len();
        }
        listeners
    }
}

/// The TLS flags of `serve` and `proxy`.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// TLS: certificate chain (PEM, the server's certificate first) for tls:// listeners.
    /// Re-read on SIGHUP (new connections use the new one).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS: private key (PEM: PKCS#8, PKCS#1 or SEC1) of the certificate. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// TLS: CA certificates (PEM); clients must present a certificate issued by one (mTLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// TLS: close a connection whose handshake is not complete this long after accept;
    /// `off` disables. Default: 10s.
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    handshake_timeout: Option<Timeout>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoKind {
    /// Every byte back.
    Echo,
    /// HTTP/1.1: GET / and /plaintext, POST /echo, keep-alive, pipelining.
    Http,
    /// Redis RESP2: strings with expiry, pipelining; works with redis-cli.
    Redis,
    /// 4-byte big-endian length-prefixed frames, echoed whole.
    Frame,
    /// MQTT 3.1.1 broker (port 1883): QoS 0/1, retained, wills, persistent sessions;
    /// engine reactor only (serve only, not load).
    Mqtt,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum BalanceArg {
    RoundRobin,
    LeastConn,
    SourceHash,
}

/// A count that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// A size flag's value: a size, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct SizeOrOff(Option<usize>);

fn parse_size_or_off(s: &str) -> Result<SizeOrOff, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(SizeOrOff(None));
    }
    parse_size(s).map(|n| SizeOrOff(Some(n)))
}

/// A timeout flag's value: a duration, or none (`off` / `0`).
#[derive(Debug, Clone, Copy)]
struct Timeout(pub Option<Duration>);

fn parse_timeout(s: &str) -> Result<Timeout, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Timeout(None));
    }
    let d = parse_duration(s)?;
    Ok(Timeout((!d.is_zero()).then_some(d)))
}

/// Octal permission bits, e.g. `660` or `0o600`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("invalid mode {s:?}: expected octal permission bits like 660")),
    }
}

/// `HOST:PORT`, `[V6]:PORT` or `tcp://HOST:PORT` (the first address it resolves to),
/// parsed as a TCP [`ListenAddr`] is.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    match ListenAddr::parse_all(s)?.into_iter().next() {
        Some(ListenAddr::Tcp(a)) => Ok(a),
        _ => Err(format!("invalid address {s:?}: expected HOST:PORT, e.g. 127.0.0.1:5000")),
    }
}

/// `--engine`: the names of the engines this build has.
fn engine_parser() -> impl clap::builder::TypedValueParser<Value = Engine> {
    use clap::builder::TypedValueParser as _;
    let names: Vec<&'static str> = Engine::ALL.iter().map(|e| e.name()).collect();
    clap::builder::PossibleValuesParser::new(names)
        .try_map(|name| Engine::from_name(&name).ok_or_else(|| format!("unknown engine {name:?}")))
}

/// `evloop load`: runs the load and prints its report.
pub fn run_load(args: LoadArgs) -> Result<(), String> {
    let config = LoadConfig {
        addr: args.addr,
        proto: match args.proto {
            ProtoKind::Echo => LoadProto::Echo,
            ProtoKind::Http => LoadProto::Http,
            ProtoKind::Redis => LoadProto::Redis,
            ProtoKind::Frame => LoadProto::Frame,
            ProtoKind::Mqtt => return Err("evloop load does not speak mqtt yet".into()),
        },
        connections: args.connections,
        pipeline: args.pipeline,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        threads: args.threads,
        path: args.path,
        redis_command: args.redis_command,
        progress: !args.json,
    };
    let report = load::run(&config).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text());
    }
    if report.errors > 0 || report.dropped > 0 {
        return Err(format!(
            "{} wrong replies, {} connections dropped",
            report.errors, report.dropped
        ));
    }
    if report.requests == 0 {
        return Err("no replies were received in the measured window".into());
    }
    Ok(())
}

/// The TLS part of `evloop serve`: which listeners are `tls://`, and the certificate,
/// key and client CA loaded from their files (ALPN `http/1.1` for `--proto http`).
/// `None` without `tls://` listeners. Errors are one line naming the flag or file.
fn tls_setup(args: &ServeArgs) -> Result<Option<TlsSetup>, String> {
    let alpn = match args.proto {
        ProtoKind::Http => vec![ALPN_HTTP1.to_vec()],
        _ => Vec::new(),
    };
    let engine = (args.engine != Engine::Reactor).then(|| args.engine.to_string());
    args.tls.setup(args.net.tls_listeners(), alpn, engine)
}

impl TlsArgs {
    /// The TLS setup for the `tls://` listeners at `listeners` (`None` when there are
    /// none), offering `alpn`; shared by `serve` and `proxy`. `engine` names a
    /// non-reactor engine, which cannot serve TLS. Errors are one line naming the flag
    /// or file.
    /// The certificate files named, when both --tls-cert and --tls-key are (what SIGHUP
    /// re-reads, for `serve` and `proxy` alike).
    pub(crate) fn files(&self) -> Option<TlsFiles> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return None;
        };
        Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        })
    }

    fn setup(
        &self,
        listeners: Vec<usize>,
        alpn: Vec<Vec<u8>>,
        engine: Option<String>,
    ) -> Result<Option<TlsSetup>, String> {
        if listeners.is_empty() {
            if self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_client_ca.is_some() {
                log::warn!("--tls-cert/--tls-key/--tls-client-ca are unused: no tls:// listener");
            }
            return Ok(None);
        }
        let Some(files) = self.files() else {
            let missing = if self.tls_cert.is_none() { "--tls-cert" } else { "--tls-key" };
            return Err(format!(
                "a tls:// listener needs {missing} FILE (and --tls-cert and --tls-key both)"
            ));
        };
        if let Some(engine) = engine {
            return Err(format!(
                "tls:// listeners are served by the reactor engine only, not the {engine} engine"
            ));
        }
        let config = TlsConfig::load(files, alpn)?;
        let mut setup = TlsSetup::new(listeners, Arc::new(config));
        setup.handshake_timeout = match self.handshake_timeout {
            Some(t) => t.0,
            None => Some(DEFAULT_HANDSHAKE_TIMEOUT),
        };
        Ok(Some(setup))
    }
}

/// `evloop serve`: maps the flags to [`Settings`] and [`Flags`] and hands over to
/// [`run`], which owns the lifecycle.
pub fn run_serve(args: ServeArgs) -> Result<(), String> {
    let mut settings = args.net.settings();
    if args.net.edge.accept_proxy && args.engine != Engine::Reactor {
        return Err("--accept-proxy needs --engine reactor".into());
    }
    let header = args.header_timeout.and_then(|t| t.0);
    settings.reactor.proxy_header_timeout = args.net.edge.header_timeout(header);
    let capture = match args.net.edge.capture_spec() {
        // Refused before the capture starts (it would create its file).
        Some(_) if matches!(args.proto, ProtoKind::Mqtt) => {
            return Err(evloop::serve::mqtt::CAPTURE_REFUSED.into());
        }
        Some(_) if args.engine != Engine::Reactor => {
            return Err("--capture needs --engine reactor".into());
        }
        Some(spec) => Some(Capture::start(&spec).map_err(|e| format!("--capture: {e}"))?),
        None => None,
    };
    settings.reactor.capture = capture;
    settings.tls = tls_setup(&args)?;
    let flags = Flags {
        idle_timeout: args.idle_timeout.map(|t| t.0),
        header_timeout: args.header_timeout.map(|t| t.0),
        body_timeout: args.body_timeout.map(|t| t.0),
        max_output: args.max_output.map(|m| m.0),
        max_output_soft: args
            .max_output_soft
            .map(|soft| (soft, Duration::from_secs(args.max_output_soft_seconds))),
        drain_timeout: args.net.drain_timeout,
        balance: args.balance.map(|b| match b {
            BalanceArg::RoundRobin => Balance::RoundRobin,
            BalanceArg::LeastConn => Balance::LeastConnections,
            BalanceArg::SourceHash => Balance::SourceHash,
        }),
        metrics: args.net.metrics,
        stats_interval: args.net.stats_interval,
        reread: reload::rereader("serve", args.config.as_ref()),
    };
    let engine = args.engine;
    match args.proto {
        ProtoKind::Echo => run(engine, Echo, settings, flags),
        ProtoKind::Http => {
            let limits = HttpConfig {
                max_head_bytes: args.max_head_bytes,
                max_headers: args.max_headers,
                max_body: args.max_body,
            };
            run(engine, Http::new(limits), settings, flags)
        }
        ProtoKind::Redis => {
            let max_output = args.max_output.map_or(settings.max_output, |m| m.0);
            let limits = RespConfig {
                max_bulk: args.max_bulk,
                max_multibulk: args.max_multibulk,
                // Stop a pipeline's replies near the high watermark; refuse one reply
                // over the output limit before it is built.
                output_budget: args.net.high_watermark.max(1),
                max_reply: max_output.unwrap_or(usize::MAX),
                ..RespConfig::default()
            };
            run(engine, Redis::new(limits), settings, flags)
        }
        ProtoKind::Frame => {
            run(engine, Frame::new(FrameConfig { max_frame: args.max_frame }), settings, flags)
        }
        ProtoKind::Mqtt => {
            let mut config = evloop::broker::MqttConfig::default();
            config.limits.max_packet = args.max_packet;
            evloop::serve::mqtt::run(engine, config, settings, flags)
        }
    }
}
