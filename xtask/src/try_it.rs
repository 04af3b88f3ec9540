//! `cargo xtask try`: the whole flow without GitHub, for a newcomer. Builds
//! `hangard`, `hangar` and `hangar-try` (debug), then runs `hangar-try`
//! from the workspace root: a loopback FakeGitHub and `hangard` on the dev
//! config, the README's walkthrough run as written, one job pushed through
//! with each step printed. It stops by itself.

use crate::{Result, cargo, root, run, step, system_packages};
use std::process::Command;

pub fn run_try() -> Result {
    system_packages()?;
    step("build hangard, hangar and hangar-try");
    run(cargo().args([
        "build",
        "--package",
        "hangar-daemon",
        "--package",
        "hangar-cli",
        "--package",
        "hangar-e2e",
        "--bin",
        "hangard",
        "--bin",
        "hangar",
        "--bin",
        "hangar-try",
    ]))?;
    step("try it");
    run(Command::new(root().join("target/debug/hangar-try"))
        .current_dir(root())
        .env("HANGAR_E2E_LOG", "info"))
}
