//! The backend pool every loop shares: each backend's health (up/down with `fall`/`rise`
//! counts) and its per-loop traffic counters, and the current backend set, replaced as a
//! whole on reload. Loops read the set through a generation number (one relaxed load per
//! new connection) and keep their own `Arc` of it; counters are written by their own loop
//! only (plain load + store, no lock prefix) and summed when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::backend::BackendSpec;
use super::balance::Candidate;

/// Health thresholds (`--fall`, `--rise`) and the trial interval for down backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failed connects (or checks) that mark a backend down.
    pub fall: u32,
    /// Consecutive successes that bring it back up.
    pub rise: u32,
    /// With active checks off, a down backend gets one trial connection this often.
    pub trial_interval: Option<Duration>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { fall: 3, rise: 2, trial_interval: None }
    }
}

/// One loop's counters for one backend (a cache line each, written by that loop only).
#[derive(Debug, Default)]
#[repr(align(64))]
struct LoopCounters {
    opened: AtomicU64,
    closed: AtomicU64,
    connect_errors: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// Adds `n` to a counter only one thread writes: no atomic read-modify-write needed.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One backend: its spec, health and counters.
#[derive(Debug)]
pub struct Backend {
    spec: BackendSpec,
    up: AtomicBool,
    fails: AtomicU32,
    successes: AtomicU32,
    removed: AtomicBool,
    last_trial_ms: AtomicU64,
    counters: Box<[LoopCounters]>,
}

impl Backend {
    fn new(spec: BackendSpec, loops: usize) -> Self {
        Backend {
            spec,
            up: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            last_trial_ms: AtomicU64::new(0),
            counters: (0..loops.max(1)).map(|_| LoopCounters::default()).collect(),
        }
    }

    /// The backend's configuration.
    pub fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    /// Whether it takes new connections.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Whether a reload removed it (its established connections go on).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// Records a successful connect (or health check): resets the failure count, and
    /// brings a down backend up after `rise` successes in a row.
    pub fn success(&self, cfg: &HealthConfig) {
        self.fails.store(0, Relaxed);
        if !self.up.load(Relaxed) {
            let n = self.successes.fetch_add(1, Relaxed) + 1;
            if n >= cfg.rise && !self.up.swap(true, Relaxed) {
                log::info!("backend {} is up ({n} successes)", self.spec.name);
            }
        }
    }

    /// Records a failed connect (or health check): marks the backend down after `fall`
    /// failures in a row.
    pub fn failure(&self, cfg: &HealthConfig, why: &dyn std::fmt::Display) {
        self.successes.store(0, Relaxed);
        let n = self.fails.fetch_add(1, Relaxed).saturating_add(1);
        if n >= cfg.fall && self.up.swap(false, Relaxed) {
            log::warn!("backend {} is down after {n} failures: {why}", self.spec.name);
        }
    }

    /// For a down backend with active checks off: whether this caller may make the one
    /// trial connection of the current interval (at most one wins per interval).
    pub fn take_trial(&self, cfg: &HealthConfig, now_ms: u64) -> bool {
        let Some(every) = cfg.trial_interval else { return false };
        let last = self.last_trial_ms.load(Relaxed);
        now_ms.saturating_sub(last) >= every.as_millis() as u64
            && self.last_trial_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok()
    }

    /// Loop `loop_id` established a connection to this backend.
    #[inline]
    pub fn opened(&self, loop_id: usize) {
        add(&self.counters[loop_id].opened, 1);
    }

    /// Loop `loop_id` closed an established connection to this backend.
    #[inline]
    pub fn closed(&self, loop_id: usize) {
        add(&self.counters[loop_id].closed, 1);
    }

    /// Loop `loop_id` failed to connect (error or timeout).
    #[inline]
    pub fn connect_error(&self, loop_id: usize) {
        add(&self.counters[loop_id].connect_errors, 1);
    }

    /// Loop `loop_id` forwarded `n` bytes client → backend.
    #[inline]
    pub fn sent(&self, loop_id: usize, n: u64) {
        add(&self.counters[loop_id].sent, n);
    }

    /// Loop `loop_id` forwarded `n` bytes backend → client.
    #[inline]
    pub fn received(&self, loop_id: usize, n: u64) {
        add(&self.counters[loop_id].received, n);
    }

    fn sum(&self, f: impl Fn(&LoopCounters) -> &AtomicU64) -> u64 {
        self.counters.iter().map(|c| f(c).load(Relaxed)).sum()
    }

