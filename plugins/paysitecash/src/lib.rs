//! Gatehouse plugin for the Paysite Cash statistics APIs.
//!
//! Source of truth: "Intégration des statistiques Paysite Cash dans une plateforme externe"
//! (`shared/seeds/000`, 12/12/2007). It documents six read-only scripts — merchant
//! (`webmasters*.php`) and affiliate (`affiliates*.php`) statistics, each as API 1 (full),
//! API 2 (quick) and API 3 (monthly) — called by GET with the user name and the md5 of the
//! password, and five error strings. It says nothing of the successful answer's format: see
//! [`transformers::statistics`] for what is assumed and how tolerant the reading is.
//!
//! Every documented operation maps to the normalized `report` command; there is nothing else to
//! offer (no payments, no refunds, no webhooks in this document).
//!
//! Flood protection (3 failed logins in 5 minutes lock the account) is the host's job: this
//! plugin classifies `auth error` as [`ErrorKind::Authentication`] and `too many login attemps`
//! as [`ErrorKind::RateLimited`] so the host pauses the account before the lockout.

mod account;
mod transformers;

use gatehouse_plugin_api::{
    Command, ConfigKey, Details, ErrorKind, HttpResponse, Invocation, Manifest, Operation, Outcome,
    Plugin, ProviderError, Step, export_plugin,
};
use serde::{Deserialize, Serialize};

use crate::account::{CURRENCY, DELIMITER, PASSWORD, USER, credentials, parse_settings};
use crate::transformers::errors::{DocumentedError, http_error};
use crate::transformers::statistics::{
    BodyError, MAX_BODY_BYTES, Statistics, decode_text, looks_binary, parse_statistics,
};
use crate::transformers::{DEFAULT_BASE_URL, StatisticsApi, statistics_query, statistics_request};

pub use crate::transformers::md5_hex;

pub struct PaysiteCash;

/// Where a flow is between two requests: there is only ever one, the statistics GET.
#[derive(Debug, Serialize, Deserialize)]
pub enum FlowState {
    /// Waiting for the answer of this API's script. Holds no credential: the host keeps it.
    Statistics { api: StatisticsApi },
}

/// Only the start of a non-2xx body is kept for the error message.
const ERROR_BODY_PREFIX_BYTES: usize = 2048;

impl Plugin for PaysiteCash {
    type State = FlowState;

    fn manifest() -> Manifest {
        Manifest {
            provider: "paysitecash".into(),
            display_name: "Paysite Cash statistics".into(),
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            operations: vec![Operation::Report],
            config_keys: vec![
                ConfigKey::required(USER, "the Paysite Cash user name (`user`)"),
                ConfigKey::secret(
                    PASSWORD,
                    "the Paysite Cash password, in clear: only its md5 is sent (`pass`)",
                ),
                ConfigKey::optional(
                    DELIMITER,
                    "the field separator of the statistics text: one character, or `tab` (default `;`)",
                ),
                ConfigKey::optional(
                    CURRENCY,
                    "ISO 4217 currency of amounts in rows that name none (for example EUR); without it such amounts stay in raw only",
                ),
            ],
            extra_fields: vec![],
            reports: StatisticsApi::ALL
                .iter()
                .map(|api| api.report_name().to_string())
                .collect(),
            default_base_url: Some(DEFAULT_BASE_URL.into()),
            status_of: vec![],
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<FlowState> {
        start_statistics(invocation).unwrap_or_else(Step::Failed)
    }

    fn resume(
        invocation: &Invocation,
        state: FlowState,
        response: &HttpResponse,
    ) -> Step<FlowState> {
        let FlowState::Statistics { api } = state;
        finish_statistics(invocation, api, response).into()
    }
}

export_plugin!(PaysiteCash);

fn start_statistics(invocation: &Invocation) -> Result<Step<FlowState>, ProviderError> {
    let Command::Report {
        report,
        from,
        till,
        filters,
        extra,
    } = &invocation.command
    else {
        return Err(ProviderError::not_supported(format!(
            "Paysite Cash statistics offer only `report`, not `{}`",
            invocation.command.operation()
        )));
    };
    let query = statistics_query(report, *from, *till, filters, extra)?;
    let credentials = credentials(&invocation.account)?;
    // Checked now so that a bad setting fails before the request, not after it.
    parse_settings(&invocation.account)?;
    let request = statistics_request(&invocation.account.base_url, &query, &credentials);
    Ok(Step::send(
        request,
        FlowState::Statistics { api: query.api },
    ))
}

/// Reads the answer: a documented error string on any status, then HTTP errors, then the
/// statistics themselves. Provider text is cleared of the credential before it goes anywhere.
fn finish_statistics(
    invocation: &Invocation,
    api: StatisticsApi,
    response: &HttpResponse,
) -> Result<Outcome, ProviderError> {
    let credentials = credentials(&invocation.account)?;
    let settings = parse_settings(&invocation.account)?;
    let body = response.body.as_slice();

    let prefix = body.get(..ERROR_BODY_PREFIX_BYTES).unwrap_or(body);
    let prefix_text = credentials.redact(&decode_text(prefix));
    if body.len() <= ERROR_BODY_PREFIX_BYTES
        && let Some(documented) = DocumentedError::recognize(&prefix_text)
    {
        return Err(documented.to_provider_error(api, &prefix_text));
    }
    if !response.is_success() {
        return Err(http_error(response.status, &prefix_text, api));
    }

    if body.len() > MAX_BODY_BYTES {
        return Err(body_error(api, BodyError::TooLarge { bytes: body.len() }));
    }
    if looks_binary(body) {
        return Err(body_error(api, BodyError::Binary));
    }
    let text = credentials.redact(&decode_text(body));
    let details =
        match parse_statistics(&text, &settings).map_err(|error| body_error(api, error))? {
            Statistics::Records(records) => Details::Report {
                records,
                raw_text: None,
            },
            Statistics::Unstructured(raw_text) => Details::Report {
                records: Vec::new(),
                raw_text: Some(raw_text),
            },
        };
    Ok(Outcome::succeeded().with_details(details))
}

fn body_error(api: StatisticsApi, error: BodyError) -> ProviderError {
    ProviderError::new(
        ErrorKind::MalformedResponse,
        format!("Paysite Cash ({}): {error}", api.script()),
    )
}

#[cfg(test)]
mod tests;
