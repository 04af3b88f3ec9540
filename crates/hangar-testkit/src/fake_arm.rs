//! `FakeArm`: a loopback Azure Resource Manager with state, so the Azure
//! provider can be tested against ARM's real contract — long-running
//! operations polled through `Azure-AsyncOperation` and `Location`,
//! `nextLink` paging, CloudError bodies, confidential-VM validation, and the
//! OS disks and NICs that `deleteOption: Detach` leaves behind — without an
//! Azure subscription.
//!
//! It holds VMs, NICs, public IPs and managed disks keyed by their
//! (case-insensitive) resource id. State changes only when a request arrives:
//! a write, a poll of an operation URL, or a GET of the resource. There are no
//! background timers, so tests are deterministic. An operation answers
//! `InProgress` for [`FakeArm::set_polls`] observations (polls of its URL or
//! GETs of its resource), then reaches its terminal state on the next one.
//! Faults (statuses, 429, 409, latency, provisioning failures, operations
//! that never finish) are injected per path. With [`ArmBoot::Simulate`] a VM
//! whose create succeeds "boots": its `customData` script is parsed (never
//! run) and [`crate::runner_sim::boot`] walks through the bootstrap calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hangar_core::Secret;
use hangar_core::provider::{BootstrapParams, ProxySettings};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::runner_sim;

/// api-version put in the operation URLs the fake hands out.
const COMPUTE_API: &str = "2024-07-01";
const DISK_API: &str = "2024-03-02";
const NETWORK_API: &str = "2024-07-01";
/// Largest decoded `customData`/`userData` ARM accepts.
const CUSTOM_DATA_MAX: usize = 65_535;
const ENCRYPTION_TYPES: [&str; 3] = [
    "VMGuestStateOnly",
    "DiskWithVMGuestState",
    "NonPersistedTPM",
];

/// The resource types the fake holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArmKind {
    VirtualMachine,
    NetworkInterface,
    PublicIpAddress,
    Disk,
}

impl ArmKind {
    const ALL: [ArmKind; 4] = [
        ArmKind::VirtualMachine,
        ArmKind::NetworkInterface,
        ArmKind::PublicIpAddress,
        ArmKind::Disk,
    ];

    /// The ARM `type`, e.g. `Microsoft.Compute/virtualMachines`.
    pub fn resource_type(self) -> &'static str {
        match self {
            ArmKind::VirtualMachine => "Microsoft.Compute/virtualMachines",
            ArmKind::NetworkInterface => "Microsoft.Network/networkInterfaces",
            ArmKind::PublicIpAddress => "Microsoft.Network/publicIPAddresses",
            ArmKind::Disk => "Microsoft.Compute/disks",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            ArmKind::VirtualMachine | ArmKind::Disk => "Microsoft.Compute",
            ArmKind::NetworkInterface | ArmKind::PublicIpAddress => "Microsoft.Network",
        }
    }

    fn collection(self) -> &'static str {
        match self {
            ArmKind::VirtualMachine => "virtualMachines",
            ArmKind::NetworkInterface => "networkInterfaces",
            ArmKind::PublicIpAddress => "publicIPAddresses",
            ArmKind::Disk => "disks",
        }
    }

    fn parse(namespace: &str, collection: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| {
            k.namespace().eq_ignore_ascii_case(namespace)
                && k.collection().eq_ignore_ascii_case(collection)
        })
    }

    /// Longest name ARM accepts (Linux VM names: 64).
    fn max_name(self) -> usize {
        match self {
            ArmKind::VirtualMachine => 64,
            _ => 80,
        }
    }
}

/// A request the fake received (every one, polls included, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The JSON body; a non-JSON body is kept as a JSON string.
    pub body: Option<Value>,
    pub authorization: Option<String>,
}

/// A resource as the fake currently holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmResource {
    pub kind: ArmKind,
    pub name: String,
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub provisioning_state: String,
    /// The stored resource JSON as GET returns it.
    pub body: Value,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmFault {
    /// Answer this status with a CloudError body carrying `code`.
    Status { status: u16, code: String },
    /// 429 with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// 409 `Conflict`.
    Conflict,
    /// The matching PUT is accepted, but its operation ends `Failed` with
    /// this error and the resource is left with provisioningState `Failed`.
    ProvisioningFailed { code: String, message: String },
    /// The operation started by the matching PUT or DELETE never finishes.
    NeverFinish,
    /// Answer normally, after this delay.
    Latency(Duration),
}

impl ArmFault {
    /// Faults that shape the operation a write starts, rather than the answer.
    fn shapes_operation(&self) -> bool {
        matches!(
            self,
            ArmFault::ProvisioningFailed { .. } | ArmFault::NeverFinish
        )
    }
}

/// What happens when a VM create succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArmBoot {
    /// Nothing: the VM exists but no runner comes up.
    #[default]
    None,
    /// Parse the VM's `customData` script and run [`runner_sim::boot`].
    Simulate,
}

#[derive(Debug, Clone)]
struct Fault {
    method: Option<Method>,
    path_contains: String,
    remaining: u32,
    fault: ArmFault,
}

/// What a VM needs beyond its JSON body.
#[derive(Debug, Clone)]
struct VmExtra {
    /// Kept because GET does not return it.
    custom_data: Option<String>,
    user_data: Option<String>,
    os_disk_name: String,
    os_disk_delete: bool,
    storage_type: String,
    encryption: Option<String>,
    /// (NIC key, delete with the VM).
    nics: Vec<(String, bool)>,
    /// Set once the OS disk exists.
    disk: Option<String>,
    failure: Option<(String, String)>,
}

#[derive(Debug, Clone)]
struct Res {
    kind: ArmKind,
    sub: String,
    rg: String,
    name: String,
    id: String,
    location: String,
    tags: BTreeMap<String, String>,
    body: Value,
    /// The running operation that keeps other writes out.
    busy: Option<String>,
    /// NIC or disk: the key of the VM it is attached to.
    attached_to: Option<String>,
    vm: Option<VmExtra>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpWhat {
    CreateVm,
    UpdateVm,
    PutNetwork,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpStatus {
    InProgress,
    Succeeded,
    Failed { code: String, message: String },
}

#[derive(Debug, Clone)]
struct Op {
    what: OpWhat,
    target: String,
    remaining: u32,
    never: bool,
    fail: Option<(String, String)>,
    status: OpStatus,
    start: String,
    end: Option<String>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    token: Option<String>,
    polls: u32,
    page_size: usize,
    boot: ArmBoot,
    faults: Vec<Fault>,
    requests: Vec<ArmRequest>,
    res: BTreeMap<String, Res>,
    ops: HashMap<String, Op>,
    boot_errors: Vec<String>,
    booted: Vec<String>,
    /// (VM name, base64 script) to boot once the lock is released.
    boots: Vec<(String, String)>,
    next_private: u32,
    next_public: u32,
}

/// Path of the managed-identity token endpoint the fake also serves; point
/// `IDENTITY_ENDPOINT` at `{url}{IDENTITY_PATH}` (any `IDENTITY_HEADER`).
pub const IDENTITY_PATH: &str = "/_identity/token";

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A running fake ARM server. Cloning shares the same server.
#[derive(Debug, Clone)]
pub struct FakeArm {
    url: String,
    state: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl FakeArm {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeArm {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("http://{addr}");
        let arm = FakeArm {
            url: url.clone(),
            state: Arc::new(Mutex::new(Inner {
                url,
                token: None,
                polls: 1,
                page_size: 2,
                boot: ArmBoot::None,
                faults: Vec::new(),
                requests: Vec::new(),
                res: BTreeMap::new(),
                ops: HashMap::new(),
                boot_errors: Vec::new(),
                booted: Vec::new(),
                boots: Vec::new(),
                next_private: 0,
                next_public: 0,
            })),
            changed: Arc::new(Notify::new()),
        };
        let app = Router::new().fallback(handle).with_state(arm.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        arm
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn st(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().expect("fake arm lock")
    }

    /// From now on every request needs `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        self.st().token = Some(token.to_owned());
    }

    /// Each operation started from now on answers `n` `InProgress`
    /// observations before its terminal state (default 1).
    pub fn set_polls(&self, n: u32) {
        self.st().polls = n;
    }

    /// Items per list page (default 2), to exercise `nextLink`.
    pub fn set_page_size(&self, n: usize) {
        self.st().page_size = n.max(1);
    }

    pub fn set_boot(&self, boot: ArmBoot) {
        self.st().boot = boot;
    }

    /// The next `times` requests whose path contains `path_contains`
    /// (case-insensitive), with `method` when given, get `fault`.
    /// `ProvisioningFailed` matches only PUTs that start an operation,
    /// `NeverFinish` only PUTs and DELETEs that start one.
    pub fn inject(&self, method: Option<Method>, path_contains: &str, times: u32, fault: ArmFault) {
        self.st().faults.push(Fault {
            method,
            path_contains: path_contains.to_ascii_lowercase(),
            remaining: times,
            fault,
        });
    }

    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// Every request received, in order (polls included).
    pub fn requests(&self) -> Vec<ArmRequest> {
        self.st().requests.clone()
    }

    /// Everything that currently exists, ordered by id.
    pub fn resources(&self) -> Vec<ArmResource> {
        self.st().res.values().map(Res::public).collect()
    }

    /// The resource of `kind` named `name` (case-insensitive), in any group.
    pub fn resource(&self, kind: ArmKind, name: &str) -> Option<ArmResource> {
        self.st()
            .res
            .values()
            .find(|r| r.kind == kind && r.name.eq_ignore_ascii_case(name))
            .map(Res::public)
    }

    /// Errors of simulated boots, each prefixed with the VM name.
    pub fn boot_errors(&self) -> Vec<String> {
        self.st().boot_errors.clone()
    }

    /// Names of VMs whose simulated boot completed.
    pub fn booted(&self) -> Vec<String> {
        self.st().booted.clone()
    }

    /// Waits until `cond` holds, or panics naming `what` after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&FakeArm) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() && !cond(self) {
                let have: Vec<String> = self
                    .resources()
                    .iter()
                    .map(|r| format!("{:?} {} ({})", r.kind, r.name, r.provisioning_state))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; resources {have:?}; boot errors {:?}",
                    self.boot_errors()
                );
            }
        }
    }

