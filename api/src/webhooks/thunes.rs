//! Thunes webhooks, signed the Standard Webhooks way (spec v1.0.0).
//!
//! A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: a space-separated list of `v1,<base64>` entries, each
//! the HMAC-SHA256 of `{id}.{timestamp}.{raw body}`. During a key rotation
//! the list contains one entry per key. The body is the Thunes transaction
//! object: `id`, `external_id`, `status` (a 5-digit code), `status_class`
//! (1 to 9) and amounts as JSON decimals, among many other fields.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nepxy_ledger::Provider;
use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::{Choice, ConstantTimeEq};

use super::amount::report_amount_minor;
use super::tmoney::{
    MAX_ID_BYTES, MAX_SIGNATURE_BYTES, MAX_TIMESTAMP_DIGITS, check_id_characters, configured_keys,
    ensure_fresh, hmac_sha256, invalid_body, malformed, parse_json_body, parse_rfc3339,
    parse_unix_timestamp, scalar_text, single_header,
};
use super::{
    Delivery, ParseError, ProviderAdapter, Rejection, Report, ReportStatus, Secrets, Verified,
};

const ID_HEADER: &str = "webhook-id";
const TIMESTAMP_HEADER: &str = "webhook-timestamp";
const SIGNATURE_HEADER: &str = "webhook-signature";

/// Prefix of Standard Webhooks secrets.
const SECRET_PREFIX: &str = "whsec_";

/// Thunes webhook adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thunes;

/// Decodes a configured secret (`whsec_<base64>`, or the base64 part alone)
/// into the HMAC key bytes.
///
/// The error describes the problem without the secret itself, so a caller
/// can log it after the variable name. A bad character is given by its
/// zero-based byte offset in `configured`.
pub fn decode_secret(configured: &str) -> Result<Vec<u8>, String> {
    let encoded = configured.strip_prefix(SECRET_PREFIX).unwrap_or(configured);
    if encoded.is_empty() {
        return Err("the value has no key; expected whsec_ followed by base64".to_owned());
    }
    let prefix_len = configured.len() - encoded.len();
    let problem = match STANDARD.decode(encoded) {
        Ok(key) => return Ok(key),
        Err(base64::DecodeError::InvalidByte(offset, _)) => {
            format!("invalid character at offset {}", prefix_len + offset)
        }
        Err(base64::DecodeError::InvalidLength(length)) => {
            format!("{length} base64 characters is not a valid length")
        }
        Err(base64::DecodeError::InvalidLastSymbol(offset, _)) => {
            format!("invalid last character at offset {}", prefix_len + offset)
        }
        Err(base64::DecodeError::InvalidPadding) => "invalid padding".to_owned(),
    };
    Err(format!(
        "the value is not valid base64 ({problem}); expected whsec_ followed by standard padded base64"
    ))
}

impl ProviderAdapter for Thunes {
    fn provider(&self) -> Provider {
        Provider::Thunes
    }

    /// Passes when any `v1` entry matches any configured key. Entries of other
    /// versions are ignored. A header with no `<version>,<value>` entry at all
    /// is `MalformedHeader`, while a list whose `v1` entries are missing, not
    /// base64 or not 32 bytes is `BadSignature`.
    ///
    /// The signature is checked before the timestamp, so `Stale` means that
    /// Thunes really signed the delivery.
    fn verify(
        &self,
        delivery: &Delivery<'_>,
        secrets: &Secrets,
        now: i64,
        check_freshness: bool,
    ) -> Result<Verified, Rejection> {
        let keys = configured_keys(secrets, Provider::Thunes)?;

        let id = single_header(delivery, ID_HEADER, MAX_ID_BYTES)?;
        check_id_characters(ID_HEADER, id)?;
        let timestamp_text = single_header(delivery, TIMESTAMP_HEADER, MAX_TIMESTAMP_DIGITS)?;
        let timestamp = parse_unix_timestamp(TIMESTAMP_HEADER, timestamp_text)?;
        let signature_list = single_header(delivery, SIGNATURE_HEADER, MAX_SIGNATURE_BYTES)?;
        let signatures = parse_v1_signatures(signature_list)?;

        let signed_parts: [&[u8]; 5] = [
            id.as_bytes(),
            b".",
            timestamp_text.as_bytes(),
            b".",
            delivery.body,
        ];
        let mut matched = Choice::from(0);
        for key in &keys {
            let expected = hmac_sha256(key, &signed_parts);
            for signature in &signatures {
                matched |= expected.ct_eq(signature);
            }
        }
        if !bool::from(matched) {
            return Err(Rejection::BadSignature);
        }

        if check_freshness {
            ensure_fresh(timestamp, now)?;
        }
        Ok(Verified {
            replay_key: Some(id.to_owned()),
            payout_id: None,
        })
    }

