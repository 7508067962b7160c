//! Report answers normalized into [`ReportRecord`]s: exact amounts, plus each record verbatim.
//!
//! Documented shape (providers.md, find-transactions sample): a JSON array of objects with
//! `transaction`, `user`, `payment_details`, `purchase`, `payment_system` members. The registry,
//! simple-search and transaction-details answers are assumed to share it (GUESS). Transfers,
//! financial reports and the payouts breakdown have no captured schema at all (GUESS): their
//! readers try the field names seen in public integrations (`transfer_id`/`payout.id`,
//! `report_id`, `currency`/`IsoCurrency`, ...) and keep every record verbatim in `raw`, so an
//! unexpected shape loses normalized columns, never data.

use std::collections::BTreeMap;

use gatehouse_plugin_api::{Currency, Money, ProviderError, ReportRecord};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::transformers::json::{
    MoneyPath, amount_from_raw, array, first_text, get_path, money_at, object, scalar_text,
    to_value,
};

/// The reports the `report` command accepts, by the names the manifest lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// `GET /merchants/{merchant_id}/reports`: financial reports of a period.
    Reports,
    /// `GET .../reports/transactions/registry.{format}`: successful and cancelled transactions.
    Registry,
    /// `GET .../reports/transactions/search.{format}`: transactions by criteria, failed ones too.
    Search,
    /// `GET .../reports/transactions/simple_search`: the fast search.
    SimpleSearch,
    /// `GET .../reports/transactions/summary/transfer`: payouts broken down by currency.
    PayoutsBreakdown,
    /// `GET /merchants/{merchant_id}/reports/transfers`: payouts of a period.
    Transfers,
    /// `GET .../reports/transactions/{transaction_id}/details`: one transaction.
    TransactionDetails,
}

impl ReportKind {
    pub const ALL: [ReportKind; 7] = [
        Self::Reports,
        Self::Registry,
        Self::Search,
        Self::SimpleSearch,
        Self::PayoutsBreakdown,
        Self::Transfers,
        Self::TransactionDetails,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reports => "reports",
            Self::Registry => "registry",
            Self::Search => "search",
            Self::SimpleSearch => "simple_search",
            Self::PayoutsBreakdown => "payouts_breakdown",
            Self::Transfers => "transfers",
            Self::TransactionDetails => "transaction_details",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the endpoint answers CSV when asked (`registry.csv`, `search.csv`).
    pub fn offers_csv(self) -> bool {
        matches!(self, Self::Registry | Self::Search)
    }

    /// The query parameters each endpoint documents (providers.md); any other filter is refused
    /// before a request is sent, naming the filter.
    pub fn allowed_filters(self) -> &'static [&'static str] {
        const SEARCH: &[&str] = &[
            "datetime_from",
            "datetime_to",
            "project_id",
            "transaction_id",
            "type",
            "phone",
            "user_id",
            "user_name",
            "user_custom",
            "email",
            "external_id",
            "offset",
            "limit",
            "status",
            "show_dry_run",
            "transaction_type",
            "format",
        ];
        match self {
            Self::Reports | Self::Transfers => &["datetime_from", "datetime_to"],
            Self::Registry => &[
                "datetime_from",
                "datetime_to",
                "in_transfer_currency",
                "show_total",
                "merchant_of_records",
                "project_id",
                "show_dry_run",
                "transfer_id",
                "report_id",
                "offset",
                "limit",
                "status",
                "format",
            ],
            Self::Search => SEARCH,
            // The fast search answers JSON only, so `format` is not among its filters.
            Self::SimpleSearch => &SEARCH[..SEARCH.len() - 1],
            Self::PayoutsBreakdown => &[
                "datetime_from",
                "datetime_to",
                "project_id",
                "in_transfer_currency",
                "show_total",
            ],
            Self::TransactionDetails => &["transaction_id"],
        }
    }
}

pub const TRANSACTION_ID: &[&[&str]] = &[&["transaction", "id"], &["transaction_id"], &["id"]];
pub const TRANSACTION_EXTERNAL_ID: &[&[&str]] =
    &[&["transaction", "external_id"], &["external_id"]];
