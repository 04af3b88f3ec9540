//! Where lost-delivery recovery has got to: per source of webhook
//! deliveries, the hook's id (found by its URL) and the newest delivery
//! already looked at, so each pass reads only newer deliveries.

use crate::{DbRow, Result, Store, now_ms, on};

/// Recovery's place in one hook's deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCursor {
    /// The hook's id; `None` until found (or for a GitHub App's hook).
    pub hook_id: Option<i64>,
    /// The highest delivery id already looked at (0: none yet).
    pub last_seen: i64,
}

impl Store {
    /// The cursor of `source` (`entity:<id>` or `app:<credentials>`).
    pub async fn delivery_cursor(&self, source: &str) -> Result<Option<DeliveryCursor>> {
        on!(self, read, |c| {
            let row =
                sqlx::query("SELECT hook_id, last_seen FROM delivery_cursors WHERE source = $1")
                    .bind(source)
                    .fetch_optional(c)
                    .await?;
            Ok(row.map(|r| DeliveryCursor {
                hook_id: r.get(0),
                last_seen: r.get(1),
            }))
        })
    }

    /// Records the cursor of `source`. The mark never moves back unless
    /// the hook changed (a new hook's ids start elsewhere). Under a fence
    /// (recovery on the replica that leads) it is refused once the lease
    /// is gone.
    pub async fn set_delivery_cursor(&self, source: &str, cursor: DeliveryCursor) -> Result<()> {
        let now = now_ms();
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            sqlx::query(
            "INSERT INTO delivery_cursors (source, hook_id, last_seen, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source) DO UPDATE SET
               last_seen = CASE
                 WHEN delivery_cursors.hook_id IS NOT DISTINCT FROM excluded.hook_id
                  AND delivery_cursors.last_seen > excluded.last_seen
                 THEN delivery_cursors.last_seen ELSE excluded.last_seen END,
               hook_id = excluded.hook_id,
               updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(cursor.hook_id)
        .bind(cursor.last_seen)
        .bind(now)
        .execute(&mut *tx)
        .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forgets the cursor of `source` (its hook is gone).
    pub async fn clear_delivery_cursor(&self, source: &str) -> Result<()> {
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            sqlx::query("DELETE FROM delivery_cursors WHERE source = $1")
                .bind(source)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
