//! Scripted outcomes, chosen by the last two digits of the recipient's number.
//! The `nepxy-provider-sandbox --help` text lists them for users.

use std::fmt;
use std::time::Duration;

/// Delay before the response to a slow create request (`...02`).
pub const SLOW_RESPONSE_DELAY: Duration = Duration::from_secs(3);
/// Time from acceptance to the late callback of `...08`.
pub const LATE_CALLBACK_DELAY: Duration = Duration::from_secs(5);
/// Maximum time a `...05` request is held before the sandbox itself
/// responds 503.
pub const MAX_HOLD: Duration = Duration::from_secs(60);
/// Retry-After value of the 429 response to the first `...04` request.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Failure code reported for `...01`, by MoMo and TMoney.
pub const PAYEE_NOT_FOUND: &str = "PAYEE_NOT_FOUND";
/// Error code of the HTTP 500 response to `...03`, sent after the
/// transaction is created. MoMo uses it for failures whose result is unknown.
pub const INTERNAL_PROCESSING_ERROR: &str = "INTERNAL_PROCESSING_ERROR";
/// Error code of the HTTP 500 response to `...06`. Nothing is created.
pub const NOT_ENOUGH_FUNDS: &str = "NOT_ENOUGH_FUNDS";
/// Error code of the 429 response to the first `...04` request.
pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";
/// Error code of the 503 response sent when a `...05` hold ends.
pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";

/// What the sandbox does with one payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `...00` and every ending without a scripted outcome: success, one
    /// callback after the callback delay.
    Success,
    /// `...01`: the payout fails with PAYEE_NOT_FOUND (Thunes 90201, class 9).
    PayeeNotFound,
    /// `...02`: the response to the create request comes after
    /// [`SLOW_RESPONSE_DELAY`].
    Slow,
    /// `...03`: HTTP 500 INTERNAL_PROCESSING_ERROR, but the transaction is
    /// created and succeeds.
    AmbiguousError,
    /// `...04`: HTTP 429 on the first create request for the reference, then
    /// success.
    RateLimitedOnce,
    /// `...05`: the request is held for up to [`MAX_HOLD`] and nothing is
    /// created.
    NoResponse,
    /// `...06`: HTTP 500 NOT_ENOUGH_FUNDS, and nothing is created.
    NotEnoughFunds,
    /// `...07`: success, and the callback is sent twice.
    DuplicateCallback,
    /// `...08`: success, and the callback is sent [`LATE_CALLBACK_DELAY`]
    /// after acceptance.
    LateCallback,
    /// `...09`: success without any callback.
    NoCallback,
}

impl Outcome {
    /// Chooses the outcome from the last two digits of `number`. Characters
    /// other than digits, such as a leading `+`, are skipped, and a number
    /// with fewer than two digits gets [`Outcome::Success`].
    pub fn for_recipient(number: &str) -> Outcome {
        let mut digits = number.bytes().rev().filter(u8::is_ascii_digit);
        let (Some(last), Some(second_last)) = (digits.next(), digits.next()) else {
            return Outcome::Success;
        };
        match (second_last, last) {
            (b'0', b'1') => Outcome::PayeeNotFound,
            (b'0', b'2') => Outcome::Slow,
            (b'0', b'3') => Outcome::AmbiguousError,
            (b'0', b'4') => Outcome::RateLimitedOnce,
            (b'0', b'5') => Outcome::NoResponse,
            (b'0', b'6') => Outcome::NotEnoughFunds,
            (b'0', b'7') => Outcome::DuplicateCallback,
            (b'0', b'8') => Outcome::LateCallback,
            (b'0', b'9') => Outcome::NoCallback,
            _ => Outcome::Success,
        }
    }

    /// Returns whether the payout ends in failure rather than success, once
    /// accepted.
    pub fn fails(self) -> bool {
        self == Outcome::PayeeNotFound
    }

    /// Returns the name used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::PayeeNotFound => "payee_not_found",
            Outcome::Slow => "slow",
            Outcome::AmbiguousError => "ambiguous_error",
            Outcome::RateLimitedOnce => "rate_limited_once",
            Outcome::NoResponse => "no_response",
            Outcome::NotEnoughFunds => "not_enough_funds",
            Outcome::DuplicateCallback => "duplicate_callback",
            Outcome::LateCallback => "late_callback",
            Outcome::NoCallback => "no_callback",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_last_two_digits() {
        let cases = [
            ("+22890000000", Outcome::Success),
            ("22890000001", Outcome::PayeeNotFound),
            ("22890000002", Outcome::Slow),
            ("22890000003", Outcome::AmbiguousError),
            ("22890000004", Outcome::RateLimitedOnce),
            ("22890000005", Outcome::NoResponse),
            ("22890000006", Outcome::NotEnoughFunds),
            ("22890000007", Outcome::DuplicateCallback),
            ("22890000008", Outcome::LateCallback),
            ("22890000009", Outcome::NoCallback),
            ("22890000010", Outcome::Success),
            ("22890000011", Outcome::Success),
            ("22890000099", Outcome::Success),
        ];
        for (number, expected) in cases {
            assert_eq!(Outcome::for_recipient(number), expected, "{number}");
        }
    }

    #[test]
    fn short_number_succeeds() {
        assert_eq!(Outcome::for_recipient("1"), Outcome::Success);
        assert_eq!(Outcome::for_recipient(""), Outcome::Success);
    }
}
