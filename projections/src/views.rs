//! Read-model updates of each event, collected as [`Writes`].

use cqrs_es::{Aggregate, DomainEvent};
use nepxy_ledger::wallet::HoldState;
use nepxy_ledger::{Client, ClientEvent, Payout, PayoutEvent, Wallet, WalletEvent};
use uuid::Uuid;

use crate::ProjectionError;
use crate::record::EventRecord;
use crate::writes::{Posting, Write, Writes};

/// An aggregate whose events feed read models.
pub trait Projected: Aggregate {
    /// Adds the writes that apply one stored event to every read model it
    /// touches. Every write is guarded by the event's (aggregate id,
    /// sequence), so applying an event twice changes nothing.
    fn project(
        writes: &mut Writes,
        record: &EventRecord<Self::Event>,
    ) -> Result<(), ProjectionError>;
}

impl Projected for Wallet {
    fn project(
        writes: &mut Writes,
        record: &EventRecord<WalletEvent>,
    ) -> Result<(), ProjectionError> {
        let event = &record.event;
        let (available_delta, held_delta) = balance_deltas(event);
        writes.push(Write::Balance {
            client_id: event.client_id(),
            currency: event.currency().code(),
            available_delta,
            held_delta,
            sequence: record.sequence,
            recorded_at: record.recorded_at,
        });

        let entry = event.journal_entry();
        writes.push(Write::Postings {
            aggregate_type: record.aggregate_type,
            aggregate_id: record.aggregate_id.clone(),
            sequence: record.sequence,
            postings: entry
                .postings
                .iter()
                .map(|posting| Posting {
                    account: posting.account.to_string(),
                    currency: posting.currency.code(),
                    debit_minor: posting.debit_minor,
                    credit_minor: posting.credit_minor,
                })
                .collect(),
            recorded_at: record.recorded_at,
        });

        writes.push(wallet_record(record));

        let payout_id = match event {
            WalletEvent::FundsDeposited { .. } => None,
            WalletEvent::FundsReserved { payout_id, .. }
            | WalletEvent::FundsSettled { payout_id, .. }
            | WalletEvent::FundsReleased { payout_id, .. }
            | WalletEvent::FundsRefunded { payout_id, .. } => Some(*payout_id),
        };
        writes.push(history(record, payout_id, Some(event.client_id())));
        Ok(())
    }
}

/// Records the deposit or the reservation state an event names, so that a
/// later command with the same id is recognized without replaying history.
fn wallet_record(record: &EventRecord<WalletEvent>) -> Write {
    let (payout_id, amount_minor, state, provider) = match record.event {
        WalletEvent::FundsDeposited {
            deposit_id,
            amount_minor,
            ..
        } => {
            return Write::Deposit {
                wallet_id: record.aggregate_id.clone(),
                deposit_id,
                amount_minor,
                sequence: record.sequence,
            };
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
    Write::Hold {
        wallet_id: record.aggregate_id.clone(),
        payout_id,
        amount_minor,
        state: state.as_str(),
        provider: provider.map(|provider| provider.name()),
        sequence: record.sequence,
    }
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
    fn project(
        writes: &mut Writes,
        record: &EventRecord<PayoutEvent>,
    ) -> Result<(), ProjectionError> {
        let payout_id = parse_payout_id(&record.aggregate_id)?;
        let mut client_id = None;
        let status = |status: Option<&'static str>,
                      provider_ref: &Option<String>,
                      failure_code: &Option<String>| Write::PayoutStatus {
            payout_id,
            status,
            provider_ref: provider_ref.clone(),
            failure_code: failure_code.clone(),
            sequence: record.sequence,
            recorded_at: record.recorded_at,
        };
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
                writes.push(Write::Payout {
                    payout_id,
                    client_id: *owner,
                    amount_minor: *amount_minor,
                    currency: currency.code(),
                    provider: provider.name(),
                    msisdn: recipient.msisdn.as_str().to_owned(),
                    recipient_name: recipient.name.clone(),
                    reference: reference.clone(),
                    country_code: i32::from(*country_code),
                    created_at: *requested_at,
                    updated_at: record.recorded_at,
                    sequence: record.sequence,
                });
                // The dispatcher's outbox row commits with the event.
                writes.push(Write::DispatchQueued {
                    payout_id,
                    provider: provider.name(),
                    at: record.recorded_at,
                });
            }
            PayoutEvent::PayoutSubmitted { provider_ref } => {
                writes.push(status(Some("submitted"), provider_ref, &None));
            }
            PayoutEvent::PayoutSucceeded { provider_ref, .. } => {
                writes.push(status(Some("succeeded"), provider_ref, &None));
            }
            PayoutEvent::PayoutFailed { failure_code, .. } => {
                writes.push(status(Some("failed"), &None, failure_code));
            }
            PayoutEvent::PayoutReversed { provider_ref, .. } => {
                writes.push(status(Some("reversed"), provider_ref, &None));
            }
            PayoutEvent::ReportConflict { .. }
            | PayoutEvent::TransitionRejected { .. }
            | PayoutEvent::ProviderAttempted(_) => {
                writes.push(status(None, &None, &None));
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
            writes.push(Write::DispatchState { payout_id, state });
        }
        let notification_type = match &record.event {
            PayoutEvent::PayoutSucceeded { .. } => Some("payout.succeeded"),
            PayoutEvent::PayoutFailed { .. } => Some("payout.failed"),
            PayoutEvent::PayoutReversed { .. } => Some("payout.reversed"),
            _ => None,
        };
        if let Some(event_type) = notification_type {
            // The notification outbox commits with the event, and its rows
            // carry the payout as the status write above left it.
            writes.push(Write::Notification {
                payout_id,
                event_type,
                at: record.recorded_at,
            });
        }
        writes.push(history(record, Some(payout_id), client_id));
        Ok(())
    }
}

/// Client events feed no read model: auditors read them from the event feed
/// (GET /v1/audit/events), and the rebuild and the catch-up projector skip
/// them. Token and revocation state lives in tables the commands write
/// directly, because it is checked on every request.
impl Projected for Client {
    fn project(
        _writes: &mut Writes,
        _record: &EventRecord<ClientEvent>,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Replays of webhook deliveries feed no read model: the operator listings
/// read `webhook_replays`, and auditors read the events from the feed.
impl Projected for nepxy_ledger::webhook_delivery::WebhookDelivery {
    fn project(
        _writes: &mut Writes,
        _record: &EventRecord<nepxy_ledger::webhook_delivery::WebhookDeliveryEvent>,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }
}

fn parse_payout_id(aggregate_id: &str) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(aggregate_id).map_err(|_| {
        ProjectionError::Corrupt(format!(
            "payout aggregate id {aggregate_id:?} is not a UUID"
        ))
    })
}

fn history<E: DomainEvent>(
    record: &EventRecord<E>,
    payout_id: Option<Uuid>,
    client_id: Option<Uuid>,
) -> Write {
    let source = serde_json::to_value(record.metadata.source)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    Write::History {
        aggregate_type: record.aggregate_type,
        aggregate_id: record.aggregate_id.clone(),
        sequence: record.sequence,
        event_type: record.event.event_type(),
        event_version: record.event.event_version(),
        payout_id,
        client_id,
        request_id: record.metadata.request_id.clone(),
        source,
        recorded_at: record.recorded_at,
    }
}
