//! The web dashboard at `/ui`: server-rendered HTML (maud) over the same
//! handlers the JSON API uses, so a form is validated exactly as the API
//! validates a body, and the same admin login guards both.
//!
//! Security, in one place: the session cookie holds the API token
//! (`HttpOnly`, `SameSite=Strict`, `Path=/ui`, `Secure` behind https);
//! every POST carries a CSRF token derived from the session token (a
//! hidden field; the login form uses a random one paired with a cookie)
//! and must come from this origin (`Origin`, else `Sec-Fetch-Site`); every
//! answer forbids framing, caching and any script or style from elsewhere
//! (CSP `default-src 'self'`, no inline script). Live regions poll small
//! HTML fragments (`…/live`) with a few lines of JavaScript.

// Helpers here return `Err(Response)`: the page to answer with, at once.
// It is handed straight back to axum, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod chart;
mod entities;
mod jobs;
mod layout;
mod overview;
mod runners;
mod scalesets;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hangar_api::{LoginRequest, ProviderResponse};
use maud::{Markup, html};
use rand::RngCore;
use sha2::Digest;

use crate::AppState;
use crate::auth::{Admin, PeerAddr};
use crate::error::{ApiError, JsonBody};

const SESSION_COOKIE: &str = "hangar_session";
const LOGIN_COOKIE: &str = "hangar_login";
/// How often the live regions poll, in milliseconds (read by `app.js`).
pub const POLL_MS: u32 = 3000;
/// Provider health checks can take seconds (an external provider runs a
/// process); the overview polls every few seconds, so it shows a result at
/// most this old.
const HEALTH_TTL: Duration = Duration::from_secs(15);

const STYLE_CSS: &str = include_str!("assets/style.css");
const APP_JS: &str = include_str!("assets/app.js");

/// What the dashboard's handlers share: the API's state and a short cache
/// of provider health.
#[derive(Debug, Clone)]
pub struct UiState {
    app: AppState,
    health: HealthCache,
}

/// The last provider health answer and when it was taken.
type HealthCache = Arc<Mutex<Option<(Instant, Vec<ProviderResponse>)>>>;

impl UiState {
    /// Provider health, at most [`HEALTH_TTL`] old.
    async fn provider_health(&self) -> Vec<ProviderResponse> {
        if let Some((at, v)) = self.health.lock().expect("health cache").as_ref()
            && at.elapsed() < HEALTH_TTL
        {
            return v.clone();
        }
        let fresh = crate::admin::provider_health(self.app.providers.iter()).await;
        *self.health.lock().expect("health cache") = Some((Instant::now(), fresh.clone()));
        fresh
    }
}

/// The dashboard's routes, all under `/ui`, to merge into the main router.
pub fn router(app: AppState) -> Router {
    let state = UiState {
        app,
        health: Arc::default(),
    };
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/live/overview", get(overview::live))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/app.js", get(script))
        .route(
            "/ui/entities",
            get(entities::list_page).post(entities::create),
        )
        .route(
            "/ui/entities/{id}",
            get(entities::show).post(entities::update),
        )
        .route("/ui/entities/{id}/delete", post(entities::delete))
        .route("/ui/entities/{id}/pools", post(entities::create_pool))
        .route(
            "/ui/pools/{id}",
            get(entities::pool_page).post(entities::update_pool),
        )
        .route("/ui/pools/{id}/enabled", post(entities::set_enabled))
        .route("/ui/pools/{id}/delete", post(entities::delete_pool))
        .route(
            "/ui/scalesets",
            get(scalesets::list_page).post(scalesets::create),
        )
        .route(
            "/ui/scalesets/{id}",
            get(scalesets::show).post(scalesets::update),
        )
        .route("/ui/scalesets/{id}/enabled", post(scalesets::set_enabled))
        .route("/ui/scalesets/{id}/delete", post(scalesets::delete))
        .route("/ui/runners", get(runners::page))
        .route("/ui/live/runners", get(runners::live))
        .route("/ui/runners/{name}/delete", post(runners::delete))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/live/jobs", get(jobs::live))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Every `/ui` answer: same-origin POSTs only, and headers that keep the
