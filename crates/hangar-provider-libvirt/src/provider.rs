//! [`LibvirtProvider`]: Hangar's `Provider` on libvirt. Each instance is a
//! domain tagged with Hangar's metadata, a qcow2 overlay on a base volume, a
//! NoCloud seed volume and optionally a data volume, all named after the
//! instance.
//!
//! Create defines the domain *first* (its disks name volumes that do not
//! exist yet), then makes the volumes, then starts it. So anything a crash
//! leaves behind hangs off a domain that `list_instances` reports and
//! `delete_instance` removes with everything named after it.

use std::sync::Arc;

use async_trait::async_trait;
use hangar_core::provider::{
    CreateInstanceRequest, InstanceRef, ProviderInstance, ProviderInstanceStatus,
};
use hangar_core::{ControllerId, OsArch, OsType, PoolId, PoolSpec, Provider, ProviderError};
use virt::connect::Connect;
use virt::domain::{Domain, DomainPausedReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use crate::config::LibvirtProviderConfig;
use crate::conn::Connection;
use crate::error::{LibvirtError, is_connection_error};
use crate::seed::{IsoTool, SeedFiles, build_iso};
use crate::specs::{ExtraSpecs, Firmware, SpecError};
use crate::xml::{
    DomainPlan, HangarMetadata, METADATA_NS, VolumeNames, overlay_volume_xml, plain_volume_xml,
    volume_format,
};

const GIB: u64 = 1024 * 1024 * 1024;

/// Makes one VM per runner on a libvirt host.
#[derive(Debug, Clone)]
pub struct LibvirtProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LibvirtProviderConfig,
    conn: Connection,
}

