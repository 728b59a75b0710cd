//! `evloop proxy`: its flags and their mapping to [`Settings`], [`ProxyConfig`] and
//! [`ProxyFlags`] for [`run`](evloop::proxy::run::run).
//!
//! Errors: a malformed flag value (a bad `--backend`, `--balance`, duration, health
//! check, ...) is a clap usage error (exit 2); a configuration that parses but cannot
//! run (no backends, a missing or bad backends file, a port in use) is one line
//! `evloop: ...` and exit 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use evloop::proxy::backend::BackendSpec;
use evloop::proxy::balance::Policy;
use evloop::proxy::health::HealthCheck;
use evloop::proxy::run::{ProxyConfig, ProxyFlags, run};
use evloop::proxy::send_proxy::SendProxy;
use evloop::serve::capture::Capture;

use super::size::parse_duration;
use super::{NetArgs, Timeout, TlsArgs, parse_timeout};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Read flags from this TOML file (keys are the long flag names, e.g.
    /// `backend = ["127.0.0.1:7001", "127.0.0.1:7002"]`, `listen = ["127.0.0.1:6000"]`,
    /// `balance = "least-conn"`); flags on the command line override it. See
    /// `evloop check-config`. SIGHUP re-reads it: log level and backends apply at once
    /// (no connection dropped), other changes need a restart.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// A backend (repeatable): `HOST:PORT`, `[v6]:PORT` or `unix:PATH`, then options
    /// after commas: `weight=N` (1-1000, for --balance weighted and consistent-hash),
    /// `backup` (used only when no other backend is up), `tls` (speak TLS to it; needs
    /// --backend-ca), `sni=NAME` (the name its certificate must carry; default: the host
    /// part, or its IP address matched against the certificate's IP SANs).
    #[arg(short, long = "backend", value_name = "ADDR[,weight=N][,backup][,tls][,sni=NAME]", value_parser = parse_backend)]
    backend: Vec<BackendSpec>,
    /// More backends, one per line in the --backend syntax (blank lines and # comments
    /// allowed); re-read on SIGHUP.
    #[arg(long, value_name = "PATH")]
    backends_file: Option<PathBuf>,
    /// How a backend is chosen for each client connection.
    #[arg(long, default_value = "round-robin", value_parser = policy_parser(), value_name = "POLICY")]
    balance: Policy,
    /// How long a connect to a backend may take; then the next backend is tried.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Close a client and its backend connection after this long without bytes either
    /// way; `off` disables.
    #[arg(long, default_value = "off", value_parser = parse_timeout, value_name = "DURATION")]
    idle_timeout: Timeout,
    /// Further backends tried after a failed or timed-out connect, before the client is
    /// closed (nothing has been forwarded yet).
    #[arg(long, default_value_t = 2, value_name = "N")]
    retries: u32,
    /// Active health check of every backend each --health-interval: tcp (a connect),
    /// http:/PATH (GET answered 2xx/3xx), redis (PING answered +PONG), or off (passive
    /// checks only; a down backend gets one trial connection per interval).
    #[arg(long, default_value = "tcp", value_parser = parse_check, value_name = "KIND")]
    health_check: HealthCheck,
    /// How often active checks run (or trial connections are let through).
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration, value_name = "DURATION")]
    health_interval: Duration,
    /// Consecutive failed connects or checks that mark a backend down.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    fall: u32,
    /// Consecutive successful checks (or trial connections) that bring it back up.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rise: u32,
    /// Move bytes with splice(2) through a pipe per direction (Linux; zero-copy).
    #[arg(long, overrides_with = "no_splice")]
    splice: bool,
    /// Copy bytes through user space (the default).
    #[arg(long, overrides_with = "splice")]
    no_splice: bool,
    /// Write a PROXY protocol header (v1 text or v2 binary) to each backend connection
    /// before any client byte, so a PROXY-aware backend (evloop serve --accept-proxy,
    /// HAProxy, nginx) sees the client's address.
    #[arg(long, value_name = "v1|v2", value_parser = parse_send_proxy)]
    send_proxy: Option<SendProxy>,
    /// CA certificates (PEM) that the certificates of `,tls` backends must chain to.
    #[arg(long, value_name = "FILE")]
    backend_ca: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
    /// TLS termination for tls:// listeners (--tls-cert, --tls-key, --tls-client-ca,
    /// --handshake-timeout), as for serve.
    #[command(flatten)]
    pub(crate) tls: Box<TlsArgs>,
}

fn parse_send_proxy(s: &str) -> Result<SendProxy, String> {
    s.parse()
}

fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    s.parse()
}

fn parse_check(s: &str) -> Result<HealthCheck, String> {
    s.parse()
}

/// A duration greater than zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// `--balance`: the policies' names.
fn policy_parser() -> impl clap::builder::TypedValueParser<Value = Policy> {
    use clap::builder::TypedValueParser as _;
    let names: Vec<&'static str> = Policy::ALL.iter().map(|(n, _)| *n).collect();
    clap::builder::PossibleValuesParser::new(names).try_map(|name| {
        Policy::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("unknown policy {name:?}"))
    })
}

impl ProxyArgs {
    /// The `--backend`s and `--backends-file` (for a reload of `--config`).
    pub(super) fn backends(&self) -> (Vec<BackendSpec>, Option<PathBuf>) {
        (self.backend.clone(), self.backends_file.clone())
    }
}

/// `evloop proxy`: maps the flags and hands over to [`run`].
pub fn run_proxy(args: ProxyArgs) -> Result<(), String> {
    let mut settings = args.net.settings();
    if let Some(spec) = args.net.edge.capture_spec() {
        let capture = Capture::start(&spec).map_err(|e| format!("--capture: {e}"))?;
        settings.reactor.capture = Some(capture);
    }
    settings.idle_timeout = args.idle_timeout.0;
    // TLS termination: the reactor decrypts and encrypts at the client's seams; no ALPN.
    settings.tls = args.tls.setup(args.net.tls_listeners(), Vec::new(), None)?;
    let config = ProxyConfig {
        backends: args.backend,
        backends_file: args.backends_file,
        policy: args.balance,
        connect_timeout: args.connect_timeout,
        retries: args.retries,
        fall: args.fall,
        rise: args.rise,
        check: args.health_check,
        health_interval: args.health_interval,
        splice: args.splice && !args.no_splice,
        send_proxy: args.send_proxy,
        backend_ca: args.backend_ca,
    };
    let flags = ProxyFlags {
        drain_timeout: args.net.drain_timeout,
        metrics: args.net.metrics,
        stats_interval: args.net.stats_interval,
        reread: super::reload::rereader("proxy", args.config.as_ref()),
    };
    run(settings, config, flags)
}
