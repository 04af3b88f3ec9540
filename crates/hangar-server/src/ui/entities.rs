//! Entities (repositories, organizations, enterprises) and their pools:
//! list, show, create, edit, enable/disable, delete. Every change goes
//! through the admin API's own handler, so a form is refused for exactly
//! the reasons a JSON body would be, and the API's message is shown at the
//! field it names.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use hangar_api::{
    EntityCreate, EntityResponse, EntityUpdate, InstanceResponse, PoolCreate, PoolResponse,
    PoolUpdate,
};
use hangar_core::EntityKind;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, ago, csrf, notice};
use super::{FormErrors, Session, UiState, api_error_page};
use crate::admin::pools;
use crate::error::{ApiError, JsonBody};

/// Runs `$body` with `$m` bound to the admin API module of `$kind`.
macro_rules! by_kind {
    ($kind:expr, |$m:ident| $body:expr) => {
        match $kind {
            EntityKind::Repository => {
                use crate::admin::entities::repositories as $m;
                $body
            }
            EntityKind::Organization => {
                use crate::admin::entities::organizations as $m;
                $body
            }
            EntityKind::Enterprise => {
                use crate::admin::entities::enterprises as $m;
                $body
            }
        }
    };
}

const KINDS: [EntityKind; 3] = [
    EntityKind::Repository,
    EntityKind::Organization,
    EntityKind::Enterprise,
];

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    pub(super) done: Option<String>,
}

/// The kind of a stored entity, or a 404 page.
pub(super) async fn kind_of(s: &UiState, id: &str) -> Result<EntityKind, Response> {
    let parsed = id
        .parse()
        .map_err(|_| api_error_page(ApiError::not_found(format!("entity {id:?} not found"))))?;
    s.app
        .store
        .entity(parsed)
        .await
        .map(|e| e.scope.kind())
        .map_err(|e| api_error_page(e.into()))
}

pub(super) fn redirect(to: String) -> Response {
    Redirect::to(&to).into_response()
}

// ---- entities ----

#[derive(Debug, Default, Clone, Deserialize)]
pub struct EntityForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credentials_name: String,
    #[serde(default)]
    webhook_secret: String,
}

const ENTITY_FIELDS: &[&str] = &["owner", "name", "credentials_name", "webhook_secret"];

pub(super) async fn all_entities(
    s: &UiState,
    session: &Session,
) -> Result<Vec<EntityResponse>, ApiError> {
    let mut out = Vec::new();
    for kind in KINDS {
        let Json(list) = by_kind!(kind, |m| m::list(session.admin(), State(s.app.clone()))
            .await)?;
        out.extend(list);
    }
    Ok(out)
}

