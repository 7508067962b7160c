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
//! and mappings; `account.rs` reads an account's settings and secrets.

mod account;
mod flows;
pub mod transformers;

use gatehouse_plugin_api::{
    Command, ExtraField, HttpResponse, Invocation, Manifest, Money, Operation, Plugin,
    ProviderError, Step, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::transformers::records::ReportKind;

pub use crate::account::{
    DEFAULT_BASE_URL, DEFAULT_PAYSTATION_URL, DEFAULT_SANDBOX_PAYSTATION_URL,
};

pub struct Xsolla;

/// Where a flow is between two requests. Every flow here is one request long; the state says
/// which answer is awaited and what the answer is read against. Each flow's `start` hands back
/// its part (`flows::Started`), and only this file puts it together.
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
    Status(flows::status::Asked),
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
            config_keys: account::config_keys(),
            extra_fields: extra_fields(),
            reports: ReportKind::ALL
                .iter()
                .map(|kind| kind.name().to_string())
                .collect(),
            default_base_url: Some(DEFAULT_BASE_URL.into()),
            // Transaction details say whether a transaction was refunded (see
            // `transformers::status::refund_outcome`).
            status_of: vec![Operation::Refund],
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    fn start(invocation: &Invocation, inbound_body: &[u8]) -> Step<FlowState> {
        let started = match &invocation.command {
            Command::PaymentPage { .. } => flows::payment_page::start(invocation)
                .map(|(request, amount)| (request, FlowState::PaymentPage { amount })),
            Command::SavedAccounts { .. } => flows::tokenization::start_list(invocation)
                .map(|(request, ())| (request, FlowState::SavedAccounts)),
            Command::DeleteSavedAccount { .. } => flows::tokenization::start_delete(invocation)
                .map(|(request, ())| (request, FlowState::DeleteSavedAccount)),
            Command::Charge { .. } => flows::tokenization::start_charge(invocation)
                .map(|(request, amount)| (request, FlowState::Charge { amount })),
            Command::Refund { .. } => {
                flows::refund::start(invocation).map(|(request, (transaction_id, amount))| {
                    (
                        request,
                        FlowState::Refund {
                            transaction_id,
                            amount,
                        },
                    )
                })
            }
            Command::Report { .. } => flows::reports::start(invocation)
                .map(|(request, (report, csv))| (request, FlowState::Report { report, csv })),
            Command::Status { .. } => flows::status::start(invocation)
                .map(|(request, asked)| (request, FlowState::Status(asked))),
            Command::SandboxChargeback { .. } => {
                flows::chargeback::start(invocation).map(|(request, transaction_id)| {
                    (request, FlowState::SandboxChargeback { transaction_id })
                })
            }
            Command::Webhook { headers } => {
                let outcome = flows::webhook::handle(invocation, headers, inbound_body);
                return Step::Done(outcome).secrets_removed(&invocation.account);
            }
            other => Err(ProviderError::not_supported(format!(
                "Xsolla Pay Station has no `{}` operation",
                other.operation()
            ))),
        };
        (match started {
            Ok((request, state)) => Step::send(request, state),
            Err(error) => Step::Failed(error),
        })
        .secrets_removed(&invocation.account)
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
            FlowState::Status(asked) => flows::status::finish(asked, response),
            FlowState::SandboxChargeback { transaction_id } => {
                flows::chargeback::finish(transaction_id, response)
            }
        };
        (match result {
            Ok(outcome) => Step::Done(outcome),
            Err(error) => Step::Failed(error),
        })
        .secrets_removed(&invocation.account)
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
