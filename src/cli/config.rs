//! `--config FILE`: flags from a TOML file, for any subcommand that has a `--config`
//! flag (`serve`, and any other that adds one: nothing here names a subcommand).
//!
//! The file's keys are the subcommand's long flag names (`proto = "redis"`,
//! `idle-timeout = "30s"`); each becomes `--key=value` on the command line, so values go
//! through the very parsers the flags use. An array is a repeated flag (`listen =
//! ["a", "b"]`); a boolean is a switch (`reuseport = true`; `false` leaves it out);
//! numbers are written as they are (`unix-mode = 0o660` stays octal). The flags from the
//! file are put right after the subcommand's name, before the real ones, and a flag
//! given on the command line drops the file's value for it: the command line wins.
//! An unknown key is an error naming the key and its line. The global flags
//! (`verbose`, `quiet`) may be keys too. SIGHUP re-reads the file: see [`super::reload`].
//!
//! `evloop check-config FILE` parses a file as `serve` would (or another subcommand's,
//! `--command NAME`) and starts nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, Args};
use toml::de::{DeTable, DeValue};

/// The flag that names the file, on every subcommand that takes one.
pub const CONFIG_FLAG: &str = "config";

/// `evloop check-config`.
#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    /// The TOML file to check.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The subcommand whose flags the file holds.
    #[arg(long, default_value = "serve", value_name = "SUBCOMMAND")]
    command: String,
}

/// Line (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The command-line arguments (`--key=value`, `--switch`) that `text` (TOML) stands
/// for, as flags of `cmd`. Keys for which `skip(id)` holds are left out (flags the
/// command line gives). Errors name the file, the key and its line.
pub fn args_from_toml(
    cmd: &clap::Command,
    file: &Path,
    text: &str,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let at =
        |span: std::ops::Range<usize>| format!("{}:{}", file.display(), line_of(text, span.start));
    let table = DeTable::parse(text).map_err(|e| match e.span() {
        Some(span) => format!("{}: {}", at(span), e.message()),
        None => format!("{}: {}", file.display(), e.message()),
    })?;
    let mut out = Vec::new();
    let name = cmd.get_name();
    // In the file's order (the map is sorted by key).
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let k: &str = key.get_ref();
        let where_ = at(key.span());
        let arg =
            cmd.get_arguments().find(|a| a.get_long() == Some(k) && k != CONFIG_FLAG).ok_or_else(
                || format!("{where_}: unknown key `{k}` (not a flag of `evloop {name}`)"),
            )?;
        if skip(arg.get_id().as_str()) {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let count = matches!(arg.get_action(), ArgAction::Count);
        let values: Vec<&DeValue<'_>> = match value.get_ref() {
            DeValue::Array(items) => {
                if !matches!(arg.get_action(), ArgAction::Append) {
                    return Err(format!("{where_}: `{k}` takes one value, not an array"));
                }
                items.iter().map(|v| v.get_ref()).collect()
            }
            v => vec![v],
        };
        for v in values {
            let text = match v {
                DeValue::Boolean(b) if switch => {
                    if *b {
                        out.push(OsString::from(format!("--{k}")));
                    }
                    continue;
                }
                DeValue::Integer(n) if count => {
                    let n: usize = n
                        .as_str()
                        .replace('_', "")
                        .parse()
                        .map_err(|_| format!("{where_}: `{k}` takes a small whole number"))?;
                    out.extend((0..n).map(|_| OsString::from(format!("--{k}"))));
                    continue;
                }
                _ if switch || count => {
                    return Err(format!("{where_}: `{k}` is a switch: write `{k} = true`"));
                }
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(n) => {
                    let digits = n.as_str().replace('_', "");
                    match n.radix() {
                        8 => format!("0o{digits}"),
                        16 => format!("0x{digits}"),
                        2 => format!("0b{digits}"),
                        _ => digits,
                    }
                }
                DeValue::Float(f) => f.as_str().replace('_', ""),
                DeValue::Boolean(b) => b.to_string(),
                DeValue::Datetime(d) => d.to_string(),
                DeValue::Array(_) | DeValue::Table(_) => {
                    return Err(format!("{where_}: `{k}` takes a string or a number here"));
                }
            };
            out.push(OsString::from(format!("--{k}={text}")));
        }
    }
    Ok(out)
}

/// `cmd` built: the global flags (`verbose`, `quiet`) are then flags of every
/// subcommand too, so the file may hold them.
pub fn built(mut cmd: clap::Command) -> clap::Command {
    cmd.build();
    cmd
}

