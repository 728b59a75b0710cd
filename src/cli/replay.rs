//! `evloop replay FILE.pcap --target HOST:PORT [--speed X]`: plays the client side of
//! every stream in a capture against a server ([`evloop::capture::replay`]) and reports
//! streams, bytes sent and the replies' byte counts against the captured ones.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use evloop::capture::{read_streams, replay};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The capture to replay (pcap, as `--capture` writes it).
    #[arg(value_name = "FILE.pcap")]
    file: PathBuf,
    /// The server to replay against.
    #[arg(long, value_parser = super::parse_socket_addr, value_name = "HOST:PORT")]
    target: SocketAddr,
    /// Time scale of the recorded gaps: 2 = twice as fast, 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0, value_name = "X", value_parser = parse_speed)]
    speed: f64,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("expected a number of 0 or more, got {s:?}")),
    }
}

/// Replays and prints the report; fails when the file cannot be read or a stream failed.
pub fn run_replay(args: ReplayArgs) -> Result<(), String> {
    let streams = read_streams(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let report = replay(&streams, args.target, args.speed).map_err(|e| e.to_string())?;
    let expected: u64 = report.per_stream.iter().map(|s| s.expected_received).sum();
    println!(
        "replayed {} streams to {}: {} bytes sent, {} bytes received ({} in the capture)",
        report.streams, args.target, report.bytes_sent, report.bytes_received, expected
    );
    let failed: Vec<String> = report
        .per_stream
        .iter()
        .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.client)))
        .collect();
    for f in &failed {
        println!("  stream from {f}");
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("{} streams failed", failed.len())) }
}