    fn start_boots(&self, boots: Vec<(String, String)>) {
        for (vm, script) in boots {
            match bootstrap_from_custom_data(&script) {
                Ok(params) => {
                    let arm = self.clone();
                    tokio::spawn(async move {
                        let outcome = runner_sim::boot(&params).await;
                        {
                            let mut s = arm.st();
                            match outcome {
                                Ok(_) => s.booted.push(vm),
                                Err(e) => {
                                    tracing::warn!(vm = %vm, error = %e, "simulated boot failed");
                                    s.boot_errors.push(format!("{vm}: {e}"));
                                }
                            }
                        }
                        arm.changed.notify_waiters();
                    });
                }
                Err(e) => self.st().boot_errors.push(format!("{vm}: {e}")),
            }
        }
    }
}

impl Res {
    fn public(&self) -> ArmResource {
        ArmResource {
            kind: self.kind,
            name: self.name.clone(),
            id: self.id.clone(),
            tags: self.tags.clone(),
            provisioning_state: self.state().to_owned(),
            body: self.body.clone(),
        }
    }

    fn state(&self) -> &str {
        self.body["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("")
    }

    fn set_state(&mut self, state: &str) {
        set_path(
            &mut self.body,
            &["properties", "provisioningState"],
            json!(state),
        );
    }
}

// ---------------------------------------------------------------------------
// Errors and responses

/// An ARM CloudError answer.
#[derive(Debug)]
struct ArmError {
    status: StatusCode,
    code: String,
    message: String,
}

type Reply = Result<Response, ArmError>;

/// The parts of a PUT request every resource kind needs.
struct PutStart {
    key: String,
    body: Value,
    location: String,
    tags: BTreeMap<String, String>,
}

fn fail(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
    ArmError {
        status,
        code: code.to_owned(),
        message: message.into(),
    }
}

fn bad(code: &str, message: impl Into<String>) -> ArmError {
    fail(StatusCode::BAD_REQUEST, code, message)
}

fn invalid(message: impl Into<String>) -> ArmError {
    bad("InvalidParameter", message)
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        respond(self.status, Some(body), &[("x-ms-error-code", self.code)])
    }
}

fn respond(
    status: StatusCode,
    body: Option<Value>,
    headers: &[(&'static str, String)],
) -> Response {
    let mut resp = match body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-ms-request-id", v);
    }
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    resp
}

fn not_found(kind: ArmKind, name: &str, rg: &str) -> ArmError {
    fail(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            kind.resource_type()
        ),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------
// Small parsers

/// Sets `path` in `v`, creating objects on the way; leaves `v` alone where
/// something on the way is not an object (request input may be any shape).
fn set_path(v: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        if cur.is_null() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        cur = obj.entry(p.to_string()).or_insert(Value::Null);
    }
    if cur.is_null() {
        *cur = json!({});
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.to_string(), value);
    }
}

fn remove_path(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = v;
    for p in parents {
        cur = cur.get_mut(*p)?;
    }
    cur.as_object_mut()?.remove(*last)
}

fn pct_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

/// `tagName eq 'k'` or `tagName eq 'k' and tagValue eq 'v'` (OData quoting,
/// `''` for a quote) → (name, value).
fn parse_tag_filter(filter: &str) -> Option<(String, Option<String>)> {
    let mut tokens: Vec<(bool, String)> = Vec::new();
    let mut chars = filter.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    '\'' => break,
                    c => s.push(c),
                }
            }
            tokens.push((true, s));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            tokens.push((false, s.to_ascii_lowercase()));
        }
    }
    let word = |t: &(bool, String), w: &str| !t.0 && t.1 == w;
    match tokens.as_slice() {
        [a, b, (true, k)] if word(a, "tagname") && word(b, "eq") => Some((k.clone(), None)),
        [a, b, (true, k), c, d, e, (true, v)]
            if word(a, "tagname")
                && word(b, "eq")
                && word(c, "and")
                && word(d, "tagvalue")
                && word(e, "eq") =>
        {
            Some((k.clone(), Some(v.clone())))
        }
        _ => None,
    }
}

/// Confidential-capable sizes: `Standard_{DC,EC}<n>{as,ads,es,eds}_v5`, and
/// leniently `{as,ads}_v6`.
fn confidential_size(size: &str) -> bool {
    let s = size.to_ascii_lowercase();
    let Some(rest) = s.strip_prefix("standard_") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("dc").or_else(|| rest.strip_prefix("ec")) else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && matches!(
            &rest[digits..],
            "as_v5" | "ads_v5" | "es_v5" | "eds_v5" | "as_v6" | "ads_v6"
        )
}

/// One shell word as `sh` reads it: unquoted text, `'…'` and `\x`.
fn sh_unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Reads the variables Hangar's boot script sets (see
/// `hangar_core::userdata::render`). The script is never executed.
fn bootstrap_from_custom_data(b64: &str) -> Result<BootstrapParams, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("customData is not base64: {e}"))?;
    let script = String::from_utf8(bytes).map_err(|_| "customData is not UTF-8".to_owned())?;
    if !script.starts_with("#!") {
        return Err("customData is not a script (no #! line)".into());
    }
    let mut vars: HashMap<String, String> = HashMap::new();
    for line in script.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let is_name = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !is_name || vars.contains_key(k) {
            continue;
        }
        if let Some(v) = sh_unquote(v) {
            vars.insert(k.to_owned(), v);
        }
    }
    let need = |k: &str| {
        vars.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("customData sets no {k}"))
    };
    let opt = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(BootstrapParams {
        repo_url: opt("HANGAR_REPO_URL").unwrap_or_default(),
        metadata_url: need("HANGAR_METADATA_URL")?,
        callback_url: need("HANGAR_CALLBACK_URL")?,
        instance_token: Secret::new(need("HANGAR_TOKEN")?),
        jit_config_enabled: opt("HANGAR_JIT").as_deref() == Some("1"),
        runner_group: opt("HANGAR_RUNNER_GROUP"),
        tools: Vec::new(),
        ca_cert_bundle: None,
        proxy: ProxySettings {
            http_proxy: opt("http_proxy"),
            https_proxy: opt("https_proxy"),
            no_proxy: opt("no_proxy"),
        },
    })
}

fn canonical_id(kind: ArmKind, sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{}/{name}",
        kind.namespace(),
        kind.collection()
    )
}

fn key_of(kind: ArmKind, sub: &str, rg: &str, name: &str) -> String {
    canonical_id(kind, sub, rg, name).to_ascii_lowercase()
}

/// ARM normalises `West US` to `westus`.
fn norm_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn check_name(kind: ArmKind, name: &str) -> Result<(), ArmError> {
    let ok = !name.is_empty()
        && name.len() <= kind.max_name()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            "InvalidResourceName",
            format!(
                "Resource name '{name}' is invalid: use 1 to {} letters, digits, '-', '_' or '.', not ending in '.'",
                kind.max_name()
            ),
        ))
    }
}

fn require_location(body: &Value) -> Result<String, ArmError> {
    match body["location"].as_str() {
        Some(l) if !l.trim().is_empty() => Ok(norm_location(l)),
        _ => Err(bad(
            "LocationRequired",
            "The location property is required for this definition.",
        )),
    }
}

fn parse_tags(body: &Value) -> Result<BTreeMap<String, String>, ArmError> {
    let mut tags = BTreeMap::new();
    match &body["tags"] {
        Value::Null => {}
        Value::Object(m) => {
            if m.len() > 50 {
                return Err(invalid("A resource can carry at most 50 tags."));
            }
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(bad(
                        "InvalidRequestContent",
                        format!("The value of tag '{k}' must be a string."),
                    ));
                };
                if k.is_empty() || k.len() > 512 || v.len() > 256 {
                    return Err(invalid(format!(
                        "Tag '{k}': names are 1 to 512 characters, values at most 256."
                    )));
                }
                tags.insert(k.clone(), v.to_owned());
            }
        }
        _ => {
            return Err(bad(
                "InvalidRequestContent",
                "tags must be an object of strings.",
            ));
        }
    }
    Ok(tags)
}

