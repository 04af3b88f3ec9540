//! Jobs: queued, in progress and completed, with the wait (queued → its
//! runner took it) and the run time; filtered by repository and label.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hangar_core::JobStatus;
use hangar_store::{JobTimes, JobTimesFilter};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, ago, duration_ms};
use super::{Session, UiState, api_error_page};
use crate::error::ApiError;

/// The most rows a page shows.
const LIMIT: u32 = 200;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    status: String,
}

impl JobsQuery {
    fn filter(&self) -> Result<JobTimesFilter, ApiError> {
        let status = match self.status.as_str() {
            "" => None,
            s => Some(s.parse::<JobStatus>().map_err(ApiError::bad_request)?),
        };
        Ok(JobTimesFilter {
            status,
            repository: Some(self.repository.trim().to_owned()),
            label: Some(self.label.trim().to_owned()),
            limit: LIMIT,
        })
    }

    /// The same filter as a query string, for the live region.
    fn query_string(&self) -> String {
        let mut q = url_encoded(&[
            ("repository", self.repository.trim()),
            ("label", self.label.trim()),
            ("status", self.status.as_str()),
        ]);
        if !q.is_empty() {
            q.insert(0, '?');
        }
        q
    }
}

fn url_encoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn load(s: &UiState, q: &JobsQuery) -> Result<Vec<JobTimes>, ApiError> {
    Ok(s.app.store.jobs_with_times(&q.filter()?).await?)
}

pub async fn page(
    State(s): State<UiState>,
    session: Session,
    Query(q): Query<JobsQuery>,
) -> Response {
    let (jobs, refused) = match load(&s, &q).await {
        Ok(j) => (j, None),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (Vec::new(), Some(e.error)),
        Err(e) => return api_error_page(e),
    };
    let statuses = ["", "waiting", "queued", "in_progress", "completed"];
    super::page(layout::page(
        &session,
        "Jobs",
        "/ui/jobs",
        html! {
            form.card.filters method="get" action="/ui/jobs" role="search" aria-label="Filter jobs" {
                div.field {
                    label for="repository" { "Repository" }
                    input #repository name="repository" value=(q.repository) placeholder="owner/name or part of it";
                }
                div.field {
                    label for="label" { "Label" }
                    input #label name="label" value=(q.label) placeholder="e.g. self-hosted";
                }
                div.field {
                    label for="status" { "Status" }
                    select #status name="status" {
                        @for st in statuses {
                            option value=(st) selected[q.status == st] { @if st.is_empty() { "any" } @else { (st) } }
                        }
                    }
                }
                div.actions { button type="submit" { "Filter" } " " a href="/ui/jobs" { "Clear" } }
            }
            @if let Some(e) = refused {
                p.error role="alert" { (e) }
            } @else {
                div.live data-live=(format!("/ui/live/jobs{}", q.query_string())) { (table(&jobs)) }
            }
        },
    ))
}

pub async fn live(State(s): State<UiState>, _: Session, Query(q): Query<JobsQuery>) -> Response {
    match load(&s, &q).await {
        Ok(j) => Html(table(&j).into_string()).into_response(),
        Err(e) => api_error_page(e),
    }
}

fn table(jobs: &[JobTimes]) -> Markup {
    let now = hangar_store::clock::now();
    html! {
        @if jobs.is_empty() {
            p { "No jobs match." }
        } @else {
            div.scroll {
                table.jobs {
                    thead {
                        tr {
                            th scope="col" { "Job" }
                            th scope="col" { "Repository" }
                            th scope="col" { "Labels" }
                            th scope="col" { "Status" }
                            th scope="col" { "Runner" }
                            th scope="col" { "Queued" }
                            th scope="col" { "Wait" }
                            th scope="col" { "Run time" }
                        }
                    }
                    tbody {
                        @for t in jobs {
                            @let j = &t.job;
                            tr data-job=(j.id.0) {
                                th scope="row" {
                                    code { (j.id.0) }
                                    @if j.run_attempt > 1 { " (attempt " (j.run_attempt) ")" }
                                    @if let Some(n) = &j.name { div.muted { (n) } }
                                }
                                td { (j.repository) }
                                td { (j.labels.to_vec().join(", ")) }
                                td.status {
                                    span class=(format!("st st-{}", j.status.as_str())) { (j.status.as_str()) }
                                    @if let Some(c) = &j.conclusion { " (" (c) ")" }
                                }
                                td { @if let Some(r) = &j.runner_name { code { (r) } } @else { "–" } }
                                td { (ago(t.queued_at)) }
                                td {
                                    @match (t.started_at, j.status) {
                                        (Some(s), _) => { (duration_ms((s - t.queued_at).num_milliseconds())) }
                                        (None, JobStatus::Queued | JobStatus::Waiting) => { span.muted { (duration_ms((now - t.queued_at).num_milliseconds())) " so far" } }
                                        _ => { "–" }
                                    }
                                }
                                td {
                                    @match (t.started_at, t.finished_at) {
                                        (Some(s), Some(f)) => { (duration_ms((f - s).num_milliseconds())) }
                                        (Some(s), None) => { span.muted { (duration_ms((now - s).num_milliseconds())) " so far" } }
                                        _ => { "–" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_into_the_live_url() {
        let q = JobsQuery {
            repository: " octo/app ".into(),
            label: "self hosted&x".into(),
            status: String::new(),
        };
        assert_eq!(
            q.query_string(),
            "?repository=octo%2Fapp&label=self%20hosted%26x"
        );
        assert_eq!(JobsQuery::default().query_string(), "");
        let bad = JobsQuery {
            status: "running".into(),
            ..Default::default()
        };
        assert!(bad.filter().is_err());
    }
}
