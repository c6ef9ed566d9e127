//! TMoney webhooks, and the header, HMAC and JSON helpers that the other
//! adapters reuse.
//!
//! A delivery carries `X-Timestamp` (Unix seconds), `X-Nonce` and
//! `X-Signature`: the hex HMAC-SHA256 of `{timestamp}.{nonce}.{raw body}`,
//! optionally prefixed with `sha256=`. The body reports one payout:
//!
//! ```json
//! {"external_ref": "…", "status": "SUCCESS", "transaction_id": "TX-1",
//!  "amount": 20000, "currency": "XOF", "reason": null,
//!  "occurred_at": "2025-01-15T10:31:00Z"}
//! ```

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nepxy_ledger::Provider;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_path_to_error::Segment;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use super::amount::report_amount_minor;
use super::{
    Delivery, ParseError, ProviderAdapter, Rejection, Report, ReportStatus, Secrets,
    TIMESTAMP_TOLERANCE_SECONDS, Verified,
};

const TIMESTAMP_HEADER: &str = "x-timestamp";
const NONCE_HEADER: &str = "x-nonce";
const SIGNATURE_HEADER: &str = "x-signature";

/// Optional prefix of the `X-Signature` value.
const SIGNATURE_PREFIX: &str = "sha256=";

/// TMoney webhook adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tmoney;

impl ProviderAdapter for Tmoney {
    fn provider(&self) -> Provider {
        Provider::Tmoney
    }

    /// Checks the signature first and the timestamp second, so `Stale` means
    /// that TMoney really signed the delivery.
    fn verify(
        &self,
        delivery: &Delivery<'_>,
        secrets: &Secrets,
        now: i64,
        check_freshness: bool,
    ) -> Result<Verified, Rejection> {
        let keys = configured_keys(secrets, Provider::Tmoney)?;

        let timestamp_text = single_header(delivery, TIMESTAMP_HEADER, MAX_TIMESTAMP_DIGITS)?;
        let timestamp = parse_unix_timestamp(TIMESTAMP_HEADER, timestamp_text)?;
        let nonce = single_header(delivery, NONCE_HEADER, MAX_ID_BYTES)?;
        check_id_characters(NONCE_HEADER, nonce)?;
        let signature_text = single_header(delivery, SIGNATURE_HEADER, MAX_SIGNATURE_BYTES)?;
        let signature = decode_hex_signature(signature_text)?;

        let signed_parts: [&[u8]; 5] = [
            timestamp_text.as_bytes(),
            b".",
            nonce.as_bytes(),
            b".",
            delivery.body,
        ];
        let mut matched = Choice::from(0);
        for key in &keys {
            matched |= hmac_sha256(key, &signed_parts).ct_eq(&signature);
        }
        if !bool::from(matched) {
            return Err(Rejection::BadSignature);
        }

        if check_freshness {
            ensure_fresh(timestamp, now)?;
        }
        Ok(Verified {
            replay_key: Some(nonce.to_owned()),
            payout_id: None,
        })
    }

    fn parse(&self, body: &[u8]) -> Result<Report, ParseError> {
        read_report(body).map_err(|error| invalid_body(Provider::Tmoney, error))
    }
}

fn read_report(body: &[u8]) -> Result<Report, ParseError> {
    let payload: TmoneyBody<'_> = parse_json_body(body)?;

    let provider_ref = scalar_text("transaction_id", payload.transaction_id)?;
    let amount = scalar_text("amount", payload.amount)?;
    let amount_minor = report_amount_minor(amount.as_deref(), payload.currency.as_deref())?;
    let occurred_at = payload
        .occurred_at
        .as_deref()
        .map(|text| parse_rfc3339("occurred_at", text))
        .transpose()?;

    Ok(Report {
        provider: Provider::Tmoney,
        external_ref: payload.external_ref,
        provider_ref,
        status: map_status(&payload.status),
        raw_status: payload.status,
        failure_code: payload.reason,
        amount_minor,
        currency: payload.currency,
        occurred_at,
    })
}

/// Fields of a TMoney body that a report uses. Serde ignores the others.
#[derive(Deserialize)]
struct TmoneyBody<'a> {
    external_ref: String,
    status: String,
    /// String or number.
    #[serde(borrow)]
    transaction_id: Option<&'a RawValue>,
    /// Major units as a JSON number or a numeric string.
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    currency: Option<String>,
    reason: Option<String>,
    occurred_at: Option<String>,
}

