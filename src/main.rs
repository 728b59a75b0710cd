//! `evloop`: the command line only. Parses the flags ([`cli`]), sets up logging, and
//! calls `serve` (which owns the server's lifecycle), `proxy` or `load`; `--config FILE`
//! is expanded into flags first (`cli::config`).

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

fn main() -> ExitCode {
    // `--config FILE`: the file's flags go in before the command line's.
    let argv = match cli::config::expand(Cli::command(), std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(msg) => {
            eprintln!("evloop: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    cli::reload::init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => cli::run_serve(*args),
        Command::Load(args) => cli::run_load(args),
        Command::Proxy(args) => cli::proxy::run_proxy(*args),
        Command::Replay(args) => cli::replay::run_replay(args),
        Command::Completions(args) => cli::extras::completions(Cli::command(), &args),
        Command::Man => cli::extras::man(Cli::command()),
        Command::CheckConfig(args) => {
            cli::config::check(Cli::command(), &args).map(|ok| println!("{ok}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("evloop: {msg}");
            ExitCode::FAILURE
        }
    }
}
