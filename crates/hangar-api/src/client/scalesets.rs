//! The scale set routes of [`Client`](super::Client).

use reqwest::Method;
use uuid::Uuid;

use super::{Client, ClientError, EntityKind};
use crate::scalesets::{ScaleSetCreate, ScaleSetResponse, ScaleSetUpdate};

impl Client {
    pub async fn list_scale_sets(&self) -> Result<Vec<ScaleSetResponse>, ClientError> {
        self.get(self.api(&["scalesets"])).await
    }

    pub async fn list_entity_scale_sets(
        &self,
        kind: EntityKind,
        id: Uuid,
    ) -> Result<Vec<ScaleSetResponse>, ClientError> {
        self.get(self.api(&[kind.collection(), &id.to_string(), "scalesets"]))
            .await
    }

    /// Creates it on GitHub (or adopts the one of that name there) and
    /// stores it.
    pub async fn create_scale_set(
        &self,
        kind: EntityKind,
        entity_id: Uuid,
        req: &ScaleSetCreate,
    ) -> Result<ScaleSetResponse, ClientError> {
        self.call(
            Method::POST,
            self.api(&[kind.collection(), &entity_id.to_string(), "scalesets"]),
            Some(req),
        )
        .await
    }

    pub async fn get_scale_set(&self, id: Uuid) -> Result<ScaleSetResponse, ClientError> {
        self.get(self.api(&["scalesets", &id.to_string()])).await
    }

    pub async fn update_scale_set(
        &self,
        id: Uuid,
        req: &ScaleSetUpdate,
    ) -> Result<ScaleSetResponse, ClientError> {
        self.call(
            Method::PUT,
            self.api(&["scalesets", &id.to_string()]),
            Some(req),
        )
        .await
    }

    /// 409 while it still has instances.
    pub async fn delete_scale_set(&self, id: Uuid) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, self.api(&["scalesets", &id.to_string()]))
            .await
    }
}