    fn parse(&self, body: &[u8]) -> Result<Report, ParseError> {
        read_report(body).map_err(|error| invalid_body(Provider::Thunes, error))
    }
}

fn read_report(body: &[u8]) -> Result<Report, ParseError> {
    let payload: ThunesTransaction<'_> = parse_json_body(body)?;

    let raw_status = scalar_text("status", Some(payload.status))?
        .ok_or_else(|| ParseError("field status is null".to_owned()))?;
    let status_class = scalar_text("status_class", Some(payload.status_class))?
        .ok_or_else(|| ParseError("field status_class is null".to_owned()))?;
    let status = map_status_class(&status_class, &raw_status);
    let failure_code = (status == ReportStatus::Failed).then(|| raw_status.clone());

    let provider_ref = scalar_text("id", payload.id)?;
    let (amount, currency) = match payload.destination {
        Some(destination) => (
            scalar_text("destination.amount", destination.amount)?,
            destination.currency,
        ),
        None => (None, None),
    };
    let amount_minor = report_amount_minor(amount.as_deref(), currency.as_deref())?;

    // NOTE: `creation_date` is when Thunes created the transaction, not when
    // its status changed. Read the status change date here instead once
    // Thunes confirms the name of that field.
    let occurred_at = match payload.creation_date.as_deref() {
        Some(text) => match parse_rfc3339("creation_date", text) {
            Ok(time) => Some(time),
            Err(error) => {
                tracing::warn!(
                    %error,
                    external_id = ?payload.external_id,
                    "Thunes report has no occurred_at because its creation_date is unreadable"
                );
                None
            }
        },
        None => None,
    };

    Ok(Report {
        provider: Provider::Thunes,
        external_ref: payload.external_id,
        provider_ref,
        status,
        raw_status,
        failure_code,
        amount_minor,
        currency,
        occurred_at,
    })
}

/// Fields of a Thunes transaction object that a report uses. Serde ignores
/// the many others.
#[derive(Deserialize)]
struct ThunesTransaction<'a> {
    /// Thunes transaction id, a number or a string.
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    external_id: String,
    /// 5-digit status code, a number or a string.
    #[serde(borrow)]
    status: &'a RawValue,
    /// Status class from 1 to 9, a number or a string.
    #[serde(borrow)]
    status_class: &'a RawValue,
    #[serde(borrow)]
    destination: Option<ThunesAmount<'a>>,
    creation_date: Option<String>,
}

/// An amount of the transaction object, in major units.
#[derive(Deserialize)]
struct ThunesAmount<'a> {
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    currency: Option<String>,
}

/// Maps a status class to a report status. Classes 3 (rejected), 4
/// (cancelled) and 9 (declined) are failures, 7 (completed) is a success and
/// 8 a reversal. Classes 1, 2, 5 and 6 (created, confirmed, submitted,
/// available for pickup) are still pending.
fn map_status_class(status_class: &str, raw_status: &str) -> ReportStatus {
    match status_class {
        "7" => ReportStatus::Succeeded,
        "3" | "4" | "9" => ReportStatus::Failed,
        "8" => ReportStatus::Reversed,
        "1" | "2" | "5" | "6" => ReportStatus::Pending,
        _ => {
            tracing::warn!(
                alert = "unknown_provider_status",
                provider = %Provider::Thunes,
                ?status_class,
                ?raw_status,
                "provider reported an unknown status class, so the report is treated as pending"
            );
            ReportStatus::Pending
        }
    }
}

