//! MTN MoMo callbacks.
//!
//! MoMo does not sign its callbacks. Each payout's `X-Callback-Url` instead
//! ends in a callback token bound to that payout by an HMAC, so only a sender
//! that has the URL can post for that payout. The token does not cover the
//! body, so the outcome still has to be confirmed with MoMo before it is
//! applied. The body has the shape of the transfer status response:
//!
//! ```json
//! {"externalId": "…", "financialTransactionId": "1234567890",
//!  "status": "FAILED", "reason": {"code": "PAYEE_NOT_FOUND", "message": "…"},
//!  "amount": "25", "currency": "EUR"}
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nepxy_ledger::Provider;
use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::{Choice, ConstantTimeEq};
use uuid::Uuid;

use super::amount::report_amount_minor;
use super::tmoney::{
    configured_keys, hmac_sha256, invalid_body, parse_json_body, scalar_text, warn_unknown_status,
};
use super::{
    Delivery, ParseError, ProviderAdapter, Rejection, Report, ReportStatus, Secrets, Verified,
};

/// Hex digits of the payout id in a callback token (the UUID simple form).
const PAYOUT_ID_HEX_LEN: usize = 32;
/// Unpadded base64url length of a 32-byte HMAC-SHA256.
const MAC_BASE64_LEN: usize = 43;
/// Length of a callback token: payout id, `.`, MAC.
const CALLBACK_TOKEN_LEN: usize = PAYOUT_ID_HEX_LEN + 1 + MAC_BASE64_LEN;

/// MTN MoMo webhook adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Momo;

/// Builds the callback token of a payout: `{payout id as 32 lowercase hex
/// digits}.{unpadded base64url of HMAC-SHA256(secret, payout id bytes)}`.
///
/// The token contains only ASCII letters, digits, `.`, `-` and `_`, so it
/// fits in a URL path segment without escaping.
pub fn callback_token(secret: &[u8], payout_id: Uuid) -> String {
    let mac = hmac_sha256(secret, &[payout_id.as_bytes()]);
    format!("{}.{}", payout_id.simple(), URL_SAFE_NO_PAD.encode(mac))
}

impl ProviderAdapter for Momo {
    fn provider(&self) -> Provider {
        Provider::Momo
    }

    /// Verifies the callback token of the URL path. The delivery carries no
    /// timestamp, so `now` and `check_freshness` are unused. No replay key is
    /// returned, because every callback of a payout has the same token and a
    /// repeated one relies on reports being applied idempotently.
    fn verify(
        &self,
        delivery: &Delivery<'_>,
        secrets: &Secrets,
        _now: i64,
        _check_freshness: bool,
    ) -> Result<Verified, Rejection> {
        let keys = configured_keys(secrets, Provider::Momo)?;
        let token = delivery.path_token.ok_or(Rejection::BadToken)?;
        let (payout_id, mac) = split_callback_token(token).ok_or(Rejection::BadToken)?;

        let mut matched = Choice::from(0);
        for key in &keys {
            matched |= hmac_sha256(key, &[payout_id.as_bytes()]).ct_eq(&mac);
        }
        if !bool::from(matched) {
            return Err(Rejection::BadToken);
        }
        Ok(Verified {
            replay_key: None,
            payout_id: Some(payout_id),
        })
    }

    fn parse(&self, body: &[u8]) -> Result<Report, ParseError> {
        read_report(body).map_err(|error| invalid_body(Provider::Momo, error))
    }
}

fn read_report(body: &[u8]) -> Result<Report, ParseError> {
    let payload: MomoTransfer<'_> = parse_json_body(body)?;

    let provider_ref = scalar_text("financialTransactionId", payload.financial_transaction_id)?;
    let amount = scalar_text("amount", payload.amount)?;
    let amount_minor = report_amount_minor(amount.as_deref(), payload.currency.as_deref())?;
    let failure_code = read_failure_code(payload.reason)?;

    Ok(Report {
        provider: Provider::Momo,
        external_ref: payload.external_id,
        provider_ref,
        status: map_status(&payload.status),
        raw_status: payload.status,
        failure_code,
        amount_minor,
        currency: payload.currency,
        occurred_at: None,
    })
}

