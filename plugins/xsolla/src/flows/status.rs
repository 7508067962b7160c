//! Status: a transaction's details by its id, or a search by `external_id` (our reference) to
//! reconcile a charge whose answer was lost.

use gatehouse_plugin_api::http::encode_form;
use gatehouse_plugin_api::{
    Command, ErrorKind, HttpResponse, Invocation, Method, Outcome, ProviderError, Step,
};

use crate::FlowState;
use crate::config::Account;
use crate::transformers::errors::{Call, http_error};
use crate::transformers::json::{array, object, parse_root};
use crate::transformers::status::{conclusiveness, transaction_outcome};
use crate::transformers::wire::{is_numeric_id, unix_to_datetime};

/// How far back a search by reference looks. Not documented for search (GUESS): the registry
/// documents at most 92 days between its dates, and a charge being reconciled is recent.
const SEARCH_WINDOW_SECONDS: i64 = 92 * 86_400;
/// A day of slack after "now" for clocks that disagree.
const CLOCK_SLACK_SECONDS: i64 = 86_400;

pub fn start(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    let Command::Status {
        transaction_id,
        reference,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::plugin_fault(
            "status::start called for another command",
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
    match (transaction_id, reference) {
        (Some(id), _) => {
            if !is_numeric_id(id) {
                return Err(ProviderError::invalid_request(
                    "transaction_id must be Xsolla's numeric transaction id",
                )
                .with_field("transaction_id"));
            }
            let request = account.request(Method::Get, &format!("{merchant}/{id}/details"));
            Ok(Step::send(
                request.retry_safe(true),
                FlowState::StatusByTransaction,
            ))
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
            Ok(Step::send(
                request.retry_safe(true),
                FlowState::StatusByReference {
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

pub fn finish_details(response: &HttpResponse) -> Result<Outcome, ProviderError> {
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
    transaction_outcome(record)
}

/// Reads a search by `external_id`. No transaction means Xsolla never registered the charge
/// (not found); several mean retries created several, and the most conclusive one answers
/// whether the money moved.
pub fn finish_search(reference: &str, response: &HttpResponse) -> Result<Outcome, ProviderError> {
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