impl LibvirtProvider {
    /// Checks the settings; does not connect (the first call does, and
    /// `health()` reports when libvirt is unreachable).
    pub fn new(config: LibvirtProviderConfig) -> Result<Self, LibvirtError> {
        config.validate()?;
        // libvirt prints every error to stderr by default; Hangar reports
        // them itself, once, where they are handled.
        virt::error::clear_error_callback();
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Connection::new(config.uri.clone()),
                config,
            }),
        })
    }

    pub fn config(&self) -> &LibvirtProviderConfig {
        &self.inner.config
    }

    /// Runs blocking libvirt calls on the blocking pool with the shared
    /// connection; a call that fails because the connection died drops it,
    /// so the next call reconnects.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, LibvirtError>
    where
        T: Send + 'static,
        F: FnOnce(&LibvirtProviderConfig, &Connect) -> Result<T, LibvirtError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let guard = hangar_core::provider::act_guard();
        tokio::task::spawn_blocking(move || {
            // Asked on the blocking thread, after the wait for one: the
            // last moment before libvirt is touched.
            if let Some(refusal) = guard.and_then(|g| g().err()) {
                return Err(LibvirtError::NotActing(refusal));
            }
            let conn = inner.conn.get()?;
            match f(&inner.config, &conn) {
                Err(LibvirtError::Call { source, .. })
                    if is_connection_error(&source) || !conn.is_alive().unwrap_or(false) =>
                {
                    inner.conn.invalidate(&conn);
                    Err(LibvirtError::ConnectionLost { op, source })
                }
                other => other,
            }
        })
        .await
        .map_err(|e| LibvirtError::Join(e.to_string()))?
    }

    /// Turns a pool's settings into a domain plan; no I/O.
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        name: &str,
        controller_id: ControllerId,
        pool_id: PoolId,
        flavor: &str,
        os_type: OsType,
        os_arch: OsArch,
        extra_specs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<DomainPlan, LibvirtError> {
        let config = &self.inner.config;
        if os_type != OsType::Linux {
            return Err(LibvirtError::InvalidSpec(SpecError(format!(
                "os_type {}: the libvirt provider boots with Hangar's boot script, which is Linux only; serve {} pools through an external (garm) provider, which renders its own boot script",
                os_type.as_str(),
                os_type.as_str()
            ))));
        }
        let flavor_spec = *config.flavors.get(flavor).ok_or_else(|| {
            LibvirtError::InvalidSpec(SpecError(format!(
                "unknown flavor {flavor:?}; the libvirt provider has: {}",
                config
                    .flavors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })?;
        let specs = ExtraSpecs::parse(extra_specs, config)?;
        let arch = match os_arch {
            OsArch::Amd64 => "x86_64",
            OsArch::Arm64 => "aarch64",
            OsArch::Arm => "armv7l",
        };
        let default_machine = match os_arch {
            OsArch::Amd64 => "q35",
            OsArch::Arm64 | OsArch::Arm => "virt",
        };
        Ok(DomainPlan {
            name: name.to_owned(),
            controller_id,
            pool_id,
            domain_type: config.domain_type,
            arch,
            flavor: flavor_spec,
            machine: specs
                .machine
                .clone()
                .unwrap_or_else(|| default_machine.to_owned()),
            cpu_mode: specs.cpu_mode,
            firmware: specs.firmware.unwrap_or(Firmware::Bios),
            boot: specs.boot(),
            storage_pool: config.storage_pool.clone(),
            volumes: VolumeNames::for_instance(name),
            data_disk_gib: specs.extra_disk_gib,
            network: specs
                .network
                .clone()
                .unwrap_or_else(|| config.network.clone()),
            console_log: config
                .console_log_dir
                .as_ref()
                .map(|d| d.join(format!("{name}.log"))),
        })
    }
}

fn is_code(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

fn lookup_pool(conn: &Connect, name: &str) -> Result<StoragePool, LibvirtError> {
    let pool = conn.lookup_storage_pool_by_name(name).map_err(|e| {
        if is_code(&e, ErrorNumber::NoStoragePool) {
            LibvirtError::Refused(format!(
                "storage pool {name:?} does not exist on this libvirt host (provider setting storage_pool)"
            ))
        } else {
            LibvirtError::Call {
                op: "look up storage pool",
                source: e,
            }
        }
    })?;
    Ok(pool)
}

fn lookup_base(
    pool: &StoragePool,
    pool_name: &str,
    image: &str,
) -> Result<StorageVol, LibvirtError> {
    pool.lookup_storage_vol_by_name(image).map_err(|e| {
        if is_code(&e, ErrorNumber::NoStorageVolume) {
            LibvirtError::InvalidSpec(SpecError(format!(
                "image {image:?}: no such base volume in storage pool {pool_name:?}"
            )))
        } else {
            LibvirtError::Call {
                op: "look up base volume",
                source: e,
            }
        }
    })
}

/// Hangar's metadata on a domain; `None` when the domain is not Hangar's.
fn read_metadata(dom: &Domain) -> Result<Option<HangarMetadata>, LibvirtError> {
    match dom.metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(METADATA_NS),
        0,
    ) {
        Ok(xml) => Ok(Some(HangarMetadata::parse(&xml))),
        Err(e) if is_code(&e, ErrorNumber::NoDomainMetadata) => Ok(None),
        Err(e) => Err(LibvirtError::Call {
            op: "read domain metadata",
            source: e,
        }),
    }
}

/// The domain an instance reference points at: by libvirt UUID when known,
/// else (or when that UUID is gone) by name.
fn find_domain(
    conn: &Connect,
    provider_id: Option<&str>,
    name: &str,
) -> Result<Option<Domain>, LibvirtError> {
    if let Some(id) = provider_id {
        match conn.lookup_domain_by_uuid_string(id) {
            Ok(d) => return Ok(Some(d)),
            Err(e)
                if is_code(&e, ErrorNumber::NoDomain) || is_code(&e, ErrorNumber::InvalidArg) => {}
            Err(e) => return Err(LibvirtError::call("look up domain")(e)),
        }
    }
    match conn.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
        Err(e) => Err(LibvirtError::call("look up domain")(e)),
    }
}

fn status_of(dom: &Domain) -> Result<(ProviderInstanceStatus, Option<String>), LibvirtError> {
    // `info` reports a vanished domain as an error; `state` (which carries
    // the reason) would not.
    let info = dom
        .info()
        .map_err(LibvirtError::call("read domain state"))?;
    let (_, reason) = dom
        .state()
        .map_err(LibvirtError::call("read domain state"))?;
    Ok(match info.state {
        Enum::Known(DomainState::Running | DomainState::Blocked) => {
            (ProviderInstanceStatus::Running, None)
        }
        Enum::Known(DomainState::Paused) => match reason {
            Enum::Known(DomainStateReason::Paused(Enum::Known(DomainPausedReason::IOError))) => (
                ProviderInstanceStatus::Error,
                Some("paused after a disk I/O error (storage pool full?)".to_owned()),
            ),
            Enum::Known(DomainStateReason::Paused(Enum::Known(
                DomainPausedReason::Crashed | DomainPausedReason::PostCopyFailed,
            ))) => (
                ProviderInstanceStatus::Error,
                Some("paused after a crash".to_owned()),
            ),
            _ => (ProviderInstanceStatus::Stopped, None),
        },
        Enum::Known(DomainState::Shutdown | DomainState::Shutoff | DomainState::PMSuspended) => {
            match reason {
                Enum::Known(DomainStateReason::Shutoff(Enum::Known(r)))
                    if matches!(
                        r,
                        virt::domain::DomainShutoffReason::Crashed
                            | virt::domain::DomainShutoffReason::Failed
                    ) =>
                {
                    (
                        ProviderInstanceStatus::Error,
                        Some(format!("shut off: {r:?}").to_lowercase()),
                    )
                }
                _ => (ProviderInstanceStatus::Stopped, None),
            }
        }
        Enum::Known(DomainState::Crashed) => (
            ProviderInstanceStatus::Error,
            Some("the guest crashed".to_owned()),
        ),
        Enum::Known(DomainState::NoState) | Enum::Unknown(_) => {
            (ProviderInstanceStatus::Unknown, None)
        }
    })
}

fn describe(dom: &Domain, md: &HangarMetadata) -> Result<ProviderInstance, LibvirtError> {
    let (status, fault) = status_of(dom)?;
    let mut addresses = Vec::new();
    if status == ProviderInstanceStatus::Running {
        // DHCP leases exist only on libvirt networks; other setups (bridge,
        // user mode) have no address libvirt knows, which is not an error.
        if let Ok(ifaces) =
            dom.interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
        {
            addresses.extend(
                ifaces
                    .into_iter()
                    .flat_map(|i| i.addrs.into_iter().map(|a| a.addr)),
            );
        }
    }
    Ok(ProviderInstance {
        provider_id: dom
            .uuid_string()
            .map_err(LibvirtError::call("read domain uuid"))?,
        name: dom.name().map_err(LibvirtError::call("read domain name"))?,
        status,
        controller_id: md.controller_id,
        pool_id: md.pool_id,
        addresses,
        os_name: None,
        os_version: None,
        fault,
    })
}

fn ignore_codes(
    result: Result<(), virt::error::Error>,
    codes: &[ErrorNumber],
) -> Result<(), virt::error::Error> {
    match result {
        Err(e) if codes.iter().any(|c| is_code(&e, *c)) => Ok(()),
        other => other,
    }
}

/// Stops and undefines a domain, with its NVRAM, managed save image and
/// snapshot/checkpoint metadata. Gone already is fine.
fn remove_domain(dom: &Domain) -> Result<(), LibvirtError> {
    if dom.is_active().unwrap_or(true) {
        // Not running (any more) or already gone: both fine.
        ignore_codes(
            dom.destroy(),
            &[ErrorNumber::OperationInvalid, ErrorNumber::NoDomain],
        )
        .map_err(LibvirtError::call("destroy domain"))?;
    }
    // Drivers without NVRAM or checkpoints (libvirt's test driver, older
    // hypervisors) reject those flags: retry with what they do support.
    let full = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
    let reduced =
        sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    let mut last = None;
    for flags in [full, reduced, 0] {
        match ignore_codes(dom.undefine_flags(flags), &[ErrorNumber::NoDomain]) {
            Ok(()) => return Ok(()),
            Err(e)
                if is_code(&e, ErrorNumber::InvalidArg) || is_code(&e, ErrorNumber::NoSupport) =>
            {
                last = Some(e);
            }
            // A transient domain vanishes on destroy and cannot be undefined.
            Err(e)
                if is_code(&e, ErrorNumber::OperationInvalid)
                    && !dom.is_persistent().unwrap_or(true) =>
            {
                return Ok(());
            }
            Err(e) => return Err(LibvirtError::call("undefine domain")(e)),
        }
    }
    Err(LibvirtError::call("undefine domain")(
        last.expect("loop ran"),
    ))
}

/// Deletes the instance's volumes; missing ones are fine.
fn remove_volumes(pool: &StoragePool, names: &VolumeNames) -> Result<(), LibvirtError> {
    for name in names.all() {
        match pool.lookup_storage_vol_by_name(name) {
            Ok(vol) => ignore_codes(vol.delete(0), &[ErrorNumber::NoStorageVolume])
                .map_err(LibvirtError::call("delete volume"))?,
            Err(e) if is_code(&e, ErrorNumber::NoStorageVolume) => {}
            Err(e) => return Err(LibvirtError::call("look up volume")(e)),
        }
    }
    Ok(())
}

/// Removes an instance: its domain (only if Hangar's, and this
/// controller's) and every volume named after it.
fn teardown(
    config: &LibvirtProviderConfig,
    conn: &Connect,
    name: &str,
    provider_id: Option<&str>,
    controller_id: ControllerId,
) -> Result<(), LibvirtError> {
    let mut names = vec![name.to_owned()];
    if let Some(dom) = find_domain(conn, provider_id, name)? {
        let dom_name = dom.name().map_err(LibvirtError::call("read domain name"))?;
        match read_metadata(&dom)? {
            None => {
                return Err(LibvirtError::Refused(format!(
                    "domain {dom_name:?} carries no Hangar metadata; not deleting it"
                )));
            }
            Some(md) if md.controller_id != Some(controller_id) => {
                return Err(LibvirtError::Refused(format!(
                    "domain {dom_name:?} belongs to Hangar controller {:?}, not {controller_id}; not deleting it",
                    md.controller_id
                )));
            }
            Some(_) => {}
        }
        remove_domain(&dom)?;
        if dom_name != name {
            names.push(dom_name);
        }
    }
    let pool = lookup_pool(conn, &config.storage_pool)?;
    for n in &names {
        remove_volumes(&pool, &VolumeNames::for_instance(n))?;
    }
    Ok(())
}

/// Streams the seed into its volume.
fn upload(conn: &Connect, vol: &StorageVol, bytes: &[u8]) -> Result<(), LibvirtError> {
    let stream = Stream::new(conn, 0).map_err(LibvirtError::call("open upload stream"))?;
    vol.upload(&stream, 0, bytes.len() as u64, 0)
        .map_err(LibvirtError::call("upload seed"))?;
    let mut rest = bytes;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(256 * 1024)];
        match stream.send(chunk) {
            Ok(n) if n > 0 => rest = &rest[n as usize..],
            Ok(_) => {
                let _ = stream.abort();
                return Err(LibvirtError::Refused(
                    "seed upload stream closed early".into(),
                ));
            }
            Err(e) => {
                let _ = stream.abort();
                return Err(LibvirtError::call("upload seed")(e));
            }
        }
    }
    stream
        .finish()
        .map_err(LibvirtError::call("finish seed upload"))
}