/// Fields of a MoMo transfer body that a report uses. Serde ignores the others.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MomoTransfer<'a> {
    external_id: String,
    /// Documented as a string. A number is accepted too.
    #[serde(borrow)]
    financial_transaction_id: Option<&'a RawValue>,
    status: String,
    /// An `ErrorReason` object `{code, message}` as specified, or a plain
    /// string as some API versions send it.
    #[serde(borrow)]
    reason: Option<&'a RawValue>,
    /// Major units, documented as a string such as "25" or "25.50". A JSON
    /// number is accepted too.
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    currency: Option<String>,
}

/// The part of an `ErrorReason` object that a report uses.
#[derive(Deserialize)]
struct ErrorReason {
    code: Option<String>,
}

fn map_status(raw_status: &str) -> ReportStatus {
    match raw_status {
        "SUCCESSFUL" => ReportStatus::Succeeded,
        "FAILED" => ReportStatus::Failed,
        "PENDING" => ReportStatus::Pending,
        _ => {
            warn_unknown_status(Provider::Momo, raw_status);
            ReportStatus::Pending
        }
    }
}

/// Reads the failure code: the `code` of a reason object, or the reason
/// itself when it is a string.
fn read_failure_code(reason: Option<&RawValue>) -> Result<Option<String>, ParseError> {
    let Some(reason) = reason else {
        return Ok(None);
    };
    let text = reason.get();
    match text.as_bytes().first() {
        Some(b'{') => serde_json::from_str::<ErrorReason>(text)
            .map(|reason| reason.code)
            .map_err(|error| ParseError(format!("field reason is an invalid object: {error}"))),
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Some)
            .map_err(|error| ParseError(format!("field reason is an invalid string: {error}"))),
        Some(b'n') => Ok(None),
        _ => Err(ParseError(
            "field reason must be an object with a code or a string".to_owned(),
        )),
    }
}

