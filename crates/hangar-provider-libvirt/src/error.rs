//! This crate's errors and how each becomes a [`ProviderError`], which is
//! what decides whether the scheduler retries, backs off or gives up.

use hangar_core::ProviderError;
use virt::error::{ErrorDomain, ErrorNumber};

use crate::config::ConfigError;
use crate::seed::SeedError;
use crate::specs::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// The provider settings are unusable (from `new`).
    #[error("invalid libvirt provider settings: {0}")]
    Config(#[from] ConfigError),
    /// The pool's image, flavor or extra specs are unusable.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// Could not open the connection (daemon down, socket missing, auth).
    #[error("cannot connect to libvirt at {uri}: {source}")]
    Connect {
        uri: String,
        source: virt::error::Error,
    },
    /// The connection died during the call; the next call reconnects.
    #[error("lost the libvirt connection during {op}: {source}")]
    ConnectionLost {
        op: &'static str,
        source: virt::error::Error,
    },
    /// A libvirt call failed on a live connection.
    #[error("{op}: {source}")]
    Call {
        op: &'static str,
        source: virt::error::Error,
    },
    /// Something Hangar will not do to protect what it does not own.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("libvirt worker thread failed: {0}")]
    Join(String),
    /// Not done: the caller may no longer act (its pool's lease went while
    /// the call waited; see `hangar_core::provider::may_act`).
    #[error("not done: {0}")]
    NotActing(String),
}

impl LibvirtError {
    /// A `map_err` helper naming the operation.
    pub fn call(op: &'static str) -> impl FnOnce(virt::error::Error) -> LibvirtError {
        move |source| LibvirtError::Call { op, source }
    }

    /// The libvirt error code, for callers that treat one code specially.
    pub fn code(&self) -> Option<ErrorNumber> {
        match self {
            LibvirtError::Call { source, .. } => match source.code() {
                virt::enumutil::Enum::Known(c) => Some(c),
                virt::enumutil::Enum::Unknown(_) => None,
            },
            _ => None,
        }
    }
}

/// Whether a libvirt error means the connection itself is gone.
pub(crate) fn is_connection_error(e: &virt::error::Error) -> bool {
    e.domain()
        .is_known_and(|d| matches!(d, ErrorDomain::Rpc | ErrorDomain::Remote))
        || e.code().is_known_and(|c| {
            matches!(
                c,
                ErrorNumber::NoConnect | ErrorNumber::InvalidConn | ErrorNumber::Rpc
            )
        })
}

impl From<LibvirtError> for ProviderError {
    fn from(e: LibvirtError) -> Self {
        let msg = e.to_string();
        match &e {
            LibvirtError::Config(_) | LibvirtError::Refused(_) | LibvirtError::Join(_) => {
                ProviderError::Fatal(msg)
            }
            LibvirtError::InvalidSpec(_) => ProviderError::InvalidSpec(msg),
            LibvirtError::NotFound(_) => ProviderError::NotFound(msg),
            LibvirtError::Connect { source, .. } => {
                if source.code().is_known_and(|c| {
                    matches!(c, ErrorNumber::AuthFailed | ErrorNumber::AuthCancelled)
                }) {
                    ProviderError::Fatal(msg)
                } else {
                    ProviderError::Transient(msg)
                }
            }
            LibvirtError::ConnectionLost { .. } | LibvirtError::NotActing(_) => {
                ProviderError::Transient(msg)
            }
            LibvirtError::Call { source, .. } => classify_call(source, msg),
            LibvirtError::Seed(SeedError::Io(_)) => ProviderError::Transient(msg),
            LibvirtError::Seed(_) => ProviderError::Fatal(msg),
        }
    }
}

fn classify_call(source: &virt::error::Error, msg: String) -> ProviderError {
    if source.message().contains("No space left on device") {
        return ProviderError::Quota(msg);
    }
    if is_connection_error(source) {
        return ProviderError::Transient(msg);
    }
    match source.code() {
        virt::enumutil::Enum::Known(code) => match code {
            ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume => ProviderError::NotFound(msg),
            ErrorNumber::OperationTimeout
            | ErrorNumber::ResourceBusy
            | ErrorNumber::AgentUnresponsive => ProviderError::Transient(msg),
            ErrorNumber::NoMemory => ProviderError::Quota(msg),
            _ => ProviderError::Fatal(msg),
        },
        virt::enumutil::Enum::Unknown(_) => ProviderError::Fatal(msg),
    }
}
