//! Signed provider webhooks, built the way TMoney and Thunes send them, so
//! that the service verifies, stores and applies each one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

/// A delivery ready to send: the path, the headers and the exact body bytes
/// that were signed.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Webhook keys of the providers that the service verifies.
#[derive(Clone)]
pub struct WebhookKeys {
    /// `TMONEY_WEBHOOK_SECRET` as bytes.
    pub tmoney: Vec<u8>,
    /// The HMAC key decoded from `THUNES_WEBHOOK_SECRET` (`whsec_` and base64).
    pub thunes: Vec<u8>,
}

impl WebhookKeys {
    /// Reads the keys from the values of `TMONEY_WEBHOOK_SECRET` and
    /// `THUNES_WEBHOOK_SECRET`.
    pub fn from_secrets(tmoney: &str, thunes: &str) -> anyhow::Result<Self> {
        let encoded = thunes.strip_prefix("whsec_").unwrap_or(thunes);
        let thunes = STANDARD.decode(encoded).map_err(|error| {
            anyhow::anyhow!("THUNES_WEBHOOK_SECRET is not whsec_ followed by base64: {error}")
        })?;
        if tmoney.is_empty() || thunes.is_empty() {
            anyhow::bail!("TMONEY_WEBHOOK_SECRET and THUNES_WEBHOOK_SECRET must not be empty");
        }
        Ok(Self {
            tmoney: tmoney.as_bytes().to_vec(),
            thunes,
        })
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Builds a TMoney report that payout `payout_id` of `amount` XOF succeeded,
/// signed with the hex HMAC-SHA256 of `{timestamp}.{nonce}.{body}`.
pub fn tmoney_success(
    key: &[u8],
    payout_id: &str,
    amount: i64,
    nonce: &str,
    timestamp: i64,
) -> Delivery {
    let body = json!({
        "external_ref": payout_id,
        "status": "SUCCESS",
        "transaction_id": format!("TM-{nonce}"),
        "amount": amount,
        "currency": "XOF",
        "reason": null,
    })
    .to_string();
    let timestamp = timestamp.to_string();
    let signature = hmac_sha256(
        key,
        &[
            timestamp.as_bytes(),
            b".",
            nonce.as_bytes(),
            b".",
            body.as_bytes(),
        ],
    );
    Delivery {
        path: "/v1/webhooks/tmoney",
        headers: vec![
            ("x-timestamp", timestamp),
            ("x-nonce", nonce.to_owned()),
            ("x-signature", hex::encode(signature)),
        ],
        body,
    }
}

/// Builds a Thunes transaction in the completed class (7) for payout
/// `payout_id`, signed the Standard Webhooks way: `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn thunes_success(
    key: &[u8],
    payout_id: &str,
    amount: i64,
    message_id: &str,
    timestamp: i64,
) -> Delivery {
    let body = json!({
        "id": 7_300_915,
        "status": "70000",
        "status_message": "COMPLETED",
        "status_class": "7",
        "external_id": payout_id,
        "destination": { "currency": "XOF", "amount": amount },
    })
    .to_string();
    let timestamp = timestamp.to_string();
    let signature = hmac_sha256(
        key,
        &[
            message_id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            body.as_bytes(),
        ],
    );
    Delivery {
        path: "/v1/webhooks/thunes",
        headers: vec![
            ("webhook-id", message_id.to_owned()),
            ("webhook-timestamp", timestamp),
            (
                "webhook-signature",
                format!("v1,{}", STANDARD.encode(signature)),
            ),
        ],
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(delivery: &'a Delivery, name: &str) -> &'a str {
        delivery
            .headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("header {name} missing"))
    }

    #[test]
    fn tmoney_signature_covers_timestamp_nonce_and_body() {
        let delivery = tmoney_success(b"secret", "payout-1", 1000, "n1", 1_700_000_000);
        let expected = hmac_sha256(
            b"secret",
            &[format!("1700000000.n1.{}", delivery.body).as_bytes()],
        );
        assert_eq!(header(&delivery, "x-signature"), hex::encode(expected));
        assert_eq!(header(&delivery, "x-timestamp"), "1700000000");
        assert_eq!(delivery.path, "/v1/webhooks/tmoney");
    }

    #[test]
    fn tmoney_signature_depends_on_key() {
        let first = tmoney_success(b"one", "payout-1", 1000, "n1", 1);
        let second = tmoney_success(b"two", "payout-1", 1000, "n1", 1);
        assert_ne!(
            header(&first, "x-signature"),
            header(&second, "x-signature")
        );
    }

    #[test]
    fn thunes_signature_is_standard_webhooks() {
        let delivery = thunes_success(b"key", "payout-2", 1000, "msg_1", 1_700_000_000);
        let expected = hmac_sha256(
            b"key",
            &[format!("msg_1.1700000000.{}", delivery.body).as_bytes()],
        );
        assert_eq!(
            header(&delivery, "webhook-signature"),
            format!("v1,{}", STANDARD.encode(expected))
        );
        assert!(delivery.body.contains("\"external_id\":\"payout-2\""));
    }

    #[test]
    fn thunes_secret_is_decoded() {
        let keys = WebhookKeys::from_secrets("tm", "whsec_a2V5").expect("valid secrets");
        assert_eq!(keys.thunes, b"key");
        assert_eq!(keys.tmoney, b"tm");
    }

    #[test]
    fn invalid_thunes_secret_rejected() {
        assert!(WebhookKeys::from_secrets("tm", "whsec_***").is_err());
        assert!(WebhookKeys::from_secrets("", "whsec_a2V5").is_err());
    }
}