/// pages out of frames, caches and other origins' scripts.
async fn guard(State(s): State<UiState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST
        && let Err(why) = same_origin(req.headers(), &s.app.settings.public_url)
    {
        tracing::warn!(path = %req.uri().path(), reason = why, "dashboard POST refused");
        return error_page(StatusCode::FORBIDDEN, "Request refused", why);
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A state-changing request must come from a page of this origin: its
/// `Origin` (sent by browsers on every POST) names this server — the host
/// it was sent to, or `public_url` — or, without one, `Sec-Fetch-Site`
/// says same-origin. Clients that send neither (not a browser) cannot be
/// tricked into a cross-site request and still need the CSRF token.
fn same_origin(headers: &HeaderMap, public_url: &str) -> Result<(), &'static str> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(origin) = text(header::ORIGIN) {
        let origin = origin.trim_end_matches('/');
        let host = text(header::HOST).unwrap_or_default();
        let ok = origin.eq_ignore_ascii_case(&url_origin(public_url))
            || (!host.is_empty()
                && (origin.eq_ignore_ascii_case(&format!("http://{host}"))
                    || origin.eq_ignore_ascii_case(&format!("https://{host}"))));
        return if ok {
            Ok(())
        } else {
            Err("the request came from another site (Origin does not match)")
        };
    }
    match text(HeaderName::from_static("sec-fetch-site")) {
        Some("same-origin") | Some("none") | None => Ok(()),
        Some(_) => Err("the request came from another site (Sec-Fetch-Site)"),
    }
}

use axum::http::HeaderName;

/// `scheme://host[:port]` of a URL, as browsers send it in `Origin`.
fn url_origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        None => url.to_owned(),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn secure_cookies(s: &UiState) -> bool {
    s.app.settings.public_url.starts_with("https://")
}

fn set_cookie(s: &UiState, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if secure_cookies(s) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    ))
    .expect("cookie values are ASCII")
}

/// The CSRF token of a session: a hash of its (secret, HttpOnly) API
/// token, so it needs no storage, changes with every login and cannot be
/// made without the token.
fn csrf_for(token: &str) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(b"hangar-ui-csrf\0")
        .chain_update(token.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// Equal, in time that does not depend on where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A logged-in admin, from the session cookie, checked exactly as the API
/// checks a bearer token.
#[derive(Debug, Clone)]
pub struct Session {
    admin: Admin,
    csrf: String,
}

impl Session {
    /// Refuses a form whose CSRF field is not this session's.
    fn check(&self, sent: &str) -> Result<(), Response> {
        if same_secret(sent, &self.csrf) {
            Ok(())
        } else {
            Err(error_page(
                StatusCode::FORBIDDEN,
                "Request refused",
                "the form's security token is missing or stale; reload the page and try again",
            ))
        }
    }

    fn admin(&self) -> Admin {
        self.admin.clone()
    }

    fn user(&self) -> &str {
        &self.admin.0.username
    }
}

impl FromRequestParts<UiState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &UiState) -> Result<Self, Response> {
        let live = parts.uri.path().starts_with("/ui/live/");
        let to_login = || {
            if live {
                StatusCode::UNAUTHORIZED.into_response()
            } else {
                Redirect::to("/ui/login").into_response()
            }
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(to_login());
        };
        // The API's own check, on a request that carries the token as the
        // API expects it.
        let mut api = http::Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .expect("a valid request")
            .into_parts()
            .0;
        match Admin::from_request_parts(&mut api, &s.app).await {
            Ok(admin) => Ok(Session {
                admin,
                csrf: csrf_for(&token),
            }),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(to_login()),
            Err(e) => Err(api_error_page(e)),
        }
    }
}

/// How the dashboard names a pool and where it links it.
#[derive(Debug, Clone)]
pub struct PoolLink {
    pub title: String,
    pub href: String,
}

