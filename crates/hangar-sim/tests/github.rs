//! The simulated GitHub's delivery log and queued-run listing, which the
//! scheduler's recovery relies on: a failed delivery is listed with its
//! status, a redelivery is a new attempt with the same guid, pages go from
//! newest to oldest, and queued runs list their jobs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::forge::HookRef;
use hangar_core::{EntityScope, Forge, ForgeJobStatus, ForgeTarget, Labels};
use hangar_sim::scenario::{Deliveries, Dist, FailureKind, ProviderSpec};
use hangar_sim::world::{Due, Shared, SimGitHub, World};
use hangar_testkit::sample;

fn target() -> ForgeTarget {
    ForgeTarget {
        endpoint: sample::github_com(),
        credentials: sample::pat("gh", "github.com", "ghp_x"),
        scope: EntityScope::Repository {
            owner: "octo".into(),
            name: "app".into(),
        },
    }
}

fn provider() -> ProviderSpec {
    ProviderSpec {
        name: "p".into(),
        create_secs: Dist::Fixed(1.0),
        delete_secs: Dist::Fixed(1.0),
        boot_secs: Dist::Fixed(1.0),
        create_failure: 0.0,
        create_failure_kind: FailureKind::Transient,
        delete_failure: 0.0,
        max_concurrency: 1,
    }
}

/// Attempts everything due now; returns the ids of attempts that reached
/// Hangar.
fn attempt_due(world: &Shared) -> Vec<i64> {
    let mut w = world.lock();
    let now = w.now_ms();
    let mut delivered = Vec::new();
    while let Some(due) = w.pop_due(now) {
        if let Due::Deliver(plan) = due
            && let Some(a) = w.attempt(plan)
        {
            delivered.push(a.delivery_id);
        }
    }
    delivered
}

#[tokio::test(start_paused = true)]
async fn failed_deliveries_are_listed_and_redelivered_with_the_same_guid() {
    let faults = Deliveries {
        lost: 1.0,
        ..Default::default()
    };
    let world = Shared(Arc::new(Mutex::new(World::new(1, faults, &[provider()]))));
    world
        .lock()
        .add_hook("https://hangar.example/webhooks/1".into());
    world
        .lock()
        .queue_job(Labels::parse_list("self-hosted,linux").unwrap(), 60_000);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(attempt_due(&world).is_empty(), "the delivery is lost");

    let gh = SimGitHub(world.clone());
    let t = target();
    let hooks = gh.list_hooks(&t).await.unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].url, "https://hangar.example/webhooks/1");
    let hook = HookRef::Entity {
        hook_id: hooks[0].id,
    };
    let page = gh.list_hook_deliveries(&t, hook, None, 30).await.unwrap();
    assert_eq!(page.deliveries.len(), 1);
    let failed = page.deliveries[0].clone();
    assert!(
        failed.status_code == 0 || failed.status_code >= 500,
        "{failed:?}"
    );
    assert_eq!(failed.action.as_deref(), Some("queued"));
    assert!(!failed.redelivery);

    // GitHub still has the job queued, in a queued run.
    let runs = gh.queued_run_ids(&t, "octo/app", 100).await.unwrap();
    assert_eq!(runs.len(), 1);
    let jobs = gh.run_jobs(&t, "octo/app", runs[0]).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, ForgeJobStatus::Queued);
    assert_eq!(jobs[0].run_id, Some(runs[0]));
    assert_eq!(jobs[0].labels, ["linux", "self-hosted"]);

    // A redelivery is a new attempt of the same delivery, sent at once.
    gh.redeliver(&t, hook, failed.id).await.unwrap();
    let delivered = attempt_due(&world);
    assert_eq!(delivered.len(), 1);
    world.lock().answered(delivered[0], 202);
    let page = gh.list_hook_deliveries(&t, hook, None, 30).await.unwrap();
    assert_eq!(page.deliveries.len(), 2);
    let again = &page.deliveries[0];
    assert_eq!(again.guid, failed.guid);
    assert!(again.redelivery);
    assert_eq!(again.status_code, 202);
    assert!(again.id > failed.id);

    // One per page: newest first, then a cursor to the older one.
    let first = gh.list_hook_deliveries(&t, hook, None, 1).await.unwrap();
    assert_eq!(first.deliveries[0].id, again.id);
    let cursor = first.next_cursor.expect("an older page");
    let second = gh
        .list_hook_deliveries(&t, hook, Some(&cursor), 1)
        .await
        .unwrap();
    assert_eq!(second.deliveries[0].id, failed.id);
    assert_eq!(second.next_cursor, None);

    // Unknown hooks, deliveries and runs are 404s.
    let nowhere = HookRef::Entity { hook_id: 999 };
    assert!(
        gh.list_hook_deliveries(&t, nowhere, None, 30)
            .await
            .is_err()
    );
    assert!(gh.redeliver(&t, hook, 999).await.is_err());
    assert!(gh.run_jobs(&t, "octo/app", 1).await.is_err());
}
