//! The overview: per pool and per scale set, runners against
//! `max_runners`, the queue and its oldest job, queued → runner waits over
//! the last hour, breaker health; then provider health and recent failures.
//!
//! Capacity is rendered from [`CapacityRow`]s grouped in [`Section`]s, not
//! from pools directly: a scale set drives a pool of its own (`scale_set =
//! 1`), whose runners, queue (its queue's runner requests not started yet)
//! and waits are keyed by that pool like any other's, so the "Scale sets"
//! section is built the same way as "Pools".

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use hangar_api::{PoolResponse, ProviderResponse, ScaleSetResponse};
use hangar_core::{InstanceStatus, PoolId, RunnerStatus};
use hangar_store::{FailureRow, PoolQueue};
use maud::{Markup, html};

use super::chart::{self, Summary};
use super::layout::{self, ago, duration_ms};
use super::{PoolLink, Session, UiState, api_error_page};
use crate::error::ApiError;

/// Runners of one pool (or scale set) by what they are doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub booting: u64,
    pub idle: u64,
    pub busy: u64,
    /// Being deleted (runner leaving GitHub, VM going).
    pub retiring: u64,
    /// A failed create waiting for its retry.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, status: InstanceStatus, runner: RunnerStatus, n: u64) {
        use InstanceStatus as I;
        use RunnerStatus as R;
        let slot = match (status, runner) {
            (I::Deleted, _) => return,
            (I::PendingDelete | I::Deleting, _) => &mut self.retiring,
            (I::Error, _) => &mut self.failed,
            (I::PendingCreate | I::Creating, _) => &mut self.booting,
            (I::Running, R::Pending | R::Installing) => &mut self.booting,
            (I::Running, R::Idle) => &mut self.idle,
            (I::Running, R::Active) => &mut self.busy,
            (I::Running, R::Terminated | R::Failed) => &mut self.retiring,
        };
        *slot += n;
    }

    fn live(&self) -> u64 {
        self.booting + self.idle + self.busy + self.retiring + self.failed
    }
}

/// One line of the capacity table.
#[derive(Debug, Clone)]
pub struct CapacityRow {
    pub href: String,
    pub title: String,
    pub detail: String,
    pub provider: String,
    pub enabled: bool,
    pub breaker: PoolBreaker,
    pub counts: Counts,
    pub max_runners: u32,
    pub queued: u32,
    pub oldest: Option<chrono::DateTime<Utc>>,
    pub waits: Vec<Option<Summary>>,
    pub hour: Option<Summary>,
    /// What is wrong beyond the breaker (a scale set deleted on GitHub,
    /// or its listener failing).
    pub problem: Option<String>,
}

/// The pool JSON's `health`.
#[derive(Debug, Clone, Default)]
pub struct PoolBreaker {
    pub degraded: bool,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// A titled group of capacity rows: pools, or scale sets.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    /// What one row is ("Pool", "Scale set"): the first column's heading.
    pub noun: &'static str,
    pub empty: Markup,
    pub rows: Vec<CapacityRow>,
}

/// What a capacity row needs of a pool or a scale set.
struct RowFacts {
    detail: String,
    provider: String,
    enabled: bool,
    health: hangar_api::PoolHealth,
    max_runners: u32,
    problem: Option<String>,
}

impl RowFacts {
    fn of_pool(p: &PoolResponse) -> Self {
        RowFacts {
            detail: format!("{} / {}", p.image, p.flavor),
            provider: p.provider_name.clone(),
            enabled: p.enabled,
            health: p.health.clone(),
            max_runners: p.max_runners,
            problem: None,
        }
    }

    fn of_scale_set(s: &ScaleSetResponse) -> Self {
        let problem = match s.state.as_str() {
            "active" => None,
            "deleted_on_github" => Some("deleted on GitHub: saving it makes it again".to_owned()),
            other => Some(match &s.last_error {
                Some(e) => format!("{other}: {e}"),
                None => other.to_owned(),
            }),
        };
        RowFacts {
            detail: format!(
                "{} / {} · GitHub asks for {}",
                s.image, s.flavor, s.desired_runners
            ),
            provider: s.provider_name.clone(),
            enabled: s.enabled,
            health: s.health.clone(),
            max_runners: s.max_runners,
            problem,
        }
    }
}

/// What the overview shows, read in one go.
struct Overview {
    sections: Vec<Section>,
    providers: Vec<ProviderResponse>,
    failures: Vec<FailureRow>,
    pool_names: HashMap<PoolId, PoolLink>,
}

