//! The parameters of `payments_get`: normalized filters and the period, checked and put in the
//! document's order.
//!
//! Every parameter this module produces is hashed (see [`super::signing`]), so the exact text sent
//! is decided here once: values are trimmed, validated, and never reformatted afterwards.

use std::collections::BTreeMap;

use gatehouse_plugin_api::{Decimal, ProviderError};

use super::signing::HASHED_PARAMETERS;

/// One filter of the payments report: the normalized name a caller uses in
/// `Command::Report { filters, .. }` and the document's parameter it becomes.
#[derive(Debug, Clone, Copy)]
pub struct FilterSpec {
    pub name: &'static str,
    pub wire_name: &'static str,
    pub description: &'static str,
    kind: FilterKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    /// A Kolmisoft user id. GUESS: ids are integers (MOR's `users.id`); the document only says
    /// "payments user id".
    UserId,
    /// Free text compared by the server (username, first and last name).
    Name,
    /// A decimal amount bound.
    Amount,
    /// A currency code as the server names it (the document's example: `USD`).
    Currency,
}

/// The filters the payments report accepts. The period is not a filter: it travels in the
/// command's own `from` / `till`.
pub const FILTERS: [FilterSpec; 7] = [
    FilterSpec {
        name: "user_id",
        wire_name: "user_id_s",
        description: "the Kolmisoft user id whose payments to list (digits)",
        kind: FilterKind::UserId,
    },
    FilterSpec {
        name: "username",
        wire_name: "username_s",
        description: "the user's username",
        kind: FilterKind::Name,
    },
    FilterSpec {
        name: "first_name",
        wire_name: "first_name_s",
        description: "the user's first name",
        kind: FilterKind::Name,
    },
    FilterSpec {
        name: "last_name",
        wire_name: "last_name_s",
        description: "the user's last name",
        kind: FilterKind::Name,
    },
    FilterSpec {
        name: "amount_min",
        wire_name: "amount_min_s",
        description: "the smallest payment amount to list (a plain decimal such as 10 or 10.50)",
        kind: FilterKind::Amount,
    },
    FilterSpec {
        name: "amount_max",
        wire_name: "amount_max_s",
        description: "the largest payment amount to list (a plain decimal)",
        kind: FilterKind::Amount,
    },
    FilterSpec {
        name: "currency",
        wire_name: "currency_s",
        description: "the payment currency as the server names it (for example USD)",
        kind: FilterKind::Currency,
    },
];

pub const SECONDS_PER_DAY: i64 = 86_400;

/// Text filters longer than this are refused: no Kolmisoft name is that long, and every byte is
/// hashed and sent.
const MAX_NAME_CHARS: usize = 255;
const MAX_AMOUNT_CHARS: usize = 32;
const MAX_USER_ID_DIGITS: usize = 20;
const MAX_CURRENCY_CHARS: usize = 10;

/// The period of a report, Unix seconds, both ends as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: i64,
    pub till: i64,
}

/// The document's default period: today 00:00 to today 23:59, "today" being the day that
/// contains `now_unix` at `utc_offset_seconds` from UTC.
///
/// The document says "23:59"; the end is sent as 23:59:59 so that the last minute of the day is
/// not cut off (a payment at 23:59:30 belongs to today).
pub fn default_period(now_unix: i64, utc_offset_seconds: i64) -> Period {
    let local_now = now_unix.saturating_add(utc_offset_seconds);
    let local_midnight = local_now
        .div_euclid(SECONDS_PER_DAY)
        .saturating_mul(SECONDS_PER_DAY);
    let from = local_midnight.saturating_sub(utc_offset_seconds);
    Period {
        from,
        till: from.saturating_add(SECONDS_PER_DAY - 1),
    }
}

/// The parameters of one `payments_get` request other than `u` and `hash`, in the document's
/// order (which is also the hash order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentsQuery {
    pub parameters: Vec<(&'static str, String)>,
    pub period: Period,
}

impl PaymentsQuery {
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.parameters
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect()
    }
}

