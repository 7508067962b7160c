//! The answer of `payments_get`: the document's `<page><payments><payment>…` list, or an
//! `<error>`.
//!
//! Shape (seed document):
//! ```text
//! <page>
//!  <pagename> Payments_list </pagename>
//!  <payments>
//!   <payment>
//!    <user>…</user> <date>…</date> <amount>…</amount> <amount_with_tax>…</amount_with_tax>
//!    <comment>…</comment> <currency>…</currency>
//!    <user_balance_before_payment>…</user_balance_before_payment>
//!    <user_balance_after_payment>…</user_balance_after_payment>
//!   </payment>
//!  </payments>
//! </page>
//! ```
//! Values are padded with spaces in the document's example, so every text is trimmed. The two
//! balance fields are missing from older (M2) revisions of the page, so they are optional.

use std::collections::BTreeMap;

use gatehouse_plugin_api::{Currency, ErrorKind, Money, MoneyError, ProviderError, ReportRecord};
use serde_json::{Map, Value};

use super::query::is_plain_decimal;
use super::xml::{Element, parse_document};

/// The `<pagename>` of this answer, as the document writes it (between spaces).
pub const PAGE_NAME: &str = "Payments_list";

/// The fields that carry amounts; all are decimals in the payment's `<currency>`.
/// GUESS: the document does not say which currency the balances are in; they are read in the
/// payment's currency (their exact text is in `raw` whatever happens).
pub const AMOUNT_FIELDS: [&str; 4] = [
    "amount",
    "amount_with_tax",
    "user_balance_before_payment",
    "user_balance_after_payment",
];

/// Where a record's explanations go in its `raw` object: why an amount is only in `raw`.
pub const NOTES_KEY: &str = "_gatehouse_notes";

/// What the server answered, when it answered in a form this plugin understands.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentsAnswer {
    Payments(Vec<ReportRecord>),
    /// The server refused the request with an `<error>` (or a bare `<status>` text).
    Refused(ProviderError),
}

