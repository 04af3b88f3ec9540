//! The instance token and the one-time JIT config: what a booting instance
//! proves itself with and what it may fetch exactly once.

use hangar_core::{InstanceName, Secret};
use sqlx::Row;

use super::{TokenLookup, instance_from_row, jit_purpose, not_found};
use crate::{Result, Store, StoreError, now_ms};

impl Store {
    /// Stores the JIT config (sealed) and the GitHub runner id.
    pub async fn set_instance_jit(
        &self,
        name: &InstanceName,
        runner_id: i64,
        jit_config: &Secret,
    ) -> Result<()> {
        let sealed = self.sealer().seal_secret(&jit_purpose(name), jit_config);
        let done = sqlx::query(
            "UPDATE instances SET runner_id = ?, jit_config = ?, updated_at = ? WHERE name = ?",
        )
        .bind(runner_id)
        .bind(sealed)
        .bind(now_ms())
        .bind(name.as_str())
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// The instance a token hash belongs to, if it is still valid (not
    /// deleted).
    pub async fn instance_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<TokenLookup>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            super::instance_columns!(),
            ", jit_config IS NOT NULL AS has_jit, jit_fetched_at IS NOT NULL AS fetched
             FROM instances WHERE token_hash = ?"
        ))
        .bind(&token_hash[..])
        .fetch_optional(self.r())
        .await?;
        row.map(|row| {
            Ok(TokenLookup {
                instance: instance_from_row(&row)?,
                has_jit_config: row.get("has_jit"),
                jit_fetched: row.get("fetched"),
            })
        })
        .transpose()
    }

    /// Hands out the JIT config exactly once: returns it and forgets it.
    /// A second call is a [`StoreError::Conflict`].
    pub async fn take_jit_config(&self, name: &InstanceName) -> Result<Secret> {
        let mut tx = self.w().begin().await?;
        let row = sqlx::query("SELECT jit_config, jit_fetched_at FROM instances WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let sealed: Option<Vec<u8>> = row.get(0);
        let fetched: Option<i64> = row.get(1);
        if fetched.is_some() {
            return Err(StoreError::Conflict(
                "the JIT config of this instance was already fetched".into(),
            ));
        }
        let sealed = sealed
            .ok_or_else(|| StoreError::NotFound(format!("a JIT config for instance {name}")))?;
        let secret = self.sealer().open_secret(&jit_purpose(name), &sealed)?;
        sqlx::query("UPDATE instances SET jit_config = NULL, jit_fetched_at = ?, updated_at = ? WHERE name = ?")
            .bind(now_ms())
            .bind(now_ms())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(secret)
    }
}
