//! Long-running operations: what a PUT or DELETE starts, the
//! `Azure-AsyncOperation` and `Location` URLs, polls, and what happens when
//! an operation ends.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::reply::{Reply, bad, fail, now, respond};
use super::routes::Req;
use super::state::Inner;
use super::{ArmBoot, ArmFault, ArmKind};

/// api-version put in the operation URLs the fake hands out.
pub(super) const COMPUTE_API: &str = "2024-07-01";

pub(super) const DISK_API: &str = "2024-03-02";

pub(super) const NETWORK_API: &str = "2024-07-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpWhat {
    CreateVm,
    UpdateVm,
    PutNetwork,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OpStatus {
    InProgress,
    Succeeded,
    Failed { code: String, message: String },
}

#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) what: OpWhat,
    pub(super) target: String,
    pub(super) remaining: u32,
    pub(super) never: bool,
    pub(super) fail: Option<(String, String)>,
    pub(super) status: OpStatus,
    pub(super) start: String,
    pub(super) end: Option<String>,
}

impl Inner {
    pub(super) fn new_op(&mut self, what: OpWhat, target: &str, fault: Option<ArmFault>) -> String {
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
    pub(super) fn accepted_put(
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

    pub(super) fn async_url(&self, kind: ArmKind, sub: &str, location: &str, op: &str) -> String {
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

    pub(super) fn location_url(
        &self,
        kind: ArmKind,
        sub: &str,
        location: &str,
        op: &str,
    ) -> String {
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
    pub(super) fn tick(&mut self, op_id: &str) {
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

    pub(super) fn tick_resource(&mut self, key: &str) {
        if let Some(op) = self.res.get(key).and_then(|r| r.busy.clone()) {
            self.tick(&op);
        }
    }

    pub(super) fn finish(&mut self, what: OpWhat, key: &str, status: &OpStatus) {
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

    pub(super) fn poll(&mut self, id: &str, location_style: bool, req: &Req<'_>) -> Reply {
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
}
