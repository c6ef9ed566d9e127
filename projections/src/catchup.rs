//! The catch-up projector: follows the event feed from a stored checkpoint and
//! applies every event to the read models.
//!
//! Commands already update the read models in the transaction that writes
//! their events, so in normal operation every event the projector applies is
//! a no-op (each write is guarded by the event's aggregate id and sequence).
//! It exists for what that path cannot cover: an event written by another
//! writer, a read model dropped and emptied, a bug fixed in a projection. One
//! instance is active at a time, holding a session advisory lock; the others
//! wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};

use crate::ProjectionError;
use crate::feed::{self, AuditEvent, EventFilter, EventPosition};
use crate::rebuild::{StoredEvent, project_all};

/// Checkpoint name of the read models this projector maintains.
pub const NAME: &str = "read_models";
/// Advisory lock key held by the active projector ("nepxy-cu" in ASCII).
const LOCK_KEY: i64 = 0x6e65_7078_792d_6375;

#[derive(Clone)]
pub struct CatchUp {
    pub pool: PgPool,
    /// Events applied per transaction.
    pub batch_size: i64,
    /// Wait between rounds when the feed had nothing new.
    pub idle_wait: Duration,
    /// Seconds since the oldest event not yet applied was recorded; 0 when
    /// caught up. Exported for monitoring.
    pub lag_seconds: Arc<AtomicI64>,
}

impl CatchUp {
    /// Runs until `shutdown` completes. While another instance holds the
    /// lock, this one checks again after each idle wait.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut holder: Option<PgConnection> = None;
        loop {
            if holder.is_none() {
                holder = match self.try_lock().await {
                    Ok(connection) => {
                        if connection.is_some() {
                            tracing::info!("catch-up projector is active");
                        }
                        connection
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "catch-up projector could not take its lock");
                        None
                    }
                };
            }
            let applied = match &holder {
                Some(_) => match self.round().await {
                    Ok(applied) => applied,
                    Err(error) => {
                        tracing::error!(error = %error, "catch-up round failed; retrying after a pause");
                        0
                    }
                },
                None => 0,
            };
            if applied > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.idle_wait) => {}
            }
        }
        tracing::info!("catch-up projector stopped");
    }

    /// Takes the projector's advisory lock on a connection detached from the
    /// pool, so the lock ends when the connection is dropped and closed
    /// instead of staying with a pooled connection; `None` when another
    /// instance holds it.
    pub async fn try_lock(&self) -> Result<Option<PgConnection>, ProjectionError> {
        let mut connection = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        Ok(locked.then_some(connection))
    }

    async fn checkpoint(&self) -> Result<Option<EventPosition>, ProjectionError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT transaction_id::text, global_position FROM projection_checkpoints WHERE name = $1",
        )
        .bind(NAME)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(transaction_id, global_position)| {
            Ok(EventPosition {
                transaction_id: transaction_id.parse().map_err(|_| {
                    ProjectionError::Corrupt(format!(
                        "checkpoint {transaction_id:?} is not a number"
                    ))
                })?,
                global_position,
            })
        })
        .transpose()
    }

    /// Applies the next batch of events and moves the checkpoint past them in
    /// the same transaction. Returns how many events were read.
    pub async fn round(&self) -> Result<usize, ProjectionError> {
        let after = self.checkpoint().await?;
        let filter = EventFilter {
            after,
            limit: self.batch_size,
            ..EventFilter::default()
        };
        let page = feed::events(&self.pool, &filter).await?;
        let Some(last) = page.last().map(|event| event.position) else {
            self.lag_seconds.store(0, Ordering::Relaxed);
            return Ok(0);
        };

        let mut tx = self.pool.begin().await?;
        let count = page.len();
        let oldest = page.first().map(|event| event.recorded_at);
        project_all(&mut tx, page.into_iter().map(stored)).await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, transaction_id, global_position, updated_at) \
             VALUES ($1, $2::text::xid8, $3, now()) \
             ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, \
                 global_position = EXCLUDED.global_position, updated_at = now()",
        )
        .bind(NAME)
        .bind(last.transaction_id.to_string())
        .bind(last.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        let lag = oldest.map_or(0, |recorded_at| {
            (Utc::now() - recorded_at).num_seconds().max(0)
        });
        self.lag_seconds.store(lag, Ordering::Relaxed);
        Ok(count)
    }
}

fn stored(event: AuditEvent) -> StoredEvent {
    StoredEvent {
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_version: event.event_version,
        payload: event.payload.to_string(),
        metadata: event.metadata.to_string(),
        recorded_at: event.recorded_at,
    }
}
