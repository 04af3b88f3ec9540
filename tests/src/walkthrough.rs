//! The README's walkthrough, run as written against the dev config: the
//! fenced block after the `<!-- walkthrough:` marker in README.md is run
//! with bash, line by line, by `cargo xtask try` (the `hangar-try` binary)
//! and by `tests/readme_walkthrough.rs`, so the README cannot drift from
//! what works.
//!
//! What differs from a reader's run, and only that: `hangard` listens on a
//! free port with a throwaway database (`HANGAR_BIND`, `HANGAR_PUBLIC_URL`,
//! `HANGAR_DATABASE_URL` over `config/hangard.toml`), so the block's
//! `127.0.0.1:9997` is replaced by that address; the binaries are built
//! already, so `cargo …` lines are skipped; and right after `hangar init`
//! the github.com endpoint is pointed at a loopback FakeGitHub.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::Value;

use crate::{Api, Daemon, PASSWORD, bin, free_port};

const MARKER: &str = "<!-- walkthrough:";
/// The address the README's commands use (the dev config's).
const README_URL: &str = "http://127.0.0.1:9997";
pub const OWNER_REPO: &str = "octo/app";
pub const LABELS: &[&str] = &["self-hosted", "linux"];

/// The workspace root (README.md, config/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The walkthrough's commands: the fenced block after the marker, `\`
/// continuations joined, comments and blank lines dropped.
pub fn commands(readme: &str) -> anyhow::Result<Vec<String>> {
    let at = readme
        .find(MARKER)
        .context("README.md has no walkthrough marker")?;
    let rest = &readme[at..];
    let open = rest
        .find("```sh\n")
        .context("no ```sh block after the walkthrough marker")?;
    let body = &rest[open + "```sh\n".len()..];
    let close = body
        .find("\n```")
        .context("the walkthrough block is not closed")?;
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in body[..close].lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    if !pending.is_empty() {
        bail!("the walkthrough ends in a `\\` continuation");
    }
    Ok(out)
}

/// A hangard on the dev config and a FakeGitHub, both on loopback, with
/// their files in a temp dir; everything stops when this is dropped.
#[allow(missing_debug_implementations)]
pub struct Rig {
    pub gh: FakeGitHub,
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    pub cli_dir: PathBuf,
}

impl Rig {
    pub async fn start() -> anyhow::Result<Self> {
        let gh = FakeGitHub::start().await;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let db = format!("sqlite://{}/data/hangar.db", dir.path().display());
        let bind = format!("127.0.0.1:{port}");
        let daemon = Daemon::start_with_env(
            dir.path(),
            port,
            &root().join("config/hangard.toml"),
            &[
                ("HANGAR_BIND", bind.as_str()),
                ("HANGAR_PUBLIC_URL", url.as_str()),
                ("HANGAR_DATABASE_URL", db.as_str()),
            ],
        )
        .await?;
        let cli_dir = dir.path().join("cli");
        Ok(Self {
            gh,
            daemon,
            dir,
            cli_dir,
        })
    }

    /// The bash script that runs `commands` against this rig, echoing each.
    fn script(&self, commands: &[String]) -> String {
        let mut s = String::from("set -euo pipefail\n");
        for c in commands {
            if c.starts_with("cargo ") {
                s.push_str(&format!(
                    "echo {}\n",
                    sh_quote(&format!("+ {c}   # (built already)"))
                ));
                continue;
            }
            let c = c.replace(README_URL, &self.daemon.url);
            s.push_str(&format!("echo {}\n{c}\n", sh_quote(&format!("+ {c}"))));
            if c.contains("hangar init ") {
                let gh = self.gh.url();
                let redirect = format!(
                    "hangar endpoint update github.com --base-url {gh} --api-base-url {gh} >/dev/null"
                );
                s.push_str(&format!(
                    "echo {}\n{redirect}\n",
                    sh_quote(&format!(
                        "+ {redirect}   # (try/test only: github.com is the FakeGitHub)"
                    ))
                ));
            }
        }
        s
    }

