//! `cargo xtask`: the project's one-command entry points.
//!
//! - `cargo xtask ci` — what CI runs (`.ci/run`): installs the system
//!   packages the build and the tests need (cloud-init for `cloud-init
//!   schema` among them), prepares libvirt for the
//!   real-VM test, then fmt --check, clippy -D warnings, build, test; the
//!   tests run with a throwaway PostgreSQL server (`postgres`) so the
//!   store's suite runs on both backends.
//! - `cargo xtask dev [--release] [CONFIG]` — installs what is missing and
//!   runs `hangard` with `config/hangard.toml` (`--release`: the release
//!   build, not a debug one).
//! - `cargo xtask try` — the whole flow without GitHub (`try_it`): a fake
//!   GitHub, `hangard` on the dev config, the README's walkthrough, one job.
//! - `cargo xtask bench <webhooks|schedule|queue|idle-rss|scale|scalesets|postgres>` — the
//!   benchmarks; `postgres` starts a throwaway PostgreSQL server set as a
//!   production one would be (`postgres::Purpose::Bench`) and compares it
//!   with SQLite.
//! - `cargo xtask simulate [SCENARIO|all] [--seed N] [--dev]` — the
//!   deterministic simulation (`crates/hangar-sim`, scenarios in
//!   `sim/scenarios/`), built in release unless `--dev`; fails when a
//!   scenario misses one of its goals.
//! - `cargo xtask faults [--short] [--release] [--seed N] [--cluster [N]] [SCENARIO…]`
//!   — the fault suite against the real `hangard` (a short run is part of
//!   `ci`); `--cluster [N]` runs it against N replicas (default 2) on a
//!   throwaway PostgreSQL server, with the lease-holder kill -9 failover
//!   measurement (a short two-replica run is part of `ci` too).
//! - `cargo xtask store-tests [ARGS…]` — the store's tests on SQLite and on
//!   a throwaway PostgreSQL server (`cargo test -p hangar-store ARGS…`).
//! - `cargo xtask tidy` — house-style checks (every module says why it exists).
//! - `cargo xtask terraform` — syntax check of `deploy/azure/*.tf` (part of `ci`).
//! - `cargo xtask deb` — builds the .deb from the debug binaries and checks
//!   it (part of `ci`; build the binaries first).
//! - `cargo xtask fuzz [TARGET] [--secs N]` — the long libFuzzer run of the
//!   fuzz targets (nightly; installs cargo-fuzz when missing). Their short
//!   run is part of `cargo test`, so of `ci`.
//!
//! It uses only the standard library, so it compiles before any system
//! library is installed.

mod fuzz;
mod postgres;
mod tidy;
mod try_it;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("dev") => dev(&args[1..]),
        Some("try") => try_it::run_try(),
        Some("bench") => bench(&args[1..]),
        Some("simulate") => simulate(&args[1..]),
        Some("dist") => dist(),
        Some("faults") => faults(&args[1..]),
        Some("tidy") => tidy::run(&root()),
        Some("store-tests") => store_tests(&args[1..]),
        Some("deps") => system_packages(),
        Some("terraform") => terraform_check(),
        Some("deb") => deb_check(),
        Some("fuzz") => fuzz::run_cmd(&args[1..]),
        _ => Err(
            "usage: cargo xtask <ci | dev [--release] [CONFIG] | try | bench webhooks|schedule|queue|idle-rss|scale|scalesets|postgres [--quick] | simulate [SCENARIO|all] [--seed N] [--dev] | dist | tidy | deps | terraform | deb | fuzz [TARGET] [--secs N] | faults [--short] [--release] [--seed N] [--cluster [N]] [SCENARIO…] | store-tests [ARGS…]>"
                .into(),
        ),
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
/// systemd-analyze for the unit file, ISO tools for NoCloud seeds, curl
/// for the garm-style boot script).
const BUILD_PACKAGES: &[&str] = &[
    "libvirt-dev",
    "pkg-config",
    "sqlite3",
    "genisoimage",
    "curl",
];

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

