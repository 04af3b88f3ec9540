//! The `hangar` binary against a real `hangard`: a garm user's commands,
//! with the binary renamed, on a fresh server; JSON field names as pinned
//! in DESIGN §4; and the server's refusals reaching the user.
//!
//! Needs `hangard` built into the same target dir (or `$HANGARD`, or
//! `$HANGAR_BIN_DIR/hangard`):
//!   cargo build -p hangar-daemon && cargo test -p hangar-cli --test cli_e2e

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PASSPHRASE: &str = "cli end-to-end passphrase, well over 32 characters";
const PASSWORD: &str = "a-strong-password-1";
const WEBHOOK_SECRET: &str = "e2e-webhook-secret-7f3a";
const IMAGE: &str = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest";

fn hangard_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HANGARD") {
        return PathBuf::from(p);
    }
    // The workspace's end-to-end harness points here at a release build.
    if let Some(dir) = std::env::var_os("HANGAR_BIN_DIR") {
        return PathBuf::from(dir).join("hangard");
    }
    let hangar = Path::new(env!("CARGO_BIN_EXE_hangar"));
    let p = hangar.with_file_name("hangard");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p hangar-daemon` (same CARGO_TARGET_DIR) first, or set HANGARD",
        p.display()
    );
    p
}

/// A garm external provider that accepts every pool, "creates" instances
/// (it only remembers them) and never manages to delete one. The config
/// below names no `interface_version`, so it is v0.1.0 (as in garm) and is
/// never asked `ValidatePoolInfo`; the script answers it anyway, as
/// garm-provider-azure does under v0.1.1.
fn stand_in_provider(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("garm-provider-stand-in");
    std::fs::write(
        &path,
        r#"#!/bin/sh
case "$GARM_COMMAND" in
  GetVersion) echo "v0.1.1" ;;
  GetSupportedInterfaceVersions) echo '["v0.1.0", "v0.1.1"]' ;;
  ValidatePoolInfo) cat >/dev/null ;;
  CreateInstance)
    name=$(grep -o '"name": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
    line="{\"provider_id\": \"stand-in-$name\", \"name\": \"$name\", \"os_type\": \"linux\", \"os_arch\": \"amd64\", \"status\": \"running\"}"
    echo "$line" >> "$(dirname "$0")/instances"
    echo "$line" ;;
  ListInstances) printf '['; paste -sd, "$(dirname "$0")/instances" 2>/dev/null; printf ']' ;;
  DeleteInstance) echo "the cloud is down" >&2; exit 1 ;;
  *) echo "unsupported: $GARM_COMMAND" >&2; exit 1 ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A running `hangard`, killed when dropped.
struct Daemon {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// With `extra` appended to the config.
    fn start_with(dir: &Path, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let url = format!("http://127.0.0.1:{port}");
        let provider = stand_in_provider(dir);
        let config = dir.join("hangard.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
bind = "127.0.0.1:{port}"
public_url = "{url}"

[database]
url = "sqlite://{db}"
passphrase = "{PASSPHRASE}"

[[provider]]
name = "azure_external"
kind = "external"
[provider.external]
executable = "{provider}"
config_file = "/dev/null"
{extra}"#,
                db = dir.join("hangar.db").display(),
                provider = provider.display(),
            ),
        )
        .unwrap();
        let log = dir.join("hangard.log");
        let child = Command::new(hangard_path())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("HANGAR_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn hangard");
        let mut d = Daemon { child, url, log };
        d.wait_healthy(Duration::from_secs(60));
        d
    }

    fn wait_healthy(&mut self, timeout: Duration) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = hangar_api::client::Client::new(&self.url).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hangard exited with {status}:\n{}", self.logs());
            }
            if rt.block_on(client.healthz()).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hangard not healthy after {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `hangar` with its profiles in `cfg`.
struct Hangar<'a> {
    cfg: &'a Path,
}

impl Hangar<'_> {
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], None)
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
        for k in ["HANGAR_URL", "HANGAR_TOKEN", "HANGAR_PROFILE"] {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .env("HANGAR_CLI_CONFIG_DIR", self.cfg)
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hangar");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hangar {args:?} failed:\n{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("hangar {a:?}: not JSON ({e}):\n{out}"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn has_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "field {f:?} missing in {v}");
    }
}

#[test]
fn garm_user_sequence_against_hangard() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(tmp.path());
    let cfg = tmp.path().join("cli");
    let h = Hangar { cfg: &cfg };
    let url = daemon.url.as_str();

    // init: first run + login + a saved, private, active profile.
    let out = h.run_with(
        &[
            "init",
            "--url",
            url,
            "--username",
            "admin",
            "--password-stdin",
            "--email",
            "admin@example.com",
            "--output",
            "json",
        ],
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(
        out.status.success(),
        "init failed:\n{}\n{}",
        text(&out.stderr),
        daemon.logs()
    );
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(user["username"], "admin");
    assert_eq!(user["is_admin"], true);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cfg.join("config.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let profiles = h.json(&["profile", "ls"]);
    assert_eq!(profiles[0]["name"], "default");
    assert_eq!(profiles[0]["active"], true);
    assert!(
        profiles[0].get("token").is_none(),
        "profile ls never shows the token"
    );

    // A second init is refused with the server's words and a way forward.
    let out = h.run_with(
        &[
            "init",
            "--name",
            "again",
            "--url",
            url,
            "--username",
            "admin",
            "--password",
            PASSWORD,
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("(HTTP 409)") && err.contains("hangar profile add"),
        "{err}"
    );

    h.ok(&[
        "endpoint",
        "add",
        "--name",
        "github.com",
        "--base-url",
        "https://github.com",
        "--api-base-url",
        "https://api.github.com",
    ]);
    assert_eq!(
        h.json(&["endpoint", "show", "github.com"])["api_base_url"],
        "https://api.github.com"
    );
    let out = h.ok(&[
        "credentials",
        "add",
        "--name",
        "garm",
        "--endpoint",
        "github.com",
        "--auth-type",
        "pat",
        "--pat-oauth-token",
        "ghp_e2etoken",
    ]);
    assert!(
        !out.contains("ghp_e2etoken"),
        "a token is never printed:\n{out}"
    );
    let creds = h.json(&["credentials", "ls"]);
    assert_eq!(creds[0]["name"], "garm");
    assert!(!creds.to_string().contains("ghp_e2etoken"));

    // The garm-on-Azure sequence, verbatim but for the binary's name.
    let out = h.ok(&[
        "repository",
        "add",
        "--credentials",
        "garm",
        "--name",
        "garm-playground",
        "--owner",
        "mkulke",
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]);
    assert!(out.contains("garm-playground"), "{out}");
    assert!(
        !out.contains(WEBHOOK_SECRET),
        "a given secret is never printed:\n{out}"
    );
    let table = h.ok(&["repo", "ls"]);
    assert!(
        table.contains("mkulke") && table.contains("garm-playground"),
        "{table}"
    );

    let repos = h.json(&["repo", "ls"]);
    let repo = &repos[0];
    has_fields(
        repo,
        &["id", "owner", "name", "credentials_name", "webhook_url"],
    );
    assert_eq!(repo["owner"], "mkulke");
    assert_eq!(repo["name"], "garm-playground");
    assert_eq!(repo["credentials_name"], "garm");
    let repo_id = repo["id"].as_str().unwrap().to_owned();
    assert_eq!(repo["webhook_url"], format!("{url}/webhooks/{repo_id}"));
    assert!(repo.get("webhook_secret").is_none());

    let out = h.run(&[
        "pool",
        "add",
        "--repo",
        &repo_id,
        "--flavor",
        "Standard_DC2as_v5",
        "--tags",
        "self-hosted,azure-cvm,ubuntu-2204",
        "--enabled",
        "true",
        "--min-idle-runners",
        "0",
        "--max-runners",
        "4",
        "--extra-specs",
        r#"{"confidential": true}"#,
        "--provider-name",
        "azure_external",
        "--image",
        IMAGE,
    ]);
    assert!(
        out.status.success(),
        "pool add failed:\n{}\n{}",
        text(&out.stderr),
        daemon.logs()
    );

    let pools = h.json(&["pool", "ls"]);
    assert_eq!(pools.as_array().unwrap().len(), 1);
    let pool = &pools[0];
    has_fields(
        pool,
        &[
            "id",
            "entity_id",
            "provider_name",
            "image",
            "flavor",
            "tags",
            "min_idle_runners",
            "max_runners",
            "enabled",
            "extra_specs",
        ],
    );
    assert_eq!(pool["entity_id"], repo_id.as_str());
    assert_eq!(pool["provider_name"], "azure_external");
    assert_eq!(pool["image"], IMAGE);
    assert_eq!(pool["flavor"], "Standard_DC2as_v5");
    // Labels are a set: the server may keep them in its own order.
    let mut tags: Vec<&str> = pool["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["azure-cvm", "self-hosted", "ubuntu-2204"]);
    assert_eq!(pool["min_idle_runners"], 0);
    assert_eq!(pool["max_runners"], 4);
    assert_eq!(pool["enabled"], true);
    assert_eq!(
        pool["extra_specs"],
        serde_json::json!({"confidential": true})
    );
    let pool_id = pool["id"].as_str().unwrap().to_owned();

    // The same pool by the repository's name, as garm-cli resolves it.
    let by_name = h.json(&["pool", "ls", "--repo", "mkulke/garm-playground"]);
    assert_eq!(by_name[0]["id"], pool_id.as_str());
    assert_eq!(h.json(&["pool", "show", &pool_id])["max_runners"], 4);
    let updated = h.json(&[
        "pool",
        "update",
        &pool_id,
        "--max-runners",
        "6",
        "--enabled",
        "false",
    ]);
    assert_eq!(
        (updated["max_runners"].clone(), updated["enabled"].clone()),
        (6.into(), false.into())
    );

    // Read-only views answer and parse.
    assert!(h.json(&["runner", "ls", "--pool", &pool_id]).is_array());
    assert!(h.json(&["job", "ls", "--status", "queued"]).is_array());
    let providers = h.json(&["provider", "ls"]);
    assert!(
        providers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "azure_external"),
        "{providers}"
    );
    let controller = h.json(&["controller", "show"]);
    assert_eq!(controller["public_url"], url);

    // A repository with a pool cannot go: 409, in the server's words.
    let out = h.run(&["repo", "rm", &repo_id]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("(HTTP 409)"), "{err}");

    // A bad token: non-zero, and the server's own message.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server_says = rt
        .block_on(
            hangar_api::client::Client::new(url)
                .unwrap()
                .with_token("not-a-token")
                .list_entities(hangar_api::client::EntityKind::Repository),
        )
        .unwrap_err();
    let hangar_api::client::ClientError::Api {
        status: 401,
        error: ref message,
        ..
    } = server_says
    else {
        panic!("expected a 401, got {server_says:?}");
    };
    let out = h.run_with(&["repo", "ls"], &[("HANGAR_TOKEN", "not-a-token")], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(message.as_str()) && err.contains("(HTTP 401)"),
        "{err}"
    );
    assert!(!err.contains("not-a-token"), "no token in errors: {err}");

    // Profiles: add a second session, switch, refresh, remove.
    let out = h.run_with(
        &[
            "profile",
            "add",
            "--name",
            "second",
            "--url",
            url,
            "--username",
            "admin",
            "--password-stdin",
        ],
        &[],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.ok(&["profile", "switch", "default"]);
    let out = h.run_with(
        &["profile", "login", "second", "--password-stdin"],
        &[],
        Some(PASSWORD),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        h.json(&["--profile", "second", "repo", "ls"])[0]["id"],
        repo_id.as_str()
    );
    h.ok(&["profile", "rm", "second"]);
    let out = h.run_with(
        &["profile", "login", "--password", "wrong-password-123"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(HTTP 401)"));

    // Clean-up works in the order the server asks for.
    h.ok(&["pool", "rm", &pool_id]);
    h.ok(&["repo", "rm", "mkulke/garm-playground"]);
    assert_eq!(h.json(&["repo", "ls"]), serde_json::json!([]));
    h.ok(&["credentials", "rm", "garm"]);
    h.ok(&["endpoint", "rm", "github.com"]);
}

/// garm-cli's habits: the default `github.com` endpoint, `--endpoint`,
/// `repo|org webhook install|show|uninstall` and `--install-webhook`
/// against FakeGitHub, `pool runner list`, `version`, and
/// `runner rm --force-remove-runner` on a provider that cannot delete.
#[test]
fn garm_cli_habits_against_hangard_and_fake_github() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let gh = rt.block_on(hangar_testkit::fake_github::FakeGitHub::start());
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(
        tmp.path(),
        "\n[scheduler]\nbackoff_base_ms = 100\nbackoff_max_ms = 400\n",
    );
    let cfg = tmp.path().join("cli");
    let h = Hangar { cfg: &cfg };
    let url = daemon.url.as_str();
    h.ok(&[
        "init",
        "--url",
        url,
        "--username",
        "admin",
        "--password",
        PASSWORD,
    ]);

    // `version`: the client's and, logged in, the server's.
    let v = h.json(&["version"]);
    assert_eq!(v["client"], env!("CARGO_PKG_VERSION"));
    assert!(v["server"].is_string(), "{v}");
    assert!(h.ok(&["version"]).contains("server: hangard "));

    // First run made github.com, so credentials can name it at once.
    let gh_com = h.json(&["endpoint", "show", "github.com"]);
    assert_eq!(gh_com["base_url"], "https://github.com");
    assert_eq!(gh_com["api_base_url"], "https://api.github.com");
    h.ok(&[
        "credentials",
        "add",
        "--name",
        "dotcom",
        "--endpoint",
        "github.com",
        "--auth-type",
        "pat",
        "--pat-oauth-token",
        "ghp_dotcom",
    ]);
    let fake = gh.url();
    h.ok(&[
        "endpoint",
        "add",
        "--name",
        "fake",
        "--base-url",
        &fake,
        "--api-base-url",
        &fake,
    ]);
    h.ok(&[
        "credentials",
        "add",
        "--name",
        "fakecreds",
        "--endpoint",
        "fake",
        "--auth-type",
        "pat",
        "--pat-oauth-token",
        "ghp_fake",
    ]);

    // --endpoint on add checks the credentials' endpoint.
    let out = h.run(&[
        "repo",
        "add",
        "--credentials",
        "fakecreds",
        "--endpoint",
        "github.com",
        "--owner",
        "octo",
        "--name",
        "app",
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not \"github.com\""),
        "{}",
        text(&out.stderr)
    );

    // --install-webhook: the hook GitHub gets has the entity's URL and secret.
    let repo = h.json(&[
        "repo",
        "add",
        "--credentials",
        "fakecreds",
        "--endpoint",
        "fake",
        "--owner",
        "octo",
        "--name",
        "app",
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--install-webhook",
    ]);
    let repo_id = repo["id"].as_str().unwrap().to_owned();
    assert_eq!(repo["endpoint"], "fake");
    let hooks = gh.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].scope, "repos/octo/app");
    assert_eq!(hooks[0].url, format!("{url}/webhooks/{repo_id}"));
    assert_eq!(hooks[0].secret.as_deref(), Some(WEBHOOK_SECRET));
    assert_eq!(hooks[0].content_type, "json");
    assert_eq!(hooks[0].events, ["workflow_job"]);

    // ls --endpoint tells entities apart.
    assert_eq!(
        h.json(&["repo", "ls", "--endpoint", "fake"])[0]["id"],
        repo_id.as_str()
    );
    assert_eq!(
        h.json(&["repo", "ls", "--endpoint", "github.com"]),
        serde_json::json!([])
    );

    // The same name on a second endpoint: a bare name is then ambiguous,
    // and --endpoint picks one for show | update | rm.
    let twin = h.json(&[
        "repo",
        "add",
        "--credentials",
        "dotcom",
        "--owner",
        "octo",
        "--name",
        "app",
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]);
    let twin_id = twin["id"].as_str().unwrap().to_owned();
    assert_ne!(twin_id, repo_id);
    assert_eq!(twin["endpoint"], "github.com");
    let dup = h.run(&[
        "repo",
        "add",
        "--credentials",
        "dotcom",
        "--owner",
        "octo",
        "--name",
        "app",
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]);
    assert_ne!(dup.status.code(), Some(0));
    assert!(
        text(&dup.stderr).contains("already registered"),
        "{}",
        text(&dup.stderr)
    );
    let ambiguous = h.run(&["repo", "show", "octo/app"]);
    assert_ne!(ambiguous.status.code(), Some(0));
    let why = text(&ambiguous.stderr);
    assert!(
        why.contains("fake") && why.contains("github.com") && why.contains("--endpoint"),
        "{why}"
    );
    assert_ne!(h.run(&["repo", "rm", "octo/app"]).status.code(), Some(0));
    assert_eq!(
        h.json(&["repo", "show", "octo/app", "--endpoint", "fake"])["id"],
        repo_id.as_str()
    );
    assert_eq!(
        h.json(&[
            "repo",
            "update",
            "octo/app",
            "--endpoint",
            "github.com",
            "--webhook-secret",
            "another-secret"
        ])["id"],
        twin_id.as_str()
    );
    h.ok(&["repo", "rm", "octo/app", "--endpoint", "github.com"]);
    assert_eq!(h.json(&["repo", "ls"]).as_array().unwrap().len(), 1);

    // webhook show | install (again: refused) | uninstall | install.
    let shown = h.json(&["repo", "webhook", "show", "octo/app", "--endpoint", "fake"]);
    assert_eq!(shown["id"], hooks[0].id);
    assert_eq!(shown["url"], hooks[0].url.as_str());
    let again = h.run(&["repo", "webhook", "install", &repo_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("(HTTP 409)"),
        "{}",
        text(&again.stderr)
    );
    h.ok(&["repo", "webhook", "uninstall", "octo/app"]);
    assert!(gh.hooks().is_empty());
    let none = h.run(&["repo", "webhook", "show", &repo_id]);
    assert!(
        text(&none.stderr).contains("(HTTP 404)"),
        "{}",
        text(&none.stderr)
    );
    let installed = h.json(&["repo", "webhook", "install", &repo_id, "--insecure"]);
    assert_eq!(installed["insecure_ssl"], true);
    assert_eq!(gh.hooks().len(), 1);

    // Organizations the same way.
    let org = h.json(&[
        "org",
        "add",
        "--credentials",
        "fakecreds",
        "--name",
        "acme",
        "--random-webhook-secret",
        "--install-webhook",
    ]);
    let org_hook = gh
        .hooks()
        .into_iter()
        .find(|k| k.scope == "orgs/acme")
        .expect("org hook");
    assert_eq!(org_hook.url, org["webhook_url"].as_str().unwrap());
    assert_eq!(
        h.json(&["org", "webhook", "show", "acme"])["id"],
        org_hook.id
    );
    h.ok(&["org", "webhook", "uninstall", "acme"]);
    assert!(gh.hooks().iter().all(|k| k.scope != "orgs/acme"));

    // A pool keeping one idle runner: `pool runner list` lists it.
    let pool = h.json(&[
        "pool",
        "add",
        "--repo",
        &repo_id,
        "--provider-name",
        "azure_external",
        "--image",
        IMAGE,
        "--flavor",
        "Standard_DC2as_v5",
        "--tags",
        "self-hosted,stand-in",
        "--min-idle-runners",
        "1",
        "--max-runners",
        "2",
        "--enabled",
        "true",
    ]);
    let pool_id = pool["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let name = loop {
        let runners = h.json(&["pool", "runner", "list", &pool_id]);
        if let Some(r) = runners
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "running")
        {
            assert_eq!(runners, h.json(&["runner", "ls", "--pool", &pool_id]));
            break r["name"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no running instance: {runners}\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The provider never deletes: a forced removal ends anyway.
    h.ok(&["runner", "rm", "--force-remove-runner", &name]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = h.json(&["runner", "show", &name]);
        if r["status"] == "deleted" {
            let msg = r["status_message"].as_str().unwrap_or_default();
            assert!(msg.contains("force-removed"), "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forced delete did not end: {r}\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        gh.runners().iter().all(|r| r.name != name),
        "the runner left GitHub"
    );
}
