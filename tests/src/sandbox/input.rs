//! Request reading shared by the provider endpoints: credentials, JSON
//! bodies, amounts, currencies and phone numbers.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// Minimum and maximum number of digits in a phone number (E.164 allows 15).
const MIN_PHONE_DIGITS: usize = 5;
const MAX_PHONE_DIGITS: usize = 15;

/// Returns the value of a header when it is present, valid text and not blank.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

/// Returns the token of `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = header_text(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Returns whether `Authorization: Basic <base64 of user:password>` is
/// present with a non-empty user and password. The sandbox accepts any such
/// pair.
pub fn has_basic_credentials(headers: &HeaderMap) -> bool {
    let Some((scheme, encoded)) =
        header_text(headers, AUTHORIZATION.as_str()).and_then(|value| value.split_once(' '))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(user, password)| !user.is_empty() && !password.is_empty())
}

/// Parses a JSON body. The error text names the problem for the caller.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|error| format!("the request body is invalid JSON for this endpoint: {error}"))
}

/// Returns the decimal text of a positive amount given as a JSON number or
/// string, such as `2500` or `"12.50"`. Signs, exponents and zero are
/// rejected.
pub fn decimal_amount(raw: &RawValue) -> Result<String, String> {
    let text = raw.get();
    let digits = match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => inner,
        None => text,
    };
    validate_decimal(digits).map(|()| digits.to_owned())
}

/// Checks that `text` is a positive decimal: digits with an optional
/// fraction after one `.`.
pub fn validate_decimal(text: &str) -> Result<(), String> {
    let (integer, fraction) = match text.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (text, None),
    };
    let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !is_digits(integer) || !fraction.is_none_or(is_digits) {
        return Err(format!(
            "amount {text:?} is invalid; expected digits with an optional decimal point, such as 2500 or 12.50"
        ));
    }
    if !text.bytes().any(|byte| (b'1'..=b'9').contains(&byte)) {
        return Err(format!(
            "amount {text:?} is invalid; it must be greater than zero"
        ));
    }
    Ok(())
}

/// Checks that `code` looks like an ISO 4217 code: three uppercase letters.
pub fn validate_currency(code: &str) -> Result<(), String> {
    if code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "currency {code:?} is invalid; expected an ISO 4217 code such as XOF"
        ))
    }
}

/// Checks a phone number of 5 to 15 digits. With `allow_plus`, a leading
/// `+` is accepted.
pub fn validate_phone(field: &str, number: &str, allow_plus: bool) -> Result<(), String> {
    let digits = match number.strip_prefix('+') {
        Some(rest) if allow_plus => rest,
        _ => number,
    };
    let length_is_valid = (MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len());
    if length_is_valid && digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Ok(());
    }
    let expected = if allow_plus {
        "an optional + followed by 5 to 15 digits"
    } else {
        "5 to 15 digits without +"
    };
    Err(format!(
        "{field} {number:?} is invalid; expected {expected}"
    ))
}

/// Checks that a caller's reference is 1 to 128 visible ASCII characters, so
/// it fits in a URL path segment of the status endpoints.
pub fn validate_reference(field: &str, reference: &str) -> Result<(), String> {
    let is_allowed =
        |byte: u8| byte.is_ascii_graphic() && !matches!(byte, b'/' | b'?' | b'#' | b'%');
    if (1..=128).contains(&reference.len()) && reference.bytes().all(is_allowed) {
        Ok(())
    } else {
        Err(format!(
            "{field} {reference:?} is invalid; expected 1 to 128 visible ASCII characters other than / ? # %"
        ))
    }
}

/// Returns whether a raw JSON value is an object.
pub fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn amounts_as_numbers_and_strings() {
        assert_eq!(decimal_amount(&raw("2500")).unwrap(), "2500");
        assert_eq!(decimal_amount(&raw("\"12.50\"")).unwrap(), "12.50");
        assert_eq!(decimal_amount(&raw("30.81")).unwrap(), "30.81");
    }

    #[test]
    fn invalid_amounts_are_rejected() {
        for text in [
            "0", "\"0.00\"", "-5", "1e3", "\"\"", "null", "\"12.\"", "true",
        ] {
            assert!(decimal_amount(&raw(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn phone_numbers() {
        assert!(validate_phone("msisdn", "+22890112233", true).is_ok());
        assert!(validate_phone("partyId", "22890112233", false).is_ok());
        assert!(validate_phone("partyId", "+22890112233", false).is_err());
        assert!(validate_phone("msisdn", "+228 9011", true).is_err());
        assert!(validate_phone("msisdn", "1234", true).is_err());
    }

    #[test]
    fn basic_credentials() {
        let mut headers = HeaderMap::new();
        assert!(!has_basic_credentials(&headers));
        headers.insert(AUTHORIZATION, "Basic dXNlcjprZXk=".parse().unwrap());
        assert!(has_basic_credentials(&headers));
        headers.insert(AUTHORIZATION, "Basic dXNlcjo=".parse().unwrap());
        assert!(!has_basic_credentials(&headers), "empty password");
    }
}
