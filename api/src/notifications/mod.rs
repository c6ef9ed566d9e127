//! Signed status notifications: the service sends a request to each of a
//! client's endpoints when one of its payouts reaches `succeeded`, `failed`
//! or `reversed`.
//!
//! The payout projection writes one outbox row per active endpoint in the
//! transaction of the event, so a notification exists exactly when the
//! change committed. The [`worker::Notifier`] delivers those rows over HTTP,
//! signed the Standard Webhooks way: `webhook-id` (the notification id),
//! `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`,
//! a space-separated list of `v1,<base64>` entries, each the HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` with one of the endpoint's secrets. During a
//! secret rotation the list has one entry for the new secret and one for the
//! previous one.

pub mod egress;
pub mod worker;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use nepxy_projections::queries::PayoutRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::commands::payouts::payout_row_json;
use crate::webhooks::tmoney::hmac_sha256;
pub use worker::{Notifier, Settings};

/// Prefix of endpoint secrets, as Standard Webhooks defines it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in an endpoint secret: 256 bits, the HMAC-SHA256 key size.
const SECRET_BYTES: usize = 32;
/// Prefix of notification ids, followed by the UUID's 32 hex digits.
const NOTIFICATION_ID_PREFIX: &str = "msg_";
/// Maximum number of endpoints per client, which bounds the rows that one
/// payout event adds to the outbox.
pub const MAX_ENDPOINTS_PER_CLIENT: i64 = 16;

