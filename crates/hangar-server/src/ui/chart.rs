//! Queue-wait percentiles over the last hour and the small inline SVG
//! chart that shows them: p50 and p95 per five-minute bucket. Pure: it
//! is handed the samples and the time.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// The window the chart covers.
pub const WINDOW_MIN: i64 = 60;
/// Its buckets.
pub const BUCKETS: usize = 12;

/// The nearest-rank percentile `p` (0–100) of `sorted` (ascending).
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p.min(100)) * sorted.len() as u64)
        .div_ceil(100)
        .max(1);
    Some(sorted[(rank - 1) as usize])
}

/// p50 and p95 of one set of waits (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub n: usize,
    pub p50: i64,
    pub p95: i64,
}

pub fn summary(waits: &[i64]) -> Option<Summary> {
    let mut v = waits.to_vec();
    v.sort_unstable();
    Some(Summary {
        n: v.len(),
        p50: percentile(&v, 50)?,
        p95: percentile(&v, 95)?,
    })
}

/// The window's samples, (when the runner took the job, wait), split
/// into [`BUCKETS`] buckets ending at `now`, each summarised.
pub fn buckets(samples: &[(DateTime<Utc>, i64)], now: DateTime<Utc>) -> Vec<Option<Summary>> {
    let width_ms = WINDOW_MIN * 60_000 / BUCKETS as i64;
    let start = now.timestamp_millis() - WINDOW_MIN * 60_000;
    let mut split: Vec<Vec<i64>> = vec![Vec::new(); BUCKETS];
    for (at, wait) in samples {
        let offset = at.timestamp_millis() - start;
        if offset < 0 {
            continue;
        }
        let i = ((offset / width_ms) as usize).min(BUCKETS - 1);
        split[i].push(*wait);
    }
    split.iter().map(|w| summary(w)).collect()
}

const W: f64 = 180.0;
const H: f64 = 44.0;
const PAD: f64 = 3.0;

/// The chart: two lines (p95 dashed above p50) over the hour, scaled to
/// the highest p95; buckets without jobs leave a gap. Labelled for screen
/// readers with the hour's figures.
pub fn svg(buckets: &[Option<Summary>], hour: Option<Summary>) -> Markup {
    let label = match hour {
        Some(s) => format!(
            "Queued to runner over the last hour: p50 {}, p95 {}, {} jobs",
            super::layout::duration_ms(s.p50),
            super::layout::duration_ms(s.p95),
            s.n
        ),
        None => "No job reached a runner in the last hour".to_owned(),
    };
    let top = buckets
        .iter()
        .flatten()
        .map(|s| s.p95)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * (i as f64 + 0.5) / buckets.len().max(1) as f64;
    let y = |v: i64| H - PAD - (H - 2.0 * PAD) * (v as f64 / top);
    let line = |pick: fn(&Summary) -> i64| -> Vec<String> {
        // Runs of consecutive buckets with data, each a polyline.
        let mut runs = Vec::new();
        let mut cur = String::new();
        for (i, b) in buckets.iter().enumerate() {
            match b {
                Some(s) => cur.push_str(&format!("{:.1},{:.1} ", x(i), y(pick(s)))),
                None if !cur.is_empty() => runs.push(std::mem::take(&mut cur)),
                None => {}
            }
        }
        if !cur.is_empty() {
            runs.push(cur);
        }
        runs
    };
    let dots = |pick: fn(&Summary) -> i64| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|s| (x(i), y(pick(s)))))
            .collect()
    };
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label=(label) {
            title { (label) }
            line.axis x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) {}
            @if hour.is_some() {
                text.scale x=(PAD + 1.0) y="9" { (super::layout::duration_ms(top as i64)) }
            }
            @for pts in line(|s| s.p95) { polyline.p95 points=(pts) {} }
            @for pts in line(|s| s.p50) { polyline.p50 points=(pts) {} }
            @for (cx, cy) in dots(|s| s.p95) { circle.p95 cx=(format!("{cx:.1}")) cy=(format!("{cy:.1}")) r="1.6" {} }
            @for (cx, cy) in dots(|s| s.p50) { circle.p50 cx=(format!("{cx:.1}")) cy=(format!("{cy:.1}")) r="1.6" {} }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 95), Some(4));
        let s = summary(&[300, 100, 200]).unwrap();
        assert_eq!((s.n, s.p50, s.p95), (3, 200, 300));
    }

    #[test]
    fn samples_fall_in_their_five_minutes() {
        let now = DateTime::from_timestamp(10_000_000, 0).unwrap();
        let min = |m: i64| now - chrono::Duration::minutes(m);
        let b = buckets(
            &[
                (min(61), 9),
                (min(59), 100),
                (min(58), 300),
                (min(1), 50),
                (now, 70),
            ],
            now,
        );
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b[0].map(|s| (s.n, s.p50, s.p95)), Some((2, 100, 300)));
        assert!(b[1..11].iter().all(Option::is_none));
        assert_eq!(b[11].map(|s| s.n), Some(2), "the last bucket holds `now`");
    }

    #[test]
    fn the_chart_leaves_gaps_and_says_what_it_shows() {
        let s = Some(Summary {
            n: 1,
            p50: 1000,
            p95: 2000,
        });
        let out = svg(&[s, None, s], summary(&[1000, 2000])).into_string();
        assert_eq!(out.matches("<polyline class=\"p50\"").count(), 2, "{out}");
        assert!(out.contains("p50 1.0s, p95 2.0s, 2 jobs"), "{out}");
        let empty = svg(&[None, None], None).into_string();
        assert!(!empty.contains("polyline"));
        assert!(empty.contains("No job reached a runner"));
    }
}
