//! Conversion of provider amounts, written as exact decimal text in major
//! units (`20000`, `30.81`, `"25.50"`), into minor units of a ledger currency.
//! The conversion works on the digits, never on floating point.

use std::str::FromStr;

use nepxy_ledger::Currency;

use super::ParseError;

/// Characters of a rejected amount that an error message repeats.
const MAX_QUOTED_CHARS: usize = 40;

/// Converts an amount in major units into minor units of `currency_code`.
///
/// `amount` is plain decimal text: ASCII digits with an optional decimal
/// point followed by at least one digit. A sign, whitespace or exponent
/// notation (`1e3`) is rejected, as are negative amounts, more decimal places
/// than the currency has (unless the extra ones are zeros) and results above
/// `i64::MAX` minor units.
///
/// Returns `Ok(None)` when the ledger does not know `currency_code`. The text
/// is still checked as a decimal first, so only a well-formed amount in an
/// unknown currency reaches the caller, which records it as a mismatch.
pub fn major_to_minor(amount: &str, currency_code: &str) -> Result<Option<i64>, ParseError> {
    let decimal = parse_decimal(amount)?;
    let Ok(currency) = Currency::from_str(currency_code) else {
        return Ok(None);
    };
    scale_to_minor(amount, &decimal, currency).map(Some)
}

/// Converts the amount of a report when it has one.
///
/// An amount without a currency is rejected, because its minor units cannot
/// be known. A currency without an amount gives `None`.
pub fn report_amount_minor(
    amount: Option<&str>,
    currency_code: Option<&str>,
) -> Result<Option<i64>, ParseError> {
    match (amount, currency_code) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(ParseError(
            "the body has an amount but no currency, so the amount cannot be read".to_owned(),
        )),
        (Some(amount), Some(currency_code)) => major_to_minor(amount, currency_code),
    }
}

/// Integer and fraction digits of a validated decimal, all ASCII.
struct Decimal<'a> {
    integer_digits: &'a str,
    fraction_digits: &'a str,
}

fn parse_decimal(amount: &str) -> Result<Decimal<'_>, ParseError> {
    if amount.is_empty() {
        return Err(invalid_amount(amount, "it is empty"));
    }
    if amount.starts_with('-') {
        return Err(invalid_amount(amount, "negative amounts are not accepted"));
    }
    if amount.contains(['e', 'E']) {
        return Err(invalid_amount(
            amount,
            "exponent notation is not accepted, write the plain decimal such as 1000",
        ));
    }

    let (integer_digits, fraction_digits) = match amount.split_once('.') {
        Some((integer_digits, fraction_digits)) => (integer_digits, Some(fraction_digits)),
        None => (amount, None),
    };
    let is_digits = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let fraction_is_valid = fraction_digits.is_none_or(is_digits);
    if !is_digits(integer_digits) || !fraction_is_valid {
        return Err(invalid_amount(
            amount,
            "expected digits with an optional decimal point, such as 25 or 25.50",
        ));
    }

    Ok(Decimal {
        integer_digits,
        fraction_digits: fraction_digits.unwrap_or(""),
    })
}

fn scale_to_minor(
    amount: &str,
    decimal: &Decimal<'_>,
    currency: Currency,
) -> Result<i64, ParseError> {
    let exponent = currency.exponent() as usize;
    let fraction = decimal.fraction_digits;

    // The fraction is ASCII, so any byte index is a character boundary.
    let (kept_digits, extra_digits) = if fraction.len() > exponent {
        fraction.split_at(exponent)
    } else {
        (fraction, "")
    };
    if extra_digits.bytes().any(|digit| digit != b'0') {
        return Err(invalid_amount(
            amount,
            &format!("{currency} has {exponent} decimal places"),
        ));
    }

    let padding_zeros = exponent - kept_digits.len();
    let digits = decimal
        .integer_digits
        .bytes()
        .chain(kept_digits.bytes())
        .chain(std::iter::repeat_n(b'0', padding_zeros));

    let mut minor: i64 = 0;
    for digit in digits {
        minor = minor
            .checked_mul(10)
            .and_then(|shifted| shifted.checked_add(i64::from(digit - b'0')))
            .ok_or_else(|| invalid_amount(amount, "it exceeds the largest supported amount"))?;
    }
    Ok(minor)
}

