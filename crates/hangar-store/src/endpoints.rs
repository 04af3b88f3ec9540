//! GitHub / GHES endpoints.

use hangar_core::{Endpoint, ResourceName};
use sqlx::Row;

use crate::{Result, Store, StoreError, corrupt, map_constraint, now_ms};

fn endpoint_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Endpoint> {
    Ok(Endpoint {
        name: ResourceName::parse(row.get("name")).map_err(corrupt)?,
        description: row.get("description"),
        base_url: row.get("base_url"),
        api_base_url: row.get("api_base_url"),
        ca_bundle: row.get("ca_bundle"),
    })
}

impl Store {
    pub async fn create_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO endpoints (name, description, base_url, api_base_url, ca_bundle, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.name.as_str())
        .bind(&e.description)
        .bind(&e.base_url)
        .bind(&e.api_base_url)
        .bind(&e.ca_bundle)
        .bind(now)
        .bind(now)
        .execute(self.w())
        .await
        .map_err(|err| map_constraint(err, &format!("endpoint {:?} already exists", e.name.as_str()), ""))?;
        self.endpoint(e.name.as_str()).await
    }

    pub async fn endpoint(&self, name: &str) -> Result<Endpoint> {
        let row = sqlx::query("SELECT * FROM endpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(self.r())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("endpoint {name:?}")))?;
        endpoint_from_row(&row)
    }

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query("SELECT * FROM endpoints ORDER BY name")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Replaces the endpoint's mutable fields (its name is its identity).
    pub async fn update_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let done = sqlx::query(
            "UPDATE endpoints SET description = $1, base_url = $2, api_base_url = $3, ca_bundle = $4, updated_at = $5
             WHERE name = $6",
        )
        .bind(&e.description)
        .bind(&e.base_url)
        .bind(&e.api_base_url)
        .bind(&e.ca_bundle)
        .bind(now_ms())
        .bind(e.name.as_str())
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "endpoint {:?}",
                e.name.as_str()
            )));
        }
        self.endpoint(e.name.as_str()).await
    }

    pub async fn delete_endpoint(&self, name: &str) -> Result<()> {
        let mut tx = self.w().begin().await?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM credentials WHERE endpoint_name = $1 ORDER BY name",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "endpoint {name:?} is used by credentials {}; delete or move them first",
                users.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM endpoints WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("endpoint {name:?}")));
        }
        tx.commit().await?;
        Ok(())
    }
}
