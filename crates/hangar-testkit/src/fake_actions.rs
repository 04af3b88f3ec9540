//! `FakeActions`: a loopback GitHub Actions service for runner scale sets.
//!
//! It sits beside a [`FakeGitHub`]: the registration token comes from
//! FakeGitHub's REST route, and the exchange
//! (`POST /actions/runner-registration`, `RemoteAuth`) is served on
//! FakeGitHub's host through its [`Extension`] hook, answering with this
//! server's tenant URL and an admin JWT (unsigned; clients only read its
//! `exp`). Everything else is served here: runner groups, scale set CRUD,
//! message sessions (a second session on a scale set is 409 until the
//! first is deleted or has not polled for the idle timeout), the message
//! queue (a long poll that really waits; messages have ids, stay until
//! deleted, and a poll hands out the oldest one after `lastMessageId`),
//! `acquirejobs`, JIT configs, and runners.
//!
//! Jobs are queued onto a scale set by name ([`FakeActions::queue_job`]):
//! `JobAvailable` → (acquired) `JobAssigned` → when an online idle runner
//! of that scale set exists, `JobStarted`, and after the job duration
//! `JobCompleted`, and the ephemeral runner is removed. A runner comes
//! online when the runner simulator ([`crate::runner_sim`]) posts
//! `/_fake/runners/{id}/online` here, as it does to FakeGitHub: the JIT
//! configs this service issues name it as their server. Everything that
//! happened is recorded for tests ([`FakeActions::jobs`],
//! [`FakeActions::max_runners_seen`], call counts), and faults can be
//! injected: 5xx for a while, dropped connections, slow polls, expired
//! admin or queue tokens, a session held by someone else.
//!
//! The routes, field names and status codes follow GitHub's own client
//! (`actions/scaleset`); `fixtures/actions-scaleset/` holds them and
//! `tests/actions_shapes.rs` keeps this fake to them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fake_github::FakeGitHub;
use crate::runner_sim::FakeJitConfig;

/// A job as FakeActions holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeScaleSetJob {
    pub runner_request_id: i64,
    pub job_id: String,
    pub scale_set_id: i64,
    pub scale_set_name: String,
    /// `owner/name`.
    pub repository: String,
    /// `available`, `acquired`, `assigned`, `started` or `completed`.
    pub status: String,
    pub runner_id: Option<i64>,
    pub runner_name: Option<String>,
    /// How many times a runner took it (1 when served once).
    pub starts: u32,
    /// How many `acquirejobs` calls named it.
    pub acquire_calls: u32,
}

/// A request FakeActions received (the exchange on FakeGitHub's host
/// included), for tests that check what a client sends.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when none or not JSON).
    pub body: Value,
}

/// A runner of a scale set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeScaleSetRunner {
    pub id: i64,
    pub name: String,
    pub scale_set_id: i64,
    pub online: bool,
    pub busy: bool,
    pub job: Option<i64>,
}

/// A scale set as FakeActions holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeScaleSet {
    pub id: i64,
    /// `repos/o/r`, `orgs/o` or `enterprises/e`.
    pub scope: String,
    pub name: String,
    pub runner_group_id: i64,
    pub labels: Vec<String>,
    pub disable_update: bool,
    /// The open session's owner, if any.
    pub session_owner: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    owner: String,
    token: String,
    token_expires: Instant,
    last_seen: Instant,
    polling: u32,
}

#[derive(Debug, Clone)]
struct Message {
    id: i64,
    body: Vec<Value>,
}

#[derive(Debug)]
struct ScaleSet {
    info: FakeScaleSet,
    created_on: String,
    session: Option<Session>,
    /// Someone else holds the session until then.
    held_until: Option<Instant>,
    /// Sealed messages not yet deleted, by id.
    messages: BTreeMap<i64, Message>,
    /// Job messages not yet sealed into a message.
    pending: VecDeque<Value>,
    max_runners_seen: usize,
}

#[derive(Debug)]
struct AdminToken {
    scope: String,
    expires: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
struct Job {
    info: FakeScaleSetJob,
    /// When `JobAvailable` was last sent for it.
    offered_at: Instant,
    labels: Vec<String>,
    queue_time: String,
    assign_time: Option<String>,
    runner_assign_time: Option<String>,
    finish_time: Option<String>,
}

/// A fault rule: requests whose path contains `path_contains` (and whose
/// method matches, if given) get it, `remaining` times.
#[derive(Debug, Clone)]
struct Fault {
    method: Option<Method>,
    path_contains: String,
    remaining: u32,
    kind: ActionsFault,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionsFault {
    /// Answer with this status and an exception body.
    Status(u16),
    /// Drop the connection without an answer.
    Drop,
    /// Answer normally, after this delay.
    Latency(Duration),
}

struct St {
    url: String,
    tenants: HashMap<String, String>,
    next_tenant: u32,
    groups: HashMap<String, Vec<(i64, String)>>,
    admin_tokens: HashMap<String, AdminToken>,
    admin_ttl: Duration,
    queue_ttl: Duration,
    poll_wait: Duration,
    poll_delay: Duration,
    session_idle: Duration,
    reoffer_after: Duration,
    job_duration: Duration,
    scale_sets: BTreeMap<i64, ScaleSet>,
    next_scale_set: i64,
    next_message: i64,
    jobs: BTreeMap<i64, Job>,
    next_request: i64,
    runners: BTreeMap<i64, FakeScaleSetRunner>,
    next_runner: i64,
    removed_runners: Vec<i64>,
    failing_until: Option<(Instant, u16)>,
    faults: Vec<Fault>,
    faults_fired: u64,
    calls: HashMap<String, u64>,
    session_conflicts: u64,
    sessions_created: u64,
    messages_deleted: u64,
    exchanges: u64,
    last_poll_headers: Option<HeaderMap>,
    requests: Vec<RecordedRequest>,
}

/// A running FakeActions. Cloning shares the same server.
#[derive(Clone)]
pub struct FakeActions {
    url: String,
    state: Arc<Mutex<St>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for FakeActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeActions")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The per-connection switch a dropped-connection fault pulls.
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Go's zero time, which GitHub's client sends and reads for "not set".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// An Actions service error: a .NET exception name and a message.
fn exception(status: StatusCode, type_name: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "typeName": type_name,
            "message": message,
        })),
    )
        .into_response()
}

