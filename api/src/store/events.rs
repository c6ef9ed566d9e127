//! The event store: postgres-es's `events` and `snapshots` tables, written in
//! one transaction together with the read models and idempotency records.
//!
//! cqrs-es's own framework commits each aggregate separately and updates
//! views outside that transaction, so a payout (a wallet reserve plus a new
//! payout) goes through a [`UnitOfWork`] instead: one transaction that locks
//! the aggregates it touches, appends their events, projects them and commits
//! once. Writers of one aggregate queue on its advisory lock instead of
//! failing on an optimistic-concurrency conflict.
//!
//! A command's unit of work costs four round trips. The first is BEGIN. The
//! second calls `nepxy_open_command`, which takes the locks and loads
//! everything the command reads. The third calls `nepxy_apply_writes` with
//! every write the command made, which [`UnitOfWork::append`] and
//! [`UnitOfWork::store_response`] collect in memory. The fourth is COMMIT.

use cqrs_es::{Aggregate, DomainEvent};
use nepxy_ledger::Wallet;
use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::upcast;
use nepxy_ledger::wallet::{Hold, HoldState};
use nepxy_projections::writes::NewEvent;
use nepxy_projections::{EventRecord, Projected, ProjectionError, Write, Writes};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::idempotency::{LOCK_NAMESPACE, StoredResponse, lock_name};
use super::{StoreError, lock_key};

/// Events between two snapshots of an aggregate.
const SNAPSHOT_EVERY: i64 = 20;

/// PostgreSQL's SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// The events table's primary key: (aggregate_type, aggregate_id, sequence).
const EVENTS_KEY: &str = "events_pkey";

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

/// What a command locks and reads before it decides, in one round trip.
#[derive(Debug, Default, Clone)]
pub struct LoadPlan<'a> {
    /// Aggregates (type, id) whose write locks are taken, in this order.
    /// Callers lock payouts before wallets, so that two units of work do not
    /// wait for each other in a cycle; PostgreSQL would abort one if they did.
    pub locks: &'a [(&'a str, &'a str)],
    /// Aggregates (type, id) loaded after the locks are held.
    pub loads: &'a [(&'a str, &'a str)],
    /// (wallet, deposit or payout id) pairs whose records are read with the
    /// wallets, because a wallet's snapshot leaves those records out.
    pub wallet_records: Vec<(&'a str, Uuid)>,
    /// Maximum wait for each lock of `locks`, in force for the rest of the
    /// transaction. Without it, a lock is awaited as long as it takes.
    pub lock_timeout: Option<std::time::Duration>,
}

impl<'a> LoadPlan<'a> {
    /// Locks the aggregates and then loads them, in the same order.
    pub fn lock_and_load(aggregates: &'a [(&'a str, &'a str)]) -> Self {
        LoadPlan {
            locks: aggregates,
            loads: aggregates,
            wallet_records: Vec::new(),
            lock_timeout: None,
        }
    }

    pub fn with_wallet_record(mut self, wallet_id: &'a str, id: Uuid) -> Self {
        self.wallet_records.push((wallet_id, id));
        self
    }
}

/// An Idempotency-Key whose lock and stored response a command checks first.
#[derive(Debug, Clone, Copy)]
pub struct KeyClaim<'a> {
    pub client_id: Uuid,
    pub key: &'a str,
}

/// The state of a key that another request has taken.
#[derive(Debug)]
pub enum KeyTaken {
    /// Another transaction holds the key's lock.
    Busy,
    /// The key has a stored response.
    Stored(StoredResponse),
}

/// The result of [`UnitOfWork::open`].
#[derive(Debug)]
pub enum Opened {
    /// Some keys were taken, listed with their index in the claims; nothing
    /// was locked or loaded. The other keys' locks are held.
    KeysTaken(Vec<(usize, KeyTaken)>),
    /// Every key's lock and every lock of the plan is held, and its
    /// aggregates are loaded.
    Ready(LoadedSet),
}

/// Aggregates loaded by [`UnitOfWork::open`], taken out by their index in
/// the plan's `loads`.
#[derive(Debug)]
pub struct LoadedSet {
    parts: Vec<Option<RawAggregate>>,
    wallet_records: WalletRecords,
}

