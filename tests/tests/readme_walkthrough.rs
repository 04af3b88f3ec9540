//! README.md's "Using it" walkthrough runs as written on the dev config
//! (see `hangar_e2e::walkthrough` for the three things a test must change),
//! and what it sets up serves a job end to end; `cargo xtask try` (the
//! `hangar-try` binary) does the same and stops by itself.

use std::process::Command;
use std::time::Duration;

use hangar_e2e::bin;
use hangar_e2e::walkthrough::{Rig, commands, root};

#[test]
fn the_walkthrough_is_there_and_names_the_dev_configs_provider() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let cmds = commands(&readme).unwrap();
    assert!(
        cmds.iter()
            .any(|c| c.starts_with("cargo build -p hangar-cli")),
        "says how to get hangar: {cmds:?}"
    );
    let pool = cmds
        .iter()
        .find(|c| c.starts_with("hangar pool add"))
        .expect("adds a pool");
    assert!(
        pool.contains("--provider-name fake"),
        "the dev config has only `fake`: {pool}"
    );
    assert!(
        pool.contains("--repo octo/app"),
        "no $REPO_ID to guess: {pool}"
    );
    assert!(!cmds.iter().any(|c| c.contains("$REPO_ID")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_runs_as_written_and_serves_a_job() {
    let rig = Rig::start().await.unwrap();
    let out = rig.run_readme(false).unwrap();
    assert!(
        out.contains("+ hangar pool add --repo octo/app --provider-name fake"),
        "{out}"
    );
    // The hook was made on "GitHub", pointing at this hangard.
    let hooks = rig.gh.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(
        hooks[0]
            .url
            .starts_with(&format!("{}/webhooks/", rig.daemon.url)),
        "{hooks:?}"
    );
    // `hangar pool ls` printed the pool.
    assert!(out.contains("fake"), "{out}");

    let steps = rig
        .push_a_job(Duration::from_secs(120), |_, _| {})
        .await
        .unwrap();
    assert!(steps.iter().any(|s| s.contains("completed")), "{steps:?}");
    assert!(steps.iter().any(|s| s.ends_with("VM deleted")), "{steps:?}");

    // The pool's boot data, as `hangar pool userdata` prints it.
    let pools: serde_json::Value =
        serde_json::from_str(&rig.hangar(&["pool", "ls", "--output", "json"]).unwrap()).unwrap();
    let id = pools[0]["id"].as_str().unwrap();
    let ud = rig.hangar(&["pool", "userdata", id]).unwrap();
    assert!(ud.starts_with("#cloud-config\n"), "{ud}");
    assert!(
        ud.contains(&format!("{}/api/v1/metadata", rig.daemon.url)),
        "{ud}"
    );
    // What `hangar pool userdata` prints passes `cloud-init schema`.
    if let Err(e) = hangar_testkit::cloud_init::schema_check(&ud) {
        panic!("{e}");
    }
}

#[test]
fn cargo_xtask_try_pushes_a_job_through_and_stops() {
    let out = Command::new(bin("hangar-try"))
        .current_dir(root())
        .env("HANGAR_E2E_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "the README's walkthrough",
        "hangar init --url http://127.0.0.1:",
        "queued on GitHub",
        "runner.status=idle",
        "completed (success)",
        "VM deleted",
        "done: stopping",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