fn map_status(raw_status: &str) -> ReportStatus {
    match raw_status {
        "SUCCESS" => ReportStatus::Succeeded,
        "FAILED" => ReportStatus::Failed,
        "PENDING" => ReportStatus::Pending,
        "REVERSED" => ReportStatus::Reversed,
        _ => {
            warn_unknown_status(Provider::Tmoney, raw_status);
            ReportStatus::Pending
        }
    }
}

fn decode_hex_signature(value: &str) -> Result<[u8; 32], Rejection> {
    let hex_digits = value.strip_prefix(SIGNATURE_PREFIX).unwrap_or(value);
    let mut signature = [0_u8; 32];
    hex::decode_to_slice(hex_digits, &mut signature).map_err(|_| Rejection::MalformedHeader {
        name: SIGNATURE_HEADER,
        reason: "expected 64 hex digits, optionally prefixed with sha256=".to_owned(),
    })?;
    Ok(signature)
}

// Helpers shared by the three adapters.
// NOTE: they live here only because the webhooks module has no file for
// shared code yet. `thunes` and `momo` import them from this module.

/// Maximum length of a signature header, in bytes. It leaves room for
/// several signatures during a secret rotation.
pub(super) const MAX_SIGNATURE_BYTES: usize = 1024;
/// Maximum length of a nonce or event id header, in bytes.
pub(super) const MAX_ID_BYTES: usize = 256;
/// Maximum digits of a Unix timestamp header. `i64::MAX` has 19 digits, so
/// the limit only bounds the text that is parsed.
pub(super) const MAX_TIMESTAMP_DIGITS: usize = 20;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Returns the configured keys, or `NotConfigured` when none is configured.
///
/// An empty key counts as not configured, because anyone could sign with it.
pub(super) fn configured_keys(
    secrets: &Secrets,
    provider: Provider,
) -> Result<Vec<&[u8]>, Rejection> {
    let keys: Vec<&[u8]> = secrets.all().filter(|key| !key.is_empty()).collect();
    if keys.is_empty() {
        return Err(Rejection::NotConfigured(provider));
    }
    Ok(keys)
}

/// Computes the HMAC-SHA256 of the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC pads or hashes the key to the block size, so every length works.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Returns the only value of header `name`, which must be non-empty and at
/// most `max_bytes` long.
pub(super) fn single_header<'d>(
    delivery: &'d Delivery<'_>,
    name: &'static str,
    max_bytes: usize,
) -> Result<&'d str, Rejection> {
    let values = delivery.header_values(name);
    let value = match values.as_slice() {
        [] => return Err(Rejection::MissingHeader(name)),
        [value] => *value,
        several => {
            return Err(malformed(
                name,
                format!("it appears {} times, expected once", several.len()),
            ));
        }
    };
    if value.is_empty() {
        return Err(malformed(name, "it is empty".to_owned()));
    }
    if value.len() > max_bytes {
        return Err(malformed(
            name,
            format!(
                "it is {} bytes long, the maximum is {max_bytes}",
                value.len()
            ),
        ));
    }
    Ok(value)
}

/// Parses Unix seconds written as ASCII digits only (no sign or spaces).
pub(super) fn parse_unix_timestamp(name: &'static str, value: &str) -> Result<i64, Rejection> {
    let invalid = || {
        malformed(
            name,
            "expected Unix time in seconds as decimal digits".to_owned(),
        )
    };
    if !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse::<i64>().map_err(|_| invalid())
}

/// Rejects a timestamp more than [`TIMESTAMP_TOLERANCE_SECONDS`] before or
/// after `now`.
pub(super) fn ensure_fresh(timestamp: i64, now: i64) -> Result<(), Rejection> {
    if timestamp.abs_diff(now) > TIMESTAMP_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(Rejection::Stale { timestamp, now });
    }
    Ok(())
}

/// Accepts a nonce or event id made of visible ASCII characters other than
/// `.`, because `.` separates the parts of the signed content and would let
/// one signature match a different split of id and body.
pub(super) fn check_id_characters(name: &'static str, value: &str) -> Result<(), Rejection> {
    let is_allowed = |byte: u8| byte.is_ascii_graphic() && byte != b'.';
    if !value.bytes().all(is_allowed) {
        return Err(malformed(
            name,
            "expected visible ASCII characters other than '.'".to_owned(),
        ));
    }
    Ok(())
}