#[derive(Debug)]
struct RawAggregate {
    aggregate_type: String,
    id: String,
    snapshot: Option<(i64, String)>,
    /// (sequence, event_version, payload) in sequence order.
    events: Vec<(i64, String, String)>,
}

/// The deposit and hold rows found for the plan's records, each with its
/// wallet.
#[derive(Debug, Default)]
struct WalletRecords {
    deposits: Vec<(String, Uuid, i64)>,
    holds: Vec<(String, Uuid, i64, String, Option<String>)>,
}

impl LoadedSet {
    fn raw(&mut self, index: usize, aggregate_type: &str) -> Result<RawAggregate, StoreError> {
        let raw = self
            .parts
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| StoreError::Corrupt(format!("no loaded aggregate at index {index}")))?;
        if raw.aggregate_type != aggregate_type {
            return Err(StoreError::Corrupt(format!(
                "the aggregate at index {index} is a {}, not a {aggregate_type}",
                raw.aggregate_type
            )));
        }
        Ok(raw)
    }

    /// Decodes the aggregate loaded at `index` of the plan's `loads`.
    pub fn take<A: Aggregate>(&mut self, index: usize) -> Result<Loaded<A>, StoreError> {
        let raw = self.raw(index, A::TYPE)?;
        let (mut aggregate, snapshot_sequence) = match raw.snapshot {
            Some((sequence, payload)) => (serde_json::from_str::<A>(&payload)?, sequence),
            None => (A::default(), 0),
        };
        let mut sequence = snapshot_sequence;
        for (event_sequence, version, payload) in raw.events {
            aggregate.apply(upcast::decode::<A::Event>(&version, &payload)?);
            sequence = event_sequence;
        }
        Ok(Loaded {
            id: raw.id,
            aggregate,
            sequence,
            snapshot_sequence,
        })
    }

    /// Decodes the wallet at `index` and adds the deposits and reservations
    /// found for it among the plan's records, so that a repeated command is
    /// recognized however old the first one is.
    pub fn take_wallet(&mut self, index: usize) -> Result<Loaded<Wallet>, StoreError> {
        let mut wallet = self.take::<Wallet>(index)?;
        let records = &mut self.wallet_records;
        let (deposits, others) = std::mem::take(&mut records.deposits)
            .into_iter()
            .partition(|(wallet_id, _, _)| *wallet_id == wallet.id);
        records.deposits = others;
        let (holds, others) = std::mem::take(&mut records.holds)
            .into_iter()
            .partition(|(wallet_id, _, _, _, _)| *wallet_id == wallet.id);
        records.holds = others;
        for (_, id, amount_minor) in deposits {
            wallet.aggregate.remember_deposit(id, amount_minor);
        }
        for (_, id, amount_minor, state, provider) in holds {
            let state = HoldState::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("hold {id} has unknown state {state:?}"))
            })?;
            let provider = provider
                .map(|name| {
                    name.parse().map_err(|_| {
                        StoreError::Corrupt(format!("hold {id} has unknown provider {name:?}"))
                    })
                })
                .transpose()?;
            wallet.aggregate.remember_hold(
                id,
                Hold {
                    amount_minor,
                    state,
                    provider,
                },
            );
        }
        Ok(wallet)
    }
}

pub struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
    /// Writes not sent yet; [`UnitOfWork::commit`] and
    /// [`UnitOfWork::connection`] send them first.
    writes: Writes,
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
            writes: Writes::default(),
        })
    }
}

/// One row of `nepxy_open_command`.
type OpenRow = (i32, String, Option<i64>, Option<String>, Option<String>);