/// Why a report command cannot be sent. Each becomes an `invalid_request` error naming its
/// field, before any request is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown filter(s) {}: the Kolmisoft payments report accepts {}",
        quoted(names),
        accepted_filters()
    )]
    UnknownFilters { names: Vec<String> },
    #[error("filter `{name}` {reason}")]
    InvalidFilter { name: &'static str, reason: String },
    #[error("`{field}` must be a Unix timestamp of 0 or later, not {value}")]
    NegativeTimestamp { field: &'static str, value: i64 },
    #[error("the period is reversed: from {from} is after till {till}{note}")]
    ReversedPeriod {
        from: i64,
        till: i64,
        note: &'static str,
    },
    #[error("amount_min {min} is larger than amount_max {max}")]
    ReversedAmountRange { min: String, max: String },
}

impl QueryError {
    pub fn into_provider_error(self) -> ProviderError {
        let fields: Vec<String> = match &self {
            Self::UnknownFilters { names } => {
                names.iter().map(|name| format!("filters.{name}")).collect()
            }
            Self::InvalidFilter { name, .. } => vec![format!("filters.{name}")],
            Self::NegativeTimestamp { field, .. } => vec![(*field).to_string()],
            Self::ReversedPeriod { .. } => vec!["from".into(), "till".into()],
            Self::ReversedAmountRange { .. } => {
                vec!["filters.amount_min".into(), "filters.amount_max".into()]
            }
        };
        fields.into_iter().fold(
            ProviderError::invalid_request(self.to_string()),
            ProviderError::with_field,
        )
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{}`", gatehouse_plugin_api::error::truncate(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn accepted_filters() -> String {
    FILTERS
        .iter()
        .map(|filter| filter.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a report command's period and filters and lays them out as the document's parameters.
///
/// Decision: the period is always sent, the document's default (today) filled in when the command
/// names none. The request then means the same thing whatever the server's own clock and
/// timezone (which the document does not state), and its hash covers the period.
pub fn payments_query(
    from: Option<i64>,
    till: Option<i64>,
    filters: &BTreeMap<String, String>,
    now_unix: i64,
    utc_offset_seconds: i64,
) -> Result<PaymentsQuery, QueryError> {
    let unknown: Vec<String> = filters
        .keys()
        .filter(|name| !FILTERS.iter().any(|filter| filter.name == name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(QueryError::UnknownFilters { names: unknown });
    }

    let mut wire_values: BTreeMap<&'static str, String> = BTreeMap::new();
    for filter in &FILTERS {
        if let Some(value) = filters.get(filter.name) {
            wire_values.insert(filter.wire_name, checked_filter_value(filter, value)?);
        }
    }

    if let (Some(min), Some(max)) = (
        wire_values.get("amount_min_s"),
        wire_values.get("amount_max_s"),
    ) {
        // Both passed `checked_filter_value`, so both parse; compare exactly.
        if let (Ok(min_value), Ok(max_value)) =
            (Decimal::from_str_exact(min), Decimal::from_str_exact(max))
            && min_value > max_value
        {
            return Err(QueryError::ReversedAmountRange {
                min: min.clone(),
                max: max.clone(),
            });
        }
    }

    let period = checked_period(from, till, now_unix, utc_offset_seconds)?;
    wire_values.insert("from_s", period.from.to_string());
    wire_values.insert("till_s", period.till.to_string());

    let parameters = HASHED_PARAMETERS
        .iter()
        .filter_map(|wire_name| {
            wire_values
                .remove(wire_name)
                .map(|value| (*wire_name, value))
        })
        .collect();
    Ok(PaymentsQuery { parameters, period })
}

fn checked_period(
    from: Option<i64>,
    till: Option<i64>,
    now_unix: i64,
    utc_offset_seconds: i64,
) -> Result<Period, QueryError> {
    for (field, value) in [("from", from), ("till", till)] {
        if let Some(value) = value
            && value < 0
        {
            return Err(QueryError::NegativeTimestamp { field, value });
        }
    }
    let today = default_period(now_unix, utc_offset_seconds);
    let period = Period {
        from: from.unwrap_or(today.from),
        till: till.unwrap_or(today.till),
    };
    if period.from > period.till {
        let note = match (from, till) {
            (Some(_), None) => " (till defaulted to the end of today)",
            (None, Some(_)) => " (from defaulted to the start of today)",
            _ => "",
        };
        return Err(QueryError::ReversedPeriod {
            from: period.from,
            till: period.till,
            note,
        });
    }
    Ok(period)
}

fn checked_filter_value(filter: &FilterSpec, value: &str) -> Result<String, QueryError> {
    let trimmed = value.trim();
    let invalid = |reason: String| QueryError::InvalidFilter {
        name: filter.name,
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("is empty: leave it out to not filter by it".into()));
    }
    match filter.kind {
        FilterKind::UserId => {
            if trimmed.len() > MAX_USER_ID_DIGITS
                || !trimmed.bytes().all(|byte| byte.is_ascii_digit())
            {
                return Err(invalid(format!(
                    "must be a numeric user id of 1 to {MAX_USER_ID_DIGITS} digits"
                )));
            }
        }
        FilterKind::Name => {
            if trimmed.chars().count() > MAX_NAME_CHARS {
                return Err(invalid(format!(
                    "is longer than {MAX_NAME_CHARS} characters"
                )));
            }
            if trimmed.chars().any(char::is_control) {
                return Err(invalid("contains control characters".into()));
            }
        }
        FilterKind::Amount => {
            if trimmed.len() > MAX_AMOUNT_CHARS
                || !is_plain_decimal(trimmed)
                || Decimal::from_str_exact(trimmed).is_err()
            {
                return Err(invalid(
                    "must be a plain decimal amount such as 10, 10.5 or -3.25 (no exponent, no thousands separator)"
                        .into(),
                ));
            }
        }
        FilterKind::Currency => {
            if trimmed.len() > MAX_CURRENCY_CHARS
                || !trimmed.bytes().all(|byte| byte.is_ascii_alphanumeric())
            {
                return Err(invalid(format!(
                    "must be a currency code of 1 to {MAX_CURRENCY_CHARS} letters or digits, such as USD"
                )));
            }
        }
    }
    Ok(trimmed.to_string())
}

/// `-?digits(.digits)?`: the only amount form sent, and the only one read as exact.
pub fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    all_digits(whole) && fraction.is_none_or(all_digits)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_period_is_today_in_the_configured_offset() {
        // 2026-01-01T10:00:00Z
        let now = 1_767_261_600;
        assert_eq!(
            default_period(now, 0),
            Period {
                from: 1_767_225_600,
                till: 1_767_311_999
            }
        );
        // At UTC+3 it is 13:00 on the same day; the day starts at 2025-12-31T21:00:00Z.
        assert_eq!(default_period(now, 3 * 3600).from, 1_767_225_600 - 3 * 3600);
        // At UTC-11 it is still 2025-12-31 (23:00); that day starts at 2025-12-31T11:00:00Z.
        assert_eq!(
            default_period(now, -11 * 3600).from,
            1_767_225_600 - 86_400 + 11 * 3600
        );
        // Midnight exactly belongs to the day it starts.
        assert_eq!(default_period(1_767_225_600, 0).from, 1_767_225_600);
        assert_eq!(
            default_period(1_767_225_599, 0).from,
            1_767_225_600 - 86_400
        );
    }

    #[test]
    fn extreme_clocks_do_not_overflow() {
        let _ = default_period(i64::MAX, 64_800);
        let _ = default_period(i64::MIN, -64_800);
    }

    #[test]
    fn plain_decimals() {
        for good in ["0", "10", "10.5", "-3.25", "0.0001", "123456789.123456"] {
            assert!(is_plain_decimal(good), "{good}");
        }
        for bad in [
            "", "-", ".5", "5.", "1e5", "1,000", "+1", "1 000", "--1", "1.2.3", "NaN", "١٢",
        ] {
            assert!(!is_plain_decimal(bad), "{bad}");
        }
    }
}
