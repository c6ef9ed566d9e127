//! Properties of the input parsers, shared by the cargo-fuzz targets in
//! `fuzz/` and by the end-to-end test that runs them over the committed
//! corpus. Each check takes the raw fuzz input and panics when a property
//! fails. An input that the parser rejects cleanly passes.
//!
//! The signature checks read their input as lines: the header values one
//! per line, in the order the check names, and the rest is the body. A
//! missing line is a missing header.

use nepxy_api::webhooks::{self, Delivery, Rejection, Secrets, Verified};
use nepxy_ledger::Provider;
use uuid::Uuid;

use crate::{
    TEST_MOMO_SECRET, TEST_THUNES_KEY, TEST_TMONEY_SECRET, thunes_signature, tmoney_signature,
};

/// Maximum payout amount the payout body check allows, in minor units: the
/// service's default MAX_AMOUNT_MINOR.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000;
/// Server time of the signature checks, in Unix seconds. A fixed value keeps
/// each input's result the same on every run.
const NOW: i64 = 1_750_000_000;

/// A fuzz target: its name, which is also its corpus directory under
/// `fuzz/corpus/`, its check, and whether the parser accepts an input. The
/// corpus test requires every seed whose file name starts with `valid` to
/// be accepted, so the seeds keep reaching past the first rejection.
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
    pub accepts: fn(&[u8]) -> bool,
}

/// Every fuzz target; `fuzz/Cargo.toml` has a binary of the same name for each.
pub const TARGETS: [Target; 7] = [
    Target {
        name: "payout_body",
        check: payout_body,
        accepts: |data| {
            nepxy_api::routes::payouts::parse_payout_body(data, MAX_AMOUNT_MINOR).is_ok()
        },
    },
    Target {
        name: "tmoney_payload",
        check: tmoney_payload,
        accepts: |data| webhooks::adapter(Provider::Tmoney).parse(data).is_ok(),
    },
    Target {
        name: "thunes_payload",
        check: thunes_payload,
        accepts: |data| webhooks::adapter(Provider::Thunes).parse(data).is_ok(),
    },
    Target {
        name: "momo_payload",
        check: momo_payload,
        accepts: |data| webhooks::adapter(Provider::Momo).parse(data).is_ok(),
    },
    Target {
        name: "tmoney_signature",
        check: tmoney_signature_headers,
        accepts: |data| verify_lines(Provider::Tmoney, data).is_ok(),
    },
    Target {
        name: "thunes_signature",
        check: thunes_signature_headers,
        accepts: |data| verify_lines(Provider::Thunes, data).is_ok(),
    },
    Target {
        name: "momo_callback_token",
        check: momo_callback_token,
        accepts: |data| verify_token(data).is_ok(),
    },
];

/// Parses a POST /v1/payouts body. An accepted body has an amount from 1 to
/// the maximum and a recipient number in E.164 form.
pub fn payout_body(data: &[u8]) {
    let Ok(payout) = nepxy_api::routes::payouts::parse_payout_body(data, MAX_AMOUNT_MINOR) else {
        return;
    };
    let amount = payout.money.amount_minor;
    assert!(
        (1..=MAX_AMOUNT_MINOR).contains(&amount),
        "accepted amount {amount} is outside 1..={MAX_AMOUNT_MINOR}"
    );
    let msisdn = payout.recipient.msisdn.as_str();
    assert!(
        msisdn.starts_with('+') && msisdn[1..].bytes().all(|byte| byte.is_ascii_digit()),
        "accepted MSISDN {msisdn:?} is not in E.164 form"
    );
}

pub fn tmoney_payload(data: &[u8]) {
    payload(Provider::Tmoney, data);
}

pub fn thunes_payload(data: &[u8]) {
    payload(Provider::Thunes, data);
}

pub fn momo_payload(data: &[u8]) {
    payload(Provider::Momo, data);
}

/// Parses a webhook body twice. The result is the same both times, and an
/// accepted report names the provider and has a currency for its amount.
fn payload(provider: Provider, data: &[u8]) {
    let adapter = webhooks::adapter(provider);
    let first = adapter.parse(data);
    assert_eq!(
        first,
        adapter.parse(data),
        "{provider}: parsing is repeatable"
    );
    let Ok(report) = first else {
        return;
    };
    assert_eq!(report.provider, provider, "report provider");
    if report.amount_minor.is_some() {
        assert!(
            report.currency.is_some(),
            "{provider}: report has an amount without a currency: {report:?}"
        );
    }
}

