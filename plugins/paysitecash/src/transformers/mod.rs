//! Pure mappings from a normalized `report` command and an account's configuration to the
//! Paysite Cash statistics request (seed document `000`, "Intégration des statistiques Paysite
//! Cash dans une plateforme externe", 12/12/2007, sections 1 and 2).
//!
//! Everything here is checked before any request leaves: an unknown report, a filter the chosen
//! API does not take, a month or year the provider would refuse, a missing credential.

pub mod errors;
pub mod statistics;

use std::collections::BTreeMap;

use gatehouse_plugin_api::error::truncate;
use gatehouse_plugin_api::http::{encode_form, join_url};
use gatehouse_plugin_api::{Extra, HttpRequest, ProviderError};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::account::{CURRENCY, Credentials, DELIMITER, USER};

/// The documented base URL (`https://billing.paysite-cash.biz/stats/`), without its slash.
pub const DEFAULT_BASE_URL: &str = "https://billing.paysite-cash.biz/stats";

/// Filters of the monthly APIs (API 3), named as the provider names its parameters.
pub const MONTH: &str = "month";
pub const YEAR: &str = "year";

/// The query parameter that carries the password's md5: a credential in a URL, because the
/// provider documents GET only.
pub const PASS_PARAMETER: &str = "pass";

/// The six statistics scripts: API 1 (full), API 2 (quick) and API 3 (monthly), for merchants
/// (`webmasters*`) and for affiliates (`affiliates*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticsApi {
    Webmasters,
    WebmastersQuick,
    WebmastersMonth,
    Affiliates,
    AffiliatesQuick,
    AffiliatesMonth,
}

impl StatisticsApi {
    pub const ALL: [Self; 6] = [
        Self::Webmasters,
        Self::WebmastersQuick,
        Self::WebmastersMonth,
        Self::Affiliates,
        Self::AffiliatesQuick,
        Self::AffiliatesMonth,
    ];

    /// The report name a `report` command uses (the script name without `.php`).
    pub fn report_name(self) -> &'static str {
        match self {
            Self::Webmasters => "webmasters",
            Self::WebmastersQuick => "webmasters_quick",
            Self::WebmastersMonth => "webmasters_month",
            Self::Affiliates => "affiliates",
            Self::AffiliatesQuick => "affiliates_quick",
            Self::AffiliatesMonth => "affiliates_month",
        }
    }

    /// The script under the base URL.
    pub fn script(self) -> &'static str {
        match self {
            Self::Webmasters => "webmasters.php",
            Self::WebmastersQuick => "webmasters_quick.php",
            Self::WebmastersMonth => "webmasters_month.php",
            Self::Affiliates => "affiliates.php",
            Self::AffiliatesQuick => "affiliates_quick.php",
            Self::AffiliatesMonth => "affiliates_month.php",
        }
    }

    /// Whether this is API 3, the only one that takes `month` and `year`.
    pub fn is_monthly(self) -> bool {
        matches!(self, Self::WebmastersMonth | Self::AffiliatesMonth)
    }

    pub fn from_report_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|api| api.report_name() == name)
    }
}

/// The month and year API 3 asks for, already in the documented shapes (`XX`, `YYYY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    month: String,
    year: String,
}

/// A `report` command checked against what the chosen API accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatisticsQuery {
    pub api: StatisticsApi,
    /// Present exactly when `api` is monthly.
    pub period: Option<Period>,
}

/// Why a command or an account cannot be turned into a request. Each variant names the field
/// at fault; none carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "unknown report `{0}`: Paysite Cash offers webmasters, webmasters_quick, webmasters_month, affiliates, affiliates_quick and affiliates_month"
    )]
    UnknownReport(String),
    #[error(
        "report `{report}` does not take `{filter}`: only the monthly reports (webmasters_month, affiliates_month) take month and year"
    )]
    PeriodFilterOnNonMonthly {
        report: &'static str,
        filter: &'static str,
    },
    #[error("report `{report}` takes no filter `{filter}`; its filters are: {accepted}")]
    UnknownFilter {
        report: &'static str,
        filter: String,
        accepted: &'static str,
    },
    #[error("report `{report}` needs the filter `{filter}`")]
    MissingFilter {
        report: &'static str,
        filter: &'static str,
    },
    #[error("month `{0}` must be two digits from 01 to 12")]
    BadMonth(String),
    #[error("year `{0}` must be four digits")]
    BadYear(String),
    #[error(
        "Paysite Cash statistics take no `{0}`: the APIs have no period but the monthly reports' month and year filters"
    )]
    PeriodBoundNotSupported(&'static str),
    #[error("Paysite Cash reports take no extra field `{0}`")]
    UnknownExtra(String),
    #[error("account `{account}` has no `{key}` configured")]
    MissingConfig { account: String, key: &'static str },
    #[error(
        "`delimiter` must be a single character other than a quote or a line break (or `tab`), not `{0}`"
    )]
    BadDelimiter(String),
    #[error("`currency` must be an ISO 4217 code with minor units (such as EUR), not `{0}`")]
    BadCurrency(String),
}

