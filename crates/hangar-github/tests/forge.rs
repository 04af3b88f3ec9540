//! `GitHubForge` against FakeGitHub over loopback: every Forge call in every
//! scope, error mapping, retries, rate limits, budgets and App tokens.

use std::time::{Duration, Instant};

use hangar_core::entity::{Credentials, CredentialsAuth, Endpoint, EntityScope};
use hangar_core::forge::JitRequest;
use hangar_core::{Forge, ForgeError, ForgeTarget, JobId, ResourceName, Secret};
use hangar_github::{GitHubConfig, GitHubForge};
use hangar_testkit::fake_github::{FakeGitHub, FaultKind};
use http::Method;

fn target(gh: &FakeGitHub, scope: EntityScope) -> ForgeTarget {
    ForgeTarget {
        endpoint: Endpoint {
            name: ResourceName::parse("fake").unwrap(),
            description: String::new(),
            base_url: gh.url(),
            api_base_url: gh.url(),
            ca_bundle: None,
        },
        credentials: Credentials {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            endpoint: ResourceName::parse("fake").unwrap(),
            auth: CredentialsAuth::Pat {
                token: Secret::new("ghp_test"),
            },
            app_webhook_secret: None,
        },
        scope,
    }
}

fn repo() -> EntityScope {
    EntityScope::Repository {
        owner: "octo".into(),
        name: "app".into(),
    }
}

fn fast() -> GitHubConfig {
    GitHubConfig {
        backoff_base_ms: 5,
        backoff_max_ms: 50,
        ..Default::default()
    }
}

fn jit(name: &str) -> JitRequest {
    JitRequest {
        name: name.into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into(), "linux".into()],
        work_folder: "_work".into(),
    }
}

#[tokio::test]
async fn every_call_in_every_scope() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    gh.add_runner_group("orgs/acme", 7, "ci");
    gh.add_runner_group("enterprises/big", 9, "ent");
    let forge = GitHubForge::new(fast());
    for (scope, group) in [
        (repo(), None),
        (
            EntityScope::Organization {
                name: "acme".into(),
            },
            Some(("ci", 7)),
        ),
        (
            EntityScope::Enterprise { slug: "big".into() },
            Some(("ent", 9)),
        ),
    ] {
        let t = target(&gh, scope.clone());
        let cfg = forge
            .generate_jit_config(&t, &jit("hangar-a"))
            .await
            .unwrap();
        assert_eq!(cfg.runner_name, "hangar-a");
        assert!(!cfg.encoded_jit_config.expose().is_empty());
        let runners = forge.list_runners(&t).await.unwrap();
        assert_eq!(runners.len(), 1, "{scope:?}");
        assert_eq!(runners[0].labels, vec!["self-hosted", "linux"]);
        let tok = forge.registration_token(&t).await.unwrap();
        assert!(tok.token.expose().starts_with("REGTOKEN"));
        assert!(tok.expires_at > chrono::Utc::now());
        let tools = forge.runner_downloads(&t).await.unwrap();
        assert!(
            tools
                .iter()
                .any(|x| x.os == "linux" && x.architecture == "x64" && x.sha256_checksum.is_some())
        );
        assert_eq!(forge.runner_group_id(&t, None).await.unwrap(), 1);
        match group {
            Some((name, id)) => {
                assert_eq!(forge.runner_group_id(&t, Some(name)).await.unwrap(), id);
                assert!(matches!(
                    forge.runner_group_id(&t, Some("nope")).await,
                    Err(ForgeError::NotFound(_))
                ));
            }
            None => assert!(matches!(
                forge.runner_group_id(&t, Some("ci")).await,
                Err(ForgeError::Fatal(_))
            )),
        }
        forge.delete_runner(&t, cfg.runner_id).await.unwrap();
        assert!(forge.list_runners(&t).await.unwrap().is_empty());
        // Gone already is fine.
        forge.delete_runner(&t, cfg.runner_id).await.unwrap();
    }
}

#[tokio::test]
async fn bad_token_is_unauthorized() {
    let gh = FakeGitHub::start().await;
    gh.require_token("something-else");
    let forge = GitHubForge::new(fast());
    let e = forge.list_runners(&target(&gh, repo())).await.unwrap_err();
    assert!(matches!(e, ForgeError::Unauthorized(_)), "{e}");
    assert_eq!(forge.stats()[0].errors.get("unauthorized"), Some(&1));
}

