//! `cargo xtask`: the project's one-command entry points.
//!
//! - `cargo xtask ci` — what CI runs (`.ci/run`): installs the system
//!   packages the build and the tests need, prepares libvirt for the
//!   real-VM test, then fmt --check, clippy -D warnings, build, test.
//! - `cargo xtask dev` — installs what is missing and runs `hangard` with
//!   `config/hangard.toml`.
//! - `cargo xtask bench <webhooks|schedule>` — the benchmarks.
//! - `cargo xtask tidy` — house-style checks (every module says why it exists).
//!
//! It uses only the standard library, so it compiles before any system
//! library is installed.

mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("dev") => dev(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("tidy") => tidy::run(&root()),
        Some("deps") => system_packages(),
        _ => Err("usage: cargo xtask <ci | dev | bench webhooks|schedule | tidy | deps>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a command as root (directly, or through sudo).
fn as_root(args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").args(args);
        c
    }
}

fn missing_packages(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// The Debian packages the build needs (libvirt's C library for the `virt`
/// crate) and the tests use (the sqlite3 CLI for the at-rest check,
/// systemd-analyze for the unit file, ISO tools for NoCloud seeds).
const BUILD_PACKAGES: &[&str] = &["libvirt-dev", "pkg-config", "sqlite3", "genisoimage"];

fn system_packages() -> Result {
    step("system packages");
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "not a Debian/Ubuntu system: install libvirt's development files and pkg-config yourself"
        );
        return Ok(());
    }
    let missing = missing_packages(BUILD_PACKAGES);
    if missing.is_empty() {
        eprintln!("all present: {}", BUILD_PACKAGES.join(" "));
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    run(as_root(&["apt-get", "update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    run(as_root(&args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Prepares a libvirt daemon and the tiny test guest for the real-VM tests.
/// Returns the environment the tests need, or `None` (with a loud message)
/// when this machine cannot run them.
fn libvirt_setup() -> Option<Vec<(String, String)>> {
    step("libvirt daemon and test guest");
    let root = root();
    let setup = root.join(".ci/libvirt/setup.sh");
    let guest = root.join(".ci/libvirt/build-guest.sh");
    if !setup.exists() || !guest.exists() {
        eprintln!("!!! SKIPPING real-libvirt tests: .ci/libvirt scripts are missing");
        return None;
    }
    let cache = std::env::var("HANGAR_GUEST_CACHE")
        .unwrap_or_else(|_| root.join("target/hangar-guest").display().to_string());
    let ok = run(Command::new("bash").arg(&setup))
        .and_then(|_| run(Command::new("bash").arg(&guest).arg(&cache)));
    match ok {
        Ok(()) => Some(vec![
            ("HANGAR_LIBVIRT_TESTS".into(), "1".into()),
            ("HANGAR_GUEST_CACHE".into(), cache),
        ]),
        Err(e) => {
            eprintln!(
                "\n!!! SKIPPING real-libvirt tests: this machine cannot run a libvirt daemon: {e}\n"
            );
            None
        }
    }
}

fn ci() -> Result {
    system_packages()?;
    step("tidy");
    tidy::run(&root())?;
    step("rustfmt");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let unit = root().join("deploy/systemd/hangard.service");
    if unit.exists() {
        step("systemd unit");
        tidy::verify_unit(&unit)?;
    }
    let libvirt_env = libvirt_setup();
    step("build binaries (end-to-end tests run them)");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    step("tests");
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"]);
    for (k, v) in libvirt_env.unwrap_or_default() {
        test.env(k, v);
    }
    run(&mut test)?;
    eprintln!("\nci: all green");
    Ok(())
}

fn dev(args: &[String]) -> Result {
    system_packages()?;
    let config = args
        .first()
        .cloned()
        .unwrap_or_else(|| root().join("config/hangard.toml").display().to_string());
    step(&format!("hangard --config {config}"));
    run(cargo()
        .args([
            "run",
            "--package",
            "hangar-daemon",
            "--bin",
            "hangard",
            "--",
            "--config",
        ])
        .arg(&config))
}

fn bench(args: &[String]) -> Result {
    system_packages()?;
    let which = args.first().map(String::as_str).unwrap_or("all");
    if !matches!(which, "webhooks" | "schedule" | "all") {
        return Err(format!(
            "unknown bench {which:?}: use webhooks, schedule or all"
        ));
    }
    step("build release binaries");
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "hangar-daemon",
        "--package",
        "hangar-e2e",
        "--package",
        "hangar-testkit",
        "--bins",
    ]))?;
    step(&format!("bench {which}"));
    let release = root().join("target/release");
    run(Command::new(release.join("hangar-bench"))
        .arg(which)
        .current_dir(root())
        .env("HANGAR_BIN_DIR", &release)
        .env("HANGAR_E2E_LOG", "warn"))
}
