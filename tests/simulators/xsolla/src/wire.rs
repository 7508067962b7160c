//! The simulator's side of the wire: reading request bodies exactly, writing answers and errors.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_plugin_api::{Currency, Money};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// A request body kept as unparsed JSON so amounts are read from their exact text.
pub struct Body<'a> {
    root: &'a RawValue,
}

impl<'a> Body<'a> {
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let root: &RawValue = serde_json::from_str(text).ok()?;
        root.get()
            .trim_start()
            .starts_with('{')
            .then_some(Self { root })
    }

    pub fn raw(&self, path: &[&str]) -> Option<&'a RawValue> {
        let mut current = self.root;
        for key in path {
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(current.get()).ok()?;
            current = *members.get(*key)?;
        }
        (current.get().trim() != "null").then_some(current)
    }

    /// A JSON string member.
    pub fn string(&self, path: &[&str]) -> Option<String> {
        serde_json::from_str::<String>(self.raw(path)?.get()).ok()
    }

    /// Whether the member is present with a type other than string.
    pub fn is_non_string(&self, path: &[&str]) -> bool {
        self.raw(path).is_some() && self.string(path).is_none()
    }

    pub fn integer(&self, path: &[&str]) -> Option<i64> {
        serde_json::from_str::<i64>(self.raw(path)?.get()).ok()
    }

    pub fn value(&self, path: &[&str]) -> Option<Value> {
        serde_json::from_str(self.raw(path)?.get()).ok()
    }

    /// A JSON number member, as its exact text (strings are refused: the API takes numbers).
    pub fn number_text(&self, path: &[&str]) -> Option<&'a str> {
        let text = self.raw(path)?.get().trim();
        text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
            .then_some(text)
    }
}

/// Collects what is wrong with a request, per property, as Xsolla's 422 names it.
#[derive(Default)]
pub struct Problems(BTreeMap<String, Vec<String>>);

impl Problems {
    pub fn add(&mut self, property: &str, message: &str) {
        self.0
            .entry(property.to_string())
            .or_default()
            .push(message.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// HTTP 422 with `extended_message` naming every wrong parameter.
    pub fn into_response(self) -> Response {
        let response = json!({
            "http_status_code": 422,
            "message": "Unprocessable Entity: some parameters are wrong",
            "extended_message": {"global_errors": [], "property_errors": self.0},
            "request_id": request_id(),
        });
        (StatusCode::UNPROCESSABLE_ENTITY, Json(response)).into_response()
    }
}

/// Reads a positive amount in `currency` from a JSON number, exactly.
pub fn amount_at(
    body: &Body<'_>,
    path: &[&str],
    currency: Option<Currency>,
    problems: &mut Problems,
) -> Option<Money> {
    let property = path.join(".");
    let Some(text) = body.number_text(path) else {
        problems.add(&property, "This value should be a number.");
        return None;
    };
    let currency = currency?;
    match Money::parse_decimal(text, currency) {
        Ok(money) if money.is_positive() => Some(money),
        Ok(_) => {
            problems.add(&property, "This value should be greater than 0.");
            None
        }
        Err(error) => {
            problems.add(&property, &format!("Invalid amount: {error}"));
            None
        }
    }
}

/// Reads an ISO 4217 currency code member.
pub fn currency_at(body: &Body<'_>, path: &[&str], problems: &mut Problems) -> Option<Currency> {
    let property = path.join(".");
    match body.string(path) {
        Some(code) => match Currency::from_code(&code) {
            Ok(currency) => Some(currency),
            Err(_) => {
                problems.add(&property, "This value is not a valid currency.");
                None
            }
        },
        None => {
            problems.add(&property, "This value should not be blank.");
            None
        }
    }
}

/// An amount as a JSON number with the currency's decimals, never through a float.
pub fn amount_json(money: &Money) -> Box<RawValue> {
    RawValue::from_string(money.to_decimal_string())
        .unwrap_or_else(|_| RawValue::from_string("0".into()).expect("0 is JSON"))
}

#[derive(Serialize)]
pub struct AmountJson {
    pub amount: Box<RawValue>,
    pub currency: &'static str,
}

impl AmountJson {
    pub fn of(money: &Money) -> Self {
        Self {
            amount: amount_json(money),
            currency: money.currency.code(),
        }
    }
}

pub fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"http_status_code": status.as_u16(), "message": text, "request_id": request_id()}))).into_response()
}

pub fn request_id() -> String {
    format!("sim-{:x}", now_unix_nanos() & 0xffff_ffff)
}

fn now_unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0)
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS+00:00`, as Xsolla's dumps write dates.
pub fn iso_datetime(seconds: i64) -> String {
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The date part of a date or date-time text (`2026-01-09`), for period filters.
pub fn date_part(text: &str) -> &str {
    text.get(..10).unwrap_or(text)
}