/// Splits `data` into `count` header values and the body.
fn split_fields(data: &[u8], count: usize) -> (Vec<String>, &[u8]) {
    let mut fields = Vec::new();
    let mut rest = data;
    while fields.len() < count {
        let Some(end) = rest.iter().position(|byte| *byte == b'\n') else {
            if !rest.is_empty() {
                fields.push(String::from_utf8_lossy(rest).into_owned());
            }
            return (fields, &[]);
        };
        fields.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    (fields, rest)
}

/// Pairs header names with the values that are present.
fn named_headers(names: &[&str], values: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// Header names of the TMoney signature check, in input order.
const TMONEY_HEADERS: [&str; 3] = ["x-timestamp", "x-nonce", "x-signature"];
/// Header names of the Thunes signature check, in input order.
const THUNES_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

fn secrets(key: &[u8]) -> Secrets {
    Secrets {
        current: Some(key.to_vec()),
        previous: None,
    }
}

/// Verifies a TMoney or Thunes delivery with the given header values.
fn verify_headers(
    provider: Provider,
    values: &[String],
    body: &[u8],
) -> Result<Verified, Rejection> {
    let (names, key) = match provider {
        Provider::Tmoney => (TMONEY_HEADERS, TEST_TMONEY_SECRET.as_bytes()),
        Provider::Thunes => (THUNES_HEADERS, TEST_THUNES_KEY),
        Provider::Momo => panic!("MoMo callbacks carry a token, not signature headers"),
    };
    let headers = named_headers(&names, values);
    let delivery = Delivery {
        headers: &headers,
        body,
        path_token: None,
    };
    webhooks::adapter(provider).verify(&delivery, &secrets(key), NOW, true)
}

/// Verifies the TMoney or Thunes delivery that `data` describes as lines.
fn verify_lines(provider: Provider, data: &[u8]) -> Result<Verified, Rejection> {
    let (values, body) = split_fields(data, 3);
    verify_headers(provider, &values, body)
}

/// Verifies `token` as the path token of a MoMo callback.
fn verify_token(token: &[u8]) -> Result<Verified, Rejection> {
    let token = String::from_utf8_lossy(token);
    let delivery = Delivery {
        headers: &[],
        body: b"{}",
        path_token: Some(&token),
    };
    webhooks::adapter(Provider::Momo).verify(
        &delivery,
        &secrets(TEST_MOMO_SECRET.as_bytes()),
        NOW,
        true,
    )
}

/// Input lines: X-Timestamp, X-Nonce, X-Signature, then the body.
///
/// A delivery passes only when its signature is the HMAC of its own
/// timestamp, nonce and body, and the correct signature is never rejected as
/// a bad one, whatever the other headers contain.
pub fn tmoney_signature_headers(data: &[u8]) {
    let (values, body) = split_fields(data, TMONEY_HEADERS.len());
    let result = verify_headers(Provider::Tmoney, &values, body);

    let [timestamp, nonce, ..] = values.as_slice() else {
        assert!(result.is_err(), "a delivery without headers passed");
        return;
    };
    let expected = tmoney_signature(TEST_TMONEY_SECRET.as_bytes(), timestamp, nonce, body);
    if result.is_ok() {
        let signature = values.get(2).map(String::as_str).unwrap_or_default();
        let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
        assert!(
            hex.eq_ignore_ascii_case(&expected),
            "signature {signature:?} passed but the HMAC is {expected}"
        );
    }

    let signed = [timestamp.clone(), nonce.clone(), expected];
    assert_ne!(
        verify_headers(Provider::Tmoney, &signed, body),
        Err(Rejection::BadSignature),
        "the correct signature was rejected"
    );
}

/// Input lines: webhook-id, webhook-timestamp, webhook-signature, then the
/// body.
///
/// A delivery passes only when one `v1` entry of its signature list is the
/// HMAC of its id, timestamp and body, and a list with the correct entry is
/// never rejected as a bad signature.
pub fn thunes_signature_headers(data: &[u8]) {
    let (values, body) = split_fields(data, THUNES_HEADERS.len());
    let result = verify_headers(Provider::Thunes, &values, body);

    let [id, timestamp, ..] = values.as_slice() else {
        assert!(result.is_err(), "a delivery without headers passed");
        return;
    };
    let expected = format!(
        "v1,{}",
        thunes_signature(TEST_THUNES_KEY, id, timestamp, body)
    );
    if result.is_ok() {
        let list = values.get(2).map(String::as_str).unwrap_or_default();
        assert!(
            list.split(' ').any(|entry| entry == expected),
            "signature list {list:?} passed without the entry {expected}"
        );
    }

    let signed = [id.clone(), timestamp.clone(), expected];
    assert_ne!(
        verify_headers(Provider::Thunes, &signed, body),
        Err(Rejection::BadSignature),
        "the correct signature was rejected"
    );
}

/// Input: a MoMo callback token, the last path segment of the callback URL.
///
/// A token passes only when it is the token of the payout it names, and the
/// token built for a payout id taken from the input always passes.
pub fn momo_callback_token(data: &[u8]) {
    if let Ok(verified) = verify_token(data) {
        let payout_id = verified.payout_id.expect("a verified token names a payout");
        assert_eq!(
            String::from_utf8_lossy(data),
            webhooks::momo::callback_token(TEST_MOMO_SECRET.as_bytes(), payout_id),
            "token passed but is not the payout's token"
        );
    }

    let mut id_bytes = [0_u8; 16];
    for (target, byte) in id_bytes.iter_mut().zip(data) {
        *target = *byte;
    }
    let payout_id = Uuid::from_bytes(id_bytes);
    let token = webhooks::momo::callback_token(TEST_MOMO_SECRET.as_bytes(), payout_id);
    let verified = verify_token(token.as_bytes()).unwrap_or_else(|rejection| {
        panic!("token of payout {payout_id} was rejected: {rejection}")
    });
    assert_eq!(
        verified.payout_id,
        Some(payout_id),
        "token names its payout"
    );
}