fn jwt(claims: &Value) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(br#"{"typ":"JWT","alg":"RS256","x5t":"fake"}"#),
        e.encode(claims.to_string()),
        e.encode(b"not-a-real-signature")
    )
}

fn query_get(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// The scope a web URL names: `/o/r` → `repos/o/r`, `/o` → `orgs/o`,
/// `/enterprises/e` → `enterprises/e`.
fn scope_of_url(url: &str) -> Option<String> {
    let path = url::Url::parse(url)
        .ok()?
        .path()
        .trim_matches('/')
        .to_owned();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["enterprises", e] => Some(format!("enterprises/{e}")),
        [o, r] => Some(format!("repos/{o}/{r}")),
        [o] => Some(format!("orgs/{o}")),
        _ => None,
    }
}

/// Whether a scale set of `scope` may run a job of `repo`.
fn scope_serves(scope: &str, repo: &str) -> bool {
    let owner = repo.split('/').next().unwrap_or("");
    scope == format!("repos/{repo}")
        || scope == format!("orgs/{owner}")
        || scope.starts_with("enterprises/")
}

impl St {
    fn statistics(&self, ss: i64) -> Value {
        let jobs = self.jobs.values().filter(|j| j.info.scale_set_id == ss);
        let (mut available, mut acquired, mut assigned, mut running) = (0, 0, 0, 0);
        for j in jobs {
            match j.info.status.as_str() {
                "available" => available += 1,
                "acquired" => acquired += 1,
                "assigned" => assigned += 1,
                "started" => {
                    assigned += 1;
                    running += 1;
                }
                _ => {}
            }
        }
        let runners: Vec<&FakeScaleSetRunner> = self
            .runners
            .values()
            .filter(|r| r.scale_set_id == ss)
            .collect();
        let busy = runners.iter().filter(|r| r.busy).count();
        json!({
            "totalAvailableJobs": available,
            "totalAcquiredJobs": acquired,
            "totalAssignedJobs": assigned,
            "totalRunningJobs": running,
            "totalRegisteredRunners": runners.len(),
            "totalBusyRunners": busy,
            "totalIdleRunners": runners.len() - busy,
        })
    }

    fn scale_set_json(&self, s: &ScaleSet) -> Value {
        let group_name = self
            .group_name(&s.info.scope, s.info.runner_group_id)
            .unwrap_or_default();
        let mut labels = vec![json!({"type": "System", "name": s.info.name})];
        for l in &s.info.labels {
            if *l != s.info.name {
                labels.push(json!({"type": "System", "name": l}));
            }
        }
        json!({
            "id": s.info.id,
            "name": s.info.name,
            "runnerGroupId": s.info.runner_group_id,
            "runnerGroupName": group_name,
            "labels": labels,
            "RunnerSetting": {"disableUpdate": s.info.disable_update},
            "createdOn": s.created_on,
            "runnerJitConfigUrl": format!("{}{}/_apis/runtime/runnerscalesets/{}/generatejitconfig", self.url, self.tenant_path(&s.info.scope), s.info.id),
            "statistics": self.statistics(s.info.id),
        })
    }

    fn tenant_path(&self, scope: &str) -> String {
        format!(
            "/{}",
            self.tenants.get(scope).map_or("unknown", String::as_str)
        )
    }

    fn groups_of(&self, scope: &str) -> Vec<(i64, String)> {
        let mut g = vec![(1, "Default".to_owned())];
        g.extend(self.groups.get(scope).cloned().unwrap_or_default());
        g
    }

    fn group_name(&self, scope: &str, id: i64) -> Option<String> {
        self.groups_of(scope)
            .into_iter()
            .find(|(gid, _)| *gid == id)
            .map(|(_, n)| n)
    }

    fn job_message(&self, kind: &str, j: &Job) -> Value {
        let (owner, repo) = j
            .info
            .repository
            .split_once('/')
            .unwrap_or(("", &j.info.repository));
        let mut m = json!({
            "messageType": kind,
            "runnerRequestId": j.info.runner_request_id,
            "repositoryName": repo,
            "ownerName": owner,
            "jobId": j.info.job_id,
            "jobWorkflowRef": format!("{}/.github/workflows/ci.yml@refs/heads/main", j.info.repository),
            "jobDisplayName": "build",
            "workflowRunId": 7_000_000 + j.info.runner_request_id,
            "eventName": "push",
            "requestLabels": j.labels,
            "queueTime": j.queue_time,
            "scaleSetAssignTime": j.assign_time.clone().unwrap_or_else(|| ZERO_TIME.into()),
            "runnerAssignTime": j.runner_assign_time.clone().unwrap_or_else(|| ZERO_TIME.into()),
            "finishTime": j.finish_time.clone().unwrap_or_else(|| ZERO_TIME.into()),
        });
        match kind {
            "JobAvailable" => {
                m["acquireJobUrl"] = json!(format!(
                    "{}{}/_apis/runtime/runnerscalesets/{}/acquirejobs",
                    self.url,
                    self.tenant_path(&self.scale_sets[&j.info.scale_set_id].info.scope),
                    j.info.scale_set_id
                ));
            }
            "JobStarted" => {
                m["runnerId"] = json!(j.info.runner_id);
                m["runnerName"] = json!(j.info.runner_name);
            }
            "JobCompleted" => {
                m["runnerId"] = json!(j.info.runner_id.unwrap_or_default());
                m["runnerName"] = json!(j.info.runner_name.clone().unwrap_or_default());
                m["result"] = json!("succeeded");
            }
            _ => {}
        }
        m
    }

    fn push(&mut self, kind: &str, request_id: i64) {
        let Some(j) = self.jobs.get(&request_id) else {
            return;
        };
        let m = self.job_message(kind, j);
        let ss = j.info.scale_set_id;
        if let Some(s) = self.scale_sets.get_mut(&ss) {
            s.pending.push_back(m);
        }
        if kind == "JobAvailable"
            && let Some(j) = self.jobs.get_mut(&request_id)
        {
            j.offered_at = Instant::now();
        }
    }

