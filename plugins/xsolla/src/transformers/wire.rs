//! Request bodies and request-side encodings of the Pay Station API (merchant API v2).
//!
//! Bodies are typed structs serialized by serde: amounts travel as [`RawValue`] holding the exact
//! decimal text, so a JSON number is written without ever being a float.

use base64::Engine;
use gatehouse_plugin_api::ProviderError;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// `{"value": ...}`: how the create-token body wraps every user field.
#[derive(Debug, Serialize)]
pub struct Wrapped<'a> {
    pub value: &'a str,
}

impl<'a> Wrapped<'a> {
    pub fn of(value: Option<&'a str>) -> Option<Self> {
        value.map(|value| Self { value })
    }
}

/// `POST /merchants/{merchant_id}/token` [SEED path; body per providers.md `token.json` fixture].
#[derive(Debug, Serialize)]
pub struct TokenRequest<'a> {
    pub user: TokenUser<'a>,
    pub settings: TokenSettings<'a>,
    pub purchase: Purchase<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_parameters: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct TokenUser<'a> {
    pub id: Wrapped<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Wrapped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Wrapped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Wrapped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Wrapped<'a>>,
}

#[derive(Debug, Serialize)]
pub struct TokenSettings<'a> {
    pub project_id: u64,
    pub currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    /// `"sandbox"` enables the sandbox [SEED: chargeback page, "mode":"sandbox"].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui: Option<&'a Value>,
}

/// The purchase: what the user pays, in the purchase currency.
#[derive(Debug, Serialize)]
pub struct Purchase<'a> {
    pub checkout: Checkout<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Wrapped<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Checkout<'a> {
    pub currency: &'a str,
    pub amount: Box<RawValue>,
}

/// `POST /projects/{project_id}/users/{user_id}/payments/{type}/{account_id}`
/// [SRC: charge-with-saved-account page, body in providers.md].
#[derive(Debug, Serialize)]
pub struct ChargeRequest<'a> {
    pub user: ChargeUser<'a>,
    pub settings: ChargeSettings<'a>,
    pub purchase: Purchase<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_parameters: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct ChargeUser<'a> {
    pub ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct ChargeSettings<'a> {
    pub currency: &'a str,
    /// The host-made reference: how an unknown charge is found again (search by `external_id`).
    pub external_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mock_code: Option<i64>,
}

/// `PUT .../transactions/{id}/refund` [SRC: request-refund page].
#[derive(Debug, Serialize)]
pub struct RefundRequest<'a> {
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
}

/// `PUT .../transactions/{id}/partial_refund` [SRC: request-partial-refund page].
#[derive(Debug, Serialize)]
pub struct PartialRefundRequest<'a> {
    pub refund_amount: Box<RawValue>,
    pub description: &'a str,
}

/// Serializes a typed body. Serialization of these structs cannot fail in practice; if it did,
/// that is the plugin's fault, not the command's.
pub fn to_json_bytes<T: Serialize>(body: &T) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body).map_err(|error| {
        ProviderError::plugin_fault(format!("a request body did not serialize: {error}"))
    })
}

/// `Authorization: Basic base64(merchant_id:api_key)` [SEED].
pub fn basic_authorization(merchant_id: &str, api_key: &str) -> String {
    let pair = format!("{merchant_id}:{api_key}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Percent-encodes one path segment: only RFC 3986 unreserved characters stay as they are, so a
/// user id can never add a segment or a query to the URL.
pub fn encode_path_segment(segment: &str) -> String {
    // `.` and `..` are unreserved characters but would be collapsed as relative segments.
    if segment == "." || segment == ".." {
        return segment.replace('.', "%2E");
    }
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether `text` is an Xsolla numeric id (merchant, project, transaction, saved account).
pub fn is_numeric_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// The latest instant the date helpers accept: 9999-12-31T23:59:59Z.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// A Unix time as `YYYY-MM-DD` (UTC), or `None` outside years 1970-9999.
pub fn unix_to_date(seconds: i64) -> Option<String> {
    let (year, month, day, _, _, _) = civil_from_unix(seconds)?;
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (UTC), or `None` outside years 1970-9999.
pub fn unix_to_datetime(seconds: i64) -> Option<String> {
    let (year, month, day, hour, minute, second) = civil_from_unix(seconds)?;
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"
    ))
}

/// Howard Hinnant's `civil_from_days`: exact proleptic-Gregorian calendar arithmetic, so the
/// plugin needs no date crate and reads no clock.
fn civil_from_unix(seconds: i64) -> Option<(i64, i64, i64, i64, i64, i64)> {
    if !(0..=MAX_UNIX_SECONDS).contains(&seconds) {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    Some((
        year,
        month,
        day,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_exact_utc() {
        assert_eq!(unix_to_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(
            unix_to_datetime(1_767_225_600).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            unix_to_datetime(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            unix_to_datetime(1_709_251_199).as_deref(),
            Some("2024-02-29T23:59:59Z")
        );
        assert_eq!(
            unix_to_date(MAX_UNIX_SECONDS).as_deref(),
            Some("9999-12-31")
        );
        assert_eq!(unix_to_date(-1), None);
        assert_eq!(unix_to_date(i64::MAX), None);
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(
            encode_path_segment("user 1/../x?y"),
            "user%201%2F..%2Fx%3Fy"
        );
        assert_eq!(encode_path_segment("abc-DEF_1.2~"), "abc-DEF_1.2~");
        assert_eq!(encode_path_segment(".."), "%2E%2E");
    }

    #[test]
    fn basic_auth_is_base64_of_the_pair() {
        assert_eq!(basic_authorization("123", "key"), "Basic MTIzOmtleQ==");
    }
}
