//! The payout command: reserve funds on the wallet and create the payout, in
//! one transaction.
//!
//! Payouts queue in [`PayoutBatcher`], in one of a few lanes chosen by their
//! wallet: one task per lane takes what has queued and runs it in one
//! transaction, with one lock per wallet and one commit for the whole batch.
//! Each payout is still decided on its wallet as the payouts before it left
//! it, so the results are those of running them one after another. If the
//! batch's transaction fails, each payout runs again on its own task, so a
//! failure fails only its own payout. When the database is unavailable,
//! every payout of the batch gets 503 at once. A batch waits at most
//! LANE_LOCK_TIMEOUT for each lock, so a wallet whose lock another
//! transaction keeps does not stop its lane: its payouts wait on their own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nepxy_ledger::metadata::{EventMetadata, Source};
use nepxy_ledger::payout::{PayoutState, Recipient};
use nepxy_ledger::{
    Money, Payout, PayoutCommand, PayoutEvent, Provider, Wallet, WalletCommand, WalletEvent, ids,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::{IdempotentRequest, Outcome, key_taken_outcome, release, run_idempotent};
use crate::auth::Principal;
use crate::dispatch::ProviderSwitches;
use crate::error::ApiError;
use crate::store::idempotency::StoredResponse;
use crate::store::{KeyClaim, LoadPlan, Loaded, Opened, Store, UnitOfWork};

/// Payouts run together in one transaction at most.
const MAX_BATCH: usize = 32;
/// Lanes of the payout queue. All payouts of a wallet share a lane, so they
/// run one batch after another within this process.
const LANES: u64 = 4;
/// Maximum wait of a batch for one aggregate lock. Commands hold a wallet's
/// lock for milliseconds, so a longer wait points to a stuck holder.
const LANE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// A validated payout request.
#[derive(Debug, Clone)]
pub struct NewPayout {
    pub money: Money,
    pub provider: Provider,
    pub recipient: Recipient,
    pub reference: Option<String>,
}

/// A payout request waiting in its wallet's queue, with what it needs to run
/// on another task.
struct PayoutJob {
    principal: Principal,
    key: String,
    body: Value,
    request_id: Option<String>,
    payout: NewPayout,
    payout_id: Uuid,
    wallet_id: String,
    /// The request's span, so that the lines logged for it carry its ids.
    span: tracing::Span,
}

impl PayoutJob {
    fn request(&self) -> IdempotentRequest<'_> {
        IdempotentRequest {
            principal: &self.principal,
            key: &self.key,
            method: "POST",
            path: "/v1/payouts",
            body: &self.body,
            request_id: self.request_id.clone(),
        }
    }
}

struct Queued {
    job: PayoutJob,
    reply: oneshot::Sender<Result<Outcome, ApiError>>,
}

/// The payout queues, one per lane that has payouts waiting or running.
#[derive(Clone)]
pub struct PayoutBatcher {
    store: Store,
    switches: ProviderSwitches,
    /// A lane has an entry exactly while its task runs.
    queues: Arc<Mutex<HashMap<u64, VecDeque<Queued>>>>,
}

impl PayoutBatcher {
    pub fn new(store: Store, switches: ProviderSwitches) -> Self {
        PayoutBatcher {
            store,
            switches,
            queues: Arc::default(),
        }
    }

    /// Queues a payout in its wallet's lane and waits for its result.
    async fn submit(&self, job: PayoutJob) -> Result<Outcome, ApiError> {
        let (reply, result) = oneshot::channel();
        let lane = lane(&job.wallet_id);
        let start = {
            let mut queues = self.lock_queues();
            match queues.get_mut(&lane) {
                Some(queue) => {
                    queue.push_back(Queued { job, reply });
                    false
                }
                None => {
                    queues.insert(lane, VecDeque::from([Queued { job, reply }]));
                    true
                }
            }
        };
        if start {
            tokio::spawn(self.clone().drain(lane));
        }
        result.await.unwrap_or_else(|_| {
            Err(ApiError::Internal(
                "the payout's batch stopped before it produced a result".to_owned(),
            ))
        })
    }

    fn lock_queues(&self) -> std::sync::MutexGuard<'_, HashMap<u64, VecDeque<Queued>>> {
        // A panic while the lock was held leaves the map usable: at worst
        // the payouts being moved into a batch are dropped, and their
        // requesters get an error.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the lane's queue batch after batch until it is empty, then
    /// removes the lane's entry.
    async fn drain(self, lane: u64) {
        let mut guard = DrainGuard {
            batcher: &self,
            lane: Some(lane),
        };
        loop {
            let batch = {
                let mut queues = self.lock_queues();
                let Some(queue) = queues.get_mut(&lane) else {
                    break;
                };
                if queue.is_empty() {
                    queues.remove(&lane);
                    break;
                }
                take_batch(queue)
            };
            self.run(batch).await;
        }
        guard.lane = None;
    }

