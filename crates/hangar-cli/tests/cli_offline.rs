//! The `hangar` binary without a server: what a user sees with no profile,
//! and bad flags refused before any request leaves the machine.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn hangar(config_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
    for k in ["HANGAR_URL", "HANGAR_TOKEN", "HANGAR_PROFILE"] {
        cmd.env_remove(k);
    }
    cmd.env("HANGAR_CLI_CONFIG_DIR", config_dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run hangar")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A listening socket that notices if anything connects to it.
struct Tripwire(TcpListener);

impl Tripwire {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Tripwire(l)
    }
    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
    fn touched(&self) -> bool {
        self.0.accept().is_ok()
    }
}

#[test]
fn without_a_profile_the_user_is_told_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = hangar(dir.path(), &[], &["repo", "ls"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("hangar init") && err.contains("hangar profile add"),
        "{err}"
    );

    let out = hangar(dir.path(), &[], &["--profile", "prod", "pool", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("profile \"prod\" does not exist"),
        "{}",
        stderr(&out)
    );

    let out = hangar(dir.path(), &[], &["profile", "ls", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn bad_flags_fail_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let wire = Tripwire::new();
    let url = wire.url();
    let env = [("HANGAR_URL", url.as_str()), ("HANGAR_TOKEN", "t")];
    let pool = |extra: &[&str]| {
        let mut args = vec![
            "pool",
            "add",
            "--repo",
            "mkulke/garm-playground",
            "--provider-name",
            "azure_external",
            "--image",
            "img",
            "--flavor",
            "f",
            "--tags",
            "self-hosted",
        ];
        args.extend_from_slice(extra);
        hangar(dir.path(), &env, &args)
    };

    let cases: Vec<(Output, &str)> = vec![
        (
            pool(&["--extra-specs", r#"["confidential"]"#]),
            "--extra-specs must be a JSON object",
        ),
        (
            pool(&["--min-idle-runners", "5", "--max-runners", "4"]),
            "--max-runners (4) must not be below --min-idle-runners (5)",
        ),
        (
            hangar(
                dir.path(),
                &env,
                &[
                    "credentials",
                    "add",
                    "--name",
                    "app",
                    "--endpoint",
                    "github.com",
                    "--auth-type",
                    "app",
                    "--app-id",
                    "1",
                    "--installation-id",
                    "2",
                    "--private-key-path",
                    "/nonexistent/key.pem",
                ],
            ),
            "cannot read --private-key-path /nonexistent/key.pem",
        ),
        (
            hangar(
                dir.path(),
                &env,
                &[
                    "repository",
                    "add",
                    "--credentials",
                    "c",
                    "--owner",
                    "o",
                    "--name",
                    "n",
                    "--webhook-secret",
                    "",
                ],
            ),
            "--webhook-secret is empty",
        ),
        (
            hangar(dir.path(), &env, &["pool", "show", "not-a-uuid"]),
            "is not a pool id",
        ),
    ];
    for (out, expected) in cases {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "expected {expected:?} in {}",
            stderr(&out)
        );
    }
    assert!(
        !wire.touched(),
        "a refused command must not reach the server"
    );

    // clap's own refusals (missing entity, bad bool) exit 2, also offline.
    let out = hangar(
        dir.path(),
        &env,
        &[
            "pool",
            "add",
            "--provider-name",
            "p",
            "--image",
            "i",
            "--flavor",
            "f",
            "--tags",
            "a",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!wire.touched());
}

#[test]
fn an_unreachable_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Bound then dropped: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = hangar(
        dir.path(),
        &[("HANGAR_URL", &url), ("HANGAR_TOKEN", "t")],
        &["provider", "ls"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach {url}/api/v1/providers")),
        "{err}"
    );
    assert!(
        !err.contains("\"t\"") && !err.contains("Bearer"),
        "no token in errors: {err}"
    );
}

/// `hangar … | head`: the reader leaves before the output is written. The
/// command stops quietly — exit 0, no panic message — as Unix tools do.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hangar"))
            .env("HANGAR_CLI_CONFIG_DIR", dir.path())
            .args(["completions", "bash"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run hangar");
        // Close the read end at once, before the answer is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.is_empty(), "nothing to report: {err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
}
