//! Exact money: integer minor units plus an ISO 4217 currency.
//!
//! No floating point is used anywhere. Conversions to and from a provider's decimal format go
//! through [`rust_decimal::Decimal`] and refuse amounts that would lose precision.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency with a defined number of minor-unit digits.
///
/// Codes without a minor-unit exponent (precious metals, test codes such as `XXX`) are refused:
/// an amount in them cannot be expressed in minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an ISO 4217 alphabetic code (upper case, as the standard writes it).
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        if let Some(currency) = recent::find(code) {
            return Ok(Self(currency));
        }
        let currency = iso_currency::Currency::from_code(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(16).collect()))?;
        if currency.exponent().is_none() {
            return Err(MoneyError::CurrencyWithoutMinorUnits(code.to_string()));
        }
        recent::remember(code, currency);
        Ok(Self(currency))
    }

    /// The three-letter code, for example `"XOF"`.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// How many digits follow the decimal point: 2 for USD, 0 for XOF and JPY, 3 for KWD.
    pub fn exponent(&self) -> u32 {
        // Construction guarantees the exponent exists.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
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
        Self::from_code(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads the code where it lies (no `String` per amount).
        struct CodeVisitor;

        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = Currency;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an ISO 4217 currency code")
            }

            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<Currency, E> {
                Currency::from_code(code).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CodeVisitor)
    }
}

/// The currencies recently parsed, so a code does not go through iso_currency's `from_code` (a
/// comparison with every code in turn, ≈ 1 500 instructions for `XOF`) on every amount that
/// crosses the plugin boundary. Each slot holds a code's three bytes and its ISO numeric code in
/// one atomic word, so a slot read is always a whole entry of some code (a race at worst misses);
/// only codes that passed the full check are remembered, and only when their numeric code leads
/// back to the same currency.
mod recent {
    use std::sync::atomic::{AtomicU64, Ordering};

    const SLOTS: usize = 8;
    /// Marks a filled slot (an empty one is zero).
    const FILLED: u64 = 1 << 63;

    static SLOTS_TABLE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

    fn key(code: &str) -> Option<u64> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_uppercase()) => {
                Some(u64::from(*a) << 16 | u64::from(*b) << 8 | u64::from(*c))
            }
            _ => None,
        }
    }

    fn slot(key: u64) -> &'static AtomicU64 {
        &SLOTS_TABLE[usize::try_from(key % SLOTS as u64).unwrap_or(0)]
    }

    pub(super) fn find(code: &str) -> Option<iso_currency::Currency> {
        let key = key(code)?;
        let entry = slot(key).load(Ordering::Relaxed);
        if entry & FILLED == 0 || (entry >> 16) & 0xFF_FFFF != key {
            return None;
        }
        let numeric = u16::try_from(entry & 0xFFFF).ok()?;
        iso_currency::Currency::from_numeric(numeric).filter(|currency| currency.code() == code)
    }

    pub(super) fn remember(code: &str, currency: iso_currency::Currency) {
        let Some(key) = key(code) else { return };
        if iso_currency::Currency::from_numeric(currency.numeric()) != Some(currency) {
            return;
        }
        slot(key).store(
            FILLED | key << 16 | u64::from(currency.numeric()),
            Ordering::Relaxed,
        );
    }
}

/// An exact amount of money.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// The amount in the currency's smallest unit (cents for USD, whole francs for XOF).
    pub minor_units: i64,
    pub currency: Currency,
}

/// Why an amount or a currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code `{0}` (expected an ISO 4217 code such as USD or XOF)")]
    UnknownCurrency(String),
    #[error("currency `{0}` has no minor units and cannot carry an amount")]
    CurrencyWithoutMinorUnits(String),
    #[error("`{amount}` is not a decimal amount")]
    NotADecimal { amount: String },
    #[error("`{amount}` has more decimals than {currency} allows ({exponent})")]
    TooManyDecimals {
        amount: String,
        currency: Currency,
        exponent: u32,
    },
    #[error("`{amount}` {currency} is out of range")]
    OutOfRange { amount: String, currency: Currency },
}

impl Money {
    pub fn new(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }

    /// Converts an exact decimal in major units (for example `14.95` USD) to minor units.
    /// Refuses a value with more significant decimals than the currency has; trailing zeros
    /// beyond the exponent (`14.950`) are accepted.
    pub fn from_decimal(value: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent();
        let normalized = value.normalize();
        if normalized.scale() > exponent {
            return Err(MoneyError::TooManyDecimals {
                amount: value.to_string(),
                currency,
                exponent,
            });
        }
        let scale_factor = Decimal::from(10_i64.pow(exponent));
        let minor = normalized
            .checked_mul(scale_factor)
            .ok_or_else(|| MoneyError::OutOfRange {
                amount: value.to_string(),
                currency,
            })?;
        let minor_units = i64::try_from(minor).map_err(|_| MoneyError::OutOfRange {
            amount: value.to_string(),
            currency,
        })?;
        Ok(Self::new(minor_units, currency))
    }

