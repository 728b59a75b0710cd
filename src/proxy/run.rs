//! Starting the proxy ([`start`], for embedders and tests) and the lifecycle of
//! `evloop proxy` ([`run`]): checks of the configuration, the pool, the active health
//! checker, the reactor with one [`ProxyHandler`] per loop, and around them the serve
//! lifecycle ([`Lifecycle`]: signals and drain, metrics endpoint, stats line, ready
//! line), with SIGHUP re-reading `--backends-file`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};

use super::backend::{BackendSpec, check_unique, read_backends_file};
use super::balance::Policy;
use super::handler::{ProxyHandler, Shared};
use super::health::{Checker, HealthCheck};
use super::pool::{HealthConfig, Pool};
use super::send_proxy::SendProxy;
use crate::net::ListenAddr;
use crate::net::tls::ClientRoots;
use crate::reactor::{Balance, Running, Server, ServerHandle};
use crate::serve::capture::Capture;
use crate::serve::run::{Counters, DEFAULT_DRAIN, Lifecycle, raise_nofile};
use crate::serve::{Settings, StopHandle};

/// The proxy's default listen address when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6000";

/// What the proxy does beyond the listener and loop settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Backends given one by one (`--backend`).
    pub backends: Vec<BackendSpec>,
    /// More backends from a file, re-read on reload (`--backends-file`).
    pub backends_file: Option<PathBuf>,
    /// How a backend is chosen (`--balance`).
    pub policy: Policy,
    /// How long a connect to a backend may take (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Further backends tried after a failed connect (`--retries`).
    pub retries: u32,
    /// Consecutive failures that mark a backend down (`--fall`).
    pub fall: u32,
    /// Consecutive successes that bring it back (`--rise`).
    pub rise: u32,
    /// Active health check (`--health-check`).
    pub check: HealthCheck,
    /// How often active checks run, or trial connections are let through when they are
    /// off (`--health-interval`).
    pub health_interval: Duration,
    /// Move bytes with `splice(2)` (`--splice`; Linux).
    pub splice: bool,
    /// Write a PROXY protocol header to each backend connection (`--send-proxy`).
    pub send_proxy: Option<SendProxy>,
    /// CA certificates (PEM) that `,tls` backends' certificates must chain to
    /// (`--backend-ca`); required as soon as one backend has `,tls`.
    pub backend_ca: Option<PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            backends: Vec::new(),
            backends_file: None,
            policy: Policy::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            fall: 3,
            rise: 2,
            check: HealthCheck::Tcp,
            health_interval: Duration::from_secs(2),
            splice: false,
            send_proxy: None,
            backend_ca: None,
        }
    }
}

impl ProxyConfig {
    /// The whole backend set: `--backend`s, then the file's. Errors name the file or
    /// backend (a missing or bad file, the same address twice, no backends at all).
    pub fn load_backends(&self) -> Result<Vec<BackendSpec>, String> {
        let mut all = self.backends.clone();
        if let Some(path) = &self.backends_file {
            for spec in read_backends_file(path)? {
                check_unique(&all, &spec)
                    .map_err(|e| format!("backends file {}: {e}", path.display()))?;
                all.push(spec);
            }
        }
        for (i, spec) in all.iter().enumerate() {
            check_unique(&all[..i], spec)?;
        }
        if all.is_empty() {
            return Err("no backends: give --backend HOST:PORT or --backends-file PATH".into());
        }
        if self.backend_ca.is_none()
            && let Some(b) = all.iter().find(|b| b.tls)
        {
            return Err(format!("backend `{}`: ,tls needs --backend-ca FILE", b.name));
        }
        for b in all.iter().filter(|b| b.tls) {
            let Some(name) = b.tls_name() else {
                return Err(format!("backend `{}`: ,tls to a Unix socket needs sni=NAME", b.name));
            };
            crate::net::tls::check_server_name(&name)
                .map_err(|e| format!("backend `{}`: {e}", b.name))?;
            if matches!(self.check, HealthCheck::Http(_) | HealthCheck::Redis) {
                return Err(format!(
                    "backend `{}`: ,tls backends take --health-check tcp or off (the http and \
                     redis checks speak plaintext)",
                    b.name
                ));
            }
        }
        Ok(all)
    }

    fn health(&self) -> HealthConfig {
        HealthConfig {
            fall: self.fall.max(1),
            rise: self.rise.max(1),
            trial_interval: (self.check == HealthCheck::Off).then_some(self.health_interval),
        }
    }

    /// The `--balance` name of the policy.
    pub fn policy_name(&self) -> &'static str {
        Policy::ALL.iter().find(|(_, p)| *p == self.policy).map_or("?", |(n, _)| n)
    }

    /// Health checks and splice, for the ready line.
    fn describe(&self) -> String {
        let check = match &self.check {
            HealthCheck::Off => "health checks off".to_string(),
            HealthCheck::Tcp => format!("health tcp every {:?}", self.health_interval),
            HealthCheck::Http(p) => format!("health http:{p} every {:?}", self.health_interval),
            HealthCheck::Redis => format!("health redis every {:?}", self.health_interval),
        };
        let splice = if self.splice { "splice on" } else { "splice off" };
        format!("{check}, {splice}")
    }
}