    /// Offers again the scale set's jobs nobody acquired within the
    /// re-offer interval.
    fn reoffer(&mut self, ss: i64) {
        let after = self.reoffer_after;
        let stale: Vec<i64> = self
            .jobs
            .values()
            .filter(|j| {
                j.info.scale_set_id == ss
                    && j.info.status == "available"
                    && j.offered_at.elapsed() >= after
            })
            .map(|j| j.info.runner_request_id)
            .collect();
        for id in stale {
            self.push("JobAvailable", id);
        }
    }

    /// A session is live while someone polls it, or polled within the idle
    /// timeout.
    fn session_live(&self, s: &Session) -> bool {
        s.polling > 0 || s.last_seen.elapsed() < self.session_idle
    }
}

impl FakeActions {
    /// Starts on a free loopback port, and serves the registration exchange
    /// on `gh`'s host.
    pub async fn start(gh: &FakeGitHub) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let fa = FakeActions {
            url: url.clone(),
            state: Arc::new(Mutex::new(St {
                url,
                tenants: HashMap::new(),
                next_tenant: 1,
                groups: HashMap::new(),
                admin_tokens: HashMap::new(),
                admin_ttl: Duration::from_secs(3600),
                queue_ttl: Duration::from_secs(3600),
                poll_wait: Duration::from_secs(50),
                poll_delay: Duration::ZERO,
                session_idle: Duration::from_secs(120),
                reoffer_after: Duration::from_secs(10),
                job_duration: Duration::from_millis(100),
                scale_sets: BTreeMap::new(),
                next_scale_set: 1,
                next_message: 1,
                jobs: BTreeMap::new(),
                next_request: 100_001,
                runners: BTreeMap::new(),
                next_runner: 5_001,
                removed_runners: Vec::new(),
                failing_until: None,
                faults: Vec::new(),
                faults_fired: 0,
                calls: HashMap::new(),
                session_conflicts: 0,
                sessions_created: 0,
                messages_deleted: 0,
                exchanges: 0,
                last_poll_headers: None,
                requests: Vec::new(),
            })),
            changed: Arc::new(Notify::new()),
        };
        let router = Router::new().fallback(handle).with_state(fa.clone());
        tokio::spawn(accept_loop(listener, router));
        let ext = fa.clone();
        gh.set_extension(Arc::new(move |gh, method, path, headers, body| {
            (*method == Method::POST
                && path.trim_end_matches('/') == "/actions/runner-registration")
                .then(|| ext.runner_registration(gh, headers, body))
        }));
        fa
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.state.lock().expect("fake actions lock")
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }

    // ---- knobs ----

    /// How long a long poll waits for a message before answering 202
    /// (50 s, as the service does, unless set).
    pub fn set_poll_wait(&self, d: Duration) {
        self.st().poll_wait = d;
    }

    /// Every poll first waits this long, even with a message ready.
    pub fn set_poll_delay(&self, d: Duration) {
        self.st().poll_delay = d;
    }

    /// How long a job runs once a runner took it.
    pub fn set_job_duration(&self, d: Duration) {
        self.st().job_duration = d;
    }

    /// A job still available this long after it was offered is offered
    /// again (10 s unless set): a listener may leave jobs it has no room
    /// for, and the service keeps offering them.
    pub fn set_reoffer_after(&self, d: Duration) {
        self.st().reoffer_after = d;
    }

    /// Lifetime of admin tokens issued from now on.
    pub fn set_admin_token_ttl(&self, d: Duration) {
        self.st().admin_ttl = d;
    }

    /// Lifetime of message queue tokens issued from now on.
    pub fn set_queue_token_ttl(&self, d: Duration) {
        self.st().queue_ttl = d;
    }

    /// A session nobody polled for this long is given up (so a listener
    /// that died does not block its successor for good).
    pub fn set_session_idle_timeout(&self, d: Duration) {
        self.st().session_idle = d;
    }

    /// Every admin token issued so far stops working (401).
    pub fn expire_admin_tokens(&self) {
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        for t in self.st().admin_tokens.values_mut() {
            t.expires = past;
        }
    }

    /// Every queue token issued so far stops working (401).
    pub fn expire_queue_tokens(&self) {
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        for s in self.st().scale_sets.values_mut() {
            if let Some(sess) = s.session.as_mut() {
                sess.token_expires = past;
            }
        }
    }

    /// Every service route answers `status` for the next `d`.
    pub fn fail_for(&self, d: Duration, status: u16) {
        self.st().failing_until = Some((Instant::now() + d, status));
    }

    /// The next `times` requests whose path contains `path_contains` (and
    /// whose method is `method`, if given) get `kind`.
    pub fn inject(
        &self,
        method: Option<Method>,
        path_contains: &str,
        times: u32,
        kind: ActionsFault,
    ) {
        self.st().faults.push(Fault {
            method,
            path_contains: path_contains.to_owned(),
            remaining: times,
            kind,
        });
    }

    pub fn faults_fired(&self) -> u64 {
        self.st().faults_fired
    }

    /// Another listener holds the scale set's session for `d`: creating a
    /// session is 409 until then.
    pub fn hold_session(&self, scale_set_name: &str, d: Duration) {
        let until = Instant::now() + d;
        for s in self.st().scale_sets.values_mut() {
            if s.info.name == scale_set_name {
                s.held_until = Some(until);
            }
        }
    }

    /// Ends the scale set's session on the service's side (as when it
    /// expires): its holder's next poll is 404.
    pub fn end_session(&self, scale_set_name: &str) {
        for s in self.st().scale_sets.values_mut() {
            if s.info.name == scale_set_name {
                s.session = None;
            }
        }
        self.touch();
    }

    /// Adds a runner group to a scope (`repos/o/r`, `orgs/o`, …); the
    /// default group (id 1, "Default") always exists.
    pub fn add_runner_group(&self, scope: &str, id: i64, name: &str) {
        self.st()
            .groups
            .entry(scope.to_owned())
            .or_default()
            .push((id, name.to_owned()));
    }

    /// Deletes a scale set as someone on GitHub would.
    pub fn delete_scale_set(&self, name: &str) {
        self.st().scale_sets.retain(|_, s| s.info.name != name);
        self.touch();
    }

    /// Brings a registered runner online, as the runner simulator's
    /// `POST /_fake/runners/{id}/online` does; false when unknown.
    pub fn runner_online(&self, runner_id: i64) -> bool {
        {
            let mut s = self.st();
            let Some(r) = s.runners.get_mut(&runner_id) else {
                return false;
            };
            r.online = true;
        }
        self.assign();
        true
    }

    // ---- jobs ----

    /// Queues a job of `repo` (`owner/name`) for the scale set named
    /// `scale_set_name` that serves it; returns its runner request id.
    /// Panics when no such scale set exists (a test mistake).
    pub fn queue_job(&self, scale_set_name: &str, repo: &str) -> i64 {
        let id = {
            let mut s = self.st();
            let ss = s
                .scale_sets
                .values()
                .find(|ss| ss.info.name == scale_set_name && scope_serves(&ss.info.scope, repo))
                .map(|ss| ss.info.id)
                .unwrap_or_else(|| panic!("no scale set {scale_set_name:?} serves {repo}"));
            let id = s.next_request;
            s.next_request += 1;
            let job = Job {
                info: FakeScaleSetJob {
                    runner_request_id: id,
                    job_id: uuid::Uuid::new_v4().to_string(),
                    scale_set_id: ss,
                    scale_set_name: scale_set_name.to_owned(),
                    repository: repo.to_owned(),
                    status: "available".into(),
                    runner_id: None,
                    runner_name: None,
                    starts: 0,
                    acquire_calls: 0,
                },
                offered_at: Instant::now(),
                labels: vec![scale_set_name.to_owned()],
                queue_time: now_rfc3339(),
                assign_time: None,
                runner_assign_time: None,
                finish_time: None,
            };
            s.jobs.insert(id, job);
            s.push("JobAvailable", id);
            id
        };
        self.touch();
        id
    }

    pub fn jobs(&self) -> Vec<FakeScaleSetJob> {
        self.st().jobs.values().map(|j| j.info.clone()).collect()
    }

    pub fn job(&self, request_id: i64) -> Option<FakeScaleSetJob> {
        self.st().jobs.get(&request_id).map(|j| j.info.clone())
    }

    pub fn runners(&self) -> Vec<FakeScaleSetRunner> {
        self.st().runners.values().cloned().collect()
    }

    /// Runners removed, by a delete or after their job.
    pub fn removed_runners(&self) -> Vec<i64> {
        self.st().removed_runners.clone()
    }

    pub fn scale_sets(&self) -> Vec<FakeScaleSet> {
        self.st()
            .scale_sets
            .values()
            .map(|s| {
                let mut i = s.info.clone();
                i.session_owner = s.session.as_ref().map(|x| x.owner.clone());
                i
            })
            .collect()
    }

    /// The most runners the scale set had registered at once.
    pub fn max_runners_seen(&self, scale_set_name: &str) -> usize {
        self.st()
            .scale_sets
            .values()
            .filter(|s| s.info.name == scale_set_name)
            .map(|s| s.max_runners_seen)
            .max()
            .unwrap_or(0)
    }

    /// Messages sealed and not yet deleted, per scale set name.
    pub fn unacknowledged(&self, scale_set_name: &str) -> usize {
        self.st()
            .scale_sets
            .values()
            .filter(|s| s.info.name == scale_set_name)
            .map(|s| s.messages.len())
            .sum()
    }

    pub fn calls(&self, route: &str) -> u64 {
        self.st().calls.get(route).copied().unwrap_or(0)
    }

    pub fn session_conflicts(&self) -> u64 {
        self.st().session_conflicts
    }

    pub fn sessions_created(&self) -> u64 {
        self.st().sessions_created
    }

    pub fn messages_deleted(&self) -> u64 {
        self.st().messages_deleted
    }

    /// Registration exchanges answered (admin tokens issued).
    pub fn exchanges(&self) -> u64 {
        self.st().exchanges
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.st().requests.clone()
    }

    fn record(&self, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) {
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.st().requests.push(RecordedRequest {
            method: method.clone(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: headers.clone(),
            body,
        });
    }

    /// The headers of the last long poll, to check what a client sends.
    pub fn last_poll_headers(&self) -> Option<HeaderMap> {
        self.st().last_poll_headers.clone()
    }

    /// Waits until `cond` holds (checked on every change), or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&FakeActions) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if cond(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Woken by a change, or re-checked now and then (time passes).
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), n).await;
        }
    }

    // ---- the registration exchange (on FakeGitHub's host) ----

    fn runner_registration(&self, gh: &FakeGitHub, headers: &HeaderMap, body: &[u8]) -> Response {
        *self
            .st()
            .calls
            .entry("runner-registration".into())
            .or_default() += 1;
        self.record(
            &Method::POST,
            "/actions/runner-registration",
            "",
            headers,
            body,
        );
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(token) = auth.strip_prefix("RemoteAuth ") else {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"message": "Requires authentication"})),
            )
                .into_response();
        };
        let Some(scope) = gh.registration_token_scope(token.trim()) else {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"message": "Bad credentials"})),
            )
                .into_response();
        };
        let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if b["runner_event"] != "register" {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": "runner_event must be register"})),
            )
                .into_response();
        }
        let Some(url_scope) = b["url"].as_str().and_then(scope_of_url) else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": "url is required"})),
            )
                .into_response();
        };
        if url_scope != scope {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"message": "the registration token is for another entity"})),
            )
                .into_response();
        }
        let mut s = self.st();
        if !s.tenants.contains_key(&scope) {
            let t = format!("tenant{}", s.next_tenant);
            s.next_tenant += 1;
            s.tenants.insert(scope.clone(), t);
        }
        let exp = chrono::Utc::now() + chrono::Duration::from_std(s.admin_ttl).expect("ttl");
        let token = jwt(&json!({
            "iss": "fake-actions", "aud": "actions", "scp": scope,
            "nbf": chrono::Utc::now().timestamp() - 60, "exp": exp.timestamp(),
            "jti": uuid::Uuid::new_v4().to_string(),
        }));
        s.admin_tokens.insert(
            token.clone(),
            AdminToken {
                scope: scope.clone(),
                expires: exp,
            },
        );
        s.exchanges += 1;
        let url = format!("{}{}/", s.url, s.tenant_path(&scope));
        (
            StatusCode::CREATED,
            axum::Json(json!({"url": url, "token": token})),
        )
            .into_response()
    }

    // ---- scheduling jobs onto runners ----

    /// Hands assigned jobs to online idle runners of their scale set.
    fn assign(&self) {
        let mut started = Vec::new();
        {
            let mut s = self.st();
            let waiting: Vec<i64> = s
                .jobs
                .values()
                .filter(|j| j.info.status == "assigned")
                .map(|j| j.info.runner_request_id)
                .collect();
            for id in waiting {
                let ss = s.jobs[&id].info.scale_set_id;
                let Some((rid, rname)) = s
                    .runners
                    .values()
                    .find(|r| r.scale_set_id == ss && r.online && !r.busy)
                    .map(|r| (r.id, r.name.clone()))
                else {
                    continue;
                };
                let r = s.runners.get_mut(&rid).expect("runner");
                r.busy = true;
                r.job = Some(id);
                let j = s.jobs.get_mut(&id).expect("job");
                j.info.status = "started".into();
                j.info.starts += 1;
                j.info.runner_id = Some(rid);
                j.info.runner_name = Some(rname);
                j.runner_assign_time = Some(now_rfc3339());
                s.push("JobStarted", id);
                started.push((id, rid));
            }
        }
        let duration = self.st().job_duration;
        for (id, rid) in started {
            let fa = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                {
                    let mut s = fa.st();
                    if let Some(j) = s.jobs.get_mut(&id) {
                        j.info.status = "completed".into();
                        j.finish_time = Some(now_rfc3339());
                    }
                    s.push("JobCompleted", id);
                    // Ephemeral runners leave after their one job.
                    if s.runners.remove(&rid).is_some() {
                        s.removed_runners.push(rid);
                    }
                }
                fa.touch();
                fa.assign();
            });
        }
        self.touch();
    }
}

