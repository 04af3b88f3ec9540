//! Repositories, organizations and enterprises, with their sealed webhook
//! secrets.

use crate::{DbRow, Result, Store, StoreError, corrupt, map_constraint, now_ms, on, to_dt};
use hangar_core::{Entity, EntityId, EntityKind, EntityScope, ForgeTarget, ResourceName, Secret};

#[derive(Debug, Clone)]
pub struct NewEntity {
    pub scope: EntityScope,
    pub credentials_name: ResourceName,
    pub webhook_secret: Secret,
}

pub(crate) fn hook_purpose(id: EntityId) -> String {
    format!("entities.webhook_secret:{id}")
}

pub(crate) fn scope_columns(scope: &EntityScope) -> (&'static str, &str, &str) {
    match scope {
        EntityScope::Repository { owner, name } => ("repository", owner, name),
        EntityScope::Organization { name } => ("organization", "", name),
        EntityScope::Enterprise { slug } => ("enterprise", "", slug),
    }
}

fn entity_from_row(row: &impl DbRow) -> Result<Entity> {
    let id: String = row.get("id");
    let kind: String = row.get("kind");
    let owner: String = row.get("owner");
    let name: String = row.get("name");
    let scope = match kind.parse::<EntityKind>().map_err(corrupt)? {
        EntityKind::Repository => EntityScope::Repository { owner, name },
        EntityKind::Organization => EntityScope::Organization { name },
        EntityKind::Enterprise => EntityScope::Enterprise { slug: name },
    };
    Ok(Entity {
        id: id.parse().map_err(corrupt)?,
        scope,
        credentials_name: ResourceName::parse(row.get("credentials_name")).map_err(corrupt)?,
        endpoint: ResourceName::parse(row.get("endpoint_name")).map_err(corrupt)?,
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

impl Store {
    pub async fn create_entity(&self, new: &NewEntity) -> Result<Entity> {
        if new.webhook_secret.is_empty() {
            return Err(StoreError::Invalid(
                "the webhook secret must not be empty".into(),
            ));
        }
        let id = EntityId::new_random();
        let (kind, owner, name) = scope_columns(&new.scope);
        let now = now_ms();
        // The endpoint comes from the credentials; none found leaves it
        // NULL, which the NOT NULL constraint refuses below.
        let endpoint_sql = "SELECT endpoint_name FROM credentials WHERE name = $1";
        let endpoint: Option<String> = on!(self, read, |c| sqlx::query_scalar(endpoint_sql)
            .bind(new.credentials_name.as_str())
            .fetch_optional(c)
            .await)?;
        let Some(endpoint) = endpoint else {
            return Err(StoreError::Conflict(format!(
                "credentials {:?} do not exist",
                new.credentials_name.as_str()
            )));
        };
        let sql = "INSERT INTO entities (id, kind, owner, name, endpoint_name, credentials_name,
                webhook_secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let sealed = self
            .sealer()
            .seal_secret(&hook_purpose(id), &new.webhook_secret);
        on!(self, write, |c| sqlx::query(sql)
            .bind(id.to_string())
            .bind(kind)
            .bind(owner)
            .bind(name)
            .bind(&endpoint)
            .bind(new.credentials_name.as_str())
            .bind(&sealed)
            .bind(now)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ()))
        .map_err(|e| {
            map_constraint(
                e,
                &format!(
                    "{kind} {} is already registered on endpoint {endpoint:?}",
                    new.scope.display_name()
                ),
                &format!(
                    "credentials {:?} do not exist",
                    new.credentials_name.as_str()
                ),
            )
        })?;
        self.entity(id).await
    }

    pub async fn entity(&self, id: EntityId) -> Result<Entity> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM entities WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("entity {id}")))?;
            entity_from_row(&row)
        })
    }

    pub async fn list_entities(&self, kind: Option<EntityKind>) -> Result<Vec<Entity>> {
        on!(self, read, |c| {
            let rows = match kind {
                Some(k) => {
                    sqlx::query("SELECT * FROM entities WHERE kind = $1 ORDER BY owner, name")
                        .bind(k.as_str())
                        .fetch_all(c)
                        .await?
                }
                None => {
                    sqlx::query("SELECT * FROM entities ORDER BY kind, owner, name")
                        .fetch_all(c)
                        .await?
                }
            };
            rows.iter().map(entity_from_row).collect()
        })
    }

    /// The entities registered for this scope, one per endpoint at most
    /// (names compare case-insensitively).
    pub async fn entities_by_scope(&self, scope: &EntityScope) -> Result<Vec<Entity>> {
        let (kind, owner, name) = scope_columns(scope);
        on!(self, read, |c| {
            let rows = sqlx::query(
                "SELECT * FROM entities WHERE kind = $1 AND owner = $2 AND name = $3 ORDER BY endpoint_name",
            )
            .bind(kind)
            .bind(owner)
            .bind(name)
            .fetch_all(c)
            .await?;
            rows.iter().map(entity_from_row).collect()
        })
    }

    /// The entity registered for this scope on `endpoint`.
    pub async fn entity_by_scope_on(
        &self,
        scope: &EntityScope,
        endpoint: &str,
    ) -> Result<Option<Entity>> {
        let (kind, owner, name) = scope_columns(scope);
        on!(self, read, |c| {
            let row = sqlx::query(
                "SELECT * FROM entities WHERE kind = $1 AND owner = $2 AND name = $3 AND endpoint_name = $4",
            )
            .bind(kind)
            .bind(owner)
            .bind(name)
            .bind(endpoint)
            .fetch_optional(c)
            .await?;
            row.as_ref().map(entity_from_row).transpose()
        })
    }

    pub async fn update_entity(
        &self,
        id: EntityId,
        credentials_name: Option<&ResourceName>,
        webhook_secret: Option<&Secret>,
    ) -> Result<Entity> {
        if webhook_secret.is_some_and(Secret::is_empty) {
            return Err(StoreError::Invalid(
                "the webhook secret must not be empty".into(),
            ));
        }
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM entities WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("entity {id}")));
            }
            let now = now_ms();
            if let Some(c) = credentials_name {
                let missing = format!("credentials {:?} do not exist", c.as_str());
                let endpoint: String =
                    sqlx::query_scalar("SELECT endpoint_name FROM credentials WHERE name = $1")
                        .bind(c.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| StoreError::Conflict(missing.clone()))?;
                // Credentials of another endpoint move the entity there, which
                // its twin on that endpoint (if any) refuses.
                sqlx::query(
                    "UPDATE entities SET credentials_name = $1, endpoint_name = $2, updated_at = $3 WHERE id = $4",
                )
                .bind(c.as_str())
                .bind(&endpoint)
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    map_constraint(
                        e,
                        &format!("entity {id} is already registered on endpoint {endpoint:?}"),
                        &missing,
                    )
                })?;
            }
            if let Some(s) = webhook_secret {
                sqlx::query(
                    "UPDATE entities SET webhook_secret = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(self.sealer().seal_secret(&hook_purpose(id), s))
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        self.entity(id).await
    }

    pub async fn delete_entity(&self, id: EntityId) -> Result<()> {
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let scale_sets: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM scale_sets WHERE entity_id = $1 ORDER BY name",
            )
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?;
            if !scale_sets.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "entity {id} still has {} scale set(s) ({}); delete them first",
                    scale_sets.len(),
                    scale_sets.join(", ")
                )));
            }
            let pools: Vec<String> =
                sqlx::query_scalar("SELECT id FROM pools WHERE entity_id = $1 ORDER BY id")
                    .bind(id.to_string())
                    .fetch_all(&mut *tx)
                    .await?;
            if !pools.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "entity {id} still has {} pool(s) ({}); delete them first",
                    pools.len(),
                    pools.join(", ")
                )));
            }
            // A pool or scale set made since the checks above (another
            // replica) holds the entity by foreign key.
            let done = sqlx::query("DELETE FROM entities WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    map_constraint(
                        e,
                        "entity id taken",
                        &format!("entity {id} still has pools or scale sets; delete them first"),
                    )
                })?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("entity {id}")));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every entity with its webhook secret opened (for the in-memory cache
    /// that lets a bad signature be refused without a query).
    pub async fn entity_webhook_secrets(&self) -> Result<Vec<(Entity, Secret)>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT * FROM entities").fetch_all(c).await?;
            rows.iter()
                .map(|row| {
                    let e = entity_from_row(row)?;
                    let s = self.sealer().open_secret(
                        &hook_purpose(e.id),
                        &row.get::<Vec<u8>, _>("webhook_secret"),
                    )?;
                    Ok((e, s))
                })
                .collect()
        })
    }

    pub async fn entity_webhook_secret(&self, id: EntityId) -> Result<Secret> {
        let sql = "SELECT webhook_secret FROM entities WHERE id = $1";
        let blob: Vec<u8> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(id.to_string())
            .fetch_optional(c)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("entity {id}")))?;
        Ok(self.sealer().open_secret(&hook_purpose(id), &blob)?)
    }

    /// Endpoint, credentials and scope of an entity: what a GitHub call needs.
    pub async fn forge_target(&self, id: EntityId) -> Result<ForgeTarget> {
        let entity = self.entity(id).await?;
        let credentials = self.credentials(entity.credentials_name.as_str()).await?;
        let endpoint = self.endpoint(credentials.endpoint.as_str()).await?;
        Ok(ForgeTarget {
            endpoint,
            credentials,
            scope: entity.scope,
        })
    }
}