    /// Runs a batch and sends each payout its result.
    async fn run(&self, batch: Vec<Queued>) {
        let jobs: Vec<&PayoutJob> = batch.iter().map(|queued| &queued.job).collect();
        match run_batch(&self.store, &self.switches, &jobs).await {
            Ok(results) => {
                for (queued, result) in batch.into_iter().zip(results) {
                    // A requester that went away no longer waits.
                    let _ = queued.reply.send(result);
                }
            }
            // Each payout alone would wait for the database too.
            Err(ApiError::Unavailable { detail }) => {
                tracing::warn!(%detail, payouts = batch.len(), "a payout batch found the database unavailable");
                for queued in batch {
                    let _ = queued.reply.send(Err(ApiError::Unavailable {
                        detail: detail.clone(),
                    }));
                }
            }
            // On tasks of their own and without a lock timeout, so that the
            // lane goes on with its next batch while they run or wait.
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    payouts = batch.len(),
                    "a payout batch failed; running each of its payouts on its own"
                );
                for queued in batch {
                    let (store, switches) = (self.store.clone(), self.switches.clone());
                    let span = queued.job.span.clone();
                    tokio::spawn(
                        async move {
                            let result = run_alone(&store, &switches, &queued.job).await;
                            let _ = queued.reply.send(result);
                        }
                        .instrument(span),
                    );
                }
            }
        }
    }
}

/// Removes the lane's entry, and with it the senders of the payouts still
/// queued, if draining stops early (a panic), so that the lane's next payout
/// starts a new task and the waiting ones get an error.
struct DrainGuard<'a> {
    batcher: &'a PayoutBatcher,
    lane: Option<u64>,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane {
            tracing::error!(lane, "a payout queue lane stopped early");
            self.batcher.lock_queues().remove(&lane);
        }
    }
}

/// Returns the lane of a wallet's payouts. Public so that tests can find
/// wallets that share a lane.
pub fn lane(wallet_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};

    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    wallet_id.hash(&mut hasher);
    hasher.finish() % LANES
}

/// Takes up to MAX_BATCH payouts from the front of the queue. A payout whose
/// (client, key) is already in the batch stays queued for the next one, where
/// it finds the first one's stored response: in one transaction the key's
/// lock would not stop it.
fn take_batch(queue: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut batch = Vec::new();
    let mut keys = HashSet::new();
    let mut later = VecDeque::new();
    while batch.len() < MAX_BATCH {
        let Some(queued) = queue.pop_front() else {
            break;
        };
        if keys.insert((queued.job.principal.client_id, queued.job.key.clone())) {
            batch.push(queued);
        } else {
            later.push_back(queued);
        }
    }
    later.append(queue);
    *queue = later;
    batch
}

pub async fn request_payout(
    batcher: &PayoutBatcher,
    request: &IdempotentRequest<'_>,
    payout: NewPayout,
) -> Result<Outcome, ApiError> {
    let client_id = request.principal.client_id;
    let payout_id = ids::payout_id(client_id, request.key);
    tracing::Span::current().record("payout_id", tracing::field::display(payout_id));
    batcher
        .submit(PayoutJob {
            principal: request.principal.clone(),
            key: request.key.to_owned(),
            body: request.body.clone(),
            request_id: request.request_id.clone(),
            wallet_id: ids::wallet_id(client_id, payout.money.currency),
            payout,
            payout_id,
            span: tracing::Span::current(),
        })
        .await
}

/// Runs one payout in its own transaction.
async fn run_alone(
    store: &Store,
    switches: &ProviderSwitches,
    job: &PayoutJob,
) -> Result<Outcome, ApiError> {
    let payout_key = job.payout_id.to_string();
    let aggregates = [
        ("Payout", payout_key.as_str()),
        ("Wallet", job.wallet_id.as_str()),
    ];
    let plan =
        LoadPlan::lock_and_load(&aggregates).with_wallet_record(&job.wallet_id, job.payout_id);
    let request = job.request();
    let request = &request;
    run_idempotent(
        store,
        request,
        &plan,
        move |mut unit, mut loaded| async move {
            let result = async {
                let mut payout = loaded.take::<Payout>(0)?;
                let mut wallet = loaded.take_wallet(1)?;
                let metadata = request.metadata(Source::Api);
                let events = decide(switches, job, &metadata, &wallet, &payout)?;
                record(&mut unit, job, &metadata, &mut wallet, &mut payout, events).await
            }
            .await;
            (unit, result)
        },
    )
    .await
}