pub const TRANSACTION_STATUS: &[&[&str]] = &[&["transaction", "status"], &["status"]];
pub const TRANSACTION_DATE: &[&[&str]] = &[
    &["transaction", "create_date"],
    &["transaction", "payment_date"],
    &["transaction", "transfer_date"],
    &["create_date"],
    &["date"],
];

/// The amounts a transaction record may carry, by the name they get in `ReportRecord::amounts`.
/// The first one present is also the record's main amount: what the user paid.
const TRANSACTION_AMOUNTS: &[(&str, MoneyPath<'static>)] = &[
    (
        "payment",
        MoneyPath {
            amount: &["payment_details", "payment", "amount"],
            currency: &["payment_details", "payment", "currency"],
        },
    ),
    (
        "checkout",
        MoneyPath {
            amount: &["purchase", "checkout", "amount"],
            currency: &["purchase", "checkout", "currency"],
        },
    ),
    (
        "simple_checkout",
        MoneyPath {
            amount: &["purchase", "simple_checkout", "amount"],
            currency: &["purchase", "simple_checkout", "currency"],
        },
    ),
    (
        "total",
        MoneyPath {
            amount: &["purchase", "total", "amount"],
            currency: &["purchase", "total", "currency"],
        },
    ),
    (
        "amount",
        MoneyPath {
            amount: &["amount"],
            currency: &["currency"],
        },
    ),
];

/// Amounts written in the payment's currency without a currency of their own.
const PAYMENT_CURRENCY_AMOUNTS: &[(&str, &[&str])] = &[
    (
        "payment_from_ps",
        &["payment_details", "payment", "amount_from_ps"],
    ),
    ("sales_tax", &["payment_details", "sales_tax", "amount"]),
];

/// Further amounts with their own currency.
const OTHER_AMOUNTS: &[(&str, MoneyPath<'static>)] = &[
    (
        "vat",
        MoneyPath {
            amount: &["payment_details", "vat", "amount"],
            currency: &["payment_details", "vat", "currency"],
        },
    ),
    (
        "payout",
        MoneyPath {
            amount: &["payment_details", "payout", "amount"],
            currency: &["payment_details", "payout", "currency"],
        },
    ),
    (
        "xsolla_fee",
        MoneyPath {
            amount: &["payment_details", "xsolla_fee", "amount"],
            currency: &["payment_details", "xsolla_fee", "currency"],
        },
    ),
    (
        "payment_method_fee",
        MoneyPath {
            amount: &["payment_details", "payment_method_fee", "amount"],
            currency: &["payment_details", "payment_method_fee", "currency"],
        },
    ),
];

/// The main amount of a transaction record: what the user paid, else what was bought.
pub fn transaction_amount(record: &RawValue) -> Result<Option<Money>, ProviderError> {
    for (_, path) in TRANSACTION_AMOUNTS {
        if let Some(money) = money_at(record, *path, None)? {
            return Ok(Some(money));
        }
    }
    Ok(None)
}

/// One transaction (search, registry, simple search, details) as a report record.
pub fn transaction_record(record: &RawValue) -> Result<ReportRecord, ProviderError> {
    let mut amounts = BTreeMap::new();
    let mut main_amount = None;
    for (name, path) in TRANSACTION_AMOUNTS.iter().chain(OTHER_AMOUNTS) {
        if let Some(money) = money_at(record, *path, None)? {
            main_amount = main_amount.or(Some(money));
            amounts.insert((*name).to_string(), money);
        }
    }
    let payment_currency = amounts.get("payment").map(|money| money.currency);
    for (name, amount_path) in PAYMENT_CURRENCY_AMOUNTS {
        let path = MoneyPath {
            amount: amount_path,
            currency: &["__none__"],
        };
        if let Some(money) = money_at(record, path, payment_currency)? {
            amounts.insert((*name).to_string(), money);
        }
    }
    Ok(ReportRecord {
        id: first_text(record, TRANSACTION_ID),
        date: first_text(record, TRANSACTION_DATE),
        amount: main_amount,
        status: first_text(record, TRANSACTION_STATUS),
        party: first_text(record, &[&["user", "id"], &["user_id"]]),
        description: first_text(
            record,
            &[
                &["transaction", "refund_reason"],
                &["payment_system", "decline_reason"],
                &["transaction", "external_id"],
            ],
        ),
        amounts,
        raw: to_value(record),
    })
}

/// A transfer (payout) record [GUESS shape].
fn transfer_record(record: &RawValue) -> Result<ReportRecord, ProviderError> {
    const PATHS: &[(&str, MoneyPath<'static>)] = &[
        (
            "amount",
            MoneyPath {
                amount: &["amount"],
                currency: &["currency"],
            },
        ),
        (
            "payout",
            MoneyPath {
                amount: &["payout", "amount"],
                currency: &["payout", "currency"],
            },
        ),
        (
            "transfer",
            MoneyPath {
                amount: &["transfer", "amount"],
                currency: &["transfer", "currency"],
            },
        ),
    ];
    let (amount, amounts) = amounts_of(record, PATHS)?;
    Ok(ReportRecord {
        id: first_text(
            record,
            &[
                &["transfer_id"],
                &["id"],
                &["payout", "id"],
                &["transfer", "id"],
            ],
        ),
        date: first_text(
            record,
            &[
                &["date"],
                &["datetime"],
                &["payout", "date"],
                &["transfer", "date"],
            ],
        ),
        amount,
        status: first_text(
            record,
            &[&["status"], &["payout", "status"], &["transfer", "status"]],
        ),
        party: None,
        description: first_text(record, &[&["description"], &["comment"]]),
        amounts,
        raw: to_value(record),
    })
}

/// A financial report record [GUESS shape].
fn financial_report_record(record: &RawValue) -> Result<ReportRecord, ProviderError> {
    const PATHS: &[(&str, MoneyPath<'static>)] = &[(
        "amount",
        MoneyPath {
            amount: &["amount"],
            currency: &["currency"],
        },
    )];
    let (amount, amounts) = amounts_of(record, PATHS)?;
    let year_month = match (
        first_text(record, &[&["year"]]),
        first_text(record, &[&["month"]]),
    ) {
        (Some(year), Some(month)) => Some(format!("{year}-{month:0>2}")),
        _ => None,
    };
    Ok(ReportRecord {
        id: first_text(record, &[&["report_id"], &["id"]]),
        date: first_text(record, &[&["datetime_from"], &["date"]]).or(year_month),
        amount,
        status: first_text(record, &[&["status"]]),
        party: None,
        description: first_text(
            record,
            &[&["agreement_document_id"], &["description"], &["name"]],
        ),
        amounts,
        raw: to_value(record),
    })
}

/// One currency of the payouts breakdown [GUESS shape].
fn breakdown_record(record: &RawValue) -> Result<ReportRecord, ProviderError> {
    const CURRENCY: &[&[&str]] = &[
        &["currency"],
        &["IsoCurrency"],
        &["iso_currency"],
        &["Currency"],
    ];
    let currency_code = first_text(record, CURRENCY);
    let currency = currency_code
        .as_deref()
        .and_then(|code| Currency::from_code(code).ok());
    let mut amounts = BTreeMap::new();
    let mut main_amount = None;
    for name in ["amount", "Amount", "sum", "payout", "total"] {
        let path = MoneyPath {
            amount: &[name],
            currency: &["__none__"],
        };
        let field: &[&str] = &[name];
        // Only scalar amounts: an object under `payout` is read below through its own currency.
        if get_path(record, field).and_then(scalar_text).is_none() {
            continue;
        }
        if let Some(money) = money_at(record, path, currency)? {
            main_amount = main_amount.or(Some(money));
            amounts.insert(name.to_ascii_lowercase(), money);
        }
    }
    Ok(ReportRecord {
        id: currency_code,
        date: None,
        amount: main_amount,
        status: None,
        party: None,
        description: first_text(record, &[&["transactions_count"]])
            .map(|count| format!("{count} transactions")),
        amounts,
        raw: to_value(record),
    })
}

fn amounts_of(
    record: &RawValue,
    paths: &[(&str, MoneyPath<'_>)],
) -> Result<(Option<Money>, BTreeMap<String, Money>), ProviderError> {
    let mut amounts = BTreeMap::new();
    let mut main_amount = None;
    for (name, path) in paths {
        if let Some(money) = money_at(record, *path, None)? {
            main_amount = main_amount.or(Some(money));
            amounts.insert((*name).to_string(), money);
        }
    }
    Ok((main_amount, amounts))
}

/// Wrappers a list might come in, if not at the root as documented for search.
const LIST_WRAPPERS: &[&str] = &[
    "items",
    "data",
    "transactions",
    "reports",
    "transfers",
    "records",
];

/// Splits a JSON report answer into records.
pub fn records_from_json(
    kind: ReportKind,
    root: &RawValue,
) -> Result<Vec<ReportRecord>, ProviderError> {
    let elements = match array(root) {
        Some(elements) => elements,
        None => {
            let members = object(root).ok_or_else(|| {
                ProviderError::malformed_response(format!(
                    "Xsolla's {} answer is neither a list nor an object",
                    kind.name()
                ))
            })?;
            let wrapped = LIST_WRAPPERS
                .iter()
                .find_map(|key| members.get(*key).and_then(|value| array(value)));
            match wrapped {
                Some(elements) => elements,
                None if kind == ReportKind::PayoutsBreakdown && keyed_by_currency(&members) => {
                    return breakdown_keyed_by_currency(&members);
                }
                None => vec![root],
            }
        }
    };
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            if object(element).is_none() {
                return Err(ProviderError::malformed_response(format!(
                    "record {index} of Xsolla's {} answer is not an object",
                    kind.name()
                )));
            }
            match kind {
                ReportKind::Registry
                | ReportKind::Search
                | ReportKind::SimpleSearch
                | ReportKind::TransactionDetails => transaction_record(element),
                ReportKind::Transfers => transfer_record(element),
                ReportKind::Reports => financial_report_record(element),
                ReportKind::PayoutsBreakdown => breakdown_record(element),
            }
        })
        .collect()
}

fn keyed_by_currency(members: &BTreeMap<String, &RawValue>) -> bool {
    !members.is_empty() && members.keys().all(|key| Currency::from_code(key).is_ok())
}

/// `{"USD": 12.5, "EUR": {"amount": 3}}`: one record per currency.
fn breakdown_keyed_by_currency(
    members: &BTreeMap<String, &RawValue>,
) -> Result<Vec<ReportRecord>, ProviderError> {
    let mut records = Vec::new();
    for (code, value) in members {
        let currency = Currency::from_code(code).map_err(|error| {
            ProviderError::malformed_response(format!("payouts breakdown: {error}"))
        })?;
        let amount = match object(value) {
            Some(_) => money_at(
                value,
                MoneyPath {
                    amount: &["amount"],
                    currency: &["__none__"],
                },
                Some(currency),
            )?,
            None => Some(amount_from_raw(value, currency, code)?),
        };
        let mut amounts = BTreeMap::new();
        if let Some(amount) = amount {
            amounts.insert("amount".to_string(), amount);
        }
        let mut raw = serde_json::Map::new();
        raw.insert(code.clone(), to_value(value));
        records.push(ReportRecord {
            id: Some(code.clone()),
            amount,
            amounts,
            raw: Value::Object(raw),
            ..ReportRecord::default()
        });
    }
    Ok(records)
}

/// Splits a CSV answer (`registry.csv`, `search.csv`) into records keyed by the header row. The
/// CSV columns are not documented (GUESS): `id`, `status`, `date` and the amount are filled when
/// a column is named like the JSON fields (`transaction_id`, `status`, `amount` + `currency`...).
pub fn records_from_csv(text: &str) -> Result<Vec<ReportRecord>, ProviderError> {
    let rows = parse_csv(text);
    let Some((header, rows)) = rows.split_first() else {
        return Ok(Vec::new());
    };
    let normalized: Vec<String> = header.iter().map(|name| normalize_column(name)).collect();
    let column = |names: &[&str]| {
        normalized
            .iter()
            .position(|name| names.contains(&name.as_str()))
    };
    let id_column = column(&["transaction_id", "id", "transaction"]);
    let status_column = column(&["status", "transaction_status"]);
    let date_column = column(&[
        "create_date",
        "date",
        "transaction_create_date",
        "payment_date",
    ]);
    let amount_column = column(&["amount", "payment_amount", "sum"]);
    let currency_column = column(&["currency", "payment_currency"]);
    let party_column = column(&["user_id", "user"]);
    let mut records = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        if row.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        let cell = |position: Option<usize>| {
            position
                .and_then(|position| row.get(position))
                .map(|cell| cell.trim().to_string())
                .filter(|cell| !cell.is_empty())
        };
        let amount = match (cell(amount_column), cell(currency_column)) {
            (Some(amount), Some(code)) => match Currency::from_code(&code) {
                Ok(currency) => Some(Money::parse_decimal(&amount, currency).map_err(|error| {
                    ProviderError::malformed_response(format!(
                        "row {} of Xsolla's CSV answer has an inexact amount: {error}",
                        index + 1
                    ))
                })?),
                Err(_) => None,
            },
            _ => None,
        };
        let raw: serde_json::Map<String, Value> = header
            .iter()
            .enumerate()
            .map(|(position, name)| {
                (
                    name.clone(),
                    Value::String(row.get(position).cloned().unwrap_or_default()),
                )
            })
            .collect();
        let mut amounts = BTreeMap::new();
        if let Some(amount) = amount {
            amounts.insert("amount".to_string(), amount);
        }
        records.push(ReportRecord {
            id: cell(id_column),
            date: cell(date_column),
            amount,
            status: cell(status_column),
            party: cell(party_column),
            description: None,
            amounts,
            raw: Value::Object(raw),
        });
    }
    Ok(records)
}

fn normalize_column(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .to_ascii_lowercase()
        .replace([' ', '.', '-'], "_")
}

/// RFC 4180 CSV: quoted cells, doubled quotes, CRLF or LF. The separator is `,`, or `;` when the
/// header has semicolons and no commas.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let first_line = text.lines().next().unwrap_or("");
    let separator = if first_line.contains(';') && !first_line.contains(',') {
        ';'
    } else {
        ','
    };
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut in_quotes = false;
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if in_quotes {
            match character {
                '"' if characters.peek() == Some(&'"') => {
                    cell.push('"');
                    characters.next();
                }
                '"' => in_quotes = false,
                other => cell.push(other),
            }
            continue;
        }
        match character {
            '"' => in_quotes = true,
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            other if other == separator => row.push(std::mem::take(&mut cell)),
            other => cell.push(other),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transformers::json::parse_root;

    #[test]
    fn csv_with_quotes_and_semicolons() {
        let rows = parse_csv("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n");
        assert_eq!(rows, vec![vec!["a", "b"], vec!["x,1", "say \"hi\""]]);
        let rows = parse_csv("a;b\n1;2");
        assert_eq!(rows, vec![vec!["a", "b"], vec!["1", "2"]]);
    }

    #[test]
    fn breakdown_accepts_lists_and_currency_keyed_objects() {
        let root = parse_root(
            br#"[{"IsoCurrency":"KWD","amount":1.234,"transactions_count":2}]"#,
            "t",
        )
        .expect("json");
        let records = records_from_json(ReportKind::PayoutsBreakdown, root).expect("records");
        assert_eq!(records[0].amount.map(|m| m.minor_units), Some(1234));
        let root = parse_root(br#"{"USD":"12.50","JPY":{"amount":300}}"#, "t").expect("json");
        let records = records_from_json(ReportKind::PayoutsBreakdown, root).expect("records");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id.as_deref(), Some("JPY"));
        assert_eq!(records[0].amount.map(|m| m.minor_units), Some(300));
        assert_eq!(records[1].amount.map(|m| m.minor_units), Some(1250));
    }
}
