//! Packaging extras of the command line: the version string (with the git commit when
//! built from a checkout, see `build.rs`), shell completions (`evloop completions
//! bash|zsh|fish|...`, clap_complete) and the man page (`evloop man`, clap_mangen).

use std::io::{self, Write};

use clap::Args;
use clap_complete::Shell;

/// `evloop --version`: `0.1.0 (git 1a2b3c4)`, or `0.1.0` outside a checkout.
pub const VERSION: &str = env!("EVLOOP_VERSION");

/// `evloop completions SHELL`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(mut cmd: clap::Command, args: &CompletionsArgs) -> Result<(), String> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "evloop", &mut out);
    write_stdout(&out)
}

/// Prints the man page (roff, section 1) on stdout: the top-level page, then one
/// section per subcommand with its flags.
pub fn man(cmd: clap::Command) -> Result<(), String> {
    let mut out = Vec::new();
    let render = |c: clap::Command, out: &mut Vec<u8>| {
        clap_mangen::Man::new(c).render(out).map_err(|e| format!("cannot render the man page: {e}"))
    };
    render(cmd.clone(), &mut out)?;
    // clap_mangen begins with the definition of the quote string `Aq`; put the `.TH`
    // title line first, as man pages begin (the definition still precedes every use).
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Some(start) = text.find("\n.TH ") {
        let end = text[start + 1..].find('\n').map_or(text.len(), |i| start + 2 + i);
        out =
            format!("{}{}{}", &text[start + 1..end], &text[..start + 1], &text[end..]).into_bytes();
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut page = Vec::new();
        let bin = format!("evloop {}", sub.get_name());
        render(sub.clone().bin_name(bin).version(VERSION), &mut page)?;
        // Only the sections after the subcommand page's own `.TH` header.
        let text = String::from_utf8_lossy(&page);
        let body = text.split_once('\n').map_or("", |(_, rest)| rest);
        out.extend_from_slice(body.as_bytes());
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // `evloop man | head` closes the pipe early: not an error.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}
