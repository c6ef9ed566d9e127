//! The payout aggregate: one payout's lifecycle.
//!
//! pending -> submitted -> succeeded | failed, and succeeded -> reversed.
//! A provider may report an outcome before its acceptance was recorded, so
//! succeeded and failed are also reachable from pending. A report that asks for
//! an illegal transition (failed -> succeeded) is not applied, but it is still
//! recorded as [`PayoutEvent::TransitionRejected`] so that no provider statement
//! is ever lost.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Currency, Money};
use crate::msisdn::Msisdn;
use crate::provider::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayoutStatus {
    Pending,
    Submitted,
    Succeeded,
    Failed,
    Reversed,
}

impl PayoutStatus {
    pub const ALL: [PayoutStatus; 5] = [
        PayoutStatus::Pending,
        PayoutStatus::Submitted,
        PayoutStatus::Succeeded,
        PayoutStatus::Failed,
        PayoutStatus::Reversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Pending => "pending",
            PayoutStatus::Submitted => "submitted",
            PayoutStatus::Succeeded => "succeeded",
            PayoutStatus::Failed => "failed",
            PayoutStatus::Reversed => "reversed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        PayoutStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }

    /// Whether a payout may move from `self` to `next`.
    pub fn can_become(self, next: PayoutStatus) -> bool {
        use PayoutStatus::*;
        matches!(
            (self, next),
            (Pending, Submitted)
                | (Pending, Succeeded)
                | (Pending, Failed)
                | (Submitted, Succeeded)
                | (Submitted, Failed)
                | (Succeeded, Reversed)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub msisdn: Msisdn,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutCommand {
    Request {
        payout_id: Uuid,
        client_id: Uuid,
        money: Money,
        provider: Provider,
        recipient: Recipient,
        reference: Option<String>,
        requested_at: DateTime<Utc>,
    },
    MarkSubmitted {
        provider_ref: Option<String>,
    },
    /// Records one call to the provider, whatever its result.
    RecordAttempt(ProviderAttempt),
    /// Applies a provider's final report.
    RecordOutcome {
        status: PayoutStatus,
        provider_ref: Option<String>,
        failure_code: Option<String>,
        webhook_id: Option<String>,
        /// Amount and currency as the provider reported them, when it did.
        reported: Option<ReportedAmount>,
    },
}

/// One call to a provider's payout API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAttempt {
    /// 1 for the first call of this payout, counting across restarts.
    pub attempt: u32,
    /// `accepted`, `succeeded`, `failed`, `transient`, `ambiguous`,
    /// `refused` or `not_found`.
    pub outcome: String,
    /// Wait before this attempt, in milliseconds.
    pub delay_ms: u64,
    pub detail: Option<String>,
}

/// An amount as a provider reports it. `amount_minor` is `None` when the
/// reported currency is unknown to the ledger or the amount is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedAmount {
    pub amount_minor: Option<i64>,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutEvent {
    /// Version 2 added `country_code`; [`crate::upcast`] derives it for
    /// version 1 events from the recipient's number.
    PayoutRequested {
        payout_id: Uuid,
        client_id: Uuid,
        amount_minor: i64,
        currency: Currency,
        provider: Provider,
        recipient: Recipient,
        /// The recipient's E.164 country calling code, for reports by corridor.
        country_code: u16,
        reference: Option<String>,
        requested_at: DateTime<Utc>,
    },
    PayoutSubmitted {
        provider_ref: Option<String>,
    },
    ProviderAttempted(ProviderAttempt),
    PayoutSucceeded {
        provider_ref: Option<String>,
        webhook_id: Option<String>,
    },
    PayoutFailed {
        failure_code: Option<String>,
        webhook_id: Option<String>,
    },
    PayoutReversed {
        provider_ref: Option<String>,
        webhook_id: Option<String>,
    },
    /// A report whose amount or currency differs from the payout's; it is
    /// kept for the record and not applied.
    ReportConflict {
        reported_status: PayoutStatus,
        reported: ReportedAmount,
        provider_ref: Option<String>,
        webhook_id: Option<String>,
    },
    /// A report that asked for an illegal transition, kept for the record.
    TransitionRejected {
        from: PayoutStatus,
        to: PayoutStatus,
        provider_ref: Option<String>,
        webhook_id: Option<String>,
    },
}

impl DomainEvent for PayoutEvent {
    fn event_type(&self) -> String {
        let name = match self {
            PayoutEvent::PayoutRequested { .. } => "PayoutRequested",
            PayoutEvent::PayoutSubmitted { .. } => "PayoutSubmitted",
            PayoutEvent::ProviderAttempted(_) => "ProviderAttempted",
            PayoutEvent::PayoutSucceeded { .. } => "PayoutSucceeded",
            PayoutEvent::PayoutFailed { .. } => "PayoutFailed",
            PayoutEvent::PayoutReversed { .. } => "PayoutReversed",
            PayoutEvent::ReportConflict { .. } => "ReportConflict",
            PayoutEvent::TransitionRejected { .. } => "TransitionRejected",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutError {
    #[error("payout {0} was already requested with different details")]
    ReusedId(Uuid),
    #[error("payout does not exist")]
    NotRequested,
    #[error("a report cannot move a payout to {0:?}")]
    NotAnOutcome(PayoutStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutState {
    pub payout_id: Uuid,
    pub client_id: Uuid,
    pub money: Money,
    pub provider: Provider,
    pub recipient: Recipient,
    pub reference: Option<String>,
    pub status: PayoutStatus,
    pub provider_ref: Option<String>,
    pub failure_code: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// Webhook deliveries that moved this payout, in order.
    pub webhook_ids: Vec<String>,
    /// Calls made to the provider so far.
    #[serde(default)]
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub state: Option<PayoutState>,
}

impl Payout {
    /// Decides the events for `command`; an empty list means the command was
    /// already applied.
    pub fn decide(&self, command: PayoutCommand) -> Result<Vec<PayoutEvent>, PayoutError> {
        match command {
            PayoutCommand::Request {
                payout_id,
                client_id,
                money,
                provider,
                recipient,
                reference,
                requested_at,
            } => {
                if let Some(state) = &self.state {
                    let same = state.payout_id == payout_id
                        && state.client_id == client_id
                        && state.money == money
                        && state.provider == provider
                        && state.recipient == recipient
                        && state.reference == reference;
                    return if same {
                        Ok(vec![])
                    } else {
                        Err(PayoutError::ReusedId(payout_id))
                    };
                }
                Ok(vec![PayoutEvent::PayoutRequested {
                    payout_id,
                    client_id,
                    amount_minor: money.amount_minor,
                    currency: money.currency,
                    provider,
                    country_code: recipient.msisdn.country_code(),
                    recipient,
                    reference,
                    requested_at,
                }])
            }
            PayoutCommand::MarkSubmitted { provider_ref } => {
                let state = self.state.as_ref().ok_or(PayoutError::NotRequested)?;
                if state.status == PayoutStatus::Pending {
                    Ok(vec![PayoutEvent::PayoutSubmitted { provider_ref }])
                } else {
                    Ok(vec![])
                }
            }
            PayoutCommand::RecordAttempt(attempt) => {
                self.state.as_ref().ok_or(PayoutError::NotRequested)?;
                Ok(vec![PayoutEvent::ProviderAttempted(attempt)])
            }
            PayoutCommand::RecordOutcome {
                status,
                provider_ref,
                failure_code,
                webhook_id,
                reported,
            } => {
                let state = self.state.as_ref().ok_or(PayoutError::NotRequested)?;
                if matches!(status, PayoutStatus::Pending | PayoutStatus::Submitted) {
                    return Err(PayoutError::NotAnOutcome(status));
                }
                if let Some(reported) = reported {
                    let same_money = reported.currency == state.money.currency.code()
                        && reported
                            .amount_minor
                            .is_none_or(|amount| amount == state.money.amount_minor);
                    if !same_money {
                        return Ok(vec![PayoutEvent::ReportConflict {
                            reported_status: status,
                            reported,
                            provider_ref,
                            webhook_id,
                        }]);
                    }
                }
                if state.status == status {
                    return Ok(vec![]);
                }
                if !state.status.can_become(status) {
                    return Ok(vec![PayoutEvent::TransitionRejected {
                        from: state.status,
                        to: status,
                        provider_ref,
                        webhook_id,
                    }]);
                }
                let event = match status {
                    PayoutStatus::Succeeded => PayoutEvent::PayoutSucceeded {
                        provider_ref,
                        webhook_id,
                    },
                    PayoutStatus::Failed => PayoutEvent::PayoutFailed {
                        failure_code,
                        webhook_id,
                    },
                    PayoutStatus::Reversed => PayoutEvent::PayoutReversed {
                        provider_ref,
                        webhook_id,
                    },
                    PayoutStatus::Pending | PayoutStatus::Submitted => {
                        return Err(PayoutError::NotAnOutcome(status));
                    }
                };
                Ok(vec![event])
            }
        }
    }
}

impl Aggregate for Payout {
    const TYPE: &'static str = "Payout";
    type Command = PayoutCommand;
    type Event = PayoutEvent;
    type Error = PayoutError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let PayoutEvent::PayoutRequested {
            payout_id,
            client_id,
            amount_minor,
            currency,
            provider,
            recipient,
            reference,
            requested_at,
            ..
        } = event
        {
            self.state = Some(PayoutState {
                payout_id,
                client_id,
                money: Money {
                    amount_minor,
                    currency,
                },
                provider,
                recipient,
                reference,
                status: PayoutStatus::Pending,
                provider_ref: None,
                failure_code: None,
                requested_at,
                webhook_ids: Vec::new(),
                attempts: 0,
            });
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let (status, provider_ref, webhook_id) = match event {
            PayoutEvent::PayoutRequested { .. } => return,
            PayoutEvent::PayoutSubmitted { provider_ref } => {
                (Some(PayoutStatus::Submitted), provider_ref, None)
            }
            PayoutEvent::PayoutSucceeded {
                provider_ref,
                webhook_id,
            } => (Some(PayoutStatus::Succeeded), provider_ref, webhook_id),
            PayoutEvent::PayoutFailed {
                failure_code,
                webhook_id,
            } => {
                state.failure_code = failure_code;
                (Some(PayoutStatus::Failed), None, webhook_id)
            }
            PayoutEvent::PayoutReversed {
                provider_ref,
                webhook_id,
            } => (Some(PayoutStatus::Reversed), provider_ref, webhook_id),
            PayoutEvent::ReportConflict { webhook_id, .. }
            | PayoutEvent::TransitionRejected { webhook_id, .. } => (None, None, webhook_id),
            PayoutEvent::ProviderAttempted(attempt) => {
                state.attempts = state.attempts.max(attempt.attempt);
                (None, None, None)
            }
        };
        if let Some(status) = status {
            state.status = status;
        }
        if provider_ref.is_some() {
            state.provider_ref = provider_ref;
        }
        if let Some(webhook_id) = webhook_id {
            state.webhook_ids.push(webhook_id);
        }
    }
}
