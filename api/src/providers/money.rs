//! Amounts in the decimal text providers expect, without floating point.

use nepxy_ledger::Currency;

/// Formats minor units as a decimal in major units: 2500 XOF is "2500",
/// 1250 EUR is "12.50".
pub fn to_major_text(amount_minor: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    if exponent == 0 {
        return amount_minor.to_string();
    }
    let scale = 10_u64.pow(exponent);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = exponent as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_text_keeps_every_digit() {
        assert_eq!(to_major_text(2500, Currency::XOF), "2500");
        assert_eq!(to_major_text(1250, Currency::EUR), "12.50");
        assert_eq!(to_major_text(7, Currency::USD), "0.07");
        assert_eq!(
            to_major_text(i64::MAX, Currency::GHS),
            "92233720368547758.07"
        );
    }
}
