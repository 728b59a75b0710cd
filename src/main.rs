//! `evloop`: the command-line server built on the evloop reactor.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log::{debug, error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use evloop::load::{self, LoadConfig, LoadProto};
use evloop::metrics::ProtoMetrics;
use evloop::proto::Protocol;
use evloop::proto::echo::Echo;
use evloop::proto::frame::{Frame, FrameConfig};
use evloop::proto::http::{Http, HttpConfig};
use evloop::proto::resp::{Redis, RespConfig};
use evloop::proto::size::{parse_duration, parse_size};
use evloop::reactor::ServerHandle;
use evloop::reactor::{Balance, Config, ListenAddr};
use evloop::serve::{self, Engine};

#[derive(Parser, Debug)]
#[command(
    name = "evloop",
    version,
    about = "An evio-style event-loop TCP server: echo, HTTP/1.1, Redis and framed protocols",
    long_about = "evloop runs N event-loop threads, each with its own epoll poller, eventfd waker and \
                  connections, and serves a bundled protocol on them. `--engine std` runs the same \
                  protocol on a std::net thread-per-connection baseline for comparison.\n\n\
                  Logging: -v / -vv for more, -q for errors only, or RUST_LOG=evloop=debug."
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only log errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a protocol until SIGINT or SIGTERM.
    ///
    /// Examples:
    ///   evloop serve                                  # echo on 127.0.0.1:5000, one loop per CPU
    ///   evloop serve --loops 4 --reuseport --pin
    ///   evloop serve --proto http --loops 1           # HTTP on 127.0.0.1:8080
    ///   evloop serve --proto redis                    # RESP2 on 127.0.0.1:6380
    ///   evloop serve --proto frame --listen 0.0.0.0:5001
    ///   evloop serve --engine std                     # the thread-per-connection baseline
    ///   evloop serve --proto redis --listen 127.0.0.1:6380 --listen unix:evloop.sock \
    ///                --listen udp://127.0.0.1:6380      # one keyspace on all three
    ///   evloop serve --proto http --metrics 127.0.0.1:9100 --max-conns 10000
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Generate load against a server and report requests/s and latency.
    ///
    /// Client connections run on evloop's own reactor; every reply is checked, and any
    /// wrong reply makes the exit code 1. Examples:
    ///   evloop load 127.0.0.1:5000 -c 50 -d 10s                    # 6-byte echo ping-pong
    ///   evloop load 127.0.0.1:8080 --proto http -c 50 --pipeline 16
    ///   evloop load 127.0.0.1:6380 --proto redis --command set --size 64 --json
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Server address, HOST:PORT.
    #[arg(value_parser = parse_one_addr, value_name = "ADDR")]
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
struct ServeArgs {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value_t = ProtoKind::Echo)]
    proto: ProtoKind,
    /// Address to listen on (repeatable; all are served by the same loops):
    /// `HOST:PORT`, `[::1]:PORT`, `tcp://HOST:PORT`, `unix:/path/to.sock`,
    /// `udp://HOST:PORT`. Default:
    /// 127.0.0.1 with the protocol's port (echo 5000, http 8080, redis 6380, frame 5001).
    #[arg(short, long = "listen", value_name = "ADDR", value_parser = ListenAddr::parse_all)]
    listen: Vec<Vec<ListenAddr>>,
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
    /// How the acceptor picks a loop (without --reuseport).
    #[arg(long, value_enum, default_value_t = BalanceArg::RoundRobin)]
    balance: BalanceArg,
    /// Engine: the event-loop reactor, or the std::net thread-per-connection baseline
    /// (or, in a build with the `tokio` feature, one current-thread tokio runtime per loop).
    #[arg(long, value_enum, default_value_t = EngineArg::Reactor)]
    engine: EngineArg,
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
    /// On SIGINT/SIGTERM: stop accepting, finish requests in flight and flush output,
    /// close idle connections, and exit within this long (a second signal exits at once).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
    /// Close connections idle (no bytes either way) this long; `off` disables.
    /// Default: off for echo and frame, 60s for http and redis.
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    idle_timeout: Option<Timeout>,
    /// http: close a connection whose request head is not complete within this long
    /// (slowloris defence); `off` disables.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, value_name = "DURATION")]
    header_timeout: Timeout,
    /// Most connections open at once; beyond it new connections are closed at once.
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
    /// Serve Prometheus metrics at http://ADDR/metrics (reactor engine).
    #[arg(long, value_parser = parse_one_addr, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Log a one-line summary of the counters this often (info level).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    stats_interval: Option<Duration>,
    /// frame: largest frame payload accepted.
    #[arg(long, default_value = "16M", value_parser = parse_size, value_name = "SIZE")]
    max_frame: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProtoKind {
    /// Every byte back.
    Echo,
    /// HTTP/1.1: GET / and /plaintext, POST /echo, keep-alive, pipelining.
    Http,
    /// Redis RESP2: strings with expiry, pipelining; works with redis-cli.
    Redis,
    /// 4-byte big-endian length-prefixed frames, echoed whole.
    Frame,
}

