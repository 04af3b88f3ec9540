//! House-style checks that are cheap to automate: every Rust module opens
//! with a `//!` line saying why it exists; the systemd unit verifies.

use std::path::Path;
use std::process::Command;

use crate::Result;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "target" | ".git" | "fixtures") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

pub fn run(root: &Path) -> Result {
    let mut files = Vec::new();
    for dir in ["crates", "tests", "xtask", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("#!["))
            .unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(f.strip_prefix(root).unwrap_or(f).display().to_string());
        }
    }
    if missing.is_empty() {
        eprintln!(
            "tidy: {} Rust files, each with a //! module doc",
            files.len()
        );
        Ok(())
    } else {
        Err(format!(
            "these files do not start with a //! line saying why they exist:\n  {}",
            missing.join("\n  ")
        ))
    }
}

/// `systemd-analyze verify` on the unit, when the tool exists.
pub fn verify_unit(unit: &Path) -> Result {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("!!! systemd-analyze not installed: unit file not verified");
        return Ok(());
    }
    crate::run(
        Command::new("bash")
            .arg(crate::root().join("deploy/systemd/verify.sh"))
            .arg(unit),
    )
}
