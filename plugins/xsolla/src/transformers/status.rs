//! Xsolla transaction statuses and the normalized outcome each one means.
//!
//! The statuses are the `status` filter values the find-transactions page documents:
//! `created, processing, done, canceled, error, review, refunded, awaitingRefund`.
//!
//! | Xsolla            | outcome     | why |
//! |-------------------|-------------|-----|
//! | `done`            | succeeded   | paid |
//! | `refunded`        | succeeded   | the payment happened, then was refunded; `provider_status` says `refunded` |
//! | `awaitingRefund`  | succeeded   | the payment happened; a refund is on its way; `provider_status` says so |
//! | `created`         | pending     | the user has not paid yet |
//! | `processing`      | pending     | the payment system has not answered yet |
//! | `review`          | pending     | held for anti-fraud review |
//! | `canceled`        | failed      | cancelled before completion (or by the payment system) |
//! | `error`           | failed      | the payment failed |
//! | anything else     | unknown     | undocumented: reconciled or looked at by an operator, never guessed |

use gatehouse_plugin_api::{
    Details, ErrorKind, Money, Outcome, OutcomeStatus, ProviderError, TransactionInfo,
};
use serde_json::value::RawValue;

use crate::transformers::json::{first_text, to_value};
use crate::transformers::records::{
    TRANSACTION_DATE, TRANSACTION_EXTERNAL_ID, TRANSACTION_ID, TRANSACTION_STATUS,
    transaction_amount,
};

/// The normalized status of an Xsolla transaction status (case-insensitive).
pub fn outcome_status(xsolla_status: &str) -> OutcomeStatus {
    match xsolla_status.trim().to_ascii_lowercase().as_str() {
        "done" | "refunded" | "awaitingrefund" => OutcomeStatus::Succeeded,
        "created" | "processing" | "review" => OutcomeStatus::Pending,
        "canceled" | "cancelled" | "error" => OutcomeStatus::Failed,
        _ => OutcomeStatus::Unknown,
    }
}

/// Builds the outcome of a status query from one transaction record (a transaction-details
/// answer or one element of a search answer).
pub fn transaction_outcome(record: &RawValue) -> Result<Outcome, ProviderError> {
    let status_text = first_text(record, TRANSACTION_STATUS).ok_or_else(|| {
        ProviderError::malformed_response("Xsolla's transaction has no `transaction.status`")
            .with_field("transaction.status")
    })?;
    let status = outcome_status(&status_text);
    let mut outcome = Outcome::new(status);
    outcome.provider_reference = first_text(record, TRANSACTION_ID);
    outcome.amount = transaction_amount(record)?;
    match status {
        OutcomeStatus::Failed => {
            let reason = first_text(
                record,
                &[
                    &["payment_system", "decline_reason"],
                    &["transaction", "refund_reason"],
                ],
            );
            let mut error = ProviderError::new(
                ErrorKind::Declined,
                format!("Xsolla reports the transaction as `{status_text}`"),
            )
            .with_provider_code(status_text.clone());
            if let Some(reason) = reason {
                error = error.with_provider_message(reason);
            }
            outcome.error = Some(error);
        }
        OutcomeStatus::Unknown => {
            outcome.error = Some(
                ProviderError::new(
                    ErrorKind::ProviderError,
                    format!("Xsolla reports an undocumented transaction status `{status_text}`"),
                )
                .with_provider_code(status_text.clone()),
            );
        }
        OutcomeStatus::Succeeded | OutcomeStatus::Pending => {}
    }
    outcome.details = Details::Transaction(TransactionInfo {
        reference: first_text(record, TRANSACTION_EXTERNAL_ID),
        provider_status: Some(status_text),
        payment_method: first_text(
            record,
            &[
                &["transaction", "payment_method", "name"],
                &["transaction", "payment_method", "id"],
                &["transaction", "payment_method"],
            ],
        ),
        payment_reference: None,
        date: first_text(record, TRANSACTION_DATE),
        raw: to_value(record),
    });
    Ok(outcome)
}

