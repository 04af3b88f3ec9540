//! `AzureProvider`: the `Provider` trait on ARM. A create makes a public IP
//! (when asked), a NIC and the VM, in that order, and removes whatever it
//! made when a later step fails; a delete removes all four by name, so it
//! works after a crash with nothing stored; listing finds a pool's
//! resources by tag, half-made ones included, for the orphan sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::TokenCredential;
use base64::Engine as _;
use hangar_core::provider::{
    CreateInstanceRequest, InstanceRef, ProviderInstance, ProviderInstanceStatus,
};
use hangar_core::{ControllerId, OsType, PoolId, PoolSpec, Provider, ProviderError};
use serde_json::Value;

use crate::arm::{Arm, ArmError, RetryPolicy, provisioning_state};
use crate::body::{self, ResourceNames, TAG_CONTROLLER, TAG_POOL};
use crate::config::{AzureProviderConfig, ConfigError, check_ssh_key};
use crate::specs::{ExtraSpecs, Image, check_size, is_confidential_size};

const COMPUTE_API: &str = "2024-07-01";
const NETWORK_API: &str = "2024-07-01";
const DISK_API: &str = "2024-03-02";
const RESOURCES_API: &str = "2021-04-01";

/// Why [`AzureProvider::new`] cannot build a provider; either way the
/// daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client for ARM could not be built.
    #[error(transparent)]
    Client(#[from] ArmError),
}

/// The Azure provider.
#[derive(Debug, Clone)]
pub struct AzureProvider {
    cfg: AzureProviderConfig,
    arm: Arm,
    ssh_public_key: String,
    timeout: Duration,
}

impl AzureProvider {
    /// Never calls Azure: ARM or the identity may be unreachable at
    /// startup, and `health()` says so. `ssh_public_key` is the key text
    /// (the daemon reads `ssh_public_key_file`); `None` makes a throwaway
    /// key.
    pub fn new(
        cfg: AzureProviderConfig,
        credential: Arc<dyn TokenCredential>,
        ssh_public_key: Option<String>,
    ) -> Result<Self, NewError> {
        cfg.validate()?;
        let key = match ssh_public_key.or_else(|| cfg.ssh_public_key.clone()) {
            Some(k) => {
                check_ssh_key(&k)?;
                k.trim().to_owned()
            }
            None => throwaway_ssh_key(),
        };
        let arm = Arm::new(&cfg.arm_endpoint, credential)?;
        Ok(Self {
            timeout: Duration::from_secs(cfg.create_timeout_secs),
            cfg,
            arm,
            ssh_public_key: key,
        })
    }

    /// Shorter waits, for tests against a fake ARM.
    pub fn with_fast_polling(mut self) -> Self {
        self.arm = self
            .arm
            .clone()
            .with_poll(Duration::from_millis(20), Duration::from_millis(5))
            .with_retry(RetryPolicy {
                attempts: 4,
                base: Duration::from_millis(10),
                max: Duration::from_millis(200),
            });
        self
    }

    pub fn ssh_public_key(&self) -> &str {
        &self.ssh_public_key
    }