async fn load(s: &UiState) -> Result<Overview, ApiError> {
    let app = &s.app;
    let pools = crate::admin::pools::list_for(app, None).await?;
    let sets = crate::admin::scalesets::list_for(app, None).await?;
    let entities: HashMap<_, _> = app
        .store
        .list_entities(None)
        .await?
        .into_iter()
        .map(|e| (e.id.0, e.scope.display_name()))
        .collect();
    let mut counts: HashMap<PoolId, Counts> = HashMap::new();
    for (pool, status, runner, n) in app.store.instance_counts().await? {
        counts.entry(pool).or_default().add(status, runner, n);
    }
    let queues: HashMap<PoolId, PoolQueue> = app
        .store
        .pool_queues()
        .await?
        .into_iter()
        .map(|q| (q.pool_id, q))
        .collect();
    let now = hangar_store::clock::now();
    let mut waits: HashMap<PoolId, Vec<(chrono::DateTime<Utc>, i64)>> = HashMap::new();
    for w in app
        .store
        .wait_samples(now - chrono::Duration::minutes(chart::WINDOW_MIN))
        .await?
    {
        if let Some(p) = w.pool_id {
            waits.entry(p).or_default().push((w.started_at, w.wait_ms));
        }
    }
    let mut pool_names = HashMap::new();
    // One row from what every pool has; `link` names it and says where
    // it is managed.
    let mut row = |pool: PoolId, link: PoolLink, p: RowFacts| {
        pool_names.insert(pool, link.clone());
        let samples = waits.remove(&pool).unwrap_or_default();
        let all: Vec<i64> = samples.iter().map(|(_, w)| *w).collect();
        let q = queues.get(&pool);
        CapacityRow {
            href: link.href,
            title: link.title,
            detail: p.detail,
            provider: p.provider,
            enabled: p.enabled,
            breaker: PoolBreaker {
                degraded: p.health.state != "ok",
                failures: p.health.consecutive_failures,
                last_error: p.health.last_error,
            },
            counts: counts.get(&pool).copied().unwrap_or_default(),
            max_runners: p.max_runners,
            queued: q.map_or(0, |q| q.queued),
            oldest: q.map(|q| q.oldest_queued_at),
            waits: chart::buckets(&samples, now),
            hour: chart::summary(&all),
            problem: p.problem,
        }
    };
    let entity = |id: &uuid::Uuid| entities.get(id).cloned().unwrap_or_default();
    let pool_rows: Vec<CapacityRow> = pools
        .iter()
        .map(|p: &PoolResponse| {
            let link = PoolLink {
                title: super::pool_title(&entity(&p.entity_id), &p.tags),
                href: format!("/ui/pools/{}", p.id),
            };
            row(PoolId(p.id), link, RowFacts::of_pool(p))
        })
        .collect();
    let set_rows: Vec<CapacityRow> = sets
        .iter()
        .map(|set: &ScaleSetResponse| {
            let link = PoolLink {
                title: super::scale_set_title(&entity(&set.entity_id), &set.name),
                href: format!("/ui/scalesets/{}", set.id),
            };
            row(PoolId(set.pool_id), link, RowFacts::of_scale_set(set))
        })
        .collect();
    let sections = vec![
        Section {
            id: "pools",
            title: "Pools",
            noun: "Pool",
            empty: html! { p { "No pools yet. " a href="/ui/entities" { "Add one to an entity" } "." } },
            rows: pool_rows,
        },
        Section {
            id: "scalesets",
            title: "Scale sets",
            noun: "Scale set",
            empty: html! { p { "No scale sets. " a href="/ui/scalesets" { "Add one" } " to take jobs from GitHub's scale set queue instead of webhooks." } },
            rows: set_rows,
        },
    ];
    Ok(Overview {
        sections,
        providers: s.provider_health().await,
        failures: app.store.recent_failures(10).await?,
        pool_names,
    })
}

pub async fn page(State(s): State<UiState>, session: Session) -> Response {
    match load(&s).await {
        Ok(o) => super::page(layout::page(
            &session,
            "Overview",
            "/ui",
            html! { div.live data-live="/ui/live/overview" { (body(&o)) } },
        )),
        Err(e) => api_error_page(e),
    }
}

/// The overview's live region alone, for polling.
pub async fn live(State(s): State<UiState>, _: Session) -> Response {
    match load(&s).await {
        Ok(o) => Html(body(&o).into_string()).into_response(),
        Err(e) => api_error_page(e),
    }
}