/// Returns a new endpoint secret: `whsec_` and the standard base64 of 32
/// random bytes.
pub fn generate_secret() -> String {
    let key: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Formats a notification id as clients see it, `msg_` and 32 hex digits.
pub fn notification_id_text(notification_id: Uuid) -> String {
    format!("{NOTIFICATION_ID_PREFIX}{}", notification_id.simple())
}

/// Parses a notification id in the form [`notification_id_text`] returns.
pub fn parse_notification_id(text: &str) -> Option<Uuid> {
    let hex = text.strip_prefix(NOTIFICATION_ID_PREFIX)?;
    if hex.len() != 32 {
        return None;
    }
    Uuid::try_parse(hex).ok()
}

/// Builds the value of `webhook-signature`: one `v1,<base64>` entry per key,
/// in the order given, separated by spaces.
pub fn signature_header(id: &str, timestamp: i64, body: &[u8], keys: &[&[u8]]) -> String {
    let timestamp = timestamp.to_string();
    let entries: Vec<String> = keys
        .iter()
        .map(|key| {
            let mac = hmac_sha256(
                key,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            format!("v1,{}", STANDARD.encode(mac))
        })
        .collect();
    entries.join(" ")
}

/// The JSON body of a notification.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    id: &'a str,
    created_at: DateTime<Utc>,
    /// The payout as GET /v1/payouts/{id} returns it.
    data: Value,
}

/// Builds the body of a notification from the payouts row stored with it.
pub fn payload_body(
    event_type: &str,
    notification_id: Uuid,
    created_at: DateTime<Utc>,
    payout: &Value,
) -> Result<Vec<u8>, serde_json::Error> {
    let snapshot = PayoutSnapshot::deserialize(payout)?;
    let payload = Payload {
        event_type,
        id: &notification_id_text(notification_id),
        created_at,
        data: payout_row_json(&snapshot.into()),
    };
    serde_json::to_vec(&payload)
}

/// The columns of a payouts row that the outbox stores as jsonb. Other
/// columns of the row (such as `last_sequence`) are ignored.
#[derive(Deserialize)]
struct PayoutSnapshot {
    payout_id: Uuid,
    client_id: Uuid,
    status: String,
    amount_minor: i64,
    currency: String,
    provider: String,
    msisdn: String,
    recipient_name: Option<String>,
    /// Absent from notifications queued before the column existed.
    country_code: Option<i32>,
    reference: Option<String>,
    provider_ref: Option<String>,
    failure_code: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PayoutSnapshot> for PayoutRow {
    fn from(snapshot: PayoutSnapshot) -> Self {
        PayoutRow {
            payout_id: snapshot.payout_id,
            client_id: snapshot.client_id,
            status: snapshot.status,
            amount_minor: snapshot.amount_minor,
            currency: snapshot.currency,
            provider: snapshot.provider,
            msisdn: snapshot.msisdn,
            recipient_name: snapshot.recipient_name,
            country_code: snapshot.country_code,
            reference: snapshot.reference,
            provider_ref: snapshot.provider_ref,
            failure_code: snapshot.failure_code,
            created_at: snapshot.created_at,
            updated_at: snapshot.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};
    use serde_json::json;

    use super::*;
    use crate::webhooks::thunes::decode_secret;

    #[test]
    fn secret_is_whsec_and_32_bytes() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"), "{secret}");
        let key = decode_secret(&secret).expect("decodes");
        assert_eq!(key.len(), 32);
        assert_ne!(generate_secret(), secret, "secrets are random");
    }

    #[test]
    fn notification_id_round_trips() {
        let id = Uuid::new_v4();
        let text = notification_id_text(id);
        assert_eq!(text.len(), 36);
        assert_eq!(parse_notification_id(&text), Some(id));
        for bad in [
            "",
            "msg_",
            "msg_xyz",
            &id.to_string(),
            &format!("msg_{id}"),
            &format!("evt_{}", id.simple()),
        ] {
            assert_eq!(parse_notification_id(bad), None, "{bad:?}");
        }
    }

    /// Signs with the `hmac` crate directly, so a mistake in the shared
    /// helper cannot hide in both sides of the test.
    fn expected_entry(key: &[u8], signed: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(signed.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signature_header_has_one_entry_per_key() {
        let body = br#"{"type":"payout.succeeded"}"#;
        let header = signature_header("msg_1", 1_767_225_600, body, &[b"new-key", b"old-key"]);
        let signed = r#"msg_1.1767225600.{"type":"payout.succeeded"}"#;
        assert_eq!(
            header,
            format!(
                "{} {}",
                expected_entry(b"new-key", signed),
                expected_entry(b"old-key", signed)
            )
        );
    }

    #[test]
    fn payload_matches_the_payout_view() {
        let notification_id = Uuid::new_v4();
        let payout = json!({
            "payout_id": "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f",
            "client_id": "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e60",
            "status": "succeeded",
            "amount_minor": 15000,
            "currency": "XOF",
            "provider": "tmoney",
            "msisdn": "+22890112233",
            "recipient_name": "Afi Mensah",
            "reference": null,
            "provider_ref": "TM-1",
            "failure_code": null,
            "created_at": "2026-12-04T10:00:00.123456+00:00",
            "updated_at": "2026-12-04T10:00:05+00:00",
            "last_sequence": 3,
        });
        let created_at = DateTime::parse_from_rfc3339("2026-12-04T10:00:05Z")
            .expect("valid time")
            .to_utc();
        let body = payload_body("payout.succeeded", notification_id, created_at, &payout)
            .expect("payload");
        let parsed: Value = serde_json::from_slice(&body).expect("JSON");

        assert_eq!(parsed["type"], "payout.succeeded");
        assert_eq!(parsed["id"], notification_id_text(notification_id));
        assert_eq!(parsed["created_at"], "2026-12-04T10:00:05Z");
        assert_eq!(parsed["data"]["id"], "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f");
        assert_eq!(parsed["data"]["amount"], 15000);
        assert_eq!(parsed["data"]["recipient"]["msisdn"], "+22890112233");
        assert_eq!(parsed["data"]["created_at"], "2026-12-04T10:00:00.123456Z");
    }

    #[test]
    fn payload_rejects_a_corrupt_snapshot() {
        let result = payload_body(
            "payout.failed",
            Uuid::new_v4(),
            Utc::now(),
            &json!({ "payout_id": "x" }),
        );
        assert!(result.is_err());
    }
}
