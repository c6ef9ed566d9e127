//! Given-events / when-command / then-events tests of the payout aggregate,
//! run with the cqrs-es test framework.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::DomainEvent;
use cqrs_es::test::TestFramework;
use nepxy_ledger::payout::{Recipient, ReportedAmount};
use nepxy_ledger::{
    Currency, Money, Msisdn, Payout, PayoutCommand, PayoutError, PayoutEvent, PayoutStatus,
    Provider,
};
use uuid::Uuid;

const PAYOUT: Uuid = Uuid::from_u128(0xa001);
const CLIENT: Uuid = Uuid::from_u128(0x0c01);
const AMOUNT_MINOR: i64 = 5_000;
const CURRENCY: Currency = Currency::XOF;
const PROVIDER: Provider = Provider::Tmoney;
const PROVIDER_REF: &str = "TM-20250314-0042";

fn payout() -> TestFramework<Payout> {
    TestFramework::<Payout>::with(())
}

fn recipient() -> Recipient {
    Recipient {
        msisdn: Msisdn::parse("+22890123456").expect("valid number"),
        name: Some("Afi Mensah".to_owned()),
    }
}

fn requested_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 30, 0)
        .single()
        .expect("valid timestamp")
}

/// The fields of a `PayoutCommand::Request`, so that a test can change one.
struct RequestDetails {
    payout_id: Uuid,
    client_id: Uuid,
    money: Money,
    provider: Provider,
    recipient: Recipient,
    reference: Option<String>,
    requested_at: DateTime<Utc>,
}

impl RequestDetails {
    /// Returns the details that `requested()` records.
    fn standard() -> Self {
        RequestDetails {
            payout_id: PAYOUT,
            client_id: CLIENT,
            money: Money {
                amount_minor: AMOUNT_MINOR,
                currency: CURRENCY,
            },
            provider: PROVIDER,
            recipient: recipient(),
            reference: Some("invoice-17".to_owned()),
            requested_at: requested_at(),
        }
    }

    fn command(self) -> PayoutCommand {
        PayoutCommand::Request {
            payout_id: self.payout_id,
            client_id: self.client_id,
            money: self.money,
            provider: self.provider,
            recipient: self.recipient,
            reference: self.reference,
            requested_at: self.requested_at,
        }
    }
}

fn request() -> PayoutCommand {
    RequestDetails::standard().command()
}

fn requested() -> PayoutEvent {
    PayoutEvent::PayoutRequested {
        payout_id: PAYOUT,
        client_id: CLIENT,
        amount_minor: AMOUNT_MINOR,
        currency: CURRENCY,
        provider: PROVIDER,
        recipient: recipient(),
        country_code: 228,
        reference: Some("invoice-17".to_owned()),
        requested_at: requested_at(),
    }
}

fn mark_submitted() -> PayoutCommand {
    PayoutCommand::MarkSubmitted {
        provider_ref: Some(PROVIDER_REF.to_owned()),
    }
}

fn submitted() -> PayoutEvent {
    PayoutEvent::PayoutSubmitted {
        provider_ref: Some(PROVIDER_REF.to_owned()),
    }
}