/// Decodes the `v1` entries of a signature list into 32-byte MACs, skipping
/// entries of other versions and `v1` entries that do not decode.
fn parse_v1_signatures(list: &str) -> Result<Vec<[u8; 32]>, Rejection> {
    let mut well_formed_entries = 0;
    let mut signatures = Vec::new();
    for entry in list.split(' ').filter(|entry| !entry.is_empty()) {
        let Some((version, encoded)) = entry.split_once(',') else {
            continue;
        };
        if version.is_empty() || encoded.is_empty() {
            continue;
        }
        well_formed_entries += 1;
        if version != "v1" {
            continue;
        }
        if let Ok(decoded) = STANDARD.decode(encoded)
            && let Ok(signature) = <[u8; 32]>::try_from(decoded.as_slice())
        {
            signatures.push(signature);
        }
    }
    if well_formed_entries == 0 {
        return Err(malformed(
            SIGNATURE_HEADER,
            "expected space-separated entries of the form v1,<base64>".to_owned(),
        ));
    }
    Ok(signatures)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use hmac::{KeyInit, Mac};

    use super::*;
    use crate::webhooks::tmoney::HmacSha256;

    const KEY: &[u8] = b"thunes-current-key-0123456789ab";
    const OLD_KEY: &[u8] = b"thunes-previous-key-0123456789a";
    const NOW: i64 = 1_736_935_860;
    const EVENT_ID: &str = "msg_2mQx7RkT9vLp";
    const BODY: &[u8] = br#"{"id":5100231,"status":"70000","status_message":"COMPLETED","status_class":"7","external_id":"0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f","destination":{"currency":"XOF","amount":20000}}"#;

    /// A transaction object with many fields that the adapter does not read.
    const FULL_OBJECT: &str = r#"{
  "id": 7300915,
  "status": 30200,
  "status_message": "REJECTED-INVALID-BENEFICIARY",
  "status_class": 3,
  "status_class_message": "REJECTED",
  "external_id": "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f",
  "external_code": null,
  "transaction_type": "C2C",
  "payer_transaction_reference": null,
  "creation_date": "2025-02-03T14:05:09Z",
  "expiration_date": "2025-02-04T14:05:09Z",
  "credit_party_identifier": {"msisdn": "+22890000000"},
  "source": {"country_iso_code": "FRA", "currency": "EUR", "amount": 45.73},
  "destination": {"currency": "XOF", "amount": 30000},
  "payer": {"id": 812, "name": "Wallet TG", "currency": "XOF", "country_iso_code": "TGO"},
  "sender": {"firstname": "A", "lastname": "B", "date_of_birth": "1980-01-01"},
  "beneficiary": {"firstname": "C", "lastname": "D"},
  "fee": {"currency": "EUR", "amount": 1.5},
  "wholesale_fx_rate": 655.957,
  "purpose_of_remittance": "FAMILY_SUPPORT",
  "callback_url": "https:\/\/callbacks.example.test\/v1\/webhooks\/thunes",
  "documents": []
}"#;

    fn current_only() -> Secrets {
        Secrets {
            current: Some(KEY.to_vec()),
            previous: None,
        }
    }

    /// Signs with the `hmac` crate directly, not through the shared helper.
    fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut signed = format!("{id}.{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(&signed);
        STANDARD.encode(mac.finalize().into_bytes())
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> Vec<(String, String)> {
        vec![
            (ID_HEADER.to_owned(), id.to_owned()),
            (TIMESTAMP_HEADER.to_owned(), timestamp.to_owned()),
            (SIGNATURE_HEADER.to_owned(), signature.to_owned()),
        ]
    }

    fn signed_headers(body: &[u8]) -> Vec<(String, String)> {
        let timestamp = NOW.to_string();
        let signature = format!("v1,{}", sign(KEY, EVENT_ID, &timestamp, body));
        headers(EVENT_ID, &timestamp, &signature)
    }

    fn headers_with_list(list: &str) -> Vec<(String, String)> {
        headers(EVENT_ID, &NOW.to_string(), list)
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
        Thunes.verify(&delivery, secrets, now, check_freshness)
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
        Thunes.parse(body.as_bytes())
    }

    fn body_with(status: &str, status_class: &str, extra: &str) -> String {
        format!(
            r#"{{"id":1,"external_id":"po-1","status":{status},"status_class":{status_class}{extra}}}"#
        )
    }

    #[test]
    fn decode_secret_with_prefix() {
        let key = b"0123456789abcdef0123456789abcdef";
        let configured = format!("whsec_{}", STANDARD.encode(key));
        assert_eq!(decode_secret(&configured).unwrap(), key);
    }

    #[test]
    fn decode_secret_without_prefix() {
        let key = [0_u8, 1, 2, 250, 251, 252, 253, 254, 255];
        assert_eq!(decode_secret(&STANDARD.encode(key)).unwrap(), key);
    }

    #[test]
    fn decode_secret_rejects_invalid_base64() {
        let cases = [
            "whsec_not*base64",
            "whsec_abc",
            "whsec_c2VjcmV0IQ=",
            "whsec_c2VjcmV0IQ==\n",
            "whsec_c2VjcmV0IQ",
            "whsec_c2VjcmV0IR==",
        ];
        for configured in cases {
            let message = decode_secret(configured).unwrap_err();
            assert!(
                message.contains("not valid base64"),
                "{configured:?}: {message}"
            );
            let encoded = configured.trim_start_matches(SECRET_PREFIX);
            assert!(
                !message.contains(encoded.trim_end()),
                "{message} repeats the secret"
            );
        }
        assert_eq!(decode_secret("whsec_c2VjcmV0IQ==").unwrap(), b"secret!");
    }

    #[test]
    fn decode_secret_rejects_empty() {
        for configured in ["", "whsec_"] {
            let message = decode_secret(configured).unwrap_err();
            assert!(message.contains("no key"), "{configured:?}: {message}");
        }
    }

    #[test]
    fn decode_secret_error_gives_offset() {
        let message = decode_secret("whsec_c2Vj*mV0IQ==").unwrap_err();
        assert!(message.contains("offset 10"), "{message}");
        let message = decode_secret("c2Vj*mV0IQ==").unwrap_err();
        assert!(message.contains("offset 4"), "{message}");
    }

    #[test]
    fn decoded_secret_verifies() {
        let configured = format!("whsec_{}", STANDARD.encode(KEY));
        let secrets = Secrets {
            current: Some(decode_secret(&configured).unwrap()),
            previous: None,
        };
        assert!(verify(&signed_headers(BODY), BODY, &secrets, NOW, true).is_ok());

        let undecoded = Secrets {
            current: Some(configured.into_bytes()),
            previous: None,
        };
        assert_eq!(
            verify(&signed_headers(BODY), BODY, &undecoded, NOW, true),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn valid_signature_passes() {
        let verified = verify_now(&signed_headers(BODY), BODY).unwrap();
        assert_eq!(verified.replay_key.as_deref(), Some(EVENT_ID));
        assert_eq!(verified.payout_id, None);
    }

    #[test]
    fn wrong_secret_rejected() {
        let signature = format!(
            "v1,{}",
            sign(b"another-key", EVENT_ID, &NOW.to_string(), BODY)
        );
        assert_eq!(
            verify_now(&headers_with_list(&signature), BODY),
            Err(Rejection::BadSignature)
        );
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
    fn signature_bound_to_id_and_timestamp() {
        let headers = signed_headers(BODY);
        let other_id = replaced(&headers, ID_HEADER, "msg_other");
        assert_eq!(verify_now(&other_id, BODY), Err(Rejection::BadSignature));
        let other_timestamp = replaced(&headers, TIMESTAMP_HEADER, &(NOW - 1).to_string());
        assert_eq!(
            verify_now(&other_timestamp, BODY),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn missing_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let result = verify_now(&without(&headers, name), BODY);
            assert_eq!(result, Err(Rejection::MissingHeader(name)), "{name}");
        }
    }

    #[test]
    fn empty_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            assert_malformed(verify_now(&replaced(&headers, name, ""), BODY), name);
        }
    }

    #[test]
    fn duplicated_headers_rejected() {
        let headers = signed_headers(BODY);
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut duplicated = headers.clone();
            let original = headers.iter().find(|(header, _)| header == name).unwrap();
            duplicated.push(original.clone());
            assert_malformed(verify_now(&duplicated, BODY), name);
        }
    }

    #[test]
    fn overlong_headers_rejected() {
        let timestamp = NOW.to_string();
        let valid = format!("v1,{}", sign(KEY, EVENT_ID, &timestamp, BODY));

        let long_list = format!("{valid} {}", "v2,AAAA ".repeat(200));
        assert!(long_list.len() > MAX_SIGNATURE_BYTES);
        assert_malformed(
            verify_now(&headers_with_list(&long_list), BODY),
            SIGNATURE_HEADER,
        );

        let long_id = "m".repeat(MAX_ID_BYTES + 1);
        assert_malformed(
            verify_now(&headers(&long_id, &timestamp, &valid), BODY),
            ID_HEADER,
        );

        let long_timestamp = "1".repeat(MAX_TIMESTAMP_DIGITS + 1);
        assert_malformed(
            verify_now(&headers(EVENT_ID, &long_timestamp, &valid), BODY),
            TIMESTAMP_HEADER,
        );
    }

    #[test]
    fn malformed_ids_and_timestamps_rejected() {
        let timestamp = NOW.to_string();
        for id in ["msg.1", "msg 1", "msg_é", "msg\t1"] {
            let signature = format!("v1,{}", sign(KEY, id, &timestamp, BODY));
            assert_malformed(
                verify_now(&headers(id, &timestamp, &signature), BODY),
                ID_HEADER,
            );
        }
        for timestamp in [
            "-1",
            "1736935860.0",
            "1736935860 ",
            "0x10",
            "99999999999999999999",
        ] {
            let signature = format!("v1,{}", sign(KEY, EVENT_ID, timestamp, BODY));
            assert_malformed(
                verify_now(&headers(EVENT_ID, timestamp, &signature), BODY),
                TIMESTAMP_HEADER,
            );
        }
    }

    #[test]
    fn second_entry_matches() {
        let timestamp = NOW.to_string();
        let old = sign(OLD_KEY, EVENT_ID, &timestamp, BODY);
        let current = sign(KEY, EVENT_ID, &timestamp, BODY);
        let list = format!("v1,{old} v1,{current}");
        assert!(verify_now(&headers_with_list(&list), BODY).is_ok());
        let reversed = format!("v1,{current} v1,{old}");
        assert!(verify_now(&headers_with_list(&reversed), BODY).is_ok());
    }

    #[test]
    fn repeated_spaces_between_entries_pass() {
        let current = sign(KEY, EVENT_ID, &NOW.to_string(), BODY);
        let list = format!("  v2,AAAA   v1,{current}  ");
        assert!(verify_now(&headers_with_list(&list), BODY).is_ok());
    }

    #[test]
    fn other_versions_ignored() {
        let current = sign(KEY, EVENT_ID, &NOW.to_string(), BODY);

        let with_unknown = format!("v2,Zm9vYmFy v1a,{current} v1,{current}");
        assert!(verify_now(&headers_with_list(&with_unknown), BODY).is_ok());

        for list in [
            format!("v2,{current}"),
            format!("v1a,{current}"),
            format!("V1,{current}"),
        ] {
            assert_eq!(
                verify_now(&headers_with_list(&list), BODY),
                Err(Rejection::BadSignature),
                "{list}"
            );
        }
    }

    #[test]
    fn undecodable_v1_entries() {
        let current = sign(KEY, EVENT_ID, &NOW.to_string(), BODY);
        let short = STANDARD.encode([7_u8; 31]);
        let long = STANDARD.encode([7_u8; 33]);
        let unpadded = current.trim_end_matches('=').to_owned();
        assert_ne!(unpadded, current);
        for list in [
            "v1,!!!!".to_owned(),
            format!("v1,{short}"),
            format!("v1,{long}"),
            format!("v1,{unpadded}"),
        ] {
            assert_eq!(
                verify_now(&headers_with_list(&list), BODY),
                Err(Rejection::BadSignature),
                "{list}"
            );
        }

        let mixed = format!("v1,!!!! v1,{short} v1,{current}");
        assert!(verify_now(&headers_with_list(&mixed), BODY).is_ok());
    }

    #[test]
    fn unparseable_lists_malformed() {
        let current = sign(KEY, EVENT_ID, &NOW.to_string(), BODY);
        for list in [
            "garbage".to_owned(),
            "   ".to_owned(),
            "v1".to_owned(),
            "v1,".to_owned(),
            ",abc".to_owned(),
            current.clone(),
            format!("v1={current}"),
        ] {
            assert_malformed(
                verify_now(&headers_with_list(&list), BODY),
                SIGNATURE_HEADER,
            );
        }
    }

    #[test]
    fn stripe_format_rejected() {
        // `t=…,v1=…` contains a comma, so it reads as one entry of the unknown
        // version `t=…`, which is ignored.
        let current = sign(KEY, EVENT_ID, &NOW.to_string(), BODY);
        let list = format!("t={NOW},v1={current}");
        assert_eq!(
            verify_now(&headers_with_list(&list), BODY),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps() {
        for offset in [-301, 301, -604_800, 604_800] {
            let timestamp = (NOW + offset).to_string();
            let signature = format!("v1,{}", sign(KEY, EVENT_ID, &timestamp, BODY));
            let headers = headers(EVENT_ID, &timestamp, &signature);
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
        for offset in [-300, 300] {
            let timestamp = (NOW + offset).to_string();
            let signature = format!("v1,{}", sign(KEY, EVENT_ID, &timestamp, BODY));
            assert!(verify_now(&headers(EVENT_ID, &timestamp, &signature), BODY).is_ok());
        }
    }

    #[test]
    fn previous_secret_verifies() {
        let rotating = Secrets {
            current: Some(b"thunes-next-key".to_vec()),
            previous: Some(KEY.to_vec()),
        };
        assert!(verify(&signed_headers(BODY), BODY, &rotating, NOW, true).is_ok());

        let previous_only = Secrets {
            current: None,
            previous: Some(KEY.to_vec()),
        };
        assert!(verify(&signed_headers(BODY), BODY, &previous_only, NOW, true).is_ok());
    }

    #[test]
    fn no_secret_is_not_configured() {
        let expected = Err(Rejection::NotConfigured(Provider::Thunes));
        assert_eq!(
            verify(&signed_headers(BODY), BODY, &Secrets::default(), NOW, true),
            expected
        );
        let empty = Secrets {
            current: Some(Vec::new()),
            previous: None,
        };
        assert_eq!(verify(&[], BODY, &empty, NOW, true), expected);
    }

    #[test]
    fn unusual_json_bodies_verify_and_parse() {
        let bodies: [(&str, &[u8]); 6] = [
            (
                "unsorted keys",
                br#"{"status_class":7,"external_id":"po-1","status":70000}"#,
            ),
            (
                "unicode escape",
                br#"{"external_id":"po-\u00e9","status":70000,"status_class":7}"#,
            ),
            (
                "escaped slash",
                br#"{"external_id":"po\/1","status":70000,"status_class":7}"#,
            ),
            (
                "trailing newline",
                b"{\"external_id\":\"po-1\",\"status\":70000,\"status_class\":7}\n",
            ),
            (
                "CRLF line endings",
                b"{\r\n\"external_id\": \"po-1\",\r\n\"status\": 70000,\r\n\"status_class\": 7\r\n}\r\n",
            ),
            ("full object", FULL_OBJECT.as_bytes()),
        ];
        for (case, body) in bodies {
            assert!(verify_now(&signed_headers(body), body).is_ok(), "{case}");
            let report = Thunes
                .parse(body)
                .unwrap_or_else(|error| panic!("{case}: {error}"));
            assert!(
                report.external_ref.starts_with("po") || case == "full object",
                "{case}"
            );
        }
        let escaped = Thunes.parse(bodies[1].1).unwrap();
        assert_eq!(escaped.external_ref, "po-é");
        let slash = Thunes.parse(bodies[2].1).unwrap();
        assert_eq!(slash.external_ref, "po/1");
    }

    #[test]
    fn parse_completed_body() {
        let report = Thunes.parse(BODY).unwrap();
        assert_eq!(
            report,
            Report {
                provider: Provider::Thunes,
                external_ref: "0194b3f2-7c1a-7d2e-9f00-0a1b2c3d4e5f".to_owned(),
                provider_ref: Some("5100231".to_owned()),
                status: ReportStatus::Succeeded,
                raw_status: "70000".to_owned(),
                failure_code: None,
                amount_minor: Some(20000),
                currency: Some("XOF".to_owned()),
                occurred_at: None,
            }
        );
    }

    #[test]
    fn parse_full_rejected_object() {
        let report = parse(FULL_OBJECT).unwrap();
        assert_eq!(report.status, ReportStatus::Failed);
        assert_eq!(report.raw_status, "30200");
        assert_eq!(report.failure_code.as_deref(), Some("30200"));
        assert_eq!(report.provider_ref.as_deref(), Some("7300915"));
        assert_eq!(report.amount_minor, Some(30000));
        assert_eq!(report.currency.as_deref(), Some("XOF"));
        let created = DateTime::parse_from_rfc3339("2025-02-03T14:05:09Z").unwrap();
        assert_eq!(report.occurred_at, Some(created.with_timezone(&Utc)));
    }

    #[test]
    fn status_class_mapping() {
        let cases = [
            ("1", "10000", ReportStatus::Pending, None),
            ("2", "20000", ReportStatus::Pending, None),
            ("3", "30200", ReportStatus::Failed, Some("30200")),
            ("4", "40000", ReportStatus::Failed, Some("40000")),
            ("5", "50000", ReportStatus::Pending, None),
            ("6", "60000", ReportStatus::Pending, None),
            ("7", "70000", ReportStatus::Succeeded, None),
            ("8", "80000", ReportStatus::Reversed, None),
            ("9", "90201", ReportStatus::Failed, Some("90201")),
        ];
        for (status_class, code, expected, failure_code) in cases {
            let forms = [
                body_with(code, status_class, ""),
                body_with(&format!("\"{code}\""), &format!("\"{status_class}\""), ""),
            ];
            for body in forms {
                let report = parse(&body).unwrap_or_else(|error| panic!("{body}: {error}"));
                assert_eq!(report.status, expected, "{body}");
                assert_eq!(report.raw_status, code, "{body}");
                assert_eq!(report.failure_code.as_deref(), failure_code, "{body}");
            }
        }
    }

    #[test]
    fn unknown_status_class_is_pending() {
        for status_class in ["0", "10", "7.0", "\"07\"", "\"COMPLETED\"", "\"\"", "-7"] {
            let report = parse(&body_with("70000", status_class, "")).unwrap();
            assert_eq!(report.status, ReportStatus::Pending, "{status_class}");
            assert_eq!(report.failure_code, None, "{status_class}");
        }
    }

    #[test]
    fn status_fields_required() {
        let missing_class = parse(r#"{"external_id":"po-1","status":70000}"#).unwrap_err();
        assert!(missing_class.0.contains("status_class"), "{missing_class}");
        let missing_status = parse(r#"{"external_id":"po-1","status_class":7}"#).unwrap_err();
        assert!(missing_status.0.contains("status"), "{missing_status}");
        let null_class = parse(&body_with("70000", "null", "")).unwrap_err();
        assert!(null_class.0.contains("status_class"), "{null_class}");
        assert!(parse(&body_with("true", "7", "")).is_err());
        assert!(parse(&body_with("70000", "[7]", "")).is_err());
        assert!(parse(r#"{"status":70000,"status_class":7}"#).is_err());
    }

    #[test]
    fn id_string_number_or_absent() {
        let string_id =
            parse(&body_with("70000", "7", "").replace(r#""id":1"#, r#""id":"T-88""#)).unwrap();
        assert_eq!(string_id.provider_ref.as_deref(), Some("T-88"));
        let number_id = parse(&body_with("70000", "7", "")).unwrap();
        assert_eq!(number_id.provider_ref.as_deref(), Some("1"));
        let absent = parse(r#"{"external_id":"po-1","status":70000,"status_class":7}"#).unwrap();
        assert_eq!(absent.provider_ref, None);
    }

    #[test]
    fn destination_amount_forms() {
        let cases = [
            (
                r#","destination":{"currency":"XOF","amount":20000}"#,
                Some(20000),
            ),
            (
                r#","destination":{"currency":"EUR","amount":30.81}"#,
                Some(3081),
            ),
            (
                r#","destination":{"currency":"EUR","amount":"30.81"}"#,
                Some(3081),
            ),
            (
                r#","destination":{"currency":"USD","amount":10.5}"#,
                Some(1050),
            ),
            (
                r#","destination":{"currency":"XOF","amount":20000.00}"#,
                Some(20000),
            ),
            (r#","destination":{"currency":"XOF","amount":null}"#, None),
            (r#","destination":{"currency":"XOF"}"#, None),
            (r#","destination":{"currency":"JPY","amount":12.345}"#, None),
            ("", None),
        ];
        for (extra, expected) in cases {
            let report = parse(&body_with("70000", "7", extra))
                .unwrap_or_else(|error| panic!("{extra}: {error}"));
            assert_eq!(report.amount_minor, expected, "{extra}");
        }
    }

    #[test]
    fn source_amount_not_used() {
        let extra = r#","source":{"currency":"EUR","amount":30.81},"destination":{"currency":"XOF","amount":20000}"#;
        let report = parse(&body_with("70000", "7", extra)).unwrap();
        assert_eq!(report.amount_minor, Some(20000));
        assert_eq!(report.currency.as_deref(), Some("XOF"));
    }

    #[test]
    fn invalid_amounts_rejected() {
        for extra in [
            r#","destination":{"currency":"XOF","amount":20000.5}"#,
            r#","destination":{"currency":"XOF","amount":2e4}"#,
            r#","destination":{"currency":"XOF","amount":-20000}"#,
            r#","destination":{"currency":"XOF","amount":false}"#,
            r#","destination":{"amount":20000}"#,
            r#","destination":"20000 XOF""#,
        ] {
            assert!(
                parse(&body_with("70000", "7", extra)).is_err(),
                "{extra} was accepted"
            );
        }
    }

    #[test]
    fn unparseable_creation_date_ignored() {
        for date in [r#""15/01/2025""#, r#""2025-01-15 09:19:15""#, "null"] {
            let extra = format!(r#","creation_date":{date}"#);
            let report = parse(&body_with("70000", "7", &extra)).unwrap();
            assert_eq!(report.occurred_at, None, "{date}");
        }
    }

    #[test]
    fn malformed_json_rejected() {
        for body in [
            "",
            "{",
            "[]",
            "7",
            r#"{"external_id":"po-1","status":70000,"status_class":7"#,
            "{\"external_id\":\"po-1\",\"status\":70000,\"status_class\":7} x",
        ] {
            let error = parse(body).unwrap_err();
            assert!(
                error.0.starts_with("thunes webhook body is invalid"),
                "{error}"
            );
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let body = FULL_OBJECT.as_bytes();
        for end in 0..=body.len() {
            let _ = Thunes.parse(&body[..end]);
        }
        for index in 0..body.len() {
            let mut mutated = body.to_vec();
            mutated[index] = b'"';
            let _ = Thunes.parse(&mutated);
        }
        for list in ["v1,", ",", ",,,", "v1,,,", "é,é", "v1,é", "\u{0}"] {
            let _ = verify_now(&headers_with_list(list), BODY);
        }
    }
}