/// Splits a token in the exact form [`callback_token`] produces into the
/// payout id and the MAC. Returns `None` for any other form.
fn split_callback_token(token: &str) -> Option<(Uuid, [u8; 32])> {
    if token.len() != CALLBACK_TOKEN_LEN {
        return None;
    }
    let (id_hex, mac_base64) = token.split_once('.')?;
    let is_lowercase_hex = |byte: u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
    if id_hex.len() != PAYOUT_ID_HEX_LEN || !id_hex.bytes().all(is_lowercase_hex) {
        return None;
    }

    let mut id_bytes = [0_u8; 16];
    hex::decode_to_slice(id_hex, &mut id_bytes).ok()?;
    let mac_bytes = URL_SAFE_NO_PAD.decode(mac_base64).ok()?;
    let mac = <[u8; 32]>::try_from(mac_bytes.as_slice()).ok()?;
    Some((Uuid::from_bytes(id_bytes), mac))
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};

    use super::*;
    use crate::webhooks::tmoney::HmacSha256;

    const SECRET: &[u8] = b"momo-callback-current-secret";
    const OLD_SECRET: &[u8] = b"momo-callback-previous-secret";
    const NOW: i64 = 1_736_935_860;

    fn payout_id() -> Uuid {
        Uuid::parse_str("0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f").unwrap()
    }

    fn other_payout_id() -> Uuid {
        Uuid::parse_str("0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e60").unwrap()
    }

    fn current_only() -> Secrets {
        Secrets {
            current: Some(SECRET.to_vec()),
            previous: None,
        }
    }

    fn verify_token(token: Option<&str>, secrets: &Secrets) -> Result<Verified, Rejection> {
        let delivery = Delivery {
            headers: &[],
            body: b"{}",
            path_token: token,
        };
        Momo.verify(&delivery, secrets, NOW, true)
    }

    fn parse(body: &str) -> Result<Report, ParseError> {
        Momo.parse(body.as_bytes())
    }

    fn body_with(status: &str, extra: &str) -> String {
        format!(r#"{{"externalId":"po-1","status":"{status}"{extra}}}"#)
    }

    #[test]
    fn callback_token_format() {
        let token = callback_token(SECRET, payout_id());
        assert_eq!(token.len(), CALLBACK_TOKEN_LEN);
        let (id_hex, mac_base64) = token.split_once('.').unwrap();
        assert_eq!(id_hex, "0194b3f27c1a7d2e9f000a1b2c3d4e5f");

        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(payout_id().as_bytes());
        assert_eq!(
            mac_base64,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );

        let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        assert!(token.chars().all(url_safe), "{token}");
    }

    #[test]
    fn callback_token_depends_on_secret_and_payout() {
        let token = callback_token(SECRET, payout_id());
        assert_eq!(token, callback_token(SECRET, payout_id()));
        assert_ne!(token, callback_token(OLD_SECRET, payout_id()));
        assert_ne!(token, callback_token(SECRET, other_payout_id()));
    }

    #[test]
    fn token_round_trip() {
        let token = callback_token(SECRET, payout_id());
        let verified = verify_token(Some(&token), &current_only()).unwrap();
        assert_eq!(
            verified,
            Verified {
                replay_key: None,
                payout_id: Some(payout_id()),
            }
        );
    }

    #[test]
    fn round_trip_many_payouts() {
        for _ in 0..200 {
            let id = Uuid::new_v4();
            let token = callback_token(SECRET, id);
            let verified = verify_token(Some(&token), &current_only()).unwrap();
            assert_eq!(verified.payout_id, Some(id), "{token}");
        }
    }

    #[test]
    fn previous_secret_verifies() {
        let rotating = Secrets {
            current: Some(SECRET.to_vec()),
            previous: Some(OLD_SECRET.to_vec()),
        };
        let old_token = callback_token(OLD_SECRET, payout_id());
        assert!(verify_token(Some(&old_token), &rotating).is_ok());
        let new_token = callback_token(SECRET, payout_id());
        assert!(verify_token(Some(&new_token), &rotating).is_ok());
    }

    #[test]
    fn wrong_secret_rejected() {
        let token = callback_token(b"another-secret", payout_id());
        assert_eq!(
            verify_token(Some(&token), &current_only()),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn token_for_another_payout_rejected() {
        let token = callback_token(SECRET, payout_id());
        let other = callback_token(SECRET, other_payout_id());
        let (_, mac) = token.split_once('.').unwrap();
        let (other_id_hex, _) = other.split_once('.').unwrap();
        let swapped = format!("{other_id_hex}.{mac}");
        assert_eq!(
            verify_token(Some(&swapped), &current_only()),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn truncated_token_rejected() {
        let token = callback_token(SECRET, payout_id());
        for truncated in [
            &token[..token.len() - 1],
            &token[1..],
            &token[..PAYOUT_ID_HEX_LEN],
            &token[..PAYOUT_ID_HEX_LEN + 1],
            &token[PAYOUT_ID_HEX_LEN..],
        ] {
            assert_eq!(
                verify_token(Some(truncated), &current_only()),
                Err(Rejection::BadToken),
                "{truncated}"
            );
        }
    }

    #[test]
    fn altered_token_rejected() {
        let token = callback_token(SECRET, payout_id());
        let (id_hex, mac) = token.split_once('.').unwrap();
        let hyphenated = payout_id().hyphenated().to_string();
        let replacement = |original: &str| if original == "A" { "B" } else { "A" };
        let first_changed = format!("{}{}", replacement(&mac[..1]), &mac[1..]);
        let last_index = mac.len() - 1;
        let last_changed = format!("{}{}", &mac[..last_index], replacement(&mac[last_index..]));
        let cases = [
            format!("{}.{mac}", id_hex.to_uppercase()),
            format!("{hyphenated}.{mac}"),
            format!("{id_hex}.{mac}="),
            format!("{id_hex}/{mac}"),
            format!("{id_hex}.{first_changed}"),
            format!("{id_hex}.{last_changed}"),
            format!("{token}.extra"),
            format!(" {}", &token[1..]),
        ];
        for altered in cases {
            assert_ne!(altered, token);
            assert_eq!(
                verify_token(Some(&altered), &current_only()),
                Err(Rejection::BadToken),
                "{altered}"
            );
        }
    }

    #[test]
    fn garbage_tokens_rejected() {
        let multibyte = "é".repeat(CALLBACK_TOKEN_LEN / 2);
        let dotted_multibyte = format!("{}.{}", "é".repeat(16), "ü".repeat(21) + "x");
        let cases = [
            "",
            ".",
            "abc",
            "cb_7Yq3kPz9",
            &"a".repeat(CALLBACK_TOKEN_LEN),
            &".".repeat(CALLBACK_TOKEN_LEN),
            &multibyte,
            &dotted_multibyte,
            &"0".repeat(10_000),
        ];
        for garbage in cases {
            assert_eq!(
                verify_token(Some(garbage), &current_only()),
                Err(Rejection::BadToken),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn missing_token_rejected() {
        assert_eq!(
            verify_token(None, &current_only()),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn no_secret_is_not_configured() {
        let token = callback_token(SECRET, payout_id());
        let expected = Err(Rejection::NotConfigured(Provider::Momo));
        assert_eq!(verify_token(Some(&token), &Secrets::default()), expected);
        assert_eq!(verify_token(None, &Secrets::default()), expected);
        let empty = Secrets {
            current: Some(Vec::new()),
            previous: None,
        };
        assert_eq!(verify_token(Some(&token), &empty), expected);
    }

    #[test]
    fn freshness_does_not_apply() {
        let token = callback_token(SECRET, payout_id());
        let delivery = Delivery {
            headers: &[("x-timestamp".to_owned(), "1".to_owned())],
            body: b"anything",
            path_token: Some(&token),
        };
        for now in [0, NOW, i64::MAX, i64::MIN] {
            assert!(Momo.verify(&delivery, &current_only(), now, true).is_ok());
        }
    }

    #[test]
    fn parse_successful_body() {
        let body = r#"{"amount":"25","currency":"EUR","financialTransactionId":"1234567890","externalId":"0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f","payee":{"partyIdType":"MSISDN","partyId":"46733123450"},"payerMessage":"Payout","payeeNote":"Note","status":"SUCCESSFUL"}"#;
        assert_eq!(
            parse(body).unwrap(),
            Report {
                provider: Provider::Momo,
                external_ref: "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f".to_owned(),
                provider_ref: Some("1234567890".to_owned()),
                status: ReportStatus::Succeeded,
                raw_status: "SUCCESSFUL".to_owned(),
                failure_code: None,
                amount_minor: Some(2500),
                currency: Some("EUR".to_owned()),
                occurred_at: None,
            }
        );
    }

    #[test]
    fn status_mapping() {
        let cases = [
            ("SUCCESSFUL", ReportStatus::Succeeded),
            ("FAILED", ReportStatus::Failed),
            ("PENDING", ReportStatus::Pending),
            ("REJECTED", ReportStatus::Pending),
            ("TIMEOUT", ReportStatus::Pending),
            ("ONGOING", ReportStatus::Pending),
            ("SUCCESS", ReportStatus::Pending),
            ("successful", ReportStatus::Pending),
            ("", ReportStatus::Pending),
        ];
        for (raw_status, expected) in cases {
            let report = parse(&body_with(raw_status, "")).unwrap();
            assert_eq!(report.status, expected, "{raw_status:?}");
            assert_eq!(report.raw_status, raw_status);
        }
    }

    #[test]
    fn reason_object_gives_code() {
        let extra = r#","reason":{"code":"PAYEE_NOT_FOUND","message":"Payee does not exist"}"#;
        let report = parse(&body_with("FAILED", extra)).unwrap();
        assert_eq!(report.status, ReportStatus::Failed);
        assert_eq!(report.failure_code.as_deref(), Some("PAYEE_NOT_FOUND"));
    }

    #[test]
    fn reason_string_is_code() {
        let report = parse(&body_with("FAILED", r#","reason":"NOT_ENOUGH_FUNDS""#)).unwrap();
        assert_eq!(report.failure_code.as_deref(), Some("NOT_ENOUGH_FUNDS"));
    }

    #[test]
    fn reason_without_code() {
        for extra in [
            r#","reason":{"message":"no code"}"#,
            r#","reason":{"code":null}"#,
            r#","reason":null"#,
            "",
        ] {
            let report = parse(&body_with("FAILED", extra)).unwrap();
            assert_eq!(report.failure_code, None, "{extra}");
        }
    }

    #[test]
    fn invalid_reason_rejected() {
        for extra in [
            r#","reason":42"#,
            r#","reason":["PAYEE_NOT_FOUND"]"#,
            r#","reason":true"#,
            r#","reason":{"code":42}"#,
        ] {
            let error = parse(&body_with("FAILED", extra)).unwrap_err();
            assert!(error.0.contains("reason"), "{extra}: {error}");
        }
    }

    #[test]
    fn amount_forms() {
        let cases = [
            (r#","amount":"25","currency":"EUR""#, Some(2500)),
            (r#","amount":"25.50","currency":"EUR""#, Some(2550)),
            (r#","amount":"25.5","currency":"EUR""#, Some(2550)),
            (r#","amount":25,"currency":"EUR""#, Some(2500)),
            (r#","amount":"20000","currency":"XOF""#, Some(20000)),
            (r#","amount":"100","currency":"UGX""#, None),
            (r#","currency":"EUR""#, None),
            ("", None),
        ];
        for (extra, expected) in cases {
            let report = parse(&body_with("SUCCESSFUL", extra))
                .unwrap_or_else(|error| panic!("{extra}: {error}"));
            assert_eq!(report.amount_minor, expected, "{extra}");
        }
        let unknown = parse(&body_with(
            "SUCCESSFUL",
            r#","amount":"100","currency":"UGX""#,
        ))
        .unwrap();
        assert_eq!(unknown.currency.as_deref(), Some("UGX"));
    }

    #[test]
    fn invalid_amounts_rejected() {
        for extra in [
            r#","amount":"25.505","currency":"EUR""#,
            r#","amount":"2.5e1","currency":"EUR""#,
            r#","amount":"-25","currency":"EUR""#,
            r#","amount":"","currency":"EUR""#,
            r#","amount":"25 EUR","currency":"EUR""#,
            r#","amount":"25""#,
        ] {
            assert!(
                parse(&body_with("SUCCESSFUL", extra)).is_err(),
                "{extra} was accepted"
            );
        }
    }

    #[test]
    fn external_id_any_string() {
        for external_id in ["po_01HZX4K8Q2M7", "", "with spaces", "é/ü"] {
            let body = format!(r#"{{"externalId":"{external_id}","status":"PENDING"}}"#);
            assert_eq!(parse(&body).unwrap().external_ref, external_id);
        }
    }

    #[test]
    fn financial_transaction_id_forms() {
        let text = parse(&body_with(
            "SUCCESSFUL",
            r#","financialTransactionId":"987""#,
        ))
        .unwrap();
        assert_eq!(text.provider_ref.as_deref(), Some("987"));
        let number = parse(&body_with("SUCCESSFUL", r#","financialTransactionId":987"#)).unwrap();
        assert_eq!(number.provider_ref.as_deref(), Some("987"));
        let absent = parse(&body_with("PENDING", "")).unwrap();
        assert_eq!(absent.provider_ref, None);
    }

    #[test]
    fn unusual_json_bodies_parse() {
        let bodies = [
            r#"{"status":"SUCCESSFUL","externalId":"po-1"}"#,
            r#"{"externalId":"po-\u00e9","status":"SUCCESSFUL"}"#,
            r#"{"externalId":"po\/1","status":"SUCCESSFUL"}"#,
            "{\"externalId\":\"po-1\",\"status\":\"SUCCESSFUL\"}\n",
            "{\r\n  \"externalId\": \"po-1\",\r\n  \"status\": \"SUCCESSFUL\"\r\n}\r\n",
        ];
        for body in bodies {
            let report = parse(body).unwrap_or_else(|error| panic!("{body:?}: {error}"));
            assert_eq!(report.status, ReportStatus::Succeeded, "{body:?}");
        }
        assert_eq!(parse(bodies[1]).unwrap().external_ref, "po-é");
        assert_eq!(parse(bodies[2]).unwrap().external_ref, "po/1");
    }

    #[test]
    fn unknown_fields_ignored() {
        let extra = r#","payee":{"partyIdType":"MSISDN","partyId":"46733123450"},"payerMessage":"m","payeeNote":"n","newField":[1,{"a":null}]"#;
        assert_eq!(
            parse(&body_with("SUCCESSFUL", extra)).unwrap().status,
            ReportStatus::Succeeded
        );
    }

    #[test]
    fn malformed_json_rejected() {
        for body in [
            "",
            "{",
            "[]",
            "\"SUCCESSFUL\"",
            r#"{"status":"SUCCESSFUL"}"#,
            r#"{"externalId":"po-1"}"#,
            r#"{"externalId":7,"status":"SUCCESSFUL"}"#,
            r#"{"externalId":"po-1","status":"SUCCESSFUL"} x"#,
        ] {
            let error = parse(body).unwrap_err();
            assert!(
                error.0.starts_with("momo webhook body is invalid"),
                "{error}"
            );
        }
        let missing = parse(r#"{"status":"SUCCESSFUL"}"#).unwrap_err();
        assert!(missing.0.contains("externalId"), "{missing}");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let body = body_with(
            "FAILED",
            r#","reason":{"code":"EXPIRED","message":"m"},"amount":"25.50","currency":"EUR","financialTransactionId":"1""#,
        );
        for end in 0..=body.len() {
            let _ = Momo.parse(&body.as_bytes()[..end]);
        }
        for index in 0..body.len() {
            let mut mutated = body.as_bytes().to_vec();
            mutated[index] = b'{';
            let _ = Momo.parse(&mutated);
        }
    }
}
