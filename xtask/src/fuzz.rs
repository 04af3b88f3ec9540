//! `cargo xtask fuzz [TARGET] [--secs N]`: the long, coverage-guided run of
//! the fuzz targets in `hangar-fuzz` under libFuzzer (cargo-fuzz, nightly
//! toolchain). The short run needs none of this: it is part of
//! `cargo test` (`fuzz/tests/short_runs.rs`).
//!
//! Each target starts from its seeds (`fuzz/corpus/<target>/`, the shipped
//! configs for `config`) and its kept crashes (`fuzz/regressions/<target>/`);
//! what libFuzzer learns goes to `target/fuzz/corpus/<target>/` and is kept
//! between runs. A crash is written to `fuzz/regressions/<target>/`, where
//! the stable test replays it until the bug is fixed.

use std::process::Command;

use crate::{Result, root, run, step};

const TARGETS: [&str; 3] = ["webhook", "config", "api"];

fn works(c: &mut Command) -> bool {
    c.output().is_ok_and(|o| o.status.success())
}

/// `cargo` of the nightly toolchain, through rustup.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]).current_dir(root());
    c
}

pub fn run_cmd(args: &[String]) -> Result {
    let mut targets: Vec<&str> = Vec::new();
    let mut secs: u64 = 60;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number of seconds")?;
                secs = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(format!("--secs {v:?}: not a positive number of seconds"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => {
                return Err(format!(
                    "unknown fuzz target or option {other:?}; usage: cargo xtask fuzz [{}] [--secs N]",
                    TARGETS.join("|")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }

    step("nightly toolchain and cargo-fuzz");
    if !works(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Err(
            "libFuzzer needs the nightly toolchain: rustup toolchain install nightly \
             (the short stable run is `cargo test -p hangar-fuzz`)"
                .into(),
        );
    }
    if !works(nightly_cargo().args(["fuzz", "--version"])) {
        eprintln!(
            "cargo-fuzz is not installed: installing it with `cargo install --locked cargo-fuzz`"
        );
        run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    // The harness is its own workspace; its lock (not committed) starts
    // each run as a copy of the workspace's, so it builds the versions the
    // tests use and adds only libFuzzer's own.
    let lock = root().join("fuzz/libfuzzer/Cargo.lock");
    std::fs::copy(root().join("Cargo.lock"), &lock)
        .map_err(|e| format!("{}: {e}", lock.display()))?;

    for t in targets {
        step(&format!("fuzz {t} for {secs} s"));
        let corpus = root().join("target/fuzz/corpus").join(t);
        let crashes = root().join("fuzz/regressions").join(t);
        for dir in [&corpus, &crashes] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut c = nightly_cargo();
        c.args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz/libfuzzer",
            "--target-dir",
            "target/fuzz/build",
            // Safe Rust: the sanitizer finds nothing a panic does not.
            "--sanitizer",
            "none",
            // Overflow checks on, as in the tests.
            "--debug-assertions",
            t,
        ])
        .arg(&corpus)
        .arg(root().join("fuzz/corpus").join(t))
        .arg(&crashes);
        if t == "config" {
            c.arg(root().join("config"));
        }
        c.arg("--").args([
            format!("-max_total_time={secs}"),
            format!("-artifact_prefix={}/", crashes.display()),
            "-timeout=10".into(),
            "-rss_limit_mb=2048".into(),
            "-print_final_stats=1".into(),
        ]);
        run(&mut c).map_err(|e| {
            format!(
                "{e}\nfuzz target {t} found a failing input: it is in {}/ (crash-…); \
                 `cargo test -p hangar-fuzz` replays it until the bug is fixed — fix it and \
                 commit the input as a regression test",
                crashes.display()
            )
        })?;
    }
    eprintln!("\nfuzz: no failures");
    Ok(())
}
