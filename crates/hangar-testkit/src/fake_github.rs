//! `FakeGitHub`: a loopback GitHub REST server with state — runners, jobs,
//! runner groups, registration and App installation tokens — that sends
//! signed `workflow_job` webhooks and simulates runners picking up jobs.
//!
//! A runner it registered comes online when a (simulated) instance posts
//! `/_fake/runners/{id}/online` (see [`crate::runner_sim`]); FakeGitHub then
//! hands it the oldest queued job whose labels it carries, sends
//! `in_progress`, waits the configured job duration, sends `completed` and
//! removes the runner — as GitHub does with ephemeral JIT runners. Faults
//! (5xx, 429 with `retry-after`, 403 secondary limits, 422, latency) and
//! rate-limit headers can be injected per route, and a delivery plan
//! ([`FakeGitHub::set_delivery_plan`]) loses, duplicates, holds back
//! (reorders) or delays webhook deliveries.
//!
//! Every webhook delivery attempt is recorded per hook, as GitHub's hook
//! deliveries API shows it (`status_code` 0 when the receiver could not be
//! reached — which is also how a lost delivery is recorded), listed newest
//! first with cursor pagination and redelivered on
//! `POST …/deliveries/{id}/attempts` (a new attempt, same guid). Jobs belong
//! to workflow runs, listed by status with their jobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::runner_sim::FakeJitConfig;

const QUEUED_TEMPLATE: &str =
    include_str!("../../../fixtures/github-webhooks/workflow_job/queued.payload.json");

/// A runner as FakeGitHub holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeRunner {
    pub id: i64,
    pub name: String,
    /// `repos/o/r`, `orgs/o` or `enterprises/e`.
    pub scope: String,
    pub labels: Vec<String>,
    pub group_id: i64,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    pub job: Option<i64>,
}

/// A job as FakeGitHub holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeJob {
    pub id: i64,
    pub run_id: i64,
    pub run_attempt: i64,
    /// `owner/name`.
    pub repo: String,
    pub labels: Vec<String>,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    pub conclusion: Option<String>,
    pub runner_id: Option<i64>,
    pub runner_name: Option<String>,
    /// When the job was queued (RFC 3339).
    pub created_at: String,
}

/// Which hook a delivery attempt went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HookKey {
    /// A repository or organization hook made through the REST API.
    Hook(i64),
    /// The GitHub App's hook ([`FakeGitHub::set_app_hook`]).
    App,
    /// The plain target of [`FakeGitHub::set_webhook_target`] (no hook
    /// behind it, so its deliveries cannot be listed).
    Target,
}

/// One webhook delivery attempt, as the hook deliveries API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    pub id: i64,
    /// Shared by every attempt (and every hook) of one event.
    pub guid: String,
    pub hook: HookKey,
    pub delivered_at: String,
    pub redelivery: bool,
    /// What the receiver answered; 0 when it could not be reached.
    pub status_code: u16,
    /// How long the receiver took to answer (`duration` in the listing).
    pub duration_ms: u64,
    pub event: String,
    pub action: String,
    pub job_id: i64,
    #[serde(skip)]
    url: String,
    #[serde(skip)]
    secret: String,
    #[serde(skip)]
    target_type: &'static str,
    #[serde(skip)]
    body: Vec<u8>,
}

/// A webhook FakeGitHub sent, and what Hangar answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub action: String,
    pub job_id: i64,
    /// HTTP status of the answer; 0 when the request failed.
    pub status: u16,
}

/// What happens to one webhook delivery (see
/// [`FakeGitHub::set_delivery_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFate {
    /// Sent now.
    Deliver,
    /// Attempted and failed: the receiver gets nothing, and the deliveries
    /// list shows a failed attempt (as when hangard is down or unreachable).
    Lose,
    /// Sent twice, one right after the other (same delivery guid).
    Duplicate,
    /// Kept back until [`FakeGitHub::release_held`]: late, and out of order
    /// with whatever was sent meanwhile.
    Hold,
    /// Sent after this delay, without holding up anything else.
    Delay(Duration),
}

/// Routes served beside FakeGitHub's own on its host (the fake Actions
/// service's `POST /actions/runner-registration`): answers `Some` for a
/// request it takes, before FakeGitHub checks the `Bearer` token.
pub type Extension =
    Arc<dyn Fn(&FakeGitHub, &Method, &str, &HeaderMap, &[u8]) -> Option<Response> + Send + Sync>;

/// Decides the fate of each delivery from its action and job id.
pub type DeliveryPlan = Arc<dyn Fn(&str, i64) -> DeliveryFate + Send + Sync>;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and a GitHub-style error body.
    Status(u16),
    /// 429 with `retry-after`, and the primary limit spent
    /// (`x-ratelimit-remaining: 0`, `x-ratelimit-reset` when it refills).
    TooManyRequests { retry_after_secs: u64 },
    /// 403 "secondary rate limit" (with `retry-after` when given).
    SecondaryLimit { retry_after_secs: Option<u64> },
    /// 422 as GitHub answers deleting a runner that is running a job.
    Busy,
    /// Answer normally, after this delay.
    Latency(Duration),
}

#[derive(Debug, Clone)]
struct Fault {
    method: Option<Method>,
    path_contains: String,
    remaining: u32,
    kind: FaultKind,
}

struct State0 {
    base_url: String,
    webhook: Option<(String, String)>,
    job_duration: Duration,
    next_runner_id: i64,
    next_job_id: i64,
    runners: BTreeMap<i64, FakeRunner>,
    jobs: BTreeMap<i64, FakeJob>,
    groups: HashMap<String, Vec<(i64, String)>>,
    faults: Vec<Fault>,
    rate_limit: Option<(u64, u64, u64)>,
    calls: HashMap<String, u64>,
    deleted_runners: Vec<i64>,
    deliveries: Vec<Delivery>,
    installation_tokens: u64,
    app_id: Option<i64>,
    token: Option<String>,
    downloads: Value,
    next_hook_id: i64,
    hooks: BTreeMap<i64, FakeHook>,
    faults_fired: u64,
    delivery_plan: Option<DeliveryPlan>,
    held: Vec<DeliveryAttempt>,
    app_hook: Option<(String, String)>,
    next_delivery_id: i64,
    attempts: Vec<DeliveryAttempt>,
    /// Registration tokens issued, with the scope (`repos/o/r`, `orgs/o`,
    /// `enterprises/e`) each was issued for.
    registration_tokens: HashMap<String, String>,
    extension: Option<Extension>,
}

impl std::fmt::Debug for State0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHubState")
            .field("base_url", &self.base_url)
            .field("runners", &self.runners.len())
            .field("jobs", &self.jobs.len())
            .field("held", &self.held.len())
            .field("attempts", &self.attempts.len())
            .finish_non_exhaustive()
    }
}

