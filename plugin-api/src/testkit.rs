//! Drives a plugin's sans-IO flows with scripted HTTP exchanges: no host, no sockets.
//!
//! The flow runs through the same `extern "C"` entry points the host calls (JSON in, JSON out,
//! panics caught), so a test here exercises exactly what crosses the ABI.
//!
//! ```text
//! let run = testkit::run::<MyPlugin>(&invocation, b"", [HttpResponse::new(200, r#"{"status":0}"#)]);
//! assert_eq!(run.requests[0].url, "https://provider.example/api/v1/pay");
//! assert_eq!(run.outcome().status, OutcomeStatus::Pending);
//! ```

use std::collections::BTreeMap;
use std::collections::VecDeque;

use abi_stable::std_types::{RSlice, RStr};

use crate::command::{AccountConfig, Command, Invocation, Secret};
use crate::error::ProviderError;
use crate::flow::{FlowEnd, drive};
use crate::http::{HttpRequest, HttpResponse};
use crate::outcome::Outcome;
use crate::plugin::{Plugin, ffi_resume, ffi_start};

/// The host never lets a flow take more steps than this; neither does the testkit.
pub const MAX_STEPS: usize = crate::flow::MAX_FLOW_STEPS;

/// What a scripted flow did.
#[derive(Debug)]
pub struct FlowRun {
    /// Every request the plugin asked to send, in order.
    pub requests: Vec<HttpRequest>,
    pub result: Result<Outcome, ProviderError>,
}

impl FlowRun {
    /// The outcome; panics (failing the test) with the error if the flow failed.
    pub fn outcome(&self) -> &Outcome {
        match &self.result {
            Ok(outcome) => outcome,
            Err(error) => panic!("expected an outcome, the flow failed: {error:?}"),
        }
    }

    /// The error; panics (failing the test) if the flow produced an outcome.
    pub fn error(&self) -> &ProviderError {
        match &self.result {
            Ok(outcome) => panic!("expected an error, the flow produced: {outcome:?}"),
            Err(error) => error,
        }
    }

    /// The only request sent; panics unless exactly one was.
    pub fn single_request(&self) -> &HttpRequest {
        assert_eq!(
            self.requests.len(),
            1,
            "expected exactly one request: {:?}",
            self.requests
        );
        &self.requests[0]
    }
}

/// Runs `invocation` through plugin `P`, answering each request with the next scripted response.
/// A request beyond the script fails the flow with a clear test error.
///
/// The flow is run through every generation of entry points a host may use: the invocation as
/// one JSON text (`start`/`resume`, what a host drives a plugin built before `start_v2` with),
/// in pieces (`start_v2`/`resume_v2`), and with a charge and the outcome typed
/// (`start_v3`/`resume_v3`, what today's host uses). The runs must agree request for request and
/// on the result: a test of a plugin is a test of all three.
pub fn run<P: Plugin>(
    invocation: &Invocation,
    inbound_body: &[u8],
    responses: impl IntoIterator<Item = HttpResponse>,
) -> FlowRun {
    let script: VecDeque<HttpResponse> = responses.into_iter().collect();
    let whole = run_whole_json::<P>(invocation, inbound_body, script.clone());
    #[cfg(not(feature = "previous-contract-fixture"))]
    {
        let typed_script = script.clone();
        let pieces = run_in_pieces::<P>(invocation, inbound_body, script);
        assert_eq!(
            whole.requests, pieces.requests,
            "the invocation as one JSON text and in pieces asked for different requests"
        );
        assert_eq!(
            whole.result, pieces.result,
            "the invocation as one JSON text and in pieces ended differently"
        );
        let typed = run_typed::<P>(invocation, inbound_body, typed_script);
        assert_eq!(
            whole.requests, typed.requests,
            "the invocation as one JSON text and typed asked for different requests"
        );
        assert_eq!(
            whole.result, typed.result,
            "the invocation as one JSON text and typed ended differently"
        );
    }
    whole
}

/// [`run`] through `start_v3`/`resume_v3` only.
#[cfg(not(feature = "previous-contract-fixture"))]
pub fn run_typed<P: Plugin>(
    invocation: &Invocation,
    inbound_body: &[u8],
    mut script: VecDeque<HttpResponse>,
) -> FlowRun {
    use crate::ffi::EncodedInvocation;
    use crate::plugin::{ffi_resume_v3, ffi_start_v3};
    let encoded = EncodedInvocation::from_invocation(invocation).expect("invocation serializes");
    let driven = drive::<std::convert::Infallible>(
        || {
            Ok(
                ffi_start_v3::<P>(&encoded.as_ffi_v3(), RSlice::from_slice(inbound_body))
                    .into_host_step(),
            )
        },
        |state, response| {
            Ok(
                ffi_resume_v3::<P>(&encoded.as_ffi_v3(), RStr::from_str(&state), &response)
                    .into_host_step(),
            )
        },
        |_| script.pop_front(),
    );
    flow_run(driven)
}