#[tokio::test]
async fn name_clash_busy_runner_and_jobs() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    let t = target(&gh, repo());
    forge.generate_jit_config(&t, &jit("dup")).await.unwrap();
    let e = forge
        .generate_jit_config(&t, &jit("dup"))
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::AlreadyExists(_)), "{e}");

    let busy = gh.add_runner("repos/octo/app", "busy", &["x"], true, true);
    let e = forge.delete_runner(&t, busy).await.unwrap_err();
    assert!(matches!(e, ForgeError::Busy(_)), "{e}");

    let job = gh.queue_job("octo/app", &["self-hosted"]).await;
    let j = forge
        .get_job(&t, "octo/app", JobId(job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((j.id.0, j.status.as_str()), (job, "queued"));
    assert!(
        forge
            .get_job(&t, "octo/app", JobId(1))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn listing_follows_every_page() {
    let gh = FakeGitHub::start().await;
    for i in 0..250 {
        gh.add_runner("orgs/acme", &format!("r{i}"), &["x"], false, false);
    }
    let forge = GitHubForge::new(fast());
    let runners = forge
        .list_runners(&target(
            &gh,
            EntityScope::Organization {
                name: "acme".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(runners.len(), 250);
    assert_eq!(gh.calls("list-runners"), 3);
}

#[tokio::test]
async fn gets_retry_5xx_but_jit_posts_do_not() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    let t = target(&gh, repo());
    gh.inject(
        Some(Method::GET),
        "/actions/runners",
        2,
        FaultKind::Status(502),
    );
    assert!(forge.list_runners(&t).await.unwrap().is_empty());
    assert_eq!(gh.calls("list-runners"), 3, "two failures, then success");

    gh.inject(
        Some(Method::POST),
        "generate-jitconfig",
        1,
        FaultKind::Status(500),
    );
    let e = forge
        .generate_jit_config(&t, &jit("once"))
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::Transient(_)), "{e}");
    assert_eq!(gh.calls("generate-jitconfig"), 1, "never retried blindly");

    gh.inject(
        Some(Method::GET),
        "/actions/runners",
        10,
        FaultKind::Status(503),
    );
    let e = forge.list_runners(&t).await.unwrap_err();
    assert!(matches!(e, ForgeError::Transient(_)), "{e}");
    assert_eq!(gh.calls("list-runners"), 3 + 4, "bounded: 1 + max_retries");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    let t = target(&gh, repo());
    gh.inject(
        Some(Method::GET),
        "/actions/runners",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let started = Instant::now();
    forge.list_runners(&t).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );

    // A long retry-after is not slept through: the caller learns how long.
    gh.inject(
        Some(Method::GET),
        "/actions/runners",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 120,
        },
    );
    match forge.list_runners(&t).await {
        Err(ForgeError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(120))
        }
        other => panic!("{other:?}"),
    }
    // …and the credentials stay blocked: no request goes out meanwhile.
    let before = gh.calls("list-runners");
    assert!(matches!(
        forge.list_runners(&t).await,
        Err(ForgeError::RateLimited { .. })
    ));
    assert_eq!(gh.calls("list-runners"), before);
}

#[tokio::test]
async fn secondary_limit_backs_off_and_jit_is_not_retried() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    let t = target(&gh, repo());
    gh.inject(
        None,
        "/actions/runners",
        2,
        FaultKind::SecondaryLimit {
            retry_after_secs: None,
        },
    );
    assert!(forge.list_runners(&t).await.unwrap().is_empty());
    assert_eq!(gh.calls("list-runners"), 3);
    gh.inject(
        Some(Method::POST),
        "generate-jitconfig",
        1,
        FaultKind::SecondaryLimit {
            retry_after_secs: None,
        },
    );
    let e = forge.generate_jit_config(&t, &jit("x")).await.unwrap_err();
    assert!(matches!(e, ForgeError::RateLimited { .. }), "{e}");
}