/// What a transaction's status says about a refund of it (the details of the refunded
/// transaction, asked with `of: refund`). `requested` is the refund's amount: `Some` for a
/// partial refund, `None` for a full one.
///
/// | Xsolla | full refund | partial refund | why |
/// |---|---|---|---|
/// | `refunded` | succeeded | succeeded | the money went back (all of it) |
/// | `awaitingRefund` | pending | pending | accepted; Xsolla support completes it |
/// | `done` | failed | unknown | paid and not refunded in full; Xsolla states no partially refunded amount, so a partial refund cannot be told from none |
/// | `error` | failed | unknown | a refund of a failed payment would have moved it on |
/// | `created`, `processing`, `review` | failed | failed | never paid: nothing can have been refunded |
/// | `canceled` and anything else | unknown | unknown | a cancellation may be how the money went back: an operator looks |
///
/// `failed` means the refund was never made, so asking for it again is safe: Xsolla refuses a
/// second refund while one is in progress ("We are processing the refund request").
pub fn refund_outcome(
    record: &RawValue,
    requested: Option<Money>,
) -> Result<Outcome, ProviderError> {
    let charge = transaction_outcome(record)?;
    let status_text = first_text(record, TRANSACTION_STATUS).unwrap_or_default();
    let partial = requested.is_some();
    let status = match (status_text.trim().to_ascii_lowercase().as_str(), partial) {
        ("refunded", _) => OutcomeStatus::Succeeded,
        ("awaitingrefund", _) => OutcomeStatus::Pending,
        ("done" | "error", false) => OutcomeStatus::Failed,
        ("created" | "processing" | "review", _) => OutcomeStatus::Failed,
        _ => OutcomeStatus::Unknown,
    };
    let mut outcome = Outcome::new(status);
    outcome.provider_reference = charge.provider_reference;
    outcome.details = charge.details;
    // A full refund gives back what the transaction was for; a partial one what it asked.
    outcome.amount = requested.or(charge.amount);
    outcome.error = match status {
        OutcomeStatus::Failed => Some(
            ProviderError::new(
                ErrorKind::NotFound,
                format!(
                    "Xsolla shows the transaction `{status_text}`, not refunded: the refund was never made"
                ),
            )
            .with_provider_code(status_text.clone()),
        ),
        OutcomeStatus::Unknown => Some(
            ProviderError::new(
                ErrorKind::ProviderError,
                if partial && status_text.eq_ignore_ascii_case("done") {
                    "Xsolla shows the transaction `done` and states no partially refunded amount: whether this partial refund was made cannot be told".to_string()
                } else {
                    format!(
                        "Xsolla shows the transaction `{status_text}`, which does not say whether this refund was made"
                    )
                },
            )
            .with_provider_code(status_text.clone()),
        ),
        OutcomeStatus::Succeeded | OutcomeStatus::Pending => None,
    };
    Ok(outcome)
}

/// How strongly a status answers "did the charge happen?": when a search by `external_id`
/// finds several transactions, the most conclusive one wins.
pub fn conclusiveness(status: OutcomeStatus) -> u8 {
    match status {
        OutcomeStatus::Succeeded => 3,
        OutcomeStatus::Pending => 2,
        OutcomeStatus::Unknown => 1,
        OutcomeStatus::Failed => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_statuses_map_as_the_table_says() {
        for (text, expected) in [
            ("done", OutcomeStatus::Succeeded),
            ("refunded", OutcomeStatus::Succeeded),
            ("awaitingRefund", OutcomeStatus::Succeeded),
            ("created", OutcomeStatus::Pending),
            ("processing", OutcomeStatus::Pending),
            ("review", OutcomeStatus::Pending),
            ("canceled", OutcomeStatus::Failed),
            ("error", OutcomeStatus::Failed),
            ("DONE", OutcomeStatus::Succeeded),
            ("mystery", OutcomeStatus::Unknown),
        ] {
            assert_eq!(outcome_status(text), expected, "{text}");
        }
    }
}
