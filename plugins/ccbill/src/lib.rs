//! Gatehouse plugin for CCBill DataLink's advanced affiliate options.
//!
//! Source of truth: the seed document "API CCBill: Opciones avanzadas de afiliados"
//! (`shared/seeds/003`), with the result codes and answer shapes of `shared/providers.md`
//! section 4. Both of the document's actions are here:
//!
//! - `addAffiliatePayout` ← [`Command::AffiliatePayout`]: credit an affiliate for a sale CCBill
//!   did not process;
//! - `addAffiliateRefund` ← [`Command::AffiliateRefund`]: take that credit back.
//!
//! Every request goes to `{base_url}/utils/subscriptionManagement.cgi` as a POST form. The seed's
//! samples are GET URLs, but DataLink accepts the same parameters as a form body (providers.md:
//! verified against production by a public client), and a body keeps the password out of the
//! URLs that proxies, load balancers and access logs record.
//!
//! Architecture Invariant: both actions move money and CCBill offers no idempotency key for them,
//! so no request is marked retry-safe, and once a request is sent the flow ends `failed` only on
//! a documented refusal; anything it cannot read, and `-7`, end `unknown`.

mod account;
mod transformers;

use gatehouse_plugin_api::{
    Command, ConfigKey, Details, ErrorKind, HttpRequest, HttpResponse, Invocation, Manifest,
    Operation, Outcome, Plugin, ProviderError, Step, TransactionInfo, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::account::{
    CLIENT_ACCNUM, CLIENT_SUBACC, DataLinkAccount, PASSWORD, RESPONSE_FORMAT, ResponseFormat,
    USERNAME, USING_SUBACC, read_account,
};
use crate::transformers::answer::{self, Answer, UnreadableAnswer, read_answer};
use crate::transformers::{
    Action, DEFAULT_BASE_URL, ResultMeaning, TransactionType, WireParameters, endpoint_url,
    form_body, http_error_kind, identifier, interpret_error_text, interpret_result_code,
    payout_amount_to_wire,
};

pub struct CcBill;

/// Where a flow is between its one request and the answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AwaitingResult {
    pub action: Action,
    /// The format the account asked for (the answer is read in either).
    pub requested_format: ResponseFormat,
}

impl Plugin for CcBill {
    type State = AwaitingResult;

    fn manifest() -> Manifest {
        Manifest {
            provider: "ccbill".into(),
            display_name: "CCBill DataLink (affiliate options)".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![Operation::AffiliatePayout, Operation::AffiliateRefund],
            config_keys: vec![
                ConfigKey::required(
                    CLIENT_ACCNUM,
                    "the 6-digit CCBill main account number (clientAccnum)",
                ),
                ConfigKey::required(USERNAME, "the DataLink user name (username)"),
                ConfigKey::secret(PASSWORD, "the DataLink password (password)"),
                ConfigKey::optional(
                    CLIENT_SUBACC,
                    "the 4-digit sub-account, when the DataLink user is a sub-account's (clientSubacc); \
                     excludes using_subacc",
                ),
                ConfigKey::optional(
                    USING_SUBACC,
                    "the 4-digit sub-account a main-account DataLink user acts on (usingSubacc); \
                     excludes client_subacc; required for affiliate payouts with main-account credentials",
                ),
                ConfigKey::optional(
                    RESPONSE_FORMAT,
                    "`csv` (default) or `xml` (sends returnXML=1)",
                ),
            ],
            extra_fields: vec![],
            reports: vec![],
            default_base_url: Some(DEFAULT_BASE_URL.into()),
            status_of: vec![],
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<AwaitingResult> {
        let result = match &invocation.command {
            Command::AffiliatePayout { .. } => start_payout(invocation),
            Command::AffiliateRefund { .. } => start_refund(invocation),
            other => Err(ProviderError::not_supported(format!(
                "the CCBill affiliate-options plugin has no `{}` operation",
                other.operation()
            ))),
        };
        result.unwrap_or_else(Step::Failed)
    }

    fn resume(
        invocation: &Invocation,
        state: AwaitingResult,
        response: &HttpResponse,
    ) -> Step<AwaitingResult> {
        Step::Done(finish(invocation, &state, response))
    }
}

export_plugin!(CcBill);

fn start_payout(invocation: &Invocation) -> Result<Step<AwaitingResult>, ProviderError> {
    let Command::AffiliatePayout {
        affiliate_id,
        amount,
        original_subscription_id,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::AffiliatePayout,
            invocation.command.operation(),
        ));
    };
    let account = read_account(&invocation.account)?;
    // The seed, for this action: "usingSubacc is required only for users who authenticate with
    // the main account; clientSubacc only for users who authenticate on a sub-account". Either
    // way the payout names the sub-account it belongs to.
    if !account.login.names_a_subaccount() {
        return Err(ProviderError::invalid_request(format!(
            "account `{}`: addAffiliatePayout with main-account credentials needs `{USING_SUBACC}` \
             (usingSubacc), the sub-account the payout belongs to",
            invocation.account.account
        ))
        .with_field(USING_SUBACC));
    }
    let amount_text = payout_amount_to_wire(amount)?;
    let mut parameters: WireParameters<'_> =
        vec![("affiliateId", identifier(affiliate_id, "affiliate_id")?)];
    // The seed's sample sends originalSubId although its parameter table lists only affiliateId
    // and amount, so it is sent when the command has one and left out otherwise.
    if let Some(original) = original_subscription_id {
        parameters.push((
            "originalSubId",
            identifier(original, "original_subscription_id")?,
        ));
    }
    parameters.push(("amount", &amount_text));
    Ok(send(
        invocation,
        &account,
        Action::AddAffiliatePayout,
        &parameters,
    ))
}