fn parse_delete_option(v: &Value, what: &str) -> Result<bool, ArmError> {
    match v {
        Value::Null => Ok(false),
        Value::String(s) if s.eq_ignore_ascii_case("Delete") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("Detach") => Ok(false),
        other => Err(invalid(format!(
            "{what} deleteOption must be 'Delete' or 'Detach', not {other}."
        ))),
    }
}

fn check_base64(v: &Value, field: &str) -> Result<Option<String>, ArmError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| {
                    invalid(format!(
                        "The value of parameter {field} is invalid: not base64 ({e})."
                    ))
                })?;
            if decoded.len() > CUSTOM_DATA_MAX {
                return Err(invalid(format!(
                    "The value of parameter {field} is invalid: {} bytes decoded, at most {CUSTOM_DATA_MAX} allowed.",
                    decoded.len()
                )));
            }
            Ok(Some(s.clone()))
        }
        _ => Err(invalid(format!(
            "The value of parameter {field} must be a string."
        ))),
    }
}

// ---------------------------------------------------------------------------
// Routing

#[derive(Debug)]
enum Route {
    Item {
        kind: ArmKind,
        sub: String,
        rg: String,
        name: String,
    },
    InstanceView {
        sub: String,
        rg: String,
        name: String,
    },
    List {
        kind: ArmKind,
        sub: String,
        rg: Option<String>,
    },
    Resources {
        sub: String,
        rg: String,
    },
    ResourceGroup {
        sub: String,
        rg: String,
    },
    Operation {
        id: String,
        /// `Location` semantics (202 while running, then 200/204).
        location_style: bool,
    },
}

