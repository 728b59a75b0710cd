//! `evloop proxy`: an L4 (TCP and Unix) proxy and load balancer built on the reactor's
//! public API. This folder holds its parts that need no sockets of the loops: backend
//! specs and the backends file ([`backend`]), balancing policies ([`balance`]), the shared
//! pool with health and per-loop byte counters ([`pool`]), and active health checks
//! ([`health`]).

pub mod backend;
pub mod balance;
pub mod health;
pub mod pool;
