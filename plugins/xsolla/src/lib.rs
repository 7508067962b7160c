//! Gatehouse plugin for Xsolla Pay Station (merchant API v2).
//!
//! Source of truth: the Pay Station API document (`shared/seeds/001`), with wire details from
//! `shared/providers.md` section 2. Every call in the document is here: create token (the payment
//! page), saved accounts (list, delete, charge), full and partial refunds, the seven reports, a
//! transaction's status (details, or search by `external_id` to reconcile an unknown charge), the
//! sandbox chargeback, and signed webhooks.
//!
//! Layout: this file is the integration (manifest, dispatch, flow state); `flows/` builds the
//! requests and reads the answers of each operation; `transformers/` holds the pure wire types
//! and mappings; `config.rs` reads an account's settings.

mod config;
mod flows;
pub mod transformers;

use gatehouse_plugin_api::{
    Command, ExtraField, HttpResponse, Invocation, Manifest, Money, Operation, Plugin,
    ProviderError, Step, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::transformers::records::ReportKind;

pub use crate::config::{DEFAULT_BASE_URL, DEFAULT_PAYSTATION_URL, DEFAULT_SANDBOX_PAYSTATION_URL};

pub struct Xsolla;

/// Where a flow is between two requests. Every flow here is one request long; the state says
/// which answer is awaited and what the answer is read against.
#[derive(Debug, Serialize, Deserialize)]
pub enum FlowState {
    PaymentPage {
        amount: Money,
    },
    SavedAccounts,
    DeleteSavedAccount,
    Charge {
        amount: Money,
    },
    Refund {
        transaction_id: String,
        amount: Option<Money>,
    },
    Report {
        report: ReportKind,
        csv: bool,
    },
    StatusByTransaction,
    StatusByReference {
        reference: String,
    },
    SandboxChargeback {
        transaction_id: String,
    },
}

impl Plugin for Xsolla {
    type State = FlowState;

    fn manifest() -> Manifest {
        Manifest {
            provider: "xsolla".into(),
            display_name: "Xsolla Pay Station".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![
                Operation::PaymentPage,
                Operation::SavedAccounts,
                Operation::DeleteSavedAccount,
                Operation::Charge,
                Operation::Refund,
                Operation::Report,
                Operation::Status,
                Operation::SandboxChargeback,
                Operation::Webhook,
            ],
            config_keys: config::config_keys(),
            extra_fields: extra_fields(),
            reports: ReportKind::ALL
                .iter()
                .map(|kind| kind.name().to_string())
                .collect(),
            default_base_url: Some(DEFAULT_BASE_URL.into()),
            status_of: vec![],
        }
    }

    fn start(invocation: &Invocation, inbound_body: &[u8]) -> Step<FlowState> {
        let result = match &invocation.command {
            Command::PaymentPage { .. } => flows::payment_page::start(invocation),
            Command::SavedAccounts { .. } => flows::tokenization::start_list(invocation),
            Command::DeleteSavedAccount { .. } => flows::tokenization::start_delete(invocation),
            Command::Charge { .. } => flows::tokenization::start_charge(invocation),
            Command::Refund { .. } => flows::refund::start(invocation),
            Command::Report { .. } => flows::reports::start(invocation),
            Command::Status { .. } => flows::status::start(invocation),
            Command::SandboxChargeback { .. } => flows::chargeback::start(invocation),
            Command::Webhook { headers } => Ok(Step::Done(flows::webhook::handle(
                invocation,
                headers,
                inbound_body,
            ))),
            other => Err(ProviderError::not_supported(format!(
                "Xsolla Pay Station has no `{}` operation",
                other.operation()
            ))),
        };
        result.unwrap_or_else(Step::Failed)
    }

    fn resume(
        invocation: &Invocation,
        state: FlowState,
        response: &HttpResponse,
    ) -> Step<FlowState> {
        let result = match state {
            FlowState::PaymentPage { amount } => {
                flows::payment_page::finish(invocation, amount, response)
            }
            FlowState::SavedAccounts => flows::tokenization::finish_list(response),
            FlowState::DeleteSavedAccount => flows::tokenization::finish_delete(response),
            FlowState::Charge { amount } => {
                Ok(flows::tokenization::finish_charge(amount, response))
            }
            FlowState::Refund {
                transaction_id,
                amount,
            } => Ok(flows::refund::finish(transaction_id, amount, response)),
            FlowState::Report { report, csv } => flows::reports::finish(report, csv, response),
            FlowState::StatusByTransaction => flows::status::finish_details(response),
            FlowState::StatusByReference { reference } => {
                flows::status::finish_search(&reference, response)
            }
            FlowState::SandboxChargeback { transaction_id } => {
                flows::chargeback::finish(transaction_id, response)
            }
        };
        match result {
            Ok(outcome) => Step::Done(outcome),
            Err(error) => Step::Failed(error),
        }
    }
}

export_plugin!(Xsolla);

fn extra_fields() -> Vec<ExtraField> {
    use Operation::{Charge, PaymentPage, Report};
    vec![
        ExtraField::optional(
            PaymentPage,
            "language",
            "settings.language: the payment UI's language (ISO 639-1, `en`)",
        ),
        ExtraField::optional(
            PaymentPage,
            "external_id",
            "settings.external_id: your transaction id; defaults to the host-made reference when there is one",
        ),
        ExtraField::optional(
            PaymentPage,
            "custom_parameters",
            "custom_parameters: a JSON object echoed back in the payment webhook",
        ),
        ExtraField::optional(
            PaymentPage,
            "ui",
            "settings.ui: a JSON object of payment UI options (`size`, `theme`, ...)",
        ),
        ExtraField::optional(
            Charge,
            "custom_parameters",
            "custom_parameters: a JSON object (`active_date`, `additional_verification`, ...)",
        ),
        ExtraField::optional(
            Charge,
            "mock_code",
            "settings.mock_code: a sandbox decline code to simulate (PayPal sandbox only: 1057, 1015, ...)",
        ),
        ExtraField::optional(
            Charge,
            "user_legal",
            "user.legal: a JSON object `{name, address, vat_id, country}` for legal entities",
        ),
        ExtraField::optional(
            Report,
            "format",
            "`json` (default) or `csv` for `registry` and `search` (also accepted as a filter)",
        ),
    ]
}

#[cfg(test)]
mod tests;