/// Accepts connections and serves each, ready to drop it mid-request when
/// a fault says so.
async fn accept_loop(listener: tokio::net::TcpListener, router: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let kill = Arc::new(Notify::new());
        let svc = tower::ServiceExt::map_request(router.clone(), {
            let kill = kill.clone();
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnKill(kill.clone()));
                req
            }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
}

fn route_name(method: &Method, path: &str) -> String {
    let p = path.trim_end_matches('/');
    let name = if p.starts_with("/_fake/") {
        "control"
    } else if p.starts_with("/_queue/") {
        if *method == Method::DELETE {
            "delete-message"
        } else {
            "get-message"
        }
    } else if p.ends_with("/acquirejobs") {
        "acquire-jobs"
    } else if p.ends_with("/generatejitconfig") {
        "generate-jit-config"
    } else if p.contains("/sessions") {
        match *method {
            Method::POST => "create-session",
            Method::PATCH => "refresh-session",
            _ => "delete-session",
        }
    } else if p.contains("/runnergroups") {
        "runner-groups"
    } else if p.contains("/agents") {
        if *method == Method::DELETE {
            "delete-runner"
        } else {
            "get-runner"
        }
    } else if p.contains("/runnerscalesets") {
        match *method {
            Method::POST => "create-scale-set",
            Method::PATCH => "update-scale-set",
            Method::DELETE => "delete-scale-set",
            _ => "get-scale-set",
        }
    } else {
        "other"
    };
    name.to_owned()
}