/// Every pool's name and page as the dashboard shows them: its entity and
/// labels, or, for a scale set's pool, its entity and the scale set (whose
/// page manages it; `/ui/pools/…` does not).
async fn pool_names(
    s: &UiState,
) -> Result<std::collections::HashMap<uuid::Uuid, PoolLink>, ApiError> {
    let entities: std::collections::HashMap<_, _> = s
        .app
        .store
        .list_entities(None)
        .await?
        .into_iter()
        .map(|e| (e.id, e.scope.display_name()))
        .collect();
    let sets: std::collections::HashMap<_, _> = s
        .app
        .store
        .list_scale_sets(None)
        .await?
        .into_iter()
        .map(|set| (set.pool_id, set))
        .collect();
    Ok(s.app
        .store
        .list_pools(None)
        .await?
        .into_iter()
        .map(|p| {
            let entity = entities.get(&p.entity_id).cloned().unwrap_or_default();
            let link = match sets.get(&p.id) {
                Some(set) => PoolLink {
                    title: scale_set_title(&entity, set.spec.name.as_str()),
                    href: format!("/ui/scalesets/{}", set.id),
                },
                None => PoolLink {
                    title: pool_title(&entity, &p.spec.tags.to_vec()),
                    href: format!("/ui/pools/{}", p.id),
                },
            };
            (p.id.0, link)
        })
        .collect())
}

/// "octo/app · scale set linux-x64".
fn scale_set_title(entity: &str, name: &str) -> String {
    format!("{entity} · scale set {name}")
}

/// "octo/app · linux, self-hosted".
fn pool_title(entity: &str, tags: &[String]) -> String {
    format!("{entity} · {}", tags.join(", "))
}

/// An HTML page for an error the API answered.
fn api_error_page(e: ApiError) -> Response {
    if e.status.is_server_error() {
        tracing::error!(status = e.status.as_u16(), error = %e.error, details = ?e.details, "dashboard request failed");
    }
    let title = e.status.canonical_reason().unwrap_or("Error").to_owned();
    let text = match &e.details {
        Some(d) => format!("{} ({d})", e.error),
        None => e.error.clone(),
    };
    error_page(e.status, &title, &text)
}

fn error_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = layout::bare(
        title,
        html! {
            main.narrow {
                h1 { (title) }
                p.error role="alert" { (text) }
                p { a href="/ui" { "Back to the dashboard" } }
            }
        },
    );
    (status, Html(body.into_string())).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    login_csrf: String,
}

async fn login_page(State(s): State<UiState>) -> Response {
    // A fresh install has no account to log in with yet.
    let hint = match s.app.store.has_admin().await {
        Ok(false) => Some(
            "No admin account exists yet: create one with `hangar init` (or POST /api/v1/first-run).",
        ),
        _ => None,
    };
    login_form(&s, StatusCode::OK, hint, "")
}

