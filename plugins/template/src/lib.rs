//! Gatehouse plugin for Template Pay, an imaginary JSON provider.
//!
//! This crate is the template new plugins start from (`gatehouse plugin new <name>` copies it and
//! renames it). It is small but complete: one read operation (`balance`) and one money-moving
//! operation (`charge`), split like every plugin of the repository:
//!
//! - this file is the **integration**: the manifest, the flows (which request to send, what to do
//!   with the answer) and the export;
//! - `account.rs` reads the account's settings and secrets, one way, for every flow;
//! - `transformers.rs` holds the **pure mappings** between normalized types and the provider's
//!   wire format;
//! - `tests.rs` drives the flows through the testkit, with scripted answers and no sockets.
//!
//! The provider's wire format is described in the README.

mod account;
mod transformers;

use gatehouse_plugin_api::http::join_url;
use gatehouse_plugin_api::{
    Command, ConfigKey, Details, HttpRequest, HttpResponse, Invocation, Manifest, Operation,
    Outcome, Plugin, ProviderError, Step, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::account::authorized;
pub use crate::account::{API_KEY, MERCHANT_ID};
use crate::transformers::{
    BalanceResponse, ChargeResponse, balances, charge_outcome, charge_request, http_error,
    may_have_acted, parse_json,
};

/// The provider id: the name operators use in `plugins.toml` and callers in the API.
pub const PROVIDER: &str = "template";

pub struct TemplatePlugin;

/// Where a flow is between two requests. The host keeps it (as JSON) between the steps.
#[derive(Debug, Serialize, Deserialize)]
pub enum FlowState {
    /// Waiting for the answer to `GET /v1/balance`.
    Balance,
    /// Waiting for the answer to `POST /v1/charges`.
    Charge,
}

impl Plugin for TemplatePlugin {
    type State = FlowState;

    fn manifest() -> Manifest {
        Manifest {
            provider: PROVIDER.into(),
            display_name: "Template Pay".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![Operation::Balance, Operation::Charge],
            config_keys: vec![
                ConfigKey::secret(
                    API_KEY,
                    "the API key, sent as a bearer token on every request",
                ),
                ConfigKey::optional(
                    MERCHANT_ID,
                    "the merchant the API key acts for, when it serves several (Merchant-Id header)",
                ),
            ],
            extra_fields: vec![],
            reports: vec![],
            default_base_url: Some("https://api.template.example".into()),
            status_of: vec![],
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<FlowState> {
        let started = match &invocation.command {
            Command::Balance { .. } => start_balance(invocation),
            Command::Charge { .. } => start_charge(invocation),
            // The host only sends operations the manifest lists; this answers anything else
            // clearly all the same (a testkit run, a host that changed its mind).
            other => Err(ProviderError::not_supported(format!(
                "Template Pay has no `{}` operation",
                other.operation()
            ))),
        };
        started
            .unwrap_or_else(Step::Failed)
            .secrets_removed(&invocation.account)
    }

    fn resume(
        invocation: &Invocation,
        state: FlowState,
        response: &HttpResponse,
    ) -> Step<FlowState> {
        let next = match state {
            FlowState::Balance => finish_balance(invocation, response).into(),
            FlowState::Charge => Step::Done(finish_charge(invocation, response)),
        };
        next.secrets_removed(&invocation.account)
    }
}

export_plugin!(TemplatePlugin);

fn start_balance(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    // `HttpRequest::get` is retry-safe: reading a balance twice changes nothing.
    let request = authorized(
        HttpRequest::get(join_url(&invocation.account.base_url, "/v1/balance")),
        invocation,
    )?;
    Ok(Step::send(request, FlowState::Balance))
}

/// A read: any answer that is not a readable balance is an error, and the caller may simply ask
/// again.
fn finish_balance(
    invocation: &Invocation,
    response: &HttpResponse,
) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(
            response.status,
            &response.body,
            &invocation.account,
        ));
    }
    let parsed: BalanceResponse = parse_json(&response.body, "balance")?;
    Ok(Outcome::succeeded().with_details(Details::Balance {
        balances: balances(&parsed)?,
    }))
}

fn start_charge(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    let Command::Charge {
        amount,
        description,
        customer,
        saved_account_id,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Charge,
            invocation.command.operation(),
        ));
    };
    if saved_account_id.is_some() {
        return Err(
            ProviderError::not_supported("Template Pay does not keep saved accounts")
                .with_field("saved_account_id"),
        );
    }
    // The host makes a reference for every money-moving command, records it before sending, and
    // reuses it when the command is retried: it is exactly what an idempotency key must be.
    let reference = invocation.reference.as_deref().ok_or_else(|| {
        ProviderError::invalid_request(
            "a charge needs the host-made reference (its idempotency key)",
        )
    })?;
    let body = charge_request(
        amount,
        reference,
        description.as_deref(),
        customer.email.as_deref(),
    )?;
    let body = serde_json::to_value(&body).map_err(|error| {
        ProviderError::plugin_fault(format!("the charge body did not serialize: {error}"))
    })?;
    let request = authorized(
        HttpRequest::post(join_url(&invocation.account.base_url, "/v1/charges")),
        invocation,
    )?
    .header("Idempotency-Key", reference)
    .json_body(&body)
    // Template Pay answers a repeated Idempotency-Key with the original charge, so resending
    // after a transport failure cannot charge twice.
    .retry_safe(true);
    Ok(Step::send(request, FlowState::Charge))
}

/// A money-moving answer: whatever happens, the result is an outcome, and it is `failed` only
/// when the provider said clearly that nothing was done. Anything else is `unknown`.
fn finish_charge(invocation: &Invocation, response: &HttpResponse) -> Outcome {
    if !response.is_success() {
        let error = http_error(response.status, &response.body, &invocation.account);
        return if may_have_acted(response.status) {
            Outcome::unknown(error)
        } else {
            Outcome::failed(error)
        };
    }
    let Some(requested) = invocation.command.amount() else {
        return Outcome::unknown(ProviderError::plugin_fault(
            "the charge command lost its amount",
        ));
    };
    // A 2xx answer that cannot be read may still stand for a charge that was taken.
    match parse_json::<ChargeResponse>(&response.body, "charge") {
        Ok(parsed) => charge_outcome(&parsed, &requested).unwrap_or_else(Outcome::unknown),
        Err(error) => Outcome::unknown(error),
    }
}

#[cfg(test)]
mod tests;
