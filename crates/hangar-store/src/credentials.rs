//! GitHub credentials (PAT or App). The token or private key and the App's
//! webhook secret are sealed; listings never include them.

use crate::{DbRow, Result, Store, StoreError, corrupt, map_constraint, now_ms, on, to_dt};
use chrono::{DateTime, Utc};
use hangar_core::{Credentials, CredentialsAuth, ResourceName, Secret};

/// Credentials without their secrets, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsSummary {
    pub name: ResourceName,
    pub description: String,
    pub endpoint: ResourceName,
    pub auth_type: String,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub has_app_webhook_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn secret_purpose(name: &str) -> String {
    format!("credentials.secret:{name}")
}

pub(crate) fn hook_purpose(name: &str) -> String {
    format!("credentials.app_webhook_secret:{name}")
}

fn summary_from_row(row: &impl DbRow) -> Result<CredentialsSummary> {
    let hook: Option<Vec<u8>> = row.get("app_webhook_secret");
    Ok(CredentialsSummary {
        name: ResourceName::parse(row.get("name")).map_err(corrupt)?,
        description: row.get("description"),
        endpoint: ResourceName::parse(row.get("endpoint_name")).map_err(corrupt)?,
        auth_type: row.get("auth_type"),
        app_id: row.get("app_id"),
        installation_id: row.get("installation_id"),
        has_app_webhook_secret: hook.is_some(),
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

impl Store {
    fn credentials_from_row(&self, row: &impl DbRow) -> Result<Credentials> {
        let name: String = row.get("name");
        let secret = self
            .sealer()
            .open_secret(&secret_purpose(&name), &row.get::<Vec<u8>, _>("secret"))?;
        let auth = match row.get::<String, _>("auth_type").as_str() {
            "pat" => CredentialsAuth::Pat { token: secret },
            "app" => CredentialsAuth::App {
                app_id: row
                    .get::<Option<i64>, _>("app_id")
                    .ok_or_else(|| corrupt("app without app_id"))?,
                installation_id: row
                    .get::<Option<i64>, _>("installation_id")
                    .ok_or_else(|| corrupt("app without installation_id"))?,
                private_key: secret,
            },
            other => return Err(corrupt(format!("auth_type {other}"))),
        };
        let hook: Option<Vec<u8>> = row.get("app_webhook_secret");
        let app_webhook_secret = hook
            .map(|h| self.sealer().open_secret(&hook_purpose(&name), &h))
            .transpose()?;
        Ok(Credentials {
            name: ResourceName::parse(&name).map_err(corrupt)?,
            description: row.get("description"),
            endpoint: ResourceName::parse(row.get("endpoint_name")).map_err(corrupt)?,
            auth,
            app_webhook_secret,
        })
    }

    fn seal_auth(&self, name: &str, auth: &CredentialsAuth) -> (Vec<u8>, Option<i64>, Option<i64>) {
        match auth {
            CredentialsAuth::Pat { token } => (
                self.sealer().seal_secret(&secret_purpose(name), token),
                None,
                None,
            ),
            CredentialsAuth::App {
                app_id,
                installation_id,
                private_key,
            } => (
                self.sealer()
                    .seal_secret(&secret_purpose(name), private_key),
                Some(*app_id),
                Some(*installation_id),
            ),
        }
    }

    pub async fn create_credentials(&self, c: &Credentials) -> Result<CredentialsSummary> {
        let name = c.name.as_str();
        let (secret, app_id, installation_id) = self.seal_auth(name, &c.auth);
        let hook = c
            .app_webhook_secret
            .as_ref()
            .map(|s| self.sealer().seal_secret(&hook_purpose(name), s));
        let now = now_ms();
        let sql = "INSERT INTO credentials (name, description, endpoint_name, auth_type, app_id,
                installation_id, secret, app_webhook_secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        on!(self, write, |w| sqlx::query(sql)
            .bind(name)
            .bind(&c.description)
            .bind(c.endpoint.as_str())
            .bind(c.auth.kind())
            .bind(app_id)
            .bind(installation_id)
            .bind(secret)
            .bind(hook)
            .bind(now)
            .bind(now)
            .execute(w)
            .await
            .map(|_| ()))
        .map_err(|e| {
            map_constraint(
                e,
                &format!("credentials {name:?} already exist"),
                &format!("endpoint {:?} does not exist", c.endpoint.as_str()),
            )
        })?;
        self.credentials_summary(name).await
    }

    /// The credentials with their secrets opened.
    pub async fn credentials(&self, name: &str) -> Result<Credentials> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM credentials WHERE name = $1")
                .bind(name)
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("credentials {name:?}")))?;
            self.credentials_from_row(&row)
        })
    }

    pub async fn credentials_summary(&self, name: &str) -> Result<CredentialsSummary> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM credentials WHERE name = $1")
                .bind(name)
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("credentials {name:?}")))?;
            summary_from_row(&row)
        })
    }

    pub async fn list_credentials(&self) -> Result<Vec<CredentialsSummary>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT * FROM credentials ORDER BY name")
                .fetch_all(c)
                .await?;
            rows.iter().map(summary_from_row).collect()
        })
    }

    /// Updates what is given. `app_webhook_secret: Some(empty)` removes it.
    pub async fn update_credentials(
        &self,
        name: &str,
        description: Option<&str>,
        auth: Option<&CredentialsAuth>,
        app_webhook_secret: Option<&Secret>,
    ) -> Result<CredentialsSummary> {
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM credentials WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("credentials {name:?}")));
            }
            let now = now_ms();
            if let Some(d) = description {
                sqlx::query(
                    "UPDATE credentials SET description = $1, updated_at = $2 WHERE name = $3",
                )
                .bind(d)
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(auth) = auth {
                let (secret, app_id, installation_id) = self.seal_auth(name, auth);
                sqlx::query(
                    "UPDATE credentials SET auth_type = $1, secret = $2, app_id = $3, installation_id = $4, updated_at = $5 WHERE name = $6",
                )
                .bind(auth.kind())
                .bind(secret)
                .bind(app_id)
                .bind(installation_id)
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(hook) = app_webhook_secret {
                let sealed = (!hook.is_empty())
                    .then(|| self.sealer().seal_secret(&hook_purpose(name), hook));
                sqlx::query(
                    "UPDATE credentials SET app_webhook_secret = $1, updated_at = $2 WHERE name = $3",
                )
                .bind(sealed)
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        self.credentials_summary(name).await
    }

    pub async fn delete_credentials(&self, name: &str) -> Result<()> {
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let users: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT kind, owner, name FROM entities WHERE credentials_name = $1 ORDER BY kind, owner, name",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            if !users.is_empty() {
                let list: Vec<String> = users
                    .iter()
                    .map(|(k, o, n)| {
                        if o.is_empty() {
                            format!("{k} {n}")
                        } else {
                            format!("{k} {o}/{n}")
                        }
                    })
                    .collect();
                return Err(StoreError::Conflict(format!(
                    "credentials {name:?} are in use by {}; delete those first",
                    list.join(", ")
                )));
            }
            // An entity made since the check above (another replica)
            // holds them by foreign key.
            let done = sqlx::query("DELETE FROM credentials WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    map_constraint(
                        e,
                        "credentials name taken",
                        &format!("credentials {name:?} are in use; delete what uses them first"),
                    )
                })?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("credentials {name:?}")));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every GitHub App's webhook secret, with its app id, for verifying
    /// deliveries to the App's single hook.
    pub async fn app_webhook_secrets(&self) -> Result<Vec<(ResourceName, i64, Secret)>> {
        on!(self, read, |c| {
            let rows = sqlx::query(
                "SELECT name, app_id, app_webhook_secret FROM credentials
                 WHERE auth_type = 'app' AND app_webhook_secret IS NOT NULL",
            )
            .fetch_all(c)
            .await?;
            rows.iter()
                .map(|row| {
                    let name: String = row.get(0);
                    let secret = self
                        .sealer()
                        .open_secret(&hook_purpose(&name), &row.get::<Vec<u8>, _>(2))?;
                    Ok((
                        ResourceName::parse(&name).map_err(corrupt)?,
                        row.get(1),
                        secret,
                    ))
                })
                .collect()
        })
    }
}
