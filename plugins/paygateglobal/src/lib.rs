//! Gatehouse plugin for PayGateGlobal (Flooz and T-Money mobile money, Togo).
//!
//! Source of truth: the PayGateGlobal integration guide (`shared/seeds/004`). Every operation in
//! it is here: pay (method 1), the payment-page URL (method 2), status by `tx_reference` (v1) and
//! by `identifier` (v2), check-balance, and the payment confirmation callback. The callback is not
//! signed, so this plugin confirms every callback with the v2 status API before it reports the
//! event as verified.
//!
//! Layout: this file is the integration (manifest, dispatch, flow state); `account.rs` reads the
//! account's token; `transformers.rs` holds the pure wire mappings (error mapping included);
//! `tests.rs` drives the flows through the testkit.

mod account;
mod transformers;

use gatehouse_plugin_api::http::{encode_form, join_url};
use gatehouse_plugin_api::{
    Command, Details, ErrorKind, HttpRequest, HttpResponse, Invocation, Manifest, Operation,
    Outcome, OutcomeStatus, Plugin, ProviderError, Step, UnsignedCallbacks, WebhookEvent,
    WebhookReply, WebhookResult, export_plugin,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::account::{AUTH_TOKEN, auth_token};
use crate::transformers::{
    BalanceResponse, Callback, PayResponse, PayResult, StatusResponse, amount_from_wire,
    amount_to_wire, balances, http_error, normalize_network, parse_json, pay_result,
    payment_status, phone_to_wire, scalar_text,
};

pub struct PayGateGlobal;

/// The longest `description` sent. The guide states no limit; this is an assumption (the
/// common `VARCHAR(255)` column), so that a longer text is refused by the host before the ledger
/// instead of cut or refused by the provider after the money is recorded (README).
const DESCRIPTION_MAX_CHARS: usize = 255;

/// Where a flow is between two requests.
#[derive(Debug, Serialize, Deserialize)]
pub enum FlowState {
    /// Waiting for the answer to `/api/v1/pay`.
    Pay,
    /// The pay answer said "duplicate identifier": waiting for `/api/v2/status` to tell its state.
    DuplicateLookup,
    /// Waiting for a status answer.
    Status,
    Balance,
    /// A callback arrived; waiting for `/api/v2/status` to confirm it.
    ConfirmCallback {
        tx_reference: String,
        identifier: String,
        amount_minor_units: i64,
        payment_method: Option<String>,
    },
}

impl Plugin for PayGateGlobal {
    type State = FlowState;

    fn manifest() -> Manifest {
        Manifest {
            provider: "paygateglobal".into(),
            display_name: "PayGateGlobal (Flooz, T-Money)".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![
                Operation::Charge,
                Operation::PaymentPage,
                Operation::Status,
                Operation::Balance,
                Operation::Webhook,
            ],
            config_keys: account::config_keys(),
            extra_fields: vec![],
            reports: vec![],
            default_base_url: Some("https://paygateglobal.com".into()),
            status_of: vec![],
            max_text_lengths: [("description".to_string(), DESCRIPTION_MAX_CHARS)].into(),
            // Callbacks are unsigned and name the host's reference as `identifier`: the host
            // acknowledges those naming nothing it sent without this plugin spending a status
            // call on them.
            unsigned_callbacks: Some(UnsignedCallbacks {
                reference_pointer: "/identifier".into(),
                acknowledgement: callback_acknowledgement(),
            }),
        }
    }

    fn start(invocation: &Invocation, inbound_body: &[u8]) -> Step<FlowState> {
        let result = match &invocation.command {
            Command::Charge { .. } => start_pay(invocation),
            Command::PaymentPage { .. } => payment_page(invocation).map(Step::Done),
            Command::Status {
                transaction_id,
                reference,
                of: None | Some(Operation::Charge),
                ..
            } => start_status(invocation, transaction_id.as_deref(), reference.as_deref()),
            Command::Status {
                of: Some(other), ..
            } => Err(ProviderError::not_supported(format!(
                "PayGateGlobal's status describes payments, not a `{other}`"
            ))),
            Command::Balance { .. } => post_json(invocation, "/api/v1/check-balance", json!({}))
                .map(|request| Step::send(request.retry_safe(true), FlowState::Balance)),
            Command::Webhook { .. } => start_callback(invocation, inbound_body),
            other => Err(ProviderError::not_supported(format!(
                "PayGateGlobal has no `{}` operation",
                other.operation()
            ))),
        };
        result
            .unwrap_or_else(Step::Failed)
            .secrets_removed(&invocation.account)
    }

    fn resume(
        invocation: &Invocation,
        state: FlowState,
        response: &HttpResponse,
    ) -> Step<FlowState> {
        let result = match state {
            FlowState::Pay => finish_pay(invocation, response),
            FlowState::DuplicateLookup => finish_duplicate_lookup(response).map(Step::Done),
            FlowState::Status => read_status(response).map(Step::Done),
            FlowState::Balance => finish_balance(response).map(Step::Done),
            FlowState::ConfirmCallback {
                tx_reference,
                identifier,
                amount_minor_units,
                payment_method,
            } => Ok(Step::Done(finish_callback(
                response,
                tx_reference,
                identifier,
                amount_minor_units,
                payment_method,
            ))),
        };
        result
            .unwrap_or_else(Step::Failed)
            .secrets_removed(&invocation.account)
    }
}

export_plugin!(PayGateGlobal);

/// Builds a JSON POST with `auth_token` added to the body, as every documented API expects.
fn post_json(
    invocation: &Invocation,
    path: &str,
    mut body: serde_json::Value,
) -> Result<HttpRequest, ProviderError> {
    body[AUTH_TOKEN] = json!(auth_token(&invocation.account)?);
    Ok(HttpRequest::post(join_url(&invocation.account.base_url, path)).json_body(&body))
}

fn start_pay(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    let Command::Charge {
        amount,
        description,
        customer,
        payment_method,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Charge,
            invocation.command.operation(),
        ));
    };
    let identifier = invocation.reference.as_deref().ok_or_else(|| {
        ProviderError::invalid_request("a charge needs the host-made reference as `identifier`")
    })?;
    let phone = customer.phone.as_deref().ok_or_else(|| {
        ProviderError::invalid_request("PayGateGlobal needs the customer's phone number")
            .with_field("customer.phone")
    })?;
    let network = payment_method.as_deref().ok_or_else(|| {
        ProviderError::invalid_request("PayGateGlobal needs the network: FLOOZ or TMONEY")
            .with_field("payment_method")
    })?;
    let mut body = json!({
        "phone_number": phone_to_wire(phone)?,
        "amount": amount_to_wire(amount)?,
        "identifier": identifier,
        "network": normalize_network(network)?,
    });
    if let Some(description) = description {
        body["description"] = json!(description);
    }
    // PayGateGlobal refuses a second transaction with the same identifier (status 6), so
    // resending this request after a transport failure cannot charge twice.
    let request = post_json(invocation, "/api/v1/pay", body)?.retry_safe(true);
    Ok(Step::send(request, FlowState::Pay))
}