/// A running proxy.
pub struct Proxy {
    running: Running,
    pool: Arc<Pool>,
    config: ProxyConfig,
    checker: Option<Checker>,
    /// `--capture`, when on (its series are in the metrics).
    capture: Option<Arc<Capture>>,
}

/// Starts a proxy: listeners and loops from `settings` (connections are handed to loops
/// round-robin by the acceptor, or spread by the kernel with `reuseport`), backends and
/// behaviour from `config`. Errors for a bad configuration are `InvalidInput` with a
/// message naming what is wrong.
pub fn start(settings: Settings, config: ProxyConfig) -> io::Result<Proxy> {
    let specs =
        config.load_backends().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut reactor = settings.reactor_config();
    reactor.balance = Balance::RoundRobin;
    let server = Server::bind(reactor)?;
    let loops = server.loops();
    let pool = Arc::new(Pool::new(specs, loops, config.health()));
    let backend_roots = match &config.backend_ca {
        Some(ca) => Some(ClientRoots::from_ca_file(ca).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("--backend-ca: {e}"))
        })?),
        None => None,
    };
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        policy: config.policy,
        connect_timeout: config.connect_timeout,
        retries: config.retries,
        splice: config.splice,
        send_proxy: config.send_proxy,
        capture: settings.reactor.capture.clone(),
        tls: settings.tls.clone(),
        backend_roots,
    });
    let checker = match &config.check {
        HealthCheck::Off => None,
        kind => {
            let timeout = config.connect_timeout.min(config.health_interval);
            Some(Checker::start(pool.clone(), kind.clone(), config.health_interval, timeout)?)
        }
    };
    let running = server.start(move |id| ProxyHandler::new(id, shared.clone()))?;
    let capture = settings.reactor.capture.clone();
    Ok(Proxy { running, pool, config, checker, capture })
}

impl Proxy {
    /// The bound TCP addresses, ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.running.local_addrs()
    }

    /// Every listener, ports resolved.
    pub fn listeners(&self) -> Vec<ListenAddr> {
        self.running.handle().listeners().to_vec()
    }

    /// The backend pool (health, counters, current set).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The reactor's handle (stats, shutdown, drain).
    pub fn handle(&self) -> ServerHandle {
        self.running.handle()
    }

    /// Re-reads the configured backends (`--backend`s and the file) and replaces the set;
    /// on an error the old set stays. Returns the added and removed names.
    pub fn reload(&self) -> Result<(Vec<String>, Vec<String>), String> {
        reload(&self.pool, &self.config)
    }

    /// The Prometheus text: the reactor's per-loop series and the per-backend ones.
    pub fn render_metrics(&self) -> String {
        proxy_counters(self.handle(), self.pool.clone(), self.capture.clone()).render()
    }

    /// Stops the proxy and waits for its loops.
    pub fn shutdown(self) -> io::Result<()> {
        drop(self.checker);
        self.running.shutdown()
    }

    /// Waits until the proxy has stopped (after a shutdown or drain).
    pub fn wait(self) -> io::Result<()> {
        let result = self.running.wait();
        drop(self.checker);
        result
    }
}

/// Re-reads the backends of `config` into `pool`, logging what changed (or the error).
fn reload(pool: &Pool, config: &ProxyConfig) -> Result<(Vec<String>, Vec<String>), String> {
    let specs = config.load_backends()?;
    let (added, removed) = pool.reload(specs);
    info!(
        "backends reloaded: {} now; added [{}], removed [{}]",
        pool.current().backends.len(),
        added.join(", "),
        removed.join(", ")
    );
    Ok((added, removed))
}

/// SIGHUP with `--config`: the backends the file names now (its `backend`s and its
/// `backends-file`, re-read) replace the set; one line says what changed. On an error
/// the set in force stays.
fn reload_from_file(pool: &Pool, config: &ProxyConfig, now: &crate::serve::reload::Reread) {
    let config = ProxyConfig {
        backends: now.backends.clone(),
        backends_file: now.backends_file.clone(),
        ..config.clone()
    };
    let specs = match config.load_backends() {
        Ok(specs) => specs,
        Err(e) => {
            let n = pool.current().backends.len();
            error!("backends: reload failed, keeping the {n} in force: {e}");
            return;
        }
    };
    let (added, removed) = pool.reload(specs);
    if added.is_empty() && removed.is_empty() {
        info!("backends: unchanged ({})", pool.current().backends.len());
    } else {
        let mut line = String::from("backends:");
        for a in &added {
            line.push_str(&format!(" +{a}"));
        }
        for r in &removed {
            line.push_str(&format!(" -{r}"));
        }
        info!("{line}");
    }
}

fn proxy_counters(
    handle: ServerHandle,
    pool: Arc<Pool>,
    capture: Option<Arc<Capture>>,
) -> Counters {
    Counters::new(None, Some(handle)).with_extra(move |out| {
        pool.render_metrics(out);
        if let Some(c) = &capture {
            c.render(out);
        }
    })
}