    /// Parses a decimal string in major units, such as `"14.95"`, `"-3"` or `"0.500"`.
    /// Exponent notation, thousands separators and surrounding text are refused.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let trimmed = text.trim();
        let well_formed = !trimmed.is_empty()
            && trimmed.len() <= 40
            && trimmed
                .strip_prefix('-')
                .or_else(|| trimmed.strip_prefix('+'))
                .unwrap_or(trimmed)
                .split_once('.')
                .map_or_else(
                    || is_digits(trimmed.trim_start_matches(['-', '+'])),
                    |(whole, fraction)| {
                        (is_digits(whole) || whole.is_empty())
                            && (is_digits(fraction) || (fraction.is_empty() && !whole.is_empty()))
                    },
                );
        if !well_formed {
            return Err(MoneyError::NotADecimal {
                amount: trimmed.chars().take(40).collect(),
            });
        }
        let value = Decimal::from_str_exact(trimmed).map_err(|_| MoneyError::OutOfRange {
            amount: trimmed.to_string(),
            currency,
        })?;
        Self::from_decimal(value, currency)
    }

    /// The amount in major units as an exact decimal with exactly `exponent` decimals.
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor_units, self.currency.exponent())
    }

    /// The amount as a plain decimal string with exactly `exponent` decimals (`"14.95"`, `"300"`).
    pub fn to_decimal_string(&self) -> String {
        self.to_decimal().to_string()
    }

    pub fn is_positive(&self) -> bool {
        self.minor_units > 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).expect("known currency")
    }

    /// The memo of recent codes gives the same answers as the first parse, for codes that parse
    /// and codes that do not, and for codes sharing a slot.
    #[test]
    fn a_remembered_code_parses_as_the_first_time() {
        for _ in 0..3 {
            for code in [
                "XOF", "USD", "KWD", "JPY", "EUR", "XAF", "GBP", "CHF", "SEK", "NOK",
            ] {
                let currency = Currency::from_code(code).expect(code);
                assert_eq!(currency.code(), code);
                let read: Currency =
                    serde_json::from_str(&format!("\"{code}\"")).expect("a JSON code reads");
                assert_eq!(read, currency);
            }
            assert_eq!(currency("XOF").exponent(), 0);
            assert_eq!(currency("KWD").exponent(), 3);
            assert!(Currency::from_code("XAU").is_err());
            assert!(Currency::from_code("ABC").is_err());
            assert!(Currency::from_code("xof").is_err());
            assert!(serde_json::from_str::<Currency>("7").is_err());
        }
    }

    #[test]
    fn converts_exactly_for_each_exponent() {
        let cases = [
            ("14.95", "USD", 1495),
            ("300", "XOF", 300),
            ("1.234", "KWD", 1234),
            ("0.1", "USD", 10),
            ("-7.50", "EUR", -750),
            ("14.950", "USD", 1495),
        ];
        for (text, code, minor) in cases {
            let money = Money::parse_decimal(text, currency(code)).expect(text);
            assert_eq!(money.minor_units, minor, "{text} {code}");
        }
    }

    #[test]
    fn refuses_excess_decimals_and_garbage() {
        assert!(matches!(
            Money::parse_decimal("1.5", currency("XOF")),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            Money::parse_decimal("0.001", currency("USD")),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        for garbage in [
            "", "1e5", "1,000", "abc", "1.2.3", "--1", ".", "NaN", "1 000",
        ] {
            assert!(
                Money::parse_decimal(garbage, currency("USD")).is_err(),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            Money::parse_decimal("99999999999999999999999", currency("USD")),
            Err(MoneyError::OutOfRange { .. })
        ));
    }

    #[test]
    fn round_trips_through_decimal_strings() {
        for (minor, code, text) in [
            (1495, "USD", "14.95"),
            (300, "XOF", "300"),
            (5, "KWD", "0.005"),
        ] {
            let money = Money::new(minor, currency(code));
            assert_eq!(money.to_decimal_string(), text);
            assert_eq!(Money::parse_decimal(text, currency(code)), Ok(money));
        }
    }

    #[test]
    fn refuses_unknown_and_unitless_currencies() {
        assert!(matches!(
            Currency::from_code("ABC"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            Currency::from_code("usd"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            Currency::from_code("XAU"),
            Err(MoneyError::CurrencyWithoutMinorUnits(_))
        ));
    }
}