#[tokio::test]
async fn remaining_zero_blocks_until_reset() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    let t = target(&gh, repo());
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    gh.set_rate_limit(0, 5000, reset);
    forge.list_runners(&t).await.unwrap();
    let stats = forge.stats();
    assert_eq!(stats[0].rate_limit_remaining, Some(0));
    assert_eq!(stats[0].rate_limit_limit, Some(5000));
    let calls = gh.calls("list-runners");
    match forge.list_runners(&t).await {
        Err(ForgeError::RateLimited { retry_after, .. }) => {
            assert!(retry_after > Duration::from_secs(590), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gh.calls("list-runners"), calls, "nothing sent while spent");
}

#[tokio::test]
async fn hourly_budget_caps_a_burst() {
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(GitHubConfig {
        budget_per_hour: 10,
        budget_burst: 3,
        ..fast()
    });
    let t = target(&gh, repo());
    for _ in 0..3 {
        forge.list_runners(&t).await.unwrap();
    }
    match forge.list_runners(&t).await {
        Err(ForgeError::RateLimited {
            retry_after,
            message,
        }) => {
            assert!(retry_after > Duration::from_secs(300), "{retry_after:?}");
            assert!(message.contains("budget"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gh.calls("list-runners"), 3);
}

#[tokio::test]
async fn app_installation_token_is_fetched_once_and_reused() {
    let gh = FakeGitHub::start().await;
    gh.set_app(4242);
    let mut t = target(
        &gh,
        EntityScope::Organization {
            name: "acme".into(),
        },
    );
    t.credentials.auth = CredentialsAuth::App {
        app_id: 4242,
        installation_id: 77,
        private_key: Secret::new(include_str!("fixtures/test-app-key.pem")),
    };
    let forge = GitHubForge::new(fast());
    for i in 0..3 {
        forge
            .generate_jit_config(&t, &jit(&format!("app-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(forge.list_runners(&t).await.unwrap().len(), 3);
    assert_eq!(gh.installation_tokens_issued(), 1, "cached across calls");

    // A different App id is refused by GitHub.
    let mut wrong = t.clone();
    wrong.credentials.name = ResourceName::parse("other").unwrap();
    wrong.credentials.auth = CredentialsAuth::App {
        app_id: 1,
        installation_id: 77,
        private_key: Secret::new(include_str!("fixtures/test-app-key.pem")),
    };
    assert!(forge.list_runners(&wrong).await.is_err());

    // A key that is not PEM is a clear error.
    let mut bad = t.clone();
    bad.credentials.name = ResourceName::parse("bad").unwrap();
    bad.credentials.auth = CredentialsAuth::App {
        app_id: 4242,
        installation_id: 77,
        private_key: Secret::new("not a key"),
    };
    let e = forge.list_runners(&bad).await.unwrap_err();
    assert!(e.to_string().contains("RSA PEM"), "{e}");
}

/// Webhooks: create (JSON deliveries of `workflow_job`, the secret),
/// list, delete; deleting one already gone is fine; enterprises have none.
#[tokio::test]
async fn hooks_round_trip_for_repositories_and_organizations() {
    use hangar_core::forge::NewHook;
    let gh = FakeGitHub::start().await;
    let forge = GitHubForge::new(fast());
    for scope in [
        repo(),
        EntityScope::Organization {
            name: "acme".into(),
        },
    ] {
        let t = target(&gh, scope);
        let made = forge
            .create_hook(
                &t,
                &NewHook {
                    url: "https://hangar.example/webhooks/e1".into(),
                    secret: Secret::new("hook-secret"),
                    events: vec!["workflow_job".into()],
                    insecure_ssl: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(made.url, "https://hangar.example/webhooks/e1");
        assert_eq!(made.events, ["workflow_job"]);
        assert!(made.active && made.insecure_ssl);
        let stored = gh.hooks().into_iter().find(|h| h.id == made.id).unwrap();
        assert_eq!(stored.secret.as_deref(), Some("hook-secret"));
        assert_eq!(stored.content_type, "json");
        assert_eq!(forge.list_hooks(&t).await.unwrap(), vec![made.clone()]);
        forge.delete_hook(&t, made.id).await.unwrap();
        assert!(forge.list_hooks(&t).await.unwrap().is_empty());
        forge.delete_hook(&t, made.id).await.unwrap();
    }
    let ent = target(&gh, EntityScope::Enterprise { slug: "big".into() });
    assert!(matches!(
        forge.list_hooks(&ent).await,
        Err(ForgeError::Fatal(_))
    ));
}