    /// Totals over all loops.
    pub fn totals(&self) -> BackendTotals {
        let opened = self.sum(|c| &c.opened);
        let closed = self.sum(|c| &c.closed);
        BackendTotals {
            up: self.is_up(),
            active: opened.saturating_sub(closed),
            connections: opened,
            connect_errors: self.sum(|c| &c.connect_errors),
            bytes_sent: self.sum(|c| &c.sent),
            bytes_received: self.sum(|c| &c.received),
        }
    }
}

/// A backend's counters summed over loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendTotals {
    /// Health.
    pub up: bool,
    /// Established connections open now.
    pub active: u64,
    /// Established connections ever.
    pub connections: u64,
    /// Failed and timed-out connect attempts.
    pub connect_errors: u64,
    /// Bytes client → backend.
    pub bytes_sent: u64,
    /// Bytes backend → client.
    pub bytes_received: u64,
}

/// The backend set in force: what a new connection is balanced over.
#[derive(Debug)]
pub struct BackendSet {
    /// The backends, in configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// Bumped on every reload.
    pub generation: u64,
}

impl BackendSet {
    /// What the balancer sees of each backend now. A down backend whose trial
    /// connection is due counts as up for the one caller that takes the trial.
    pub fn candidates(&self, cfg: &HealthConfig, now_ms: u64, out: &mut Vec<Candidate>) {
        out.clear();
        out.extend(self.backends.iter().map(|b| {
            let t = b.totals();
            Candidate {
                up: t.up || b.take_trial(cfg, now_ms),
                backup: b.spec.backup,
                weight: b.spec.weight,
                active: t.active,
            }
        }));
    }
}

/// One loop's count of something, on its own cache line (written by that loop only).
#[derive(Debug, Default)]
#[repr(align(64))]
struct LoopCount(AtomicU64);

/// Backends shared by every loop, replaceable on reload, and the proxy's own per-loop
/// counters.
#[derive(Debug)]
pub struct Pool {
    current: Mutex<Arc<BackendSet>>,
    generation: AtomicU64,
    loops: usize,
    health: HealthConfig,
    started: Instant,
    unserved: Box<[LoopCount]>,
}

impl Pool {
    /// A pool of `specs` for `loops` loops (each backend starts up).
    pub fn new(specs: Vec<BackendSpec>, loops: usize, health: HealthConfig) -> Self {
        let backends = specs.into_iter().map(|s| Arc::new(Backend::new(s, loops))).collect();
        Pool {
            current: Mutex::new(Arc::new(BackendSet { backends, generation: 0 })),
            generation: AtomicU64::new(0),
            loops,
            health,
            started: Instant::now(),
            unserved: (0..loops.max(1)).map(|_| LoopCount::default()).collect(),
        }
    }

    /// Loop `loop_id` closed a client because no backend could be reached (none up, or
    /// every try failed).
    #[inline]
    pub fn unserved(&self, loop_id: usize) {
        add(&self.unserved[loop_id].0, 1);
    }

    /// Clients closed because no backend could be reached, summed over loops.
    pub fn unserved_total(&self) -> u64 {
        self.unserved.iter().map(|c| c.0.load(Relaxed)).sum()
    }

    /// The health configuration.
    pub fn health(&self) -> &HealthConfig {
        &self.health
    }

    /// Milliseconds since the pool was made (the clock of trial connections).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The current generation: compare with a cached set's to know it is stale.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The current set.
    pub fn current(&self) -> Arc<BackendSet> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the set: backends whose spec is unchanged keep their health and
    /// counters; new ones start up; removed ones take no new connections while their
    /// established ones finish. Returns (added, removed) names.
    pub fn reload(&self, specs: Vec<BackendSpec>) -> (Vec<String>, Vec<String>) {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let old = cur.clone();
        let mut added = Vec::new();
        let backends: Vec<Arc<Backend>> = specs
            .into_iter()
            .map(|s| match old.backends.iter().find(|b| b.spec == s) {
                Some(b) => b.clone(),
                None => {
                    added.push(s.name.clone());
                    Arc::new(Backend::new(s, self.loops))
                }
            })
            .collect();
        let mut removed = Vec::new();
        for b in &old.backends {
            if !backends.iter().any(|n| Arc::ptr_eq(n, b)) {
                b.removed.store(true, Relaxed);
                removed.push(b.spec.name.clone());
            }
        }
        let generation = old.generation + 1;
        *cur = Arc::new(BackendSet { backends, generation });
        self.generation.store(generation, Relaxed);
        (added, removed)
    }

