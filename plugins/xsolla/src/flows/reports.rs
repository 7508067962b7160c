//! Reports: the seven read-only report calls, normalized into report records.

use gatehouse_plugin_api::http::encode_form;
use gatehouse_plugin_api::{
    Command, Details, HttpResponse, Invocation, Method, Operation, Outcome, ProviderError,
};

use crate::account::Account;
use crate::flows::{Started, extra_string};
use crate::transformers::errors::{Call, http_error};
use crate::transformers::json::parse_root;
use crate::transformers::records::{ReportKind, records_from_csv, records_from_json};
use crate::transformers::wire::{is_numeric_id, unix_to_date, unix_to_datetime};

/// Starts a report; the kind and the format are how `finish` reads the answer.
pub fn start(invocation: &Invocation) -> Started<(ReportKind, bool)> {
    let Command::Report {
        report,
        from,
        till,
        filters,
        extra,
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Report,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let kind = ReportKind::parse(report).ok_or_else(|| {
        let names: Vec<&str> = ReportKind::ALL.iter().map(|kind| kind.name()).collect();
        ProviderError::invalid_request(format!(
            "Xsolla has no report `{}`; the reports are: {}",
            gatehouse_plugin_api::error::truncate(report),
            names.join(", ")
        ))
        .with_field("report")
    })?;
    for name in filters.keys() {
        if !kind.allowed_filters().contains(&name.as_str()) {
            return Err(ProviderError::invalid_request(format!(
                "the `{}` report takes no filter `{}`; it takes: {}",
                kind.name(),
                gatehouse_plugin_api::error::truncate(name),
                kind.allowed_filters().join(", ")
            ))
            .with_field(format!("filters.{name}")));
        }
    }
    let format = filters
        .get("format")
        .map(String::as_str)
        .or(extra_string(extra, "format")?)
        .map(|format| format.trim().to_ascii_lowercase());
    let csv = match format.as_deref() {
        None | Some("json") => false,
        Some("csv") if kind.offers_csv() => true,
        Some(_) => {
            return Err(ProviderError::invalid_request(format!(
                "the `{}` report is available as {}",
                kind.name(),
                if kind.offers_csv() {
                    "`json` or `csv`"
                } else {
                    "`json` only"
                }
            ))
            .with_field("format"));
        }
    };
    let merchant = format!("/merchants/{}/reports", account.merchant_id);
    let extension = if csv { "csv" } else { "json" };
    let path = match kind {
        ReportKind::Reports => merchant,
        ReportKind::Registry => format!("{merchant}/transactions/registry.{extension}"),
        ReportKind::Search => format!("{merchant}/transactions/search.{extension}"),
        ReportKind::SimpleSearch => format!("{merchant}/transactions/simple_search"),
        ReportKind::PayoutsBreakdown => format!("{merchant}/transactions/summary/transfer"),
        ReportKind::Transfers => format!("{merchant}/transfers"),
        ReportKind::TransactionDetails => {
            let id = filters
                .get("transaction_id")
                .map(|id| id.trim())
                .unwrap_or_default();
            if !is_numeric_id(id) {
                return Err(ProviderError::invalid_request(
                    "the `transaction_details` report needs filter `transaction_id`: Xsolla's numeric id",
                )
                .with_field("filters.transaction_id"));
            }
            format!("{merchant}/transactions/{id}/details")
        }
    };
    let query = query_for(kind, *from, *till, filters)?;
    let pairs: Vec<(&str, &str)> = query
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let path = if pairs.is_empty() {
        path
    } else {
        format!("{path}?{}", encode_form(&pairs))
    };
    let accept = if csv { "text/csv" } else { "application/json" };
    let mut request = account.request(Method::Get, &path).retry_safe(true);
    request
        .headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case("accept"));
    let request = request.header("Accept", accept);
    Ok((request, (kind, csv)))
}

/// The query string: the period, the parameters an endpoint requires, then the filters as given
/// (a filter overrides a default of the same name).
fn query_for(
    kind: ReportKind,
    from: Option<i64>,
    till: Option<i64>,
    filters: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ProviderError> {
    // The registry documents `YYYY-MM-DD`; search is documented with "datetime strings", so it
    // gets full UTC date-times. The other reports' formats are not captured (GUESS): dates, as
    // for the registry. A `datetime_from` / `datetime_to` filter replaces either.
    let render = |seconds: i64, field: &str| {
        let rendered = match kind {
            ReportKind::Search | ReportKind::SimpleSearch => unix_to_datetime(seconds),
            _ => unix_to_date(seconds),
        };
        rendered.ok_or_else(|| {
            ProviderError::invalid_request(format!(
                "`{field}` must be a Unix time between 1970 and 9999"
            ))
            .with_field(field)
        })
    };
    let mut query: Vec<(String, String)> = Vec::new();
    if kind != ReportKind::TransactionDetails {
        if let Some(from) = from {
            query.push(("datetime_from".into(), render(from, "from")?));
        }
        if let Some(till) = till {
            query.push(("datetime_to".into(), render(till, "till")?));
        }
    }
    let defaults: &[(&str, &str)] = match kind {
        // The SDK marks `limit`, `offset` and `type` required for search.
        ReportKind::Search | ReportKind::SimpleSearch => {
            &[("limit", "100"), ("offset", "0"), ("type", "all")]
        }
        // Documented as required for the registry.
        ReportKind::Registry => &[("in_transfer_currency", "0"), ("show_total", "false")],
        _ => &[],
    };
    for (key, value) in defaults {
        query.push(((*key).into(), (*value).into()));
    }
    for (key, value) in filters {
        if key == "format" || (kind == ReportKind::TransactionDetails && key == "transaction_id") {
            continue;
        }
        query.retain(|(existing, _)| existing != key);
        query.push((key.clone(), value.clone()));
    }
    Ok(query)
}

pub fn finish(
    kind: ReportKind,
    csv: bool,
    response: &HttpResponse,
) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(Call::Report, response));
    }
    let (records, raw_text) = if csv {
        let text = String::from_utf8_lossy(&response.body).into_owned();
        (records_from_csv(&text)?, Some(text))
    } else {
        let root = parse_root(&response.body, kind.name())?;
        (records_from_json(kind, root)?, None)
    };
    Ok(Outcome::succeeded().with_details(Details::Report { records, raw_text }))
}