/// Debian's Chromium and its WebDriver, for the dashboard's browser test
/// (`tests/tests/ui_browser.rs`, which fails without them under `CI`).
fn browser_packages() -> Result {
    step("browser for the dashboard tests");
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("!!! not a Debian system: install chromium and chromedriver yourself");
        return Ok(());
    }
    let missing = missing_packages(&["chromium", "chromium-driver"]);
    if missing.is_empty() {
        eprintln!("all present: chromium chromium-driver");
        return Ok(());
    }
    apt_install(&missing)
}

fn apt_install(missing: &[String]) -> Result {
    eprintln!("installing: {}", missing.join(" "));
    run(as_root(&["apt-get", "update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    run(as_root(&args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// cloud-init marks itself off with this file: its boot-time units and
/// generator do nothing while it exists.
const CLOUD_INIT_OFF: &str = "/etc/cloud/cloud-init.disabled";

/// Debian's `cloud-init`, for `cloud-init schema`, the standard validator
/// the user-data tests run (they fail without it under `CI`). Installing
/// it starts nothing (no service, no network change); so that it never
/// runs at this machine's next boot either, [`CLOUD_INIT_OFF`] is written
/// first when cloud-init was not installed before.
fn cloud_init_package() -> Result {
    step("cloud-init (the user-data validator)");
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "!!! not a Debian system: install cloud-init yourself (`cloud-init schema` checks the user-data; the tests fail without it under CI)"
        );
        return Ok(());
    }
    let missing = missing_packages(&["cloud-init"]);
    if missing.is_empty() {
        eprintln!("present: cloud-init");
        return Ok(());
    }
    run(&mut as_root(&["mkdir", "-p", "/etc/cloud"]))?;
    run(&mut as_root(&["touch", CLOUD_INIT_OFF]))?;
    eprintln!("{CLOUD_INIT_OFF} written: cloud-init will not run at boot");
    apt_install(&missing)
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

/// Builds the Debian package from the debug binaries and checks what it
/// holds: binaries, unit, config as a conffile, maintainer scripts, shell
/// completions and man pages, the version `hangard --version` reports (not
/// a placeholder), `adduser` and an ISO tool among its dependencies — and
/// no secrets, which the postinst generates on the target machine.
fn deb_check() -> Result {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("!!! not a Debian system: the .deb packaging is not checked");
        return Ok(());
    }
    step("debian package");
    let out = root().join("target/deb-check");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new("bash")
        .arg(root().join("deploy/build-deb.sh"))
        .args(["--fast", "--bin-dir"])
        .arg(root().join("target/debug"))
        .arg("--out")
        .arg(&out))?;
    let deb = std::fs::read_dir(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("build-deb.sh made no .deb")?;
    let listing = |flag: &str| -> Result<String> {
        let o = Command::new("dpkg-deb")
            .arg(flag)
            .arg(&deb)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("dpkg-deb {flag} failed"));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let contents = listing("--contents")?;
    for want in [
        "./usr/bin/hangard",
        "./usr/bin/hangar",
        "./lib/systemd/system/hangard.service",
        "./etc/hangar/hangard.toml",
        "./usr/share/doc/hangar/hangard.example.toml",
        "./usr/share/bash-completion/completions/hangar",
        "./usr/share/zsh/vendor-completions/_hangar",
        "./usr/share/fish/vendor_completions.d/hangar.fish",
        "./usr/share/man/man1/hangar.1.gz",
        "./usr/share/man/man8/hangard.8.gz",
    ] {
        if !contents.lines().any(|l| l.ends_with(want)) {
            return Err(format!("the .deb lacks {want}:\n{contents}"));
        }
    }
    if contents.contains("credentials/passphrase") || contents.contains("credentials/jwt-secret") {
        return Err("the .deb ships generated secrets".into());
    }
    let info = listing("--info")?;
    for want in ["Package: hangar", "postinst", "conffiles", "Depends: libc6"] {
        if !info.contains(want) {
            return Err(format!("the .deb's control data lacks {want:?}:\n{info}"));
        }
    }
    let field = |name: &str| -> Result<String> {
        let o = Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .arg(name)
            .output()
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let reported = Command::new(root().join("target/debug/hangard"))
        .arg("--version")
        .output()
        .map_err(|e| format!("hangard --version: {e}"))?;
    let reported = String::from_utf8_lossy(&reported.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let version = field("Version")?;
    if version != reported || version.is_empty() || version == "0.0.0" {
        return Err(format!(
            "the .deb's Version is {version:?}, hangard --version says {reported:?} (and 0.0.0 is no version)"
        ));
    }
    let depends = field("Depends")?;
    let deps: Vec<&str> = depends.split(',').map(str::trim).collect();
    for want in ["adduser", "genisoimage | xorriso"] {
        if !deps.contains(&want) {
            return Err(format!("the .deb's Depends lacks {want:?}: {depends}"));
        }
    }
    eprintln!("debian package: {} OK", deb.display());
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Syntax check of the Azure deployment (`deploy/azure/*.tf`).
/// `terraform validate` needs the azurerm provider from the Terraform
/// registry, which CI cannot reach, so: `terraform fmt -check` where
/// terraform is installed, and always a real HCL2 parser (python-hcl2,
/// pinned, in a venv under target/ that this makes on first use) that also
/// checks that every `var.`, `local.`, `data.` and resource reference and
/// every `${path.module}/…` file exists. When no checker can be installed it
/// says so loudly and does not fail.
fn terraform_check() -> Result {
    const PACKAGES: &[&str] = &["python-hcl2==8.1.4", "lark==1.3.1"];
    const CHECK: &str = r##"
import os, re, sys
import hcl2

files = sys.argv[1:]
docs, errors = {}, []
for f in files:
    try:
        with open(f) as fh:
            docs[f] = hcl2.load(fh)
    except Exception as e:
        errors.append(f"{f}: {type(e).__name__}: {e}")
if errors:
    sys.exit("HCL syntax errors:\n  " + "\n  ".join(errors))

def label(k):
    return k.strip('"')

declared = {"var": set(), "local": set(), "data": set(), "resource": set(), "module": set()}
prefixes = set()
for d in docs.values():
    for b in d.get("variable", []):
        declared["var"].update(label(k) for k in b if not k.startswith("__"))
    for b in d.get("locals", []):
        declared["local"].update(k for k in b if not k.startswith("__"))
    for kind in ("resource", "data"):
        for b in d.get(kind, []):
            for t, inst in b.items():
                if t.startswith("__"):
                    continue
                for n in inst:
                    if not n.startswith("__"):
                        declared[kind].add(f"{label(t)}.{label(n)}")
    for b in d.get("module", []):
        declared["module"].update(label(k) for k in b if not k.startswith("__"))
    for t in d.get("terraform", []):
        for rp in t.get("required_providers", []):
            prefixes.update(k for k in rp if not k.startswith("__"))

def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)

ident = r"[A-Za-z_][A-Za-z0-9_-]*"
patterns = [
    ("var", re.compile(rf"(?<![\w.])var\.({ident})")),
    ("local", re.compile(rf"(?<![\w.])local\.({ident})")),
    ("data", re.compile(rf"(?<![\w.])data\.({ident}\.{ident})")),
    ("module", re.compile(rf"(?<![\w.])module\.({ident})")),
]
if prefixes:
    alt = "|".join(sorted(map(re.escape, prefixes)))
    patterns.append(("resource", re.compile(rf"(?<![\w.])((?:{alt})_\w+\.{ident})")))
module_file = re.compile(r'\$\{path\.module\}/([^"$]+)"')
refs = 0
for f, d in docs.items():
    for s in strings(d):
        for kind, p in patterns:
            for m in p.finditer(s):
                refs += 1
                if m.group(1) not in declared[kind]:
                    errors.append(f"{f}: {kind} {m.group(1)} is not declared")
        for m in module_file.finditer(s):
            if not os.path.exists(os.path.join(os.path.dirname(f), m.group(1))):
                errors.append(f"{f}: file {m.group(1)} does not exist")
if errors:
    sys.exit("Terraform references that do not resolve:\n  " + "\n  ".join(sorted(set(errors))))
print(f"terraform: {len(files)} files parse as HCL2; {refs} references resolve")
"##;

    step("terraform syntax");
    let dir = root().join("deploy/azure");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "tf"));
    files.sort();
    if files.is_empty() {
        eprintln!("no deploy/azure/*.tf: nothing to check");
        return Ok(());
    }
    let works = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());

    // terraform itself, where present: parses, and checks the layout.
    let terraform = works(Command::new("terraform").arg("version"));
    if terraform {
        run(Command::new("terraform")
            .args(["fmt", "-check", "-diff", "-no-color"])
            .arg(&dir))?;
    }

    // python-hcl2 in a venv of its own (PyPI is reachable where the
    // Terraform registry is not).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root().join(t))
        .unwrap_or_else(|| root().join("target"));
    let venv = target.join("hcl-venv");
    let python = venv.join("bin/python");
    let pinned = PACKAGES[0].split_once("==").unwrap_or_default();
    let ready = |python: &Path| {
        works(Command::new(python).arg("-c").arg(format!(
            "import sys, importlib.metadata as m, hcl2; sys.exit(m.version({:?}) != {:?})",
            pinned.0, pinned.1
        )))
    };
    let install = || -> Result {
        let apt = |pkgs: &[&str]| -> Result {
            let missing = missing_packages(pkgs);
            if missing.is_empty() || !works(Command::new("dpkg-query").arg("--version")) {
                return Err(format!("{} did not help", pkgs.join(" ")));
            }
            run(as_root(&["apt-get", "update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
            let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
            args.extend(missing.iter().map(String::as_str));
            run(as_root(&args).env("DEBIAN_FRONTEND", "noninteractive"))
        };
        if !works(Command::new("python3").arg("--version")) {
            apt(&["python3", "python3-venv"])?;
        }
        let mut make_venv = Command::new("python3");
        make_venv.args(["-m", "venv", "--clear"]).arg(&venv);
        if run(&mut make_venv).is_err() {
            // Debian's python3 needs python3-venv for `-m venv` (ensurepip).
            apt(&["python3-venv"])?;
            run(&mut make_venv)?;
        }
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(PACKAGES))
    };
    if !ready(&python)
        && let Err(e) = install()
    {
        eprintln!(
            "\n!!! deploy/azure/*.tf {}: no HCL2 parser could be installed ({e})\n",
            if terraform {
                "checked by `terraform fmt` only (references NOT checked)"
            } else {
                "NOT syntax-checked"
            }
        );
        return Ok(());
    }
    let script = venv.join("check-terraform.py");
    std::fs::write(&script, CHECK).map_err(|e| format!("{}: {e}", script.display()))?;
    run(Command::new(&python).arg(&script).args(&files))
}

fn ci() -> Result {
    system_packages()?;
    cloud_init_package()?;
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
    terraform_check()?;
    let libvirt_env = libvirt_setup();
    browser_packages()?;
    step("build binaries (end-to-end tests run them)");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    deb_check()?;
    // Stopped when dropped: after the cluster fault run, or as soon as a
    // step before it fails.
    let pg = postgres::start()?;
    step("tests");
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"])
        .env("HANGAR_TEST_POSTGRES_URL", &pg.url);
    for (k, v) in libvirt_env.unwrap_or_default() {
        test.env(k, v);
    }
    run(&mut test)?;
    step("simulation (sim/scenarios/smoke.toml)");
    run(Command::new(root().join("target/debug/hangar-sim"))
        .arg("smoke")
        .current_dir(root()))?;
    step("fault suite (short)");
    run_faults(&root().join("target/debug"), &["--short".to_owned()])?;
    step("fault suite (short, two replicas on PostgreSQL)");
    run_faults(
        &root().join("target/debug"),
        &CI_CLUSTER_FAULTS
            .iter()
            .map(|s| s.to_string())
            .chain(["--postgres".to_owned(), pg.url.clone()])
            .collect::<Vec<_>>(),
    )?;
    drop(pg);
    eprintln!("\nci: all green");
    Ok(())
}

/// The cluster fault run `ci` makes, on its PostgreSQL server: two
/// replicas, the short bursts, the scenarios that exercise what a cluster
/// changes (crashes, provider faults, disordered deliveries, the lease
/// holder's death) in about two minutes.
const CI_CLUSTER_FAULTS: &[&str] = &[
    "--short",
    "--replicas",
    "2",
    "kill9",
    "provider",
    "disorder",
    "kill-lease-holder",
];

/// `cargo xtask store-tests [ARGS…]`: the store's suite on both backends,
/// with a PostgreSQL server of its own, stopped afterwards.
fn store_tests(args: &[String]) -> Result {
    let pg = postgres::start()?;
    step("store tests on SQLite and PostgreSQL");
    let tested = run(cargo()
        .args(["test", "-p", "hangar-store", "--no-fail-fast"])
        .args(args)
        .env("HANGAR_TEST_POSTGRES_URL", &pg.url));
    drop(pg);
    tested
}

/// `cargo xtask dev [--release] [CONFIG]`: `hangard` on the dev config;
/// `--release` runs the release build (the one `cargo build --release`
/// made, rebuilt only when stale) instead of building a debug one.
fn dev(args: &[String]) -> Result {
    system_packages()?;
    let release = args.iter().any(|a| a == "--release");
    let config = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| root().join("config/hangard.toml").display().to_string());
    step(&format!(
        "hangard --config {config}{}",
        if release { " (release build)" } else { "" }
    ));
    let mut cmd = cargo();
    cmd.arg("run");
    if release {
        cmd.arg("--release");
    }
    run(cmd
        .args([
            "--package",
            "hangar-daemon",
            "--bin",
            "hangard",
            "--",
            "--config",
        ])
        .arg(&config))
}

/// `cargo xtask simulate [SCENARIO|all] [--seed N] [--dev]`: builds
/// `hangar-sim` (release unless `--dev`) and runs it from the workspace
/// root, so scenario names resolve in `sim/scenarios/`.
fn simulate(args: &[String]) -> Result {
    let dev = args.iter().any(|a| a == "--dev");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--dev").collect();
    let profile = if dev { "debug" } else { "release" };
    step(&format!("build hangar-sim ({profile})"));
    let mut build = cargo();
    build.args(["build", "--package", "hangar-sim", "--bin", "hangar-sim"]);
    if !dev {
        build.arg("--release");
    }
    run(&mut build)?;
    step("simulate");
    run(
        Command::new(root().join("target").join(profile).join("hangar-sim"))
            .args(rest)
            .current_dir(root()),
    )
    .map_err(|e| format!("{e} (a scenario missed a goal, or the input was bad; see above)"))
}

/// Release binaries to ship: `target/dist/{hangard,hangar}` without debug
/// info, each beside a `.debug` file holding it (linked by
/// `.gnu_debuglink`, so gdb, perf and addr2line find it when it sits next
/// to the binary or under /usr/lib/debug). `target/release` keeps the
/// unstripped builds for profiling in place.
fn dist() -> Result {
    step("build release binaries");
    run(cargo().args([
        "build",
        "--release",
        // What ships is built from the lock file as committed.
        "--locked",
        "--package",
        "hangar-daemon",
        "--package",
        "hangar-cli",
        "--bins",
    ]))?;
    let release = root().join("target/release");
    let out = root().join("target/dist");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    step(&format!("split debug info into {}", out.display()));
    for name in ["hangard", "hangar"] {
        let built = release.join(name);
        let bin = out.join(name);
        let debug = out.join(format!("{name}.debug"));
        run(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&built)
            .arg(&debug))?;
        // --add-gnu-debuglink records the file name and a CRC of the debug
        // file, so it runs in the output directory with a bare name.
        run(Command::new("objcopy")
            .current_dir(&out)
            // The symbol table stays: panic backtraces name functions.
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={name}.debug"))
            .arg(&built)
            .arg(name))?;
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1_048_576.0;
        eprintln!(
            "{name}: {:.1} MiB built, {:.1} MiB shipped + {:.1} MiB {name}.debug",
            size(&built),
            size(&bin),
            size(&debug)
        );
    }
    Ok(())
}

fn bench(args: &[String]) -> Result {
    system_packages()?;
    let which = args.first().map(String::as_str).unwrap_or("all");
    if !matches!(
        which,
        "webhooks" | "schedule" | "queue" | "idle-rss" | "scale" | "scalesets" | "postgres" | "all"
    ) {
        return Err(format!(
            "unknown bench {which:?}: use webhooks, schedule, queue, idle-rss, scale, scalesets, postgres [--quick] or all"
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
    // HANGAR_BIN_DIR set by the caller measures other hangard/hangar
    // binaries (an older build, for a before/after in one session).
    let bins = std::env::var_os("HANGAR_BIN_DIR").map_or_else(|| release.clone(), PathBuf::from);
    let mut bench = Command::new(release.join("hangar-bench"));
    bench
        .arg(which)
        .args(args.iter().skip(1))
        .current_dir(root())
        .env("HANGAR_BIN_DIR", &bins)
        .env("HANGAR_E2E_LOG", "warn");
    // Stopped when dropped, after the bench, also when it fails.
    let _pg = if which == "postgres" {
        let purpose = postgres::Purpose::Bench;
        let pg = postgres::start_for(purpose)?;
        bench
            .env("HANGAR_BENCH_POSTGRES_URL", &pg.url)
            .env(
                "HANGAR_BENCH_POSTGRES_PID",
                pg.postmaster_pid()?.to_string(),
            )
            .env("HANGAR_BENCH_PSQL", pg.psql())
            .env(
                "HANGAR_BENCH_POSTGRES_SETTINGS",
                purpose.settings().join(" "),
            );
        Some(pg)
    } else {
        None
    };
    run(&mut bench)
}

/// The fault suite: builds `hangard`, the fake provider and the suite's
/// driver (debug by default, `--release` for release), then runs
/// `hangar-faults` with the remaining arguments. It prints one Markdown
/// table and fails when a promised zero is not zero.
fn faults(args: &[String]) -> Result {
    system_packages()?;
    let release = args.iter().any(|a| a == "--release");
    // `--cluster [N]`: N replicas (default 2) on a server of our own.
    let mut cluster = None;
    let mut rest: Vec<String> = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--release" => {}
            "--cluster" => {
                let n = match it.peek().and_then(|s| s.parse::<usize>().ok()) {
                    Some(n) => {
                        it.next();
                        n
                    }
                    None => 2,
                };
                cluster = Some(n);
            }
            _ => rest.push(a.clone()),
        }
    }
    step(&format!(
        "build {} binaries",
        if release { "release" } else { "debug" }
    ));
    let mut build = cargo();
    build.args(["build"]);
    if release {
        build.arg("--release");
    }
    build.args([
        "--package",
        "hangar-daemon",
        "--package",
        "hangar-e2e",
        "--package",
        "hangar-testkit",
        "--bins",
    ]);
    run(&mut build)?;
    let dir = root().join(if release {
        "target/release"
    } else {
        "target/debug"
    });
    match cluster {
        None => run_faults(&dir, &rest),
        Some(n) => {
            // Stopped when dropped, pass or fail.
            let pg = postgres::start()?;
            rest.extend([
                "--postgres".to_owned(),
                pg.url.clone(),
                "--replicas".to_owned(),
                n.to_string(),
            ]);
            run_faults(&dir, &rest)
        }
    }
}

fn run_faults(bin_dir: &Path, args: &[String]) -> Result {
    step(&format!("faults {}", args.join(" ")));
    run(Command::new(bin_dir.join("hangar-faults"))
        .args(args)
        .current_dir(root())
        .env("HANGAR_BIN_DIR", bin_dir)
        .env("HANGAR_E2E_LOG", "info"))
}
