//! The fake's state: every resource by key, the running operations, the
//! injected faults and the request log, behind one lock.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::compute::VmExtra;
use super::faults::Fault;
use super::operations::Op;
use super::parse::set_path;
use super::{ArmBoot, ArmKind, ArmRequest, ArmResource};

/// One resource: its identity, its body as GET returns it, and what the fake
/// needs beside (the operation keeping writes out, what it is attached to).
#[derive(Debug, Clone)]
pub(super) struct Res {
    pub(super) kind: ArmKind,
    pub(super) sub: String,
    pub(super) rg: String,
    pub(super) name: String,
    pub(super) id: String,
    pub(super) location: String,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) body: Value,
    /// The running operation that keeps other writes out.
    pub(super) busy: Option<String>,
    /// NIC or disk: the key of the VM it is attached to.
    pub(super) attached_to: Option<String>,
    pub(super) vm: Option<VmExtra>,
}

/// Everything the fake holds, behind [`FakeArm`](super::FakeArm)'s one lock.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) polls: u32,
    pub(super) page_size: usize,
    pub(super) boot: ArmBoot,
    pub(super) faults: Vec<Fault>,
    pub(super) requests: Vec<ArmRequest>,
    pub(super) res: BTreeMap<String, Res>,
    pub(super) ops: HashMap<String, Op>,
    pub(super) boot_errors: Vec<String>,
    pub(super) booted: Vec<String>,
    /// (VM name, base64 script) to boot once the lock is released.
    pub(super) boots: Vec<(String, String)>,
    pub(super) next_private: u32,
    pub(super) next_public: u32,
}

impl Res {
    pub(super) fn public(&self) -> ArmResource {
        ArmResource {
            kind: self.kind,
            name: self.name.clone(),
            id: self.id.clone(),
            tags: self.tags.clone(),
            provisioning_state: self.state().to_owned(),
            body: self.body.clone(),
        }
    }

    pub(super) fn state(&self) -> &str {
        self.body["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("")
    }

    pub(super) fn set_state(&mut self, state: &str) {
        set_path(
            &mut self.body,
            &["properties", "provisioningState"],
            json!(state),
        );
    }
}
