//! Payout providers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Msisdn;

/// E.164 calling code of Togo.
const TOGO_CALLING_CODE: &str = "228";
/// Digits of a Togolese subscriber number, after the calling code.
const TOGO_SUBSCRIBER_DIGITS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tmoney,
    Thunes,
    Momo,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Tmoney, Provider::Thunes, Provider::Momo];

    /// Checks that this provider can pay `msisdn`. TMoney is Togocel's
    /// wallet, so it pays only Togolese numbers. Thunes and MTN MoMo reach
    /// several countries and take any E.164 number.
    pub fn check_recipient(self, msisdn: &Msisdn) -> Result<(), RecipientError> {
        match self {
            Provider::Tmoney => {
                let digits = msisdn.digits();
                let togolese = digits
                    .strip_prefix(TOGO_CALLING_CODE)
                    .is_some_and(|subscriber| subscriber.len() == TOGO_SUBSCRIBER_DIGITS);
                if togolese {
                    Ok(())
                } else {
                    Err(RecipientError::TmoneyOutsideTogo)
                }
            }
            Provider::Thunes | Provider::Momo => Ok(()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Tmoney => "tmoney",
            Provider::Thunes => "thunes",
            Provider::Momo => "momo",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}; use one of tmoney, thunes, momo")]
pub struct UnknownProvider(pub String);

/// A recipient number that the chosen provider cannot pay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error(
        "tmoney pays only Togolese numbers, +228 followed by 8 digits such as +22890123456. \
         Send numbers of other countries through thunes"
    )]
    TmoneyOutsideTogo,
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.name() == name)
            .ok_or_else(|| UnknownProvider(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(raw: &str) -> Msisdn {
        Msisdn::parse(raw).expect("valid E.164 number")
    }

    #[test]
    fn tmoney_pays_togolese_numbers_only() {
        for togolese in ["+22890123456", "+22870000000", "+22899999999"] {
            assert_eq!(
                Provider::Tmoney.check_recipient(&number(togolese)),
                Ok(()),
                "{togolese}"
            );
        }
        for other in [
            // Benin, Ghana and Côte d'Ivoire.
            "+22990123456",
            "+233241234567",
            "+2250701234567",
            // Togo's code with too few or too many digits.
            "+2289012345",
            "+228901234567",
            // 228 inside the number, not as its calling code.
            "+12282345678",
        ] {
            assert_eq!(
                Provider::Tmoney.check_recipient(&number(other)),
                Err(RecipientError::TmoneyOutsideTogo),
                "{other}"
            );
        }
    }

    #[test]
    fn thunes_and_momo_take_any_country() {
        for provider in [Provider::Thunes, Provider::Momo] {
            for raw in ["+22890123456", "+233241234567", "+2289012345"] {
                assert_eq!(
                    provider.check_recipient(&number(raw)),
                    Ok(()),
                    "{provider} {raw}"
                );
            }
        }
    }
}
