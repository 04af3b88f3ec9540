//! Runner scale sets: list, show, create, edit, enable/disable, delete.
//! Every change goes through the admin API's scale set handlers
//! (`admin::scalesets`), which ask GitHub's Actions service first, so a
//! form is refused for exactly the reasons a JSON body would be and the
//! API's message is shown at the field it names.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use hangar_api::{
    EntityResponse, InstanceResponse, ScaleSetCreate, ScaleSetResponse, ScaleSetUpdate,
};
use hangar_core::EntityKind;
use maud::{Markup, html};
use serde::Deserialize;

use super::entities::{
    Done, all_entities, delete_form, display, kind_of, number, opt, redirect, select_field,
    text_field,
};
use super::layout::{self, ago, csrf, notice};
use super::{FormErrors, Session, UiState, api_error_page};
use crate::admin::instances::{self, InstanceQuery};
use crate::admin::scalesets;
use crate::error::{ApiError, JsonBody};

/// A scale set form as typed: strings, so a refused form comes back as it
/// was.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScaleSetForm {
    #[serde(default)]
    csrf: String,
    /// Only when creating: the entity it serves.
    #[serde(default)]
    entity_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    runner_group: String,
    #[serde(default)]
    provider_name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    flavor: String,
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
    extra_specs: String,
    #[serde(default)]
    enabled: Option<String>,
}

const FIELDS: &[&str] = &[
    "entity_id",
    "name",
    "runner_group",
    "provider_name",
    "image",
    "flavor",
    "os_type",
    "os_arch",
    "min_idle_runners",
    "max_runners",
    "runner_prefix",
    "runner_bootstrap_timeout",
    "extra_specs",
];

/// The API's error at its field; GitHub's "runner group … does not exist"
/// names the group in words, not by its field.
fn errors_from_api(e: &ApiError) -> FormErrors {
    let mut f = FormErrors::from_api(e, FIELDS);
    if f.field.is_none() && e.error.starts_with("runner group ") {
        f.field = Some("runner_group");
    }
    f
}

/// The numbers and the JSON of a form, parsed as far as the form can;
/// everything else is the API's to judge.
struct Parsed {
    min_idle_runners: Option<u32>,
    max_runners: Option<u32>,
    runner_bootstrap_timeout: Option<u32>,
    extra_specs: Option<serde_json::Value>,
}

impl ScaleSetForm {
    fn new_defaults(entity_id: &str) -> Self {
        ScaleSetForm {
            entity_id: entity_id.to_owned(),
            os_type: "linux".into(),
            os_arch: "amd64".into(),
            min_idle_runners: "0".into(),
            max_runners: "10".into(),
            enabled: Some("on".into()),
            ..Default::default()
        }
    }