fn finish_pay(
    invocation: &Invocation,
    response: &HttpResponse,
) -> Result<Step<FlowState>, ProviderError> {
    if !response.is_success() {
        return Ok(Step::Done(money_outcome_for_http_error(response)));
    }
    let parsed: PayResponse = match parse_json(&response.body, "pay") {
        Ok(parsed) => parsed,
        // The request was sent and may have been registered: unknown, not failed.
        Err(error) => return Ok(Step::Done(Outcome::unknown(error))),
    };
    let amount = invocation.command.amount();
    match pay_result(&parsed) {
        Ok(PayResult::Registered(outcome)) => Ok(Step::Done(match amount {
            Some(amount) => outcome.with_amount(amount),
            None => *outcome,
        })),
        Ok(PayResult::Refused(error)) => Ok(Step::Done(Outcome::failed(error))),
        Ok(PayResult::Duplicate) => {
            let identifier = invocation.reference.clone().unwrap_or_default();
            let request = post_json(
                invocation,
                "/api/v2/status",
                json!({ "identifier": identifier }),
            )?
            .retry_safe(true);
            Ok(Step::send(request, FlowState::DuplicateLookup))
        }
        Err(error) => Ok(Step::Done(Outcome::unknown(error))),
    }
}

/// After a "duplicate identifier" answer the transaction exists; its status says what it became.
/// If the lookup itself fails, the charge may still have happened: unknown, to be reconciled.
fn finish_duplicate_lookup(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    match read_status(response) {
        Ok(outcome) => Ok(outcome),
        Err(error) => Ok(Outcome::unknown(
            ProviderError::new(
                ErrorKind::Duplicate,
                format!("PayGateGlobal already has this identifier, and its status could not be read: {}", error.message),
            )
            .with_provider_code("6"),
        )),
    }
}