/// A webhook made through `POST /repos/{o}/{r}/hooks` or `/orgs/{o}/hooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeHook {
    pub id: i64,
    /// `repos/o/r` or `orgs/o`.
    pub scope: String,
    pub url: String,
    pub secret: Option<String>,
    pub content_type: String,
    pub insecure_ssl: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created_at: String,
}

/// A running FakeGitHub. Cloning shares the same server.
#[derive(Debug, Clone)]
pub struct FakeGitHub {
    url: String,
    state: Arc<Mutex<State0>>,
    changed: Arc<Notify>,
    client: reqwest::Client,
}

#[derive(Clone)]
struct Ctx {
    gh: FakeGitHub,
}

fn err(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

fn err_doc(status: StatusCode, message: &str, documentation_url: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "documentation_url": documentation_url})),
    )
        .into_response()
}

fn labels_fit(job: &[String], runner: &[String]) -> bool {
    job.iter()
        .all(|j| runner.iter().any(|r| r.eq_ignore_ascii_case(j)))
}

impl FakeGitHub {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("http://{addr}");
        let state = State0 {
            base_url: url.clone(),
            webhook: None,
            job_duration: Duration::from_millis(100),
            next_runner_id: 1,
            next_job_id: 30_000_000_000,
            runners: BTreeMap::new(),
            jobs: BTreeMap::new(),
            groups: HashMap::new(),
            faults: Vec::new(),
            rate_limit: None,
            calls: HashMap::new(),
            deleted_runners: Vec::new(),
            deliveries: Vec::new(),
            installation_tokens: 0,
            app_id: None,
            token: None,
            next_hook_id: 400_000_001,
            hooks: BTreeMap::new(),
            faults_fired: 0,
            delivery_plan: None,
            held: Vec::new(),
            app_hook: None,
            next_delivery_id: 90_000_000_001,
            attempts: Vec::new(),
            registration_tokens: HashMap::new(),
            extension: None,
            downloads: json!([
                {"os": "linux", "architecture": "x64", "download_url": format!("{url}/_fake/downloads/actions-runner-linux-x64.tar.gz"),
                 "filename": "actions-runner-linux-x64.tar.gz", "sha256_checksum": "0".repeat(64)},
                {"os": "linux", "architecture": "arm64", "download_url": format!("{url}/_fake/downloads/actions-runner-linux-arm64.tar.gz"),
                 "filename": "actions-runner-linux-arm64.tar.gz", "sha256_checksum": "1".repeat(64)}
            ]),
        };
        let gh = FakeGitHub {
            url,
            state: Arc::new(Mutex::new(state)),
            changed: Arc::new(Notify::new()),
            // GitHub gives a receiver 10 seconds to answer a delivery.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        let app = Router::new()
            .fallback(handle)
            .with_state(Ctx { gh: gh.clone() });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        gh
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State0> {
        self.state.lock().expect("fake github lock")
    }

    /// The scope a registration token was issued for, if FakeGitHub
    /// issued it.
    pub fn registration_token_scope(&self, token: &str) -> Option<String> {
        self.st().registration_tokens.get(token).cloned()
    }

    /// Serves extra routes on this host (see [`Extension`]).
    pub fn set_extension(&self, ext: Extension) {
        self.st().extension = Some(ext);
    }

    /// Where (and with which secret) to send webhooks.
    pub fn set_webhook_target(&self, url: impl Into<String>, secret: impl Into<String>) {
        self.st().webhook = Some((url.into(), secret.into()));
    }

    /// The GitHub App's own webhook: every job's events are also delivered
    /// there (target type `integration`), signed with `secret`.
    pub fn set_app_hook(&self, url: impl Into<String>, secret: impl Into<String>) {
        self.st().app_hook = Some((url.into(), secret.into()));
    }

    /// Every delivery attempt, oldest first.
    pub fn delivery_attempts(&self) -> Vec<DeliveryAttempt> {
        self.st().attempts.clone()
    }

    /// How long a job runs once a runner took it.
    pub fn set_job_duration(&self, d: Duration) {
        self.st().job_duration = d;
    }

    /// Requires `Authorization: Bearer|token <token>` on API calls.
    pub fn require_token(&self, token: impl Into<String>) {
        self.st().token = Some(token.into());
    }

    /// Accepts App JWTs whose `iss` is `app_id` for installation tokens.
    pub fn set_app(&self, app_id: i64) {
        self.st().app_id = Some(app_id);
    }

    /// Adds a runner group to `scope` (`orgs/acme`, `enterprises/big`).
    pub fn add_runner_group(&self, scope: &str, id: i64, name: &str) {
        self.st()
            .groups
            .entry(scope.to_owned())
            .or_default()
            .push((id, name.to_owned()));
    }

    /// Sends these headers on every answer: remaining, limit, reset (unix s).
    pub fn set_rate_limit(&self, remaining: u64, limit: u64, reset: u64) {
        self.st().rate_limit = Some((remaining, limit, reset));
    }

    pub fn clear_rate_limit(&self) {
        self.st().rate_limit = None;
    }

    /// The next `times` requests whose path contains `path_contains` (and
    /// with `method`, when given) get `kind`.
    pub fn inject(&self, method: Option<Method>, path_contains: &str, times: u32, kind: FaultKind) {
        self.st().faults.push(Fault {
            method,
            path_contains: path_contains.to_owned(),
            remaining: times,
            kind,
        });
    }

    /// Injected faults that were answered so far.
    pub fn faults_fired(&self) -> u64 {
        self.st().faults_fired
    }

    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// Registers a runner directly (e.g. a stray one), like `config.sh`.
    pub fn add_runner(
        &self,
        scope: &str,
        name: &str,
        labels: &[&str],
        online: bool,
        busy: bool,
    ) -> i64 {
        let mut s = self.st();
        let id = s.next_runner_id;
        s.next_runner_id += 1;
        s.runners.insert(
            id,
            FakeRunner {
                id,
                name: name.to_owned(),
                scope: scope.to_owned(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                group_id: 1,
                status: if online { "online" } else { "offline" }.into(),
                busy,
                job: None,
            },
        );
        id
    }

    /// A runner starts or stops running a job (as GitHub reports it in
    /// `busy`; deleting a busy runner answers 422).
    pub fn set_busy(&self, name: &str, busy: bool) {
        for r in self.st().runners.values_mut().filter(|r| r.name == name) {
            r.busy = busy;
        }
    }

    /// The webhooks made through the REST API.
    pub fn hooks(&self) -> Vec<FakeHook> {
        self.st().hooks.values().cloned().collect()
    }

    /// A hook in GitHub's REST shape (`repos/get-webhook`, `orgs/get-webhook`).
    fn hook_json(base_url: &str, h: &FakeHook) -> Value {
        let api = format!("{base_url}/{}/hooks/{}", h.scope, h.id);
        let mut v = json!({
            "type": if h.scope.starts_with("orgs/") { "Organization" } else { "Repository" },
            "id": h.id,
            "name": "web",
            "active": h.active,
            "events": h.events,
            "config": {
                "content_type": h.content_type,
                "insecure_ssl": h.insecure_ssl,
                "url": h.url,
            },
            "updated_at": h.created_at,
            "created_at": h.created_at,
            "url": api,
            "ping_url": format!("{api}/pings"),
            "deliveries_url": format!("{api}/deliveries"),
        });
        if h.secret.is_some() {
            v["config"]["secret"] = json!("********");
        }
        if h.scope.starts_with("repos/") {
            v["test_url"] = json!(format!("{api}/test"));
            v["last_response"] = json!({"code": null, "status": "unused", "message": null});
        }
        v
    }

    pub fn runners(&self) -> Vec<FakeRunner> {
        self.st().runners.values().cloned().collect()
    }

    pub fn jobs(&self) -> Vec<FakeJob> {
        self.st().jobs.values().cloned().collect()
    }

    pub fn job(&self, id: i64) -> Option<FakeJob> {
        self.st().jobs.get(&id).cloned()
    }

    /// Runner ids removed through the API.
    pub fn deleted_runners(&self) -> Vec<i64> {
        self.st().deleted_runners.clone()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.st().deliveries.clone()
    }

    /// Requests seen per route name (e.g. `generate-jitconfig`,
    /// `list-runners`, `delete-runner`, `registration-token`,
    /// `runner-groups`, `downloads`, `get-job`, `access-tokens`).
    pub fn calls(&self, route: &str) -> u64 {
        self.st().calls.get(route).copied().unwrap_or(0)
    }

    /// Every REST API request seen (the control routes of simulated runners
    /// and tests not counted).
    pub fn calls_total(&self) -> u64 {
        self.st()
            .calls
            .iter()
            .filter(|(route, _)| route.as_str() != "control")
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests seen per route name.
    pub fn calls_by_route(&self) -> BTreeMap<String, u64> {
        self.st()
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Decides, for every webhook from now on, whether it is sent, lost,
    /// duplicated, held back or delayed (a fault knob; seeded randomness
    /// lives in the caller's closure).
    pub fn set_delivery_plan(
        &self,
        plan: impl Fn(&str, i64) -> DeliveryFate + Send + Sync + 'static,
    ) {
        self.st().delivery_plan = Some(Arc::new(plan));
    }

    /// Every delivery is sent again as it happens.
    pub fn clear_delivery_plan(&self) {
        self.st().delivery_plan = None;
    }

    /// Deliveries held back so far.
    pub fn held_deliveries(&self) -> usize {
        self.st().held.len()
    }

    /// Sends every held delivery, newest first when `newest_first` (so the
    /// receiver sees them out of order); returns how many were sent.
    pub async fn release_held(&self, newest_first: bool) -> usize {
        let mut held = std::mem::take(&mut self.st().held);
        if newest_first {
            held.reverse();
        }
        let n = held.len();
        for h in held {
            self.attempt(h).await;
        }
        n
    }

    pub fn installation_tokens_issued(&self) -> u64 {
        self.st().installation_tokens
    }

    /// Waits until `pred` holds, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&FakeGitHub) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() && !pred(self) {
                let jobs: Vec<_> = self.jobs().into_iter().map(|j| (j.id, j.status)).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; jobs {jobs:?}; runners {:?}",
                    self.runners()
                );
            }
        }
    }

