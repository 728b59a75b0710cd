//! Flags of `serve` and `proxy` for running at the edge of a deployment: behind a load
//! balancer (`--accept-proxy`, the PROXY protocol) and sampled traffic capture
//! (`--capture`). Flattened into [`NetArgs`](super::NetArgs).

use std::time::Duration;

use clap::Args;

use super::size::parse_duration;

/// `--accept-proxy` and its timeout.
#[derive(Args, Debug, Clone)]
pub struct EdgeArgs {
    /// Every connection on a TCP listener must start with a PROXY protocol header (v1
    /// or v2, as HAProxy's send-proxy / send-proxy-v2, nginx's proxy_protocol, AWS NLB
    /// send). The client address it names is what logs, source-hash balancing and
    /// Redis CLIENT LIST show. A missing, malformed or late header closes the
    /// connection (evloop_proxy_header_errors_total). Engine reactor only.
    #[arg(long)]
    pub accept_proxy: bool,
    /// How long a connection may take to send its whole PROXY header. Default: serve's
    /// --header-timeout when given, else 10s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "accept_proxy")]
    pub proxy_header_timeout: Option<Duration>,
}

impl EdgeArgs {
    /// The PROXY header timeout: this flag, else `fallback` (serve's `--header-timeout`),
    /// else 10 s.
    pub fn header_timeout(&self, fallback: Option<Duration>) -> Duration {
        self.proxy_header_timeout.or(fallback).unwrap_or(Duration::from_secs(10))
    }
}