/// What `evloop proxy` takes beyond [`Settings`] and [`ProxyConfig`].
#[derive(Debug, Clone, Default)]
pub struct ProxyFlags {
    /// `--drain-timeout` (default [`DEFAULT_DRAIN`]).
    pub drain_timeout: Option<Duration>,
    /// `--metrics ADDR`.
    pub metrics: Option<SocketAddr>,
    /// `--stats-interval`.
    pub stats_interval: Option<Duration>,
    /// `--config FILE`: re-read on SIGHUP for the backends (and TLS, log level;
    /// [`crate::serve::reload`]).
    pub reread: Option<crate::serve::reload::Rereader>,
}

/// Runs `evloop proxy` until SIGINT or SIGTERM: checks the settings, starts the proxy
/// (listening on [`DEFAULT_LISTEN`] when `settings.listen` is empty; `fd:N` and
/// `systemd` are resolved to the inherited sockets), prints the ready
/// line (`evloop: proxying on ADDR to N backends (...)`) on stderr, re-reads the
/// backends on SIGHUP, and waits. Errors are one line, for the command line to print
/// (exit 1).
pub fn run(mut settings: Settings, config: ProxyConfig, flags: ProxyFlags) -> Result<(), String> {
    if settings.listen.is_empty() {
        settings.listen = ListenAddr::parse_all(DEFAULT_LISTEN)?;
    }
    // `fd:N` and `systemd`: the inherited sockets, inspected (LISTEN_* are unset: no
    // thread of ours runs yet).
    settings.listen = crate::net::activation::resolve(std::mem::take(&mut settings.listen), true)
        .map_err(|e| e.to_string())?;
    let udp = |l: &ListenAddr| match l {
        ListenAddr::Udp(_) => true,
        ListenAddr::Inherited(i) => matches!(i.kind, crate::net::activation::InheritedKind::Udp(_)),
        _ => false,
    };
    if let Some(udp) = settings.listen.iter().find(|l| udp(l)) {
        return Err(format!(
            "--listen {udp}: the proxy forwards TCP and Unix stream connections only"
        ));
    }
    if settings.reactor.low_watermark > settings.reactor.high_watermark {
        return Err("--low-watermark must not exceed --high-watermark".into());
    }
    if config.connect_timeout.is_zero() {
        return Err("--connect-timeout must be more than 0".into());
    }
    if config.health_interval.is_zero() {
        return Err("--health-interval must be more than 0".into());
    }
    raise_nofile();
    let proxy = start(settings.clone(), config.clone()).map_err(|e| e.to_string())?;
    let pool = proxy.pool.clone();
    let hangup_pool = pool.clone();
    let hangup_config = config.clone();
    // SIGHUP re-reads the backends; with --config the file's hook also re-reads the TLS
    // certificate and key of tls:// listeners (from the file's paths), without it
    // tls_reload adds that to the backends-file reload.
    let hangup = match flags.reread.clone() {
        Some(r) => {
            let pool = pool.clone();
            let config = config.clone();
            let apply = move |now: &crate::serve::reload::Reread| {
                reload_from_file(&pool, &config, now);
            };
            Some(crate::serve::reload::config_hangup(&settings, r, Some(Box::new(apply))))
        }
        None => crate::serve::run::tls_reload(
            &settings,
            Some(Box::new(move || match &hangup_config.backends_file {
                Some(path) => {
                    info!("SIGHUP: re-reading {}", path.display());
                    if let Err(e) = reload(&hangup_pool, &hangup_config) {
                        error!(
                            "reload failed, keeping the {} backends in force: {e}",
                            hangup_pool.current().backends.len()
                        );
                    }
                }
                None => info!("SIGHUP: no --backends-file to re-read"),
            })),
        ),
    };
    let handle = proxy.handle();
    let lifecycle = Lifecycle {
        stop: StopHandle::from_stopper(Arc::new(handle.clone())),
        drains: true,
        engine: "reactor",
        drain_timeout: flags.drain_timeout.unwrap_or(DEFAULT_DRAIN),
        metrics: flags.metrics,
        stats_interval: flags.stats_interval,
        counters: proxy_counters(handle, pool.clone(), settings.reactor.capture.clone()),
        hangup,
    };
    let addrs: Vec<String> = proxy.listeners().iter().map(|a| a.to_string()).collect();
    let n = pool.current().backends.len();
    let loops = settings.effective_loops();
    let ready = format!(
        "evloop: proxying on {} to {n} backend{} ({}, {loops} loop{}, reuseport {}, {})",
        addrs.join(", "),
        if n == 1 { "" } else { "s" },
        config.policy_name(),
        if loops == 1 { "" } else { "s" },
        if settings.reuseport { "on" } else { "off" },
        config.describe(),
    );
    let result = lifecycle.run(&ready, || proxy.wait());
    if let Some(c) = &settings.reactor.capture {
        crate::serve::capture::finish_and_log(c);
    }
    result
}
