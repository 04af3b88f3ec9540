//! A tiny scenario, run twice: every job is accounted for, no number is
//! negative or out of range, and the same seed gives the same report.

use hangar_sim::{Scenario, run};

const TINY: &str = r#"
description = "3 min, two pools, duplicated, late and reordered deliveries"
seed = 11
duration_mins = 3
drain_mins = 5
warmup_mins = 1
stranded_after_mins = 4

[deliveries]
duplicated = 0.2
late = 0.1
late_secs = { uniform = [5, 30] }
reordered = 0.2
reorder_secs = { uniform = [0, 10] }

[[provider]]
name = "cloud"
create_secs = { lognormal = [5, 15] }
delete_secs = { uniform = [1, 5] }
boot_secs = { uniform = [10, 30] }

[[pool]]
name = "linux"
provider = "cloud"
tags = ["self-hosted", "linux", "x64"]
min_idle_runners = 1
max_runners = 10

[[pool]]
name = "arm"
provider = "cloud"
tags = ["self-hosted", "arm64"]
max_runners = 3

[[jobs]]
labels = ["self-hosted", "linux"]
per_min = 3
bursts = [{ at_min = 1, jobs = 5 }]
run_secs = { uniform = [20, 90] }

[[jobs]]
labels = ["self-hosted", "arm64"]
per_min = 1
run_secs = { uniform = [20, 60] }

[goals]
max_stranded = 0
min_served_fraction = 1.0
"#;

#[test]
fn a_tiny_scenario_accounts_for_every_job_and_repeats_itself() {
    let scenario = Scenario::parse("tiny", TINY).unwrap();
    let first = run(&scenario, scenario.seed).unwrap();

    assert!(first.jobs >= 10, "{first:#?}");
    // Every job is served, or still queued at the end.
    assert_eq!(first.served + first.waiting, first.jobs, "{first:#?}");
    assert!(first.stranded <= first.jobs);
    assert!(first.still_running <= first.served);
    // Percentiles are ordered, and nothing is negative.
    assert!(first.ttr_p50 <= first.ttr_p95 && first.ttr_p95 <= first.ttr_p99);
    assert!(first.ttr_p99 <= first.ttr_max);
    assert!(first.surplus_vm_min >= 0.0 && first.surplus_vm_min <= first.vm_min);
    assert!(first.steady_surplus_per_pool.iter().all(|(_, v)| *v >= 0.0));
    // Each job needed a runner registered and a VM made at least once.
    let calls = |k: &str| {
        first
            .calls
            .iter()
            .find(|(c, _)| c == k)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert!(calls("generate_jit_config") >= first.served, "{first:#?}");
    let creates: u64 = first.providers.iter().map(|(_, p)| p.creates).sum();
    assert!(creates >= first.served, "{first:#?}");
    assert!(first.faults.duplicated > 0 && first.faults.late > 0);
    assert!(first.goals_met(), "{:?}", first.goals);

    let second = run(&scenario, scenario.seed).unwrap();
    assert_eq!(first.fingerprint(), second.fingerprint());

    // Another seed is another run.
    let other = run(&scenario, scenario.seed + 1).unwrap();
    assert_ne!(first.fingerprint(), other.fingerprint());
}

#[test]
fn bad_scenarios_are_refused_with_the_reason() {
    let err = Scenario::parse("bad", &TINY.replace("per_min = 3", "per_minute = 3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_minute"), "{err}");
    let err = Scenario::parse(
        "bad",
        &TINY.replace("provider = \"cloud\"", "provider = \"nope\""),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope"), "{err}");
    let err = Scenario::parse("bad", &TINY.replace("duplicated = 0.2", "duplicated = 1.5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("probability"), "{err}");
}