pub(super) fn malformed(name: &'static str, reason: String) -> Rejection {
    Rejection::MalformedHeader { name, reason }
}

/// Deserializes a webhook body. The error names the field that failed when
/// the body is valid JSON.
pub(super) fn parse_json_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let payload = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path();
        let has_field_names = path
            .iter()
            .all(|segment| matches!(segment, Segment::Map { .. } | Segment::Seq { .. }));
        if path.iter().next().is_some() && has_field_names {
            ParseError(format!("field {path}: {}", error.inner()))
        } else {
            ParseError(error.inner().to_string())
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ParseError(error.to_string()))?;
    Ok(payload)
}

/// Prefixes a parse error with the provider, so the message is complete on
/// its own.
pub(super) fn invalid_body(provider: Provider, error: ParseError) -> ParseError {
    ParseError(format!("{provider} webhook body is invalid: {}", error.0))
}

/// Reads a JSON string or number as text: a string is unescaped and a number
/// keeps its exact digits. JSON `null` and a missing field give `None`.
pub(super) fn scalar_text(
    field: &str,
    value: Option<&RawValue>,
) -> Result<Option<String>, ParseError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Some)
            .map_err(|error| ParseError(format!("field {field} is an invalid string: {error}"))),
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        Some(b'n') => Ok(None),
        _ => Err(ParseError(format!(
            "field {field} must be a string or a number"
        ))),
    }
}

/// Parses an RFC 3339 date-time such as `2025-01-15T10:31:00Z`.
pub(super) fn parse_rfc3339(field: &str, text: &str) -> Result<DateTime<Utc>, ParseError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| {
            ParseError(format!(
                "field {field} is not an RFC 3339 date-time such as 2025-01-15T10:31:00Z: {error}"
            ))
        })
}

