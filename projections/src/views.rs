//! Updates of the read-model tables, one event at a time.

use cqrs_es::{Aggregate, DomainEvent};
use nepxy_ledger::wallet::HoldState;
use nepxy_ledger::{Client, ClientEvent, Payout, PayoutEvent, Wallet, WalletEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;
use crate::record::EventRecord;

/// An aggregate whose events feed read models.
pub trait Projected: Aggregate {
    /// Applies one stored event to every read model it touches.
    fn project(
        conn: &mut PgConnection,
        record: &EventRecord<Self::Event>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

impl Projected for Wallet {
    async fn project(
        conn: &mut PgConnection,
        record: &EventRecord<WalletEvent>,
    ) -> Result<(), ProjectionError> {
        let event = &record.event;
        let (available_delta, held_delta) = balance_deltas(event);
        // The update and the insert are one statement: a row that already
        // saw this sequence is left alone, and a missing row is created.
        sqlx::query(
            "WITH updated AS ( \
                 UPDATE wallet_balances SET \
                     available_minor = available_minor + $3, \
                     held_minor = held_minor + $4, \
                     last_sequence = $5, \
                     updated_at = $6 \
                 WHERE client_id = $1 AND currency = $2 AND last_sequence < $5 \
                 RETURNING 1) \
             INSERT INTO wallet_balances \
                 (client_id, currency, available_minor, held_minor, last_sequence, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM updated) \
               AND NOT EXISTS (SELECT 1 FROM wallet_balances WHERE client_id = $1 AND currency = $2)",
        )
        .bind(event.client_id())
        .bind(event.currency().code())
        .bind(available_delta)
        .bind(held_delta)
        .bind(record.sequence)
        .bind(record.recorded_at)
        .execute(&mut *conn)
        .await?;

        let entry = event.journal_entry();
        let accounts: Vec<String> = entry
            .postings
            .iter()
            .map(|p| p.account.to_string())
            .collect();
        let currencies: Vec<&str> = entry.postings.iter().map(|p| p.currency.code()).collect();
        let debits: Vec<i64> = entry.postings.iter().map(|p| p.debit_minor).collect();
        let credits: Vec<i64> = entry.postings.iter().map(|p| p.credit_minor).collect();
        sqlx::query(
            "INSERT INTO journal_postings \
                 (aggregate_type, aggregate_id, sequence, account, currency, debit_minor, credit_minor, recorded_at) \
             SELECT $1, $2, $3, account, currency, debit, credit, $8 \
             FROM unnest($4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS p(account, currency, debit, credit) \
             ON CONFLICT DO NOTHING",
        )
        .bind(record.aggregate_type)
        .bind(&record.aggregate_id)
        .bind(record.sequence)
        .bind(&accounts)
        .bind(&currencies)
        .bind(&debits)
        .bind(&credits)
        .bind(record.recorded_at)
        .execute(&mut *conn)
        .await?;

        record_wallet_id(conn, record).await?;

        let payout_id = match event {
            WalletEvent::FundsDeposited { .. } => None,
            WalletEvent::FundsReserved { payout_id, .. }
            | WalletEvent::FundsSettled { payout_id, .. }
            | WalletEvent::FundsReleased { payout_id, .. }
            | WalletEvent::FundsRefunded { payout_id, .. } => Some(*payout_id),
        };
        record_history(conn, record, payout_id, Some(event.client_id())).await
    }
}

/// Records the deposit or the reservation state an event names, so that a
/// later command with the same id is recognized without replaying history.
async fn record_wallet_id(
    conn: &mut PgConnection,
    record: &EventRecord<WalletEvent>,
) -> Result<(), ProjectionError> {
    let (payout_id, amount_minor, state, provider) = match record.event {
        WalletEvent::FundsDeposited {
            deposit_id,
            amount_minor,
            ..
        } => {
            sqlx::query(
                "INSERT INTO wallet_deposits (wallet_id, deposit_id, amount_minor, sequence) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&record.aggregate_id)
            .bind(deposit_id)
            .bind(amount_minor)
            .bind(record.sequence)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        WalletEvent::FundsReserved {
            payout_id,
            amount_minor,
            ..
        } => (payout_id, amount_minor, HoldState::Held, None),
        WalletEvent::FundsSettled {
            payout_id,
            amount_minor,
            provider,
            ..
        } => (payout_id, amount_minor, HoldState::Settled, Some(provider)),
        WalletEvent::FundsReleased {
            payout_id,
            amount_minor,
            ..
        } => (payout_id, amount_minor, HoldState::Released, None),
        WalletEvent::FundsRefunded {
            payout_id,
            amount_minor,
            ..
        } => (payout_id, amount_minor, HoldState::Refunded, None),
    };
    sqlx::query(
        "INSERT INTO wallet_holds (wallet_id, payout_id, amount_minor, state, provider, last_sequence) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (wallet_id, payout_id) DO UPDATE SET \
             state = EXCLUDED.state, \
             provider = COALESCE(EXCLUDED.provider, wallet_holds.provider), \
             last_sequence = EXCLUDED.last_sequence \
         WHERE wallet_holds.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(&record.aggregate_id)
    .bind(payout_id)
    .bind(amount_minor)
    .bind(state.as_str())
    .bind(provider.map(|provider| provider.name()))
    .bind(record.sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Changes of (available, held) caused by a wallet event.
pub fn balance_deltas(event: &WalletEvent) -> (i64, i64) {
    match *event {
        WalletEvent::FundsDeposited { amount_minor, .. } => (amount_minor, 0),
        WalletEvent::FundsReserved { amount_minor, .. } => (-amount_minor, amount_minor),
        WalletEvent::FundsSettled { amount_minor, .. } => (0, -amount_minor),
        WalletEvent::FundsReleased { amount_minor, .. } => (amount_minor, -amount_minor),
        WalletEvent::FundsRefunded { amount_minor, .. } => (amount_minor, 0),
    }
}

impl Projected for Payout {
    async fn project(
        conn: &mut PgConnection,
        record: &EventRecord<PayoutEvent>,
    ) -> Result<(), ProjectionError> {
        let payout_id = parse_payout_id(&record.aggregate_id)?;
        let mut client_id = None;
        match &record.event {
            PayoutEvent::PayoutRequested {
                client_id: owner,
                amount_minor,
                currency,
                provider,
                recipient,
                country_code,
                reference,
                requested_at,
                ..
            } => {
                client_id = Some(*owner);
                sqlx::query(
                    "INSERT INTO payouts (payout_id, client_id, status, amount_minor, currency, provider, \
                         msisdn, recipient_name, reference, created_at, updated_at, last_sequence, country_code) \
                     VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (payout_id) DO NOTHING",
                )
                .bind(payout_id)
                .bind(owner)
                .bind(amount_minor)
                .bind(currency.code())
                .bind(provider.name())
                .bind(recipient.msisdn.as_str())
                .bind(&recipient.name)
                .bind(reference)
                .bind(requested_at)
                .bind(record.recorded_at)
                .bind(record.sequence)
                .bind(i32::from(*country_code))
                .execute(&mut *conn)
                .await?;
                // The dispatcher's outbox row commits with the event.
                sqlx::query(
                    "INSERT INTO dispatch_queue (payout_id, provider, state, next_attempt_at, updated_at) \
                     VALUES ($1, $2, 'ready', $3, $3) ON CONFLICT (payout_id) DO NOTHING",
                )
                .bind(payout_id)
                .bind(provider.name())
                .bind(record.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
            PayoutEvent::PayoutSubmitted { provider_ref } => {
                update_status(
                    conn,
                    record,
                    payout_id,
                    Some("submitted"),
                    provider_ref.as_deref(),
                    None,
                )
                .await?;
            }
            PayoutEvent::PayoutSucceeded { provider_ref, .. } => {
                update_status(
                    conn,
                    record,
                    payout_id,
                    Some("succeeded"),
                    provider_ref.as_deref(),
                    None,
                )
                .await?;
            }
            PayoutEvent::PayoutFailed { failure_code, .. } => {
                update_status(
                    conn,
                    record,
                    payout_id,
                    Some("failed"),
                    None,
                    failure_code.as_deref(),
                )
                .await?;
            }
            PayoutEvent::PayoutReversed { provider_ref, .. } => {
                update_status(
                    conn,
                    record,
                    payout_id,
                    Some("reversed"),
                    provider_ref.as_deref(),
                    None,
                )
                .await?;
            }
            PayoutEvent::ReportConflict { .. }
            | PayoutEvent::TransitionRejected { .. }
            | PayoutEvent::ProviderAttempted(_) => {
                update_status(conn, record, payout_id, None, None, None).await?;
            }
        }
        let dispatch_state = match &record.event {
            PayoutEvent::PayoutSubmitted { .. } => Some("submitted"),
            PayoutEvent::PayoutSucceeded { .. }
            | PayoutEvent::PayoutFailed { .. }
            | PayoutEvent::PayoutReversed { .. } => Some("done"),
            _ => None,
        };
        if let Some(state) = dispatch_state {
            set_dispatch_state(conn, payout_id, state).await?;
        }
        let notification_type = match &record.event {
            PayoutEvent::PayoutSucceeded { .. } => Some("payout.succeeded"),
            PayoutEvent::PayoutFailed { .. } => Some("payout.failed"),
            PayoutEvent::PayoutReversed { .. } => Some("payout.reversed"),
            _ => None,
        };
        if let Some(notification_type) = notification_type {
            // The notification outbox commits with the event. It gets one row
            // per endpoint that the payout's client registered before the
            // event, with the payout as the update above left it.
            sqlx::query(
                "INSERT INTO notifications (notification_id, endpoint_id, client_id, payout_id, \
                     event_type, payout, retry_window_start, next_attempt_at, created_at, updated_at) \
                 SELECT gen_random_uuid(), e.endpoint_id, e.client_id, p.payout_id, \
                     $2, to_jsonb(p), $3, $3, $3, $3 \
                 FROM payouts p JOIN notification_endpoints e ON e.client_id = p.client_id \
                 WHERE p.payout_id = $1 AND e.deleted_at IS NULL AND e.disabled_at IS NULL \
                   AND e.created_at <= $3 \
                 ON CONFLICT (endpoint_id, payout_id, event_type) DO NOTHING",
            )
            .bind(payout_id)
            .bind(notification_type)
            .bind(record.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        record_history(conn, record, Some(payout_id), client_id).await
    }
}

/// Client events feed no read model: auditors read them from the event feed
/// (GET /v1/audit/events), and the rebuild and the catch-up projector skip
/// them. Token and revocation state lives in tables the commands write
/// directly, because it is checked on every request.
impl Projected for Client {
    async fn project(
        _conn: &mut PgConnection,
        _record: &EventRecord<ClientEvent>,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Replays of webhook deliveries feed no read model: the operator listings
/// read `webhook_replays`, and auditors read the events from the feed.
impl Projected for nepxy_ledger::webhook_delivery::WebhookDelivery {
    async fn project(
        _conn: &mut PgConnection,
        _record: &EventRecord<nepxy_ledger::webhook_delivery::WebhookDeliveryEvent>,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Moves a payout's dispatch row forward; a row never moves back from done.
async fn set_dispatch_state(
    conn: &mut PgConnection,
    payout_id: Uuid,
    state: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE dispatch_queue SET state = $2, updated_at = now() \
         WHERE payout_id = $1 AND state <> 'done'",
    )
    .bind(payout_id)
    .bind(state)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn parse_payout_id(aggregate_id: &str) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(aggregate_id).map_err(|_| {
        ProjectionError::Corrupt(format!(
            "payout aggregate id {aggregate_id:?} is not a UUID"
        ))
    })
}

async fn update_status(
    conn: &mut PgConnection,
    record: &EventRecord<PayoutEvent>,
    payout_id: Uuid,
    status: Option<&str>,
    provider_ref: Option<&str>,
    failure_code: Option<&str>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE payouts SET status = COALESCE($2, status), \
             provider_ref = COALESCE($3, provider_ref), \
             failure_code = COALESCE($4, failure_code), \
             updated_at = $5, last_sequence = $6 \
         WHERE payout_id = $1 AND last_sequence < $6",
    )
    .bind(payout_id)
    .bind(status)
    .bind(provider_ref)
    .bind(failure_code)
    .bind(record.recorded_at)
    .bind(record.sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record_history<E: DomainEvent>(
    conn: &mut PgConnection,
    record: &EventRecord<E>,
    payout_id: Option<Uuid>,
    client_id: Option<Uuid>,
) -> Result<(), ProjectionError> {
    let source = serde_json::to_value(record.metadata.source)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO event_history (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payout_id, client_id, request_id, source, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING",
    )
    .bind(record.aggregate_type)
    .bind(&record.aggregate_id)
    .bind(record.sequence)
    .bind(record.event.event_type())
    .bind(record.event.event_version())
    .bind(payout_id)
    .bind(client_id)
    .bind(&record.metadata.request_id)
    .bind(source)
    .bind(record.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