fn parse_route(path: &str, monitor: bool) -> Option<Route> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lc: Vec<String> = seg.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lc.iter().map(String::as_str).collect();
    let s = |i: usize| seg.get(i).map(|v| v.to_string()).unwrap_or_default();
    match l.as_slice() {
        ["subscriptions", _, "resourcegroups", _] => Some(Route::ResourceGroup {
            sub: s(1),
            rg: s(3),
        }),
        ["subscriptions", _, "resourcegroups", _, "resources"] => Some(Route::Resources {
            sub: s(1),
            rg: s(3),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ns,
            coll,
        ] => Some(Route::List {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: Some(s(3)),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ns,
            coll,
            _,
        ] => Some(Route::Item {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: s(3),
            name: s(7),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.compute",
            "virtualmachines",
            _,
            "instanceview",
        ] => Some(Route::InstanceView {
            sub: s(1),
            rg: s(3),
            name: s(7),
        }),
        [
            "subscriptions",
            _,
            "providers",
            ns,
            "locations",
            _,
            what,
            id,
        ] if matches!(*ns, "microsoft.compute" | "microsoft.network")
            && matches!(*what, "operations" | "operationresults" | "diskoperations") =>
        {
            Some(Route::Operation {
                id: id.to_string(),
                location_style: *what == "operationresults" || monitor,
            })
        }
        ["subscriptions", _, "providers", ns, coll] => Some(Route::List {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: None,
        }),
        _ => None,
    }
}

/// A resource referenced by id from another resource's body.
fn parse_ref(id: &str, want: ArmKind) -> Option<String> {
    match parse_route(id, false)? {
        Route::Item {
            kind,
            sub,
            rg,
            name,
        } if kind == want => Some(key_of(kind, &sub, &rg, &name)),
        _ => None,
    }
}

struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    params: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json_object(&self) -> Result<Value, ArmError> {
        let v: Value = serde_json::from_slice(self.body).map_err(|e| {
            bad(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: {e}"),
            )
        })?;
        if !v.is_object() {
            return Err(bad(
                "InvalidRequestContent",
                "The request content must be a JSON object.",
            ));
        }
        Ok(v)
    }

    fn create_only(&self) -> bool {
        self.header("if-none-match")
            .is_some_and(|v| v.trim() == "*")
    }
}

async fn handle(
    State(arm): State<FakeArm>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let fault = {
        let mut s = arm.st();
        let recorded = if body.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
            )
        };
        s.requests.push(ArmRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: recorded,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        s.take_fault(&method, &path, |f| !f.shapes_operation())
    };
    let early = match fault {
        Some(ArmFault::Latency(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(ArmFault::Status { status, code }) => Some(
            fail(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &code,
                "Injected fault.",
            )
            .into_response(),
        ),
        Some(ArmFault::TooManyRequests { retry_after_secs }) => {
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The request is being throttled.",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Some(ArmFault::Conflict) => Some(
            fail(
                StatusCode::CONFLICT,
                "Conflict",
                "Injected conflict: another operation is in progress.",
            )
            .into_response(),
        ),
        Some(ArmFault::ProvisioningFailed { .. } | ArmFault::NeverFinish) | None => None,
    };
    let resp = match early {
        Some(r) => r,
        None => {
            let req = Req {
                method: &method,
                path: &path,
                query: &query,
                params: parse_query(&query),
                headers: &headers,
                body: &body,
            };
            let (resp, boots) = {
                let mut s = arm.st();
                let resp = s.serve(&req).unwrap_or_else(IntoResponse::into_response);
                (resp, std::mem::take(&mut s.boots))
            };
            arm.start_boots(boots);
            resp
        }
    };
    arm.changed.notify_waiters();
    resp
}

// ---------------------------------------------------------------------------
// The ARM behaviour

impl Inner {
    fn take_fault(
        &mut self,
        method: &Method,
        path: &str,
        applies: impl Fn(&ArmFault) -> bool,
    ) -> Option<ArmFault> {
        let path = path.to_ascii_lowercase();
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && applies(&f.fault)
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&f.path_contains)
        })?;
        f.remaining -= 1;
        Some(f.fault.clone())
    }

    /// The fault that shapes the operation a PUT or DELETE is starting.
    fn operation_fault(&mut self, req: &Req<'_>) -> Option<ArmFault> {
        let is_put = *req.method == Method::PUT;
        self.take_fault(req.method, req.path, |f| match f {
            ArmFault::ProvisioningFailed { .. } => is_put,
            ArmFault::NeverFinish => true,
            _ => false,
        })
    }

    fn serve(&mut self, req: &Req<'_>) -> Reply {
        if req.path == IDENTITY_PATH {
            // A managed-identity token endpoint (`IDENTITY_ENDPOINT` style),
            // so a real hangard can be pointed at this fake.
            if req.header("x-identity-header").is_none() {
                return Err(bad(
                    "MissingIdentityHeader",
                    "X-IDENTITY-HEADER is required",
                ));
            }
            return Ok(respond(
                StatusCode::OK,
                Some(json!({
                    "access_token": self.token.clone().unwrap_or_else(|| "fake-arm-token".into()),
                    "expires_on": (now_unix() + 3600).to_string(),
                    "token_type": "Bearer"
                })),
                &[],
            ));
        }
        if let Some(token) = &self.token {
            let auth = req.header("authorization");
            let ok = auth
                .and_then(|a| a.split_once(' '))
                .is_some_and(|(scheme, t)| {
                    scheme.eq_ignore_ascii_case("bearer") && t.trim() == token
                });
            if !ok {
                let why = if auth.is_none() {
                    "Authentication failed. The 'Authorization' header is missing."
                } else {
                    "Authentication failed. The access token is not valid."
                };
                let mut r =
                    fail(StatusCode::UNAUTHORIZED, "AuthenticationFailed", why).into_response();
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static(
                        "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\"",
                    ),
                );
                return Ok(r);
            }
        }
        if req.param("api-version").is_none_or(|v| v.trim().is_empty()) {
            return Err(bad(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        let monitor = req
            .param("monitor")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let Some(route) = parse_route(req.path, monitor) else {
            return Err(bad(
                "InvalidResourceType",
                format!(
                    "The fake ARM has no resource type at {} {}.",
                    req.method, req.path
                ),
            ));
        };
        let m = req.method.clone();
        match route {
            Route::Item {
                kind,
                sub,
                rg,
                name,
            } => match (m, kind) {
                (Method::GET, _) => self.get_item(kind, &sub, &rg, &name, req),
                (Method::PUT, ArmKind::VirtualMachine) => self.put_vm(&sub, &rg, &name, req),
                (Method::PUT, ArmKind::NetworkInterface) => self.put_nic(&sub, &rg, &name, req),
                (Method::PUT, ArmKind::PublicIpAddress) => self.put_pip(&sub, &rg, &name, req),
                (Method::DELETE, _) => self.delete(kind, &sub, &rg, &name, req),
                (m, _) => Err(not_allowed(&m, kind.resource_type())),
            },
            Route::InstanceView { sub, rg, name } if m == Method::GET => {
                let key = key_of(ArmKind::VirtualMachine, &sub, &rg, &name);
                self.tick_resource(&key);
                let r = self
                    .res
                    .get(&key)
                    .ok_or_else(|| not_found(ArmKind::VirtualMachine, &name, &rg))?;
                Ok(respond(StatusCode::OK, Some(instance_view(r)), &[]))
            }
            Route::List { kind, sub, rg } if m == Method::GET => {
                self.list(kind, &sub, rg.as_deref(), req)
            }
            Route::Resources { sub, rg } if m == Method::GET => self.list_resources(&sub, &rg, req),
            // Every resource group exists (health checks read one).
            Route::ResourceGroup { sub, rg } if m == Method::GET => Ok(respond(
                StatusCode::OK,
                Some(json!({
                    "id": format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                    "name": rg,
                    "type": "Microsoft.Resources/resourceGroups",
                    "location": "westeurope",
                    "properties": {"provisioningState": "Succeeded"}
                })),
                &[],
            )),
            Route::Operation { id, location_style } if m == Method::GET => {
                self.poll(&id, location_style, req)
            }
            _ => Err(not_allowed(req.method, req.path)),
        }
    }

    // -- operations -------------------------------------------------------

    fn new_op(&mut self, what: OpWhat, target: &str, fault: Option<ArmFault>) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let (never, fail) = match fault {
            Some(ArmFault::NeverFinish) => (true, None),
            Some(ArmFault::ProvisioningFailed { code, message }) => (false, Some((code, message))),
            _ => (false, None),
        };
        self.ops.insert(
            id.clone(),
            Op {
                what,
                target: target.to_owned(),
                remaining: self.polls,
                never,
                fail,
                status: OpStatus::InProgress,
                start: now(),
                end: None,
            },
        );
        id
    }

    /// A PUT's answer: 200 (update) or 201 (new) with the resource and the
    /// operation to poll.
    fn accepted_put(
        &self,
        existed: bool,
        kind: ArmKind,
        sub: &str,
        location: &str,
        op: &str,
        body: Value,
    ) -> Response {
        let status = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let headers = [
            (
                "azure-asyncoperation",
                self.async_url(kind, sub, location, op),
            ),
            ("retry-after", "0".to_owned()),
        ];
        respond(status, Some(body), &headers)
    }

    fn async_url(&self, kind: ArmKind, sub: &str, location: &str, op: &str) -> String {
        let api = match kind.namespace() {
            "Microsoft.Compute" => COMPUTE_API,
            _ => NETWORK_API,
        };
        format!(
            "{}/subscriptions/{sub}/providers/{}/locations/{location}/operations/{op}?api-version={api}",
            self.url,
            kind.namespace()
        )
    }

    fn location_url(&self, kind: ArmKind, sub: &str, location: &str, op: &str) -> String {
        let url = &self.url;
        match kind {
            ArmKind::VirtualMachine => format!(
                "{url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/{op}?monitor=true&api-version={COMPUTE_API}"
            ),
            ArmKind::Disk => format!(
                "{url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/DiskOperations/{op}?monitor=true&api-version={DISK_API}"
            ),
            ArmKind::NetworkInterface | ArmKind::PublicIpAddress => format!(
                "{url}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operationResults/{op}?api-version={NETWORK_API}"
            ),
        }
    }

    /// One observation of an operation: counts down, then finishes it.
    fn tick(&mut self, op_id: &str) {
        let Some(op) = self.ops.get_mut(op_id) else {
            return;
        };
        if op.status != OpStatus::InProgress || op.never {
            return;
        }
        if op.remaining > 0 {
            op.remaining -= 1;
            return;
        }
        op.status = match op.fail.clone() {
            Some((code, message)) => OpStatus::Failed { code, message },
            None => OpStatus::Succeeded,
        };
        op.end = Some(now());
        let (what, target, status) = (op.what, op.target.clone(), op.status.clone());
        if self
            .res
            .get(&target)
            .is_some_and(|r| r.busy.as_deref() == Some(op_id))
        {
            self.finish(what, &target, &status);
        }
    }

    fn tick_resource(&mut self, key: &str) {
        if let Some(op) = self.res.get(key).and_then(|r| r.busy.clone()) {
            self.tick(&op);
        }
    }

    fn finish(&mut self, what: OpWhat, key: &str, status: &OpStatus) {
        let failure = match status {
            OpStatus::Failed { code, message } => Some((code.clone(), message.clone())),
            _ => None,
        };
        match what {
            OpWhat::CreateVm | OpWhat::UpdateVm => {
                let boot = self.boot;
                let Some(vm) = self.res.get_mut(key) else {
                    return;
                };
                vm.busy = None;
                vm.set_state(if failure.is_some() {
                    "Failed"
                } else {
                    "Succeeded"
                });
                let mut boot_script = None;
                if let Some(x) = vm.vm.as_mut() {
                    x.failure = failure.clone();
                    if what == OpWhat::CreateVm && failure.is_none() && boot == ArmBoot::Simulate {
                        boot_script = x.custom_data.clone().or_else(|| x.user_data.clone());
                        if boot_script.is_none() {
                            self.boot_errors
                                .push(format!("{}: the VM has no customData", vm.name));
                        }
                    }
                }
                if let Some(script) = boot_script {
                    self.boots.push((vm.name.clone(), script));
                }
                // The OS disk exists once the VM got as far as provisioning,
                // whether or not provisioning then failed.
                if what == OpWhat::CreateVm {
                    self.create_os_disk(key);
                }
            }
            OpWhat::PutNetwork => {
                if let Some(r) = self.res.get_mut(key) {
                    r.busy = None;
                    r.set_state(if failure.is_some() {
                        "Failed"
                    } else {
                        "Succeeded"
                    });
                }
            }
            OpWhat::Delete => {
                let Some(r) = self.res.remove(key) else {
                    return;
                };
                match r.kind {
                    ArmKind::VirtualMachine => self.release_vm(&r),
                    ArmKind::NetworkInterface => self.forget_nic(&r),
                    ArmKind::PublicIpAddress | ArmKind::Disk => {}
                }
            }
        }
    }

    fn create_os_disk(&mut self, vm_key: &str) {
        let Some(vm) = self.res.get(vm_key) else {
            return;
        };
        let Some(x) = vm.vm.as_ref() else {
            return;
        };
        if x.disk.is_some() {
            return;
        }
        let key = key_of(ArmKind::Disk, &vm.sub, &vm.rg, &x.os_disk_name);
        let id = canonical_id(ArmKind::Disk, &vm.sub, &vm.rg, &x.os_disk_name);
        let mut props = json!({
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {"createOption": "FromImage"},
            "diskSizeGB": 30,
            "diskState": "Attached",
            "provisioningState": "Succeeded",
            "timeCreated": now(),
            "uniqueId": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(enc) = &x.encryption {
            let security_type = match enc.to_ascii_lowercase().as_str() {
                "vmgueststateonly" => "ConfidentialVM_VMGuestStateOnlyEncryptedWithPlatformKey",
                "nonpersistedtpm" => "ConfidentialVM_NonPersistedTPM",
                _ => "ConfidentialVM_DiskEncryptedWithPlatformKey",
            };
            props["securityProfile"] = json!({"securityType": security_type});
        }
        let body = json!({
            "id": id,
            "name": x.os_disk_name,
            "type": ArmKind::Disk.resource_type(),
            "location": vm.location,
            "tags": vm.tags,
            "managedBy": vm.id,
            "sku": {"name": x.storage_type, "tier": "Premium"},
            "properties": props,
        });
        let disk = Res {
            kind: ArmKind::Disk,
            sub: vm.sub.clone(),
            rg: vm.rg.clone(),
            name: x.os_disk_name.clone(),
            id: id.clone(),
            location: vm.location.clone(),
            tags: vm.tags.clone(),
            body,
            busy: None,
            attached_to: Some(vm_key.to_owned()),
            vm: None,
        };
        self.res.insert(key.clone(), disk);
        if let Some(vm) = self.res.get_mut(vm_key) {
            set_path(
                &mut vm.body,
                &[
                    "properties",
                    "storageProfile",
                    "osDisk",
                    "managedDisk",
                    "id",
                ],
                json!(id),
            );
            if let Some(x) = vm.vm.as_mut() {
                x.disk = Some(key);
            }
        }
    }

    /// A deleted VM's disk and NICs go with it or stay, per `deleteOption`.
    fn release_vm(&mut self, vm: &Res) {
        let Some(x) = &vm.vm else { return };
        let vm_key = vm.id.to_ascii_lowercase();
        if let Some(dk) = &x.disk {
            if x.os_disk_delete {
                self.res.remove(dk);
            } else if let Some(d) = self.res.get_mut(dk)
                && d.attached_to.as_deref() == Some(&vm_key)
            {
                d.attached_to = None;
                remove_path(&mut d.body, &["managedBy"]);
                set_path(
                    &mut d.body,
                    &["properties", "diskState"],
                    json!("Unattached"),
                );
            }
        }
        for (nk, delete) in &x.nics {
            let attached_here = self
                .res
                .get(nk)
                .is_some_and(|n| n.attached_to.as_deref() == Some(&vm_key));
            if !attached_here {
                continue;
            }
            if *delete {
                if let Some(nic) = self.res.remove(nk) {
                    self.forget_nic(&nic);
                }
            } else if let Some(n) = self.res.get_mut(nk) {
                n.attached_to = None;
                remove_path(&mut n.body, &["properties", "virtualMachine"]);
            }
        }
    }

    /// Drops the back-references public IPs hold to a NIC that went away.
    fn forget_nic(&mut self, nic: &Res) {
        let prefix = format!("{}/", nic.id.to_ascii_lowercase());
        for r in self.res.values_mut() {
            if r.kind == ArmKind::PublicIpAddress
                && r.body["properties"]["ipConfiguration"]["id"]
                    .as_str()
                    .is_some_and(|id| id.to_ascii_lowercase().starts_with(&prefix))
            {
                remove_path(&mut r.body, &["properties", "ipConfiguration"]);
            }
        }
    }

    fn poll(&mut self, id: &str, location_style: bool, req: &Req<'_>) -> Reply {
        let id = id.to_ascii_lowercase();
        if !self.ops.contains_key(&id) {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The operation '{id}' was not found."),
            ));
        }
        self.tick(&id);
        let op = self.ops.get(&id).cloned().ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The operation was not found.",
            )
        })?;
        let retry = ("retry-after", "0".to_owned());
        if location_style {
            return match op.status {
                OpStatus::InProgress => {
                    let again = format!("{}{}?{}", self.url, req.path, req.query);
                    Ok(respond(
                        StatusCode::ACCEPTED,
                        None,
                        &[retry, ("location", again)],
                    ))
                }
                OpStatus::Succeeded => match (op.what, self.res.get(&op.target)) {
                    (OpWhat::Delete, _) | (_, None) => {
                        Ok(respond(StatusCode::NO_CONTENT, None, &[retry]))
                    }
                    (_, Some(r)) => Ok(respond(StatusCode::OK, Some(r.body.clone()), &[retry])),
                },
                OpStatus::Failed { code, message } => Err(bad(&code, message)),
            };
        }
        let mut body = json!({"name": id, "status": "InProgress", "startTime": op.start});
        match &op.status {
            OpStatus::InProgress => {}
            OpStatus::Succeeded => body["status"] = json!("Succeeded"),
            OpStatus::Failed { code, message } => {
                body["status"] = json!("Failed");
                body["error"] = json!({"code": code, "message": message});
            }
        }
        if let Some(end) = &op.end {
            body["endTime"] = json!(end);
        }
        Ok(respond(StatusCode::OK, Some(body), &[retry]))
    }

    // -- reads ------------------------------------------------------------

    fn get_item(&mut self, kind: ArmKind, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let key = key_of(kind, sub, rg, name);
        self.tick_resource(&key);
        let r = self
            .res
            .get(&key)
            .ok_or_else(|| not_found(kind, name, rg))?;
        let mut body = r.body.clone();
        if kind == ArmKind::VirtualMachine
            && let Some(expand) = req.param("$expand")
        {
            let expand = expand.to_ascii_lowercase();
            if expand.contains("instanceview") {
                set_path(&mut body, &["properties", "instanceView"], instance_view(r));
            }
            if expand.contains("userdata")
                && let Some(ud) = r.vm.as_ref().and_then(|x| x.user_data.clone())
            {
                set_path(&mut body, &["properties", "userData"], json!(ud));
            }
        }
        Ok(respond(StatusCode::OK, Some(body), &[]))
    }

    fn list(&self, kind: ArmKind, sub: &str, rg: Option<&str>, req: &Req<'_>) -> Reply {
        let mut vmss_filter = false;
        if let Some(f) = req.param("$filter") {
            if kind == ArmKind::VirtualMachine
                && f.to_ascii_lowercase().contains("virtualmachinescaleset/id")
            {
                vmss_filter = true;
            } else {
                return Err(invalid(format!(
                    "The $filter '{f}' is not supported on this list (compute lists filter only by 'virtualMachineScaleSet/id'; filter by tag with …/resources)."
                )));
            }
        }
        let items = self
            .res
            .iter()
            .filter(|(_, r)| {
                !vmss_filter
                    && r.kind == kind
                    && r.sub.eq_ignore_ascii_case(sub)
                    && rg.is_none_or(|g| r.rg.eq_ignore_ascii_case(g))
            })
            .map(|(k, r)| (k.clone(), r.body.clone()))
            .collect();
        self.paged(items, req)
    }

    fn list_resources(&self, sub: &str, rg: &str, req: &Req<'_>) -> Reply {
        let filter = match req.param("$filter") {
            None => None,
            Some(f) => Some(parse_tag_filter(f).ok_or_else(|| {
                bad(
                    "InvalidFilterInQueryString",
                    format!(
                        "The fake ARM supports only \"tagName eq 'k'\" and \"tagName eq 'k' and tagValue eq 'v'\", not '{f}'."
                    ),
                )
            })?),
        };
        let items = self
            .res
            .iter()
            .filter(|(_, r)| r.sub.eq_ignore_ascii_case(sub) && r.rg.eq_ignore_ascii_case(rg))
            .filter(|(_, r)| {
                filter.as_ref().is_none_or(|(name, value)| {
                    r.tags.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case(name) && value.as_ref().is_none_or(|want| v == want)
                    })
                })
            })
            .map(|(k, r)| {
                let mut item = json!({
                    "id": r.id,
                    "name": r.name,
                    "type": r.kind.resource_type(),
                    "location": r.location,
                });
                // Per the spec, tags are not returned when filtering by tag.
                if filter.is_none() && !r.tags.is_empty() {
                    item["tags"] = json!(r.tags);
                }
                if let Some(by) = r.body.get("managedBy") {
                    item["managedBy"] = by.clone();
                }
                (k.clone(), item)
            })
            .collect();
        self.paged(items, req)
    }

    /// One page of `items` (sorted by key) after `$skiptoken`.
    fn paged(&self, items: Vec<(String, Value)>, req: &Req<'_>) -> Reply {
        let after = match req.param("$skiptoken") {
            None => None,
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid(format!("The $skiptoken '{t}' is not valid.")))?,
            ),
        };
        let mut rest: Vec<(String, Value)> = items
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        let more = rest.len() > self.page_size;
        rest.truncate(self.page_size);
        let mut out = json!({});
        if more && let Some((last, _)) = rest.last() {
            let kept: Vec<&str> = req
                .query
                .split('&')
                .filter(|kv| {
                    let k = kv.split('=').next().unwrap_or("");
                    !kv.is_empty() && !pct_decode(k).eq_ignore_ascii_case("$skiptoken")
                })
                .collect();
            out["nextLink"] = json!(format!(
                "{}{}?{}&$skiptoken={}",
                self.url,
                req.path,
                kept.join("&"),
                hex::encode(last)
            ));
        }
        out["value"] = Value::Array(rest.into_iter().map(|(_, v)| v).collect());
        Ok(respond(StatusCode::OK, Some(out), &[]))
    }

    // -- writes -----------------------------------------------------------

    /// The checks every PUT makes against the existing resource.
    /// What every PUT checks and reads first: preconditions, a JSON
    /// object body, its location and its tags.
    fn put_start(
        &self,
        kind: ArmKind,
        sub: &str,
        rg: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Result<PutStart, ArmError> {
        let key = key_of(kind, sub, rg, name);
        self.put_preconditions(kind, &key, name, req)?;
        let body = req.json_object()?;
        let location = require_location(&body)?;
        let tags = parse_tags(&body)?;
        Ok(PutStart {
            key,
            body,
            location,
            tags,
        })
    }

    fn put_preconditions(
        &self,
        kind: ArmKind,
        key: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Result<(), ArmError> {
        check_name(kind, name)?;
        if let Some(r) = self.res.get(key) {
            if req.create_only() {
                return Err(fail(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!("The resource '{}' already exists (If-None-Match: *).", r.id),
                ));
            }
            if r.busy.is_some() {
                return Err(busy(r, "PUT"));
            }
        }
        Ok(())
    }

    fn put_vm(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::VirtualMachine;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        if !body["properties"].is_object() {
            return Err(invalid("The VM has no properties object."));
        }
        let p = &body["properties"];
        let Some(size) = p["hardwareProfile"]["vmSize"]
            .as_str()
            .filter(|s| !s.is_empty())
        else {
            return Err(invalid(
                "Required parameter 'hardwareProfile.vmSize' is missing (null).",
            ));
        };
        let img = &p["storageProfile"]["imageReference"];
        let by_id = ["id", "sharedGalleryImageId", "communityGalleryImageId"]
            .iter()
            .any(|k| img[*k].as_str().is_some_and(|s| !s.is_empty()));
        let by_name = ["publisher", "offer", "sku", "version"]
            .iter()
            .all(|k| img[*k].as_str().is_some_and(|s| !s.is_empty()));
        if !by_id && !by_name {
            return Err(invalid(
                "storageProfile.imageReference needs publisher, offer, sku and version, or an id.",
            ));
        }
        let os = &p["osProfile"];
        match os["computerName"].as_str() {
            Some(c) if !c.is_empty() && c.len() <= 64 => {}
            Some(c) if !c.is_empty() => {
                return Err(invalid(format!(
                    "osProfile.computerName '{c}' is longer than 64 characters."
                )));
            }
            _ => {
                return Err(invalid(
                    "Required parameter 'osProfile.computerName' is missing (null).",
                ));
            }
        }
        if os["adminUsername"].as_str().is_none_or(str::is_empty) {
            return Err(invalid(
                "Required parameter 'osProfile.adminUsername' is missing (null).",
            ));
        }
        let custom_data = check_base64(&os["customData"], "osProfile.customData")?;
        let user_data = check_base64(&p["userData"], "userData")?;
        let os_disk = &p["storageProfile"]["osDisk"];
        if !os_disk.is_null() && !os_disk.is_object() {
            return Err(invalid("storageProfile.osDisk must be an object."));
        }
        let os_disk_delete =
            parse_delete_option(&os_disk["deleteOption"], "storageProfile.osDisk")?;
        let encryption = match &os_disk["managedDisk"]["securityProfile"]["securityEncryptionType"]
        {
            Value::Null => None,
            Value::String(s) => Some(
                ENCRYPTION_TYPES
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(s))
                    .map(|t| t.to_string())
                    .ok_or_else(|| {
                        invalid(format!(
                            "securityEncryptionType '{s}' is not one of {}.",
                            ENCRYPTION_TYPES.join(", ")
                        ))
                    })?,
            ),
            _ => return Err(invalid("securityEncryptionType must be a string.")),
        };
        let cvm = p["securityProfile"]["securityType"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("ConfidentialVM"));
        if cvm {
            if !confidential_size(size) {
                return Err(bad(
                    "BadRequest",
                    format!(
                        "The VM size '{size}' does not support securityType ConfidentialVM; use a confidential size such as Standard_DC2as_v5 (DCasv5/DCadsv5/DCesv5/DCedsv5/ECasv5/ECadsv5/ECesv5/ECedsv5)."
                    ),
                ));
            }
            if p["securityProfile"]["uefiSettings"]["vTpmEnabled"].as_bool() != Some(true) {
                return Err(bad(
                    "BadRequest",
                    "securityType ConfidentialVM requires securityProfile.uefiSettings.vTpmEnabled = true.",
                ));
            }
            if encryption.is_none() {
                return Err(bad(
                    "BadRequest",
                    "securityType ConfidentialVM requires storageProfile.osDisk.managedDisk.securityProfile.securityEncryptionType (VMGuestStateOnly, DiskWithVMGuestState or NonPersistedTPM).",
                ));
            }
        } else if encryption.is_some() {
            return Err(bad(
                "BadRequest",
                "securityEncryptionType can be set only for Confidential VMs (securityProfile.securityType = ConfidentialVM).",
            ));
        }
        let refs = match p["networkProfile"]["networkInterfaces"].as_array() {
            Some(a) if !a.is_empty() => a,
            _ => {
                return Err(invalid(
                    "networkProfile.networkInterfaces must name at least one network interface.",
                ));
            }
        };
        let primaries = refs
            .iter()
            .filter(|r| r["properties"]["primary"].as_bool() == Some(true))
            .count();
        if refs.len() > 1 && primaries != 1 {
            return Err(invalid(
                "A VM with several network interfaces must mark exactly one as primary.",
            ));
        }
        let mut nics: Vec<(String, bool)> = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let target = format!("networkProfile.networkInterfaces[{i}].id");
            let Some(id) = r["id"].as_str() else {
                return Err(invalid(format!(
                    "Required parameter '{target}' is missing."
                )));
            };
            let nk = parse_ref(id, ArmKind::NetworkInterface).ok_or_else(|| {
                invalid(format!("{target} '{id}' is not a network interface id."))
            })?;
            let Some(nic) = self.res.get(&nk) else {
                return Err(invalid(format!(
                    "Network interface '{id}' ({target}) was not found."
                )));
            };
            if nics.iter().any(|(k, _)| *k == nk) {
                return Err(invalid(format!(
                    "Network interface '{id}' is listed twice."
                )));
            }
            if nic.state() == "Deleting" {
                return Err(invalid(format!(
                    "Network interface '{id}' is being deleted."
                )));
            }
            if let Some(other) = &nic.attached_to
                && *other != key
                && self.res.contains_key(other)
            {
                let other_id = self
                    .res
                    .get(other)
                    .map(|v| v.id.clone())
                    .unwrap_or_default();
                return Err(bad(
                    "NicInUse",
                    format!("Network interface '{id}' is already attached to VM '{other_id}'."),
                ));
            }
            if nic.location != location {
                return Err(invalid(format!(
                    "Network interface '{id}' is in location '{}', the VM in '{location}'.",
                    nic.location
                )));
            }
            if cvm && nic.body["properties"]["enableAcceleratedNetworking"].as_bool() == Some(true)
            {
                return Err(bad(
                    "BadRequest",
                    format!(
                        "Network interface '{id}' has accelerated networking enabled, which Confidential VMs do not support."
                    ),
                ));
            }
            let delete = parse_delete_option(&r["properties"]["deleteOption"], &target)?;
            nics.push((nk, delete));
        }
        let existing = self.res.get(&key).cloned();
        if let Some(old) = existing.as_ref().and_then(|e| e.vm.as_ref())
            && let Some(new) = &custom_data
            && old.custom_data.as_ref() != Some(new)
        {
            return Err(bad(
                "PropertyChangeNotAllowed",
                "Changing property 'osProfile.customData' is not allowed.",
            ));
        }

        if existing.is_none()
            && let Some(disk) = os_disk["name"].as_str().filter(|n| !n.is_empty())
            && self.res.contains_key(&key_of(ArmKind::Disk, sub, rg, disk))
        {
            return Err(bad(
                "ConflictingUserInput",
                format!(
                    "Disk {disk} already exists in resource group {rg}. Only CreateOption.Attach is supported."
                ),
            ));
        }

        // Accepted: build the stored VM.
        let fault = self.operation_fault(req);
        let (id, name) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone()),
            None => (canonical_id(kind, sub, rg, name), name.to_owned()),
        };
        let (sub, rg) = match &existing {
            Some(e) => (e.sub.clone(), e.rg.clone()),
            None => (sub.to_owned(), rg.to_owned()),
        };
        let os_disk_name = match (
            existing.as_ref().and_then(|e| e.vm.as_ref()),
            os_disk["name"].as_str(),
        ) {
            (Some(x), _) => x.os_disk_name.clone(),
            (None, Some(n)) if !n.is_empty() => n.to_owned(),
            _ => format!("{name}_OsDisk_1_{}", uuid::Uuid::new_v4().simple()),
        };
        let mut props = p.clone();
        remove_path(&mut props, &["osProfile", "customData"]);
        remove_path(&mut props, &["osProfile", "adminPassword"]);
        remove_path(&mut props, &["userData"]);
        remove_path(&mut props, &["provisioningState"]);
        let od = ["storageProfile", "osDisk"];
        let od_path = |k: &'static str| [od[0], od[1], k];
        set_path(
            &mut props,
            &od_path("deleteOption"),
            json!(if os_disk_delete { "Delete" } else { "Detach" }),
        );
        set_path(&mut props, &od_path("name"), json!(os_disk_name));
        if os_disk["osType"].is_null() {
            set_path(&mut props, &od_path("osType"), json!("Linux"));
        }
        if os_disk["createOption"].is_null() {
            set_path(&mut props, &od_path("createOption"), json!("FromImage"));
        }
        let disk = existing
            .as_ref()
            .and_then(|e| e.vm.as_ref())
            .and_then(|x| x.disk.clone());
        if let Some(dk) = &disk
            && let Some(d) = self.res.get(dk)
        {
            set_path(
                &mut props,
                &["storageProfile", "osDisk", "managedDisk", "id"],
                json!(d.id),
            );
        }
        for (i, (_, delete)) in nics.iter().enumerate() {
            if let Some(r) = props
                .get_mut("networkProfile")
                .and_then(|n| n.get_mut("networkInterfaces"))
                .and_then(|a| a.get_mut(i))
            {
                set_path(
                    r,
                    &["properties", "deleteOption"],
                    json!(if *delete { "Delete" } else { "Detach" }),
                );
            }
        }
        let vm_id = existing
            .as_ref()
            .and_then(|e| e.body["properties"]["vmId"].as_str().map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let created = existing
            .as_ref()
            .and_then(|e| {
                e.body["properties"]["timeCreated"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(now);
        set_path(&mut props, &["vmId"], json!(vm_id));
        set_path(&mut props, &["timeCreated"], json!(created));
        let state = if existing.is_some() {
            "Updating"
        } else {
            "Creating"
        };
        set_path(&mut props, &["provisioningState"], json!(state));
        let mut out = Map::new();
        if let Some(obj) = body.as_object() {
            for (k, v) in obj {
                if !matches!(
                    k.as_str(),
                    "id" | "name" | "type" | "location" | "tags" | "properties" | "etag"
                ) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out.insert("id".into(), json!(id));
        out.insert("name".into(), json!(name));
        out.insert("type".into(), json!(kind.resource_type()));
        out.insert("location".into(), json!(location));
        out.insert("tags".into(), json!(tags));
        out.insert("properties".into(), props);
        let stored_body = Value::Object(out);

        // NICs: attach the new ones, detach the ones an update dropped.
        if let Some(old) = existing.as_ref().and_then(|e| e.vm.as_ref()) {
            for (nk, _) in &old.nics {
                if !nics.iter().any(|(k, _)| k == nk)
                    && let Some(n) = self.res.get_mut(nk)
                    && n.attached_to.as_deref() == Some(key.as_str())
                {
                    n.attached_to = None;
                    remove_path(&mut n.body, &["properties", "virtualMachine"]);
                }
            }
        }
        for (nk, _) in &nics {
            if let Some(n) = self.res.get_mut(nk) {
                n.attached_to = Some(key.clone());
                set_path(
                    &mut n.body,
                    &["properties", "virtualMachine"],
                    json!({"id": id}),
                );
            }
        }
        let what = if existing.is_some() {
            OpWhat::UpdateVm
        } else {
            OpWhat::CreateVm
        };
        let op = self.new_op(what, &key, fault);
        let extra = VmExtra {
            custom_data: custom_data.or_else(|| {
                existing
                    .as_ref()
                    .and_then(|e| e.vm.as_ref())
                    .and_then(|x| x.custom_data.clone())
            }),
            user_data: user_data.or_else(|| {
                existing
                    .as_ref()
                    .and_then(|e| e.vm.as_ref())
                    .and_then(|x| x.user_data.clone())
            }),
            os_disk_name,
            os_disk_delete,
            storage_type: os_disk["managedDisk"]["storageAccountType"]
                .as_str()
                .unwrap_or("Premium_LRS")
                .to_owned(),
            encryption,
            nics,
            disk,
            failure: None,
        };
        let res = Res {
            kind,
            sub: sub.clone(),
            rg,
            name,
            id,
            location: location.clone(),
            tags,
            body: stored_body.clone(),
            busy: Some(op.clone()),
            attached_to: None,
            vm: Some(extra),
        };
        self.res.insert(key, res);
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    fn put_nic(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::NetworkInterface;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        let p = &body["properties"];
        if !p.is_null() && !p.is_object() {
            return Err(invalid("properties must be an object."));
        }
        let ipcs = match p["ipConfigurations"].as_array() {
            Some(a) if !a.is_empty() => a,
            _ => {
                return Err(invalid(
                    "A network interface needs at least one entry in properties.ipConfigurations.",
                ));
            }
        };
        let accelerated = match &p["enableAcceleratedNetworking"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err(invalid("enableAcceleratedNetworking must be a boolean.")),
        };
        let existing = self.res.get(&key).cloned();
        let (id, name) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone()),
            None => (canonical_id(kind, sub, rg, name), name.to_owned()),
        };
        let mut configs = Vec::new();
        let mut pips: Vec<(String, String)> = Vec::new();
        for (i, ipc) in ipcs.iter().enumerate() {
            let cname = ipc["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("ipconfig{}", i + 1));
            let cid = format!("{id}/ipConfigurations/{cname}");
            let ip = &ipc["properties"];
            let Some(subnet) = ip["subnet"]["id"]
                .as_str()
                .filter(|s| s.to_ascii_lowercase().starts_with("/subscriptions/"))
            else {
                return Err(invalid(format!(
                    "properties.ipConfigurations[{i}].properties.subnet.id must be a subnet id (/subscriptions/…)."
                )));
            };
            let mut cprops = ip.as_object().cloned().unwrap_or_default();
            match &ip["publicIPAddress"]["id"] {
                Value::Null => {}
                Value::String(pid) => {
                    let Some(pk) = parse_ref(pid, ArmKind::PublicIpAddress)
                        .filter(|pk| self.res.contains_key(pk))
                    else {
                        return Err(bad(
                            "InvalidResourceReference",
                            format!("Resource {pid} referenced by resource {id} was not found."),
                        ));
                    };
                    let used_by = self.res.get(&pk).and_then(|r| {
                        r.body["properties"]["ipConfiguration"]["id"]
                            .as_str()
                            .map(str::to_owned)
                    });
                    if let Some(other) = used_by
                        && !other
                            .to_ascii_lowercase()
                            .starts_with(&format!("{}/", id.to_ascii_lowercase()))
                    {
                        return Err(invalid(format!(
                            "Public IP address {pid} is already used by {other}."
                        )));
                    }
                    pips.push((pk, cid.clone()));
                }
                _ => return Err(invalid("publicIPAddress.id must be a string.")),
            }
            let old_ip = existing.as_ref().and_then(|e| {
                e.body["properties"]["ipConfigurations"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"].as_str() == Some(cname.as_str()))?["properties"]["privateIPAddress"]
                    .as_str()
                    .map(str::to_owned)
            });
            let private_ip = old_ip.unwrap_or_else(|| {
                let n = self.next_private;
                self.next_private += 1;
                format!("10.0.{}.{}", (n / 250) % 256, n % 250 + 4)
            });
            cprops.insert("provisioningState".into(), json!("Succeeded"));
            cprops.insert("privateIPAddress".into(), json!(private_ip));
            cprops
                .entry("privateIPAllocationMethod")
                .or_insert(json!("Dynamic"));
            cprops.insert("subnet".into(), json!({"id": subnet}));
            cprops.insert("primary".into(), json!(i == 0));
            cprops.insert("privateIPAddressVersion".into(), json!("IPv4"));
            configs.push(json!({"name": cname, "id": cid, "type": "Microsoft.Network/networkInterfaces/ipConfigurations", "properties": cprops}));
        }
        let fault = self.operation_fault(req);
        let busy = fault.is_some();
        let mut props = p.as_object().cloned().unwrap_or_default();
        props.insert("ipConfigurations".into(), Value::Array(configs));
        props.insert("enableAcceleratedNetworking".into(), json!(accelerated));
        props.entry("enableIPForwarding").or_insert(json!(false));
        props.insert("nicType".into(), json!("Standard"));
        props.insert(
            "provisioningState".into(),
            json!(if busy { "Updating" } else { "Succeeded" }),
        );
        let keep = |field: &str| {
            existing
                .as_ref()
                .map(|e| e.body["properties"][field].clone())
                .filter(|v| !v.is_null())
        };
        props.insert(
            "resourceGuid".into(),
            keep("resourceGuid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
        );
        props.insert(
            "macAddress".into(),
            keep("macAddress").unwrap_or_else(|| {
                json!(format!(
                    "00-0D-3A-{:02X}-{:02X}-{:02X}",
                    rand::random::<u8>(),
                    rand::random::<u8>(),
                    rand::random::<u8>()
                ))
            }),
        );
        props.remove("virtualMachine");
        if let Some(vm) = keep("virtualMachine") {
            props.insert("virtualMachine".into(), vm);
        }
        let stored_body = json!({
            "id": id,
            "name": name,
            "type": kind.resource_type(),
            "location": location,
            "tags": tags,
            "etag": format!("W/\"{}\"", uuid::Uuid::new_v4()),
            "properties": props,
        });
        // Public IP back-references follow the NIC's configurations.
        let prefix = format!("{}/", id.to_ascii_lowercase());
        for r in self.res.values_mut() {
            if r.kind == ArmKind::PublicIpAddress
                && r.body["properties"]["ipConfiguration"]["id"]
                    .as_str()
                    .is_some_and(|c| c.to_ascii_lowercase().starts_with(&prefix))
            {
                remove_path(&mut r.body, &["properties", "ipConfiguration"]);
            }
        }
        for (pk, cid) in pips {
            if let Some(r) = self.res.get_mut(&pk) {
                set_path(
                    &mut r.body,
                    &["properties", "ipConfiguration"],
                    json!({"id": cid}),
                );
            }
        }
        let op = self.new_op(OpWhat::PutNetwork, &key, fault);
        let (sub, rg) = match &existing {
            Some(e) => (e.sub.clone(), e.rg.clone()),
            None => (sub.to_owned(), rg.to_owned()),
        };
        let res = Res {
            kind,
            sub: sub.clone(),
            rg,
            name,
            id,
            location: location.clone(),
            tags,
            body: stored_body.clone(),
            busy: busy.then(|| op.clone()),
            attached_to: existing.as_ref().and_then(|e| e.attached_to.clone()),
            vm: None,
        };
        self.res.insert(key, res);
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    fn put_pip(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::PublicIpAddress;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        let p = &body["properties"];
        if !p.is_null() && !p.is_object() {
            return Err(invalid("properties must be an object."));
        }
        let existing = self.res.get(&key).cloned();
        let (id, name, sub, rg) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone(), e.sub.clone(), e.rg.clone()),
            None => (
                canonical_id(kind, sub, rg, name),
                name.to_owned(),
                sub.to_owned(),
                rg.to_owned(),
            ),
        };
        let fault = self.operation_fault(req);
        let busy = fault.is_some();
        let keep = |field: &str| {
            existing
                .as_ref()
                .map(|e| e.body["properties"][field].clone())
                .filter(|v| !v.is_null())
        };
        let address = keep("ipAddress").unwrap_or_else(|| {
            let n = self.next_public;
            self.next_public += 1;
            json!(format!("20.0.{}.{}", (n / 250) % 256, n % 250 + 4))
        });
        let mut props = p.as_object().cloned().unwrap_or_default();
        props.insert(
            "provisioningState".into(),
            json!(if busy { "Updating" } else { "Succeeded" }),
        );
        props.insert("ipAddress".into(), address);
        props
            .entry("publicIPAddressVersion")
            .or_insert(json!("IPv4"));
        props
            .entry("publicIPAllocationMethod")
            .or_insert(json!("Static"));
        props.entry("idleTimeoutInMinutes").or_insert(json!(4));
        props.insert(
            "resourceGuid".into(),
            keep("resourceGuid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
        );
        props.remove("ipConfiguration");
        if let Some(c) = keep("ipConfiguration") {
            props.insert("ipConfiguration".into(), c);
        }
        let sku = match &body["sku"] {
            Value::Object(_) => body["sku"].clone(),
            _ => json!({"name": "Standard", "tier": "Regional"}),
        };
        let stored_body = json!({
            "id": id,
            "name": name,
            "type": kind.resource_type(),
            "location": location,
            "tags": tags,
            "etag": format!("W/\"{}\"", uuid::Uuid::new_v4()),
            "sku": sku,
            "properties": props,
        });
        let op = self.new_op(OpWhat::PutNetwork, &key, fault);
        self.res.insert(
            key,
            Res {
                kind,
                sub: sub.clone(),
                rg,
                name,
                id,
                location: location.clone(),
                tags,
                body: stored_body.clone(),
                busy: busy.then(|| op.clone()),
                attached_to: None,
                vm: None,
            },
        );
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    fn delete(&mut self, kind: ArmKind, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let key = key_of(kind, sub, rg, name);
        let Some(r) = self.res.get(&key) else {
            return Ok(respond(StatusCode::NO_CONTENT, None, &[]));
        };
        if r.busy.is_some() {
            return Err(busy(r, "DELETE"));
        }
        let attached = r
            .attached_to
            .as_ref()
            .and_then(|k| self.res.get(k))
            .map(|vm| vm.id.clone());
        match kind {
            ArmKind::NetworkInterface => {
                if let Some(vm) = attached {
                    return Err(bad(
                        "NicInUse",
                        format!(
                            "Network Interface {} is used by existing resource {vm}. In order to delete the network interface, it must be dissociated from the resource.",
                            r.id
                        ),
                    ));
                }
            }
            ArmKind::PublicIpAddress => {
                if let Some(cfg) = r.body["properties"]["ipConfiguration"]["id"].as_str() {
                    let lc = cfg.to_ascii_lowercase();
                    let in_use = self.res.values().any(|n| {
                        n.kind == ArmKind::NetworkInterface
                            && lc.starts_with(&format!("{}/", n.id.to_ascii_lowercase()))
                    });
                    if in_use {
                        return Err(bad(
                            "PublicIPAddressInUse",
                            format!(
                                "Public IP address {} can not be deleted since it is still allocated to resource {cfg}.",
                                r.id
                            ),
                        ));
                    }
                }
            }
            ArmKind::Disk => {
                if let Some(vm) = attached {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        "OperationNotAllowed",
                        format!("Disk {} is attached to VM {vm}.", r.name),
                    ));
                }
            }
            ArmKind::VirtualMachine => {}
        }
        let (sub, location) = (r.sub.clone(), r.location.clone());
        let fault = self.operation_fault(req);
        let op = self.new_op(OpWhat::Delete, &key, fault);
        if let Some(r) = self.res.get_mut(&key) {
            r.busy = Some(op.clone());
            r.set_state("Deleting");
        }
        let mut headers = vec![
            ("location", self.location_url(kind, &sub, &location, &op)),
            ("retry-after", "0".to_owned()),
        ];
        if kind == ArmKind::VirtualMachine {
            headers.push((
                "azure-asyncoperation",
                self.async_url(kind, &sub, &location, &op),
            ));
        }
        Ok(respond(StatusCode::ACCEPTED, None, &headers))
    }
}

fn busy(r: &Res, verb: &str) -> ArmError {
    fail(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation '{verb}' is not allowed on '{}' since another operation is in progress (provisioningState {}).",
            r.id,
            r.state()
        ),
    )
}

fn not_allowed(method: &Method, what: &str) -> ArmError {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The fake ARM does not support {method} on {what}."),
    )
}

fn instance_view(r: &Res) -> Value {
    let state = r.state();
    let mut statuses = Vec::new();
    let failure = r.vm.as_ref().and_then(|x| x.failure.clone());
    match (state, failure) {
        ("Failed", Some((code, message))) => statuses.push(json!({
            "code": format!("ProvisioningState/failed/{code}"),
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": message,
        })),
        _ => statuses.push(json!({
            "code": format!("ProvisioningState/{}", state.to_ascii_lowercase()),
            "level": "Info",
            "displayStatus": format!("Provisioning {}", state.to_ascii_lowercase()),
        })),
    }
    let power = match state {
        "Succeeded" | "Updating" => Some(("running", "VM running")),
        "Creating" => Some(("starting", "VM starting")),
        "Deleting" => Some(("stopping", "VM stopping")),
        _ => None,
    };
    if let Some((code, display)) = power {
        statuses.push(json!({"code": format!("PowerState/{code}"), "level": "Info", "displayStatus": display}));
    }
    let disks: Vec<Value> = r
        .vm
        .as_ref()
        .filter(|x| x.disk.is_some())
        .map(|x| {
            vec![json!({"name": x.os_disk_name, "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}]})]
        })
        .unwrap_or_default();
    json!({
        "computerName": r.body["properties"]["osProfile"]["computerName"],
        "osName": "ubuntu",
        "osVersion": "22.04",
        "hyperVGeneration": "V2",
        "disks": disks,
        "statuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquotes_sh_words() {
        assert_eq!(sh_unquote(r"'tok'\''en'").as_deref(), Some("tok'en"));
        assert_eq!(
            sh_unquote("'http://x/a b'").as_deref(),
            Some("http://x/a b")
        );
        assert_eq!(sh_unquote("plain # comment").as_deref(), Some("plain"));
        assert_eq!(sh_unquote("'unterminated"), None);
    }

    #[test]
    fn confidential_sizes() {
        for ok in [
            "Standard_DC2as_v5",
            "standard_dc96ads_v5",
            "Standard_DC4es_v5",
            "Standard_EC8eds_v5",
            "Standard_EC16as_v5",
            "Standard_DC4as_v6",
        ] {
            assert!(confidential_size(ok), "{ok}");
        }
        for no in [
            "Standard_D2s_v5",
            "Standard_DC2s_v3",
            "Standard_DCas_v5",
            "DC2as_v5",
            "Standard_DC2es_v6",
            "",
        ] {
            assert!(!confidential_size(no), "{no}");
        }
    }

    #[test]
    fn tag_filters() {
        assert_eq!(
            parse_tag_filter("tagName eq 'hangar-pool' and tagValue eq 'p''1'"),
            Some(("hangar-pool".into(), Some("p'1".into())))
        );
        assert_eq!(parse_tag_filter("TAGNAME EQ 'k'"), Some(("k".into(), None)));
        assert_eq!(parse_tag_filter("resourceType eq 'x'"), None);
        assert_eq!(parse_tag_filter("tagName eq 'k"), None);
        assert_eq!(parse_tag_filter("tagName eq 'k' or tagValue eq 'v'"), None);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("api-version=1&%24filter=tagName+eq+%27a%27&x=%zz&y=%4"),
            vec![
                ("api-version".into(), "1".into()),
                ("$filter".into(), "tagName eq 'a'".into()),
                ("x".into(), "%zz".into()),
                ("y".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn routes_match_case_insensitively() {
        let r = parse_route(
            "/SUBSCRIPTIONS/s/resourcegroups/RG/Providers/microsoft.compute/VIRTUALMACHINES/vm1",
            false,
        );
        assert!(
            matches!(r, Some(Route::Item { kind: ArmKind::VirtualMachine, ref rg, ref name, .. }) if rg == "RG" && name == "vm1")
        );
        assert_eq!(
            parse_ref(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/N",
                ArmKind::NetworkInterface
            )
            .as_deref(),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.network/networkinterfaces/n")
        );
        assert!(
            parse_route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Foo/bars/x",
                false
            )
            .is_none()
        );
    }

    #[test]
    fn reads_the_rendered_boot_script() {
        use hangar_core::labels::Labels;
        use hangar_core::userdata::{UserdataParams, render};
        use hangar_core::{InstanceName, OsType};
        let b = BootstrapParams {
            repo_url: "https://github.com/octo/app".into(),
            metadata_url: "http://127.0.0.1:1/api/v1/metadata".into(),
            callback_url: "http://127.0.0.1:1/api/v1/callbacks/status".into(),
            instance_token: Secret::new("tok'en"),
            jit_config_enabled: true,
            runner_group: None,
            tools: vec![],
            ca_cert_bundle: None,
            proxy: ProxySettings {
                http_proxy: Some("http://proxy:3128".into()),
                ..ProxySettings::default()
            },
        };
        let name = InstanceName::parse("hangar-x").expect("name");
        let labels = Labels::parse_list("self-hosted").expect("labels");
        let script = render(&UserdataParams {
            name: &name,
            os_type: OsType::Linux,
            labels: &labels,
            bootstrap: &b,
            tool: None,
        })
        .expect("render");
        let encoded = base64::engine::general_purpose::STANDARD.encode(script);
        let got = bootstrap_from_custom_data(&encoded).expect("parses");
        assert_eq!(got.metadata_url, b.metadata_url);
        assert_eq!(got.callback_url, b.callback_url);
        assert_eq!(got.instance_token.expose(), "tok'en");
        assert_eq!(got.repo_url, b.repo_url);
        assert!(got.jit_config_enabled);
        assert_eq!(got.proxy.http_proxy.as_deref(), Some("http://proxy:3128"));
        let not_script = base64::engine::general_purpose::STANDARD.encode("#cloud-config\n");
        assert!(bootstrap_from_custom_data(&not_script).is_err());
    }
}