impl ProtoKind {
    fn default_port(self) -> u16 {
        match self {
            ProtoKind::Echo => 5000,
            ProtoKind::Http => 8080,
            ProtoKind::Redis => 6380,
            ProtoKind::Frame => 5001,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum BalanceArg {
    RoundRobin,
    LeastConn,
    SourceHash,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum EngineArg {
    Reactor,
    Std,
    #[cfg(feature = "tokio")]
    Tokio,
}

/// Parses `HOST:PORT`, `[V6]:PORT` or `tcp://HOST:PORT` into its socket addresses.
fn parse_addr(s: &str) -> Result<Vec<SocketAddr>, String> {
    let hostport = s.strip_prefix("tcp://").unwrap_or(s);
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|e| {
            format!("invalid address {s:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:5000)")
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("address {s:?} resolves to nothing"));
    }
    Ok(addrs)
}

/// A count that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// A timeout flag's value: a duration, or none (`off` / `0`).
#[derive(Debug, Clone, Copy)]
struct Timeout(Option<Duration>);

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

/// Like [`parse_addr`], keeping the first address.
fn parse_one_addr(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s).map(|v| v[0])
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Load(args) => run_load(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("evloop: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_load(args: LoadArgs) -> Result<(), String> {
    let config = LoadConfig {
        addr: args.addr,
        proto: match args.proto {
            ProtoKind::Echo => LoadProto::Echo,
            ProtoKind::Http => LoadProto::Http,
            ProtoKind::Redis => LoadProto::Redis,
            ProtoKind::Frame => LoadProto::Frame,
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

fn run_serve(args: ServeArgs) -> Result<(), String> {
    let mut listen: Vec<ListenAddr> = args.listen.into_iter().flatten().collect();
    if listen.is_empty() {
        listen.push(ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], args.proto.default_port()))));
    }
    if args.low_watermark > args.high_watermark {
        return Err("--low-watermark must not exceed --high-watermark".into());
    }
    if args.metrics.is_some() && matches!(args.engine, EngineArg::Std) {
        return Err(
            "--metrics needs the reactor engine (counters come from the event loops)".into()
        );
    }
    let idle_default = match args.proto {
        ProtoKind::Http | ProtoKind::Redis => Some(Duration::from_secs(60)),
        ProtoKind::Echo | ProtoKind::Frame => None,
    };
    let config = Config {
        listen,
        unix_mode: args.unix_mode,
        idle_timeout: args.idle_timeout.map_or(idle_default, |t| t.0),
        request_timeout: if args.proto == ProtoKind::Http { args.header_timeout.0 } else { None },
        max_conns: args.max_conns.filter(|&n| n > 0),
        keepalive: args.keepalive.map(|idle| (idle, args.keepalive_interval)),
        recv_buffer: args.recv_buffer,
        send_buffer: args.send_buffer,
        loops: args.loops,
        reuseport: args.reuseport,
        pin: args.pin,
        balance: match args.balance {
            BalanceArg::RoundRobin => Balance::RoundRobin,
            BalanceArg::LeastConn => Balance::LeastConnections,
            BalanceArg::SourceHash => Balance::SourceHash,
        },
        backlog: args.backlog,
        nodelay: !args.no_nodelay,
        read_buffer: args.read_buffer,
        high_watermark: args.high_watermark,
        low_watermark: args.low_watermark,
        ..Config::default()
    };
    let engine = match args.engine {
        EngineArg::Reactor => Engine::Reactor,
        EngineArg::Std => Engine::Std,
        #[cfg(feature = "tokio")]
        EngineArg::Tokio => Engine::Tokio,
    };
    let opts = RunOpts {
        drain_timeout: args.drain_timeout,
        metrics: args.metrics,
        stats_interval: args.stats_interval,
    };
    match args.proto {
        ProtoKind::Echo => run(engine, Echo, config, opts),
        ProtoKind::Http => {
            let limits = HttpConfig {
                max_head_bytes: args.max_head_bytes,
                max_headers: args.max_headers,
                max_body: args.max_body,
            };
            run(engine, Http::new(limits), config, opts)
        }
        ProtoKind::Redis => {
            let limits = RespConfig {
                max_bulk: args.max_bulk,
                max_multibulk: args.max_multibulk,
                ..RespConfig::default()
            };
            run(engine, Redis::new(limits), config, opts)
        }
        ProtoKind::Frame => {
            run(engine, Frame::new(FrameConfig { max_frame: args.max_frame }), config, opts)
        }
    }
}

/// What `run` does besides serving.
struct RunOpts {
    drain_timeout: Duration,
    metrics: Option<SocketAddr>,
    stats_interval: Option<Duration>,
}

/// Starts the server, prints the ready line, and waits for a signal or a shutdown.
fn run<P: Protocol>(engine: Engine, proto: P, config: Config, opts: RunOpts) -> Result<(), String> {
    match evloop::net::limits::raise_nofile_to_hard() {
        Ok(n) => debug!("open-file limit: {n}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
    let loops = config.effective_loops();
    let reuseport = config.reuseport;
    let name = proto.name();
    let served = serve::start(engine, proto, config).map_err(|e| e.to_string())?;
    let counters = Counters { proto: served.proto_metrics().clone(), reactor: served.reactor() };
    let metrics = match opts.metrics {
        Some(addr) => {
            let c = counters.clone();
            let m = evloop::metrics::serve(addr, move || c.render()).map_err(|e| e.to_string())?;
            info!("metrics at http://{}/metrics", m.local_addrs()[0]);
            Some(m)
        }
        None => None,
    };
    let stop = served.stop_handle();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let drain_timeout = opts.drain_timeout;
    std::thread::Builder::new()
        .name("evloop-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    info!("signal {sig}: draining (up to {drain_timeout:?}); signal again to exit at once");
                    stop.drain(drain_timeout);
                } else {
                    error!("second signal {sig}: exiting at once");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    if let Some(every) = opts.stats_interval {
        let c = counters.clone();
        std::thread::Builder::new()
            .name("evloop-stats".into())
            .spawn(move || c.log_every(every))
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    let addrs: Vec<String> = served.listeners().iter().map(|a| a.to_string()).collect();
    match engine {
        Engine::Reactor => eprintln!(
            "evloop: serving {name} on {} (engine reactor, {loops} loop{}, reuseport {})",
            addrs.join(", "),
            if loops == 1 { "" } else { "s" },
            if reuseport { "on" } else { "off" }
        ),
        Engine::Std => eprintln!(
            "evloop: serving {name} on {} (engine std, thread per connection)",
            addrs.join(", ")
        ),
        #[cfg(feature = "tokio")]
        Engine::Tokio => eprintln!(
            "evloop: serving {name} on {} (engine tokio, {loops} current-thread runtime{}, reuseport on)",
            addrs.join(", "),
            if loops == 1 { "" } else { "s" }
        ),
    }
    let result = served.wait().map_err(|e| e.to_string());
    if let Some(m) = metrics {
        let _ = m.shutdown();
    }
    signal_handle.close();
    result
}

/// The counters the metrics endpoint and the stats line read.
#[derive(Clone)]
struct Counters {
    proto: Arc<ProtoMetrics>,
    reactor: Option<ServerHandle>,
}

impl Counters {
    fn render(&self) -> String {
        evloop::metrics::render(self.reactor.as_ref().map(|h| h.stats()).as_ref(), &self.proto)
    }

    /// Logs a one-line summary every `every` (runs until the process exits).
    fn log_every(&self, every: Duration) {
        let mut last = (std::time::Instant::now(), 0u64, 0u64, 0u64);
        loop {
            std::thread::sleep(every);
            let requests = self.proto.requests();
            let now = std::time::Instant::now();
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
            let rate = (requests - last.1) as f64 / secs;
            let t = self.reactor.as_ref().map(|h| h.stats().total()).unwrap_or_default();
            match &self.reactor {
                Some(_) => info!(
                    "stats: {} open, {} accepted, {} rejected, {rate:.0} req/s, {:.2} MB/s in, {:.2} MB/s out",
                    t.open,
                    t.accepted,
                    t.rejected,
                    t.bytes_read.saturating_sub(last.2) as f64 / secs / 1e6,
                    t.bytes_written.saturating_sub(last.3) as f64 / secs / 1e6,
                ),
                None => info!("stats: {rate:.0} req/s"),
            }
            last = (now, requests, t.bytes_read, t.bytes_written);
        }
    }
}