impl UnitOfWork {
    /// Returns the transaction's connection, for statements of other stores.
    /// Writes collected so far are sent first, so those statements see them.
    pub async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        self.flush().await?;
        Ok(&mut self.tx)
    }

    /// In one round trip: takes the Idempotency-Keys' locks without waiting
    /// and reads their stored responses, then, if no key was taken, waits
    /// for the plan's locks and loads its aggregates.
    pub async fn open(
        &mut self,
        keys: &[KeyClaim<'_>],
        plan: &LoadPlan<'_>,
    ) -> Result<Opened, StoreError> {
        self.flush().await?;
        let key_locks: Vec<i64> = keys
            .iter()
            .map(|claim| lock_key(LOCK_NAMESPACE, &lock_name(claim.client_id, claim.key)))
            .collect();
        let key_clients: Vec<Uuid> = keys.iter().map(|claim| claim.client_id).collect();
        let key_names: Vec<&str> = keys.iter().map(|claim| claim.key).collect();
        let locks: Vec<i64> = plan
            .locks
            .iter()
            .map(|(aggregate_type, id)| lock_key(aggregate_type, id))
            .collect();
        let types: Vec<&str> = plan.loads.iter().map(|(t, _)| *t).collect();
        let ids: Vec<&str> = plan.loads.iter().map(|(_, id)| *id).collect();
        let record_wallets: Vec<&str> = plan.wallet_records.iter().map(|(w, _)| *w).collect();
        let record_ids: Vec<Uuid> = plan.wallet_records.iter().map(|(_, id)| *id).collect();
        let rows: Vec<OpenRow> = sqlx::query_as(
            "SELECT r_part, r_kind, r_number, r_text, r_payload \
             FROM nepxy_open_command($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key_locks)
        .bind(&key_clients)
        .bind(&key_names)
        .bind(&locks)
        .bind(&types)
        .bind(&ids)
        .bind(&record_wallets)
        .bind(&record_ids)
        .bind(
            plan.lock_timeout
                .map(|timeout| format!("{}ms", timeout.as_millis().max(1))),
        )
        .fetch_all(&mut *self.tx)
        .await?;

        let mut taken = Vec::new();
        let mut set = LoadedSet {
            parts: plan
                .loads
                .iter()
                .map(|(aggregate_type, id)| {
                    Some(RawAggregate {
                        aggregate_type: (*aggregate_type).to_owned(),
                        id: (*id).to_owned(),
                        snapshot: None,
                        events: Vec::new(),
                    })
                })
                .collect(),
            wallet_records: WalletRecords::default(),
        };
        for (part, kind, number, text, payload) in rows {
            let corrupt = || {
                StoreError::Corrupt(format!(
                    "unexpected {kind} row {part} from nepxy_open_command"
                ))
            };
            // Indexes in the rows start at 1.
            let index = usize::try_from(part)
                .ok()
                .and_then(|part| part.checked_sub(1))
                .ok_or_else(corrupt)?;
            match kind.as_str() {
                "busy" => taken.push((index, KeyTaken::Busy)),
                "stored" => {
                    let (Some(status_code), Some(fingerprint), Some(body)) =
                        (number, text, payload)
                    else {
                        return Err(corrupt());
                    };
                    taken.push((
                        index,
                        KeyTaken::Stored(StoredResponse {
                            fingerprint: hex::decode(fingerprint)
                                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                            status_code: u16::try_from(status_code)
                                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                            body: serde_json::from_str(&body)?,
                        }),
                    ));
                }
                "snapshot" | "event" => {
                    let raw = set
                        .parts
                        .get_mut(index)
                        .and_then(Option::as_mut)
                        .ok_or_else(corrupt)?;
                    let (Some(sequence), Some(payload)) = (number, payload) else {
                        return Err(corrupt());
                    };
                    if kind == "snapshot" {
                        raw.snapshot = Some((sequence, payload));
                    } else {
                        raw.events
                            .push((sequence, text.ok_or_else(corrupt)?, payload));
                    }
                }
                "deposit" | "hold" => {
                    let (wallet_id, id) = *plan.wallet_records.get(index).ok_or_else(corrupt)?;
                    let records = &mut set.wallet_records;
                    let amount_minor = number.ok_or_else(corrupt)?;
                    if kind == "deposit" {
                        records
                            .deposits
                            .push((wallet_id.to_owned(), id, amount_minor));
                    } else {
                        records.holds.push((
                            wallet_id.to_owned(),
                            id,
                            amount_minor,
                            text.ok_or_else(corrupt)?,
                            payload,
                        ));
                    }
                }
                _ => return Err(corrupt()),
            }
        }
        if taken.is_empty() {
            Ok(Opened::Ready(set))
        } else {
            Ok(Opened::KeysTaken(taken))
        }
    }

    /// Runs a plan without an Idempotency-Key.
    async fn open_plan(&mut self, plan: &LoadPlan<'_>) -> Result<LoadedSet, StoreError> {
        match self.open(&[], plan).await? {
            Opened::Ready(set) => Ok(set),
            Opened::KeysTaken(_) => Err(StoreError::Corrupt(
                "nepxy_open_command reported a key it was not given".to_owned(),
            )),
        }
    }

    /// Takes an aggregate's write lock, held until commit or rollback, and
    /// then loads it from its latest snapshot and the events after it, in
    /// one round trip.
    pub async fn lock_and_load<A: Aggregate>(&mut self, id: &str) -> Result<Loaded<A>, StoreError> {
        self.open_plan(&LoadPlan::lock_and_load(&[(A::TYPE, id)]))
            .await?
            .take::<A>(0)
    }

    /// Takes a wallet's write lock and loads it with the deposit or
    /// reservation recorded under `id` (see [`LoadedSet::take_wallet`]).
    pub async fn lock_and_load_wallet(
        &mut self,
        wallet_id: &str,
        id: Uuid,
    ) -> Result<Loaded<Wallet>, StoreError> {
        self.open_plan(
            &LoadPlan::lock_and_load(&[(Wallet::TYPE, wallet_id)])
                .with_wallet_record(wallet_id, id),
        )
        .await?
        .take_wallet(0)
    }

    /// Appends events after the loaded sequence, applies them to the loaded
    /// aggregate, and adds the writes of the events, their read models and a
    /// snapshot when one is due. They are sent with the next statement of
    /// this unit of work at the latest. If a concurrent writer took one of
    /// the sequences, that statement fails with [`StoreError::Conflict`].
    pub async fn append<A: Projected>(
        &mut self,
        loaded: &mut Loaded<A>,
        events: Vec<A::Event>,
        metadata: &EventMetadata,
    ) -> Result<Vec<EventRecord<A::Event>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }

        // recorded_at comes from the metadata, so the events of one command
        // and the timestamps in its answer agree to the microsecond.
        let recorded_at = metadata.recorded_at;
        let mut new_events = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().enumerate() {
            new_events.push(NewEvent {
                sequence: loaded.sequence + 1 + offset as i64,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(event)?,
            });
        }
        let sequences: Vec<i64> = new_events.iter().map(|event| event.sequence).collect();
        self.writes.push(Write::Events {
            aggregate_type: A::TYPE,
            aggregate_id: loaded.id.clone(),
            events: new_events,
            metadata: serde_json::to_string(metadata)?,
            recorded_at,
        });

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
            A::project(&mut self.writes, &record)?;
            records.push(record);
        }

        if loaded.sequence - loaded.snapshot_sequence >= SNAPSHOT_EVERY {
            // One snapshot row per aggregate, as postgres-es keeps it.
            self.writes.push(Write::Snapshot {
                aggregate_type: A::TYPE,
                aggregate_id: loaded.id.clone(),
                sequence: loaded.sequence,
                payload: serde_json::to_string(&loaded.aggregate)?,
            });
            loaded.snapshot_sequence = loaded.sequence;
        }
        Ok(records)
    }

    /// Adds the write of a request's stored response.
    pub fn store_response(&mut self, client_id: Uuid, key: &str, response: &StoredResponse) {
        self.writes.push(Write::Response {
            client_id,
            key: key.to_owned(),
            fingerprint: hex::encode(&response.fingerprint),
            status_code: response.status_code,
            body: response.body.clone(),
        });
    }

    /// Sends the collected writes.
    async fn flush(&mut self) -> Result<(), StoreError> {
        match self.writes.apply(&mut self.tx).await {
            Ok(()) => Ok(()),
            Err(ProjectionError::Database(sqlx::Error::Database(error)))
                if error.code().as_deref() == Some(UNIQUE_VIOLATION)
                    && error.constraint() == Some(EVENTS_KEY) =>
            {
                self.writes = Writes::default();
                let key = error
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|error| error.detail().map(str::to_owned))
                    .unwrap_or_else(|| "an event of this command".to_owned());
                Err(StoreError::Conflict { event: key })
            }
            Err(error) => {
                self.writes = Writes::default();
                Err(error.into())
            }
        }
    }

    /// Sends the collected writes and commits. When a write fails, the
    /// transaction is rolled back before the error returns, so its locks are
    /// free for the caller's next attempt.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if let Err(error) = self.flush().await {
            if let Err(rollback) = self.tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback after a failed write failed; the connection is dropped instead");
            }
            return Err(error);
        }
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