fn invalid_amount(amount: &str, reason: &str) -> ParseError {
    let quoted: String = amount.chars().take(MAX_QUOTED_CHARS).collect();
    let ellipsis = if quoted.len() < amount.len() {
        "…"
    } else {
        ""
    };
    ParseError(format!("amount {quoted:?}{ellipsis} is invalid: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(amount: &str, currency_code: &str) -> Option<i64> {
        major_to_minor(amount, currency_code).unwrap()
    }

    fn error(amount: &str, currency_code: &str) -> String {
        major_to_minor(amount, currency_code).unwrap_err().0
    }

    #[test]
    fn integer_amounts() {
        assert_eq!(minor("20000", "XOF"), Some(20000));
        assert_eq!(minor("25", "EUR"), Some(2500));
        assert_eq!(minor("0", "USD"), Some(0));
        assert_eq!(minor("007", "XAF"), Some(7));
    }

    #[test]
    fn decimal_amounts() {
        assert_eq!(minor("30.81", "EUR"), Some(3081));
        assert_eq!(minor("25.5", "GHS"), Some(2550));
        assert_eq!(minor("25.50", "NGN"), Some(2550));
        assert_eq!(minor("0.01", "USD"), Some(1));
    }

    #[test]
    fn trailing_zeros_beyond_exponent_accepted() {
        assert_eq!(minor("20000.00", "XOF"), Some(20000));
        assert_eq!(minor("20000.0", "XAF"), Some(20000));
        assert_eq!(minor("30.8100", "EUR"), Some(3081));
    }

    #[test]
    fn extra_decimal_places_rejected() {
        assert!(error("20000.5", "XOF").contains("XOF has 0 decimal places"));
        assert!(error("30.811", "EUR").contains("EUR has 2 decimal places"));
        assert!(error("30.8101", "USD").contains("USD has 2 decimal places"));
    }

    #[test]
    fn exponent_notation_rejected() {
        for amount in ["1e3", "1E3", "2.5e-1", "1.5E+2"] {
            let message = error(amount, "EUR");
            assert!(message.contains("exponent notation"), "{amount}: {message}");
        }
    }

    #[test]
    fn negative_amounts_rejected() {
        assert!(error("-5", "EUR").contains("negative"));
        assert!(error("-0", "XOF").contains("negative"));
        assert!(error("-0.01", "USD").contains("negative"));
    }

    #[test]
    fn malformed_text_rejected() {
        for amount in [
            "", ".5", "5.", "+5", " 5", "5 ", "1,000", "1.2.3", "abc", "٣", "0x10", "NaN",
        ] {
            assert!(
                major_to_minor(amount, "EUR").is_err(),
                "{amount:?} was accepted"
            );
        }
    }

    #[test]
    fn overflow_rejected() {
        assert_eq!(minor("9223372036854775807", "XOF"), Some(i64::MAX));
        assert!(error("9223372036854775808", "XOF").contains("largest supported amount"));
        assert!(error("92233720368547758.08", "EUR").contains("largest supported amount"));
        assert_eq!(minor("92233720368547758.07", "EUR"), Some(i64::MAX));
        assert!(major_to_minor(&"9".repeat(400), "USD").is_err());
    }

    #[test]
    fn leading_zeros_do_not_overflow() {
        let amount = format!("{}1.00", "0".repeat(300));
        assert_eq!(minor(&amount, "EUR"), Some(100));
    }

    #[test]
    fn unknown_currency_gives_none() {
        assert_eq!(minor("25.123", "JPY"), None);
        assert_eq!(minor("25", "xof"), None);
        assert_eq!(minor("25", ""), None);
    }

    #[test]
    fn unknown_currency_still_checks_text() {
        assert!(error("1e3", "JPY").contains("exponent notation"));
        assert!(error("-1", "JPY").contains("negative"));
    }

    #[test]
    fn error_quotes_long_amount_briefly() {
        let message = error(&"x".repeat(5000), "EUR");
        assert!(message.len() < 200, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn report_amount_combinations() {
        assert_eq!(report_amount_minor(None, None).unwrap(), None);
        assert_eq!(report_amount_minor(None, Some("EUR")).unwrap(), None);
        assert_eq!(
            report_amount_minor(Some("25"), Some("EUR")).unwrap(),
            Some(2500)
        );
        assert_eq!(report_amount_minor(Some("25"), Some("JPY")).unwrap(), None);
        let message = report_amount_minor(Some("25"), None).unwrap_err().0;
        assert!(message.contains("no currency"), "{message}");
    }
}
