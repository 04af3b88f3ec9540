//! GitHub / GHES endpoints.

use hangar_core::{Endpoint, ResourceName};

use crate::{DbRow, Result, Store, StoreError, corrupt, map_constraint, now_ms, on};

fn endpoint_from_row(row: &impl DbRow) -> Result<Endpoint> {
    Ok(Endpoint {
        name: ResourceName::parse(row.get("name")).map_err(corrupt)?,
        description: row.get("description"),
        base_url: row.get("base_url"),
        api_base_url: row.get("api_base_url"),
        ca_bundle: row.get("ca_bundle"),
    })
}

fn in_use(name: &str, credentials: &[String]) -> StoreError {
    let by = if credentials.is_empty() {
        "credentials".to_owned()
    } else {
        format!("credentials {}", credentials.join(", "))
    };
    StoreError::Conflict(format!(
        "endpoint {name:?} is used by {by}; delete or move them first"
    ))
}

impl Store {
    pub async fn create_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let now = now_ms();
        on!(self, write, |c| sqlx::query(
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
        .execute(c)
        .await
        .map(|_| ()))
        .map_err(|err| map_constraint(err, &format!("endpoint {:?} already exists", e.name.as_str()), ""))?;
        self.endpoint(e.name.as_str()).await
    }

    pub async fn endpoint(&self, name: &str) -> Result<Endpoint> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM endpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("endpoint {name:?}")))?;
            endpoint_from_row(&row)
        })
    }

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT * FROM endpoints ORDER BY name")
                .fetch_all(c)
                .await?;
            rows.iter().map(endpoint_from_row).collect()
        })
    }

    /// Replaces the endpoint's mutable fields (its name is its identity).
    pub async fn update_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let now = now_ms();
        let changed = on!(self, write, |c| {
            sqlx::query(
            "UPDATE endpoints SET description = $1, base_url = $2, api_base_url = $3, ca_bundle = $4, updated_at = $5
             WHERE name = $6",
        )
        .bind(&e.description)
        .bind(&e.base_url)
        .bind(&e.api_base_url)
        .bind(&e.ca_bundle)
        .bind(now)
        .bind(e.name.as_str())
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "endpoint {:?}",
                e.name.as_str()
            )));
        }
        self.endpoint(e.name.as_str()).await
    }

    pub async fn delete_endpoint(&self, name: &str) -> Result<()> {
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let users: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM credentials WHERE endpoint_name = $1 ORDER BY name",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            if !users.is_empty() {
                return Err(in_use(name, &users));
            }
            // Credentials added since the check (another connection, on
            // PostgreSQL) make the foreign key refuse: the same answer.
            let done = sqlx::query("DELETE FROM endpoints WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| map_constraint(e, "", &in_use(name, &[]).to_string()))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("endpoint {name:?}")));
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
