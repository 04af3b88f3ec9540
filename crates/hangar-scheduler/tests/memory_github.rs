//! The in-memory GitHub the step tests run against answers as the real
//! client does: the same scenario through `GitHubForge` against FakeGitHub
//! (GitHub's REST API on loopback) and through `MemoryGitHub` gives the
//! same outcomes, so the step tests rest on GitHub's behaviour, not on ours.

mod support;

use hangar_core::forge::JitRequest;
use hangar_core::*;
use hangar_testkit::fake_github::FakeGitHub;
use hangar_testkit::sample;
use support::MemoryGitHub;

fn outcome<T>(r: &Result<T, ForgeError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.kind().into(),
    }
}

/// Registration, a name clash, a busy runner, removal (twice), an unknown
/// job and the default runner group; returns what each step answered.
async fn scenario(
    forge: &dyn Forge,
    target: &ForgeTarget,
    set_busy: &dyn Fn(&str, bool),
) -> Vec<String> {
    let req = JitRequest {
        name: "hangar-parity".into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into(), "linux".into()],
        work_folder: "_work".into(),
    };
    let mut out = Vec::new();
    let jit = forge.generate_jit_config(target, &req).await;
    out.push(format!("register {}", outcome(&jit)));
    let id = jit.unwrap().runner_id;
    let listed = forge.list_runners(target).await.unwrap();
    let mine = listed.iter().find(|r| r.id == id).expect("listed");
    let mut labels = mine.labels.clone();
    labels.sort();
    out.push(format!(
        "listed {} {labels:?} busy={}",
        mine.name, mine.busy
    ));
    let again = forge.generate_jit_config(target, &req).await;
    out.push(format!("register again {}", outcome(&again)));
    set_busy("hangar-parity", true);
    out.push(format!(
        "delete busy {}",
        outcome(&forge.delete_runner(target, id).await)
    ));
    set_busy("hangar-parity", false);
    out.push(format!(
        "delete {}",
        outcome(&forge.delete_runner(target, id).await)
    ));
    let gone = !forge
        .list_runners(target)
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == id);
    out.push(format!("gone {gone}"));
    out.push(format!(
        "delete again {}",
        outcome(&forge.delete_runner(target, id).await)
    ));
    let job = forge
        .get_job(target, "octo/app", JobId(4_000_000_001))
        .await;
    out.push(format!("unknown job {:?}", job.map(|j| j.is_none())));
    out.push(format!(
        "default group {:?}",
        forge.runner_group_id(target, None).await
    ));
    out
}

#[tokio::test]
async fn memory_github_answers_as_github_forge_against_fake_github() {
    let gh = FakeGitHub::start().await;
    let target = ForgeTarget {
        endpoint: sample::endpoint("fake", &gh.url(), &gh.url()),
        credentials: sample::pat("gh", "fake", "ghp_test"),
        scope: EntityScope::Repository {
            owner: "octo".into(),
            name: "app".into(),
        },
    };
    let real = hangar_github::GitHubForge::new(Default::default());
    let over_http = scenario(&real, &target, &|n, b| gh.set_busy(n, b)).await;

    let memory = MemoryGitHub::default();
    let in_memory = scenario(&memory, &target, &|n, b| memory.set_busy(n, b)).await;

    assert_eq!(in_memory, over_http);
    // And the scenario did reach every answer that matters.
    assert_eq!(over_http[2], "register again already_exists");
    assert_eq!(over_http[3], "delete busy busy");
}
