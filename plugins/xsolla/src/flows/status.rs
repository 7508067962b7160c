//! Status: a transaction's details by its id, or a search by `external_id` (our reference) to
//! reconcile a charge whose answer was lost; and, asked with `of: refund`, whether a refund of a
//! transaction was made (its details show `refunded` / `awaitingRefund`).

use gatehouse_plugin_api::http::encode_form;
use gatehouse_plugin_api::{
    Command, ErrorKind, HttpResponse, Invocation, Method, Money, Operation, Outcome, ProviderError,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::account::Account;
use crate::flows::Started;
use crate::transformers::errors::{Call, http_error};
use crate::transformers::json::{array, object, parse_root};
use crate::transformers::status::{conclusiveness, refund_outcome, transaction_outcome};
use crate::transformers::wire::{is_numeric_id, unix_to_datetime};

/// How far back a search by reference looks. Not documented for search (GUESS): the registry
/// documents at most 92 days between its dates, and a charge being reconciled is recent.
const SEARCH_WINDOW_SECONDS: i64 = 92 * 86_400;
/// A day of slack after "now" for clocks that disagree.
const CLOCK_SLACK_SECONDS: i64 = 86_400;

/// What a status query asked, kept until its answer comes.
#[derive(Debug, Serialize, Deserialize)]
pub enum Asked {
    /// A charge, by its transaction id.
    ChargeDetails,
    /// A charge, found by our `external_id`.
    ChargeSearch { reference: String },
    /// A refund of the transaction: a partial one of `amount`, or a full one.
    Refund { amount: Option<Money> },
}

pub fn start(invocation: &Invocation) -> Started<Asked> {
    let Command::Status {
        transaction_id,
        reference,
        of,
        amount,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Status,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let merchant = format!("/merchants/{}/reports/transactions", account.merchant_id);
    let transaction_id = transaction_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty());
    let reference = reference
        .as_deref()
        .map(str::trim)
        .filter(|reference| !reference.is_empty());
    match of.unwrap_or(Operation::Charge) {
        Operation::Charge => {}
        Operation::Refund => {
            // A refund has no id of its own at Xsolla (the refund calls take none and answer
            // none): it is read from the refunded transaction's details.
            let id = transaction_id.ok_or_else(|| {
                ProviderError::invalid_request(
                    "the status of a refund needs `transaction_id`, the Xsolla transaction that was refunded",
                )
                .with_field("transaction_id")
            })?;
            if !is_numeric_id(id) {
                return Err(ProviderError::invalid_request(
                    "transaction_id must be Xsolla's numeric transaction id",
                )
                .with_field("transaction_id"));
            }
            let request = account.request(Method::Get, &format!("{merchant}/{id}/details"));
            return Ok((request.retry_safe(true), Asked::Refund { amount: *amount }));
        }
        other => {
            return Err(ProviderError::not_supported(format!(
                "Xsolla's status describes charges and refunds, not a `{other}`"
            )));
        }
    }
    match (transaction_id, reference) {
        (Some(id), _) => {
            if !is_numeric_id(id) {
                return Err(ProviderError::invalid_request(
                    "transaction_id must be Xsolla's numeric transaction id",
                )
                .with_field("transaction_id"));
            }
            let request = account.request(Method::Get, &format!("{merchant}/{id}/details"));
            Ok((request.retry_safe(true), Asked::ChargeDetails))
        }
        (None, Some(reference)) => {
            let now = invocation.now_unix;
            let from = unix_to_datetime(now.saturating_sub(SEARCH_WINDOW_SECONDS).max(0));
            let to = unix_to_datetime(now.saturating_add(CLOCK_SLACK_SECONDS));
            let (Some(from), Some(to)) = (from, to) else {
                return Err(ProviderError::invalid_request(
                    "the host's clock is outside 1970-9999",
                ));
            };
            let query = encode_form(&[
                ("external_id", reference),
                ("datetime_from", &from),
                ("datetime_to", &to),
                ("type", "all"),
                ("offset", "0"),
                ("limit", "100"),
            ]);
            let request = account.request(Method::Get, &format!("{merchant}/search.json?{query}"));
            Ok((
                request.retry_safe(true),
                Asked::ChargeSearch {
                    reference: reference.to_string(),
                },
            ))
        }
        (None, None) => Err(ProviderError::invalid_request(
            "status needs `transaction_id` (Xsolla's id) or `reference` (our external_id)",
        )
        .with_field("transaction_id")),
    }
}

/// Reads the answer to what was asked.
pub fn finish(asked: Asked, response: &HttpResponse) -> Result<Outcome, ProviderError> {
    match asked {
        Asked::ChargeDetails => finish_details(response),
        Asked::ChargeSearch { reference } => finish_search(&reference, response),
        Asked::Refund { amount } => refund_outcome(details_record(response)?, amount),
    }
}

fn finish_details(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    transaction_outcome(details_record(response)?)
}

/// The one transaction record of a transaction-details answer.
fn details_record(response: &HttpResponse) -> Result<&RawValue, ProviderError> {
    if !response.is_success() {
        return Err(http_error(Call::TransactionDetails, response));
    }
    let root = parse_root(&response.body, "transaction-details")?;
    // One object [GUESS: shaped like a search element]; a one-element list is accepted too.
    let record = match array(root) {
        Some(elements) => elements.into_iter().next().ok_or_else(|| {
            ProviderError::malformed_response(
                "Xsolla's transaction-details answer is an empty list",
            )
        })?,
        None => root,
    };
    if object(record).is_none() {
        return Err(ProviderError::malformed_response(
            "Xsolla's transaction-details answer is not an object",
        ));
    }
    Ok(record)
}

/// Reads a search by `external_id`. No transaction means Xsolla never registered the charge
/// (not found); several mean retries created several, and the most conclusive one answers
/// whether the money moved.
fn finish_search(reference: &str, response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(Call::SearchByExternalId, response));
    }
    let root = parse_root(&response.body, "search")?;
    let elements = array(root)
        .ok_or_else(|| ProviderError::malformed_response("Xsolla's search answer is not a list"))?;
    let mut best: Option<Outcome> = None;
    for element in elements {
        if object(element).is_none() {
            return Err(ProviderError::malformed_response(
                "an element of Xsolla's search answer is not an object",
            ));
        }
        let outcome = transaction_outcome(element)?;
        let better = best
            .as_ref()
            .is_none_or(|current| conclusiveness(outcome.status) > conclusiveness(current.status));
        if better {
            best = Some(outcome);
        }
    }
    best.ok_or_else(|| {
        ProviderError::new(
            ErrorKind::NotFound,
            format!(
                "Xsolla has no transaction with external_id `{}` in the last 92 days",
                gatehouse_plugin_api::error::truncate(reference)
            ),
        )
    })
}
