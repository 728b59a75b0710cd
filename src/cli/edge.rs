//! Flags of `serve` and `proxy` for running at the edge of a deployment: behind a load
//! balancer (`--accept-proxy`, the PROXY protocol) and sampled traffic capture
//! (`--capture`, `--capture-sample`, `--capture-max`, `--capture-window`). Flattened into [`NetArgs`](super::NetArgs).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use evloop::serve::capture::CaptureSpec;

use super::size::{parse_duration, parse_size};

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
    /// Capture a sample of the connections to this pcap file (tcpdump -r, Wireshark;
    /// evloop replay). Loops never wait for the file: when a loop's buffer is full,
    /// bytes are dropped and counted (evloop_capture_dropped_bytes_total). Engine
    /// reactor; in proxy a sampled pair is copied even with --splice.
    #[arg(long, value_name = "FILE.pcap")]
    pub capture: Option<PathBuf>,
    /// Capture 1 connection in N.
    #[arg(long, default_value_t = 100, value_name = "N", requires = "capture")]
    pub capture_sample: u64,
    /// Stop capturing when the file reaches this size.
    #[arg(long, default_value = "100M", value_parser = parse_size, value_name = "SIZE", requires = "capture")]
    pub capture_max: usize,
    /// Capture only connections opened in the first DURATION of each minute (default:
    /// always).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "capture")]
    pub capture_window: Option<Duration>,
}

impl EdgeArgs {
    /// What `--capture*` asks for (`None`: no capture).
    pub fn capture_spec(&self) -> Option<CaptureSpec> {
        let path = self.capture.clone()?;
        Some(CaptureSpec {
            sample: self.capture_sample,
            max_bytes: self.capture_max as u64,
            window: self.capture_window,
            ..CaptureSpec::new(path)
        })
    }

    /// The PROXY header timeout: this flag, else `fallback` (serve's `--header-timeout`),
    /// else 10 s.
    pub fn header_timeout(&self, fallback: Option<Duration>) -> Duration {
        self.proxy_header_timeout.or(fallback).unwrap_or(Duration::from_secs(10))
    }
}