/// Builds a provider report, delivered by webhook `webhook_id`, that moves the
/// payout to `status`.
fn report(status: PayoutStatus, webhook_id: &str) -> PayoutCommand {
    PayoutCommand::RecordOutcome {
        status,
        provider_ref: Some(PROVIDER_REF.to_owned()),
        failure_code: Some("INSUFFICIENT_FLOAT".to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
        reported: None,
    }
}

fn succeeded(webhook_id: &str) -> PayoutEvent {
    PayoutEvent::PayoutSucceeded {
        provider_ref: Some(PROVIDER_REF.to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
    }
}

fn failed(webhook_id: &str) -> PayoutEvent {
    PayoutEvent::PayoutFailed {
        failure_code: Some("INSUFFICIENT_FLOAT".to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
    }
}

fn reversed(webhook_id: &str) -> PayoutEvent {
    PayoutEvent::PayoutReversed {
        provider_ref: Some(PROVIDER_REF.to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
    }
}

fn transition_rejected(from: PayoutStatus, to: PayoutStatus, webhook_id: &str) -> PayoutEvent {
    PayoutEvent::TransitionRejected {
        from,
        to,
        provider_ref: Some(PROVIDER_REF.to_owned()),
        webhook_id: Some(webhook_id.to_owned()),
    }
}

fn replay(events: Vec<PayoutEvent>) -> Payout {
    let mut payout = Payout::default();
    for event in events {
        payout.apply(event);
    }
    payout
}

/// Decides `command` on the payout built from `history` and applies the result.
fn decide_and_apply(history: Vec<PayoutEvent>, command: PayoutCommand) -> Payout {
    let mut payout = replay(history);
    let events = payout.decide(command).expect("command accepted");
    for event in events {
        payout.apply(event);
    }
    payout
}

// Request

#[test]
fn request_new_payout_emits_requested() {
    payout()
        .given_no_previous_events()
        .when(request())
        .then_expect_events(vec![requested()]);
}

#[test]
fn request_repeated_identically_emits_nothing() {
    payout()
        .given(vec![requested()])
        .when(request())
        .then_expect_events(vec![]);
}

#[test]
fn request_retry_with_new_timestamp_emits_nothing() {
    // A client retry carries the time of the retry, which is not a detail
    // of the payout.
    let retry = RequestDetails {
        requested_at: requested_at() + chrono::Duration::minutes(5),
        ..RequestDetails::standard()
    };
    payout()
        .given(vec![requested()])
        .when(retry.command())
        .then_expect_events(vec![]);
}

#[test]
fn request_same_id_other_details_rejected() {
    let standard = RequestDetails::standard;
    let changed = [
        (
            "client",
            RequestDetails {
                client_id: Uuid::from_u128(0x0c02),
                ..standard()
            },
        ),
        (
            "amount",
            RequestDetails {
                money: Money {
                    amount_minor: AMOUNT_MINOR + 1,
                    currency: CURRENCY,
                },
                ..standard()
            },
        ),
        (
            "currency",
            RequestDetails {
                money: Money {
                    amount_minor: AMOUNT_MINOR,
                    currency: Currency::XAF,
                },
                ..standard()
            },
        ),
        (
            "provider",
            RequestDetails {
                provider: Provider::Momo,
                ..standard()
            },
        ),
        (
            "recipient number",
            RequestDetails {
                recipient: Recipient {
                    msisdn: Msisdn::parse("+22891000000").expect("valid number"),
                    ..recipient()
                },
                ..standard()
            },
        ),
        (
            "recipient name",
            RequestDetails {
                recipient: Recipient {
                    name: None,
                    ..recipient()
                },
                ..standard()
            },
        ),
        (
            "reference",
            RequestDetails {
                reference: None,
                ..standard()
            },
        ),
    ];
    for (detail, details) in changed {
        let result = payout()
            .given(vec![requested()])
            .when(details.command())
            .inspect_result();
        assert_eq!(
            result,
            Err(PayoutError::ReusedId(PAYOUT)),
            "changed {detail}"
        );
    }
}

#[test]
fn request_other_payout_id_rejected() {
    let other_payout = Uuid::from_u128(0xa002);
    let details = RequestDetails {
        payout_id: other_payout,
        ..RequestDetails::standard()
    };
    payout()
        .given(vec![requested()])
        .when(details.command())
        .then_expect_error(PayoutError::ReusedId(other_payout));
}

// Submission

#[test]
fn mark_submitted_from_pending() {
    payout()
        .given(vec![requested()])
        .when(mark_submitted())
        .then_expect_events(vec![submitted()]);
}

#[test]
fn mark_submitted_repeated_emits_nothing() {
    payout()
        .given(vec![requested(), submitted()])
        .when(mark_submitted())
        .then_expect_events(vec![]);
}

#[test]
fn mark_submitted_after_outcome_emits_nothing() {
    // The provider may report the outcome before its acceptance is recorded.
    for outcome in [succeeded("wh-1"), failed("wh-1")] {
        payout()
            .given(vec![requested(), outcome])
            .when(mark_submitted())
            .then_expect_events(vec![]);
    }
}

// Outcomes

#[test]
fn succeeded_from_pending() {
    payout()
        .given(vec![requested()])
        .when(report(PayoutStatus::Succeeded, "wh-1"))
        .then_expect_events(vec![succeeded("wh-1")]);
}

#[test]
fn succeeded_from_submitted() {
    payout()
        .given(vec![requested(), submitted()])
        .when(report(PayoutStatus::Succeeded, "wh-1"))
        .then_expect_events(vec![succeeded("wh-1")]);
}

#[test]
fn failed_from_pending() {
    payout()
        .given(vec![requested()])
        .when(report(PayoutStatus::Failed, "wh-1"))
        .then_expect_events(vec![failed("wh-1")]);
}

#[test]
fn failed_from_submitted() {
    payout()
        .given(vec![requested(), submitted()])
        .when(report(PayoutStatus::Failed, "wh-1"))
        .then_expect_events(vec![failed("wh-1")]);
}

#[test]
fn reversed_after_succeeded() {
    payout()
        .given(vec![requested(), submitted(), succeeded("wh-1")])
        .when(report(PayoutStatus::Reversed, "wh-2"))
        .then_expect_events(vec![reversed("wh-2")]);
}

#[test]
fn reversed_before_success_is_transition_rejected() {
    let histories = [
        (PayoutStatus::Pending, vec![requested()]),
        (PayoutStatus::Submitted, vec![requested(), submitted()]),
        (PayoutStatus::Failed, vec![requested(), failed("wh-1")]),
    ];
    for (from, history) in histories {
        payout()
            .given(history)
            .when(report(PayoutStatus::Reversed, "wh-2"))
            .then_expect_events(vec![transition_rejected(
                from,
                PayoutStatus::Reversed,
                "wh-2",
            )]);
    }
}

#[test]
fn failed_then_succeeded_is_transition_rejected() {
    payout()
        .given(vec![requested(), submitted(), failed("wh-1")])
        .when(report(PayoutStatus::Succeeded, "wh-2"))
        .then_expect_events(vec![transition_rejected(
            PayoutStatus::Failed,
            PayoutStatus::Succeeded,
            "wh-2",
        )]);
}

#[test]
fn rejected_transition_keeps_failed_status() {
    let payout = decide_and_apply(
        vec![requested(), submitted(), failed("wh-1")],
        report(PayoutStatus::Succeeded, "wh-2"),
    );
    let state = payout.state.expect("payout was requested");
    assert_eq!(state.status, PayoutStatus::Failed);
    assert_eq!(state.failure_code.as_deref(), Some("INSUFFICIENT_FLOAT"));
    // The rejected report is still on record as a webhook that reached the payout.
    assert_eq!(state.webhook_ids, vec!["wh-1", "wh-2"]);
}

#[test]
fn report_after_reversal_is_transition_rejected() {
    let history = vec![requested(), succeeded("wh-1"), reversed("wh-2")];
    for status in [PayoutStatus::Succeeded, PayoutStatus::Failed] {
        payout()
            .given(history.clone())
            .when(report(status, "wh-3"))
            .then_expect_events(vec![transition_rejected(
                PayoutStatus::Reversed,
                status,
                "wh-3",
            )]);
    }
}

#[test]
fn succeeded_then_failed_is_transition_rejected() {
    payout()
        .given(vec![requested(), succeeded("wh-1")])
        .when(report(PayoutStatus::Failed, "wh-2"))
        .then_expect_events(vec![transition_rejected(
            PayoutStatus::Succeeded,
            PayoutStatus::Failed,
            "wh-2",
        )]);
}

#[test]
fn repeated_outcome_emits_nothing() {
    let cases = [
        (
            PayoutStatus::Succeeded,
            vec![requested(), succeeded("wh-1")],
        ),
        (PayoutStatus::Failed, vec![requested(), failed("wh-1")]),
        (
            PayoutStatus::Reversed,
            vec![requested(), succeeded("wh-1"), reversed("wh-2")],
        ),
    ];
    for (status, history) in cases {
        payout()
            .given(history)
            .when(report(status, "wh-9"))
            .then_expect_events(vec![]);
    }
}

#[test]
fn report_of_pending_is_not_an_outcome() {
    payout()
        .given(vec![requested()])
        .when(report(PayoutStatus::Pending, "wh-1"))
        .then_expect_error(PayoutError::NotAnOutcome(PayoutStatus::Pending));
}

#[test]
fn report_of_submitted_is_not_an_outcome() {
    payout()
        .given(vec![requested()])
        .when(report(PayoutStatus::Submitted, "wh-1"))
        .then_expect_error(PayoutError::NotAnOutcome(PayoutStatus::Submitted));
}

// Payout never requested

#[test]
fn unrequested_payout_rejects_mark_submitted() {
    payout()
        .given_no_previous_events()
        .when(mark_submitted())
        .then_expect_error(PayoutError::NotRequested);
}

#[test]
fn unrequested_payout_rejects_every_report() {
    for status in PayoutStatus::ALL {
        payout()
            .given_no_previous_events()
            .when(report(status, "wh-1"))
            .then_expect_error(PayoutError::NotRequested);
    }
}

// State

#[test]
fn requested_state_copies_request() {
    let state = replay(vec![requested()])
        .state
        .expect("payout was requested");
    assert_eq!(state.payout_id, PAYOUT);
    assert_eq!(state.client_id, CLIENT);
    assert_eq!(
        state.money,
        Money {
            amount_minor: AMOUNT_MINOR,
            currency: CURRENCY
        }
    );
    assert_eq!(state.provider, PROVIDER);
    assert_eq!(state.recipient, recipient());
    assert_eq!(state.reference.as_deref(), Some("invoice-17"));
    assert_eq!(state.status, PayoutStatus::Pending);
    assert_eq!(state.provider_ref, None);
    assert_eq!(state.failure_code, None);
    assert_eq!(state.requested_at, requested_at());
    assert!(state.webhook_ids.is_empty());
}

#[test]
fn state_follows_success_and_reversal() {
    let payout = decide_and_apply(vec![requested()], mark_submitted());
    let state = payout.state.as_ref().expect("payout was requested");
    assert_eq!(state.status, PayoutStatus::Submitted);
    assert_eq!(state.provider_ref.as_deref(), Some(PROVIDER_REF));

    let payout = decide_and_apply(
        vec![requested(), submitted()],
        report(PayoutStatus::Succeeded, "wh-1"),
    );
    let state = payout.state.as_ref().expect("payout was requested");
    assert_eq!(state.status, PayoutStatus::Succeeded);
    assert_eq!(state.failure_code, None);
    assert_eq!(state.webhook_ids, vec!["wh-1"]);

    let payout = decide_and_apply(
        vec![requested(), submitted(), succeeded("wh-1")],
        report(PayoutStatus::Reversed, "wh-2"),
    );
    let state = payout.state.as_ref().expect("payout was requested");
    assert_eq!(state.status, PayoutStatus::Reversed);
    assert_eq!(state.provider_ref.as_deref(), Some(PROVIDER_REF));
    assert_eq!(state.webhook_ids, vec!["wh-1", "wh-2"]);
}

#[test]
fn failed_state_keeps_failure_code() {
    let payout = decide_and_apply(
        vec![requested(), submitted()],
        report(PayoutStatus::Failed, "wh-1"),
    );
    let state = payout.state.expect("payout was requested");
    assert_eq!(state.status, PayoutStatus::Failed);
    assert_eq!(state.failure_code.as_deref(), Some("INSUFFICIENT_FLOAT"));
    assert_eq!(state.provider_ref.as_deref(), Some(PROVIDER_REF));
    assert_eq!(state.webhook_ids, vec!["wh-1"]);
}

#[test]
fn events_before_request_are_ignored() {
    let payout = replay(vec![submitted(), succeeded("wh-1")]);
    assert_eq!(payout.state, None);
}

// Status rules

#[test]
fn can_become_allows_only_lifecycle_transitions() {
    use PayoutStatus::*;
    let allowed = [
        (Pending, Submitted),
        (Pending, Succeeded),
        (Pending, Failed),
        (Submitted, Succeeded),
        (Submitted, Failed),
        (Succeeded, Reversed),
    ];
    for from in PayoutStatus::ALL {
        for to in PayoutStatus::ALL {
            let expected = allowed.contains(&(from, to));
            assert_eq!(from.can_become(to), expected, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn status_names_round_trip() {
    for status in PayoutStatus::ALL {
        assert_eq!(PayoutStatus::parse(status.as_str()), Some(status));
        let json = serde_json::to_string(&status).expect("status serializes");
        assert_eq!(json, format!("\"{}\"", status.as_str()));
    }
    assert_eq!(PayoutStatus::parse("Pending"), None);
    assert_eq!(PayoutStatus::parse("cancelled"), None);
}

#[test]
fn event_types_are_stable() {
    // Stored events are read back by these names, so they must never change.
    let cases = [
        (requested(), "PayoutRequested"),
        (submitted(), "PayoutSubmitted"),
        (succeeded("wh-1"), "PayoutSucceeded"),
        (failed("wh-1"), "PayoutFailed"),
        (reversed("wh-1"), "PayoutReversed"),
        (
            transition_rejected(PayoutStatus::Failed, PayoutStatus::Succeeded, "wh-1"),
            "TransitionRejected",
        ),
    ];
    for (event, name) in cases {
        assert_eq!(event.event_type(), name);
        let expected = if name == "PayoutRequested" { "2" } else { "1" };
        assert_eq!(event.event_version(), expected, "{name}");
    }
}

fn report_with_amount(
    status: PayoutStatus,
    amount_minor: Option<i64>,
    currency: &str,
) -> PayoutCommand {
    PayoutCommand::RecordOutcome {
        status,
        provider_ref: Some(PROVIDER_REF.to_owned()),
        failure_code: None,
        webhook_id: Some("wh-amount".to_owned()),
        reported: Some(ReportedAmount {
            amount_minor,
            currency: currency.to_owned(),
        }),
    }
}

#[test]
fn report_with_other_amount_is_conflict() {
    let command = report_with_amount(PayoutStatus::Succeeded, Some(AMOUNT_MINOR + 1), "XOF");
    let events = payout()
        .given(vec![requested()])
        .when(command)
        .inspect_result()
        .expect("decided");
    assert_eq!(events.len(), 1, "one event");
    assert!(
        matches!(
            &events[0],
            PayoutEvent::ReportConflict {
                reported_status: PayoutStatus::Succeeded,
                ..
            }
        ),
        "{events:?}"
    );
}

#[test]
fn report_with_other_currency_is_conflict() {
    let command = report_with_amount(PayoutStatus::Failed, Some(AMOUNT_MINOR), "EUR");
    let events = payout()
        .given(vec![requested()])
        .when(command)
        .inspect_result()
        .expect("decided");
    assert!(
        matches!(&events[0], PayoutEvent::ReportConflict { .. }),
        "{events:?}"
    );
}

#[test]
fn report_with_matching_amount_applies() {
    let command = report_with_amount(PayoutStatus::Succeeded, Some(AMOUNT_MINOR), "XOF");
    let events = payout()
        .given(vec![requested()])
        .when(command)
        .inspect_result()
        .expect("decided");
    assert!(
        matches!(&events[0], PayoutEvent::PayoutSucceeded { .. }),
        "{events:?}"
    );
}

#[test]
fn report_without_amount_checks_currency() {
    let command = report_with_amount(PayoutStatus::Succeeded, None, "XOF");
    let events = payout()
        .given(vec![requested()])
        .when(command)
        .inspect_result()
        .expect("decided");
    assert!(
        matches!(&events[0], PayoutEvent::PayoutSucceeded { .. }),
        "{events:?}"
    );
}

#[test]
fn conflict_leaves_status_unchanged() {
    let conflict = PayoutEvent::ReportConflict {
        reported_status: PayoutStatus::Succeeded,
        reported: ReportedAmount {
            amount_minor: Some(1),
            currency: "XOF".to_owned(),
        },
        provider_ref: None,
        webhook_id: Some("wh-conflict".to_owned()),
    };
    let payout = replay(vec![requested(), conflict]);
    let state = payout.state.expect("requested payout has state");
    assert_eq!(
        state.status,
        PayoutStatus::Pending,
        "status after a conflict"
    );
}
