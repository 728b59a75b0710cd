//! `evloop proxy`: an L4 (TCP and Unix) proxy and load balancer built on the reactor's
//! public API. This folder holds its parts that need no sockets of the loops: backend
//! specs and the backends file ([`backend`]), balancing policies ([`balance`]), the shared
//! pool with health and per-loop byte counters ([`pool`]), and active health checks
//! ([`health`]); the data path on the loops ([`handler`]); and starting and running the
//! proxy ([`run`](mod@run)).
//!
//! ```no_run
//! use evloop::proxy::run::{ProxyConfig, start};
//! use evloop::reactor::Config;
//!
//! let config = ProxyConfig { backends: vec!["127.0.0.1:7001".parse()?], ..Default::default() };
//! let proxy = start(Config::new().listen("127.0.0.1:6000")?.loops(1).into(), config)?;
//! println!("proxying on {:?}", proxy.local_addrs());
//! proxy.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod balance;
pub mod handler;
pub mod health;
pub mod pool;
pub mod run;