    fn from_scale_set(s: &ScaleSetResponse) -> Self {
        ScaleSetForm {
            csrf: String::new(),
            entity_id: s.entity_id.to_string(),
            name: s.name.clone(),
            runner_group: s.runner_group.clone().unwrap_or_default(),
            provider_name: s.provider_name.clone(),
            image: s.image.clone(),
            flavor: s.flavor.clone(),
            os_type: s.os_type.clone(),
            os_arch: s.os_arch.clone(),
            min_idle_runners: s.min_idle_runners.to_string(),
            max_runners: s.max_runners.to_string(),
            runner_prefix: s.runner_prefix.clone(),
            runner_bootstrap_timeout: s.runner_bootstrap_timeout.to_string(),
            extra_specs: if s.extra_specs.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                serde_json::to_string_pretty(&s.extra_specs).unwrap_or_default()
            },
            enabled: s.enabled.then(|| "on".into()),
        }
    }

    fn parse(&self) -> Result<Parsed, FormErrors> {
        let extra = self.extra_specs.trim();
        Ok(Parsed {
            min_idle_runners: number("min_idle_runners", &self.min_idle_runners)?,
            max_runners: number("max_runners", &self.max_runners)?,
            runner_bootstrap_timeout: number(
                "runner_bootstrap_timeout",
                &self.runner_bootstrap_timeout,
            )?,
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

// ---- the list, and the create form ----

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    done: Option<String>,
    /// The entity the create form starts with.
    entity: Option<String>,
}

pub async fn list_page(
    State(s): State<UiState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let form = ScaleSetForm::new_defaults(q.entity.as_deref().unwrap_or_default());
    render_list(
        &s,
        &session,
        &form,
        &FormErrors::default(),
        q.done.as_deref(),
        StatusCode::OK,
    )
    .await
}

async fn render_list(
    s: &UiState,
    session: &Session,
    form: &ScaleSetForm,
    errors: &FormErrors,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let Json(sets) = scalesets::list(session.admin(), State(s.app.clone())).await?;
        let entities = all_entities(s, session).await?;
        Ok::<_, ApiError>((sets, entities))
    }
    .await;
    let (sets, entities) = match loaded {
        Ok(v) => v,
        Err(e) => return api_error_page(e),
    };
    let providers = s.app.providers.names();
    let body = html! {
        (notice(done))
        section aria-labelledby="scalesets-h" {
            h2 #scalesets-h { "All scale sets" }
            @if sets.is_empty() {
                p { "None yet. A scale set gets its jobs from GitHub's runner scale set queue instead of webhooks; workflows use its name in " code { "runs-on" } "." }
            } @else {
                (table(session, &sets, &entities))
            }
        }
        section aria-labelledby="new-scaleset-h" {
            h2 #new-scaleset-h { "Add a scale set" }
            @if entities.is_empty() {
                p { "Add an " a href="/ui/entities" { "entity" } " first: a scale set serves one repository, organization or enterprise." }
            } @else {
                (form_markup(session, "/ui/scalesets", form, errors, &providers, Some(entities.as_slice()), "Add scale set"))
            }
        }
    };
    (
        status,
        Html(layout::page(session, "Scale sets", "/ui/scalesets", body).into_string()),
    )
        .into_response()
}

pub async fn create(
    State(s): State<UiState>,
    session: Session,
    Form(f): Form<ScaleSetForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let refused = |errors: FormErrors, status| {
        let (s, session, f) = (s.clone(), session.clone(), f.clone());
        async move { render_list(&s, &session, &f, &errors, None, status).await }
    };
    let kind = match kind_of(&s, f.entity_id.trim()).await {
        Ok(k) => k,
        Err(_) => {
            let errors = FormErrors::at("entity_id", "entity_id: choose the entity it serves");
            return refused(errors, StatusCode::BAD_REQUEST).await;
        }
    };
    let p = match f.parse() {
        Ok(p) => p,
        Err(errors) => return refused(errors, StatusCode::BAD_REQUEST).await,
    };
    let req = ScaleSetCreate {
        name: f.name.trim().to_owned(),
        provider_name: f.provider_name.trim().to_owned(),
        image: f.image.trim().to_owned(),
        flavor: f.flavor.trim().to_owned(),
        os_type: opt(&f.os_type),
        os_arch: opt(&f.os_arch),
        min_idle_runners: p.min_idle_runners,
        max_runners: p.max_runners,
        runner_prefix: opt(&f.runner_prefix),
        runner_bootstrap_timeout: p.runner_bootstrap_timeout,
        extra_specs: p.extra_specs,
        runner_group: opt(&f.runner_group),
        enabled: Some(f.enabled.is_some()),
    };
    let (admin, app, entity) = (
        session.admin(),
        State(s.app.clone()),
        Path(f.entity_id.trim().to_owned()),
    );
    let made = match kind {
        EntityKind::Repository => {
            scalesets::repositories::create_scale_set(admin, app, entity, JsonBody(req)).await
        }
        EntityKind::Organization => {
            scalesets::organizations::create_scale_set(admin, app, entity, JsonBody(req)).await
        }
        EntityKind::Enterprise => {
            scalesets::enterprises::create_scale_set(admin, app, entity, JsonBody(req)).await
        }
    };
    match made {
        Ok((_, Json(set))) => redirect(format!("/ui/scalesets/{}?done=created", set.id)),
        Err(e) => refused(errors_from_api(&e), e.status).await,
    }
}

// ---- one scale set ----

pub async fn show(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    render(
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

async fn render(
    s: &UiState,
    session: &Session,
    id: &str,
    form: Option<&ScaleSetForm>,
    errors: &FormErrors,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let set = match scalesets::get(session.admin(), State(s.app.clone()), Path(id.to_owned())).await
    {
        Ok(Json(set)) => set,
        Err(e) => return api_error_page(e),
    };
    let runners: Vec<InstanceResponse> = match instances::list(
        session.admin(),
        State(s.app.clone()),
        Query(InstanceQuery {
            pool_id: Some(set.pool_id.to_string()),
            all: false,
        }),
    )
    .await
    {
        Ok(Json(i)) => i,
        Err(e) => return api_error_page(e),
    };
    let names = match super::pool_names(s).await {
        Ok(n) => n,
        Err(e) => return api_error_page(e),
    };
    let entity = s
        .app
        .store
        .entity(hangar_core::EntityId(set.entity_id))
        .await
        .map(|e| e.scope.display_name())
        .unwrap_or_default();
    let current = ScaleSetForm::from_scale_set(&set);
    let form = form.unwrap_or(&current);
    let providers = s.app.providers.names();
    let title = format!("Scale set {} · {}", entity, set.name);
    let body = html! {
        (notice(done))
        dl.facts {
            dt { "Id" } dd { code { (set.id) } }
            dt { "Entity" } dd { a href=(format!("/ui/entities/{}", set.entity_id)) { (entity) } }
            dt { "Workflows use" } dd { code { "runs-on: " (set.name) } }
            dt { "On GitHub" } dd {
                (state_badge(&set))
                @match set.github_id {
                    Some(g) => { " scale set " code { (g) } }
                    None => { " not created there yet" }
                }
                " · runner group " (set.runner_group.as_deref().unwrap_or("default"))
                @if let Some(e) = &set.last_error { div.reason { "Last error: " (e) } }
            }
            dt { "State" } dd {
                @if set.enabled { span.badge.ok { "enabled" } } @else { span.badge.off { "disabled" } }
                " "
                @if set.health.state == "ok" { span.badge.ok { "healthy" } } @else { span.badge.bad { (set.health.state) } }
                @if let Some(e) = &set.health.last_error { div.reason { "Last error: " (e) } }
            }
            dt { "Runners" } dd {
                (set.instance_count) " of " (set.max_runners) " (" (set.idle_runners) " idle, " (set.active_runners) " busy; at least " (set.min_idle_runners) " idle)"
                div.muted { "GitHub asks for " (set.desired_runners) }
            }
            @if let Some(t) = &set.statistics {
                dt { "Queue" } dd {
                    (t.total_available_jobs) " available · " (t.total_assigned_jobs) " assigned · " (t.total_running_jobs) " running"
                    div.muted { (t.total_registered_runners) " runners registered (" (t.total_idle_runners) " idle, " (t.total_busy_runners) " busy)" }
                }
            }
            dt { "Created" } dd { (ago(set.created_at)) }
        }
        (enable_form(session, &set))
        section aria-labelledby="runners-h" {
            h2 #runners-h { "Runners" }
            @if runners.is_empty() { p { "None." } } @else { (super::runners::table(session, &runners, &names, "scaleset")) }
        }
        section aria-labelledby="edit-scaleset-h" {
            h2 #edit-scaleset-h { "Edit" }
            (form_markup(session, &format!("/ui/scalesets/{}", set.id), form, errors, &providers, None, "Save scale set"))
            (delete_form(session, &format!("/ui/scalesets/{}/delete", set.id), "Delete this scale set", "It is removed from GitHub too. Only a scale set without runners can be deleted: disable it and delete its runners first."))
        }
    };
    (
        status,
        Html(layout::page(session, &title, "/ui/scalesets", body).into_string()),
    )
        .into_response()
}

pub async fn update(
    State(s): State<UiState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<ScaleSetForm>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let p = match f.parse() {
        Ok(p) => p,
        Err(errors) => {
            return render(
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
    let req = ScaleSetUpdate {
        name: Some(f.name.trim().to_owned()),
        provider_name: Some(f.provider_name.trim().to_owned()),
        image: Some(f.image.trim().to_owned()),
        flavor: Some(f.flavor.trim().to_owned()),
        os_type: opt(&f.os_type),
        os_arch: opt(&f.os_arch),
        min_idle_runners: p.min_idle_runners,
        max_runners: p.max_runners,
        runner_prefix: opt(&f.runner_prefix),
        runner_bootstrap_timeout: p.runner_bootstrap_timeout,
        extra_specs: Some(p.extra_specs.unwrap_or_else(|| serde_json::json!({}))),
        runner_group: Some(f.runner_group.trim().to_owned()),
        enabled: Some(f.enabled.is_some()),
    };
    match scalesets::update(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req),
    )
    .await
    {
        Ok(_) => redirect(format!("/ui/scalesets/{id}?done=saved")),
        Err(e) => {
            render(
                &s,
                &session,
                &id,
                Some(&f),
                &errors_from_api(&e),
                None,
                e.status,
            )
            .await
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
    let req = ScaleSetUpdate {
        enabled: Some(enabled),
        ..Default::default()
    };
    match scalesets::update(
        session.admin(),
        State(s.app.clone()),
        Path(id.clone()),
        JsonBody(req),
    )
    .await
    {
        Ok(_) => redirect(format!(
            "/ui/scalesets/{id}?done={}",
            if enabled { "ss-enabled" } else { "ss-disabled" }
        )),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &[]);
            render(&s, &session, &id, None, &errors, None, e.status).await
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
    match scalesets::delete(session.admin(), State(s.app.clone()), Path(id.clone())).await {
        Ok(_) => redirect("/ui/scalesets?done=deleted".into()),
        Err(e) => {
            let errors = FormErrors::from_api(&e, &[]);
            render(&s, &session, &id, None, &errors, None, e.status).await
        }
    }
}

// ---- shared markup ----

/// Scale sets as a table; with `entities`, each names its entity.
pub fn table(session: &Session, list: &[ScaleSetResponse], entities: &[EntityResponse]) -> Markup {
    let entity = |id: uuid::Uuid| {
        entities
            .iter()
            .find(|e| e.id == id)
            .map(display)
            .unwrap_or_default()
    };
    html! {
        div.scroll {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Entity" } th scope="col" { "Provider" } th scope="col" { "Image / flavor" } th scope="col" { "Runners" } th scope="col" { "GitHub" } th scope="col" { "Enabled" } } }
                tbody {
                    @for set in list {
                        tr data-scaleset=(set.name) {
                            th scope="row" { a href=(format!("/ui/scalesets/{}", set.id)) { (set.name) } }
                            td { a href=(format!("/ui/entities/{}", set.entity_id)) { (entity(set.entity_id)) } }
                            td { (set.provider_name) }
                            td { (set.image) " / " (set.flavor) }
                            td { (set.instance_count) " of " (set.max_runners) }
                            td { (state_badge(set)) }
                            td { (enable_form(session, set)) }
                        }
                    }
                }
            }
        }
    }
}

fn state_badge(set: &ScaleSetResponse) -> Markup {
    html! {
        @match set.state.as_str() {
            "active" => { span.badge.ok { "active" } }
            "deleted_on_github" => { span.badge.bad { "deleted on GitHub" } }
            other => { span.badge.bad { (other) } }
        }
    }
}

fn enable_form(session: &Session, set: &ScaleSetResponse) -> Markup {
    html! {
        form.inline method="post" action=(format!("/ui/scalesets/{}/enabled", set.id)) {
            (csrf(session))
            input type="hidden" name="enabled" value=(if set.enabled { "false" } else { "true" });
            @if set.enabled {
                button.secondary type="submit" { "Disable" span.sr { " scale set " (set.name) } }
            } @else {
                button type="submit" { "Enable" span.sr { " scale set " (set.name) } }
            }
        }
    }
}

/// The create form (with `entities`, it asks which one) or the edit form.
fn form_markup(
    session: &Session,
    action: &str,
    f: &ScaleSetForm,
    errors: &FormErrors,
    providers: &[String],
    entities: Option<&[EntityResponse]>,
    submit: &str,
) -> Markup {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let extra_err = errors.for_field("extra_specs");
    html! {
        form.card.grid method="post" action=(action) novalidate {
            (csrf(session))
            @if let Some(m) = errors.general() { p.error role="alert" { (m) } }
            @if let Some(entities) = entities {
                @let err = errors.for_field("entity_id");
                div.field.invalid[err.is_some()] {
                    label for="entity_id" { "Entity" }
                    select #entity_id name="entity_id" aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| "entity_id-error")] autofocus[err.is_some()] {
                        @for e in entities {
                            @let id = e.id.to_string();
                            option value=(id) selected[f.entity_id == id] { (display(e)) " (" (e.kind) ")" }
                        }
                    }
                    @if let Some(m) = err { p.error #entity_id-error { (m) } }
                }
            }
            (text_field("name", "Name", &f.name, errors, "What workflows put in runs-on; renaming changes it on GitHub too"))
            (text_field("runner_group", "Runner group", &f.runner_group, errors, "Empty: the default group"))
            (select_field("provider_name", "Provider", &f.provider_name, providers, errors))
            (text_field("image", "Image", &f.image, errors, ""))
            (text_field("flavor", "Flavor", &f.flavor, errors, ""))
            (select_field("os_type", "OS", &f.os_type, &owned(&["linux", "windows"]), errors))
            (select_field("os_arch", "Architecture", &f.os_arch, &owned(&["amd64", "arm64", "arm"]), errors))
            (text_field("min_idle_runners", "Idle runners kept", &f.min_idle_runners, errors, ""))
            (text_field("max_runners", "Max runners", &f.max_runners, errors, ""))
            (text_field("runner_prefix", "Runner name prefix", &f.runner_prefix, errors, "Empty: hangar"))
            (text_field("runner_bootstrap_timeout", "Bootstrap timeout (minutes)", &f.runner_bootstrap_timeout, errors, "Empty: the default"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_set_errors_land_at_their_field() {
        let at = |e: ApiError| errors_from_api(&e).field;
        assert_eq!(
            at(ApiError::bad_request(
                "scale set name: label \"linux x64\" contains ' '; labels may use ASCII letters"
            )),
            Some("name")
        );
        // `name` inside `provider_name` is not the name field.
        assert_eq!(
            at(ApiError::bad_request("provider_name: must not be empty")),
            Some("provider_name")
        );
        assert_eq!(
            at(ApiError::bad_request(
                "runner group \"builders\" does not exist on GitHub"
            )),
            Some("runner_group")
        );
        assert_eq!(
            at(ApiError::bad_request(
                "max_runners 5000 is above the limit of 1000 runners per pool"
            )),
            Some("max_runners")
        );
        // GitHub failing is about no field.
        let e = ApiError::conflict("GitHub: cannot create the scale set");
        assert_eq!(
            errors_from_api(&e).general(),
            Some("GitHub: cannot create the scale set")
        );
    }
}
