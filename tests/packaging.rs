//! Packaging: shell completions, the man page, `--version`, and the configuration file
//! (`--config`, `check-config`), through the `evloop` binary.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::child::{Kid, line_starting, spawn_piped};

fn evloop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run evloop")
}

/// Starts `evloop ARGS`, waits for its first stderr line starting with `prefix`, kills
/// it and returns that line.
fn ready_line_of(args: &[&str], prefix: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evloop"));
    cmd.args(args).stdin(Stdio::null());
    let (child, rx) = spawn_piped(cmd);
    let kid = Kid::new(child);
    let ready = line_starting(&rx, prefix);
    drop(kid);
    ready
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file under the temp directory with `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("evloop-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write a temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn completions_for_each_shell_mention_serve() {
    for shell in ["bash", "zsh", "fish"] {
        let out = evloop(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(!script.is_empty() && script.contains("serve"), "{shell}: {script}");
    }
    assert!(!evloop(&["completions", "nosuchshell"]).status.success());
}

#[test]
fn man_prints_a_man_page() {
    let out = evloop(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".TH evloop 1"), "{}", &page[..page.len().min(200)]);
    for part in [".SH NAME", ".SH SYNOPSIS", "evloop serve", "\\-\\-listen", "check\\-config"] {
        assert!(page.contains(part), "the man page lacks {part}");
    }
}

#[test]
fn version_prints_the_version() {
    let out = evloop(&["--version"]);
    assert!(out.status.success());
    let v = stdout(&out);
    assert!(v.starts_with(&format!("evloop {}", env!("CARGO_PKG_VERSION"))), "{v}");
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key_and_line() {
    let good = TempFile::new(
        "good.toml",
        "# a comment\nproto = \"redis\"\nlisten = [\"127.0.0.1:6380\", \"unix:/tmp/x.sock\"]\n\
         idle-timeout = \"30s\"\nreuseport = true\nloops = 2\nunix-mode = 0o660\n",
    );
    let out = evloop(&["check-config", good.path()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok"), "{}", stdout(&out));

    let unknown = TempFile::new("unknown.toml", "proto = \"http\"\n\nidle-timeot = \"5s\"\n");
    let out = evloop(&["check-config", unknown.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3", unknown.path())) && err.contains("idle-timeot"), "{err}");

    let bad_value = TempFile::new("value.toml", "idle-timeout = \"soon\"\n");
    let out = evloop(&["check-config", bad_value.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--idle-timeout"), "{}", stderr(&out));

    let bad_toml = TempFile::new("syntax.toml", "proto = \"http\"\nloops = = 3\n");
    let out = evloop(&["check-config", bad_toml.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(":2"), "{}", stderr(&out));

    let out = evloop(&["check-config", "/nonexistent/evloop.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_reads_the_config_file_and_the_command_line_wins() {
    let file = TempFile::new(
        "serve.toml",
        "proto = \"http\"\nlisten = [\"127.0.0.1:1\"]\nloops = 1\nmax-conns = 5\n",
    );
    // The command line's --listen replaces the file's; --proto redis replaces http.
    let ready = ready_line_of(
        &["serve", "--config", file.path(), "--proto", "redis", "--listen", "127.0.0.1:0"],
        "evloop: serving",
    );
    assert!(ready.starts_with("evloop: serving redis on 127.0.0.1:"), "{ready}");
    assert!(!ready.contains("127.0.0.1:1 "), "{ready}");
    assert!(ready.contains("1 loop"), "from the file: {ready}");

    let unknown = TempFile::new("serve-bad.toml", "protocol = \"http\"\n");
    let out = evloop(&["serve", "--config", unknown.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown key `protocol`"), "{}", stderr(&out));
}

#[test]
fn proxy_reads_the_config_file_and_the_command_line_wins() {
    let file = TempFile::new(
        "proxy.toml",
        "backend = [\"127.0.0.1:9\", \"127.0.0.1:10\"]\nlisten = [\"127.0.0.1:1\"]\n\
         loops = 1\nbalance = \"least-conn\"\nhealth-check = \"off\"\n",
    );
    let out = evloop(&["check-config", "--command", "proxy", file.path()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("for `evloop proxy`"), "{}", stdout(&out));

    // The command line's --listen replaces the file's; the backends come from the file.
    let ready = ready_line_of(
        &["proxy", "--config", file.path(), "--listen", "127.0.0.1:0"],
        "evloop: proxying",
    );
    assert!(ready.starts_with("evloop: proxying on 127.0.0.1:"), "{ready}");
    assert!(!ready.contains("127.0.0.1:1 "), "{ready}");
    assert!(ready.contains("to 2 backends"), "from the file: {ready}");
    assert!(ready.contains("least-conn") && ready.contains("1 loop,"), "from the file: {ready}");
}
