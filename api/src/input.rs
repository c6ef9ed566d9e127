//! Parsing of request fields into validated domain values. Each failure
//! names the field and says how to fix it.

use nepxy_ledger::{Currency, Money, Msisdn, Provider};
use serde_json::Value;

use crate::error::ApiError;

/// Longest recipient name accepted.
const MAX_NAME_CHARS: usize = 100;
/// Longest payout reference accepted.
const MAX_REFERENCE_CHARS: usize = 140;

pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::validation(field, format!("{field} is required")))
}

pub fn currency(raw: &str, field: &str) -> Result<Currency, ApiError> {
    raw.parse::<Currency>()
        .map_err(|error| ApiError::validation(field, error.to_string()))
}

/// Parses an amount: a JSON integer count of the currency's minor unit,
/// greater than zero and at most `max_minor`.
pub fn amount(
    value: &Value,
    currency: Currency,
    max_minor: i64,
    field: &str,
) -> Result<Money, ApiError> {
    let unit_hint = match currency.exponent() {
        0 => format!("{currency} has no minor unit, so send whole {currency}, e.g. 5000"),
        exponent => format!(
            "{currency} has {exponent} decimal places, so send minor units, e.g. 1250 for 12.50 {currency}"
        ),
    };
    let amount_minor = match value {
        Value::Number(number) => {
            if let Some(amount_minor) = number.as_i64() {
                amount_minor
            } else if number.as_u64().is_some() {
                return Err(ApiError::validation(
                    field,
                    format!("{field} exceeds the maximum of {max_minor} minor units"),
                ));
            } else {
                return Err(ApiError::validation(
                    field,
                    format!(
                        "{field} must be an integer without a decimal point or exponent; {unit_hint}"
                    ),
                ));
            }
        }
        Value::String(_) => {
            return Err(ApiError::validation(
                field,
                format!("{field} must be a JSON number, not a string; {unit_hint}"),
            ));
        }
        _ => {
            return Err(ApiError::validation(
                field,
                format!("{field} must be a JSON integer; {unit_hint}"),
            ));
        }
    };
    Money::new(amount_minor, currency, max_minor)
        .map_err(|error| ApiError::validation(field, error.to_string()))
}

pub fn provider(raw: &str, field: &str) -> Result<Provider, ApiError> {
    raw.parse::<Provider>()
        .map_err(|error| ApiError::validation(field, error.to_string()))
}

pub fn msisdn(raw: &str, field: &str) -> Result<Msisdn, ApiError> {
    Msisdn::parse(raw).map_err(|error| {
        ApiError::validation(field, format!("{field} is not an E.164 number: {error}"))
    })
}

/// Checks that `provider` can pay `msisdn`, which came from `field`.
pub fn payable_by(provider: Provider, msisdn: &Msisdn, field: &str) -> Result<(), ApiError> {
    provider.check_recipient(msisdn).map_err(|error| {
        ApiError::validation(
            field,
            format!("{field} is invalid for provider {provider}: {error}"),
        )
    })
}

/// Optional free text: trimmed, non-empty, bounded, without control characters.
pub fn text(
    raw: Option<String>,
    max_chars: usize,
    field: &str,
) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty; omit it instead"),
        ));
    }
    if trimmed.chars().count() > max_chars {
        return Err(ApiError::validation(
            field,
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(Some(trimmed.to_owned()))
}

/// Parses an RFC 3339 time such as `2026-01-31T12:00:00Z`.
pub fn time(raw: &str, field: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|time| time.with_timezone(&chrono::Utc))
        .map_err(|_| {
            ApiError::validation(
                field,
                format!("{field} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"),
            )
        })
}

pub fn recipient_name(raw: Option<String>) -> Result<Option<String>, ApiError> {
    text(raw, MAX_NAME_CHARS, "recipient.name")
}

pub fn reference(raw: Option<String>) -> Result<Option<String>, ApiError> {
    text(raw, MAX_REFERENCE_CHARS, "reference")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn amount_rejects_every_bad_shape() {
        for bad in [
            json!(12.5),
            json!(100.0),
            json!("100"),
            json!(0),
            json!(-1),
            json!(null),
            json!(1e3),
            json!(u64::MAX),
        ] {
            let error = amount(&bad, Currency::XOF, 1_000_000, "amount").expect_err("must reject");
            assert_eq!(field_of(error), "amount", "{bad}");
        }
        assert!(amount(&json!(1_000_001), Currency::XOF, 1_000_000, "amount").is_err());
    }

    #[test]
    fn amount_accepts_integer_minor_units() {
        let money = amount(&json!(1250), Currency::EUR, 1_000_000, "amount").expect("valid");
        assert_eq!(money.amount_minor, 1250);
        assert_eq!(money.currency, Currency::EUR);
    }

    #[test]
    fn text_rejects_control_characters_and_blank() {
        assert!(text(Some("a\u{0}b".to_owned()), 10, "reference").is_err());
        assert!(text(Some("   ".to_owned()), 10, "reference").is_err());
        assert!(text(Some("x".repeat(11)), 10, "reference").is_err());
        assert_eq!(
            text(Some(" ok ".to_owned()), 10, "reference").expect("valid"),
            Some("ok".to_owned())
        );
    }
}