    /// Queues a job in `repo` (`owner/name`) and sends its `queued` webhook.
    /// Returns once the delivery was answered.
    pub async fn queue_job(&self, repo: &str, labels: &[&str]) -> i64 {
        let id = {
            let mut s = self.st();
            let id = s.next_job_id;
            s.next_job_id += 1;
            s.jobs.insert(
                id,
                FakeJob {
                    id,
                    run_id: id / 10,
                    run_attempt: 1,
                    repo: repo.to_owned(),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    status: "queued".into(),
                    conclusion: None,
                    runner_id: None,
                    runner_name: None,
                    created_at: chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                },
            );
            id
        };
        self.deliver(id, "queued").await;
        self.assign();
        id
    }

    /// Cancels a queued job (GitHub then sends `completed`/`cancelled`).
    pub async fn cancel_job(&self, id: i64) {
        let known = {
            let mut s = self.st();
            match s.jobs.get_mut(&id) {
                Some(j) if j.status == "queued" => {
                    j.status = "completed".into();
                    j.conclusion = Some("cancelled".into());
                    true
                }
                _ => false,
            }
        };
        if known {
            self.deliver(id, "completed").await;
        }
        self.changed.notify_waiters();
    }

    /// Re-sends the last delivery of a job (a redelivery).
    pub async fn redeliver(&self, id: i64, action: &str) {
        self.deliver(id, action).await;
    }

    /// The signed delivery body of `action` for job `id`.
    pub fn webhook_body(&self, id: i64, action: &str) -> Option<Vec<u8>> {
        let job = self.job(id)?;
        let mut v: Value = serde_json::from_str(QUEUED_TEMPLATE).expect("fixture parses");
        let (owner, name) = job.repo.split_once('/').unwrap_or(("octo", &job.repo));
        v["action"] = json!(action);
        let wj = &mut v["workflow_job"];
        wj["id"] = json!(job.id);
        wj["run_id"] = json!(job.run_id);
        wj["run_attempt"] = json!(job.run_attempt);
        wj["labels"] = json!(job.labels);
        wj["status"] = json!(match action {
            "queued" => "queued",
            "in_progress" => "in_progress",
            "completed" => "completed",
            other => other,
        });
        wj["conclusion"] = if action == "completed" {
            json!(job.conclusion.clone().unwrap_or_else(|| "success".into()))
        } else {
            Value::Null
        };
        let (rid, rname) = if action == "queued" {
            (Value::Null, Value::Null)
        } else {
            (json!(job.runner_id), json!(job.runner_name))
        };
        wj["runner_id"] = rid;
        wj["runner_name"] = rname;
        v["repository"]["name"] = json!(name);
        v["repository"]["full_name"] = json!(job.repo);
        v["repository"]["owner"]["login"] = json!(owner);
        Some(serde_json::to_vec(&v).expect("serialises"))
    }