async fn handle(State(fa): State<FakeActions>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let route = route_name(&method, &path);
    let fault = {
        let mut s = fa.st();
        *s.calls.entry(route.clone()).or_default() += 1;
        let mut hit = None;
        if route != "control" {
            if let Some((until, status)) = s.failing_until {
                if Instant::now() < until {
                    hit = Some(ActionsFault::Status(status));
                } else {
                    s.failing_until = None;
                }
            }
            if hit.is_none() {
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
            }
            if hit.is_some() {
                s.faults_fired += 1;
            }
        }
        hit
    };
    match fault {
        Some(ActionsFault::Status(code)) => {
            return exception(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "GitHub.DistributedTask.WebApi.FakeInjectedFailureException",
                "injected failure",
            );
        }
        Some(ActionsFault::Drop) => {
            if let Some(k) = kill {
                k.0.notify_one();
            }
            // The connection is being torn down; never answer.
            std::future::pending::<()>().await;
        }
        Some(ActionsFault::Latency(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return exception(
                StatusCode::BAD_REQUEST,
                "ArgumentException",
                "body too large",
            );
        }
    };
    if route != "control" {
        fa.record(&method, &path, &query, &parts.headers, &body);
    }
    let resp = serve(&fa, &method, &path, &query, &parts.headers, body).await;
    fa.touch();
    resp
}

/// The tenant's scope, when the admin token is valid for it.
#[allow(clippy::result_large_err)] // an answer ready to send, built once per request
fn admin_scope(fa: &FakeActions, headers: &HeaderMap, tenant: &str) -> Result<String, Response> {
    let Some(token) = bearer(headers) else {
        return Err(exception(
            StatusCode::UNAUTHORIZED,
            "VssUnauthorizedException",
            "no token",
        ));
    };
    let s = fa.st();
    let Some(t) = s.admin_tokens.get(&token) else {
        return Err(exception(
            StatusCode::UNAUTHORIZED,
            "VssUnauthorizedException",
            "unknown token",
        ));
    };
    if t.expires <= chrono::Utc::now() {
        return Err(exception(
            StatusCode::UNAUTHORIZED,
            "VssUnauthorizedException",
            "the token has expired",
        ));
    }
    if s.tenants.get(&t.scope).map(String::as_str) != Some(tenant) {
        return Err(exception(
            StatusCode::UNAUTHORIZED,
            "VssUnauthorizedException",
            "the token is for another tenant",
        ));
    }
    Ok(t.scope.clone())
}

/// Checks a message queue token for scale set `ss`; returns the session id.
#[allow(clippy::result_large_err)] // an answer ready to send, built once per request
fn queue_session(fa: &FakeActions, headers: &HeaderMap, ss: i64) -> Result<String, Response> {
    let token = bearer(headers).unwrap_or_default();
    let s = fa.st();
    let sess = s.scale_sets.get(&ss).and_then(|x| x.session.as_ref());
    match sess {
        Some(sess) if sess.token == token && Instant::now() < sess.token_expires => {
            Ok(sess.id.clone())
        }
        Some(sess) if sess.token == token => Err(exception(
            StatusCode::UNAUTHORIZED,
            "GitHub.DistributedTask.WebApi.MessageQueueTokenExpiredException",
            "the message queue token has expired",
        )),
        _ => Err(exception(
            StatusCode::UNAUTHORIZED,
            "VssUnauthorizedException",
            "not a token of this scale set's session",
        )),
    }
}

async fn serve(
    fa: &FakeActions,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["_fake", "runners", id, "online"] = parts.as_slice() {
        let known = id.parse::<i64>().is_ok_and(|id| fa.runner_online(id));
        if !known {
            return exception(
                StatusCode::NOT_FOUND,
                "AgentNotFoundException",
                "no such runner",
            );
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    if let ["_queue", ss, "messages", rest @ ..] = parts.as_slice() {
        let Ok(ss) = ss.parse::<i64>() else {
            return exception(StatusCode::NOT_FOUND, "NotFoundException", "no such queue");
        };
        return queue(fa, method, ss, rest, query, headers).await;
    }
    let [tenant, "_apis", rest @ ..] = parts.as_slice() else {
        return exception(StatusCode::NOT_FOUND, "NotFoundException", "no such route");
    };
    if query_get(query, "api-version").is_none() {
        return exception(
            StatusCode::BAD_REQUEST,
            "VssVersionNotSpecifiedException",
            "api-version is required",
        );
    }
    let scope = match admin_scope(fa, headers, tenant) {
        Ok(s) => s,
        // acquirejobs takes the session's queue token instead.
        Err(e) if !matches!(rest, ["runtime", "runnerscalesets", _, "acquirejobs"]) => return e,
        Err(_) => String::new(),
    };
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    match (method.clone(), rest) {
        (Method::GET, ["runtime", "runnergroups"])
        | (Method::GET, ["runtime", "runnergroups", ""]) => {
            let s = fa.st();
            let want = query_get(query, "groupName");
            let list: Vec<Value> = s
                .groups_of(&scope)
                .into_iter()
                .filter(|(_, n)| want.as_deref().is_none_or(|w| w == n))
                .map(|(id, n)| json!({"id": id, "name": n, "size": 0, "isDefaultGroup": id == 1}))
                .collect();
            axum::Json(json!({"count": list.len(), "value": list})).into_response()
        }
        (Method::GET, ["runtime", "runnerscalesets"]) => {
            let s = fa.st();
            let group = query_get(query, "runnerGroupId").and_then(|g| g.parse::<i64>().ok());
            let name = query_get(query, "name");
            let list: Vec<Value> = s
                .scale_sets
                .values()
                .filter(|x| x.info.scope == scope)
                .filter(|x| group.is_none_or(|g| g == x.info.runner_group_id))
                .filter(|x| name.as_deref().is_none_or(|n| n == x.info.name))
                .map(|x| s.scale_set_json(x))
                .collect();
            axum::Json(json!({"count": list.len(), "value": list})).into_response()
        }
        (Method::POST, ["runtime", "runnerscalesets"]) => {
            let b = json_body();
            let Some(name) = b["name"].as_str().filter(|n| !n.is_empty()) else {
                return exception(
                    StatusCode::BAD_REQUEST,
                    "ArgumentException",
                    "name is required",
                );
            };
            let group = b["runnerGroupId"].as_i64().unwrap_or(1);
            let mut s = fa.st();
            if s.group_name(&scope, group).is_none() {
                return exception(
                    StatusCode::BAD_REQUEST,
                    "RunnerGroupNotFoundException",
                    "no such runner group",
                );
            }
            if s.scale_sets.values().any(|x| {
                x.info.scope == scope && x.info.runner_group_id == group && x.info.name == name
            }) {
                return exception(
                    StatusCode::CONFLICT,
                    "RunnerScaleSetExistsException",
                    "a scale set with this name exists in the runner group",
                );
            }
            let labels: Vec<String> = b["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let id = s.next_scale_set;
            s.next_scale_set += 1;
            let ss = ScaleSet {
                info: FakeScaleSet {
                    id,
                    scope: scope.clone(),
                    name: name.to_owned(),
                    runner_group_id: group,
                    labels,
                    disable_update: b["RunnerSetting"]["disableUpdate"]
                        .as_bool()
                        .unwrap_or(false),
                    session_owner: None,
                },
                created_on: now_rfc3339(),
                session: None,
                held_until: None,
                messages: BTreeMap::new(),
                pending: VecDeque::new(),
                max_runners_seen: 0,
            };
            let v = s.scale_set_json(&ss);
            s.scale_sets.insert(id, ss);
            axum::Json(v).into_response()
        }
        (m, ["runtime", "runnerscalesets", id, tail @ ..]) => {
            let Ok(id) = id.parse::<i64>() else {
                return exception(
                    StatusCode::NOT_FOUND,
                    "RunnerScaleSetNotFoundException",
                    "no such scale set",
                );
            };
            let exists = fa
                .st()
                .scale_sets
                .get(&id)
                .is_some_and(|x| scope.is_empty() || x.info.scope == scope);
            if !exists {
                return exception(
                    StatusCode::NOT_FOUND,
                    "RunnerScaleSetNotFoundException",
                    "no such scale set",
                );
            }
            scale_set_route(fa, m, id, tail, headers, json_body()).await
        }
        (Method::GET, ["distributedtask", "pools", "0", "agents"]) => {
            let name = query_get(query, "agentName");
            let s = fa.st();
            let list: Vec<Value> = s
                .runners
                .values()
                .filter(|r| {
                    s.scale_sets
                        .get(&r.scale_set_id)
                        .is_some_and(|x| x.info.scope == scope)
                })
                .filter(|r| name.as_deref().is_none_or(|n| n == r.name))
                .map(|r| json!({"id": r.id, "name": r.name, "runnerScaleSetId": r.scale_set_id}))
                .collect();
            axum::Json(json!({"count": list.len(), "value": list})).into_response()
        }
        (m, ["distributedtask", "pools", "0", "agents", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return exception(
                    StatusCode::NOT_FOUND,
                    "AgentNotFoundException",
                    "no such runner",
                );
            };
            let mut s = fa.st();
            let Some(r) = s.runners.get(&id).cloned() else {
                return exception(
                    StatusCode::NOT_FOUND,
                    "GitHub.DistributedTask.WebApi.AgentNotFoundException",
                    "no such runner",
                );
            };
            match m {
                Method::GET => axum::Json(
                    json!({"id": r.id, "name": r.name, "runnerScaleSetId": r.scale_set_id}),
                )
                .into_response(),
                Method::DELETE if r.busy => exception(
                    StatusCode::BAD_REQUEST,
                    "GitHub.DistributedTask.WebApi.JobStillRunningException",
                    "the runner is running a job",
                ),
                Method::DELETE => {
                    s.runners.remove(&id);
                    s.removed_runners.push(id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => exception(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "NotSupportedException",
                    "method",
                ),
            }
        }
        _ => exception(StatusCode::NOT_FOUND, "NotFoundException", "no such route"),
    }
}

async fn scale_set_route(
    fa: &FakeActions,
    method: Method,
    id: i64,
    tail: &[&str],
    headers: &HeaderMap,
    b: Value,
) -> Response {
    match (method, tail) {
        (Method::GET, []) => {
            let s = fa.st();
            axum::Json(s.scale_set_json(&s.scale_sets[&id])).into_response()
        }
        (Method::PATCH, []) => {
            let mut s = fa.st();
            let group_ok = b["runnerGroupId"].as_i64().is_none_or(|g| {
                let scope = s.scale_sets[&id].info.scope.clone();
                s.group_name(&scope, g).is_some()
            });
            if !group_ok {
                return exception(
                    StatusCode::BAD_REQUEST,
                    "RunnerGroupNotFoundException",
                    "no such runner group",
                );
            }
            let x = s.scale_sets.get_mut(&id).expect("checked");
            if let Some(n) = b["name"].as_str().filter(|n| !n.is_empty()) {
                x.info.name = n.to_owned();
            }
            if let Some(g) = b["runnerGroupId"].as_i64() {
                x.info.runner_group_id = g;
            }
            if let Some(a) = b["labels"].as_array() {
                x.info.labels = a
                    .iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_owned))
                    .collect();
            }
            if let Some(d) = b["RunnerSetting"]["disableUpdate"].as_bool() {
                x.info.disable_update = d;
            }
            let s = &*s;
            axum::Json(s.scale_set_json(&s.scale_sets[&id])).into_response()
        }
        (Method::DELETE, []) => {
            fa.st().scale_sets.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, ["sessions"]) => {
            let owner = b["ownerName"].as_str().unwrap_or("").to_owned();
            let mut s = fa.st();
            let queue_ttl = s.queue_ttl;
            let x = s.scale_sets.get(&id).expect("checked");
            let held = x.held_until.is_some_and(|u| Instant::now() < u);
            let live = x.session.as_ref().is_some_and(|sess| s.session_live(sess));
            if held || live {
                s.session_conflicts += 1;
                return exception(
                    StatusCode::CONFLICT,
                    "GitHub.DistributedTask.WebApi.TaskAgentSessionConflictException",
                    "a session for this runner scale set already exists",
                );
            }
            let sess = Session {
                id: uuid::Uuid::new_v4().to_string(),
                owner,
                token: format!("queue-{}", uuid::Uuid::new_v4().simple()),
                token_expires: Instant::now() + queue_ttl,
                last_seen: Instant::now(),
                polling: 0,
            };
            s.sessions_created += 1;
            // A new listener is offered again what is still available.
            let offer: Vec<i64> = s
                .jobs
                .values()
                .filter(|j| j.info.scale_set_id == id && j.info.status == "available")
                .map(|j| j.info.runner_request_id)
                .collect();
            let x = s.scale_sets.get_mut(&id).expect("checked");
            x.session = Some(sess.clone());
            // (A duplicate offer is harmless: acquiring is idempotent.)
            let fresh: Vec<i64> = offer
                .into_iter()
                .filter(|r| {
                    !x.pending
                        .iter()
                        .any(|m| m["runnerRequestId"] == *r && m["messageType"] == "JobAvailable")
                })
                .collect();
            for r in fresh {
                s.push("JobAvailable", r);
            }
            axum::Json(session_json(&s, id, &sess)).into_response()
        }
        (m, ["sessions", sid]) => {
            let mut s = fa.st();
            let queue_ttl = s.queue_ttl;
            let x = s.scale_sets.get_mut(&id).expect("checked");
            match x.session.as_mut() {
                Some(sess) if sess.id == *sid => match m {
                    Method::PATCH => {
                        sess.token = format!("queue-{}", uuid::Uuid::new_v4().simple());
                        sess.token_expires = Instant::now() + queue_ttl;
                        sess.last_seen = Instant::now();
                        let sess = sess.clone();
                        axum::Json(session_json(&s, id, &sess)).into_response()
                    }
                    Method::DELETE => {
                        x.session = None;
                        StatusCode::NO_CONTENT.into_response()
                    }
                    _ => exception(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "NotSupportedException",
                        "method",
                    ),
                },
                _ => exception(
                    StatusCode::NOT_FOUND,
                    "TaskAgentSessionExpiredException",
                    "no such session",
                ),
            }
        }
        (Method::POST, ["acquirejobs"]) => {
            if let Err(e) = queue_session(fa, headers, id) {
                return e;
            }
            let ids: Vec<i64> = serde_json::from_value(b).unwrap_or_default();
            let mut got = Vec::new();
            {
                let mut s = fa.st();
                for rid in ids {
                    let Some(j) = s.jobs.get_mut(&rid) else {
                        continue;
                    };
                    if j.info.scale_set_id != id {
                        continue;
                    }
                    j.info.acquire_calls += 1;
                    match j.info.status.as_str() {
                        "available" => {
                            j.info.status = "assigned".into();
                            j.assign_time = Some(now_rfc3339());
                            s.push("JobAssigned", rid);
                            got.push(rid);
                        }
                        // Already this scale set's: acquiring again is a no-op.
                        "acquired" | "assigned" => got.push(rid),
                        _ => {}
                    }
                }
            }
            fa.assign();
            axum::Json(json!({"count": got.len(), "value": got})).into_response()
        }
        (Method::POST, ["generatejitconfig"]) => {
            let Some(name) = b["name"].as_str().filter(|n| !n.is_empty()) else {
                return exception(
                    StatusCode::BAD_REQUEST,
                    "ArgumentException",
                    "name is required",
                );
            };
            let mut s = fa.st();
            if s.runners.values().any(|r| r.name == name) {
                return exception(
                    StatusCode::CONFLICT,
                    "GitHub.DistributedTask.WebApi.AgentExistsException",
                    &format!("a runner named {name} already exists"),
                );
            }
            let rid = s.next_runner;
            s.next_runner += 1;
            s.runners.insert(
                rid,
                FakeScaleSetRunner {
                    id: rid,
                    name: name.to_owned(),
                    scale_set_id: id,
                    online: false,
                    busy: false,
                    job: None,
                },
            );
            let count = s.runners.values().filter(|r| r.scale_set_id == id).count();
            let x = s.scale_sets.get_mut(&id).expect("checked");
            x.max_runners_seen = x.max_runners_seen.max(count);
            let encoded = FakeJitConfig {
                fake_github_url: s.url.clone(),
                runner_id: rid,
                runner_name: name.to_owned(),
            }
            .encode();
            axum::Json(json!({
                "runner": {"id": rid, "name": name, "runnerScaleSetId": id},
                "encodedJITConfig": encoded,
            }))
            .into_response()
        }
        _ => exception(StatusCode::NOT_FOUND, "NotFoundException", "no such route"),
    }
}

fn session_json(s: &St, ss: i64, sess: &Session) -> Value {
    json!({
        "sessionId": sess.id,
        "ownerName": sess.owner,
        "runnerScaleSet": s.scale_set_json(&s.scale_sets[&ss]),
        "messageQueueUrl": format!("{}/_queue/{ss}/messages?sessionId={}", s.url, sess.id),
        "messageQueueAccessToken": sess.token,
        "statistics": s.statistics(ss),
    })
}

/// The message queue: `GET …/messages?sessionId=&lastMessageId=` (long
/// poll) and `DELETE …/messages/{id}?sessionId=`.
async fn queue(
    fa: &FakeActions,
    method: &Method,
    ss: i64,
    rest: &[&str],
    query: &str,
    headers: &HeaderMap,
) -> Response {
    if !fa.st().scale_sets.contains_key(&ss) {
        return exception(
            StatusCode::NOT_FOUND,
            "RunnerScaleSetNotFoundException",
            "no such scale set",
        );
    }
    let session_id = match queue_session(fa, headers, ss) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if query_get(query, "sessionId").as_deref() != Some(session_id.as_str()) {
        return exception(
            StatusCode::NOT_FOUND,
            "TaskAgentSessionExpiredException",
            "no such session",
        );
    }
    match (method.clone(), rest) {
        (Method::DELETE, [mid]) => {
            let Ok(mid) = mid.parse::<i64>() else {
                return exception(
                    StatusCode::NOT_FOUND,
                    "NotFoundException",
                    "no such message",
                );
            };
            let mut s = fa.st();
            let removed = s
                .scale_sets
                .get_mut(&ss)
                .and_then(|x| x.messages.remove(&mid))
                .is_some();
            if removed {
                s.messages_deleted += 1;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, []) => {
            let accept = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !accept.contains("api-version=") {
                return exception(
                    StatusCode::BAD_REQUEST,
                    "VssVersionNotSpecifiedException",
                    "api-version is required in Accept",
                );
            }
            let last: i64 = query_get(query, "lastMessageId")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (wait, delay) = {
                let mut s = fa.st();
                s.last_poll_headers = Some(headers.clone());
                if let Some(sess) = s.scale_sets.get_mut(&ss).and_then(|x| x.session.as_mut()) {
                    sess.polling += 1;
                    sess.last_seen = Instant::now();
                }
                (s.poll_wait, s.poll_delay)
            };
            let r = long_poll(fa, ss, &session_id, last, wait, delay).await;
            let mut s = fa.st();
            if let Some(sess) = s.scale_sets.get_mut(&ss).and_then(|x| x.session.as_mut())
                && sess.id == session_id
            {
                sess.polling = sess.polling.saturating_sub(1);
                sess.last_seen = Instant::now();
            }
            r
        }
        _ => exception(StatusCode::NOT_FOUND, "NotFoundException", "no such route"),
    }
}

async fn long_poll(
    fa: &FakeActions,
    ss: i64,
    session_id: &str,
    last: i64,
    wait: Duration,
    delay: Duration,
) -> Response {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let deadline = Instant::now() + wait;
    loop {
        let n = fa.changed.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        {
            let mut s = fa.st();
            let Some(x) = s.scale_sets.get(&ss) else {
                return exception(
                    StatusCode::NOT_FOUND,
                    "RunnerScaleSetNotFoundException",
                    "no such scale set",
                );
            };
            if x.session.as_ref().is_none_or(|sess| sess.id != session_id) {
                return exception(
                    StatusCode::NOT_FOUND,
                    "TaskAgentSessionExpiredException",
                    "the session is gone",
                );
            }
            let ready = x.messages.range(last + 1..).next().map(|(id, _)| *id);
            if ready.is_none() && x.pending.is_empty() {
                s.reoffer(ss);
            }
            let x = &s.scale_sets[&ss];
            let id = match ready {
                Some(id) => Some(id),
                None if !x.pending.is_empty() => {
                    let id = s.next_message;
                    s.next_message += 1;
                    let x = s.scale_sets.get_mut(&ss).expect("present");
                    let body: Vec<Value> = x.pending.drain(..).collect();
                    x.messages.insert(id, Message { id, body });
                    Some(id)
                }
                None => None,
            };
            if let Some(id) = id {
                let m = s.scale_sets[&ss].messages[&id].clone();
                return axum::Json(json!({
                    "messageId": m.id,
                    "messageType": "RunnerScaleSetJobMessages",
                    "body": Value::Array(m.body).to_string(),
                    "statistics": s.statistics(ss),
                }))
                .into_response();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return StatusCode::ACCEPTED.into_response();
        }
        // Woken by a change, or in time to re-offer what nobody took.
        let reoffer = fa.st().reoffer_after.max(Duration::from_millis(100));
        let _ = tokio::time::timeout(left.min(reoffer), n).await;
    }
}