fn money_outcome_for_http_error(response: &HttpResponse) -> Outcome {
    let error = http_error(response.status, &response.text());
    // A server error after sending may hide a registered payment, and so may a "duplicate"; a
    // 4xx means it was refused.
    if response.status >= 500 || response.status == 408 || error.kind == ErrorKind::Duplicate {
        Outcome::unknown(error)
    } else {
        Outcome::failed(error)
    }
}

fn payment_page(invocation: &Invocation) -> Result<Outcome, ProviderError> {
    let Command::PaymentPage {
        amount,
        description,
        customer,
        return_url,
        payment_method,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::PaymentPage,
            invocation.command.operation(),
        ));
    };
    let identifier = invocation.reference.as_deref().ok_or_else(|| {
        ProviderError::invalid_request(
            "a payment page needs the host-made reference as `identifier`",
        )
    })?;
    let amount_text = amount_to_wire(amount)?.to_string();
    let phone = customer.phone.as_deref().map(phone_to_wire).transpose()?;
    let mut pairs: Vec<(&str, &str)> = vec![
        ("token", auth_token(&invocation.account)?),
        ("amount", &amount_text),
    ];
    if let Some(description) = description {
        pairs.push(("description", description));
    }
    pairs.push(("identifier", identifier));
    if let Some(url) = return_url {
        pairs.push(("url", url));
    }
    if let Some(phone) = &phone {
        pairs.push(("phone", phone));
    }
    // Method 2's `network` is free text in the document (its example says MOOV, TOGOCEL), so it
    // is passed through as given rather than checked against method 1's FLOOZ/TMONEY.
    if let Some(network) = payment_method {
        pairs.push(("network", network));
    }
    let url = format!(
        "{}?{}",
        join_url(&invocation.account.base_url, "/v1/page"),
        encode_form(&pairs)
    );
    Ok(Outcome::pending()
        .with_amount(*amount)
        .with_details(Details::PaymentPage { url, token: None }))
}

fn start_status(
    invocation: &Invocation,
    transaction_id: Option<&str>,
    reference: Option<&str>,
) -> Result<Step<FlowState>, ProviderError> {
    let request = match (transaction_id, reference) {
        (Some(tx_reference), _) => post_json(
            invocation,
            "/api/v1/status",
            json!({ "tx_reference": tx_reference }),
        )?,
        (None, Some(identifier)) => post_json(
            invocation,
            "/api/v2/status",
            json!({ "identifier": identifier }),
        )?,
        (None, None) => {
            return Err(ProviderError::invalid_request(
                "status needs `transaction_id` (PayGateGlobal tx_reference) or `reference` (our identifier)",
            ));
        }
    };
    Ok(Step::send(request.retry_safe(true), FlowState::Status))
}

fn read_status(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(response.status, &response.text()));
    }
    let parsed: StatusResponse = parse_json(&response.body, "status")?;
    payment_status(&parsed)
}

fn finish_balance(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(response.status, &response.text()));
    }
    let parsed: BalanceResponse = parse_json(&response.body, "check-balance")?;
    Ok(Outcome::succeeded().with_details(Details::Balance {
        balances: balances(&parsed)?,
    }))
}