impl RequestError {
    /// The command field or configuration key the error is about.
    pub fn field(&self) -> String {
        match self {
            Self::UnknownReport(_) => "report".into(),
            Self::PeriodFilterOnNonMonthly { filter, .. } | Self::MissingFilter { filter, .. } => {
                (*filter).into()
            }
            Self::UnknownFilter { filter, .. } => filter.clone(),
            Self::BadMonth(_) => MONTH.into(),
            Self::BadYear(_) => YEAR.into(),
            Self::PeriodBoundNotSupported(bound) => (*bound).into(),
            Self::UnknownExtra(key) => format!("extra.{key}"),
            Self::MissingConfig { key, .. } => (*key).into(),
            Self::BadDelimiter(_) => DELIMITER.into(),
            Self::BadCurrency(_) => CURRENCY.into(),
        }
    }
}

impl From<RequestError> for ProviderError {
    fn from(error: RequestError) -> Self {
        let field = error.field();
        ProviderError::invalid_request(error.to_string()).with_field(field)
    }
}

/// Checks a `report` command: the report name, no period bounds, no extra fields, and exactly
/// the filters the chosen API takes (month and year for API 3, none otherwise).
pub fn statistics_query(
    report: &str,
    from: Option<i64>,
    till: Option<i64>,
    filters: &BTreeMap<String, String>,
    extra: &Extra,
) -> Result<StatisticsQuery, RequestError> {
    let api = StatisticsApi::from_report_name(report)
        .ok_or_else(|| RequestError::UnknownReport(truncate(report)))?;
    // The provider has no period parameter: ignoring from/till would return other dates than
    // the caller asked for, so they are refused.
    if from.is_some() {
        return Err(RequestError::PeriodBoundNotSupported("from"));
    }
    if till.is_some() {
        return Err(RequestError::PeriodBoundNotSupported("till"));
    }
    if let Some(key) = extra.keys().next() {
        return Err(RequestError::UnknownExtra(truncate(key)));
    }
    let report = api.report_name();
    for name in filters.keys() {
        match name.as_str() {
            MONTH if !api.is_monthly() => {
                return Err(RequestError::PeriodFilterOnNonMonthly {
                    report,
                    filter: MONTH,
                });
            }
            YEAR if !api.is_monthly() => {
                return Err(RequestError::PeriodFilterOnNonMonthly {
                    report,
                    filter: YEAR,
                });
            }
            MONTH | YEAR => {}
            other => {
                return Err(RequestError::UnknownFilter {
                    report,
                    filter: truncate(other),
                    accepted: if api.is_monthly() {
                        "month, year"
                    } else {
                        "none"
                    },
                });
            }
        }
    }
    let period = if api.is_monthly() {
        let month = filters.get(MONTH).ok_or(RequestError::MissingFilter {
            report,
            filter: MONTH,
        })?;
        let year = filters.get(YEAR).ok_or(RequestError::MissingFilter {
            report,
            filter: YEAR,
        })?;
        Some(Period {
            month: checked_month(month)?,
            year: checked_year(year)?,
        })
    } else {
        None
    };
    Ok(StatisticsQuery { api, period })
}

/// `XX`: two ASCII digits, 01 to 12 (the document's format; the provider answers
/// `wrong month value` otherwise).
fn checked_month(text: &str) -> Result<String, RequestError> {
    let month = text.trim();
    let two_digits = month.len() == 2 && month.bytes().all(|byte| byte.is_ascii_digit());
    if two_digits && ("01"..="12").contains(&month) {
        Ok(month.to_string())
    } else {
        Err(RequestError::BadMonth(truncate(text)))
    }
}

/// `YYYY`: four ASCII digits.
fn checked_year(text: &str) -> Result<String, RequestError> {
    let year = text.trim();
    if year.len() == 4 && year.bytes().all(|byte| byte.is_ascii_digit()) {
        Ok(year.to_string())
    } else {
        Err(RequestError::BadYear(truncate(text)))
    }
}

/// Lower-case hex md5, as PHP's `md5()` prints it (the document says "md5 du mot de passe";
/// the case is a GUESS from PHP's default).
pub fn md5_hex(password: &str) -> String {
    hex::encode(Md5::digest(password.as_bytes()))
}

/// `GET {base}/{script}?user=..&pass=md5[&month=XX&year=YYYY]`: the only transport the document
/// gives. Reading statistics changes nothing, so the host may resend it.
pub fn statistics_request(
    base_url: &str,
    query: &StatisticsQuery,
    credentials: &Credentials,
) -> HttpRequest {
    let base_url = if base_url.trim().is_empty() {
        DEFAULT_BASE_URL
    } else {
        base_url
    };
    let mut pairs: Vec<(&str, &str)> = vec![
        (USER, &credentials.user),
        (PASS_PARAMETER, &credentials.password_md5),
    ];
    if let Some(period) = &query.period {
        pairs.push((MONTH, &period.month));
        pairs.push((YEAR, &period.year));
    }
    let url = format!(
        "{}?{}",
        join_url(base_url, query.api.script()),
        encode_form(&pairs)
    );
    let mut request = HttpRequest::get(url)
        .header("Accept", "text/plain, text/csv, */*")
        .retry_safe(true);
    // The contract has no dedicated list of sensitive query parameters; `sensitive_headers` is
    // documented as covering "header values (and query parameters)", so `pass` is named there.
    request.sensitive_headers.push(PASS_PARAMETER.to_string());
    request
}
