//! Gatehouse plugin for the Kolmisoft M4 billing API (M4's parameter names only: MOR's
//! `payments_get` names its filters `s_user_id`, `s_from`, … and is not spoken here).
//!
//! Source of truth: the "M4 API payments get" page (`shared/seeds/002`) and `providers.md`
//! section 3. The one documented operation is the payments list, offered as the `payments`
//! report: `Command::Report { report: "payments", from, till, filters, .. }` becomes one
//! `POST {base_url}/api/payments_get` (GET when the account allows it) signed with the SHA1
//! `hash` of the sent filter values and the API Secret Key; the XML answer becomes normalized
//! `ReportRecord`s.

mod account;
pub mod transformers;

use gatehouse_plugin_api::http::{encode_form, join_url};
use gatehouse_plugin_api::{
    Command, Details, HttpRequest, HttpResponse, Invocation, Manifest, Method, Operation, Outcome,
    Plugin, ProviderError, Step, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::account::Settings;
use crate::transformers::payments::{PaymentsAnswer, http_error, read_payments_answer};
use crate::transformers::query::payments_query;
use crate::transformers::signing::payments_get_hash;
use crate::transformers::{PAYMENTS_GET_PATH, PAYMENTS_REPORT};

pub use crate::account::{ALLOW_GET, SECRET_KEY, USERNAME, UTC_OFFSET_SECONDS};

pub struct Kolmisoft;

/// Where a flow is between two requests: the payments report takes one.
#[derive(Debug, Serialize, Deserialize)]
pub enum FlowState {
    /// Waiting for the answer to `payments_get`.
    Payments,
}

impl Plugin for Kolmisoft {
    type State = FlowState;

    fn manifest() -> Manifest {
        Manifest {
            provider: "kolmisoft".into(),
            // M4 only: the parameter names sent (`user_id_s`, `from_s`, …) and the hash order are
            // M4's; MOR's `payments_get` uses `s_user_id`, `s_from`, `s_till`, … (README).
            display_name: "Kolmisoft M4 billing".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![Operation::Report],
            config_keys: account::config_keys(),
            extra_fields: vec![],
            reports: vec![PAYMENTS_REPORT.into()],
            // Every Kolmisoft server is the customer's own (`http://<SERVER_IP>/billing`).
            default_base_url: None,
            status_of: vec![],
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<FlowState> {
        let result = match &invocation.command {
            Command::Report { .. } => start_payments_report(invocation),
            other => Err(ProviderError::not_supported(format!(
                "the Kolmisoft plugin offers only the `payments` report, not `{}`",
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
        let step: Step<FlowState> = match state {
            FlowState::Payments => finish_payments_report(response).into(),
        };
        step.secrets_removed(&invocation.account)
    }
}

export_plugin!(Kolmisoft);

fn start_payments_report(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    let Command::Report {
        report,
        from,
        till,
        filters,
        extra,
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Report,
            invocation.command.operation(),
        ));
    };
    if report != PAYMENTS_REPORT {
        return Err(ProviderError::invalid_request(format!(
            "Kolmisoft has no report `{}`; the only one is `{PAYMENTS_REPORT}`",
            gatehouse_plugin_api::error::truncate(report)
        ))
        .with_field("report"));
    }
    if let Some(name) = extra.keys().next() {
        return Err(ProviderError::invalid_request(format!(
            "the Kolmisoft payments report takes no extra fields (got `{}`); filters go in `filters`",
            gatehouse_plugin_api::error::truncate(name)
        ))
        .with_field(format!("extra.{name}")));
    }
    let settings = Settings::read(&invocation.account)?;
    let query = payments_query(
        *from,
        *till,
        filters,
        invocation.now_unix,
        settings.utc_offset_seconds,
    )
    .map_err(|error| error.into_provider_error())?;

    let filter_pairs = query.pairs();
    let hash = payments_get_hash(&filter_pairs, settings.secret_key);
    // `u` first, the filters in the document's order, `hash` last: the order of the document's
    // example request.
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(filter_pairs.len() + 2);
    pairs.push(("u", settings.username));
    pairs.extend(filter_pairs);
    pairs.push(("hash", &hash));
    let encoded = encode_form(&pairs);

    let url = join_url(settings.base_url, PAYMENTS_GET_PATH);
    let request = match settings.method {
        // Only when the server has "Allow GET API" on: the parameters (and the hash) then sit in
        // the URL, which is why the document calls it unsafe. The host never logs `hash`.
        Method::Get => {
            let mut request = HttpRequest::get(format!("{url}?{encoded}"));
            request.sensitive_headers.push("hash".into());
            request
        }
        _ => HttpRequest::post(url).form_body(encoded),
    }
    .header("Accept", "application/xml, text/xml")
    // A read: sending it twice changes nothing at the provider.
    .retry_safe(true);
    Ok(Step::send(request, FlowState::Payments))
}

fn finish_payments_report(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    let answer = read_payments_answer(&response.body);
    if !response.is_success() {
        // A refusal the server spelled out says more than the status line does.
        return Err(match answer {
            Ok(PaymentsAnswer::Refused(error)) => error,
            _ => http_error(response.status, &response.body),
        });
    }
    match answer? {
        PaymentsAnswer::Payments(records) => {
            Ok(Outcome::succeeded().with_details(Details::Report {
                records,
                raw_text: None,
            }))
        }
        PaymentsAnswer::Refused(error) => Err(error),
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