    /// Delivers one event to every hook that subscribes to it: the job's
    /// repository and organization hooks, the App's hook, and the plain
    /// target (unless a hook already has its URL). One guid for all, as
    /// GitHub does; one recorded attempt per hook.
    async fn deliver(&self, id: i64, action: &str) {
        let Some(body) = self.webhook_body(id, action) else {
            return;
        };
        let Some(repo) = self.job(id).map(|j| j.repo) else {
            return;
        };
        let owner = repo.split('/').next().unwrap_or("").to_owned();
        let targets: Vec<(HookKey, String, String, &'static str)> = {
            let s = self.st();
            let mut t: Vec<(HookKey, String, String, &'static str)> = s
                .hooks
                .values()
                .filter(|h| {
                    h.active
                        && (h.scope == format!("repos/{repo}")
                            || h.scope == format!("orgs/{owner}"))
                        && h.events.iter().any(|e| e == "workflow_job" || e == "*")
                })
                .map(|h| {
                    let kind = if h.scope.starts_with("orgs/") {
                        "organization"
                    } else {
                        "repository"
                    };
                    (
                        HookKey::Hook(h.id),
                        h.url.clone(),
                        h.secret.clone().unwrap_or_default(),
                        kind,
                    )
                })
                .collect();
            if let Some((url, secret)) = &s.app_hook {
                t.push((HookKey::App, url.clone(), secret.clone(), "integration"));
            }
            if let Some((url, secret)) = &s.webhook
                && !t.iter().any(|(_, u, _, _)| u == url)
            {
                t.push((HookKey::Target, url.clone(), secret.clone(), "repository"));
            }
            t
        };
        let guid = uuid::Uuid::new_v4().to_string();
        let plan = self.st().delivery_plan.clone();
        let fate = plan.map_or(DeliveryFate::Deliver, |p| p(action, id));
        for (hook, url, secret, target_type) in targets {
            let attempt = DeliveryAttempt {
                id: 0,
                guid: guid.clone(),
                hook,
                delivered_at: String::new(),
                redelivery: false,
                status_code: 0,
                duration_ms: 0,
                event: "workflow_job".into(),
                action: action.to_owned(),
                job_id: id,
                url,
                secret,
                target_type,
                body: body.clone(),
            };
            match fate {
                DeliveryFate::Deliver => {
                    self.attempt(attempt).await;
                }
                DeliveryFate::Duplicate => {
                    self.attempt(attempt.clone()).await;
                    self.attempt(attempt).await;
                }
                // Recorded as GitHub records a receiver it could not reach.
                DeliveryFate::Lose => self.record(attempt, 0),
                DeliveryFate::Hold => self.st().held.push(attempt),
                DeliveryFate::Delay(d) => {
                    let gh = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        gh.attempt(attempt).await;
                    });
                }
            }
        }
    }

    /// Sends one attempt and records it. Only the plain target is tried
    /// again on a connection failure (its tests restart the receiver);
    /// a hook's attempt is made once, as GitHub makes it, and a failure is
    /// left for a redelivery. Returns the answer's status (0: none).
    async fn attempt(&self, mut a: DeliveryAttempt) -> u16 {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(a.secret.as_bytes()).expect("any key");
        mac.update(&a.body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let tries = if a.hook == HookKey::Target { 3 } else { 1 };
        let hook_id = match a.hook {
            HookKey::Hook(id) => id.to_string(),
            HookKey::App => "1".into(),
            HookKey::Target => "0".into(),
        };
        let mut status = 0u16;
        let started = std::time::Instant::now();
        for attempt in 0..tries {
            let r = self
                .client
                .post(&a.url)
                .header("content-type", "application/json")
                .header("x-github-event", "workflow_job")
                .header("x-github-delivery", &a.guid)
                .header("x-github-hook-id", &hook_id)
                .header("x-github-hook-installation-target-type", a.target_type)
                .header("x-hub-signature-256", &sig)
                .body(a.body.clone())
                .send()
                .await;
            match r {
                Ok(resp) => {
                    status = resp.status().as_u16();
                    break;
                }
                // The receiver may be restarting.
                Err(_) if attempt + 1 < tries => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(_) => {}
            }
        }
        a.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.record(a, status);
        status
    }

    /// Appends one attempt, answered with `status`, to the deliveries
    /// lists.
    fn record(&self, mut a: DeliveryAttempt, status: u16) {
        {
            let mut s = self.st();
            a.id = s.next_delivery_id;
            s.next_delivery_id += 1;
            a.delivered_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            a.status_code = status;
            s.deliveries.push(Delivery {
                action: a.action.clone(),
                job_id: a.job_id,
                status,
            });
            s.attempts.push(a);
        }
        self.changed.notify_waiters();
    }

    /// A delivery attempt in the REST shape of `repos/list-webhook-deliveries`.
    fn attempt_json(a: &DeliveryAttempt, repository_id: i64) -> Value {
        let status = match a.status_code {
            0 => "failed to connect to host".to_owned(),
            200..=299 => "OK".to_owned(),
            c => format!("Invalid HTTP Response: {c}"),
        };
        json!({
            "id": a.id,
            "guid": a.guid,
            "delivered_at": a.delivered_at,
            "redelivery": a.redelivery,
            "duration": a.duration_ms as f64 / 1000.0,
            "status": status,
            "status_code": a.status_code,
            "event": a.event,
            "action": a.action,
            "installation_id": if a.hook == HookKey::App { json!(1) } else { Value::Null },
            "repository_id": repository_id,
            "throttled_at": Value::Null,
        })
    }

    /// One page of a hook's deliveries, newest first; the cursor names the
    /// first delivery of the page (`v1_<id>`).
    fn list_attempts(&self, hook: HookKey, query: &str, link_base: &str) -> Response {
        let per_page = query_num(query, "per_page").unwrap_or(30).clamp(1, 100);
        let cursor = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "cursor")
            .map(|(_, v)| v.to_owned());
        let from = match cursor.as_deref() {
            None => i64::MAX,
            Some(c) => match c.strip_prefix("v1_").and_then(|n| n.parse::<i64>().ok()) {
                Some(n) => n,
                None => return err(StatusCode::BAD_REQUEST, "invalid cursor"),
            },
        };
        let status_filter = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "status")
            .map(|(_, v)| v.to_owned());
        let s = self.st();
        let mut all: Vec<&DeliveryAttempt> = s
            .attempts
            .iter()
            .filter(|a| a.hook == hook && a.id <= from)
            .filter(|a| match status_filter.as_deref() {
                Some("success") => (200..400).contains(&a.status_code),
                Some("failure") => (400..600).contains(&a.status_code),
                _ => true,
            })
            .collect();
        all.sort_by_key(|a| std::cmp::Reverse(a.id));
        let page: Vec<Value> = all
            .iter()
            .take(per_page)
            .map(|a| FakeGitHub::attempt_json(a, 1))
            .collect();
        let mut resp = axum::Json(Value::Array(page)).into_response();
        if let Some(next) = all.get(per_page) {
            let link = format!(
                "<{}{link_base}?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                s.base_url, next.id
            );
            resp.headers_mut()
                .insert("link", link.parse().expect("header"));
        }
        resp
    }

    /// Redelivers attempt `id` of `hook`: answers 202 at once and makes the
    /// new attempt (same guid, `redelivery: true`) in the background.
    fn redeliver_attempt(&self, hook: HookKey, id: &str) -> Response {
        let Ok(id) = id.parse::<i64>() else {
            return err(StatusCode::NOT_FOUND, "Not Found");
        };
        let found = self
            .st()
            .attempts
            .iter()
            .find(|a| a.id == id && a.hook == hook)
            .cloned();
        let Some(mut a) = found else {
            return err(StatusCode::NOT_FOUND, "Not Found");
        };
        a.redelivery = true;
        let gh = self.clone();
        tokio::spawn(async move { gh.attempt(a).await });
        (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
    }

    /// Workflow runs of `repo` (`owner/name`), newest first: a run is
    /// `completed` when all its jobs are, `in_progress` when one has started,
    /// else `queued`.
    fn runs(&self, repo: &str) -> Vec<(i64, String, String)> {
        let s = self.st();
        let mut runs: BTreeMap<i64, (Vec<&FakeJob>, String)> = BTreeMap::new();
        for j in s.jobs.values().filter(|j| j.repo == repo) {
            let e = runs
                .entry(j.run_id)
                .or_insert_with(|| (Vec::new(), j.created_at.clone()));
            e.0.push(j);
        }
        runs.into_iter()
            .rev()
            .map(|(id, (jobs, created))| {
                let status = if jobs.iter().all(|j| j.status == "completed") {
                    "completed"
                } else if jobs.iter().any(|j| j.status != "queued") {
                    "in_progress"
                } else {
                    "queued"
                };
                (id, status.to_owned(), created)
            })
            .collect()
    }

    fn run_json(&self, repo: &str, id: i64, status: &str, created: &str) -> Value {
        let base = &self.url;
        let (owner, name) = repo.split_once('/').unwrap_or(("octo", repo));
        let api = format!("{base}/repos/{repo}/actions/runs/{id}");
        let repository = json!({"id": 1, "node_id": "R_1", "name": name, "full_name": repo,
            "owner": {"login": owner, "id": 1}, "private": false});
        json!({
            "id": id, "node_id": format!("WFR_{id}"), "name": "CI", "head_branch": "main",
            "head_sha": "0".repeat(40), "path": ".github/workflows/ci.yml", "display_title": "CI",
            "run_number": id % 100_000, "run_attempt": 1, "event": "push", "status": status,
            "conclusion": if status == "completed" { json!("success") } else { Value::Null },
            "workflow_id": 1, "url": api, "html_url": format!("https://github.com/{repo}/actions/runs/{id}"),
            "created_at": created, "updated_at": created, "run_started_at": created,
            "pull_requests": [], "head_commit": Value::Null,
            "head_repository": repository, "repository": repository,
            "jobs_url": format!("{api}/jobs"), "logs_url": format!("{api}/logs"),
            "check_suite_url": format!("{base}/repos/{repo}/check-suites/{id}"),
            "cancel_url": format!("{api}/cancel"), "rerun_url": format!("{api}/rerun"),
            "artifacts_url": format!("{api}/artifacts"),
            "workflow_url": format!("{base}/repos/{repo}/actions/workflows/1"),
        })
    }

    /// A job in the REST shape of `actions/get-job-for-workflow-run`.
    fn job_json(&self, j: &FakeJob) -> Value {
        let base = &self.url;
        let repo = &j.repo;
        json!({
            "id": j.id, "run_id": j.run_id, "run_attempt": j.run_attempt,
            "run_url": format!("{base}/repos/{repo}/actions/runs/{}", j.run_id),
            "node_id": format!("CR_{}", j.id), "head_sha": "0".repeat(40), "head_branch": "main",
            "url": format!("{base}/repos/{repo}/actions/jobs/{}", j.id),
            "html_url": format!("https://github.com/{repo}/actions/runs/{}/job/{}", j.run_id, j.id),
            "status": j.status, "conclusion": j.conclusion,
            "created_at": j.created_at,
            "started_at": if j.status == "queued" { Value::Null } else { json!(j.created_at) },
            "completed_at": if j.status == "completed" { json!(j.created_at) } else { Value::Null },
            "name": "build", "workflow_name": "CI", "steps": [],
            "check_run_url": format!("{base}/repos/{repo}/check-runs/{}", j.id),
            "labels": j.labels, "runner_id": j.runner_id, "runner_name": j.runner_name,
            "runner_group_id": j.runner_id.map(|_| 1), "runner_group_name": j.runner_id.map(|_| "Default"),
        })
    }

    /// Hands queued jobs to idle online runners whose labels fit.
    fn assign(&self) {
        let mut started = Vec::new();
        {
            let mut s = self.st();
            let queued: Vec<i64> = s
                .jobs
                .values()
                .filter(|j| j.status == "queued")
                .map(|j| j.id)
                .collect();
            for jid in queued {
                let job_labels = s.jobs[&jid].labels.clone();
                let repo = s.jobs[&jid].repo.clone();
                let owner = repo.split('/').next().unwrap_or("").to_owned();
                let runner = s
                    .runners
                    .values()
                    .find(|r| {
                        r.status == "online"
                            && !r.busy
                            && (r.scope == format!("repos/{repo}")
                                || r.scope == format!("orgs/{owner}")
                                || r.scope.starts_with("enterprises/"))
                            && labels_fit(&job_labels, &r.labels)
                    })
                    .map(|r| (r.id, r.name.clone()));
                if let Some((rid, rname)) = runner {
                    let r = s.runners.get_mut(&rid).expect("runner");
                    r.busy = true;
                    r.job = Some(jid);
                    let j = s.jobs.get_mut(&jid).expect("job");
                    j.status = "in_progress".into();
                    j.runner_id = Some(rid);
                    j.runner_name = Some(rname);
                    started.push((jid, rid));
                }
            }
        }
        let duration = self.st().job_duration;
        for (jid, rid) in started {
            let gh = self.clone();
            tokio::spawn(async move {
                gh.deliver(jid, "in_progress").await;
                tokio::time::sleep(duration).await;
                {
                    let mut s = gh.st();
                    if let Some(j) = s.jobs.get_mut(&jid) {
                        j.status = "completed".into();
                        j.conclusion = Some("success".into());
                    }
                    // Ephemeral runners leave after their one job.
                    s.runners.remove(&rid);
                }
                gh.deliver(jid, "completed").await;
                gh.assign();
            });
        }
        self.changed.notify_waiters();
    }

    fn runner_json(r: &FakeRunner) -> Value {
        json!({
            "id": r.id,
            "name": r.name,
            "os": "Linux",
            "status": r.status,
            "busy": r.busy,
            "runner_group_id": r.group_id,
            "labels": r.labels.iter().enumerate().map(|(i, l)| json!({"id": i + 1, "name": l, "type": "custom"})).collect::<Vec<_>>(),
        })
    }
}

