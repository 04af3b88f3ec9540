//! The instance token and the one-time JIT config: what a booting instance
//! proves itself with and what it may fetch exactly once — the whole config
//! (Hangar's userdata), each of its three files (garm's boot script), or a
//! registration token (non-JIT instances).
//!
//! The whole config and its files exclude each other: taking the whole
//! config takes every file, and once any file is out the whole config is
//! refused. When the last file is out the config is forgotten, as when the
//! whole config is taken.

use hangar_core::jit::{JitFile, jit_file};
use hangar_core::{InstanceName, Secret};

use super::{TokenLookup, instance_from_row, jit_purpose, locking, not_found};
use crate::{DbRow, Result, Store, StoreError, now_ms, on, per_backend};

per_backend! {
/// The JIT config columns of an instance, in the caller's transaction; on
/// PostgreSQL the row stays locked until it ends, so two fetches racing
/// from two connections cannot both be first.
pub(super) async fn jit_state(
    conn: &mut Conn,
    name: &InstanceName,
) -> Result<(Option<Vec<u8>>, Option<i64>, i64)> {
    let row = sqlx::query(locking!(
        "SELECT jit_config, jit_fetched_at, jit_files_taken FROM instances WHERE name = $1"
    ))
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found(name))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
}

impl Store {
    /// Stores the JIT config (sealed) and the GitHub runner id.
    pub async fn set_instance_jit(
        &self,
        name: &InstanceName,
        runner_id: i64,
        jit_config: &Secret,
    ) -> Result<()> {
        let sealed = self.sealer().seal_secret(&jit_purpose(name), jit_config);
        let sql = "UPDATE instances SET runner_id = $1, jit_config = $2, jit_files_taken = 0, updated_at = $3
             WHERE name = $4";
        let done = on!(self, write, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let done = sqlx::query(sql)
                .bind(runner_id)
                .bind(&sealed)
                .bind(now_ms())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            done
        });
        if done == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// The instance a token hash belongs to, if it is still valid (not
    /// deleted).
    pub async fn instance_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<TokenLookup>> {
        let sql = concat!(
            "SELECT ",
            super::instance_columns!(),
            ", jit_config IS NOT NULL AS has_jit, jit_fetched_at IS NOT NULL AS fetched
             FROM instances WHERE token_hash = $1"
        );
        on!(self, read, |c| {
            let row = sqlx::query(sql)
                .bind(&token_hash[..])
                .fetch_optional(c)
                .await?;
            row.map(|row| {
                Ok(TokenLookup {
                    instance: instance_from_row(&row)?,
                    has_jit_config: row.get("has_jit"),
                    jit_fetched: row.get("fetched"),
                })
            })
            .transpose()
        })
    }

    /// Hands out the JIT config exactly once: returns it and forgets it.
    /// A second call is a [`StoreError::Conflict`].
    pub async fn take_jit_config(&self, name: &InstanceName) -> Result<Secret> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let (sealed, fetched, taken) = m::jit_state(&mut tx, name).await?;
            if fetched.is_some() {
                return Err(StoreError::Conflict(
                    "the JIT config of this instance was already fetched".into(),
                ));
            }
            if taken != 0 {
                return Err(StoreError::Conflict(
                    "files of this instance's JIT config were already fetched one by one".into(),
                ));
            }
            let sealed = sealed
                .ok_or_else(|| StoreError::NotFound(format!("a JIT config for instance {name}")))?;
            let secret = self.sealer().open_secret(&jit_purpose(name), &sealed)?;
            sqlx::query("UPDATE instances SET jit_config = NULL, jit_fetched_at = $1, jit_files_taken = $2, updated_at = $3 WHERE name = $4")
                .bind(now_ms())
                .bind(i64::from(JitFile::all_bits()))
                .bind(now_ms())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(secret)
        })
    }

    /// Hands out one file of the JIT config, decoded, exactly once. A
    /// second read of the file, or any read after the whole config was
    /// taken, is a [`StoreError::Conflict`]; an instance without a JIT
    /// config gets [`StoreError::NotFound`].
    pub async fn take_jit_file(&self, name: &InstanceName, file: JitFile) -> Result<Vec<u8>> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let (sealed, fetched, taken) = m::jit_state(&mut tx, name).await?;
            let taken = taken as u8;
            if taken & file.bit() != 0 || fetched.is_some() {
                return Err(StoreError::Conflict(format!(
                    "the {} file of this instance's JIT config was already fetched",
                    file.file_name()
                )));
            }
            let sealed = sealed
                .ok_or_else(|| StoreError::NotFound(format!("a JIT config for instance {name}")))?;
            let secret = self.sealer().open_secret(&jit_purpose(name), &sealed)?;
            let content = jit_file(secret.expose(), file).map_err(|e| match e {
                hangar_core::JitFileError::Missing(f) => StoreError::NotFound(format!(
                    "the {f} file in the JIT config of instance {name}"
                )),
                other => StoreError::Corrupt(format!("JIT config of instance {name}: {other}")),
            })?;
            let taken = taken | file.bit();
            let mut q = sqlx::QueryBuilder::new("UPDATE instances SET jit_files_taken = ");
            q.push_bind(i64::from(taken))
                .push(", updated_at = ")
                .push_bind(now_ms());
            if taken == JitFile::all_bits() {
                q.push(", jit_config = NULL, jit_fetched_at = ")
                    .push_bind(now_ms());
            }
            q.push(" WHERE name = ").push_bind(name.as_str().to_owned());
            q.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(content)
        })
    }

    /// Claims the one registration token a non-JIT instance may have per
    /// create attempt; a second claim is a [`StoreError::Conflict`]. The
    /// caller gives the claim back with [`Store::release_registration_token`]
    /// when it could not get a token after all.
    pub async fn claim_registration_token(&self, name: &InstanceName) -> Result<()> {
        let sql = "UPDATE instances SET registration_token_at = $1, updated_at = $2
             WHERE name = $3 AND registration_token_at IS NULL";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(now_ms())
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::Conflict(
                "this instance already fetched its registration token".into(),
            ));
        }
        Ok(())
    }

    /// Undoes [`Store::claim_registration_token`].
    pub async fn release_registration_token(&self, name: &InstanceName) -> Result<()> {
        let sql = "UPDATE instances SET registration_token_at = NULL WHERE name = $1";
        on!(self, write, |c| sqlx::query(sql)
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Records what the instance reported about itself: its OS, and the
    /// GitHub runner id (`agent_id`) when Hangar did not know it yet.
    pub async fn record_system_info(
        &self,
        name: &InstanceName,
        os_name: Option<&str>,
        os_version: Option<&str>,
        agent_id: Option<i64>,
    ) -> Result<()> {
        let sql = "UPDATE instances SET os_name = COALESCE($1, os_name), os_version = COALESCE($2, os_version),
                runner_id = COALESCE(runner_id, $3), updated_at = $4
             WHERE name = $5";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(os_name)
            .bind(os_version)
            .bind(agent_id)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }
}