    fn rg_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.cfg.subscription_id, self.cfg.resource_group
        )
    }

    fn vm_url(&self, name: &str) -> String {
        self.arm.url(
            &format!(
                "{}/providers/Microsoft.Compute/virtualMachines/{name}",
                self.rg_path()
            ),
            COMPUTE_API,
        )
    }

    fn nic_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Network/networkInterfaces/{name}",
            self.rg_path()
        )
    }

    fn pip_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Network/publicIPAddresses/{name}",
            self.rg_path()
        )
    }

    fn disk_url(&self, name: &str) -> String {
        self.arm.url(
            &format!(
                "{}/providers/Microsoft.Compute/disks/{name}",
                self.rg_path()
            ),
            DISK_API,
        )
    }

    async fn create(
        &self,
        req: &CreateInstanceRequest,
        specs: &ExtraSpecs,
        image: &Image,
        names: &ResourceNames,
    ) -> Result<ProviderInstance, ArmError> {
        let tags = body::tags(
            &req.controller_id.to_string(),
            &req.pool_id.to_string(),
            req.name.as_str(),
            &specs.tags,
        );
        let location = &self.cfg.location;
        let mut addresses = Vec::new();
        let pip_id = if specs.public_ip.unwrap_or(self.cfg.public_ip) {
            let url = self.arm.url(&self.pip_path(&names.public_ip), NETWORK_API);
            let pip = self
                .arm
                .put_and_wait(
                    &url,
                    &body::public_ip(location, &tags, specs.zone.as_deref()),
                    self.timeout,
                )
                .await?;
            if let Some(ip) = pip.pointer("/properties/ipAddress").and_then(Value::as_str) {
                addresses.push(ip.to_owned());
            }
            Some(self.pip_path(&names.public_ip))
        } else {
            None
        };
        let subnet = specs.subnet_id.as_deref().unwrap_or(&self.cfg.subnet_id);
        let nic_id = self.nic_path(&names.nic);
        let nic = self
            .arm
            .put_and_wait(
                &self.arm.url(&nic_id, NETWORK_API),
                &body::nic(
                    location,
                    &tags,
                    subnet,
                    pip_id.as_deref(),
                    specs.accelerated_networking,
                ),
                self.timeout,
            )
            .await?;
        if let Some(ip) = nic
            .pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
            .and_then(Value::as_str)
        {
            addresses.insert(0, ip.to_owned());
        }
        let vm_body = body::vm(&body::VmParams {
            location,
            names,
            tags: &tags,
            size: &req.flavor,
            image,
            specs,
            nic_id: &nic_id,
            admin_username: &self.cfg.admin_username,
            ssh_public_key: &self.ssh_public_key,
            userdata: &req.userdata,
        })
        .map_err(|e| ArmError::Status {
            status: 400,
            code: "InvalidParameter".into(),
            message: e.to_string(),
        })?;
        let vm = self
            .arm
            .put_and_wait(&self.vm_url(&names.vm), &vm_body, self.timeout)
            .await?;
        let mut inst = to_instance(&vm);
        inst.addresses = addresses;
        Ok(inst)
    }

    /// Deletes the VM, then whatever of its NIC, public IP and OS disk is
    /// left (the VM's `deleteOption`s usually take them along).
    async fn delete_all(&self, names: &ResourceNames) -> Result<(), ArmError> {
        self.arm
            .delete_and_wait(&self.vm_url(&names.vm), self.timeout)
            .await?;
        self.arm
            .delete_and_wait(
                &self.arm.url(&self.nic_path(&names.nic), NETWORK_API),
                self.timeout,
            )
            .await?;
        self.arm
            .delete_and_wait(
                &self.arm.url(&self.pip_path(&names.public_ip), NETWORK_API),
                self.timeout,
            )
            .await?;
        self.arm
            .delete_and_wait(&self.disk_url(&names.os_disk), self.timeout)
            .await
    }

    /// Which of an instance's non-VM resources still exist.
    async fn leftovers(&self, names: &ResourceNames) -> Result<Vec<String>, ArmError> {
        let mut found = Vec::new();
        for (kind, url) in [
            ("nic", self.arm.url(&self.nic_path(&names.nic), NETWORK_API)),
            (
                "public ip",
                self.arm.url(&self.pip_path(&names.public_ip), NETWORK_API),
            ),
            ("os disk", self.disk_url(&names.os_disk)),
        ] {
            if self.arm.get(&url).await?.is_some() {
                found.push(kind.to_owned());
            }
        }
        Ok(found)
    }

    fn leftover_instance(
        &self,
        name: &str,
        what: &[String],
        controller: Option<ControllerId>,
        pool: Option<PoolId>,
    ) -> ProviderInstance {
        ProviderInstance {
            provider_id: format!(
                "{}/providers/Microsoft.Compute/virtualMachines/{name}",
                self.rg_path()
            ),
            name: name.to_owned(),
            status: ProviderInstanceStatus::Error,
            controller_id: controller,
            pool_id: pool,
            addresses: vec![],
            os_name: None,
            os_version: None,
            fault: Some(format!(
                "half-made instance: no VM, but its {} remain",
                what.join(", ")
            )),
        }
    }
}

