//! Refunds: full (`PUT .../transactions/{id}/refund`) and partial (`PUT .../partial_refund`).

use gatehouse_plugin_api::error::truncate;
use gatehouse_plugin_api::{
    Command, Details, HttpResponse, Invocation, Method, Money, Operation, Outcome, ProviderError,
    TransactionInfo,
};

use serde_json::json;

use crate::account::Account;
use crate::flows::payment_page::check_positive;
use crate::flows::{Started, money_outcome_for_http_error, required};
use crate::transformers::errors::Call;
use crate::transformers::json::{amount_to_json, first_text, parse_root};
use crate::transformers::wire::{
    PartialRefundRequest, RefundRequest, is_numeric_id, to_json_bytes,
};

/// Starts a refund; the transaction id and the amount asked for (none: a full refund) are what
/// `finish` reports.
pub fn start(invocation: &Invocation) -> Started<(String, Option<Money>)> {
    let Command::Refund {
        transaction_id,
        amount,
        reason,
        email,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Refund,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let transaction_id = transaction_id.trim();
    if !is_numeric_id(transaction_id) {
        return Err(ProviderError::invalid_request(
            "transaction_id must be Xsolla's numeric transaction id",
        )
        .with_field("transaction_id"));
    }
    let description = required(
        reason.as_deref(),
        "reason",
        "Xsolla requires a description of the refund: give a reason",
    )?;
    if description.chars().count() > 4000 {
        return Err(
            ProviderError::invalid_request("reason must be at most 4000 characters")
                .with_field("reason"),
        );
    }
    let base = format!(
        "/merchants/{}/reports/transactions/{transaction_id}",
        account.merchant_id
    );
    let request = match amount {
        None => {
            if let Some(email) = email
                && email.chars().count() > 100
            {
                return Err(
                    ProviderError::invalid_request("email must be at most 100 characters")
                        .with_field("email"),
                );
            }
            let body = RefundRequest {
                description,
                email: email.as_deref(),
            };
            account.json_request(
                Method::Put,
                &format!("{base}/refund"),
                to_json_bytes(&body)?,
            )
        }
        Some(amount) => {
            check_positive(amount)?;
            if email.is_some() {
                return Err(ProviderError::invalid_request(
                    "Xsolla's partial refund takes no email: leave it out",
                )
                .with_field("email"));
            }
            let body = PartialRefundRequest {
                refund_amount: amount_to_json(amount)?,
                description,
            };
            account.json_request(
                Method::Put,
                &format!("{base}/partial_refund"),
                to_json_bytes(&body)?,
            )
        }
    };
    // Not retry-safe: a second request for the same refund is not documented as deduplicated.
    let request = request.retry_safe(false);
    Ok((request, (transaction_id.to_string(), *amount)))
}

/// 200 `{"message": ...}` or 204. Both only accept the request: Xsolla support completes a full
/// refund within two business days, and the `refund` / `partial_refund` webhook (or the
/// transaction status `refunded`) says when it is done, so the outcome is `pending`. A 2xx whose
/// body is neither empty nor JSON did not come from the documented API (a proxy page, a cut
/// answer): the refund may or may not have been accepted, so that is `unknown`.
pub fn finish(transaction_id: String, amount: Option<Money>, response: &HttpResponse) -> Outcome {
    let call = if amount.is_some() {
        Call::PartialRefund
    } else {
        Call::Refund
    };
    if !response.is_success() {
        return money_outcome_for_http_error(call, response);
    }
    let message = if response.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match parse_root(&response.body, call.describe()) {
            Ok(root) => first_text(root, &[&["message"]]),
            Err(error) => {
                let mut outcome = Outcome::unknown(error).with_provider_reference(transaction_id);
                outcome.amount = amount;
                return outcome;
            }
        }
    };
    let mut outcome = Outcome::pending().with_provider_reference(transaction_id);
    outcome.amount = amount;
    outcome.details = Details::Transaction(TransactionInfo {
        provider_status: Some("refund_requested".into()),
        raw: match message {
            Some(message) => json!({ "message": truncate(&message) }),
            None => serde_json::Value::Null,
        },
        ..TransactionInfo::default()
    });
    outcome
}