fn login_form(s: &UiState, status: StatusCode, error: Option<&str>, username: &str) -> Response {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let nonce = hex::encode(b);
    let page = layout::bare(
        "Log in",
        html! {
            main.narrow {
                h1 { "Hangar" }
                form.card method="post" action="/ui/login" {
                    input type="hidden" name="login_csrf" value=(nonce);
                    @if let Some(e) = error { p.error role="alert" #login-error { (e) } }
                    label for="username" { "Username" }
                    input #username name="username" autocomplete="username" required value=(username);
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
                p.hint { "The same admin account as the API and the " code { "hangar" } " CLI." }
            }
        },
    );
    let mut res = (status, Html(page.into_string())).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(s, LOGIN_COOKIE, &nonce, Duration::from_secs(3600)),
    );
    res
}

/// Logs in through the API's own login (same throttle, same checks) and
/// keeps the token in the session cookie.
async fn login(
    State(s): State<UiState>,
    peer: PeerAddr,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let paired = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same_secret(c, &f.login_csrf));
    if !paired {
        return login_form(
            &s,
            StatusCode::FORBIDDEN,
            Some("The login form expired; please try again."),
            &f.username,
        );
    }
    let req = LoginRequest {
        username: f.username.clone(),
        password: f.password,
    };
    match crate::auth::login(State(s.app.clone()), peer, JsonBody(req)).await {
        Ok(axum::Json(t)) => {
            tracing::info!(user.name = %f.username, "dashboard login");
            let ttl = (t.expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::from_secs(3600));
            let mut res = Redirect::to("/ui").into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&s, SESSION_COOKIE, &t.token, ttl),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(&s, LOGIN_COOKIE, "", Duration::ZERO),
            );
            res
        }
        Err(e) => {
            let msg = match &e.details {
                Some(d) if e.status == StatusCode::TOO_MANY_REQUESTS => {
                    format!("{} ({d})", e.error)
                }
                _ => e.error.clone(),
            };
            login_form(&s, e.status, Some(&msg), &f.username)
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(
    State(s): State<UiState>,
    session: Session,
    axum::Form(f): axum::Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.check(&f.csrf) {
        return r;
    }
    let mut res = Redirect::to("/ui/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&s, SESSION_COOKIE, "", Duration::ZERO),
    );
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// A rendered page.
fn page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A field-level error from the API: which form field its message names
/// (the first of `fields` that appears as a word in it), or the form as a
/// whole.
#[derive(Debug, Clone, Default)]
pub struct FormErrors {
    pub field: Option<&'static str>,
    pub message: Option<String>,
}

impl FormErrors {
    fn from_api(e: &ApiError, fields: &[&'static str]) -> Self {
        let text = match &e.details {
            Some(d) => format!("{}: {d}", e.error),
            None => e.error.clone(),
        };
        let field = [e.error.as_str(), e.details.as_deref().unwrap_or_default()]
            .into_iter()
            .find_map(|t| {
                fields
                    .iter()
                    .filter_map(|f| first_mention(t, f).map(|at| (at, *f)))
                    .min()
                    .map(|(_, f)| f)
            });
        FormErrors {
            field,
            message: Some(text),
        }
    }

    fn at(field: &'static str, message: impl Into<String>) -> Self {
        FormErrors {
            field: Some(field),
            message: Some(message.into()),
        }
    }

    /// The message if it belongs to `field`.
    fn for_field(&self, field: &str) -> Option<&str> {
        (self.field == Some(field))
            .then_some(self.message.as_deref())
            .flatten()
    }

    /// The message if it belongs to no field.
    fn general(&self) -> Option<&str> {
        self.field
            .is_none()
            .then_some(self.message.as_deref())
            .flatten()
    }
}

/// Where `text` first mentions `field` as a whole word (`max_runners` is
/// not found inside `x_max_runners`). The field named first is the one a
/// message is about: "max_runners (1) must be at least min_idle_runners".
fn first_mention(text: &str, field: &str) -> Option<usize> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(field).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + field.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The declarations of the first `{ … }` block after `from` in the
    /// dashboard's stylesheet, as (property, value).
    fn block(from: &str) -> Vec<(String, String)> {
        block_at(STYLE_CSS.find(from).expect("block present"))
    }

    fn block_at(at: usize) -> Vec<(String, String)> {
        let open = at + STYLE_CSS[at..].find('{').expect("block opens");
        let close = open + STYLE_CSS[open..].find('}').expect("block ends");
        STYLE_CSS[open + 1..close]
            .split(';')
            .filter_map(|decl| {
                let (name, value) = decl.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect()
    }

    fn hex(value: &str) -> Option<[f64; 3]> {
        let hex = value.strip_prefix('#')?;
        let hex = match hex.len() {
            3 => hex.chars().flat_map(|c| [c, c]).collect::<String>(),
            6 => hex.to_owned(),
            _ => return None,
        };
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some([channel(0)?, channel(2)?, channel(4)?].map(f64::from))
    }

    /// The colours of the first `:root` block from `from`, by custom
    /// property name (without `--`).
    fn palette(from: &str) -> std::collections::HashMap<String, [f64; 3]> {
        let at = STYLE_CSS.find(from).expect("theme present");
        let root = at + STYLE_CSS[at..].find(":root").expect("its :root block");
        block_at(root)
            .into_iter()
            .filter_map(|(name, value)| Some((name.strip_prefix("--")?.to_owned(), hex(&value)?)))
            .collect()
    }

    /// WCAG 2 contrast ratio of two sRGB colours.
    fn contrast(a: [f64; 3], b: [f64; 3]) -> f64 {
        let lum = |c: [f64; 3]| {
            let lin = |v: f64| {
                let v = v / 255.0;
                if v <= 0.040_45 {
                    v / 12.92
                } else {
                    ((v + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
        };
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn every_text_colour_meets_4_5_to_1_on_its_background_in_both_themes() {
        let light = palette(":root");
        let mut dark = light.clone();
        dark.extend(palette("prefers-color-scheme: dark"));
        assert!(
            light.len() >= 10 && dark["bg"] != light["bg"],
            "both themes parsed"
        );
        // The danger button's text: a colour or one of the palette's.
        let danger_text = block("button.danger")
            .into_iter()
            .find(|(name, _)| name == "color")
            .map(|(_, value)| value)
            .expect("the danger button sets its text colour");
        // (text, background) as the stylesheet pairs them: body and card
        // text, muted hints and headings, links, badges, state colours in
        // tables, field errors, the notice, and buttons.
        let pairs = [
            ("fg", "bg"),
            ("fg", "card"),
            ("muted", "bg"),
            ("muted", "card"),
            ("accent", "bg"),
            ("accent", "card"),
            ("ok", "ok-bg"),
            ("bad", "bad-bg"),
            ("off", "off-bg"),
            ("ok", "card"),
            ("bad", "card"),
            ("bad", "bg"),
            ("off", "card"),
            ("fg", "ok-bg"),
            ("card", "accent"),
        ];
        let mut failures = Vec::new();
        for (theme, colours) in [("light", &light), ("dark", &dark)] {
            for (text, back) in pairs {
                let ratio = contrast(colours[text], colours[back]);
                if ratio < 4.5 {
                    failures.push(format!("{theme}: --{text} on --{back} is {ratio:.2}:1"));
                }
            }
            let text = match danger_text.strip_prefix("var(--") {
                Some(name) => colours[name.trim_end_matches(')')],
                None => hex(&danger_text).expect("a hex colour"),
            };
            let ratio = contrast(text, colours["bad"]);
            if ratio < 4.5 {
                failures.push(format!(
                    "{theme}: the danger button's {danger_text} on --bad is {ratio:.2}:1"
                ));
            }
        }
        assert!(failures.is_empty(), "below 4.5:1: {failures:#?}");
    }

    #[test]
    fn errors_land_at_the_field_they_name() {
        let fields = &["min_idle_runners", "max_runners", "tags", "provider_name"];
        let e = ApiError::bad_request("max_runners (1) must be at least min_idle_runners (2)");
        assert_eq!(FormErrors::from_api(&e, fields).field, Some("max_runners"));
        let e = ApiError::bad_request("min_idle_runners is too large");
        assert_eq!(
            FormErrors::from_api(&e, fields).field,
            Some("min_idle_runners")
        );
        let e =
            ApiError::bad_request("max_runners 5000 is above the limit of 1000 runners per pool");
        assert_eq!(FormErrors::from_api(&e, fields).field, Some("max_runners"));
        let e = ApiError::bad_request("tags: empty label (check for a doubled or trailing comma)");
        assert_eq!(FormErrors::from_api(&e, fields).field, Some("tags"));
        let e = ApiError::conflict("pool still has instances");
        let f = FormErrors::from_api(&e, fields);
        assert_eq!(f.field, None);
        assert_eq!(f.general(), Some("pool still has instances"));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_for("token-a");
        assert_eq!(a, csrf_for("token-a"));
        assert_ne!(a, csrf_for("token-b"));
        assert!(same_secret(&a, &csrf_for("token-a")));
        assert!(!same_secret(&a, &a[..a.len() - 1]));
        assert!(!same_secret("", &a));
    }

    #[test]
    fn only_this_origin_may_post() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let public = "https://hangar.example.com/";
        let ok = |h: &[(&str, &str)]| same_origin(&headers(h), public).is_ok();
        assert!(ok(&[("origin", "https://hangar.example.com")]));
        assert!(ok(&[
            ("origin", "http://127.0.0.1:9997"),
            ("host", "127.0.0.1:9997")
        ]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:9997")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "127.0.0.1:9997")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(ok(&[]), "not a browser: the CSRF token decides");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_hangar_session=no; hangar_session=yes; other=1"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("yes"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }
}