/// Reads a `payments_get` body. `Err` means the body is not a Kolmisoft answer at all.
pub fn read_payments_answer(body: &[u8]) -> Result<PaymentsAnswer, ProviderError> {
    let document = parse_document(body).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Kolmisoft's payments_get answer is not readable XML: {error}"
        ))
    })?;

    // Error documents: `<error>` at the root, under `<page>`, or under `<page><status>` on other
    // methods' wiki pages. GUESS (`providers.md`): take an `<error>` wherever it is.
    if let Some(error) = document.find_descendant("error") {
        return Ok(PaymentsAnswer::Refused(refusal(error.text.trim())));
    }
    // The wiki (MOR API rate get) shows `<status>GET Requests are disabled</status>`: a refusal
    // written as a bare status text.
    if document.name == "status" && document.children.is_empty() {
        return Ok(PaymentsAnswer::Refused(refusal(document.text.trim())));
    }
    if document.name.eq_ignore_ascii_case("html") {
        return Err(ProviderError::malformed_response(
            "Kolmisoft answered with an <html> document instead of <page>: a web page rather than the API, or the \
             server's \"XML API Extension\" setting (which wraps XML in <HTML>) is on; turn it off",
        ));
    }
    if document.name != "page" {
        return Err(ProviderError::malformed_response(format!(
            "Kolmisoft's payments_get answer has root <{}>, expected <page>",
            truncate_short(&document.name)
        )));
    }
    if let Some(page_name) = document.children_named("pagename").next()
        && page_name.text.trim() != PAGE_NAME
    {
        return Err(ProviderError::malformed_response(format!(
            "Kolmisoft answered page `{}`, expected `{PAGE_NAME}`",
            truncate_short(page_name.text.trim())
        )));
    }
    let mut lists = document.children_named("payments");
    let (Some(list), None) = (lists.next(), lists.next()) else {
        return Err(ProviderError::malformed_response(
            "Kolmisoft's payments_get answer must hold exactly one <payments> list",
        ));
    };
    list.children
        .iter()
        .enumerate()
        .map(|(index, child)| {
            if child.name == "payment" {
                payment_record(index + 1, child)
            } else {
                Err(ProviderError::malformed_response(format!(
                    "Kolmisoft's <payments> list holds <{}>, expected only <payment>",
                    truncate_short(&child.name)
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(PaymentsAnswer::Payments)
}

/// Maps an `<error>` text to a normalized error.
pub fn refusal(text: &str) -> ProviderError {
    let normalized = text.to_ascii_lowercase();
    let error = match normalized.as_str() {
        "bad login" => ProviderError::new(
            ErrorKind::Authentication,
            "Kolmisoft found no API user with the configured `username` (parameter u): Bad login",
        ),
        "incorrect hash" => ProviderError::new(
            ErrorKind::Authentication,
            "Kolmisoft refused the request's hash (Incorrect hash): the configured `secret_key` is not the server's \
             API Secret Key, or the server hashes the parameters in another order than the document's \
             (user_id_s, from_s, till_s, username_s, first_name_s, last_name_s, amount_min_s, amount_max_s, currency_s)",
        ),
        "" => ProviderError::new(
            ErrorKind::ProviderError,
            "Kolmisoft answered an empty error",
        ),
        _ => ProviderError::new(
            ErrorKind::ProviderError,
            format!("Kolmisoft refused the request: {}", truncate_short(text)),
        ),
    };
    if text.is_empty() {
        error
    } else {
        error.with_provider_message(text)
    }
}

/// Maps an HTTP-level failure. The document defines none (errors travel as `<error>` in the
/// body), so a non-2xx answer without a readable `<error>` is the web server's or a proxy's and
/// reads the common way.
pub fn http_error(status: u16, body: &[u8]) -> ProviderError {
    let kind = ErrorKind::for_http_status(status);
    let hint = if status == 404 {
        " (is the account's base_url the server's `/billing` address?)"
    } else {
        ""
    };
    ProviderError::new(kind, format!("Kolmisoft answered HTTP {status}{hint}"))
        .with_provider_code(status.to_string())
        .with_provider_message(String::from_utf8_lossy(body).trim())
}

/// One `<payment>` as a normalized record. Every field the server sent is kept in `raw`, trimmed;
/// an amount that cannot be exact `Money` stays in `raw` only, with a note under [`NOTES_KEY`]
/// saying why. Nothing is rounded and no record is dropped.
fn payment_record(position: usize, payment: &Element) -> Result<ReportRecord, ProviderError> {
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for field in &payment.children {
        if !field.children.is_empty() {
            return Err(ProviderError::malformed_response(format!(
                "Kolmisoft's payment #{position}: <{}> holds elements, expected text",
                truncate_short(&field.name)
            )));
        }
        if fields
            .insert(&field.name, field.text.trim().to_string())
            .is_some()
        {
            return Err(ProviderError::malformed_response(format!(
                "Kolmisoft's payment #{position} has <{}> twice",
                truncate_short(&field.name)
            )));
        }
    }
    let non_empty = |name: &str| fields.get(name).filter(|value| !value.is_empty()).cloned();

    let mut notes = Vec::new();
    let currency = match non_empty("currency") {
        None => Err("the payment names no currency".to_string()),
        Some(code) => Currency::from_code(&code.to_ascii_uppercase()).map_err(|_| {
            format!(
                "currency `{}` is not an ISO 4217 currency with minor units",
                truncate_short(&code)
            )
        }),
    };
    if let Err(reason) = &currency
        && AMOUNT_FIELDS.iter().any(|field| non_empty(field).is_some())
    {
        notes.push(format!("amounts are kept only in raw: {reason}"));
    }

    let mut amounts = BTreeMap::new();
    let mut amount = None;
    for field in AMOUNT_FIELDS {
        let Some(text) = non_empty(field) else {
            continue;
        };
        let Some(money) = exact_amount(field, &text, currency.as_ref().ok(), &mut notes) else {
            continue;
        };
        if field == "amount" {
            amount = Some(money);
        } else {
            amounts.insert(field.to_string(), money);
        }
    }

    let mut raw: Map<String, Value> = fields
        .iter()
        .map(|(name, value)| ((*name).to_string(), Value::String(value.clone())))
        .collect();
    if !notes.is_empty() {
        raw.insert(
            NOTES_KEY.into(),
            Value::Array(notes.into_iter().map(Value::String).collect()),
        );
    }
    Ok(ReportRecord {
        id: None,
        date: non_empty("date"),
        amount,
        status: None,
        party: non_empty("user"),
        description: non_empty("comment"),
        amounts,
        raw: Value::Object(raw),
    })
}

/// The amount as exact `Money`, or `None` with a note when it cannot be one.
///
/// Decision: Kolmisoft stores amounts with more decimals than most currencies have (MOR keeps 4
/// or more). `12.3400` USD is exactly 12.34 and becomes `Money`; `12.3456` USD is not a whole
/// number of cents, so it is not rounded into one: it stays exact in `raw`, and a note says why.
fn exact_amount(
    field: &str,
    text: &str,
    currency: Option<&Currency>,
    notes: &mut Vec<String>,
) -> Option<Money> {
    if !is_plain_decimal(text) {
        notes.push(format!(
            "`{field}` `{}` is not a plain decimal; it is kept only in raw",
            truncate_short(text)
        ));
        return None;
    }
    let currency = currency?;
    match Money::parse_decimal(text, *currency) {
        Ok(money) => Some(money),
        Err(MoneyError::TooManyDecimals { exponent, .. }) => {
            notes.push(format!(
                "`{field}` {text} has more decimals than {currency} allows ({exponent}); the exact value is kept in raw, not rounded"
            ));
            None
        }
        Err(error) => {
            notes.push(format!("`{field}` is kept only in raw: {error}"));
            None
        }
    }
}

/// Provider text quoted inside our own messages is kept short; the full text (bounded) travels
/// in `provider_message` or `raw`.
fn truncate_short(text: &str) -> String {
    if text.chars().count() <= 80 {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(80).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gatehouse_plugin_api::error::truncate;

    #[test]
    fn long_provider_text_is_bounded_everywhere() {
        let text = "x".repeat(10_000);
        let error = refusal(&text);
        assert!(error.message.len() < 200);
        assert!(
            error.provider_message.unwrap().chars().count()
                <= gatehouse_plugin_api::error::MAX_PROVIDER_TEXT + 1
        );
        assert_eq!(
            truncate(&text).chars().count(),
            gatehouse_plugin_api::error::MAX_PROVIDER_TEXT + 1
        );
    }
}