async fn list_body(
    s: &UiState,
    session: &Session,
    form: &EntityForm,
    errors: &FormErrors,
    done: Option<&str>,
) -> Result<Markup, ApiError> {
    let entities = all_entities(s, session).await?;
    let credentials: Vec<String> = s
        .app
        .store
        .list_credentials()
        .await?
        .into_iter()
        .map(|c| c.name.to_string())
        .collect();
    Ok(html! {
        (notice(done))
        section aria-labelledby="entities-h" {
            h2 #entities-h { "Entities" }
            @if entities.is_empty() {
                p { "None yet: add the repository, organization or enterprise whose jobs Hangar should serve." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Credentials" } th scope="col" { "Pools" } th scope="col" { "Webhook URL" } } }
                        tbody {
                            @for e in &entities {
                                tr {
                                    th scope="row" { a href=(format!("/ui/entities/{}", e.id)) { (display(e)) } }
                                    td { (e.kind) }
                                    td { (e.credentials_name) " " span.muted { "(" (e.endpoint) ")" } }
                                    td { (e.pool_count) }
                                    td { code.wrap { (e.webhook_url) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="new-entity-h" {
            h2 #new-entity-h { "Add an entity" }
            form.card.grid method="post" action="/ui/entities" novalidate {
                (csrf(session))
                @if let Some(m) = errors.general() { p.error role="alert" { (m) } }
                div.field {
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        @for k in KINDS {
                            option value=(k.as_str()) selected[form.kind == k.as_str()] { (k.as_str()) }
                        }
                    }
                }
                (text_field("owner", "Owner (repositories only)", &form.owner, errors, ""))
                (text_field("name", "Name", &form.name, errors, "Repository, organization or enterprise name"))
                div.field {
                    label for="credentials_name" { "Credentials" }
                    @let err = errors.for_field("credentials_name");
                    select #credentials_name name="credentials_name" aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| "credentials_name-error")] {
                        @for c in &credentials {
                            option value=(c) selected[form.credentials_name == *c] { (c) }
                        }
                    }
                    @if credentials.is_empty() { p.hint { "No credentials yet: add them with " code { "hangar credentials add" } "." } }
                    @if let Some(m) = err { p.error #credentials_name-error { (m) } }
                }
                (text_field("webhook_secret", "Webhook secret", &form.webhook_secret, errors, "Leave empty to generate one (shown once)"))
                div.actions { button type="submit" { "Add entity" } }
            }
        }
    })
}

pub(super) fn display(e: &EntityResponse) -> String {
    if e.owner.is_empty() {
        e.name.clone()
    } else {
        format!("{}/{}", e.owner, e.name)
    }
}

pub async fn list_page(
    State(s): State<UiState>,
    session: Session,
    Query(q): Query<Done>,
) -> Response {
    render_list(
        &s,
        &session,
        &EntityForm::default(),
        &FormErrors::default(),
        q.done.as_deref(),
        StatusCode::OK,
    )
    .await
}

async fn render_list(
    s: &UiState,
    session: &Session,
    form: &EntityForm,
    errors: &FormErrors,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    match list_body(s, session, form, errors, done).await {
        Ok(body) => (
            status,
            Html(layout::page(session, "Entities and pools", "/ui/entities", body).into_string()),
        )
            .into_response(),
        Err(e) => api_error_page(e),
    }
}

pub async fn create(
    State(s): State<UiState>,
    session: Session,
    Form(f): Form<EntityForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let Ok(kind) = f.kind.parse::<EntityKind>() else {
        let errors = FormErrors::at("name", format!("unknown kind {:?}", f.kind));
        return render_list(&s, &session, &f, &errors, None, StatusCode::BAD_REQUEST).await;
    };
    let req = EntityCreate {
        owner: Some(f.owner.trim().to_owned()).filter(|o| !o.is_empty()),
        name: f.name.trim().to_owned(),
        credentials_name: f.credentials_name.clone(),
        webhook_secret: Some(f.webhook_secret.clone()).filter(|w| !w.is_empty()),
    };
    let made = by_kind!(kind, |m| m::create(
        session.admin(),
        State(s.app.clone()),
        JsonBody(req)
    )
    .await);
    match made {
        Ok((_, Json(e))) => match &e.webhook_secret {
            // A generated secret is shown once, on the new entity's page.
            Some(secret) => {
                entity_page(
                    &s,
                    &session,
                    &e.id.to_string(),
                    &FormErrors::default(),
                    Some(secret),
                    Some("created"),
                )
                .await
            }
            None => redirect(format!("/ui/entities/{}?done=created", e.id)),
        },
        Err(e) => {
            let errors = FormErrors::from_api(&e, ENTITY_FIELDS);
            render_list(&s, &session, &f, &errors, None, e.status).await
        }
    }
}

pub async fn show(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    entity_page(
        &s,
        &session,
        &id,
        &FormErrors::default(),
        None,
        q.done.as_deref(),
    )
    .await
}

async fn entity_page(
    s: &UiState,
    session: &Session,
    id: &str,
    errors: &FormErrors,
    secret: Option<&str>,
    done: Option<&str>,
) -> Response {
    entity_page_with(
        s,
        session,
        id,
        errors,
        &PoolForm::new_defaults(),
        &FormErrors::default(),
        secret,
        done,
        StatusCode::OK,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn entity_page_with(
    s: &UiState,
    session: &Session,
    id: &str,
    errors: &FormErrors,
    pool_form: &PoolForm,
    pool_errors: &FormErrors,
    secret: Option<&str>,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let kind = match kind_of(s, id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let loaded = by_kind!(kind, |m| {
        match m::get(session.admin(), State(s.app.clone()), Path(id.to_owned())).await {
            Ok(Json(e)) => {
                m::list_pools(session.admin(), State(s.app.clone()), Path(id.to_owned()))
                    .await
                    .map(|Json(p)| (e, p))
            }
            Err(e) => Err(e),
        }
    });
    let (e, pool_list) = match loaded {
        Ok(v) => v,
        Err(e) => return api_error_page(e),
    };
    let sets: Vec<_> =
        match crate::admin::scalesets::list(session.admin(), State(s.app.clone())).await {
            Ok(Json(all)) => all.into_iter().filter(|x| x.entity_id == e.id).collect(),
            Err(e) => return api_error_page(e),
        };
    let providers = s.app.providers.names();
    let mut kind = e.kind.clone();
    if let Some(first) = kind.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let title = format!("{kind} {}", display(&e));
    let body = html! {
        (notice(done))
        @if let Some(secret) = secret {
            div.notice role="status" {
                p { "The generated webhook secret (shown only now; set it on the GitHub hook):" }
                p { code.wrap #webhook-secret { (secret) } }
            }
        }
        dl.facts {
            dt { "Id" } dd { code { (e.id) } }
            dt { "Credentials" } dd { (e.credentials_name) " (" (e.endpoint) ")" }
            dt { "Webhook URL" } dd { code.wrap { (e.webhook_url) } }
            dt { "Created" } dd { (ago(e.created_at)) }
        }
        section aria-labelledby="pools-h" {
            h2 #pools-h { "Pools" }
            @if pool_list.is_empty() { p { "No pools yet." } } @else { (pools_table(session, &pool_list)) }
        }
        section aria-labelledby="new-pool-h" {
            h2 #new-pool-h { "Add a pool" }
            (pool_form_markup(session, &format!("/ui/entities/{}/pools", e.id), pool_form, pool_errors, &providers, "Add pool"))
        }
        section aria-labelledby="scalesets-h" {
            h2 #scalesets-h { "Scale sets" }
            @if sets.is_empty() { p { "No scale sets." } } @else { (super::scalesets::table(session, &sets, std::slice::from_ref(&e))) }
            p { a href=(format!("/ui/scalesets?entity={}#new-scaleset-h", e.id)) { "Add a scale set" span.sr { " to " (display(&e)) } } }
        }
        section aria-labelledby="edit-entity-h" {
            h2 #edit-entity-h { "Edit" }
            form.card.grid method="post" action=(format!("/ui/entities/{}", e.id)) novalidate {
                (csrf(session))
                @if let Some(m) = errors.general() { p.error role="alert" { (m) } }
                (text_field("credentials_name", "Credentials", &e.credentials_name, errors, ""))
                (text_field("webhook_secret", "New webhook secret", "", errors, "Leave empty to keep the current one"))
                div.actions { button type="submit" { "Save" } }
            }
            (delete_form(session, &format!("/ui/entities/{}/delete", e.id), "Delete this entity", "Its pools and scale sets must be deleted first."))
        }
    };
    (
        status,
        Html(layout::page(session, &title, "/ui/entities", body).into_string()),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct EntityEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credentials_name: String,
    #[serde(default)]
    webhook_secret: String,
}

pub async fn update(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<EntityEditForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let kind = match kind_of(&s, &id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let req = EntityUpdate {
        credentials_name: Some(f.credentials_name.trim().to_owned()),
        webhook_secret: Some(f.webhook_secret).filter(|w| !w.is_empty()),
    };
    let r = by_kind!(kind, |m| m::update(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req)
    )
    .await);
    match r {
        Ok(_) => redirect(format!("/ui/entities/{id}?done=saved")),
        Err(e) => {
            let errors = FormErrors::from_api(&e, ENTITY_FIELDS);
            entity_page_with(
                &s,
                &session,
                &id,
                &errors,
                &PoolForm::new_defaults(),
                &FormErrors::default(),
                None,
                None,
                e.status,
            )
            .await
        }
    }
}

pub async fn delete(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<super::CsrfOnly>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let kind = match kind_of(&s, &id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let r = by_kind!(kind, |m| m::delete(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone())
    )
    .await);
    match r {
        Ok(_) => redirect("/ui/entities?done=deleted".into()),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &[]);
            entity_page_with(
                &s,
                &session,
                &id,
                &errors,
                &PoolForm::new_defaults(),
                &FormErrors::default(),
                None,
                None,
                e.status,
            )
            .await
        }
    }
}

// ---- pools ----

/// A pool form as typed: strings, so a refused form comes back as it was.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    provider_name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    flavor: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    os_type: String,
    #[serde(default)]
    os_arch: String,
    #[serde(default)]
    min_idle_runners: String,
    #[serde(default)]
    max_runners: String,
    #[serde(default)]
    runner_prefix: String,
    #[serde(default)]
    runner_bootstrap_timeout: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    runner_group: String,
    #[serde(default)]
    extra_specs: String,
    #[serde(default)]
    enabled: Option<String>,
}

const POOL_FIELDS: &[&str] = &[
    "provider_name",
    "image",
    "flavor",
    "tags",
    "os_type",
    "os_arch",
    "min_idle_runners",
    "max_runners",
    "runner_prefix",
    "runner_bootstrap_timeout",
    "priority",
    "runner_group",
    "extra_specs",
];

/// The pool's values, parsed as far as the form can (numbers, JSON,
/// the tag list); everything else is the API's to judge.
struct ParsedPool {
    tags: Vec<String>,
    min_idle_runners: Option<u32>,
    max_runners: Option<u32>,
    runner_bootstrap_timeout: Option<u32>,
    priority: Option<u32>,
    extra_specs: Option<serde_json::Value>,
}

impl PoolForm {
    fn new_defaults() -> Self {
        PoolForm {
            os_type: "linux".into(),
            os_arch: "amd64".into(),
            min_idle_runners: "0".into(),
            max_runners: "10".into(),
            enabled: Some("on".into()),
            ..Default::default()
        }
    }

    fn from_pool(p: &PoolResponse) -> Self {
        PoolForm {
            csrf: String::new(),
            provider_name: p.provider_name.clone(),
            image: p.image.clone(),
            flavor: p.flavor.clone(),
            tags: p.tags.join(", "),
            os_type: p.os_type.clone(),
            os_arch: p.os_arch.clone(),
            min_idle_runners: p.min_idle_runners.to_string(),
            max_runners: p.max_runners.to_string(),
            runner_prefix: p.runner_prefix.clone(),
            runner_bootstrap_timeout: p.runner_bootstrap_timeout.to_string(),
            priority: p.priority.to_string(),
            runner_group: p.runner_group.clone().unwrap_or_default(),
            extra_specs: if p.extra_specs.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                serde_json::to_string_pretty(&p.extra_specs).unwrap_or_default()
            },
            enabled: p.enabled.then(|| "on".into()),
        }
    }

    fn parse(&self) -> Result<ParsedPool, FormErrors> {
        let extra = self.extra_specs.trim();
        Ok(ParsedPool {
            // Empty pieces are kept, so the API names a doubled comma.
            tags: if self.tags.trim().is_empty() {
                Vec::new()
            } else {
                self.tags.split(',').map(|t| t.trim().to_owned()).collect()
            },
            min_idle_runners: number("min_idle_runners", &self.min_idle_runners)?,
            max_runners: number("max_runners", &self.max_runners)?,
            runner_bootstrap_timeout: number(
                "runner_bootstrap_timeout",
                &self.runner_bootstrap_timeout,
            )?,
            priority: number("priority", &self.priority)?,
            extra_specs: if extra.is_empty() {
                None
            } else {
                Some(serde_json::from_str(extra).map_err(|e| {
                    FormErrors::at("extra_specs", format!("extra_specs: not valid JSON ({e})"))
                })?)
            },
        })
    }
}

/// A whole number typed into `field`; empty is none given.
pub(super) fn number(field: &'static str, v: &str) -> Result<Option<u32>, FormErrors> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        FormErrors::at(
            field,
            format!("{field}: {v:?} is not a whole number of 0 or more"),
        )
    })
}

pub(super) fn opt(v: &str) -> Option<String> {
    Some(v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub async fn create_pool(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<PoolForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let kind = match kind_of(&s, &id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let refused = |errors: FormErrors, status| {
        let (s, session, id, f) = (s.clone(), session.clone(), id.clone(), f.clone());
        async move {
            entity_page_with(
                &s,
                &session,
                &id,
                &FormErrors::default(),
                &f,
                &errors,
                None,
                None,
                status,
            )
            .await
        }
    };
    let p = match f.parse() {
        Ok(p) => p,
        Err(errors) => return refused(errors, StatusCode::BAD_REQUEST).await,
    };
    let req = PoolCreate {
        provider_name: f.provider_name.trim().to_owned(),
        image: f.image.trim().to_owned(),
        flavor: f.flavor.trim().to_owned(),
        tags: p.tags,
        os_type: opt(&f.os_type),
        os_arch: opt(&f.os_arch),
        min_idle_runners: p.min_idle_runners,
        max_runners: p.max_runners,
        runner_prefix: opt(&f.runner_prefix),
        runner_bootstrap_timeout: p.runner_bootstrap_timeout,
        extra_specs: p.extra_specs,
        runner_group: opt(&f.runner_group),
        priority: p.priority,
        enabled: Some(f.enabled.is_some()),
    };
    let r = by_kind!(kind, |m| m::create_pool(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req)
    )
    .await);
    match r {
        Ok((_, Json(pool))) => redirect(format!("/ui/pools/{}?done=created", pool.id)),
        Err(e) => refused(FormErrors::from_api(&e, POOL_FIELDS), e.status).await,
    }
}

pub async fn pool_page(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    // A scale set's pool is managed on its scale set's page.
    if let Ok(pool) = id.parse()
        && let Ok(Some(set)) = s.app.store.scale_set_by_pool(pool).await
    {
        return redirect(format!("/ui/scalesets/{}", set.id));
    }
    render_pool(
        &s,
        &session,
        &id,
        None,
        &FormErrors::default(),
        q.done.as_deref(),
        StatusCode::OK,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn render_pool(
    s: &UiState,
    session: &Session,
    id: &str,
    form: Option<&PoolForm>,
    errors: &FormErrors,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let p = match pools::get(session.admin(), State(s.app.clone()), Path(id.to_owned())).await {
        Ok(Json(p)) => p,
        Err(e) => return api_error_page(e),
    };
    let instances: Vec<InstanceResponse> =
        match pools::instances(session.admin(), State(s.app.clone()), Path(id.to_owned())).await {
            Ok(Json(i)) => i,
            Err(e) => return api_error_page(e),
        };
    let entity = s
        .app
        .store
        .entity(hangar_core::EntityId(p.entity_id))
        .await
        .map(|e| e.scope.display_name())
        .unwrap_or_default();
    let names = match super::pool_names(s).await {
        Ok(n) => n,
        Err(e) => return api_error_page(e),
    };
    let current = PoolForm::from_pool(&p);
    let form = form.unwrap_or(&current);
    let providers = s.app.providers.names();
    let title = format!("Pool {} · {}", entity, p.tags.join(", "));
    let body = html! {
        (notice(done))
        dl.facts {
            dt { "Id" } dd { code { (p.id) } }
            dt { "Entity" } dd { a href=(format!("/ui/entities/{}", p.entity_id)) { (entity) } }
            dt { "State" } dd {
                @if p.enabled { span.badge.ok { "enabled" } } @else { span.badge.off { "disabled" } }
                " "
                @if p.health.state == "ok" { span.badge.ok { "healthy" } } @else { span.badge.bad { (p.health.state) } }
                @if let Some(e) = &p.health.last_error { div.reason { "Last error: " (e) } }
            }
            dt { "Runners" } dd { (p.instance_count) " of " (p.max_runners) " (at least " (p.min_idle_runners) " idle)" }
        }
        (enable_form(session, &p))
        section aria-labelledby="runners-h" {
            h2 #runners-h { "Runners" }
            @if instances.is_empty() { p { "None." } } @else { (super::runners::table(session, &instances, &names, "pool")) }
        }
        section aria-labelledby="edit-pool-h" {
            h2 #edit-pool-h { "Edit" }
            (pool_form_markup(session, &format!("/ui/pools/{}", p.id), form, errors, &providers, "Save pool"))
            (delete_form(session, &format!("/ui/pools/{}/delete", p.id), "Delete this pool", "Only a pool without runners can be deleted: disable it and delete its runners first."))
        }
    };
    (
        status,
        Html(layout::page(session, &title, "/ui/entities", body).into_string()),
    )
        .into_response()
}

pub async fn update_pool(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<PoolForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let p = match f.parse() {
        Ok(p) => p,
        Err(errors) => {
            return render_pool(
                &s,
                &session,
                &id,
                Some(&f),
                &errors,
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let req = PoolUpdate {
        provider_name: Some(f.provider_name.trim().to_owned()),
        image: Some(f.image.trim().to_owned()),
        flavor: Some(f.flavor.trim().to_owned()),
        tags: Some(p.tags),
        os_type: opt(&f.os_type),
        os_arch: opt(&f.os_arch),
        min_idle_runners: p.min_idle_runners,
        max_runners: p.max_runners,
        runner_prefix: opt(&f.runner_prefix),
        runner_bootstrap_timeout: p.runner_bootstrap_timeout,
        extra_specs: Some(p.extra_specs.unwrap_or_else(|| serde_json::json!({}))),
        runner_group: Some(f.runner_group.trim().to_owned()),
        priority: p.priority,
        enabled: Some(f.enabled.is_some()),
    };
    match pools::update(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req),
    )
    .await
    {
        Ok(_) => redirect(format!("/ui/pools/{id}?done=saved")),
        Err(e) => {
            let errors = FormErrors::from_api(&e, POOL_FIELDS);
            render_pool(&s, &session, &id, Some(&f), &errors, None, e.status).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    csrf: String,
    enabled: String,
}

pub async fn set_enabled(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<EnabledForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let enabled = f.enabled == "true";
    let req = PoolUpdate {
        enabled: Some(enabled),
        ..Default::default()
    };
    match pools::update(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req),
    )
    .await
    {
        Ok(_) => redirect(format!(
            "/ui/pools/{id}?done={}",
            if enabled { "enabled" } else { "disabled" }
        )),
        Err(e) => {
            render_pool(
                &s,
                &session,
                &id,
                None,
                &FormErrors::from_api(&e, &[]),
                None,
                e.status,
            )
            .await
        }
    }
}

pub async fn delete_pool(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<super::CsrfOnly>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let entity = match pools::get(session.admin(), State(s.app.clone()), Path(id.clone())).await {
        Ok(Json(p)) => p.entity_id,
        Err(e) => return api_error_page(e),
    };
    match pools::delete(session.admin(), State(s.app.clone()), Path(id.clone())).await {
        Ok(_) => redirect(format!("/ui/entities/{entity}?done=deleted")),
        Err(e) => {
            render_pool(
                &s,
                &session,
                &id,
                None,
                &FormErrors::from_api(&e, &[]),
                None,
                e.status,
            )
            .await
        }
    }
}

// ---- shared markup ----

fn pools_table(session: &Session, list: &[PoolResponse]) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr { th scope="col" { "Tags" } th scope="col" { "Provider" } th scope="col" { "Image / flavor" } th scope="col" { "Runners" } th scope="col" { "Health" } th scope="col" { "Enabled" } } }
                tbody {
                    @for p in list {
                        tr {
                            th scope="row" { a href=(format!("/ui/pools/{}", p.id)) { (p.tags.join(", ")) } }
                            td { (p.provider_name) }
                            td { (p.image) " / " (p.flavor) }
                            td { (p.instance_count) " of " (p.max_runners) }
                            td { @if p.health.state == "ok" { span.badge.ok { "ok" } } @else { span.badge.bad { (p.health.state) } } }
                            td { (enable_form(session, p)) }
                        }
                    }
                }
            }
        }
    }
}

fn enable_form(session: &Session, p: &PoolResponse) -> Markup {
    html! {
        form.inline method="post" action=(format!("/ui/pools/{}/enabled", p.id)) {
            (csrf(session))
            input type="hidden" name="enabled" value=(if p.enabled { "false" } else { "true" });
            @if p.enabled {
                button.secondary type="submit" { "Disable" span.sr { " pool " (p.tags.join(", ")) } }
            } @else {
                button type="submit" { "Enable" span.sr { " pool " (p.tags.join(", ")) } }
            }
        }
    }
}

/// A delete button behind a disclosure, so one stray click deletes nothing.
pub(super) fn delete_form(session: &Session, action: &str, label: &str, hint: &str) -> Markup {
    html! {
        details.danger {
            summary { (label) "…" }
            form method="post" action=(action) {
                (csrf(session))
                p.hint { (hint) }
                button.danger type="submit" { (label) }
            }
        }
    }
}

pub fn text_field(
    name: &'static str,
    label: &str,
    value: &str,
    errors: &FormErrors,
    hint: &str,
) -> Markup {
    let err = errors.for_field(name);
    let hint_id = format!("{name}-hint");
    let err_id = format!("{name}-error");
    let described = match (hint.is_empty(), err.is_some()) {
        (true, false) => None,
        (false, false) => Some(hint_id.clone()),
        (true, true) => Some(err_id.clone()),
        (false, true) => Some(format!("{err_id} {hint_id}")),
    };
    html! {
        div.field.invalid[err.is_some()] {
            label for=(name) { (label) }
            input #(name) name=(name) value=(value) aria-invalid=[err.map(|_| "true")] aria-describedby=[described] autofocus[err.is_some()];
            @if let Some(m) = err { p.error #(err_id) { (m) } }
            @if !hint.is_empty() { p.hint #(hint_id) { (hint) } }
        }
    }
}

pub(super) fn select_field(
    name: &'static str,
    label: &str,
    value: &str,
    options: &[String],
    errors: &FormErrors,
) -> Markup {
    let err = errors.for_field(name);
    let err_id = format!("{name}-error");
    html! {
        div.field.invalid[err.is_some()] {
            label for=(name) { (label) }
            select #(name) name=(name) aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| err_id.clone())] autofocus[err.is_some()] {
                @if !options.iter().any(|o| o == value) && !value.is_empty() {
                    option value=(value) selected { (value) }
                }
                @for o in options { option value=(o) selected[o == value] { (o) } }
            }
            @if let Some(m) = err { p.error #(err_id) { (m) } }
        }
    }
}

fn pool_form_markup(
    session: &Session,
    action: &str,
    f: &PoolForm,
    errors: &FormErrors,
    providers: &[String],
    submit: &str,
) -> Markup {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let extra_err = errors.for_field("extra_specs");
    html! {
        form.card.grid method="post" action=(action) novalidate {
            (csrf(session))
            @if let Some(m) = errors.general() { p.error role="alert" { (m) } }
            (select_field("provider_name", "Provider", &f.provider_name, providers, errors))
            (text_field("image", "Image", &f.image, errors, ""))
            (text_field("flavor", "Flavor", &f.flavor, errors, ""))
            (text_field("tags", "Labels (tags)", &f.tags, errors, "Comma-separated; a job runs here when all its labels are among these"))
            (select_field("os_type", "OS", &f.os_type, &owned(&["linux", "windows"]), errors))
            (select_field("os_arch", "Architecture", &f.os_arch, &owned(&["amd64", "arm64", "arm"]), errors))
            (text_field("min_idle_runners", "Idle runners kept", &f.min_idle_runners, errors, ""))
            (text_field("max_runners", "Max runners", &f.max_runners, errors, ""))
            (text_field("runner_prefix", "Runner name prefix", &f.runner_prefix, errors, "Empty: hangar"))
            (text_field("runner_bootstrap_timeout", "Bootstrap timeout (minutes)", &f.runner_bootstrap_timeout, errors, "Empty: the default"))
            (text_field("priority", "Priority", &f.priority, errors, "Higher first among matching pools"))
            (text_field("runner_group", "Runner group", &f.runner_group, errors, ""))
            div.field.wide.invalid[extra_err.is_some()] {
                label for="extra_specs" { "Extra specs (JSON object)" }
                textarea #extra_specs name="extra_specs" rows="3" aria-invalid=[extra_err.map(|_| "true")] aria-describedby=[extra_err.map(|_| "extra_specs-error")] autofocus[extra_err.is_some()] { (f.extra_specs) }
                @if let Some(m) = extra_err { p.error #extra_specs-error { (m) } }
            }
            div.field.check {
                input #enabled type="checkbox" name="enabled" checked[f.enabled.is_some()];
                label for="enabled" { "Enabled" }
            }
            div.actions { button type="submit" { (submit) } }
        }
    }
}
