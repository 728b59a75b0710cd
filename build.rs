//! Build script: `EVLOOP_VERSION` for `evloop --version`: the crate's version, with the
//! git commit when built from a checkout (`git rev-parse --short HEAD`); without git, or
//! outside a checkout, the version alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    let full = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            // Rebuild when HEAD moves: HEAD itself, and the branch it points to.
            if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
                println!("cargo:rerun-if-changed={head}");
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &branch])
            {
                println!("cargo:rerun-if-changed={path}");
            }
            format!("{version} (git {commit})")
        }
        None => version,
    };
    println!("cargo:rustc-env=EVLOOP_VERSION={full}");
}
