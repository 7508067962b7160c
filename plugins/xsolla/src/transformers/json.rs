//! Reading Xsolla's JSON without ever turning an amount into a float.
//!
//! `serde_json::Value` stores non-integer numbers as `f64`, so amounts are never read through it.
//! Instead an answer is kept as borrowed [`RawValue`]s: objects are opened one level at a time
//! along the path being read, and a number's exact text goes to [`Money::parse_decimal`].
//! `Value` is only used for the `raw` copies handed back verbatim for display.

use std::collections::BTreeMap;

use gatehouse_plugin_api::{Currency, Money, ProviderError};
use serde_json::Value;
use serde_json::value::RawValue;

/// One JSON object, its member values still unparsed.
pub type RawObject<'a> = BTreeMap<String, &'a RawValue>;

/// Reads a provider answer as JSON text, naming what was expected in the error.
pub fn parse_root<'a>(body: &'a [u8], what: &str) -> Result<&'a RawValue, ProviderError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ProviderError::malformed_response(format!("Xsolla's {what} answer is not UTF-8 text"))
    })?;
    serde_json::from_str::<&RawValue>(text).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Xsolla's {what} answer is not the documented JSON: {error}"
        ))
    })
}

/// The members of `raw` when it is an object.
pub fn object(raw: &RawValue) -> Option<RawObject<'_>> {
    if !raw.get().trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The elements of `raw` when it is an array.
pub fn array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !raw.get().trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The value at `path` (object keys, outermost first); `None` when absent or `null`.
pub fn get_path<'a>(raw: &'a RawValue, path: &[&str]) -> Option<&'a RawValue> {
    let mut current = raw;
    for key in path {
        current = *object(current)?.get(*key)?;
    }
    (!is_null(current)).then_some(current)
}

pub fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

/// A scalar as text: strings unquoted, numbers and booleans as written. Objects, arrays and
/// `null` have no text.
pub fn scalar_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(text.to_string()),
    }
}

/// The first of `paths` that holds a scalar, as text.
pub fn first_text(raw: &RawValue, paths: &[&[&str]]) -> Option<String> {
    paths
        .iter()
        .find_map(|path| get_path(raw, path).and_then(scalar_text))
        .filter(|text| !text.is_empty())
}

/// A verbatim copy of `raw` for display. Amounts in it may be floats: it is never read for money.
pub fn to_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Where one amount and its currency sit in a record.
#[derive(Clone, Copy, Debug)]
pub struct MoneyPath<'p> {
    pub amount: &'p [&'p str],
    pub currency: &'p [&'p str],
}

/// Reads an exact amount: the number's own text (or a string holding a decimal) parsed per the
/// currency's exponent. `Ok(None)` when the amount or a usable ISO 4217 currency is absent
/// (Xsolla sends `null` amounts, and virtual-currency names where a currency code would be).
/// An amount that is present but not an exact decimal of that currency is an error: guessing
/// would make money inexact.
pub fn money_at(
    record: &RawValue,
    path: MoneyPath<'_>,
    fallback_currency: Option<Currency>,
) -> Result<Option<Money>, ProviderError> {
    let Some(amount_raw) = get_path(record, path.amount) else {
        return Ok(None);
    };
    let currency = get_path(record, path.currency)
        .and_then(scalar_text)
        .and_then(|code| Currency::from_code(code.trim()).ok())
        .or(fallback_currency);
    let Some(currency) = currency else {
        return Ok(None);
    };
    amount_from_raw(amount_raw, currency, &path.amount.join(".")).map(Some)
}

/// An amount written as a JSON number (`7.96`) or a string (`"7.96"`).
pub fn amount_from_raw(
    raw: &RawValue,
    currency: Currency,
    field: &str,
) -> Result<Money, ProviderError> {
    let text = raw.get().trim();
    let decimal = if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        Some(text.to_string())
    } else {
        None
    };
    let decimal = decimal.ok_or_else(|| {
        ProviderError::malformed_response(format!("Xsolla's `{field}` is not an amount"))
            .with_field(field)
    })?;
    Money::parse_decimal(&decimal, currency).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Xsolla's `{field}` is not an exact {currency} amount: {error}"
        ))
        .with_field(field)
    })
}

/// Writes an amount as a JSON number with exactly the currency's decimals (`9.99`, `500`,
/// `1.234`), built from its decimal text so no float is involved.
pub fn amount_to_json(amount: &Money) -> Result<Box<RawValue>, ProviderError> {
    RawValue::from_string(amount.to_decimal_string()).map_err(|error| {
        ProviderError::plugin_fault(format!(
            "an amount did not render as a JSON number: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).expect("currency")
    }

    #[test]
    fn reads_nested_amounts_exactly_from_numbers_and_strings() {
        let body = br#"{"a":{"amount":7.96,"currency":"USD"},"b":{"amount":"230","currency":"JPY"},
                        "c":{"amount":1.234,"currency":"KWD"},"d":{"amount":null,"currency":null}}"#;
        let root = parse_root(body, "test").expect("json");
        let path = |key: &'static str| MoneyPath {
            amount: match key {
                "a" => &["a", "amount"],
                "b" => &["b", "amount"],
                "c" => &["c", "amount"],
                _ => &["d", "amount"],
            },
            currency: match key {
                "a" => &["a", "currency"],
                "b" => &["b", "currency"],
                "c" => &["c", "currency"],
                _ => &["d", "currency"],
            },
        };
        assert_eq!(
            money_at(root, path("a"), None).expect("a"),
            Some(Money::new(796, currency("USD")))
        );
        assert_eq!(
            money_at(root, path("b"), None).expect("b"),
            Some(Money::new(230, currency("JPY")))
        );
        assert_eq!(
            money_at(root, path("c"), None).expect("c"),
            Some(Money::new(1234, currency("KWD")))
        );
        assert_eq!(money_at(root, path("d"), None).expect("d"), None);
    }

    #[test]
    fn refuses_inexact_amounts() {
        let root = parse_root(br#"{"amount": 7.961, "currency": "USD"}"#, "test").expect("json");
        let path = MoneyPath {
            amount: &["amount"],
            currency: &["currency"],
        };
        assert!(money_at(root, path, None).is_err());
        let root = parse_root(br#"{"amount": true, "currency": "USD"}"#, "test").expect("json");
        assert!(money_at(root, path, None).is_err());
    }

    #[test]
    fn writes_amounts_as_json_numbers_with_the_currency_exponent() {
        for (minor, code, text) in [
            (999, "USD", "9.99"),
            (500, "JPY", "500"),
            (1234, "KWD", "1.234"),
        ] {
            let raw = amount_to_json(&Money::new(minor, currency(code))).expect("raw");
            assert_eq!(raw.get(), text);
        }
    }

    #[test]
    fn scalars_and_paths() {
        let root =
            parse_root(br#"{"x":{"id":12,"name":"a\"b","n":null,"o":{}}}"#, "t").expect("json");
        assert_eq!(
            first_text(root, &[&["x", "missing"], &["x", "id"]]).as_deref(),
            Some("12")
        );
        assert_eq!(first_text(root, &[&["x", "name"]]).as_deref(), Some("a\"b"));
        assert_eq!(first_text(root, &[&["x", "n"], &["x", "o"]]), None);
        assert!(parse_root(b"\xff\xfe", "t").is_err());
        assert!(parse_root(b"{\"a\":", "t").is_err());
    }
}