/// Volumes and start, after the domain is defined. Any error here is
/// followed by a teardown of the whole instance.
fn provision(
    conn: &Connect,
    plan: &DomainPlan,
    pool: &StoragePool,
    base: &StorageVol,
    seed: &[u8],
) -> Result<Domain, LibvirtError> {
    let base_path = base
        .path()
        .map_err(LibvirtError::call("read base volume path"))?;
    let base_xml = base
        .xml_desc(0)
        .map_err(LibvirtError::call("read base volume"))?;
    let base_format = volume_format(&base_xml).unwrap_or_else(|| "raw".to_owned());
    let base_capacity = base
        .info()
        .map_err(LibvirtError::call("read base volume"))?
        .capacity;
    // qcow2 cannot shrink below its backing image.
    let capacity = (plan.flavor.disk_gib * GIB).max(base_capacity);
    StorageVol::create_xml(
        pool,
        &overlay_volume_xml(&plan.volumes.root, capacity, &base_path, &base_format),
        0,
    )
    .map_err(LibvirtError::call("create root overlay"))?;

    let seed_vol = StorageVol::create_xml(
        pool,
        &plain_volume_xml(&plan.volumes.seed, seed.len() as u64, "raw"),
        0,
    )
    .map_err(LibvirtError::call("create seed volume"))?;
    match upload(conn, &seed_vol, seed) {
        Ok(()) => {}
        // libvirt's test driver keeps volumes as metadata only and cannot
        // take their bytes; everything else about the instance still runs.
        Err(LibvirtError::Call { source, .. })
            if is_code(&source, ErrorNumber::NoSupport)
                && conn
                    .driver_type()
                    .is_ok_and(|t| t.eq_ignore_ascii_case("test")) =>
        {
            tracing::debug!("test driver: seed volume created without content");
        }
        Err(e) => return Err(e),
    }

    if let Some(gib) = plan.data_disk_gib {
        StorageVol::create_xml(
            pool,
            &plain_volume_xml(&plan.volumes.data, gib * GIB, "qcow2"),
            0,
        )
        .map_err(LibvirtError::call("create data volume"))?;
    }

    let dom = conn
        .lookup_domain_by_name(&plan.name)
        .map_err(LibvirtError::call("look up domain"))?;
    dom.create().map_err(LibvirtError::call("start domain"))?;
    Ok(dom)
}