/// Runs payouts in one transaction and returns each one's result in order.
/// An error means the transaction failed and committed nothing.
async fn run_batch(
    store: &Store,
    switches: &ProviderSwitches,
    jobs: &[&PayoutJob],
) -> Result<Vec<Result<Outcome, ApiError>>, ApiError> {
    let requests: Vec<IdempotentRequest<'_>> = jobs.iter().map(|job| job.request()).collect();
    let fingerprints: Vec<Vec<u8>> = requests
        .iter()
        .map(IdempotentRequest::fingerprint)
        .collect();
    let mut results: Vec<Option<Result<Outcome, ApiError>>> = jobs.iter().map(|_| None).collect();
    let mut unit = store.begin().await?;

    let prepared = prepare_batch(
        &mut unit,
        switches,
        jobs,
        &requests,
        &fingerprints,
        &mut results,
    )
    .await;
    match prepared {
        Ok(true) => unit.commit().await?,
        // Rolled back before the responses, so that no key stays locked.
        Ok(false) => release(unit).await,
        Err(error) => {
            release(unit).await;
            return Err(error);
        }
    }
    // Every job has a result; one without would shift the others' results
    // onto the wrong requesters, so it fails the batch instead.
    results
        .into_iter()
        .map(|result| {
            result
                .ok_or_else(|| ApiError::Internal("a payout of the batch has no result".to_owned()))
        })
        .collect()
}