fn start_callback(invocation: &Invocation, body: &[u8]) -> Result<Step<FlowState>, ProviderError> {
    let callback: Callback = match serde_json::from_slice(body) {
        Ok(callback) => callback,
        Err(error) => {
            return Ok(Step::Done(rejected_callback(format!(
                "the callback is not the documented JSON: {error}"
            ))));
        }
    };
    let (Some(tx_reference), Some(identifier)) = (
        scalar_text(&callback.tx_reference),
        scalar_text(&callback.identifier),
    ) else {
        return Ok(Step::Done(rejected_callback(
            "the callback's tx_reference and identifier must be strings or numbers".into(),
        )));
    };
    let amount = match amount_from_wire(&callback.amount) {
        Ok(amount) => amount,
        Err(error) => return Ok(Step::Done(rejected_callback(error.message))),
    };
    // Unsigned: anyone can POST this. Ask the provider before believing it.
    let request = post_json(
        invocation,
        "/api/v2/status",
        json!({ "identifier": identifier }),
    )?
    .retry_safe(true);
    Ok(Step::send(
        request,
        FlowState::ConfirmCallback {
            tx_reference,
            identifier,
            amount_minor_units: amount.minor_units,
            payment_method: callback.payment_method.as_ref().and_then(scalar_text),
        },
    ))
}

fn finish_callback(
    response: &HttpResponse,
    tx_reference: String,
    identifier: String,
    amount_minor_units: i64,
    payment_method: Option<String>,
) -> Outcome {
    let confirmed = read_status(response);
    let claimed = match transformers::xof() {
        Ok(currency) => gatehouse_plugin_api::Money::new(amount_minor_units, currency),
        Err(error) => return Outcome::failed(error),
    };
    let (verified, status, error) = match &confirmed {
        Ok(outcome) => {
            let same_transaction =
                outcome.provider_reference.as_deref() == Some(tx_reference.as_str());
            let same_amount = outcome.amount.is_none_or(|amount| amount == claimed);
            if same_transaction && same_amount {
                (true, outcome.status, None)
            } else {
                (
                    false,
                    OutcomeStatus::Unknown,
                    Some(ProviderError::new(
                        ErrorKind::Authentication,
                        "the callback does not match what PayGateGlobal's status API says about this identifier",
                    )),
                )
            }
        }
        Err(error) => (false, OutcomeStatus::Unknown, Some(error.clone())),
    };
    // The guide documents no amount in the v2 status answer, but real answers carry one (a
    // PayGateGlobal client library's published sample): when it is there, a callback claiming
    // another amount is not believed; when it is not, the callback's amount is not confirmed. An unconfirmed amount is not reported as
    // the event's amount (the host uses the amount it recorded for the identifier); the claimed
    // value stays in `raw` for an operator to see.
    let confirmed_amount = confirmed.as_ref().ok().and_then(|outcome| outcome.amount);
    let event = WebhookEvent {
        event_id: format!("paygateglobal:{tx_reference}:{}", status.as_str()),
        event_type: "payment".into(),
        status,
        provider_reference: Some(tx_reference),
        reference: Some(identifier),
        amount: confirmed_amount.filter(|_| verified),
        verified,
        raw: serde_json::json!({
            "payment_method": payment_method,
            "claimed_amount": claimed.to_decimal_string(),
        }),
    };
    let mut outcome = Outcome::new(if verified {
        OutcomeStatus::Succeeded
    } else {
        OutcomeStatus::Failed
    })
    .with_details(Details::Webhook(WebhookResult {
        event: Some(event),
        reply: callback_acknowledgement(),
    }));
    outcome.error = error;
    outcome
}

/// PayGateGlobal documents no answer format; any 2xx acknowledges the callback.
fn callback_acknowledgement() -> WebhookReply {
    WebhookReply::json(200, &json!({ "received": true }))
}

fn rejected_callback(message: String) -> Outcome {
    Outcome::failed(ProviderError::invalid_request(message)).with_details(Details::Webhook(
        WebhookResult {
            event: None,
            reply: WebhookReply::json(400, &json!({ "error": "unreadable callback" })),
        },
    ))
}

#[cfg(test)]
mod tests;