fn body(o: &Overview) -> Markup {
    html! {
        @for section in &o.sections { (capacity(section)) }
        section aria-labelledby="providers-h" {
            h2 #providers-h { "Providers" }
            @if o.providers.is_empty() {
                p { "No providers are configured." }
            } @else {
                ul.providers {
                    @for p in &o.providers {
                        li.card {
                            span.badge.ok[p.healthy].bad[!p.healthy] { @if p.healthy { "healthy" } @else { "unhealthy" } }
                            " " strong { (p.name) } " " span.muted { "(" (p.kind) ")" }
                            @if let Some(e) = &p.error { p.error { (e) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="failures-h" {
            h2 #failures-h { "Recent failures" }
            @if o.failures.is_empty() {
                p { "None." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th scope="col" { "Runner" } th scope="col" { "Pool" } th scope="col" { "State" } th scope="col" { "Reason" } th scope="col" { "Attempts" } th scope="col" { "When" } } }
                        tbody {
                            @for f in &o.failures {
                                tr {
                                    td { code { (f.name) } }
                                    @let link = o.pool_names.get(&f.pool_id);
                                    td { a href=(link.map_or_else(|| format!("/ui/pools/{}", f.pool_id), |l| l.href.clone())) { (link.map_or_else(|| f.pool_id.to_string(), |l| l.title.clone())) } }
                                    td { (f.status.as_str()) " / " (f.runner_status.as_str()) }
                                    td.reason { (f.message.as_deref().unwrap_or("(no message recorded)")) }
                                    td { (f.create_attempts) " create, " (f.delete_attempts) " delete" }
                                    td { (ago(f.at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn capacity(section: &Section) -> Markup {
    let h = format!("{}-h", section.id);
    html! {
        section aria-labelledby=(h) {
            h2 #(h) { (section.title) }
            @if section.rows.is_empty() {
                (section.empty)
            } @else {
                div.scroll {
                    table.capacity {
                        thead {
                            tr {
                                th scope="col" { (section.noun) }
                                th scope="col" { "Runners" }
                                th scope="col" { "Queued" }
                                th scope="col" { "Queued → runner, last hour" }
                                th scope="col" { "Health" }
                            }
                        }
                        tbody {
                            @for r in &section.rows { (row_markup(r)) }
                        }
                    }
                }
                p.legend aria-hidden="true" {
                    span.key.idle {} "idle " span.key.booting {} "booting " span.key.busy {} "busy " span.key.retiring {} "retiring"
                    " · chart: " span.key.p50 {} "p50 " span.key.p95 {} "p95"
                }
            }
        }
    }
}

fn row_markup(r: &CapacityRow) -> Markup {
    let c = r.counts;
    html! {
        tr {
            th scope="row" {
                a href=(r.href) { (r.title) }
                div.muted { (r.provider) " · " (r.detail) }
                @if !r.enabled { span.badge.off { "disabled" } }
            }
            td data-label="Runners" {
                (bar(c, r.max_runners))
                div {
                    (c.idle) " idle · " (c.booting) " booting · " (c.busy) " busy"
                    @if c.retiring > 0 { " · " (c.retiring) " retiring" }
                    @if c.failed > 0 { " · " (c.failed) " failed" }
                    " of " (r.max_runners)
                }
            }
            td data-label="Queued" {
                strong { (r.queued) }
                @if let Some(t) = r.oldest { div.muted { "oldest " (ago(t)) } }
            }
            td data-label="Queued → runner, last hour" {
                (chart::svg(&r.waits, r.hour))
                div.muted {
                    @match r.hour {
                        Some(s) => { "p50 " (duration_ms(s.p50)) " · p95 " (duration_ms(s.p95)) " · " (s.n) " jobs" }
                        None => { "no jobs" }
                    }
                }
            }
            td data-label="Health" {
                @if let Some(p) = &r.problem {
                    span.badge.bad { "attention" }
                    div.reason { (p) }
                }
                @if r.breaker.degraded {
                    span.badge.bad { "degraded" }
                    div { (r.breaker.failures) " failed creates in a row" }
                } @else {
                    span.badge.ok { "ok" }
                }
                @if let Some(e) = &r.breaker.last_error { div.reason { (e) } }
            }
        }
    }
}

/// Runners against `max_runners` as a stacked bar.
fn bar(c: Counts, max: u32) -> Markup {
    const W: f64 = 160.0;
    let total = (max as u64).max(c.live()).max(1) as f64;
    let mut x = 0.0;
    let parts: Vec<(&str, f64, f64)> = [
        ("idle", c.idle),
        ("booting", c.booting + c.failed),
        ("busy", c.busy),
        ("retiring", c.retiring),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(class, n)| {
        let w = W * n as f64 / total;
        let at = x;
        x += w;
        (class, at, w)
    })
    .collect();
    html! {
        svg.bar viewBox=(format!("0 0 {W} 10")) width=(W) height="10" aria-hidden="true" {
            rect.track x="0" y="0" width=(W) height="10" {}
            @for (class, at, w) in parts {
                rect class=(class) x=(format!("{at:.1}")) y="0" width=(format!("{w:.1}")) height="10" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_are_counted_by_what_they_do() {
        let mut c = Counts::default();
        c.add(InstanceStatus::PendingCreate, RunnerStatus::Pending, 1);
        c.add(InstanceStatus::Running, RunnerStatus::Installing, 2);
        c.add(InstanceStatus::Running, RunnerStatus::Idle, 3);
        c.add(InstanceStatus::Running, RunnerStatus::Active, 4);
        c.add(InstanceStatus::PendingDelete, RunnerStatus::Active, 5);
        c.add(InstanceStatus::Error, RunnerStatus::Pending, 6);
        c.add(InstanceStatus::Deleted, RunnerStatus::Terminated, 100);
        assert_eq!(
            c,
            Counts {
                booting: 3,
                idle: 3,
                busy: 4,
                retiring: 5,
                failed: 6
            }
        );
        assert_eq!(c.live(), 21);
    }
}
