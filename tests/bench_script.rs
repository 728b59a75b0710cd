//! `scripts/bench.sh` and `scripts/bench.py` parse their flags before doing anything:
//! `--help` prints usage without building or benchmarking, an unknown flag is an error,
//! `--list --only` selects rows, and the groups that run apart (peers, cores) are listed
//! only when named. Needs python3 and bash; without them the test says
//! SKIPPED on stdout (shown by `.ci/run`).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `prog args` from the repository root; panics if it runs past 20 s (the whole
/// benchmark would run for minutes), killing it.
fn run(prog: &str, args: &[&str]) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{prog} {args:?} still running after 20 s: it did not stop at the flags");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn have(prog: &str) -> bool {
    Command::new(prog).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn bench_flags_are_parsed_first_skipped_without_python3() {
    if !have("python3") || !have("bash") {
        println!("SKIPPED bench_flags_are_parsed_first_skipped_without_python3: no python3/bash");
        return;
    }
    println!("ran bench_flags_are_parsed_first_skipped_without_python3");
    for args in [&["scripts/bench.sh", "--help"][..], &["scripts/bench.sh", "--quick", "-h"]] {
        let o = run("bash", args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(out.starts_with("usage:") && out.contains("--only"), "{args:?}: {out}");
        assert_eq!(out.matches("usage:").count(), 1, "usage printed once: {out}");
    }
    for args in [&["scripts/bench.sh", "--bogus"][..], &["scripts/bench.sh", "nosuchgroup"]] {
        let o = run("bash", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("error:"), "{args:?}: {o:?}");
    }
    // Only lists the rows that name nginx: nothing is started, so nginx need not be
    // installed (the rows of a missing peer are listed, and skipped when run).
    let o = run("python3", &["scripts/bench.py", "--list", "--only", "nginx"]);
    assert!(o.status.success(), "{o:?}");
    let rows = String::from_utf8_lossy(&o.stdout);
    assert!(!rows.is_empty() && rows.lines().all(|l| l.contains("nginx")), "{rows}");
    let o = run("python3", &["scripts/bench.py", "--list", "--quick", "echo"]);
    let rows = String::from_utf8_lossy(&o.stdout);
    assert_eq!(rows.lines().count(), 3, "quick echo: three engines\n{rows}");
    // The cores group runs only when named: echo and HTTP at pipeline 1 and 16, each at
    // 1, 2, 4 and 8 loops.
    let o = run("python3", &["scripts/bench.py", "--list", "cores"]);
    let rows = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(rows.lines().count(), 16, "{rows}");
    assert!(rows.lines().all(|l| l.starts_with("cores | ")), "{rows}");
    assert_eq!(rows.lines().filter(|l| l.ends_with("| 8 loops")).count(), 4, "{rows}");
    let o = run("python3", &["scripts/bench.py", "--list"]);
    let rows = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !rows.is_empty(), "{o:?}");
    assert!(!rows.contains("cores |") && !rows.contains("peers |"), "{rows}");
}
