//! SIGHUP with `--config FILE`: re-reading the file while the server runs.
//!
//! The whole command line is expanded again ([`config::expand`]) and parsed as at start,
//! so the command line still wins over the file. What can change at runtime is applied:
//! the log level (`verbose`, `quiet`; here, with [`log::set_max_level`]), and, through
//! the [`Reread`] handed to the server ([`evloop::serve::reload`]), the TLS files and
//! the proxy's backends. Every other key of the file whose value changed is named in a
//! warning: it needs a restart. A file that cannot be read or parsed is an error line
//! naming it (and the line), and nothing changes.
//!
//! Logging ([`init_logging`]) is set up so that the level can change: without
//! `RUST_LOG`, env_logger lets everything through and the `log` crate's maximum level
//! decides; with `RUST_LOG`, its filter is used as given and decides (a level change in
//! the file is then only a warning).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::CommandFactory;
use clap::parser::ValueSource;
use log::{LevelFilter, error, info, warn};

use evloop::serve::reload::{Reread, Rereader};

use super::{Cli, Command, config};

/// The level `-q`/`-v` (and the file's `quiet`/`verbose`) ask for.
pub fn level(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Logging to stderr: `-q` errors only, default info, `-v` debug, `-vv` trace;
/// `RUST_LOG` overrides (and then decides for good). Without `RUST_LOG` the level can
/// change at runtime with [`log::set_max_level`].
pub fn init_logging(verbose: u8, quiet: bool) {
    let wanted = level(verbose, quiet);
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default());
    builder.format_timestamp_millis();
    if std::env::var_os("RUST_LOG").is_some() {
        builder.init();
    } else {
        builder.filter_level(LevelFilter::Trace).init();
        log::set_max_level(wanted);
    }
}

/// Keys that change at runtime (the rest needs a restart).
const LIVE_KEYS: &[&str] =
    &["verbose", "quiet", "tls-cert", "tls-key", "tls-client-ca", "backend", "backends-file"];

/// The file's flags, key by key (values in order), leaving out those the command line
/// gives (they win).
type KeyValues = BTreeMap<String, Vec<String>>;

fn key_values(flags: &[OsString]) -> KeyValues {
    let mut out = KeyValues::new();
    for f in flags {
        let f = f.to_string_lossy();
        let f = f.trim_start_matches("--");
        let (k, v) = f.split_once('=').unwrap_or((f, "true"));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

/// What the rereader remembers between SIGHUPs.
struct State {
    /// The file's keys in force: live keys as last applied, the others as at start.
    keys: KeyValues,
    /// The level the command line and the file ask for, as last applied.
    level: LevelFilter,
}

/// The file's flags of `sub` (those the command line does not give), or the error
/// (naming the file and line).
fn file_flags(argv: &[OsString], sub: &str, file: &Path) -> Result<KeyValues, String> {
    let relaxed = Cli::command().mut_subcommands(|s| s.mut_args(|a| a.required(false)));
    let matches = relaxed.try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let given = |id: &str| {
        matches
            .subcommand_matches(sub)
            .is_some_and(|m| matches!(m.value_source(id), Some(ValueSource::CommandLine)))
    };
    let cmd = config::built(Cli::command());
    let sub_cmd = cmd.find_subcommand(sub).ok_or_else(|| format!("no subcommand `{sub}`"))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the config file {}: {e}", file.display()))?;
    Ok(key_values(&config::args_from_toml(sub_cmd, file, &text, given)?))
}

/// The SIGHUP rereader of `evloop SUB --config FILE`, or `None` without a file (SIGHUP
/// then does what it did without one).
pub fn rereader(sub: &'static str, file: Option<&PathBuf>) -> Option<Rereader> {
    let file = file?.clone();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from_expanded(&argv).ok()?;
    let keys = file_flags(&argv, sub, &file).ok()?;
    let state = Mutex::new(State { keys, level: level(cli.verbose, cli.quiet) });
    Some(Rereader(Arc::new(move || {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        reread(&argv, sub, &file, &mut state)
    })))
}

impl Cli {
    /// Parses `argv` with `--config` expanded, as `main` does.
    fn try_parse_from_expanded(argv: &[OsString]) -> Result<Cli, String> {
        let argv = config::expand(Cli::command(), argv.to_vec())?;
        <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| {
            let msg = e.to_string();
            msg.lines().next().unwrap_or("invalid").trim_start_matches("error: ").to_string()
        })
    }
}

/// One SIGHUP: re-reads `file`, applies the log level, warns about keys that need a
/// restart, and returns the rest to apply (or `None`, logged, when it does not parse).
fn reread(argv: &[OsString], sub: &str, file: &Path, state: &mut State) -> Option<Reread> {
    let shown = file.display();
    info!("SIGHUP: re-reading {shown}");
    let parsed = Cli::try_parse_from_expanded(argv).and_then(|cli| {
        let keys = file_flags(argv, sub, file)?;
        Ok((cli, keys))
    });
    let (cli, keys) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let e = if e.contains(&*shown.to_string()) { e } else { format!("{shown}: {e}") };
            error!("SIGHUP: {e}; keeping the configuration in force");
            return None;
        }
    };
    // Keys that need a restart.
    let mut all: Vec<&String> = keys.keys().chain(state.keys.keys()).collect();
    all.sort();
    all.dedup();
    for k in all {
        if !LIVE_KEYS.contains(&k.as_str()) && keys.get(k) != state.keys.get(k) {
            warn!("`{k}` changed in {shown} but needs a restart; keeping the value in force");
        }
    }
    for k in LIVE_KEYS {
        match keys.get(*k) {
            Some(v) => state.keys.insert(k.to_string(), v.clone()),
            None => state.keys.remove(*k),
        };
    }
    // The log level.
    let new = level(cli.verbose, cli.quiet);
    if new != state.level {
        if std::env::var_os("RUST_LOG").is_some() {
            warn!("log level: RUST_LOG is set and decides; {} in {shown} is ignored", new);
        } else {
            // Said at the more verbose of the two, so the line is seen.
            log::set_max_level(new.max(state.level));
            info!(
                "log level: {} -> {}",
                state.level.as_str().to_lowercase(),
                new.as_str().to_lowercase()
            );
            log::set_max_level(new);
        }
        state.level = new;
    }
    log::debug!("SIGHUP: {shown}: {} keys in force", state.keys.len());
    let mut now = Reread::default();
    match cli.command {
        Command::Serve(args) => now.tls = args.tls.files(),
        Command::Proxy(args) => {
            now.tls = args.tls.files();
            let (backends, backends_file) = args.backends();
            now.backends = backends;
            now.backends_file = backends_file;
        }
        _ => {}
    }
    Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_group_by_key() {
        let flags: Vec<OsString> =
            ["--listen=a", "--listen=b", "--reuseport", "--proto=redis"].map(OsString::from).into();
        let kv = key_values(&flags);
        assert_eq!(kv["listen"], ["a", "b"]);
        assert_eq!(kv["reuseport"], ["true"]);
        assert_eq!(kv["proto"], ["redis"]);
    }

    #[test]
    fn levels() {
        assert_eq!(level(0, true), LevelFilter::Error);
        assert_eq!(level(0, false), LevelFilter::Info);
        assert_eq!(level(1, false), LevelFilter::Debug);
        assert_eq!(level(3, false), LevelFilter::Trace);
    }
}
