//! `evloop`: the command line only. Parses the flags ([`cli`]), sets up logging, and
//! calls `serve` (which owns the server's lifecycle), `proxy` or `load`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Logging to stderr: `-q` errors only, default info, `-v` debug, `-vv` trace;
/// `RUST_LOG` overrides.
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
        Command::Serve(args) => cli::run_serve(*args),
        Command::Load(args) => cli::run_load(args),
        Command::Proxy(args) => cli::proxy::run_proxy(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("evloop: {msg}");
            ExitCode::FAILURE
        }
    }
}