    /// Appends the per-backend Prometheus series (`evloop_backend_*`, one series per
    /// backend of the current set, labelled with its address as given) and
    /// `evloop_proxy_clients_unserved_total`.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP evloop_proxy_clients_unserved_total Clients closed because no backend could be reached.\n\
             # TYPE evloop_proxy_clients_unserved_total counter\n\
             evloop_proxy_clients_unserved_total {}",
            self.unserved_total()
        );
        let set = self.current();
        let totals: Vec<_> =
            set.backends.iter().map(|b| (b.spec.name.as_str(), b.totals())).collect();
        type Field = fn(&BackendTotals) -> u64;
        let families: [(&str, &str, &str, Field); 6] = [
            ("evloop_backend_up", "gauge", "1 if the backend takes new connections", |t| {
                u64::from(t.up)
            }),
            (
                "evloop_backend_connections_active",
                "gauge",
                "established connections open now",
                |t| t.active,
            ),
            ("evloop_backend_connections_total", "counter", "established connections", |t| {
                t.connections
            }),
            (
                "evloop_backend_connect_errors_total",
                "counter",
                "failed and timed-out connects",
                |t| t.connect_errors,
            ),
            (
                "evloop_backend_bytes_sent_total",
                "counter",
                "bytes forwarded client to backend",
                |t| t.bytes_sent,
            ),
            (
                "evloop_backend_bytes_received_total",
                "counter",
                "bytes forwarded backend to client",
                |t| t.bytes_received,
            ),
        ];
        for (name, kind, help, f) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (backend, t) in &totals {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", escape_label(backend), f(t));
            }
        }
    }
}

/// Escapes a Prometheus label value.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> BackendSpec {
        s.parse().unwrap()
    }

    #[test]
    fn fall_and_rise() {
        let cfg = HealthConfig { fall: 3, rise: 2, trial_interval: None };
        let b = Backend::new(spec("127.0.0.1:1"), 1);
        b.failure(&cfg, &"refused");
        b.failure(&cfg, &"refused");
        assert!(b.is_up());
        b.success(&cfg);
        b.failure(&cfg, &"refused");
        b.failure(&cfg, &"refused");
        assert!(b.is_up(), "a success resets the count");
        b.failure(&cfg, &"refused");
        assert!(!b.is_up());
        b.success(&cfg);
        assert!(!b.is_up());
        b.success(&cfg);
        assert!(b.is_up());
    }

    #[test]
    fn one_trial_per_interval() {
        let cfg =
            HealthConfig { fall: 1, rise: 1, trial_interval: Some(Duration::from_millis(100)) };
        let b = Backend::new(spec("127.0.0.1:1"), 1);
        assert!(b.take_trial(&cfg, 1000));
        assert!(!b.take_trial(&cfg, 1050));
        assert!(b.take_trial(&cfg, 1100));
        let off = HealthConfig { trial_interval: None, ..cfg };
        assert!(!b.take_trial(&off, 5000));
    }

    #[test]
    fn counters_sum_over_loops() {
        let b = Backend::new(spec("127.0.0.1:1"), 2);
        b.opened(0);
        b.opened(1);
        b.opened(1);
        b.closed(0);
        b.sent(0, 10);
        b.sent(1, 5);
        b.received(1, 7);
        b.connect_error(0);
        let t = b.totals();
        assert_eq!((t.active, t.connections, t.connect_errors), (2, 3, 1));
        assert_eq!((t.bytes_sent, t.bytes_received), (15, 7));
    }

    #[test]
    fn reload_keeps_unchanged_and_marks_removed() {
        let pool =
            Pool::new(vec![spec("127.0.0.1:1"), spec("127.0.0.1:2")], 1, HealthConfig::default());
        let before = pool.current();
        before.backends[0].opened(0);
        let (added, removed) = pool.reload(vec![spec("127.0.0.1:1"), spec("127.0.0.1:3")]);
        assert_eq!(
            (added, removed),
            (vec!["127.0.0.1:3".to_string()], vec!["127.0.0.1:2".to_string()])
        );
        assert_eq!(pool.generation(), 1);
        let after = pool.current();
        assert!(Arc::ptr_eq(&before.backends[0], &after.backends[0]));
        assert_eq!(after.backends[0].totals().connections, 1);
        assert!(before.backends[1].is_removed());
        let mut text = String::new();
        pool.render_metrics(&mut text);
        assert!(
            text.contains("evloop_backend_connections_total{backend=\"127.0.0.1:1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("evloop_backend_up{backend=\"127.0.0.1:3\"} 1\n"), "{text}");
        assert!(!text.contains("127.0.0.1:2"));
    }
}
