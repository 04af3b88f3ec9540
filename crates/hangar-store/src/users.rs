//! Admin users. Passwords arrive already hashed (Argon2id, by the server);
//! the token generation lets a password reset invalidate every old token.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{DbRow, Result, Store, StoreError, map_constraint, now_ms, on, to_dt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub is_admin: bool,
    pub token_generation: i64,
    pub created_at: DateTime<Utc>,
}

fn user_from_row(row: &impl DbRow) -> Result<User> {
    let id: String = row.get("id");
    Ok(User {
        id: id.parse().map_err(crate::corrupt)?,
        username: row.get("username"),
        email: row.get("email"),
        full_name: row.get("full_name"),
        password_hash: row.get("password_hash"),
        is_admin: row.get("is_admin"),
        token_generation: row.get("token_generation"),
        created_at: to_dt(row.get("created_at")),
    })
}

impl Store {
    pub async fn has_admin(&self) -> Result<bool> {
        let sql = "SELECT COUNT(*) FROM users WHERE is_admin = TRUE";
        let n: i64 = on!(self, read, |c| sqlx::query_scalar(sql).fetch_one(c).await)?;
        Ok(n > 0)
    }

    /// Creates the first admin; a [`StoreError::Conflict`] when an admin
    /// already exists (checked in the same transaction as the insert).
    pub async fn create_first_admin(
        &self,
        username: &str,
        email: Option<&str>,
        full_name: Option<&str>,
        password_hash: &str,
    ) -> Result<User> {
        let id = Uuid::new_v4();
        let now = now_ms();
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            // On PostgreSQL two replicas may both find no admin: the lock
            // makes the second wait for the first's commit and see it.
            if self.backend_name() == "postgres" {
                sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = TRUE")
                .fetch_one(&mut *tx)
                .await?;
            if n > 0 {
                return Err(StoreError::Conflict(
                    "an admin user already exists; log in instead".into(),
                ));
            }
            sqlx::query(
                "INSERT INTO users (id, username, email, full_name, password_hash, is_admin, token_generation, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, TRUE, 0, $6, $7)",
            )
            .bind(id.to_string())
            .bind(username)
            .bind(email)
            .bind(full_name)
            .bind(password_hash)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_constraint(e, "that username is taken", ""))?;
            tx.commit().await?;
        });
        self.user_by_id(id).await
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(c)
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<User> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
            user_from_row(&row)
        })
    }

    /// Replaces the password and bumps the token generation, so every token
    /// issued before is refused from now on.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> Result<User> {
        let now = now_ms();
        let changed = on!(self, write, |c| {
            sqlx::query(
            "UPDATE users SET password_hash = $1, token_generation = token_generation + 1, updated_at = $2
             WHERE username = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(username)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("user {username:?}")));
        }
        self.user_by_name(username)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {username:?}")))
    }

    /// The first admin's name, for `hangard admin reset-password`.
    pub async fn first_admin_name(&self) -> Result<Option<String>> {
        let sql = "SELECT username FROM users WHERE is_admin = TRUE ORDER BY created_at LIMIT 1";
        Ok(on!(self, read, |c| sqlx::query_scalar(sql)
            .fetch_optional(c)
            .await)?)
    }
}
