//! Harness for end-to-end tests: starts the real `hangard` binary on a free
//! loopback port with a temp database and config, talks to it over HTTP as
//! an operator and as GitHub would, and kills or stops it like an operator
//! (or a crash) would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

pub mod cluster;
pub mod walkthrough;

/// A built binary of this workspace (`target/<profile>/<name>`), next to the
/// test executable's `deps/` folder. `cargo xtask ci` builds them first.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HANGAR_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (cargo xtask ci does)",
        p.display()
    );
    p
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub const PASSPHRASE: &str = "end-to-end passphrase, at least 32 characters";
pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "a-strong-password-1";

/// A running `hangard`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Writes a config for a daemon in `dir` on `port`; `extra` is appended
/// (providers, scheduler tuning).
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let config = dir.join("hangard.toml");
    let text = format!(
        r#"[server]
bind = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
url = "sqlite://{db}"
passphrase = "{PASSPHRASE}"

[logging]
level = "{level}"

{extra}
"#,
        db = dir.join("data/hangar.db").display(),
        level = std::env::var("HANGAR_E2E_LOG")
            .unwrap_or_else(|_| "info,hangar_scheduler=debug".into()),
    );
    std::fs::write(&config, text).expect("write config");
    config
}

impl Daemon {
    /// Starts hangard with `config` and waits for `/healthz`.
    pub async fn start(dir: &Path, port: u16, config: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(dir, port, config, &[]).await
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub async fn start_with_env(
        dir: &Path,
        port: u16,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_bin(&bin("hangard"), dir, port, config, env).await
    }

    /// As [`Daemon::start_with_env`], with a given `hangard` executable
    /// (benchmarks compare builds).
    pub async fn start_bin(
        hangard: &Path,
        dir: &Path,
        port: u16,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!(
            "hangard-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(hangard)
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("spawn hangard")?;
        let mut d = Daemon {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            log,
        };
        d.wait_healthy(Duration::from_secs(60)).await?;
        Ok(d)
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("hangard exited with {status}:\n{}", self.logs());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("hangard not healthy after {timeout:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash, with no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop. Returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every log this daemon's directory holds (across restarts).
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("hangard-") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // HANGAR_E2E_KEEP_LOGS=DIR keeps every daemon log for a post-mortem.
        if let Some(keep) = std::env::var_os("HANGAR_E2E_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            if let Some(name) = self.log.file_name() {
                let _ = std::fs::copy(&self.log, Path::new(&keep).join(name));
            }
        }
    }
}

/// An operator's HTTP session with the admin API.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    /// First run + login.
    pub async fn init(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{url}/api/v1/first-run"))
            .json(&json!({"username": ADMIN, "password": PASSWORD}))
            .send()
            .await?;
        if !(r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT) {
            bail!("first-run: {} {}", r.status(), r.text().await?);
        }
        Self::login(url).await
    }

    pub async fn login(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{url}/api/v1/auth/login"))
            .json(&json!({"username": ADMIN, "password": PASSWORD}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("login: {} {}", r.status(), r.text().await?);
        }
        let v: Value = r.json().await?;
        Ok(Self {
            url: url.to_owned(),
            token: v["token"].as_str().context("token")?.to_owned(),
            client,
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await?;
        if !(200..300).contains(&s) {
            bail!("GET {path}: {s} {v}");
        }
        Ok(v)
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&s) {
            bail!("POST {path}: {s} {v}");
        }
        Ok(v)
    }

    /// Endpoint + PAT credentials pointing at a FakeGitHub.
    pub async fn add_github(&self, fake_github_url: &str) -> anyhow::Result<()> {
        self.post(
            "/api/v1/endpoints",
            json!({"name": "fake", "base_url": fake_github_url, "api_base_url": fake_github_url}),
        )
        .await?;
        self.post(
            "/api/v1/credentials",
            json!({"name": "gh", "endpoint": "fake", "auth_type": "pat", "pat_oauth_token": "ghp_e2eTOKENthatMustNotLeak"}),
        )
        .await?;
        Ok(())
    }

    /// A repository; returns (id, webhook secret).
    pub async fn add_repo(&self, owner: &str, name: &str, secret: &str) -> anyhow::Result<String> {
        let v = self
            .post(
                "/api/v1/repositories",
                json!({"owner": owner, "name": name, "credentials_name": "gh", "webhook_secret": secret}),
            )
            .await?;
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    pub async fn add_pool(&self, repo: &str, body: Value) -> anyhow::Result<String> {
        let v = self
            .post(&format!("/api/v1/repositories/{repo}/pools"), body)
            .await?;
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    pub async fn instances(&self, all: bool) -> anyhow::Result<Vec<Value>> {
        let v = self.get(&format!("/api/v1/instances?all={all}")).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    pub async fn jobs(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.get("/api/v1/jobs?limit=10000").await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// `sha256=<hex>` of `body` with `secret`, as GitHub signs deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// `what` and the last observation.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