    /// Runs the README's walkthrough; its output (each command, then what
    /// it printed), or an error with that output.
    pub fn run_readme(&self, echo: bool) -> anyhow::Result<String> {
        let readme = std::fs::read_to_string(root().join("README.md"))?;
        let script = self.script(&commands(&readme)?);
        let bin_dir = bin("hangar")
            .parent()
            .context("hangar's folder")?
            .to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(root())
            .env("PATH", path)
            .env("HANGAR_CLI_CONFIG_DIR", &self.cli_dir)
            .env("ADMIN_PASSWORD", PASSWORD)
            .env("GITHUB_PAT", "ghp_walkthroughTokenForTheFake")
            .env("SECRET", "walkthrough-webhook-secret")
            .stdin(Stdio::null());
        if echo {
            let status = cmd.status().context("run bash")?;
            if !status.success() {
                bail!("the walkthrough failed ({status})");
            }
            return Ok(String::new());
        }
        let out = cmd.output().context("run bash")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "the walkthrough failed ({}):\n{text}\nhangard:\n{}",
                out.status,
                self.daemon.logs()
            );
        }
        Ok(text)
    }

    /// Runs `hangar ARGS` with the walkthrough's profile; stdout.
    pub fn hangar(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin("hangar"))
            .args(args)
            .env("HANGAR_CLI_CONFIG_DIR", &self.cli_dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "hangar {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Queues a job on the FakeGitHub and follows it to the end, calling
    /// `step` with each change seen (elapsed time, what happened): the
    /// job's status and runner, the instance's status and runner status.
    /// Done once the job is completed and its instance deleted.
    pub async fn push_a_job(
        &self,
        timeout: Duration,
        mut step: impl FnMut(Duration, &str),
    ) -> anyhow::Result<Vec<String>> {
        let api = Api::login(&self.daemon.url).await?;
        let t0 = Instant::now();
        let job = self.gh.queue_job(OWNER_REPO, LABELS).await;
        let mut seen: Vec<String> = Vec::new();
        let mut note = |what: String, seen: &mut Vec<String>| {
            if !seen.contains(&what) {
                step(t0.elapsed(), &what);
                seen.push(what);
            }
        };
        note(
            format!("job {job} queued on GitHub; its webhook was delivered to hangard"),
            &mut seen,
        );
        loop {
            let fake = self.gh.job(job).context("the fake lost the job")?;
            let runner = fake.runner_name.clone();
            let status = fake.status.clone();
            match (&status[..], &runner) {
                ("in_progress", Some(r)) => note(format!("job {job} running on {r}"), &mut seen),
                ("completed", _) => note(
                    format!(
                        "job {job} completed ({})",
                        fake.conclusion.as_deref().unwrap_or("?")
                    ),
                    &mut seen,
                ),
                _ => {}
            }
            let instances = api.instances(true).await?;
            let mut deleted = false;
            for i in &instances {
                let name = i["name"].as_str().unwrap_or("?");
                let st = i["status"].as_str().unwrap_or("?");
                let rs = i["runner_status"].as_str().unwrap_or("?");
                let what = match (st, rs) {
                    ("pending_create" | "creating", _) => {
                        format!("runner {name}: VM being created")
                    }
                    ("running", "pending" | "installing") => {
                        format!("runner {name}: VM up, runner bootstrapping ({rs})")
                    }
                    ("running", "idle") => format!("runner {name}: registered and idle"),
                    ("running", "active") => format!("runner {name}: busy with the job"),
                    ("pending_delete" | "deleting", _) => {
                        format!("runner {name}: leaving GitHub, VM being deleted")
                    }
                    ("deleted", _) => format!("runner {name}: VM deleted"),
                    _ => format!("runner {name}: {st} / {rs}"),
                };
                note(what, &mut seen);
                deleted |= st == "deleted" && runner.as_deref() == Some(name);
            }
            if status == "completed" && deleted {
                return Ok(seen);
            }
            if t0.elapsed() > timeout {
                let v: Value = serde_json::to_value(&instances)?;
                bail!(
                    "job {job} not through after {timeout:?}: GitHub says {status}; instances {v}\nhangard:\n{}",
                    self.daemon.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