/// Expands `--config FILE` in `argv` (the whole command line, program name first): when
/// the subcommand given has a `--config` flag and it is set, the file's flags are put
/// right after the subcommand's name, except those the command line gives itself.
/// A command line clap cannot parse (required flags aside, which the file may hold) is
/// returned as it is: the real parse reports it.
pub fn expand(cmd: clap::Command, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // Required flags may come from the file: not required for this first look.
    let relaxed = cmd.clone().mut_subcommands(|s| s.mut_args(|a| a.required(false)));
    let Ok(matches) = relaxed.try_get_matches_from(&argv) else { return Ok(argv) };
    let Some((name, sub)) = matches.subcommand() else { return Ok(argv) };
    let Ok(Some(file)) = sub.try_get_one::<PathBuf>(CONFIG_FLAG) else { return Ok(argv) };
    let cmd = built(cmd);
    let Some(sub_cmd) = cmd.find_subcommand(name) else { return Ok(argv) };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the config file {}: {e}", file.display()))?;
    let given = |id: &str| matches!(sub.value_source(id), Some(ValueSource::CommandLine));
    let extra = args_from_toml(sub_cmd, file, &text, given)?;
    // The subcommand's name is the first argument after the program's that is not a
    // (value-less) global flag.
    let Some(pos) = argv.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')) else {
        return Ok(argv);
    };
    let pos = pos + 2;
    let mut out = argv;
    out.splice(pos..pos, extra);
    Ok(out)
}

/// `evloop check-config FILE`: parses the file's flags as `evloop SUBCOMMAND` would,
/// starting nothing. `Ok` with a one-line summary, or the error.
pub fn check(cmd: clap::Command, args: &CheckConfigArgs) -> Result<String, String> {
    let cmd = built(cmd);
    let sub = cmd
        .find_subcommand(&args.command)
        .ok_or_else(|| format!("no subcommand `{}`", args.command))?;
    if !sub.get_arguments().any(|a| a.get_long() == Some(CONFIG_FLAG)) {
        return Err(format!("`evloop {}` takes no --config", args.command));
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read the config file {}: {e}", args.file.display()))?;
    let flags = args_from_toml(sub, &args.file, &text, |_| false)?;
    let mut argv = vec![OsString::from("evloop"), OsString::from(&args.command)];
    argv.extend(flags.iter().cloned());
    cmd.clone().try_get_matches_from(&argv).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid").trim_start_matches("error: ");
        format!("{}: {first}", args.file.display())
    })?;
    Ok(format!("{}: ok ({} flags for `evloop {}`)", args.file.display(), flags.len(), args.command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cmd() -> Command {
        Command::new("serve")
            .arg(Arg::new("proto").long("proto"))
            .arg(Arg::new("listen").long("listen").action(ArgAction::Append))
            .arg(Arg::new("reuseport").long("reuseport").action(ArgAction::SetTrue))
            .arg(Arg::new("unix_mode").long("unix-mode"))
            .arg(Arg::new("config").long("config").value_parser(clap::value_parser!(PathBuf)))
    }

    fn args(text: &str) -> Result<Vec<String>, String> {
        let out = args_from_toml(&cmd(), Path::new("f.toml"), text, |_| false)?;
        Ok(out.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn keys_become_flags() {
        let got = args(
            "proto = \"redis\"\nlisten = [\"a:1\", \"b:2\"]\nreuseport = true\nunix-mode = 0o660\n",
        )
        .unwrap();
        assert_eq!(
            got,
            ["--proto=redis", "--listen=a:1", "--listen=b:2", "--reuseport", "--unix-mode=0o660"]
        );
        assert_eq!(args("reuseport = false").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_name_the_key_and_line() {
        let e = args("proto = \"echo\"\n\nlistne = [\"x\"]\n").unwrap_err();
        assert!(e.contains("f.toml:3") && e.contains("`listne`"), "{e}");
        let e = args("config = \"other.toml\"").unwrap_err();
        assert!(e.contains("unknown key `config`"), "{e}");
        let e = args("proto = [\"a\", \"b\"]").unwrap_err();
        assert!(e.contains("one value"), "{e}");
        let e = args("reuseport = \"yes\"").unwrap_err();
        assert!(e.contains("switch"), "{e}");
        let e = args("proto = \n").unwrap_err();
        assert!(e.starts_with("f.toml:1"), "{e}");
    }

    #[test]
    fn a_required_flag_may_come_from_the_file() {
        let sub = Command::new("proxy")
            .arg(Arg::new("backend").long("backend").required(true).action(ArgAction::Append))
            .arg(Arg::new("config").long("config").value_parser(clap::value_parser!(PathBuf)));
        let top = Command::new("evloop").subcommand(sub);
        let file = std::env::temp_dir().join(format!("evloop-cfg-{}.toml", std::process::id()));
        std::fs::write(&file, "backend = [\"127.0.0.1:1\"]\n").unwrap();
        let argv: Vec<OsString> = ["evloop", "proxy", "--config", file.to_str().unwrap()]
            .iter()
            .map(OsString::from)
            .collect();
        let out = expand(top.clone(), argv).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(out[2], OsString::from("--backend=127.0.0.1:1"), "{out:?}");
        assert!(top.try_get_matches_from(&out).is_ok());
    }

    #[test]
    fn command_line_flags_win() {
        let top = Command::new("evloop").subcommand(cmd());
        let argv: Vec<OsString> = ["evloop", "serve", "--config", "/dev/null", "--proto", "http"]
            .iter()
            .map(OsString::from)
            .collect();
        // /dev/null is an empty TOML file: nothing is added.
        assert_eq!(expand(top.clone(), argv.clone()).unwrap(), argv);
        let skip = |id: &str| id == "proto";
        let out =
            args_from_toml(&cmd(), Path::new("f"), "proto = \"redis\"\nreuseport = true", skip)
                .unwrap();
        assert_eq!(out, [OsString::from("--reuseport")]);
    }
}