/// An Ed25519 public key in OpenSSH format whose private half is dropped at
/// once: Azure wants a login credential, nobody should have one.
fn throwaway_ssh_key() -> String {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = key.verifying_key().to_bytes();
    let mut blob = Vec::with_capacity(51);
    for part in [b"ssh-ed25519".as_slice(), public.as_slice()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    format!(
        "ssh-ed25519 {} hangar-no-login",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn tag<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get("tags")
        .and_then(|t| t.get(name))
        .and_then(Value::as_str)
}

fn to_instance(vm: &Value) -> ProviderInstance {
    let state = provisioning_state(vm).unwrap_or("");
    let status = match state {
        "Succeeded" => ProviderInstanceStatus::Running,
        "Failed" | "Canceled" => ProviderInstanceStatus::Error,
        "Deleting" => ProviderInstanceStatus::Stopped,
        "" => ProviderInstanceStatus::Unknown,
        _ => ProviderInstanceStatus::Creating,
    };
    ProviderInstance {
        provider_id: vm
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        name: vm
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        status,
        controller_id: tag(vm, TAG_CONTROLLER).and_then(|s| s.parse().ok()),
        pool_id: tag(vm, TAG_POOL).and_then(|s| s.parse().ok()),
        addresses: vec![],
        os_name: vm
            .pointer("/properties/storageProfile/imageReference/offer")
            .and_then(Value::as_str)
            .map(str::to_owned),
        os_version: vm
            .pointer("/properties/storageProfile/imageReference/sku")
            .and_then(Value::as_str)
            .map(str::to_owned),
        fault: (status == ProviderInstanceStatus::Error)
            .then(|| format!("provisioningState {state}")),
    }
}

/// A pool's image, flavor and extra specs, parsed and checked together
/// (at pool creation and again at each create, which may see a pool
/// stored before a provider upgrade).
fn check_spec(
    image: &str,
    flavor: &str,
    extra_specs: &serde_json::Map<String, Value>,
) -> Result<(Image, ExtraSpecs), ProviderError> {
    let image = Image::parse(image)?;
    check_size(flavor)?;
    let specs = ExtraSpecs::parse(extra_specs)?;
    if specs.confidential && !is_confidential_size(flavor) {
        return Err(ProviderError::InvalidSpec(format!(
            "flavor {flavor} does not support confidential VMs; use a DCasv5/DCadsv5/ECasv5/ECadsv5 (AMD SEV-SNP) or DCesv5/DCedsv5/ECesv5/ECedsv5 (Intel TDX) size such as Standard_DC2as_v5"
        )));
    }
    Ok((image, specs))
}

/// ARM's answer, as the scheduler's retry decision needs it.
fn to_provider_error(e: ArmError) -> ProviderError {
    const QUOTA: &[&str] = &[
        "QuotaExceeded",
        "OperationNotAllowed",
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "PublicIPCountLimitReached",
    ];
    let msg = e.to_string();
    if QUOTA.contains(&e.code()) {
        return ProviderError::Quota(msg);
    }
    match &e {
        ArmError::Status { status, .. } => match status {
            404 => ProviderError::NotFound(msg),
            400 | 412 => ProviderError::InvalidSpec(msg),
            401 | 403 => ProviderError::Fatal(msg),
            _ => ProviderError::Transient(msg),
        },
        ArmError::OperationFailed { code, .. } => {
            if matches!(
                code.as_str(),
                "InvalidParameter" | "BadRequest" | "ImageNotFound" | "InvalidImageReference"
            ) {
                ProviderError::InvalidSpec(msg)
            } else {
                ProviderError::Transient(msg)
            }
        }
        ArmError::Transport(_)
        | ArmError::Credential(_)
        | ArmError::Timeout(_)
        | ArmError::NotActing(_) => ProviderError::Transient(msg),
        ArmError::Protocol(_) => ProviderError::Fatal(msg),
    }
}

#[async_trait]
impl Provider for AzureProvider {
    fn kind(&self) -> &'static str {
        "azure"
    }

    fn max_concurrency(&self) -> usize {
        self.cfg.max_concurrency
    }

    fn create_timeout(&self) -> Duration {
        // Create plus the clean-up of a failed one.
        self.timeout * 2
    }

    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError> {
        if spec.os_type != OsType::Linux {
            return Err(ProviderError::InvalidSpec(format!(
                "os_type {}: the built-in Azure provider boots with Hangar's boot script, which is Linux only; serve {} pools through an external (garm) provider such as garm-provider-azure, which renders its own boot script",
                spec.os_type.as_str(),
                spec.os_type.as_str()
            )));
        }
        check_spec(&spec.image, &spec.flavor, &spec.extra_specs)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(instance.name = %req.name, pool.id = %req.pool_id))]
    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError> {
        let (image, specs) = check_spec(&req.image, &req.flavor, &req.extra_specs)?;
        let names = ResourceNames::for_instance(req.name.as_str());
        match self.create(req, &specs, &image, &names).await {
            Ok(inst) => Ok(inst),
            Err(e) => {
                tracing::warn!(error = %e, "create failed; removing what it made");
                if let Err(ce) = self.delete_all(&names).await {
                    // The orphan sweep finds the rest by tag.
                    tracing::error!(error = %ce, "clean-up after a failed create failed");
                }
                Err(to_provider_error(e))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(instance.name = %instance.name))]
    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        let names = ResourceNames::for_instance(instance.name.as_str());
        self.delete_all(&names).await.map_err(to_provider_error)
    }

    async fn get_instance(
        &self,
        instance: &InstanceRef,
    ) -> Result<ProviderInstance, ProviderError> {
        let names = ResourceNames::for_instance(instance.name.as_str());
        match self
            .arm
            .get(&self.vm_url(&names.vm))
            .await
            .map_err(to_provider_error)?
        {
            Some(vm) => Ok(to_instance(&vm)),
            None => {
                let left = self.leftovers(&names).await.map_err(to_provider_error)?;
                if left.is_empty() {
                    Err(ProviderError::NotFound(format!(
                        "virtual machine {} does not exist",
                        names.vm
                    )))
                } else {
                    Ok(self.leftover_instance(
                        &names.vm,
                        &left,
                        Some(instance.controller_id),
                        Some(instance.pool_id),
                    ))
                }
            }
        }
    }

    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        self.list_instances_in(controller_id, &[pool_id]).await
    }

    /// Two ARM calls for every pool at once (the resource group's VMs, and
    /// the controller's other resources by tag), so the sweep's cost does
    /// not grow with the number of pools.
    async fn list_instances_in(
        &self,
        controller_id: ControllerId,
        pools: &[PoolId],
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let c = controller_id.to_string();
        let wanted: BTreeSet<String> = pools.iter().map(PoolId::to_string).collect();
        let in_pools = |v: &Value| tag(v, TAG_POOL).is_some_and(|p| wanted.contains(p));
        // The VM list has no tag filter: list the group and filter here.
        let vms = self
            .arm
            .list(&self.arm.url(
                &format!(
                    "{}/providers/Microsoft.Compute/virtualMachines",
                    self.rg_path()
                ),
                COMPUTE_API,
            ))
            .await
            .map_err(to_provider_error)?;
        let mut out: Vec<ProviderInstance> = vms
            .iter()
            .filter(|vm| tag(vm, TAG_CONTROLLER) == Some(c.as_str()) && in_pools(vm))
            .map(to_instance)
            .collect();
        // Half-made instances (a NIC or IP without its VM): the group's
        // generic resource list, unfiltered, because ARM leaves the tags out
        // of a list filtered by tag and the pool is read from them.
        let resources = self
            .arm
            .list(
                &self
                    .arm
                    .url(&format!("{}/resources", self.rg_path()), RESOURCES_API),
            )
            .await
            .map_err(to_provider_error)?;
        let have: BTreeSet<String> = out.iter().map(|i| i.name.clone()).collect();
        let mut orphans: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for r in resources
            .iter()
            .filter(|r| tag(r, TAG_CONTROLLER) == Some(c.as_str()) && in_pools(r))
        {
            let (Some(name), Some(kind), Some(pool)) = (
                r.get("name").and_then(Value::as_str),
                r.get("type").and_then(Value::as_str),
                tag(r, TAG_POOL),
            ) else {
                continue;
            };
            let kind = kind.to_ascii_lowercase();
            if kind == "microsoft.compute/virtualmachines" {
                continue;
            }
            let instance = ResourceNames::instance_of(name);
            if !have.contains(instance) {
                let label = kind.rsplit('/').next().unwrap_or(&kind).to_owned();
                orphans
                    .entry((instance.to_owned(), pool.to_owned()))
                    .or_default()
                    .push(label);
            }
        }
        for ((name, pool), what) in orphans {
            out.push(self.leftover_instance(&name, &what, Some(controller_id), pool.parse().ok()));
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), ProviderError> {
        let url = self.arm.url(&self.rg_path(), RESOURCES_API);
        match self.arm.get(&url).await.map_err(to_provider_error)? {
            Some(_) => Ok(()),
            None => Err(ProviderError::Fatal(format!(
                "resource group {} does not exist in subscription {}",
                self.cfg.resource_group, self.cfg.subscription_id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throwaway_keys_are_openssh_ed25519() {
        let k = throwaway_ssh_key();
        assert!(check_ssh_key(&k).is_ok(), "{k}");
        let blob = base64::engine::general_purpose::STANDARD
            .decode(k.split_whitespace().nth(1).unwrap())
            .unwrap();
        assert_eq!(blob.len(), 4 + 11 + 4 + 32);
        assert_eq!(&blob[4..15], b"ssh-ed25519");
        assert_ne!(k, throwaway_ssh_key());
    }

    #[test]
    fn error_mapping() {
        let st = |status: u16, code: &str| ArmError::Status {
            status,
            code: code.into(),
            message: "m".into(),
        };
        assert!(matches!(
            to_provider_error(st(404, "ResourceNotFound")),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            to_provider_error(st(400, "InvalidParameter")),
            ProviderError::InvalidSpec(_)
        ));
        assert!(matches!(
            to_provider_error(st(409, "Conflict")),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            to_provider_error(st(429, "TooManyRequests")),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            to_provider_error(st(409, "QuotaExceeded")),
            ProviderError::Quota(_)
        ));
        assert!(matches!(
            to_provider_error(st(403, "AuthorizationFailed")),
            ProviderError::Fatal(_)
        ));
        assert!(matches!(
            to_provider_error(st(503, "ServiceUnavailable")),
            ProviderError::Transient(_)
        ));
        let op = |code: &str| ArmError::OperationFailed {
            status: "Failed".into(),
            code: code.into(),
            message: "m".into(),
        };
        assert!(matches!(
            to_provider_error(op("AllocationFailed")),
            ProviderError::Quota(_)
        ));
        assert!(matches!(
            to_provider_error(op("InternalExecutionError")),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            to_provider_error(op("ImageNotFound")),
            ProviderError::InvalidSpec(_)
        ));
    }
}
