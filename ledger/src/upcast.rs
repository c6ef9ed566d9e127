//! Upcasters: stored events of an older version read as the current one.
//!
//! A stored event is never edited. When an event's payload changes, its
//! version goes up, and an upcaster here turns the older payload into the
//! newer one as it is read. Every reader of stored events (aggregate loads,
//! projections, rebuilds, point-in-time views) decodes through [`decode`].
//!
//! Versions so far:
//! - `PayoutRequested` 2 added `country_code`, derived from
//!   `recipient.msisdn` for version 1 events.
//! - Every other event is at version 1.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::msisdn::Msisdn;

#[derive(Debug, thiserror::Error)]
pub enum UpcastError {
    #[error("payload is not a JSON object naming one event: {0}")]
    Shape(String),
    #[error("{event_type} version {version} is unknown; the newest this build reads is {current}")]
    UnknownVersion {
        event_type: String,
        version: String,
        current: &'static str,
    },
    #[error("{event_type} version {version} cannot be upcast: {reason}")]
    Invalid {
        event_type: String,
        version: String,
        reason: String,
    },
    #[error("payload does not match the current {event_type}: {source}")]
    Decode {
        event_type: String,
        source: serde_json::Error,
    },
}

/// One step from `from` to the next version of `event_type`.
struct Step {
    event_type: &'static str,
    from: &'static str,
    to: &'static str,
    apply: fn(&mut Map<String, Value>) -> Result<(), String>,
}

const STEPS: &[Step] = &[Step {
    event_type: "PayoutRequested",
    from: "1",
    to: "2",
    apply: payout_requested_country_code,
}];

/// The version this build writes for `event_type`.
pub fn current_version(event_type: &str) -> &'static str {
    STEPS
        .iter()
        .filter(|step| step.event_type == event_type)
        .map(|step| step.to)
        .max_by_key(|version| version.parse::<u32>().unwrap_or_default())
        .unwrap_or("1")
}

/// Decodes a stored payload of `version` into the current event type `E`,
/// upcasting it first when it is older.
pub fn decode<E: DeserializeOwned>(version: &str, payload: &str) -> Result<E, UpcastError> {
    let value: Value =
        serde_json::from_str(payload).map_err(|error| UpcastError::Shape(error.to_string()))?;
    let (event_type, value) = upcast(version, value)?;
    serde_json::from_value(value).map_err(|source| UpcastError::Decode { event_type, source })
}

/// Turns a stored payload of `version` into the current version's payload.
/// Returns the event type with it.
pub fn upcast(version: &str, mut value: Value) -> Result<(String, Value), UpcastError> {
    // Events are stored externally tagged: `{"PayoutRequested": {...}}`. A
    // variant without fields is stored as a bare string.
    let event_type = match &value {
        Value::Object(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
        Value::String(name) => name.clone(),
        other => return Err(UpcastError::Shape(truncate(other))),
    };
    let current = current_version(&event_type);
    let mut version = version.to_owned();
    while version != current {
        let Some(step) = STEPS
            .iter()
            .find(|step| step.event_type == event_type && step.from == version)
        else {
            return Err(UpcastError::UnknownVersion {
                event_type,
                version,
                current,
            });
        };
        let fields = value
            .get_mut(&event_type)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| UpcastError::Shape(format!("{event_type} has no fields")))?;
        (step.apply)(fields).map_err(|reason| UpcastError::Invalid {
            event_type: event_type.clone(),
            version: version.clone(),
            reason,
        })?;
        version = step.to.to_owned();
    }
    Ok((event_type, value))
}

fn payout_requested_country_code(fields: &mut Map<String, Value>) -> Result<(), String> {
    let raw = fields
        .get("recipient")
        .and_then(|recipient| recipient.get("msisdn"))
        .and_then(Value::as_str)
        .ok_or("recipient.msisdn is missing")?;
    let msisdn = Msisdn::parse(raw).map_err(|error| format!("recipient.msisdn: {error}"))?;
    fields.insert(
        "country_code".to_owned(),
        Value::from(msisdn.country_code()),
    );
    Ok(())
}

fn truncate(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payout::PayoutEvent;
    use crate::wallet::WalletEvent;
    use cqrs_es::DomainEvent;

    const V1_REQUESTED: &str = r#"{"PayoutRequested":{"payout_id":"0193a9a4-7c9e-7d2a-9e1b-2f4d8c6b1a00","client_id":"0193a9a4-7c9e-7d2a-9e1b-2f4d8c6b1a01","amount_minor":2500,"currency":"XOF","provider":"tmoney","recipient":{"msisdn":"+22890123456","name":null},"reference":null,"requested_at":"2026-12-01T10:00:00Z"}}"#;

    #[test]
    fn version_one_request_gains_country_code() {
        let event: PayoutEvent = decode("1", V1_REQUESTED).expect("v1 decodes");
        let PayoutEvent::PayoutRequested { country_code, .. } = &event else {
            panic!("decoded {event:?}");
        };
        assert_eq!(*country_code, 228);
        assert_eq!(event.event_version(), "2");
    }

    #[test]
    fn current_version_decodes_unchanged() {
        let (_, upcast_value) = upcast("1", serde_json::from_str(V1_REQUESTED).unwrap()).unwrap();
        let stored = upcast_value.to_string();
        let event: PayoutEvent = decode("2", &stored).expect("v2 decodes");
        assert_eq!(serde_json::to_value(&event).unwrap(), upcast_value);
    }

    #[test]
    fn version_one_without_country_fails_as_version_two() {
        let error = decode::<PayoutEvent>("2", V1_REQUESTED).expect_err("missing field");
        assert!(matches!(error, UpcastError::Decode { .. }), "{error}");
    }

    #[test]
    fn unknown_version_is_named() {
        let error = decode::<PayoutEvent>("3", V1_REQUESTED).expect_err("from the future");
        let message = error.to_string();
        assert!(message.contains("PayoutRequested version 3"), "{message}");
        assert!(
            message.contains("newest this build reads is 2"),
            "{message}"
        );
    }

    #[test]
    fn invalid_msisdn_is_reported() {
        let broken = V1_REQUESTED.replace("+22890123456", "22890123456");
        let error = decode::<PayoutEvent>("1", &broken).expect_err("bad number");
        assert!(error.to_string().contains("recipient.msisdn"), "{error}");
    }

    #[test]
    fn other_events_stay_at_version_one() {
        let stored = r#"{"FundsDeposited":{"client_id":"0193a9a4-7c9e-7d2a-9e1b-2f4d8c6b1a01","currency":"XOF","deposit_id":"0193a9a4-7c9e-7d2a-9e1b-2f4d8c6b1a02","amount_minor":100}}"#;
        let event: WalletEvent = decode("1", stored).expect("v1 decodes");
        assert_eq!(event.event_version(), "1");
        assert_eq!(current_version("PayoutSubmitted"), "1");
    }

    #[test]
    fn non_object_payload_is_rejected() {
        let error = decode::<PayoutEvent>("1", "[1,2]").expect_err("array");
        assert!(matches!(error, UpcastError::Shape(_)), "{error}");
    }
}