/// [`run`] through `start_v2`/`resume_v2` only.
#[cfg(not(feature = "previous-contract-fixture"))]
pub fn run_in_pieces<P: Plugin>(
    invocation: &Invocation,
    inbound_body: &[u8],
    mut script: VecDeque<HttpResponse>,
) -> FlowRun {
    use crate::ffi::EncodedInvocation;
    use crate::plugin::{ffi_resume_v2, ffi_start_v2};
    let encoded = EncodedInvocation::from_invocation(invocation).expect("invocation serializes");
    let driven = drive::<std::convert::Infallible>(
        || {
            Ok(
                ffi_start_v2::<P>(&encoded.as_ffi(), RSlice::from_slice(inbound_body))
                    .into_host_step(),
            )
        },
        |state, response| {
            Ok(
                ffi_resume_v2::<P>(&encoded.as_ffi(), RStr::from_str(&state), &response)
                    .into_host_step(),
            )
        },
        |_| script.pop_front(),
    );
    flow_run(driven)
}

/// [`run`] through `start`/`resume` only.
pub fn run_whole_json<P: Plugin>(
    invocation: &Invocation,
    inbound_body: &[u8],
    mut script: VecDeque<HttpResponse>,
) -> FlowRun {
    let invocation_json = serde_json::to_string(invocation).expect("invocation serializes");
    let driven = drive::<std::convert::Infallible>(
        || {
            Ok(ffi_start::<P>(
                RStr::from_str(&invocation_json),
                RSlice::from_slice(inbound_body),
            )
            .into_host_step())
        },
        |state, response| {
            Ok(ffi_resume::<P>(
                RStr::from_str(&invocation_json),
                RStr::from_str(&state),
                &response,
            )
            .into_host_step())
        },
        |_| script.pop_front(),
    );
    flow_run(driven)
}

fn flow_run(driven: crate::flow::DrivenFlow<std::convert::Infallible>) -> FlowRun {
    let result = match driven.end {
        FlowEnd::Done(outcome) => Ok(outcome),
        FlowEnd::Failed(error) => Err(error),
        FlowEnd::Unanswered => Err(ProviderError::plugin_fault(format!(
            "testkit: the plugin sent request #{} but the script has no response for it",
            driven.requests.len()
        ))),
        FlowEnd::TooManySteps => Err(ProviderError::plugin_fault(format!(
            "testkit: the flow did not finish within {MAX_STEPS} steps"
        ))),
        FlowEnd::Aborted(never) => match never {},
    };
    FlowRun {
        requests: driven.requests,
        result,
    }
}

/// Builds an invocation from a command written as JSON, with a fixed clock and reference.
pub fn invocation(command_json: serde_json::Value, account: AccountConfig) -> Invocation {
    let command: Command = serde_json::from_value(command_json).expect("command JSON is valid");
    Invocation {
        command,
        account,
        reference: Some("gh_test_reference".into()),
        now_unix: 1_767_225_600, // 2026-01-01T00:00:00Z
    }
}

/// Builds an account from settings and secrets.
pub fn account(
    base_url: &str,
    settings: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> AccountConfig {
    AccountConfig {
        account: "test".into(),
        base_url: base_url.into(),
        settings: settings
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>(),
        secrets: secrets
            .iter()
            .map(|(key, value)| (key.to_string(), Secret::new(*value)))
            .collect(),
    }
}

/// Parses a request body as JSON, failing the test with the body if it is not.
pub fn json_body(request: &HttpRequest) -> serde_json::Value {
    serde_json::from_slice(&request.body).unwrap_or_else(|error| {
        panic!(
            "body is not JSON ({error}): {}",
            String::from_utf8_lossy(&request.body)
        )
    })
}

/// The query parameters of a request URL, decoded.
pub fn query_pairs(request: &HttpRequest) -> Vec<(String, String)> {
    decode_form(request.url.split_once('?').map_or("", |(_, query)| query))
}

/// Decodes `application/x-www-form-urlencoded` text.
pub fn decode_form(encoded: &str) -> Vec<(String, String)> {
    encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