fn create_blocking(
    config: &LibvirtProviderConfig,
    conn: &Connect,
    plan: &DomainPlan,
    image: &str,
    seed: &[u8],
) -> Result<ProviderInstance, LibvirtError> {
    let pool = lookup_pool(conn, &config.storage_pool)?;
    let base = lookup_base(&pool, &config.storage_pool, image)?;
    if find_domain(conn, None, &plan.name)?.is_some() {
        return Err(LibvirtError::Refused(format!(
            "a domain named {:?} already exists",
            plan.name
        )));
    }
    conn.define_domain_xml(&plan.domain_xml())
        .map_err(LibvirtError::call("define domain"))?;
    let started = provision(conn, plan, &pool, &base, seed).and_then(|dom| {
        let md = read_metadata(&dom)?
            .ok_or_else(|| LibvirtError::Refused("the new domain lost Hangar's metadata".into()))?;
        describe(&dom, &md)
    });
    match started {
        Ok(instance) => Ok(instance),
        Err(e) => {
            if let Err(cleanup) = teardown(config, conn, &plan.name, None, plan.controller_id) {
                tracing::error!(
                    instance.name = %plan.name,
                    error = %cleanup,
                    "cleaning up a failed create failed; the next delete or orphan sweep retries"
                );
            }
            Err(e)
        }
    }
}

