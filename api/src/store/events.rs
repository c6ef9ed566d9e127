//! The event store: postgres-es's `events` and `snapshots` tables, written in
//! one transaction together with the read models and idempotency records.
//!
//! cqrs-es's own framework commits each aggregate separately and updates
//! views outside that transaction, so a payout (a wallet reserve plus a new
//! payout) goes through a [`UnitOfWork`] instead: one transaction that locks
//! the aggregates it touches, appends their events, projects them and commits
//! once. Writers of one aggregate queue on its advisory lock instead of
//! failing on an optimistic-concurrency conflict.

use cqrs_es::{Aggregate, DomainEvent};
use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::upcast;
use nepxy_projections::{EventRecord, Projected};
use sqlx::{PgPool, Postgres, Transaction};

use super::{StoreError, lock_key};

/// Events between two snapshots of an aggregate.
const SNAPSHOT_EVERY: i64 = 100;

/// PostgreSQL's SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// An aggregate as loaded inside a unit of work, with its last sequence.
#[derive(Debug)]
pub struct Loaded<A> {
    pub id: String,
    pub aggregate: A,
    pub sequence: i64,
    snapshot_sequence: i64,
}

impl<A> Loaded<A> {
    pub fn exists(&self) -> bool {
        self.sequence > 0
    }
}

pub struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<UnitOfWork, StoreError> {
        Ok(UnitOfWork {
            tx: self.pool.begin().await?,
        })
    }
}

impl UnitOfWork {
    pub fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Takes a transaction-scoped lock without waiting; `false` means another
    /// transaction holds it.
    pub async fn try_lock(&mut self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(lock_key(namespace, name))
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(locked)
    }

    /// Waits for the write locks of the given aggregates, which are held until
    /// commit or rollback. Callers lock in one fixed order (payout, then
    /// wallet), so two units of work can wait for each other but never
    /// deadlock.
    pub async fn lock_aggregates(&mut self, aggregates: &[(&str, &str)]) -> Result<(), StoreError> {
        let keys: Vec<i64> = aggregates
            .iter()
            .map(|(aggregate_type, id)| lock_key(aggregate_type, id))
            .collect();
        sqlx::query("SELECT pg_advisory_xact_lock(key) FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, n) ORDER BY n")
            .bind(&keys)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Loads an aggregate from its latest snapshot and the events after it.
    pub async fn load<A: Aggregate>(&mut self, id: &str) -> Result<Loaded<A>, StoreError> {
        let snapshot: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_sequence, payload::text FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2 \
             ORDER BY last_sequence DESC LIMIT 1",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;

        let (mut aggregate, snapshot_sequence) = match snapshot {
            Some((sequence, payload)) => (serde_json::from_str::<A>(&payload)?, sequence),
            None => (A::default(), 0),
        };

        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT sequence, event_version, payload::text FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
             ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(snapshot_sequence)
        .fetch_all(&mut *self.tx)
        .await?;

        let mut sequence = snapshot_sequence;
        for (event_sequence, version, payload) in rows {
            aggregate.apply(upcast::decode::<A::Event>(&version, &payload)?);
            sequence = event_sequence;
        }
        Ok(Loaded {
            id: id.to_owned(),
            aggregate,
            sequence,
            snapshot_sequence,
        })
    }

    /// Appends events after the loaded sequence, applies them to the loaded
    /// aggregate and to the read models, and writes a snapshot when due.
    pub async fn append<A: Projected>(
        &mut self,
        loaded: &mut Loaded<A>,
        events: Vec<A::Event>,
        metadata: &EventMetadata,
    ) -> Result<Vec<EventRecord<A::Event>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }

        let metadata_json = serde_json::to_string(metadata)?;
        let mut sequences = Vec::with_capacity(events.len());
        let mut event_types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().enumerate() {
            sequences.push(loaded.sequence + 1 + offset as i64);
            event_types.push(event.event_type());
            versions.push(event.event_version());
            payloads.push(serde_json::to_string(event)?);
        }

        // recorded_at comes from the metadata, so the events of one command
        // and the timestamps in its answer agree to the microsecond.
        let recorded_at = metadata.recorded_at;
        let inserted = sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
             SELECT $1, $2, sequence, event_type, event_version, payload::json, $7::json, $8 \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) \
                 AS e(sequence, event_type, event_version, payload)",
        )
        .bind(A::TYPE)
        .bind(&loaded.id)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata_json)
        .bind(recorded_at)
        .execute(&mut *self.tx)
        .await;

        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(UNIQUE_VIOLATION) =>
            {
                return Err(StoreError::Conflict {
                    aggregate_type: A::TYPE,
                    aggregate_id: loaded.id.clone(),
                });
            }
            Err(error) => return Err(error.into()),
        }

        let mut records = Vec::with_capacity(events.len());
        for (event, sequence) in events.into_iter().zip(sequences) {
            loaded.aggregate.apply(event.clone());
            loaded.sequence = sequence;
            let record = EventRecord {
                aggregate_type: A::TYPE,
                aggregate_id: loaded.id.clone(),
                sequence,
                event,
                metadata: metadata.clone(),
                recorded_at,
            };
            A::project(&mut self.tx, &record).await?;
            records.push(record);
        }

        if loaded.sequence - loaded.snapshot_sequence >= SNAPSHOT_EVERY {
            self.write_snapshot(loaded).await?;
        }
        Ok(records)
    }

    /// Replaces the aggregate's snapshot; postgres-es keeps one row per
    /// aggregate, and so does this store.
    async fn write_snapshot<A: Aggregate>(
        &mut self,
        loaded: &mut Loaded<A>,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(&loaded.aggregate)?;
        sqlx::query("DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2")
            .bind(A::TYPE)
            .bind(&loaded.id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             VALUES ($1, $2, $3, $3, $4::json)",
        )
        .bind(A::TYPE)
        .bind(&loaded.id)
        .bind(loaded.sequence)
        .bind(&payload)
        .execute(&mut *self.tx)
        .await?;
        loaded.snapshot_sequence = loaded.sequence;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
