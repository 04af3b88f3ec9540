//! Runners: every instance with its state, age, job, last status message
//! and failure count; delete and force delete through the admin API's
//! handler.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use hangar_api::InstanceResponse;
use hangar_core::PoolId;
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, ago, csrf, notice};
use super::{PoolLink, Session, UiState, api_error_page};
use crate::admin::instances::{self, DeleteQuery, InstanceQuery};

#[derive(Debug, Default, Deserialize)]
pub struct RunnersQuery {
    /// Include deleted instances.
    #[serde(default)]
    all: Option<String>,
    done: Option<String>,
}

impl RunnersQuery {
    fn all(&self) -> bool {
        self.all.as_deref().is_some_and(|v| v == "1" || v == "true")
    }
}

/// The runners, and their pools' names and pages.
type Loaded = (Vec<InstanceResponse>, HashMap<Uuid, PoolLink>);

async fn load(s: &UiState, session: &Session, all: bool) -> Result<Loaded, Response> {
    let list = instances::list(
        session.admin(),
        State(s.app.clone()),
        Query(InstanceQuery { pool_id: None, all }),
    )
    .await
    .map(|Json(v)| v)
    .map_err(api_error_page)?;
    let names = super::pool_names(s).await.map_err(api_error_page)?;
    Ok((list, names))
}

fn live_body(session: &Session, (list, names): &Loaded) -> Markup {
    html! {
        @if list.is_empty() { p { "No runners." } } @else { (table(session, list, names, "all")) }
    }
}

pub async fn page(
    State(s): State<UiState>,
    session: Session,
    Query(q): Query<RunnersQuery>,
) -> Response {
    let all = q.all();
    let loaded = match load(&s, &session, all).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let live = if all {
        "/ui/live/runners?all=1"
    } else {
        "/ui/live/runners"
    };
    super::page(layout::page(
        &session,
        "Runners",
        "/ui/runners",
        html! {
            (notice(q.done.as_deref()))
            p {
                @if all {
                    a href="/ui/runners" { "Hide deleted runners" }
                } @else {
                    a href="/ui/runners?all=1" { "Show deleted runners too" }
                }
            }
            div.live data-live=(live) { (live_body(&session, &loaded)) }
        },
    ))
}

pub async fn live(
    State(s): State<UiState>,
    session: Session,
    Query(q): Query<RunnersQuery>,
) -> Response {
    match load(&s, &session, q.all()).await {
        Ok(l) => Html(live_body(&session, &l).into_string()).into_response(),
        Err(r) => r,
    }
}

/// The runners table; `back` is where a delete returns to (`all` = the
/// runners page, `pool` = the pool's page, `scaleset` = the scale set's).
pub fn table(
    session: &Session,
    list: &[InstanceResponse],
    names: &HashMap<Uuid, PoolLink>,
    back: &str,
) -> Markup {
    html! {
        div.scroll {
            table.runners {
                thead {
                    tr {
                        th scope="col" { "Runner" }
                        th scope="col" { "State" }
                        th scope="col" { "Age" }
                        th scope="col" { "Job" }
                        th scope="col" { "Last message or failure" }
                        th scope="col" { "Create attempts" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for i in list {
                        tr data-runner=(i.name) {
                            th scope="row" {
                                code { (i.name) }
                                @let link = names.get(&i.pool_id);
                                div.muted {
                                    a href=(link.map_or_else(|| format!("/ui/pools/{}", i.pool_id), |l| l.href.clone())) {
                                        (link.map_or("its pool", |l| l.title.as_str()))
                                    }
                                }
                            }
                            td.state { span class=(format!("st st-{}", i.status)) { (i.status) } " / " (i.runner_status) }
                            td { (ago(i.created_at)) }
                            td { @if let Some(j) = i.job_id { code { (j) } } @else { "–" } }
                            @let failing = i.status == "error" || i.runner_status == "failed";
                            td.reason.error[failing] { (i.status_message.as_deref().unwrap_or("")) }
                            td.error[i.create_attempts > 1] { (i.create_attempts) }
                            td {
                                @if i.status != "deleted" {
                                    form.inline method="post" action=(format!("/ui/runners/{}/delete", i.name)) {
                                        (csrf(session))
                                        input type="hidden" name="back" value=(back);
                                        button.secondary type="submit" name="force" value="false" { "Delete" span.sr { " " (i.name) } }
                                        " "
                                        button.danger type="submit" name="force" value="true" { "Force delete" span.sr { " " (i.name) } }
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

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
    #[serde(default)]
    back: String,
}

pub async fn delete(
    State(s): State<UiState>,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let force = f.force.as_deref() == Some("true");
    let q = DeleteQuery {
        force,
        ..Default::default()
    };
    let pool = match instances::delete(session.admin(), State(s.app.clone()), Path(name), Query(q))
        .await
    {
        Ok((_, Json(i))) => i.pool_id,
        Err(e) => return api_error_page(e),
    };
    let done = if force {
        "runner-forced"
    } else {
        "runner-deleting"
    };
    let to = match f.back.as_str() {
        "pool" => format!("/ui/pools/{pool}?done={done}"),
        "scaleset" => match s.app.store.scale_set_by_pool(PoolId(pool)).await {
            Ok(Some(set)) => format!("/ui/scalesets/{}?done={done}", set.id),
            _ => format!("/ui/runners?done={done}"),
        },
        _ => format!("/ui/runners?done={done}"),
    };
    Redirect::to(&to).into_response()
}
