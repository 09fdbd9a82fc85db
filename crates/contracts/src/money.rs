//! Exact money: integer minor units (cents) inside, a JSON number outside.
//!
//! The API and the events carry amounts as JSON numbers (`99.99`) like the system we replace, but
//! never through `f64`: the number's text is read verbatim and converted to cents exactly.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use serde_json::value::RawValue;

/// Digits after the decimal point of every amount.
pub const SCALE: u32 = 2;
const MINOR_PER_UNIT: i64 = 100;

/// An exact amount of money in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a decimal number such as 99.99")]
    NotANumber,
    #[error("must have at most {SCALE} decimal places")]
    TooManyDecimals,
    #[error("is too large")]
    Overflow,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Parses a decimal in JSON number syntax (`12`, `-0.5`, `99.99`, `1.5e3`), exactly.
    /// Trailing zeros beyond the scale are accepted (`1.500`); significant ones are not (`1.005`).
    pub fn parse(text: &str) -> Result<Money, MoneyError> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => {
                let exponent: i32 = unsigned[at + 1..].parse().map_err(|_| MoneyError::NotANumber)?;
                (&unsigned[..at], exponent)
            }
            None => (unsigned, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((int_part, frac_part)) => (int_part, frac_part),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int_part.is_empty()
            || !all_digits(int_part)
            || !all_digits(frac_part)
            || (mantissa.contains('.') && frac_part.is_empty())
        {
            return Err(MoneyError::NotANumber);
        }
        // value = digits × 10^(exponent − frac_len); we want value × 10^SCALE as an integer.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let shift = i64::from(exponent) - frac_part.len() as i64 + i64::from(SCALE);
        let digits_and_zeros;
        let integral: &str = if shift >= 0 {
            if digits.is_empty() {
                "0"
            } else {
                if shift > 18 {
                    return Err(MoneyError::Overflow);
                }
                digits_and_zeros = format!("{digits}{}", "0".repeat(shift as usize));
                &digits_and_zeros
            }
        } else {
            // Digits moved past the last minor unit must all be zero.
            let cut = (-shift) as usize;
            let (kept, dropped) = digits.split_at(digits.len().saturating_sub(cut));
            if dropped.bytes().any(|b| b != b'0') {
                return Err(MoneyError::TooManyDecimals);
            }
            if kept.is_empty() { "0" } else { kept }
        };
        let magnitude: i64 = integral.parse().map_err(|_| MoneyError::Overflow)?;
        Ok(Money(if negative { -magnitude } else { magnitude }))
    }
}

impl fmt::Display for Money {
    /// Shortest exact form: `99.99`, `99.9`, `100`, `-0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let units = magnitude / MINOR_PER_UNIT as u64;
        let cents = magnitude % MINOR_PER_UNIT as u64;
        match cents {
            0 => write!(f, "{sign}{units}"),
            c if c % 10 == 0 => write!(f, "{sign}{units}.{}", c / 10),
            c => write!(f, "{sign}{units}.{c:02}"),
        }
    }
}

/// In the APIs' OpenAPI documents: a JSON number with at most two decimal places, written exactly.
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Number))
            .multiple_of(Some(0.01))
            .description(Some(
                "An exact decimal amount with at most 2 decimal places, written as a JSON number (99.99); \
                 requests may also give it as a string (\"99.99\").",
            ))
            .examples([serde_json::json!(99.99)])
            .into()
    }
}

impl utoipa::ToSchema for Money {}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let number = RawValue::from_string(self.to_string()).map_err(serde::ser::Error::custom)?;
        number.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts a JSON number, or a string holding one (`"99.99"`), read from its exact text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner,
            None => text,
        };
        Money::parse(text).map_err(|e| de::Error::custom(format_args!("amount {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        for (text, minor) in [
            ("99.99", 9999),
            ("0.01", 1),
            ("100", 10000),
            ("1.5", 150),
            ("1.500", 150),
            ("0", 0),
            ("-2.25", -225),
            ("1e2", 10000),
            ("1.25E1", 1250),
            ("125e-2", 125),
            ("0.1", 10),
            ("92233720368547758.07", i64::MAX),
        ] {
            assert_eq!(Money::parse(text), Ok(Money(minor)), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_exact_amount() {
        for (text, err) in [
            ("1.005", MoneyError::TooManyDecimals),
            ("0.001", MoneyError::TooManyDecimals),
            ("1e-3", MoneyError::TooManyDecimals),
            ("abc", MoneyError::NotANumber),
            ("", MoneyError::NotANumber),
            ("1.", MoneyError::NotANumber),
            (".5", MoneyError::NotANumber),
            ("1e", MoneyError::NotANumber),
            ("--1", MoneyError::NotANumber),
            ("1e400", MoneyError::Overflow),
            ("92233720368547758.08", MoneyError::Overflow),
        ] {
            assert_eq!(Money::parse(text), Err(err), "{text}");
        }
    }

    #[test]
    fn displays_shortest_exact_form() {
        for (minor, text) in [(9999, "99.99"), (9990, "99.9"), (10000, "100"), (5, "0.05"), (-50, "-0.5")] {
            assert_eq!(Money(minor).to_string(), text);
        }
    }

    #[test]
    fn json_round_trip_keeps_the_number() {
        let m: Money = serde_json::from_str("99.99").unwrap();
        assert_eq!(m, Money(9999));
        assert_eq!(serde_json::to_string(&m).unwrap(), "99.99");
        let m: Money = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "12.5");
        // A value whose nearest f64 is not exact stays exact.
        let m: Money = serde_json::from_str("4503599627370495.99").unwrap();
        assert_eq!(m.minor(), 450359962737049599);
        assert!(serde_json::from_str::<Money>("true").is_err());
    }
}
