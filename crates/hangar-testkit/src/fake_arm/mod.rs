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
use axum::http::Method;
use serde_json::Value;
use tokio::sync::Notify;

mod boot;
mod compute;
mod disks;
mod faults;
mod network;
mod operations;
mod parse;
mod reply;
mod resources;
mod routes;
mod state;

use faults::Fault;
use routes::handle;
use state::{Inner, Res};

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

/// What happens when a VM create succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArmBoot {
    /// Nothing: the VM exists but no runner comes up.
    #[default]
    None,
    /// Parse the VM's `customData` script and run [`crate::runner_sim::boot`].
    Simulate,
}

/// Path of the managed-identity token endpoint the fake also serves; point
/// `IDENTITY_ENDPOINT` at `{url}{IDENTITY_PATH}` (any `IDENTITY_HEADER`).
pub const IDENTITY_PATH: &str = "/_identity/token";

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
}
