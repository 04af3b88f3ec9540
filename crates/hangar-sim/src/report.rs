//! What a run measured, the scenario's goals judged against it, and the
//! Markdown tables `cargo xtask simulate` prints.

use std::fmt::Write as _;
use std::time::Duration;

use crate::scenario::Goals;
use crate::world::{FaultCounts, ProviderCounts};

/// The outcome of one scenario run. Everything but `wall` follows from the
/// scenario and the seed.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// Jobs queued on GitHub.
    pub jobs: u64,
    /// Jobs a runner took.
    pub served: u64,
    /// Of those, still running at the end.
    pub still_running: u64,
    /// Still queued at the end (stranded or not).
    pub waiting: u64,
    /// Jobs that at some point had been queued for `stranded_after_mins`
    /// with no free registered runner whose labels fit them (idle, or on a
    /// VM coming up) — whether or not something rescued them later.
    pub stranded: u64,
    /// Time from queued to taken by a runner, in virtual milliseconds.
    pub ttr_p50: u64,
    pub ttr_p95: u64,
    pub ttr_p99: u64,
    pub ttr_max: u64,
    /// VM-minutes beyond `min_idle_runners` plus the queued jobs a pool
    /// can serve, over the whole run and all pools.
    pub surplus_vm_min: f64,
    pub vm_min: f64,
    /// Mean surplus VMs per pool after warm-up while jobs arrive.
    pub steady_surplus_per_pool: Vec<(String, f64)>,
    pub peak_vms: Vec<(String, usize)>,
    /// GitHub calls by kind (the `Forge` method).
    pub calls: Vec<(String, u64)>,
    pub faults: FaultCounts,
    pub providers: Vec<(String, ProviderCounts)>,
    /// Each goal given, and whether it was met.
    pub goals: Vec<(String, bool)>,
    pub wall: Duration,
}

/// The `p`th percentile (nearest rank) of sorted values; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

impl Report {
    pub fn github_calls(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum()
    }

    pub fn calls_per_job(&self) -> f64 {
        self.github_calls() as f64 / self.jobs.max(1) as f64
    }

    pub fn worst_steady_surplus(&self) -> f64 {
        self.steady_surplus_per_pool
            .iter()
            .map(|(_, v)| *v)
            .fold(0.0, f64::max)
    }

    pub fn goals_met(&self) -> bool {
        self.goals.iter().all(|(_, ok)| *ok)
    }

    /// Checks `goals` and records each.
    pub fn judge(mut self, goals: &Goals) -> Self {
        let mut out = Vec::new();
        if let Some(max) = goals.max_stranded {
            out.push((
                format!("stranded {} <= {max}", self.stranded),
                self.stranded <= max,
            ));
        }
        if let Some(max) = goals.max_steady_surplus_vms_per_pool {
            let v = self.worst_steady_surplus();
            out.push((format!("steady surplus {v:.2} <= {max} VM/pool"), v <= max));
        }
        if let Some(max) = goals.max_time_to_runner_p95_secs {
            let v = self.ttr_p95 as f64 / 1000.0;
            out.push((format!("p95 {v:.1}s <= {max}s"), v <= max));
        }
        if let Some(max) = goals.max_time_to_runner_max_secs {
            let v = self.ttr_max as f64 / 1000.0;
            out.push((format!("max TTR {v:.1}s <= {max}s"), v <= max));
        }
        if let Some(min) = goals.min_served_fraction {
            let v = self.served as f64 / self.jobs.max(1) as f64;
            out.push((format!("served {v:.3} >= {min}"), v >= min));
        }
        if let Some(max) = goals.max_github_calls_per_job {
            let v = self.calls_per_job();
            out.push((format!("GitHub calls/job {v:.2} <= {max}"), v <= max));
        }
        self.goals = out;
        self
    }

    fn goals_cell(&self) -> String {
        if self.goals.is_empty() {
            return "none set".into();
        }
        let missed: Vec<&str> = self
            .goals
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(g, _)| g.as_str())
            .collect();
        if missed.is_empty() {
            "met".into()
        } else {
            format!("**missed**: {}", missed.join("; "))
        }
    }

    /// The summary row (no wall time, so equal seeds give equal rows).
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} |",
            self.scenario,
            self.seed,
            self.jobs,
            self.served,
            self.stranded,
            self.waiting,
            secs(self.ttr_p50),
            secs(self.ttr_p95),
            secs(self.ttr_p99),
            secs(self.ttr_max),
            self.surplus_vm_min,
            self.worst_steady_surplus(),
            self.calls_per_job(),
            self.goals_cell(),
        )
    }

    /// Every number of the report but the wall time, as text.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{}\n{}",
            self.row(),
            self.steady_surplus_per_pool,
            self.peak_vms,
            self.calls,
            self.faults,
            self.providers,
            self.vm_min,
            self.still_running
        )
    }
}

const CALL_KINDS: &[&str] = &[
    "generate_jit_config",
    "delete_runner",
    "list_runners",
    "get_job",
    "list_hook_deliveries",
    "redeliver",
    "queued_run_ids",
    "run_jobs",
];

/// The tables for a set of runs.
pub fn markdown(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | seed | jobs | served | stranded | queued at end | TTR p50 s | p95 s | p99 s | max s | surplus VM-min | steady surplus VM/pool | GitHub calls/job | goals |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in reports {
        let _ = writeln!(s, "{}", r.row());
    }
    s.push_str("\nGitHub calls per job, by kind:\n\n| scenario |");
    for k in CALL_KINDS {
        let _ = write!(s, " {k} |");
    }
    s.push_str(" other |\n|---|");
    for _ in CALL_KINDS {
        s.push_str("---:|");
    }
    s.push_str("---:|\n");
    for r in reports {
        let jobs = r.jobs.max(1) as f64;
        let _ = write!(s, "| {} |", r.scenario);
        let mut other = 0;
        for (k, n) in &r.calls {
            if !CALL_KINDS.contains(&k.as_str()) {
                other += n;
            }
        }
        for k in CALL_KINDS {
            let n = r
                .calls
                .iter()
                .find(|(c, _)| c == k)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = write!(s, " {:.2} |", n as f64 / jobs);
        }
        let _ = writeln!(s, " {:.2} |", other as f64 / jobs);
    }
    s.push_str("\nFaults injected and provider calls:\n\n| scenario | deliveries | lost | duplicated | late | reordered | redelivered | VM creates (failed) | VM deletes (failed) | VM-min | peak VMs per pool | wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    for r in reports {
        let f = &r.faults;
        let (c, cf, d, df) = r.providers.iter().fold((0, 0, 0, 0), |a, (_, p)| {
            (
                a.0 + p.creates,
                a.1 + p.create_failures,
                a.2 + p.deletes,
                a.3 + p.delete_failures,
            )
        });
        let peaks: Vec<String> = r.peak_vms.iter().map(|(p, n)| format!("{p} {n}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {c} ({cf}) | {d} ({df}) | {:.0} | {} | {:.1} |",
            r.scenario,
            f.deliveries,
            f.lost,
            f.duplicated,
            f.late,
            f.reordered,
            f.redelivered,
            r.vm_min,
            peaks.join(", "),
            r.wall.as_secs_f64()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 95.0), 95);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