/// Splits `/repos/o/r/actions/...`, `/orgs/o/actions/...`,
/// `/enterprises/e/actions/...` into (scope, rest).
fn split_scope(path: &str) -> Option<(String, Vec<&str>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", o, r, rest @ ..] => Some((format!("repos/{o}/{r}"), rest.to_vec())),
        ["orgs", o, rest @ ..] => Some((format!("orgs/{o}"), rest.to_vec())),
        ["enterprises", e, rest @ ..] => Some((format!("enterprises/{e}"), rest.to_vec())),
        _ => None,
    }
}

fn route_name(method: &Method, path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    if p.ends_with("/generate-jitconfig") {
        "generate-jitconfig"
    } else if p.ends_with("/actions/runner-registration") {
        "runner-registration"
    } else if p.ends_with("/registration-token") {
        "registration-token"
    } else if p.ends_with("/runners/downloads") {
        "downloads"
    } else if p.ends_with("/runner-groups") {
        "runner-groups"
    } else if p.contains("/actions/jobs/") {
        "get-job"
    } else if p.ends_with("/attempts") && p.contains("/deliveries/") {
        "redeliver"
    } else if p.ends_with("/deliveries") {
        "hook-deliveries"
    } else if p.ends_with("/actions/runs") {
        "list-runs"
    } else if p.contains("/actions/runs/") && p.ends_with("/jobs") {
        "run-jobs"
    } else if p.ends_with("/access_tokens") {
        "access-tokens"
    } else if p.ends_with("/actions/runners") {
        "list-runners"
    } else if p.contains("/actions/runners/") && *method == Method::DELETE {
        "delete-runner"
    } else if p.ends_with("/hooks") || p.contains("/hooks/") {
        "hooks"
    } else if p.starts_with("/_fake/") {
        "control"
    } else {
        "other"
    }
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gh = ctx.gh;
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let route = route_name(&method, &path);
    // Faults and counters.
    let (fault, rate) = {
        let mut s = gh.st();
        *s.calls.entry(route.to_owned()).or_default() += 1;
        let mut hit = None;
        if route != "control" {
            for f in s.faults.iter_mut() {
                if f.remaining > 0
                    && path.contains(&f.path_contains)
                    && f.method.as_ref().is_none_or(|m| *m == method)
                {
                    f.remaining -= 1;
                    hit = Some(f.kind.clone());
                    break;
                }
            }
            if hit.is_some() {
                s.faults_fired += 1;
            }
        }
        (hit, s.rate_limit)
    };
    let mut resp = match fault {
        Some(FaultKind::Latency(d)) => {
            tokio::time::sleep(d).await;
            serve(&gh, &method, &path, &query, &headers, &body)
        }
        Some(FaultKind::Status(code)) => err(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected failure",
        ),
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            // As GitHub answers a spent primary limit: the limit headers
            // say so and when it refills.
            let mut r = err_doc(
                StatusCode::TOO_MANY_REQUESTS,
                "API rate limit exceeded for user ID 1.",
                "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits",
            );
            let reset = chrono::Utc::now().timestamp() + retry_after_secs as i64;
            let h = r.headers_mut();
            h.insert(
                "retry-after",
                retry_after_secs.to_string().parse().expect("header"),
            );
            h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
            h.insert("x-ratelimit-limit", "5000".parse().expect("header"));
            h.insert("x-ratelimit-used", "5000".parse().expect("header"));
            h.insert("x-ratelimit-resource", "core".parse().expect("header"));
            h.insert(
                "x-ratelimit-reset",
                reset.to_string().parse().expect("header"),
            );
            r
        }
        Some(FaultKind::Busy) => err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Bad request - Runner is still running a job",
        ),
        Some(FaultKind::SecondaryLimit { retry_after_secs }) => {
            let mut r = err_doc(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            );
            if let Some(s) = retry_after_secs {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("header"));
            }
            r
        }
        None => serve(&gh, &method, &path, &query, &headers, &body),
    };
    if let Some((remaining, limit, reset)) = rate {
        let h = resp.headers_mut();
        h.insert(
            "x-ratelimit-remaining",
            remaining.to_string().parse().expect("header"),
        );
        h.insert(
            "x-ratelimit-limit",
            limit.to_string().parse().expect("header"),
        );
        h.insert(
            "x-ratelimit-reset",
            reset.to_string().parse().expect("header"),
        );
    }
    gh.changed.notify_waiters();
    resp
}

