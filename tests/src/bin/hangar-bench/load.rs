//! The machine's other load during a run: what every CPU did (from
//! `/proc/stat`) minus what hangard, the processes it ran and this bench
//! (load generator and FakeGitHub) did, so a figure taken while other work
//! shared the machine says so.

use std::time::Instant;

/// Busy CPU seconds of the whole machine so far (user, nice, system, irq,
/// softirq, steal), and the CPU count.
fn machine_busy() -> anyhow::Result<(f64, usize)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let mut busy = 0.0;
    let mut cpus = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<f64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest is
                // counted in user already).
                busy = [0, 1, 2, 5, 6, 7]
                    .iter()
                    .map(|&i| v.get(i).copied().unwrap_or(0.0))
                    .sum::<f64>()
                    / super::clk_tck();
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    Ok((busy, cpus.max(1)))
}

/// User + system CPU seconds of `pid` and of its children it has reaped.
pub(super) fn with_children(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<f64> = stat[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime stime cutime cstime are fields 14-17 (11-14 after the name).
    f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>()) / super::clk_tck()
}

/// A window over which the machine's load is split.
pub struct Window {
    started: Instant,
    busy: f64,
    daemon: f64,
    bench: f64,
    load1: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// What the window measured, in CPUs busy on average.
#[derive(Debug, Clone)]
pub struct Load {
    pub cpus: usize,
    pub secs: f64,
    pub all: f64,
    /// hangard and the provider processes it ran (and reaped).
    pub daemon: f64,
    /// This process: the load generator and FakeGitHub.
    pub bench: f64,
    /// Everything else on the machine (other builds, tests, users).
    pub other: f64,
    pub load1_before: String,
    pub load1_after: String,
}

impl Window {
    /// Starts a window; `daemon` is hangard's pid (its reaped provider
    /// processes count with it).
    pub fn start(daemon: u32) -> anyhow::Result<Self> {
        Ok(Self {
            started: Instant::now(),
            busy: machine_busy()?.0,
            daemon: with_children(daemon),
            bench: with_children(std::process::id()),
            load1: loadavg(),
        })
    }

    pub fn end(&self, daemon: u32) -> anyhow::Result<Load> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let (busy, cpus) = machine_busy()?;
        let all = (busy - self.busy) / secs;
        let daemon = (with_children(daemon) - self.daemon) / secs;
        let bench = (with_children(std::process::id()) - self.bench) / secs;
        Ok(Load {
            cpus,
            secs,
            all,
            daemon,
            bench,
            other: (all - daemon - bench).max(0.0),
            load1_before: self.load1.clone(),
            load1_after: loadavg(),
        })
    }
}

impl Load {
    /// One Markdown table row: `| what | s | all | hangard | bench | other | load |`.
    pub fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.1} | {:.2} of {} | {:.2} | {:.2} | {:.2} | {} → {} |",
            self.secs,
            self.all,
            self.cpus,
            self.daemon,
            self.bench,
            self.other,
            self.load1_before,
            self.load1_after
        )
    }

    pub const HEADER: &str = "| window | s | CPUs busy (all) | hangard + its provider processes | bench (load + FakeGitHub) | other load | 1-min load avg |\n|---|---|---|---|---|---|---|";
}