#[async_trait]
impl Provider for LibvirtProvider {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn max_concurrency(&self) -> usize {
        self.inner.config.max_concurrency
    }

    #[tracing::instrument(skip_all, fields(pool.image = %spec.image, pool.flavor = %spec.flavor))]
    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError> {
        self.plan(
            "validate",
            ControllerId::new_random(),
            PoolId::new_random(),
            &spec.flavor,
            spec.os_type,
            spec.os_arch,
            &spec.extra_specs,
        )?;
        let image = spec.image.clone();
        self.run("validate pool", move |config, conn| {
            let pool = lookup_pool(conn, &config.storage_pool)?;
            lookup_base(&pool, &config.storage_pool, &image).map(drop)
        })
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(instance.name = %req.name, pool.id = %req.pool_id))]
    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError> {
        let started = std::time::Instant::now();
        let plan = self.plan(
            req.name.as_str(),
            req.controller_id,
            req.pool_id,
            &req.flavor,
            req.os_type,
            req.os_arch,
            &req.extra_specs,
        )?;
        // Built before libvirt is touched: a missing ISO tool leaves nothing
        // behind.
        let files = SeedFiles::for_instance(req.name.as_str(), &req.userdata);
        let seed = tokio::task::spawn_blocking(move || {
            let (tool, program) = IsoTool::detect()?;
            build_iso(&files, tool, &program)
        })
        .await
        .map_err(|e| LibvirtError::Join(e.to_string()))?
        .map_err(LibvirtError::from)?;
        let image = req.image.clone();
        let instance = self
            .run("create instance", move |config, conn| {
                create_blocking(config, conn, &plan, &image, &seed)
            })
            .await?;
        tracing::info!(
            provider.id = %instance.provider_id,
            duration_ms = started.elapsed().as_millis() as u64,
            "libvirt domain started"
        );
        Ok(instance)
    }

    #[tracing::instrument(skip_all, fields(instance.name = %instance.name))]
    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        let name = instance.name.as_str().to_owned();
        let provider_id = instance.provider_id.clone();
        let controller_id = instance.controller_id;
        self.run("delete instance", move |config, conn| {
            teardown(config, conn, &name, provider_id.as_deref(), controller_id)
        })
        .await?;
        tracing::info!("libvirt domain and volumes removed");
        Ok(())
    }

    async fn get_instance(
        &self,
        instance: &InstanceRef,
    ) -> Result<ProviderInstance, ProviderError> {
        let name = instance.name.as_str().to_owned();
        let provider_id = instance.provider_id.clone();
        let found = self
            .run("get instance", move |_, conn| {
                let Some(dom) = find_domain(conn, provider_id.as_deref(), &name)? else {
                    return Err(LibvirtError::NotFound(format!(
                        "no domain for instance {name}"
                    )));
                };
                let Some(md) = read_metadata(&dom)? else {
                    return Err(LibvirtError::NotFound(format!(
                        "domain {name} is not a Hangar instance"
                    )));
                };
                describe(&dom, &md)
            })
            .await?;
        Ok(found)
    }

    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        self.list_instances_in(controller_id, &[pool_id]).await
    }

    /// One walk over the host's domains for every pool: the sweep's cost
    /// does not grow with the number of pools.
    async fn list_instances_in(
        &self,
        controller_id: ControllerId,
        pools: &[PoolId],
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let pools: Vec<PoolId> = pools.to_vec();
        let found = self
            .run("list instances", move |_, conn| {
                let doms = conn
                    .list_all_domains(
                        sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE
                            | sys::VIR_CONNECT_LIST_DOMAINS_INACTIVE,
                    )
                    .map_err(LibvirtError::call("list domains"))?;
                let mut out = Vec::new();
                for dom in doms {
                    // A domain deleted while we look is simply not listed.
                    let vanished = |e: &LibvirtError| e.code() == Some(ErrorNumber::NoDomain);
                    let md = match read_metadata(&dom) {
                        Ok(Some(md)) => md,
                        Ok(None) => continue,
                        Err(e) if vanished(&e) => continue,
                        Err(e) => return Err(e),
                    };
                    if md.controller_id != Some(controller_id)
                        || !md.pool_id.is_some_and(|p| pools.contains(&p))
                    {
                        continue;
                    }
                    match describe(&dom, &md) {
                        Ok(i) => out.push(i),
                        Err(e) if vanished(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            })
            .await?;
        Ok(found)
    }

    async fn health(&self) -> Result<(), ProviderError> {
        IsoTool::detect().map_err(LibvirtError::from)?;
        self.run("health", |config, conn| {
            let pool = lookup_pool(conn, &config.storage_pool)?;
            if !pool
                .is_active()
                .map_err(LibvirtError::call("read storage pool state"))?
            {
                return Err(LibvirtError::Refused(format!(
                    "storage pool {:?} is not active (virsh pool-start {0})",
                    config.storage_pool
                )));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}
