//! The controller row: this installation's id, the key-derivation salt and
//! key check, the JWT signing secret and the operator's URL overrides.

use crate::{DbRow, Result, Sealer, Store, StoreError, corrupt, now_ms, on, per_backend};
use hangar_core::{ControllerId, Secret};
use rand::RngCore;

const JWT_PURPOSE: &str = "controller.jwt_secret";

/// The controller as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub controller_id: ControllerId,
    /// Overrides of the URLs derived from `public_url`; `None` = derived.
    pub metadata_url: Option<String>,
    pub callback_url: Option<String>,
    pub webhook_url: Option<String>,
    /// The garm installation this one was imported from (`hangard
    /// import-garm`): its hooks post to `/webhooks/<id>`, its runners carry
    /// `runner-controller-id:<id>`.
    pub garm_controller_id: Option<ControllerId>,
    /// Controller ids of garm deployments imported into this one: hooks
    /// garm made point at `/webhooks/<id>`.
    pub garm_controller_ids: Vec<String>,
}

per_backend! {
/// Creates the controller row on first start; returns the id and the sealer.
pub(crate) async fn ensure(
    pool: &sqlx::Pool<Db>,
    passphrase: &Secret,
    verified: Option<Sealer>,
) -> Result<(ControllerId, Sealer)> {
    let row = sqlx::query("SELECT controller_id, kdf_salt, key_check FROM controller WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    if let Some(row) = row {
        let id: String = row.get(0);
        let sealer = match verified {
            Some(s) => s,
            None => {
                let salt: Vec<u8> = row.get(1);
                let check: Vec<u8> = row.get(2);
                let s = Sealer::derive(passphrase, &salt)?;
                if !s.verify_key_check(&check) {
                    return Err(StoreError::WrongPassphrase {
                        path: "(database)".into(),
                    });
                }
                s
            }
        };
        let id = id.parse().map_err(corrupt)?;
        return Ok((id, sealer));
    }
    let salt = Sealer::new_salt();
    let sealer = Sealer::derive(passphrase, &salt)?;
    let id = ControllerId::new_random();
    let mut jwt = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut jwt);
    let jwt_sealed = sealer.seal(JWT_PURPOSE, hex::encode(jwt).as_bytes());
    let inserted = sqlx::query(
        "INSERT INTO controller (id, controller_id, kdf_salt, key_check, jwt_secret, created_at)
         VALUES (1, $1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(&salt)
    .bind(sealer.key_check())
    .bind(jwt_sealed)
    .bind(now_ms())
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another replica made it first (PostgreSQL, several starting at
        // once): take theirs, checked against this passphrase.
        return Box::pin(ensure(pool, passphrase, None)).await;
    }
    tracing::info!(controller.id = %id, "created a new controller identity");
    Ok((id, sealer))
}
}

fn info_from_row(
    controller_id: ControllerId,
    row: &impl DbRow,
    garm_controller_ids: Vec<String>,
) -> Result<ControllerInfo> {
    Ok(ControllerInfo {
        controller_id,
        metadata_url: row.get(0),
        callback_url: row.get(1),
        webhook_url: row.get(2),
        garm_controller_id: row
            .get::<Option<String>, _>(3)
            .map(|s| s.parse().map_err(corrupt))
            .transpose()?,
        garm_controller_ids,
    })
}

impl Store {
    pub async fn controller_info(&self) -> Result<ControllerInfo> {
        on!(self, read, |c| {
            let row = sqlx::query(
                "SELECT metadata_url, callback_url, webhook_url, garm_controller_id FROM controller WHERE id = 1",
            )
            .fetch_one(c)
            .await?;
            let garm_controller_ids = sqlx::query_scalar(
                "SELECT controller_id FROM garm_controller_ids ORDER BY created_at, controller_id",
            )
            .fetch_all(c)
            .await?;
            info_from_row(self.controller_id(), &row, garm_controller_ids)
        })
    }

    /// Records the controller id of a garm deployment moved over (by the
    /// importer), so hooks garm made keep reaching this one. Idempotent.
    pub async fn add_garm_controller_id(&self, controller_id: &str) -> Result<()> {
        on!(self, write, |c| sqlx::query(
            "INSERT INTO garm_controller_ids (controller_id, created_at) VALUES ($1, $2)
             ON CONFLICT (controller_id) DO NOTHING",
        )
        .bind(controller_id.trim())
        .bind(now_ms())
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Sets (Some) or clears (Some("")) URL overrides; `None` leaves a field.
    pub async fn update_controller_urls(
        &self,
        metadata_url: Option<&str>,
        callback_url: Option<&str>,
        webhook_url: Option<&str>,
    ) -> Result<ControllerInfo> {
        let norm = |v: Option<&str>| {
            v.map(|s| {
                if s.is_empty() {
                    None
                } else {
                    Some(s.to_owned())
                }
            })
        };
        let updates = [
            (
                "UPDATE controller SET metadata_url = $1 WHERE id = 1",
                norm(metadata_url),
            ),
            (
                "UPDATE controller SET callback_url = $1 WHERE id = 1",
                norm(callback_url),
            ),
            (
                "UPDATE controller SET webhook_url = $1 WHERE id = 1",
                norm(webhook_url),
            ),
        ];
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            for (sql, val) in &updates {
                if let Some(v) = val {
                    sqlx::query(*sql).bind(v).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        self.controller_info().await
    }

    /// The secret API tokens are signed with, generated on first start.
    pub async fn jwt_secret(&self) -> Result<Secret> {
        let sql = "SELECT jwt_secret FROM controller WHERE id = 1";
        let blob: Vec<u8> = on!(self, read, |c| sqlx::query_scalar(sql).fetch_one(c).await)?;
        Ok(self.sealer().open_secret(JWT_PURPOSE, &blob)?)
    }
}