/// Claims the keys, loads the aggregates and adds the writes of every
/// payout that can run; fills in `results`. Returns whether any payout
/// remains to be committed.
async fn prepare_batch(
    unit: &mut UnitOfWork,
    switches: &ProviderSwitches,
    jobs: &[&PayoutJob],
    requests: &[IdempotentRequest<'_>],
    fingerprints: &[Vec<u8>],
    results: &mut [Option<Result<Outcome, ApiError>>],
) -> Result<bool, ApiError> {
    let claims: Vec<KeyClaim<'_>> = jobs
        .iter()
        .map(|job| KeyClaim {
            client_id: job.principal.client_id,
            key: &job.key,
        })
        .collect();
    // One call claims the keys and, when none is taken, takes the locks and
    // loads everything. A taken key gets the response run_idempotent gives,
    // and a second call, without keys, locks and loads the other payouts.
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let mut keys = claims.as_slice();
    let (mut loaded, payout_count, wallet_ids) = loop {
        // Payouts, then wallets, each in the order of their lock keys. Every
        // batch takes its locks in this one order, so two batches cannot
        // wait for each other in a cycle, and a single payout (payout, then
        // wallet) follows the same order.
        let payout_keys: Vec<String> = pending
            .iter()
            .map(|&index| jobs[index].payout_id.to_string())
            .collect();
        let mut wallet_ids: Vec<&str> = pending
            .iter()
            .map(|&index| jobs[index].wallet_id.as_str())
            .collect();
        wallet_ids.sort_unstable();
        wallet_ids.dedup();
        let mut loads: Vec<(&str, &str)> = payout_keys
            .iter()
            .map(|payout_key| ("Payout", payout_key.as_str()))
            .collect();
        loads.extend(wallet_ids.iter().map(|wallet_id| ("Wallet", *wallet_id)));
        let mut locks = loads.clone();
        locks.sort_by_key(|(aggregate_type, id)| {
            (
                *aggregate_type == "Wallet",
                crate::store::lock_key(aggregate_type, id),
            )
        });
        let plan = LoadPlan {
            locks: &locks,
            loads: &loads,
            wallet_records: pending
                .iter()
                .map(|&index| (jobs[index].wallet_id.as_str(), jobs[index].payout_id))
                .collect(),
            lock_timeout: Some(LANE_LOCK_TIMEOUT),
        };
        match unit.open(keys, &plan).await? {
            Opened::Ready(loaded) => break (loaded, payout_keys.len(), wallet_ids),
            Opened::KeysTaken(_) if keys.is_empty() => {
                return Err(ApiError::Internal(
                    "nepxy_open_command reported a key it was not given".to_owned(),
                ));
            }
            Opened::KeysTaken(taken) => {
                for (index, taken) in taken {
                    results[index] = Some(key_taken_outcome(taken, &fingerprints[index]));
                }
                pending.retain(|&index| results[index].is_none());
                if pending.is_empty() {
                    return Ok(false);
                }
                keys = &[];
            }
        }
    };
    let mut wallets = HashMap::new();
    for (offset, wallet_id) in wallet_ids.iter().enumerate() {
        wallets.insert(*wallet_id, loaded.take_wallet(payout_count + offset)?);
    }

    for (position, &index) in pending.iter().enumerate() {
        let job = jobs[index];
        let mut payout = loaded.take::<Payout>(position)?;
        let wallet = wallets.get_mut(job.wallet_id.as_str()).ok_or_else(|| {
            ApiError::Internal(format!("wallet {} was not loaded", job.wallet_id))
        })?;
        let metadata = requests[index].metadata(Source::Api);
        let events = match decide(switches, job, &metadata, wallet, &payout) {
            Ok(events) => events,
            Err(error) => {
                results[index] = Some(Err(error));
                continue;
            }
        };
        let (status, body) = record(unit, job, &metadata, wallet, &mut payout, events)
            .instrument(job.span.clone())
            .await?;
        let response = StoredResponse {
            fingerprint: fingerprints[index].clone(),
            status_code: status.as_u16(),
            body,
        };
        unit.store_response(job.principal.client_id, &job.key, &response);
        results[index] = Some(Ok(Outcome {
            status,
            body: response.body,
            replayed: false,
        }));
    }
    tracing::debug!(
        payouts = pending.len(),
        wallets = wallet_ids.len(),
        "payout batch prepared"
    );
    Ok(true)
}

/// Decides a payout on the loaded wallet and payout without changing them:
/// the reserve on the wallet and the request on the payout.
fn decide(
    switches: &ProviderSwitches,
    job: &PayoutJob,
    metadata: &EventMetadata,
    wallet: &Loaded<Wallet>,
    payout: &Loaded<Payout>,
) -> Result<(Vec<WalletEvent>, Vec<PayoutEvent>), ApiError> {
    let new = &job.payout;
    // Checked after the stored-response lookup, so an earlier accepted
    // request still replays while its provider is off.
    if switches.is_disabled(new.provider) {
        return Err(ApiError::ProviderDisabled {
            provider: new.provider,
        });
    }
    let client_id = job.principal.client_id;
    let reserve = wallet.aggregate.decide(WalletCommand::Reserve {
        client_id,
        currency: new.money.currency,
        payout_id: job.payout_id,
        amount_minor: new.money.amount_minor,
    })?;
    let requested = payout.aggregate.decide(PayoutCommand::Request {
        payout_id: job.payout_id,
        client_id,
        money: new.money,
        provider: new.provider,
        recipient: new.recipient.clone(),
        reference: new.reference.clone(),
        requested_at: metadata.recorded_at,
    })?;
    Ok((reserve, requested))
}

/// Appends a decided payout's events and returns its 201 response.
async fn record(
    unit: &mut UnitOfWork,
    job: &PayoutJob,
    metadata: &EventMetadata,
    wallet: &mut Loaded<Wallet>,
    payout: &mut Loaded<Payout>,
    (reserve, requested): (Vec<WalletEvent>, Vec<PayoutEvent>),
) -> Result<(StatusCode, Value), ApiError> {
    unit.append(wallet, reserve, metadata).await?;
    let records = unit.append(payout, requested, metadata).await?;
    let updated_at = records.last().map(|record| record.recorded_at);
    let state = payout.aggregate.state.as_ref().ok_or_else(|| {
        ApiError::Internal(format!(
            "payout {} has no state after its request",
            job.payout_id
        ))
    })?;
    let new = &job.payout;
    tracing::info!(
        amount_minor = new.money.amount_minor,
        currency = %new.money.currency,
        provider = %new.provider,
        msisdn = %new.recipient.msisdn.masked(),
        "payout accepted"
    );
    let body = payout_json(state, updated_at.unwrap_or(state.requested_at));
    Ok((StatusCode::CREATED, body))
}

/// The payout as the API shows it; the read model gives the same shape.
pub fn payout_json(state: &PayoutState, updated_at: DateTime<Utc>) -> Value {
    json!({
        "id": state.payout_id,
        "client_id": state.client_id,
        "status": state.status.as_str(),
        "amount": state.money.amount_minor,
        "currency": state.money.currency.code(),
        "provider": state.provider.name(),
        "recipient": {
            "msisdn": state.recipient.msisdn.as_str(),
            "name": state.recipient.name,
            "country_code": state.recipient.msisdn.country_code(),
        },
        "reference": state.reference,
        "provider_ref": state.provider_ref,
        "failure_code": state.failure_code,
        "created_at": state.requested_at,
        "updated_at": updated_at,
    })
}

/// The read-model row in the same shape as [`payout_json`].
pub fn payout_row_json(row: &nepxy_projections::queries::PayoutRow) -> Value {
    json!({
        "id": row.payout_id,
        "client_id": row.client_id,
        "status": row.status,
        "amount": row.amount_minor,
        "currency": row.currency,
        "provider": row.provider,
        "recipient": {
            "msisdn": row.msisdn,
            "name": row.recipient_name,
            "country_code": row.country_code,
        },
        "reference": row.reference,
        "provider_ref": row.provider_ref,
        "failure_code": row.failure_code,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}
