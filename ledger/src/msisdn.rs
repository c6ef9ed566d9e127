//! Mobile numbers in E.164 form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest E.164 number: 15 digits after the `+` (ITU-T E.164, section 6).
const MAX_DIGITS: usize = 15;
/// Shortest number accepted: 8 digits, the length of a Togolese number
/// without its country code is already 8.
const MIN_DIGITS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsisdnError {
    #[error("must start with '+' and the country code, e.g. +22890123456")]
    MissingPlus,
    #[error("must contain only digits after the '+'")]
    NotDigits,
    #[error("must have between 8 and 15 digits after the '+', got {0}")]
    BadLength(usize),
    #[error("country code must not start with 0")]
    LeadingZero,
}

/// A validated E.164 number such as `+22890123456`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Msisdn(String);

impl Msisdn {
    pub fn parse(raw: &str) -> Result<Self, MsisdnError> {
        let digits = raw.strip_prefix('+').ok_or(MsisdnError::MissingPlus)?;
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(MsisdnError::NotDigits);
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
            return Err(MsisdnError::BadLength(digits.len()));
        }
        if digits.starts_with('0') {
            return Err(MsisdnError::LeadingZero);
        }
        Ok(Msisdn(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the E.164 country calling code: 228 for `+22890123456`.
    ///
    /// Calling codes are prefix-free, so the first digits decide the length:
    /// 1 and 7 have one digit, the two-digit codes are listed below, and every
    /// other code has three (ITU-T E.164 assignments).
    pub fn country_code(&self) -> u16 {
        const TWO_DIGIT: &[u16] = &[
            20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
            55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
        ];
        let digits = self.digits();
        let prefix = |length: usize| digits[..length].parse::<u16>().unwrap_or_default();
        match prefix(1) {
            first @ (1 | 7) => first,
            _ if TWO_DIGIT.contains(&prefix(2)) => prefix(2),
            _ => prefix(3),
        }
    }

    /// The digits without the `+`, as MTN MoMo expects a payee.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The number with all but the country prefix and the last two digits
    /// hidden, for logs: `+228******56`.
    pub fn masked(&self) -> String {
        let visible_head = 4.min(self.0.len());
        let visible_tail = 2;
        let hidden = self.0.len().saturating_sub(visible_head + visible_tail);
        format!(
            "{}{}{}",
            &self.0[..visible_head],
            "*".repeat(hidden),
            &self.0[self.0.len() - visible_tail..]
        )
    }
}

impl TryFrom<String> for Msisdn {
    type Error = MsisdnError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Msisdn::parse(&raw)
    }
}

impl From<Msisdn> for String {
    fn from(msisdn: Msisdn) -> Self {
        msisdn.0
    }
}

/// Debug output is masked so that a full number never reaches a log by accident.
impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_togolese_number() {
        let msisdn = Msisdn::parse("+22890123456").expect("valid number");
        assert_eq!(msisdn.as_str(), "+22890123456");
        assert_eq!(msisdn.digits(), "22890123456");
    }

    #[test]
    fn rejects_malformed_numbers() {
        assert_eq!(Msisdn::parse("22890123456"), Err(MsisdnError::MissingPlus));
        assert_eq!(Msisdn::parse("+228 9012 3456"), Err(MsisdnError::NotDigits));
        assert_eq!(Msisdn::parse("+2289012345a"), Err(MsisdnError::NotDigits));
        assert_eq!(Msisdn::parse("+1234567"), Err(MsisdnError::BadLength(7)));
        assert_eq!(
            Msisdn::parse("+1234567890123456"),
            Err(MsisdnError::BadLength(16))
        );
        assert_eq!(Msisdn::parse("+02890123456"), Err(MsisdnError::LeadingZero));
        assert_eq!(Msisdn::parse("+"), Err(MsisdnError::BadLength(0)));
        assert_eq!(Msisdn::parse("+٢٢٨٩٠١٢٣٤٥٦"), Err(MsisdnError::NotDigits));
    }

    #[test]
    fn masked_hides_subscriber_digits() {
        let msisdn = Msisdn::parse("+22890123456").expect("valid number");
        assert_eq!(msisdn.masked(), "+228******56");
        assert!(!format!("{msisdn:?}").contains("901234"));
    }

    #[test]
    fn country_code_by_prefix_length() {
        let cases = [
            ("+22890123456", 228),
            ("+233241234567", 233),
            ("+2348031234567", 234),
            ("+12025550123", 1),
            ("+74951234567", 7),
            ("+33612345678", 33),
            ("+447911123456", 44),
            ("+27821234567", 27),
            ("+35312345678", 353),
        ];
        for (raw, code) in cases {
            let msisdn = Msisdn::parse(raw).expect("valid number");
            assert_eq!(msisdn.country_code(), code, "{raw}");
        }
    }
}