/// Logs an alert for a provider status that has no mapping. The adapters
/// report such a status as pending.
pub(super) fn warn_unknown_status(provider: Provider, raw_status: &str) {
    tracing::warn!(
        alert = "unknown_provider_status",
        %provider,
        ?raw_status,
        "provider reported an unknown payout status, so the report is treated as pending"
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    const SECRET: &[u8] = b"tmoney-current-secret";
    const OLD_SECRET: &[u8] = b"tmoney-previous-secret";
    const NOW: i64 = 1_736_935_860;
    const NONCE: &str = "n-5f1c2a9e";
    const BODY: &[u8] = br#"{"external_ref":"0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f","status":"SUCCESS","transaction_id":"TX-1","amount":20000,"currency":"XOF","reason":null}"#;

    fn current_only() -> Secrets {
        Secrets {
            current: Some(SECRET.to_vec()),
            previous: None,
        }
    }

    /// Signs with the `hmac` crate directly, not through `hmac_sha256`, so a
    /// mistake in the shared helper cannot hide in both sides of a test.
    fn sign(secret: &[u8], timestamp: &str, nonce: &str, body: &[u8]) -> String {
        let mut signed = format!("{timestamp}.{nonce}.").into_bytes();
        signed.extend_from_slice(body);
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(&signed);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(timestamp: &str, nonce: &str, signature: &str) -> Vec<(String, String)> {
        vec![
            (TIMESTAMP_HEADER.to_owned(), timestamp.to_owned()),
            (NONCE_HEADER.to_owned(), nonce.to_owned()),
            (SIGNATURE_HEADER.to_owned(), signature.to_owned()),
        ]
    }

    fn signed_headers(body: &[u8]) -> Vec<(String, String)> {
        let timestamp = NOW.to_string();
        headers(&timestamp, NONCE, &sign(SECRET, &timestamp, NONCE, body))
    }

    fn verify(
        headers: &[(String, String)],
        body: &[u8],
        secrets: &Secrets,
        now: i64,
        check_freshness: bool,
    ) -> Result<Verified, Rejection> {
        let delivery = Delivery {
            headers,
            body,
            path_token: None,
        };
        Tmoney.verify(&delivery, secrets, now, check_freshness)
    }

    fn verify_now(headers: &[(String, String)], body: &[u8]) -> Result<Verified, Rejection> {
        verify(headers, body, &current_only(), NOW, true)
    }

    fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|(header, _)| header != name)
            .cloned()
            .collect()
    }

    fn replaced(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        let mut headers = without(headers, name);
        headers.push((name.to_owned(), value.to_owned()));
        headers
    }

    fn assert_malformed(result: Result<Verified, Rejection>, expected_name: &str) {
        match result {
            Err(Rejection::MalformedHeader { name, .. }) => assert_eq!(name, expected_name),
            other => panic!("expected MalformedHeader for {expected_name}, got {other:?}"),
        }
    }

    fn parse(body: &str) -> Result<Report, ParseError> {
        Tmoney.parse(body.as_bytes())
    }

    fn body_with(fields: &str) -> String {
        format!(r#"{{"external_ref":"po-1","status":"SUCCESS",{fields}}}"#)
    }

    #[test]
    fn hmac_matches_rfc_4231_vector() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn valid_signature_passes() {
        let verified = verify_now(&signed_headers(BODY), BODY).unwrap();
        assert_eq!(verified.replay_key.as_deref(), Some(NONCE));
        assert_eq!(verified.payout_id, None);
    }

    #[test]
    fn uppercase_hex_passes() {
        let timestamp = NOW.to_string();
        let signature = sign(SECRET, &timestamp, NONCE, BODY).to_uppercase();
        assert!(verify_now(&headers(&timestamp, NONCE, &signature), BODY).is_ok());
    }

    #[test]
    fn sha256_prefix_passes() {
        let timestamp = NOW.to_string();
        let signature = sign(SECRET, &timestamp, NONCE, BODY);
        let prefixed = format!("sha256={signature}");
        assert!(verify_now(&headers(&timestamp, NONCE, &prefixed), BODY).is_ok());
        let prefixed_uppercase = format!("sha256={}", signature.to_uppercase());
        assert!(verify_now(&headers(&timestamp, NONCE, &prefixed_uppercase), BODY).is_ok());
    }

    #[test]
    fn wrong_secret_rejected() {
        let timestamp = NOW.to_string();
        let signature = sign(b"another-secret", &timestamp, NONCE, BODY);
        let result = verify_now(&headers(&timestamp, NONCE, &signature), BODY);
        assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn flipped_body_byte_rejected() {
        let headers = signed_headers(BODY);
        for index in 0..BODY.len() {
            let mut tampered = BODY.to_vec();
            tampered[index] ^= 0x01;
            assert_eq!(
                verify_now(&headers, &tampered),
                Err(Rejection::BadSignature),
                "byte {index} flipped"
            );
        }
    }

    #[test]
    fn appended_or_truncated_body_rejected() {
        let headers = signed_headers(BODY);
        let mut appended = BODY.to_vec();
        appended.push(b' ');
        assert_eq!(
            verify_now(&headers, &appended),
            Err(Rejection::BadSignature)
        );
        let truncated = &BODY[..BODY.len() - 1];
        assert_eq!(
            verify_now(&headers, truncated),
            Err(Rejection::BadSignature)
        );
        assert_eq!(verify_now(&headers, b""), Err(Rejection::BadSignature));
    }

    #[test]
    fn reserialized_json_rejected() {
        let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_ne!(pretty, BODY);
        assert_eq!(
            verify_now(&signed_headers(&pretty), BODY),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify_now(&signed_headers(BODY), &pretty),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn signature_bound_to_nonce_and_timestamp() {
        let headers = signed_headers(BODY);
        let other_nonce = replaced(&headers, NONCE_HEADER, "n-other");
        assert_eq!(verify_now(&other_nonce, BODY), Err(Rejection::BadSignature));
        let other_timestamp = replaced(&headers, TIMESTAMP_HEADER, &(NOW + 1).to_string());
        assert_eq!(
            verify_now(&other_timestamp, BODY),
            Err(Rejection::BadSignature)
        );
        let padded_timestamp = replaced(&headers, TIMESTAMP_HEADER, &format!("0{NOW}"));
        assert_eq!(
            verify_now(&padded_timestamp, BODY),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn missing_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
            let result = verify_now(&without(&headers, name), BODY);
            assert_eq!(result, Err(Rejection::MissingHeader(name)), "{name}");
        }
        assert_eq!(
            verify_now(&[], BODY),
            Err(Rejection::MissingHeader(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn empty_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
            assert_malformed(verify_now(&replaced(&headers, name, ""), BODY), name);
        }
    }

    #[test]
    fn duplicated_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
            let mut duplicated = headers.clone();
            let original = headers.iter().find(|(header, _)| header == name).unwrap();
            duplicated.push(original.clone());
            let result = verify_now(&duplicated, BODY);
            match result {
                Err(Rejection::MalformedHeader {
                    name: header,
                    reason,
                }) => {
                    assert_eq!(header, name);
                    assert!(reason.contains("2 times"), "{reason}");
                }
                other => panic!("{name}: expected MalformedHeader, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_signatures_rejected() {
        let timestamp = NOW.to_string();
        let signature = sign(SECRET, &timestamp, NONCE, BODY);
        let cases = [
            "not hex at all".to_owned(),
            format!("{}zz", &signature[..62]),
            signature[..62].to_owned(),
            format!("{signature}00"),
            format!("{signature}0"),
            "sha256=".to_owned(),
            format!("sha256=sha256={signature}"),
            format!("SHA256={signature}"),
            format!(" {signature}"),
            format!("v1,{signature}"),
            format!("{}é", &signature[..62]),
        ];
        for value in cases {
            let result = verify_now(&headers(&timestamp, NONCE, &value), BODY);
            assert_malformed(result, SIGNATURE_HEADER);
        }
    }

    #[test]
    fn overlong_headers_rejected() {
        let timestamp = NOW.to_string();
        let signature = sign(SECRET, &timestamp, NONCE, BODY);

        let long_signature = "a".repeat(MAX_SIGNATURE_BYTES + 1);
        assert_malformed(
            verify_now(&headers(&timestamp, NONCE, &long_signature), BODY),
            SIGNATURE_HEADER,
        );

        let long_nonce = "n".repeat(MAX_ID_BYTES + 1);
        assert_malformed(
            verify_now(&headers(&timestamp, &long_nonce, &signature), BODY),
            NONCE_HEADER,
        );

        let long_timestamp = "1".repeat(MAX_TIMESTAMP_DIGITS + 1);
        assert_malformed(
            verify_now(&headers(&long_timestamp, NONCE, &signature), BODY),
            TIMESTAMP_HEADER,
        );
    }

    #[test]
    fn nonce_at_length_limit_passes() {
        let timestamp = NOW.to_string();
        let nonce = "n".repeat(MAX_ID_BYTES);
        let signature = sign(SECRET, &timestamp, &nonce, BODY);
        let verified = verify_now(&headers(&timestamp, &nonce, &signature), BODY).unwrap();
        assert_eq!(verified.replay_key, Some(nonce));
    }

    #[test]
    fn malformed_timestamps_rejected() {
        let cases = [
            "-1",
            "+1736935860",
            " 1736935860",
            "1736935860 ",
            "1736935860.5",
            "1.7e9",
            "abc",
            "１７３６９３５８６０",
            "99999999999999999999",
        ];
        for timestamp in cases {
            let signature = sign(SECRET, timestamp, NONCE, BODY);
            let result = verify_now(&headers(timestamp, NONCE, &signature), BODY);
            assert_malformed(result, TIMESTAMP_HEADER);
        }
    }

    #[test]
    fn malformed_nonces_rejected() {
        let timestamp = NOW.to_string();
        for nonce in ["a.b", "with space", "tab\there", "é", "line\nbreak"] {
            let signature = sign(SECRET, &timestamp, nonce, BODY);
            let result = verify_now(&headers(&timestamp, nonce, &signature), BODY);
            assert_malformed(result, NONCE_HEADER);
        }
    }

    #[test]
    fn stale_and_future_timestamps() {
        for offset in [-301, 301, -86_400, 86_400] {
            let timestamp = (NOW + offset).to_string();
            let signature = sign(SECRET, &timestamp, NONCE, BODY);
            let headers = headers(&timestamp, NONCE, &signature);
            assert_eq!(
                verify(&headers, BODY, &current_only(), NOW, true),
                Err(Rejection::Stale {
                    timestamp: NOW + offset,
                    now: NOW
                }),
                "offset {offset}"
            );
            assert!(
                verify(&headers, BODY, &current_only(), NOW, false).is_ok(),
                "offset {offset} without freshness check"
            );
        }
    }

    #[test]
    fn timestamps_within_tolerance_pass() {
        for offset in [-300, -1, 0, 1, 300] {
            let timestamp = (NOW + offset).to_string();
            let signature = sign(SECRET, &timestamp, NONCE, BODY);
            let result = verify_now(&headers(&timestamp, NONCE, &signature), BODY);
            assert!(result.is_ok(), "offset {offset}: {result:?}");
        }
    }

    #[test]
    fn stale_forgery_reports_bad_signature() {
        let timestamp = (NOW - 3600).to_string();
        let signature = sign(b"another-secret", &timestamp, NONCE, BODY);
        let result = verify_now(&headers(&timestamp, NONCE, &signature), BODY);
        assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        assert!(matches!(
            ensure_fresh(i64::MAX, i64::MIN),
            Err(Rejection::Stale { .. })
        ));
        assert!(matches!(
            ensure_fresh(0, i64::MAX),
            Err(Rejection::Stale { .. })
        ));
        assert!(ensure_fresh(i64::MAX, i64::MAX).is_ok());
    }

    #[test]
    fn previous_secret_verifies() {
        let rotating = Secrets {
            current: Some(b"tmoney-next-secret".to_vec()),
            previous: Some(SECRET.to_vec()),
        };
        assert!(verify(&signed_headers(BODY), BODY, &rotating, NOW, true).is_ok());

        let previous_only = Secrets {
            current: None,
            previous: Some(SECRET.to_vec()),
        };
        assert!(verify(&signed_headers(BODY), BODY, &previous_only, NOW, true).is_ok());

        let neither_matches = Secrets {
            current: Some(b"tmoney-next-secret".to_vec()),
            previous: Some(OLD_SECRET.to_vec()),
        };
        assert_eq!(
            verify(&signed_headers(BODY), BODY, &neither_matches, NOW, true),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn no_secret_is_not_configured() {
        let expected = Err(Rejection::NotConfigured(Provider::Tmoney));
        let none = Secrets::default();
        assert_eq!(
            verify(&signed_headers(BODY), BODY, &none, NOW, true),
            expected
        );
        assert_eq!(verify(&[], BODY, &none, NOW, true), expected);

        let empty = Secrets {
            current: Some(Vec::new()),
            previous: Some(Vec::new()),
        };
        assert_eq!(
            verify(&signed_headers(BODY), BODY, &empty, NOW, true),
            expected
        );
    }

    #[test]
    fn unusual_json_bodies_verify_and_parse() {
        let bodies: [(&str, &[u8]); 7] = [
            (
                "unsorted keys",
                br#"{"currency":"XOF","status":"SUCCESS","amount":20000,"external_ref":"po-1"}"#,
            ),
            (
                "unicode escape",
                br#"{"external_ref":"po-\u00e9","status":"SUCCESS"}"#,
            ),
            (
                "escaped slash",
                br#"{"external_ref":"po\/1","status":"SUCCESS"}"#,
            ),
            (
                "trailing newline",
                b"{\"external_ref\":\"po-1\",\"status\":\"SUCCESS\"}\n",
            ),
            (
                "CRLF line endings",
                b"{\r\n  \"external_ref\": \"po-1\",\r\n  \"status\": \"SUCCESS\"\r\n}\r\n",
            ),
            (
                "spaces around tokens",
                b"  { \"external_ref\" : \"po-1\" , \"status\" : \"SUCCESS\" , \"amount\" : 20000 , \"currency\" : \"XOF\" }  ",
            ),
            (
                "raw UTF-8",
                "{\"external_ref\":\"po-é\",\"status\":\"SUCCESS\"}".as_bytes(),
            ),
        ];
        for (case, body) in bodies {
            assert!(verify_now(&signed_headers(body), body).is_ok(), "{case}");
            let report = Tmoney
                .parse(body)
                .unwrap_or_else(|error| panic!("{case}: {error}"));
            assert_eq!(report.status, ReportStatus::Succeeded, "{case}");
            assert!(report.external_ref.starts_with("po"), "{case}");
        }
        let escaped = Tmoney
            .parse(br#"{"external_ref":"po-\u00e9","status":"SUCCESS"}"#)
            .unwrap();
        assert_eq!(escaped.external_ref, "po-é");
        let slash = Tmoney
            .parse(br#"{"external_ref":"po\/1","status":"SUCCESS"}"#)
            .unwrap();
        assert_eq!(slash.external_ref, "po/1");
        let spaced = Tmoney.parse(bodies[5].1).unwrap();
        assert_eq!(spaced.amount_minor, Some(20000));
    }

    #[test]
    fn parse_full_body() {
        let report = Tmoney.parse(BODY).unwrap();
        assert_eq!(
            report,
            Report {
                provider: Provider::Tmoney,
                external_ref: "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f".to_owned(),
                provider_ref: Some("TX-1".to_owned()),
                status: ReportStatus::Succeeded,
                raw_status: "SUCCESS".to_owned(),
                failure_code: None,
                amount_minor: Some(20000),
                currency: Some("XOF".to_owned()),
                occurred_at: None,
            }
        );
    }

    #[test]
    fn status_mapping() {
        let cases = [
            ("SUCCESS", ReportStatus::Succeeded),
            ("FAILED", ReportStatus::Failed),
            ("PENDING", ReportStatus::Pending),
            ("REVERSED", ReportStatus::Reversed),
            ("SUCCESSFUL", ReportStatus::Pending),
            ("success", ReportStatus::Pending),
            ("CANCELLED", ReportStatus::Pending),
            ("", ReportStatus::Pending),
        ];
        for (raw_status, expected) in cases {
            let body = format!(r#"{{"external_ref":"po-1","status":"{raw_status}"}}"#);
            let report = parse(&body).unwrap();
            assert_eq!(report.status, expected, "{raw_status:?}");
            assert_eq!(report.raw_status, raw_status);
        }
    }

    #[test]
    fn unknown_status_logs_alert() {
        let output = capture_logs(|| {
            parse(&body_with(r#""reason":null"#).replace("SUCCESS", "ON_HOLD")).unwrap();
        });
        assert!(output.contains("WARN"), "{output}");
        assert!(output.contains("unknown_provider_status"), "{output}");
        assert!(output.contains("tmoney"), "{output}");
        assert!(output.contains("ON_HOLD"), "{output}");
    }

    #[test]
    fn known_status_logs_nothing() {
        let output = capture_logs(|| {
            Tmoney.parse(BODY).unwrap();
        });
        assert_eq!(output, "");
    }

    #[test]
    fn transaction_id_string_or_number() {
        let text = parse(&body_with(r#""transaction_id":"TX-9""#)).unwrap();
        assert_eq!(text.provider_ref.as_deref(), Some("TX-9"));
        let number = parse(&body_with(r#""transaction_id":123456789012345678901"#)).unwrap();
        assert_eq!(
            number.provider_ref.as_deref(),
            Some("123456789012345678901")
        );
        let null = parse(&body_with(r#""transaction_id":null"#)).unwrap();
        assert_eq!(null.provider_ref, None);
        let absent = parse(&body_with(r#""reason":null"#)).unwrap();
        assert_eq!(absent.provider_ref, None);
        assert!(parse(&body_with(r#""transaction_id":true"#)).is_err());
        assert!(parse(&body_with(r#""transaction_id":{"id":1}"#)).is_err());
    }

    #[test]
    fn amount_forms() {
        let cases = [
            (r#""amount":20000,"currency":"XOF""#, Some(20000)),
            (r#""amount":"20000","currency":"XOF""#, Some(20000)),
            (r#""amount":25.50,"currency":"EUR""#, Some(2550)),
            (r#""amount":"30.81","currency":"EUR""#, Some(3081)),
            (r#""amount":30.81,"currency":"GHS""#, Some(3081)),
            (r#""amount":20000.0,"currency":"XOF""#, Some(20000)),
            (r#""amount":null,"currency":"XOF""#, None),
            (r#""currency":"XOF""#, None),
            (r#""amount":12.345,"currency":"JPY""#, None),
        ];
        for (fields, expected) in cases {
            let report =
                parse(&body_with(fields)).unwrap_or_else(|error| panic!("{fields}: {error}"));
            assert_eq!(report.amount_minor, expected, "{fields}");
        }
        let unknown = parse(&body_with(r#""amount":5,"currency":"JPY""#)).unwrap();
        assert_eq!(unknown.currency.as_deref(), Some("JPY"));
    }

    #[test]
    fn invalid_amounts_rejected() {
        let cases = [
            r#""amount":1e3,"currency":"XOF""#,
            r#""amount":-5,"currency":"XOF""#,
            r#""amount":20000.5,"currency":"XOF""#,
            r#""amount":"20 000","currency":"XOF""#,
            r#""amount":true,"currency":"XOF""#,
            r#""amount":[1],"currency":"XOF""#,
            r#""amount":25"#,
            r#""amount":99999999999999999999,"currency":"XOF""#,
        ];
        for fields in cases {
            assert!(parse(&body_with(fields)).is_err(), "{fields} was accepted");
        }
    }

    #[test]
    fn reason_becomes_failure_code() {
        let failed = r#"{"external_ref":"po-1","status":"FAILED","reason":"INSUFFICIENT_FUNDS"}"#;
        let report = parse(failed).unwrap();
        assert_eq!(report.status, ReportStatus::Failed);
        assert_eq!(report.failure_code.as_deref(), Some("INSUFFICIENT_FUNDS"));
        assert_eq!(
            parse(&body_with(r#""reason":null"#)).unwrap().failure_code,
            None
        );
        assert!(parse(&body_with(r#""reason":{"code":"X"}"#)).is_err());
    }

    #[test]
    fn occurred_at_parsed() {
        let report = parse(&body_with(r#""occurred_at":"2025-01-15T10:31:00+01:00""#)).unwrap();
        let expected = DateTime::parse_from_rfc3339("2025-01-15T09:31:00Z").unwrap();
        assert_eq!(report.occurred_at, Some(expected.with_timezone(&Utc)));
        assert_eq!(
            parse(&body_with(r#""occurred_at":null"#))
                .unwrap()
                .occurred_at,
            None
        );

        let error = parse(&body_with(r#""occurred_at":"2025-01-15 10:31:00""#)).unwrap_err();
        assert!(error.0.contains("occurred_at"), "{error}");
    }

    #[test]
    fn unknown_fields_ignored() {
        let body = body_with(
            r#""extra":{"nested":[1,2,{"deep":null}]},"network":"TMONEY","fee":1.5e2,"flags":[true,false]"#,
        );
        assert_eq!(parse(&body).unwrap().status, ReportStatus::Succeeded);
    }

    #[test]
    fn malformed_json_rejected() {
        let cases = [
            "",
            "   ",
            "null",
            "[]",
            "\"SUCCESS\"",
            "{",
            r#"{"external_ref":"po-1","status":"SUCCESS""#,
            r#"{"external_ref":"po-1","status":"SUCCESS"} trailing"#,
            r#"{"external_ref":"po-1","status":"SUCCESS"}{}"#,
            r#"{"external_ref":"po-1","status":"SUCCESS",}"#,
            r#"{'external_ref':'po-1','status':'SUCCESS'}"#,
            "\u{feff}{\"external_ref\":\"po-1\",\"status\":\"SUCCESS\"}",
        ];
        for body in cases {
            assert!(parse(body).is_err(), "{body:?} was accepted");
        }
        assert!(
            Tmoney
                .parse(b"{\"external_ref\":\"po-\xff\",\"status\":\"SUCCESS\"}")
                .is_err()
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let missing = parse(r#"{"status":"SUCCESS"}"#).unwrap_err();
        assert!(missing.0.contains("external_ref"), "{missing}");
        let wrong_type = parse(r#"{"external_ref":"po-1","status":7}"#).unwrap_err();
        assert!(wrong_type.0.contains("status"), "{wrong_type}");
        let duplicate =
            parse(r#"{"external_ref":"po-1","status":"FAILED","status":"SUCCESS"}"#).unwrap_err();
        assert!(duplicate.0.contains("duplicate field"), "{duplicate}");
    }

    #[test]
    fn scalar_text_forms() {
        let read = |json: &str| {
            let raw: &RawValue = serde_json::from_str(json).unwrap();
            scalar_text("field", Some(raw))
        };
        assert_eq!(read(r#""a\u00e9""#).unwrap().as_deref(), Some("aé"));
        assert_eq!(read("30.810").unwrap().as_deref(), Some("30.810"));
        assert_eq!(read("-1").unwrap().as_deref(), Some("-1"));
        assert_eq!(read("null").unwrap(), None);
        assert!(read("false").is_err());
        assert!(read("{}").is_err());
        assert_eq!(scalar_text("field", None).unwrap(), None);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let body = body_with(
            r#""transaction_id":7,"amount":"25.50","currency":"EUR","reason":"R","occurred_at":"2025-01-15T10:31:00Z""#,
        );
        for end in 0..=body.len() {
            let _ = Tmoney.parse(&body.as_bytes()[..end]);
        }
        for index in 0..body.len() {
            let mut mutated = body.as_bytes().to_vec();
            mutated[index] = 0xff;
            let _ = Tmoney.parse(&mutated);
        }

        let odd_values = [
            "é".repeat(300),
            "\u{0}".to_owned(),
            "sha256=".repeat(200),
            "9".repeat(20),
        ];
        for value in &odd_values {
            for name in [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
                let headers = replaced(&signed_headers(BODY), name, value);
                assert!(verify_now(&headers, BODY).is_err(), "{name} = {value:?}");
            }
        }
    }

    /// Runs `action` with a log subscriber and returns what it wrote.
    fn capture_logs(action: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);

        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, action);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }
}
