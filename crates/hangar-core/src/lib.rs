//! Hangar's domain model, free of I/O.
//!
//! Everything that decides *what* Hangar does lives here: validated names and
//! labels, pool specifications, the job and instance state machines, pool
//! choice, userdata rendering, and the [`Provider`] and [`Forge`] traits that
//! the outside world is reached through. Nothing in this crate opens a file, a
//! socket or a database, so every rule can be unit-tested in isolation.

pub mod actions;
pub mod entity;
pub mod forge;
pub mod ids;
pub mod instance;
pub mod jit;
pub mod job;
pub mod labels;
pub mod matching;
pub mod policy;
pub mod pool;
pub mod provider;
pub mod scaleset;
pub mod secret;
pub mod urls;
pub mod userdata;

pub use actions::{
    ActionsService, MessageSession, RemoteScaleSet, ScaleSetJob, ScaleSetJobEvent, ScaleSetMessage,
    ScaleSetRequest, ScaleSetRunner, ScaleSetStatistics,
};
pub use entity::{
    Credentials, CredentialsAuth, Endpoint, Entity, EntityKind, EntityScope, ScopeNameError,
    ScopeRef,
};
pub use forge::{
    DeliveryPage, Forge, ForgeDelivery, ForgeError, ForgeJobStatus, ForgeTarget, HookRef,
};
pub use ids::{
    ControllerId, EntityId, InstanceName, JobId, NameError, PoolId, ReplicaId, ResourceName,
    ScaleSetId,
};
pub use instance::{Instance, InstanceStatus, RunnerStatus, TransitionError};
pub use jit::{JitFile, JitFileError};
pub use job::{Job, JobAction, JobStatus};
pub use labels::{Label, LabelError, Labels};
pub use pool::{
    OsArch, OsType, Pool, PoolSpec, PoolSpecError, RESERVED_EXTRA_SPEC, RunnerPrefix,
    controller_label, pool_label,
};
pub use provider::{Provider, ProviderError};
pub use scaleset::{ScaleSet, ScaleSetSpec, ScaleSetSpecError, ScaleSetState};
pub use secret::Secret;
pub use urls::{Urls, entity_web_url};
