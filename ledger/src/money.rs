//! Amounts as integer counts of a currency's minor unit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// ISO 4217 currencies the ledger accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    XOF,
    XAF,
    GHS,
    NGN,
    EUR,
    USD,
}

impl Currency {
    pub const ALL: [Currency; 6] = [
        Currency::XOF,
        Currency::XAF,
        Currency::GHS,
        Currency::NGN,
        Currency::EUR,
        Currency::USD,
    ];

    /// Number of decimal places of the minor unit (ISO 4217 exponent).
    pub fn exponent(self) -> u32 {
        match self {
            Currency::XOF | Currency::XAF => 0,
            Currency::GHS | Currency::NGN | Currency::EUR | Currency::USD => 2,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::XOF => "XOF",
            Currency::XAF => "XAF",
            Currency::GHS => "GHS",
            Currency::NGN => "NGN",
            Currency::EUR => "EUR",
            Currency::USD => "USD",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|currency| currency.code() == code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}; supported currencies are XOF, XAF, GHS, NGN, EUR and USD")]
    UnknownCurrency(String),
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(i64),
    #[error("amount {amount_minor} exceeds the maximum of {max_minor} minor units")]
    AboveMaximum { amount_minor: i64, max_minor: i64 },
}

/// A positive amount of one currency, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    /// Validates a positive amount no larger than `max_minor`.
    pub fn new(amount_minor: i64, currency: Currency, max_minor: i64) -> Result<Self, MoneyError> {
        if amount_minor <= 0 {
            return Err(MoneyError::NotPositive(amount_minor));
        }
        if amount_minor > max_minor {
            return Err(MoneyError::AboveMaximum {
                amount_minor,
                max_minor,
            });
        }
        Ok(Money {
            amount_minor,
            currency,
        })
    }
}

impl fmt::Display for Money {
    /// Formats the amount in major units without floating point, e.g. `12.50 EUR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return write!(f, "{} {}", self.amount_minor, self.currency);
        }
        let scale = 10_i64.pow(exponent);
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let magnitude = self.amount_minor.unsigned_abs();
        let scale = scale.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            magnitude / scale,
            magnitude % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::XOF.exponent(), 0);
        assert_eq!(Currency::XAF.exponent(), 0);
        for currency in [Currency::GHS, Currency::NGN, Currency::EUR, Currency::USD] {
            assert_eq!(currency.exponent(), 2, "{currency}");
        }
    }

    #[test]
    fn currency_parses_exact_codes_only() {
        assert_eq!("XOF".parse::<Currency>(), Ok(Currency::XOF));
        assert!("xof".parse::<Currency>().is_err());
        assert!("BTC".parse::<Currency>().is_err());
        assert!("".parse::<Currency>().is_err());
    }

    #[test]
    fn money_rejects_zero_negative_and_too_large() {
        assert_eq!(
            Money::new(0, Currency::XOF, 100),
            Err(MoneyError::NotPositive(0))
        );
        assert_eq!(
            Money::new(-5, Currency::XOF, 100),
            Err(MoneyError::NotPositive(-5))
        );
        assert!(matches!(
            Money::new(101, Currency::XOF, 100),
            Err(MoneyError::AboveMaximum { .. })
        ));
        assert!(Money::new(100, Currency::XOF, 100).is_ok());
    }

    #[test]
    fn money_displays_major_units() {
        let eur = Money {
            amount_minor: 1250,
            currency: Currency::EUR,
        };
        assert_eq!(eur.to_string(), "12.50 EUR");
        let xof = Money {
            amount_minor: 5000,
            currency: Currency::XOF,
        };
        assert_eq!(xof.to_string(), "5000 XOF");
        let cents = Money {
            amount_minor: 7,
            currency: Currency::USD,
        };
        assert_eq!(cents.to_string(), "0.07 USD");
    }
}