fn authorized(gh: &FakeGitHub, headers: &HeaderMap, path: &str) -> bool {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    if token.is_empty() {
        return false;
    }
    // App installation tokens and the App's own routes take the App's
    // JWT, checked where they are served.
    if path.ends_with("/access_tokens") || path.starts_with("/app/") {
        return true;
    }
    match &gh.st().token {
        Some(t) => token == t || token.starts_with("ghs_fake_"),
        None => true,
    }
}

/// The `iss` of an App JWT in `Authorization: Bearer`.
fn jwt_iss(headers: &HeaderMap) -> Option<i64> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let jwt = auth.strip_prefix("Bearer ")?;
    let payload = jwt.split('.').nth(1)?;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v = serde_json::from_slice::<Value>(&bytes).ok()?;
    v["iss"]
        .as_i64()
        .or_else(|| v["iss"].as_str().and_then(|s| s.parse().ok()))
}

/// The request carries the configured App's JWT (not an installation
/// token or a PAT): what `/app/...` routes require.
fn is_app_jwt(gh: &FakeGitHub, headers: &HeaderMap) -> bool {
    let app = gh.st().app_id;
    app.is_some() && jwt_iss(headers) == app
}

fn query_num(query: &str, key: &str) -> Option<usize> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn serve(
    gh: &FakeGitHub,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(rest) = path.strip_prefix("/_fake/") {
        return control(gh, method, rest, body);
    }
    let ext = gh.st().extension.clone();
    if let Some(r) = ext.and_then(|ext| ext(gh, method, path, headers, body)) {
        return r;
    }
    if !authorized(gh, headers, path) {
        return err(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    // App installation tokens.
    if let ["app", "installations", id, "access_tokens"] = path
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let jwt = auth.trim_start_matches("Bearer ");
        let iss = jwt
            .split('.')
            .nth(1)
            .and_then(|p| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| {
                v["iss"]
                    .as_i64()
                    .or_else(|| v["iss"].as_str().and_then(|s| s.parse().ok()))
            });
        let mut s = gh.st();
        if s.app_id.is_none() || iss != s.app_id {
            return err(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        }
        s.installation_tokens += 1;
        let expires = chrono::Utc::now() + chrono::Duration::hours(1);
        return (
            StatusCode::CREATED,
            axum::Json(json!({"token": format!("ghs_fake_{id}_{}", s.installation_tokens), "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "permissions": {"administration": "write", "organization_self_hosted_runners": "write"}, "repository_selection": "all"})),
        )
            .into_response();
    }
    if let Some(rest) = path.strip_prefix("/app/hook/deliveries") {
        if !is_app_jwt(gh, headers) {
            return err(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        }
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        return match (method.clone(), parts.as_slice()) {
            (Method::GET, [""]) => gh.list_attempts(HookKey::App, query, "/app/hook/deliveries"),
            (Method::POST, [id, "attempts"]) => gh.redeliver_attempt(HookKey::App, id),
            _ => err(StatusCode::NOT_FOUND, "Not Found"),
        };
    }
    let Some((scope, rest)) = split_scope(path) else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    let json_body = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match (method.clone(), rest.as_slice()) {
        (Method::POST, ["hooks"]) if !scope.starts_with("enterprises/") => {
            let b = json_body();
            let config = &b["config"];
            let Some(url) = config["url"].as_str().filter(|u| !u.is_empty()) else {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: config.url is required",
                );
            };
            if b.get("name").is_some_and(|n| n != "web") {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: name must be \"web\"",
                );
            }
            let insecure_ssl = match &config["insecure_ssl"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => "0".into(),
            };
            let events: Vec<String> = b["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec!["push".into()]);
            let mut s = gh.st();
            if s.hooks.values().any(|h| h.scope == scope && h.url == url) {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: Hook already exists on this repository",
                );
            }
            let id = s.next_hook_id;
            s.next_hook_id += 1;
            let hook = FakeHook {
                id,
                scope: scope.clone(),
                url: url.to_owned(),
                secret: config["secret"].as_str().map(str::to_owned),
                content_type: config["content_type"].as_str().unwrap_or("form").to_owned(),
                insecure_ssl,
                events,
                active: b["active"].as_bool().unwrap_or(true),
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let v = FakeGitHub::hook_json(&s.base_url, &hook);
            s.hooks.insert(id, hook);
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        (Method::GET, ["hooks"]) if !scope.starts_with("enterprises/") => {
            let s = gh.st();
            let list: Vec<Value> = s
                .hooks
                .values()
                .filter(|h| h.scope == scope)
                .map(|h| FakeGitHub::hook_json(&s.base_url, h))
                .collect();
            axum::Json(Value::Array(list)).into_response()
        }
        (Method::GET, ["hooks", id]) if !scope.starts_with("enterprises/") => {
            let s = gh.st();
            match id.parse::<i64>().ok().and_then(|id| s.hooks.get(&id)) {
                Some(h) if h.scope == scope => {
                    axum::Json(FakeGitHub::hook_json(&s.base_url, h)).into_response()
                }
                _ => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::DELETE, ["hooks", id]) if !scope.starts_with("enterprises/") => {
            let mut s = gh.st();
            let id = id.parse::<i64>().unwrap_or(-1);
            match s.hooks.get(&id) {
                Some(h) if h.scope == scope => {
                    s.hooks.remove(&id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::GET, ["hooks", id, "deliveries"]) if !scope.starts_with("enterprises/") => {
            let hook = id
                .parse::<i64>()
                .ok()
                .filter(|id| gh.st().hooks.get(id).is_some_and(|h| h.scope == scope));
            match hook {
                Some(id) => gh.list_attempts(
                    HookKey::Hook(id),
                    query,
                    &format!("/{scope}/hooks/{id}/deliveries"),
                ),
                None => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::POST, ["hooks", id, "deliveries", delivery, "attempts"])
            if !scope.starts_with("enterprises/") =>
        {
            let hook = id
                .parse::<i64>()
                .ok()
                .filter(|id| gh.st().hooks.get(id).is_some_and(|h| h.scope == scope));
            match hook {
                Some(id) => gh.redeliver_attempt(HookKey::Hook(id), delivery),
                None => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::GET, ["actions", "runs"]) if scope.starts_with("repos/") => {
            let repo = scope.trim_start_matches("repos/").to_owned();
            let per_page = query_num(query, "per_page").unwrap_or(30).clamp(1, 100);
            let page = query_num(query, "page").unwrap_or(1).max(1);
            let want = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "status")
                .map(|(_, v)| v.to_owned());
            let all: Vec<(i64, String, String)> = gh
                .runs(&repo)
                .into_iter()
                .filter(|(_, st, _)| want.as_deref().is_none_or(|w| w == st))
                .collect();
            let slice: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(id, st, created)| gh.run_json(&repo, *id, st, created))
                .collect();
            let mut resp = axum::Json(json!({"total_count": all.len(), "workflow_runs": slice}))
                .into_response();
            if page * per_page < all.len() {
                let status_q = want.map(|w| format!("status={w}&")).unwrap_or_default();
                let next = format!(
                    "<{}/{scope}/actions/runs?{status_q}per_page={per_page}&page={}>; rel=\"next\"",
                    gh.url,
                    page + 1
                );
                resp.headers_mut()
                    .insert("link", next.parse().expect("header"));
            }
            resp
        }
        (Method::GET, ["actions", "runs", run, "jobs"]) if scope.starts_with("repos/") => {
            let repo = scope.trim_start_matches("repos/");
            let Ok(run) = run.parse::<i64>() else {
                return err(StatusCode::NOT_FOUND, "Not Found");
            };
            let per_page = query_num(query, "per_page").unwrap_or(30).clamp(1, 100);
            let page = query_num(query, "page").unwrap_or(1).max(1);
            let jobs: Vec<FakeJob> = gh
                .jobs()
                .into_iter()
                .filter(|j| j.repo == repo && j.run_id == run)
                .collect();
            if jobs.is_empty() {
                return err(StatusCode::NOT_FOUND, "Not Found");
            }
            let slice: Vec<Value> = jobs
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|j| gh.job_json(j))
                .collect();
            let mut resp =
                axum::Json(json!({"total_count": jobs.len(), "jobs": slice})).into_response();
            if page * per_page < jobs.len() {
                let next = format!(
                    "<{}/{scope}/actions/runs/{run}/jobs?per_page={per_page}&page={}>; rel=\"next\"",
                    gh.url,
                    page + 1
                );
                resp.headers_mut()
                    .insert("link", next.parse().expect("header"));
            }
            resp
        }
        (Method::POST, ["actions", "runners", "generate-jitconfig"]) => {
            let b = json_body();
            let Some(name) = b["name"].as_str() else {
                return err(StatusCode::UNPROCESSABLE_ENTITY, "name is required");
            };
            let Some(group) = b["runner_group_id"].as_i64() else {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "runner_group_id is required",
                );
            };
            let labels: Vec<String> = b["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if labels.is_empty() || labels.len() > 100 {
                return err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "labels: between 1 and 100 items",
                );
            }
            let mut s = gh.st();
            if s.runners
                .values()
                .any(|r| r.scope == scope && r.name == name)
            {
                return err(
                    StatusCode::CONFLICT,
                    &format!("Already exists - A runner with the name {name} already exists."),
                );
            }
            let id = s.next_runner_id;
            s.next_runner_id += 1;
            let runner = FakeRunner {
                id,
                name: name.to_owned(),
                scope: scope.clone(),
                labels,
                group_id: group,
                status: "offline".into(),
                busy: false,
                job: None,
            };
            let encoded = FakeJitConfig {
                fake_github_url: s.base_url.clone(),
                runner_id: id,
                runner_name: name.to_owned(),
            }
            .encode();
            let rj = FakeGitHub::runner_json(&runner);
            s.runners.insert(id, runner);
            (
                StatusCode::CREATED,
                axum::Json(json!({"runner": rj, "encoded_jit_config": encoded})),
            )
                .into_response()
        }
        (Method::POST, ["actions", "runners", "registration-token"]) => {
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            let token = format!("REGTOKEN{}", uuid::Uuid::new_v4().simple());
            gh.st().registration_tokens.insert(token.clone(), scope);
            (
                StatusCode::CREATED,
                axum::Json(json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})),
            )
                .into_response()
        }
        (Method::GET, ["actions", "runners", "downloads"]) => {
            axum::Json(gh.st().downloads.clone()).into_response()
        }
        (Method::GET, ["actions", "runners"]) => {
            let per_page = query_num(query, "per_page").unwrap_or(30).clamp(1, 100);
            let page = query_num(query, "page").unwrap_or(1).max(1);
            let s = gh.st();
            let all: Vec<&FakeRunner> = s.runners.values().filter(|r| r.scope == scope).collect();
            let slice: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|r| FakeGitHub::runner_json(r))
                .collect();
            let mut resp =
                axum::Json(json!({"total_count": all.len(), "runners": slice})).into_response();
            if page * per_page < all.len() {
                let next = format!(
                    "<{}/{}/actions/runners?per_page={per_page}&page={}>; rel=\"next\"",
                    s.base_url,
                    scope,
                    page + 1
                );
                resp.headers_mut()
                    .insert("link", next.parse().expect("header"));
            }
            resp
        }
        (Method::DELETE, ["actions", "runners", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return err(StatusCode::NOT_FOUND, "Not Found");
            };
            let mut s = gh.st();
            match s.runners.get(&id) {
                Some(r) if r.scope == scope && r.busy => err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Bad request - Runner \"x\" is still running a job\"",
                ),
                Some(r) if r.scope == scope => {
                    s.runners.remove(&id);
                    s.deleted_runners.push(id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::GET, ["actions", "runner-groups"]) => {
            let s = gh.st();
            let mut groups = vec![json!({"id": 1, "name": "Default", "default": true})];
            for (id, name) in s.groups.get(&scope).cloned().unwrap_or_default() {
                groups.push(json!({"id": id, "name": name, "default": false}));
            }
            axum::Json(json!({"total_count": groups.len(), "runner_groups": groups}))
                .into_response()
        }
        (Method::GET, ["actions", "jobs", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return err(StatusCode::NOT_FOUND, "Not Found");
            };
            match gh.job(id) {
                Some(j) if format!("repos/{}", j.repo) == scope => {
                    axum::Json(gh.job_json(&j)).into_response()
                }
                _ => err(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => err(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The control API used by simulated runners, the binary and benchmarks.
fn control(gh: &FakeGitHub, method: &Method, rest: &str, body: &[u8]) -> Response {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["runners", id, "online"]) => {
            let Ok(id) = id.parse::<i64>() else {
                return err(StatusCode::NOT_FOUND, "no such runner");
            };
            {
                let mut s = gh.st();
                let Some(r) = s.runners.get_mut(&id) else {
                    return err(StatusCode::NOT_FOUND, "no such runner");
                };
                r.status = "online".into();
            }
            gh.assign();
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, ["jobs"]) => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(repo) = v["repo"].as_str().map(str::to_owned) else {
                return err(StatusCode::BAD_REQUEST, "repo is required");
            };
            let labels: Vec<String> = v["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let gh = gh.clone();
            // Answer at once; the webhook goes out in the background.
            tokio::spawn(async move {
                let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
                gh.queue_job(&repo, &refs).await;
            });
            StatusCode::ACCEPTED.into_response()
        }
        (Method::GET, ["jobs"]) => axum::Json(gh.jobs()).into_response(),
        (Method::GET, ["runners"]) => axum::Json(gh.runners()).into_response(),
        (Method::GET, ["deliveries"]) => axum::Json(gh.deliveries()).into_response(),
        _ => err(StatusCode::NOT_FOUND, "no such control route"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_flow_through_a_runner_and_webhooks_verify() {
        // A receiver that checks signatures and records actions.
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen2 = seen.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen2.clone();
                async move {
                    let sig = headers["x-hub-signature-256"].to_str().unwrap().to_owned();
                    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
                    mac.update(&body);
                    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    assert_eq!(sig, want);
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(v["action"].as_str().unwrap().to_owned());
                    StatusCode::ACCEPTED
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

        let gh = FakeGitHub::start().await;
        gh.set_webhook_target(format!("http://{addr}/hook"), "s3cret");
        gh.set_job_duration(Duration::from_millis(20));
        let client = reqwest::Client::new();
        let jit: Value = client
            .post(format!(
                "{}/repos/octo/app/actions/runners/generate-jitconfig",
                gh.url()
            ))
            .bearer_auth("t")
            .json(&json!({"name": "r1", "runner_group_id": 1, "labels": ["self-hosted", "Linux"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cfg = FakeJitConfig::decode(jit["encoded_jit_config"].as_str().unwrap()).unwrap();
        let dup = client
            .post(format!(
                "{}/repos/octo/app/actions/runners/generate-jitconfig",
                gh.url()
            ))
            .bearer_auth("t")
            .json(&json!({"name": "r1", "runner_group_id": 1, "labels": ["x"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(dup.status(), 409);

        let job = gh.queue_job("octo/app", &["self-hosted", "linux"]).await;
        assert_eq!(
            gh.job(job).unwrap().status,
            "queued",
            "no runner online yet"
        );
        client
            .post(format!(
                "{}/_fake/runners/{}/online",
                gh.url(),
                cfg.runner_id
            ))
            .send()
            .await
            .unwrap();
        gh.wait_for(Duration::from_secs(5), "job completed", |g| {
            g.job(job).is_some_and(|j| j.status == "completed") && g.deliveries().len() == 3
        })
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["queued", "in_progress", "completed"]
        );
        assert!(gh.runners().is_empty(), "ephemeral runner left");
        assert!(gh.deliveries().iter().all(|d| d.status == 202));
        assert!(job > i64::from(i32::MAX));
    }

    #[tokio::test]
    async fn faults_and_pagination() {
        let gh = FakeGitHub::start().await;
        for i in 0..5 {
            gh.add_runner("orgs/acme", &format!("r{i}"), &["x"], false, false);
        }
        gh.inject(
            Some(Method::GET),
            "/actions/runners",
            1,
            FaultKind::TooManyRequests {
                retry_after_secs: 3,
            },
        );
        let client = reqwest::Client::new();
        let url = format!("{}/orgs/acme/actions/runners?per_page=2", gh.url());
        let r = client.get(&url).bearer_auth("t").send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let r = client.get(&url).bearer_auth("t").send().await.unwrap();
        assert!(r.headers()["link"].to_str().unwrap().contains("page=2"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["runners"].as_array().unwrap().len(), 2);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401, "no token");
        assert_eq!(gh.calls("list-runners"), 3);
    }
}
