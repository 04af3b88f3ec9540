//! The overview: per pool, runners against `max_runners`, the queue and its
//! oldest job, queued → runner waits over the last hour, breaker health;
//! then provider health and recent failures.
//!
//! Capacity is rendered from [`CapacityRow`]s grouped in [`Section`]s, not
//! from pools directly, so scale sets (pools with `scale_set = 1` and a
//! `scale_sets` row) become one more section built the same way.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use hangar_api::{PoolResponse, ProviderResponse};
use hangar_core::{InstanceStatus, PoolId, RunnerStatus};
use hangar_store::{FailureRow, PoolQueue};
use maud::{Markup, html};

use super::chart::{self, Summary};
use super::layout::{self, ago, duration_ms};
use super::{Session, UiState, api_error_page};
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
}

/// The pool JSON's `health`.
#[derive(Debug, Clone, Default)]
pub struct PoolBreaker {
    pub degraded: bool,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// A titled group of capacity rows (pools now; scale sets next).
#[derive(Debug, Clone)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub empty: Markup,
    pub rows: Vec<CapacityRow>,
}

/// What the overview shows, read in one go.
struct Overview {
    sections: Vec<Section>,
    providers: Vec<ProviderResponse>,
    failures: Vec<FailureRow>,
    pool_names: HashMap<PoolId, String>,
}

async fn load(s: &UiState) -> Result<Overview, ApiError> {
    let app = &s.app;
    let pools = crate::admin::pools::list_for(app, None).await?;
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
    let rows = pools
        .iter()
        .map(|p: &PoolResponse| {
            let id = PoolId(p.id);
            let entity = entities.get(&p.entity_id).cloned().unwrap_or_default();
            let title = super::pool_title(&entity, &p.tags);
            pool_names.insert(id, title.clone());
            let samples = waits.remove(&id).unwrap_or_default();
            let all: Vec<i64> = samples.iter().map(|(_, w)| *w).collect();
            let q = queues.get(&id);
            CapacityRow {
                href: format!("/ui/pools/{}", p.id),
                title,
                detail: format!("{} / {}", p.image, p.flavor),
                provider: p.provider_name.clone(),
                enabled: p.enabled,
                breaker: PoolBreaker {
                    degraded: p.health.state != "ok",
                    failures: p.health.consecutive_failures,
                    last_error: p.health.last_error.clone(),
                },
                counts: counts.get(&id).copied().unwrap_or_default(),
                max_runners: p.max_runners,
                queued: q.map_or(0, |q| q.queued),
                oldest: q.map(|q| q.oldest_queued_at),
                waits: chart::buckets(&samples, now),
                hour: chart::summary(&all),
            }
        })
        .collect();
    let sections = vec![Section {
        id: "pools",
        title: "Pools",
        empty: html! { p { "No pools yet. " a href="/ui/entities" { "Add one to an entity" } "." } },
        rows,
    }];
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
                                    td { a href=(format!("/ui/pools/{}", f.pool_id)) { (o.pool_names.get(&f.pool_id).cloned().unwrap_or_else(|| f.pool_id.to_string())) } }
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
                                th scope="col" { "Pool" }
                                th scope="col" { "Runners" }
                                th scope="col" { "Queued" }
                                th scope="col" { "Queued → runner, last hour" }
                                th scope="col" { "Health" }
                            }
                        }
                        tbody {
                            @for r in &section.rows { (row(r)) }
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

fn row(r: &CapacityRow) -> Markup {
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
