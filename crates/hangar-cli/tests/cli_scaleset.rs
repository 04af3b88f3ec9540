//! `hangar scaleset …` against a real `hangard` whose GitHub is the
//! loopback FakeGitHub + FakeActions: add, ls, show, update and rm reach
//! GitHub's scale set API, and refusals reach the user with exit code 1.
//!
//! Needs `hangard` built into the same target dir (or `$HANGARD`):
//!   cargo build -p hangar-daemon && cargo test -p hangar-cli --test cli_scaleset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hangar_testkit::fake_actions::FakeActions;
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::Value;

const PASSWORD: &str = "a-strong-password-1";

fn hangard_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HANGARD") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("HANGAR_BIN_DIR") {
        return PathBuf::from(dir).join("hangard");
    }
    let p = Path::new(env!("CARGO_BIN_EXE_hangar")).with_file_name("hangard");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p hangar-daemon` first, or set HANGARD",
        p.display()
    );
    p
}

/// A running `hangard` on the fake provider, killed when dropped.
struct Daemon {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let url = format!("http://127.0.0.1:{port}");
        let config = dir.join("hangard.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
bind = "127.0.0.1:{port}"
public_url = "{url}"

[database]
url = "sqlite://{db}"
passphrase = "cli scale set test passphrase, well over 32 characters"

[[provider]]
name = "fake"
kind = "fake"
"#,
                db = dir.join("hangar.db").display(),
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
        let deadline = Instant::now() + Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = hangar_api::client::Client::new(&d.url).unwrap();
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("hangard exited with {status}:\n{}", d.logs());
            }
            if rt.block_on(client.healthz()).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hangard not healthy:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
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

struct Hangar<'a> {
    cfg: &'a Path,
}

impl Hangar<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
        for k in ["HANGAR_URL", "HANGAR_TOKEN", "HANGAR_PROFILE"] {
            cmd.env_remove(k);
        }
        cmd.env("HANGAR_CLI_CONFIG_DIR", self.cfg)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hangar")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hangar {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("hangar {a:?}: not JSON ({e}):\n{out}"))
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "hangar {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn scaleset_commands_against_hangard_and_the_fake_actions_service() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (gh, fa) = rt.block_on(async {
        let gh = FakeGitHub::start().await;
        let fa = FakeActions::start(&gh).await;
        (gh, fa)
    });
    fa.add_runner_group("orgs/octo", 7, "lab");
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(tmp.path());
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
        "fc",
        "--endpoint",
        "fake",
        "--auth-type",
        "pat",
        "--pat-oauth-token",
        "ghp_fake",
    ]);
    h.ok(&["org", "add", "--credentials", "fc", "--name", "octo"]);

    let add = [
        "scaleset",
        "add",
        "--org",
        "octo",
        "--name",
        "lab-ubuntu",
        "--provider-name",
        "fake",
        "--image",
        "ubuntu-22.04",
        "--flavor",
        "small",
        "--min-idle-runners",
        "0",
        "--max-runners",
        "3",
        "--runner-group",
        "lab",
        "--os-type",
        "linux",
        "--os-arch",
        "amd64",
        "--extra-specs",
        r#"{"proxy": {"https_proxy": "http://proxy.lab:3128"}}"#,
        "--enabled",
        "true",
    ];
    let made = h.json(&add);
    let remote = fa.scale_sets();
    assert_eq!(remote.len(), 1);
    assert_eq!(
        (remote[0].name.as_str(), remote[0].runner_group_id),
        ("lab-ubuntu", 7)
    );
    assert_eq!(made["github_id"], remote[0].id);
    assert_eq!(made["runner_group"], "lab");
    assert_eq!(made["max_runners"], 3);
    for f in [
        "id",
        "entity_id",
        "pool_id",
        "state",
        "statistics",
        "desired_runners",
        "instance_count",
    ] {
        assert!(made.get(f).is_some(), "{f} missing in {made}");
    }
    let id = made["id"].as_str().unwrap().to_owned();

    // The same name again: refused by the server, the user told why.
    let err = h.fails(&add);
    assert!(err.contains("already has a scale set"), "{err}");
    // Refused before any request.
    let err = h.fails(&[
        "scaleset",
        "add",
        "--org",
        "octo",
        "--name",
        "two words",
        "--provider-name",
        "fake",
        "--image",
        "i",
        "--flavor",
        "f",
    ]);
    assert!(err.contains("--name"), "{err}");

    let table = h.ok(&["scaleset", "ls"]);
    assert!(
        table.contains("lab-ubuntu") && table.contains("NAME"),
        "{table}"
    );
    let of_org = h.json(&["scaleset", "ls", "--org", "octo"]);
    assert_eq!(of_org.as_array().unwrap().len(), 1);
    assert_eq!(h.json(&["scaleset", "show", "lab-ubuntu"]), made);
    assert_eq!(h.json(&["scaleset", "show", &id])["name"], "lab-ubuntu");
    // Not a webhook pool.
    assert_eq!(h.json(&["pool", "ls"]), serde_json::json!([]));

    let u = h.json(&[
        "scaleset",
        "update",
        "lab-ubuntu",
        "--name",
        "lab-jammy",
        "--max-runners",
        "5",
    ]);
    assert_eq!(
        (u["name"].as_str(), u["max_runners"].as_u64()),
        (Some("lab-jammy"), Some(5))
    );
    assert_eq!(fa.scale_sets()[0].name, "lab-jammy");

    // The same organization under a second endpoint of the same GitHub:
    // its scale set of that name is the one already driven — a 409 that
    // says by which, exit code 1, and nothing made.
    h.ok(&[
        "endpoint",
        "add",
        "--name",
        "fake-again",
        "--base-url",
        &fake,
        "--api-base-url",
        &fake,
    ]);
    h.ok(&[
        "credentials",
        "add",
        "--name",
        "fc2",
        "--endpoint",
        "fake-again",
        "--auth-type",
        "pat",
        "--pat-oauth-token",
        "ghp_fake",
    ]);
    let twin = h.json(&["org", "add", "--credentials", "fc2", "--name", "octo"]);
    let twin = twin["id"].as_str().unwrap();
    let err = h.fails(&[
        "scaleset",
        "add",
        "--org",
        twin,
        "--name",
        "lab-jammy",
        "--provider-name",
        "fake",
        "--image",
        "i",
        "--flavor",
        "f",
        "--runner-group",
        "lab",
    ]);
    assert!(err.contains("already driven by"), "{err}");
    assert!(err.contains(&id) && err.contains("details:"), "{err}");
    assert_eq!(h.json(&["scaleset", "ls"]).as_array().unwrap().len(), 1);
    assert_eq!(fa.scale_sets().len(), 1);

    let gone = h.ok(&["scaleset", "rm", "lab-jammy"]);
    assert!(gone.contains("deleted"), "{gone}");
    assert!(fa.scale_sets().is_empty());
    let err = h.fails(&["scaleset", "show", "lab-jammy"]);
    assert!(err.contains("no scale set is named"), "{err}");
    let err = h.fails(&["scaleset", "show", &id]);
    assert!(err.contains("404"), "{err}");
    drop(daemon);
    drop(rt);
}
