//! The admin API under `/api/v1`: thin handlers that validate input, make
//! one store (or scheduler) call and answer with a DTO from `hangar-api`.

pub mod controller;
pub mod credentials;
pub mod endpoints;
pub mod entities;
pub mod instances;
pub mod jobs;
pub mod pools;
pub mod scalesets;
pub mod webhooks;

use hangar_api::{InstanceResponse, ProviderResponse};
use hangar_core::Instance;
use hangar_scheduler::ProviderEntry;

pub fn instance_response(i: &Instance) -> InstanceResponse {
    InstanceResponse {
        name: i.name.to_string(),
        pool_id: i.pool_id.0,
        provider_id: i.provider_id.clone(),
        status: i.status.as_str().to_owned(),
        runner_status: i.runner_status.as_str().to_owned(),
        runner_id: i.runner_id,
        job_id: i.job_id.map(|j| j.0),
        addresses: i.addresses.clone(),
        status_message: i.status_message.clone(),
        create_attempts: i.create_attempts,
        os_name: i.os_name.clone(),
        os_version: i.os_version.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

/// Every provider with a health check, bounded in time so one hanging
/// provider cannot stall the answer.
pub async fn provider_health<'a>(
    entries: impl Iterator<Item = &'a std::sync::Arc<ProviderEntry>>,
) -> Vec<ProviderResponse> {
    let checks = entries.map(|e| async move {
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), e.provider.health()).await;
        let error = match r {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some("health check timed out after 5s".to_owned()),
        };
        ProviderResponse {
            name: e.name.clone(),
            kind: e.provider.kind().to_owned(),
            description: e.description.clone(),
            healthy: error.is_none(),
            error,
        }
    });
    futures::future::join_all(checks).await
}