fn start_refund(invocation: &Invocation) -> Result<Step<AwaitingResult>, ProviderError> {
    let Command::AffiliateRefund {
        affiliate_id,
        subscription_id,
        original_subscription_id,
        transaction_type,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::AffiliateRefund,
            invocation.command.operation(),
        ));
    };
    let account = read_account(&invocation.account)?;
    let transaction_type = TransactionType::from_command(transaction_type)?;
    let parameters: WireParameters<'_> = vec![
        ("affiliateId", identifier(affiliate_id, "affiliate_id")?),
        (
            "subscriptionId",
            identifier(subscription_id, "subscription_id")?,
        ),
        (
            "originalSubId",
            identifier(original_subscription_id, "original_subscription_id")?,
        ),
        ("transType", transaction_type.wire_name()),
    ];
    Ok(send(
        invocation,
        &account,
        Action::AddAffiliateRefund,
        &parameters,
    ))
}

fn send(
    invocation: &Invocation,
    account: &DataLinkAccount<'_>,
    action: Action,
    parameters: &WireParameters<'_>,
) -> Step<AwaitingResult> {
    // Not retry-safe: CCBill has no idempotency key for these actions, so a resend after a lost
    // answer could pay or refund an affiliate twice.
    let request = HttpRequest::post(endpoint_url(&invocation.account.base_url))
        .form_body(form_body(account, action, parameters))
        .retry_safe(false);
    Step::send(
        request,
        AwaitingResult {
            action,
            requested_format: account.response_format,
        },
    )
}

/// Turns DataLink's answer into the outcome. The request was sent, so an answer that cannot be
/// read ends `unknown`: the action may have run.
fn finish(invocation: &Invocation, state: &AwaitingResult, response: &HttpResponse) -> Outcome {
    let redact = |text: &str| redacted(invocation, text);
    let action = state.action;
    if !response.is_success() {
        return http_failure(action, response, &redact);
    }
    let meaning = |meaning: ResultMeaning, format: Option<ResponseFormat>| match meaning {
        ResultMeaning::Succeeded => succeeded(invocation, action, format),
        ResultMeaning::Refused(error) => Outcome::failed(error),
        ResultMeaning::Indeterminate(error) => Outcome::unknown(error),
    };
    match read_answer(&response.body) {
        Ok(Answer::ResultCode { code, format }) => {
            meaning(interpret_result_code(code, action), Some(format))
        }
        Ok(Answer::ErrorText { number, excerpt }) => {
            let outcome = meaning(interpret_error_text(number, action), None);
            with_quoted_answer(outcome, &redact(&excerpt))
        }
        Ok(Answer::PlainTextAuthFailure { excerpt }) => Outcome::failed(
            ProviderError::new(
                ErrorKind::Authentication,
                format!("{}: CCBill refused the DataLink login", action.wire_name()),
            )
            .with_provider_message(redact(&excerpt)),
        ),
        Err(unreadable) => Outcome::unknown(unreadable_error(
            action,
            state.requested_format,
            &unreadable,
            &redact,
        )),
    }
}

/// Keeps CCBill's own words of an `Error:` answer when it sent more than the number.
fn with_quoted_answer(mut outcome: Outcome, quoted: &str) -> Outcome {
    if let Some(error) = outcome.error.as_mut()
        && quoted.len() > "Error: 00".len()
    {
        error.provider_message = Some(gatehouse_plugin_api::error::truncate(quoted));
    }
    outcome
}

fn succeeded(invocation: &Invocation, action: Action, format: Option<ResponseFormat>) -> Outcome {
    let format = format.map_or("text", ResponseFormat::as_str);
    let outcome = Outcome::succeeded().with_details(Details::Transaction(TransactionInfo {
        reference: invocation.reference.clone(),
        provider_status: Some("1".into()),
        raw: serde_json::json!({ "action": action.wire_name(), "format": format }),
        ..TransactionInfo::default()
    }));
    match invocation.command.amount() {
        Some(amount) => outcome.with_amount(amount),
        None => outcome,
    }
}

fn unreadable_error(
    action: Action,
    requested_format: ResponseFormat,
    unreadable: &UnreadableAnswer,
    redact: &dyn Fn(&str) -> String,
) -> ProviderError {
    let error = ProviderError::malformed_response(format!(
        "{}: {unreadable} (asked for {}); the action may have run",
        action.wire_name(),
        requested_format.as_str()
    ));
    match unreadable.excerpt() {
        Some(excerpt) => error.with_provider_message(redact(excerpt)),
        None => error,
    }
}

/// DataLink answers HTTP 200 for its own errors, so another status comes from the server or a
/// proxy in front of it. A 5xx or 408 may hide an action that ran, and so may a "duplicate"
/// (nothing can be looked up here); other statuses mean the CGI did not take the request.
fn http_failure(
    action: Action,
    response: &HttpResponse,
    redact: &dyn Fn(&str) -> String,
) -> Outcome {
    let status = response.status;
    let kind = http_error_kind(status);
    let text = answer::excerpt(&response.text());
    let error = ProviderError::new(
        kind,
        format!("{}: CCBill answered HTTP {status}", action.wire_name()),
    )
    .with_provider_code(status.to_string())
    .with_provider_message(redact(text.trim()));
    if status >= 500 || status == 408 || status < 200 || kind == ErrorKind::Duplicate {
        Outcome::unknown(error)
    } else {
        Outcome::failed(error)
    }
}

/// Provider text without the account's secrets or its DataLink user name, raw or encoded:
/// a proxy or a broken server may echo the request.
fn redacted(invocation: &Invocation, text: &str) -> String {
    let username = invocation.account.setting(USERNAME).unwrap_or_default();
    invocation.account.redact_also(text, &[username])
}

#[cfg(test)]
mod tests;
