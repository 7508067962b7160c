//! Shared pieces of the fuzz targets: scripted flows through a plugin's real entry points
//! (`gatehouse_plugin_api::testkit::run`), and the invariants every flow must keep.

use gatehouse_plugin_api::testkit::{self, FlowRun};
use gatehouse_plugin_api::{ErrorKind, HttpResponse, Invocation, OutcomeStatus, Plugin};

/// Splits fuzz input into (selector, HTTP status, body).
pub fn split(data: &[u8]) -> Option<(u8, u16, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    let (&status, body) = rest.split_first()?;
    let status = match status % 8 {
        0..=3 => 200,
        4 => 201 + u16::from(status % 4),
        5 => 400 + u16::from(status % 30),
        6 => 500 + u16::from(status % 5),
        _ => 100 + u16::from(status),
    };
    Some((selector, status, body))
}

/// Builds an invocation from command JSON and an account.
pub fn invocation(
    command: serde_json::Value,
    base_url: &str,
    settings: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> Invocation {
    testkit::invocation(command, testkit::account(base_url, settings, secrets))
}

/// Runs the flow with the same answer to every request it sends (at most 16), then checks:
/// - no panic inside the plugin (the entry points catch them; a caught panic is a bug);
/// - a money-moving command whose request was answered with a 5xx never ends `failed`, and
///   never ends as a plain error (which the host records as `failed`): the provider may have
///   acted.
pub fn run_and_check<P: Plugin>(
    invocation: &Invocation,
    status: u16,
    body: &[u8],
    inbound: &[u8],
) -> FlowRun {
    let answer = HttpResponse::new(status, body.to_vec());
    let run = testkit::run::<P>(invocation, inbound, std::iter::repeat_n(answer, 16));
    if let Err(error) = &run.result {
        assert!(
            !(error.kind == ErrorKind::PluginFault && error.message.contains("panicked")),
            "the plugin panicked: {}",
            error.message
        );
    }
    let moves_money = invocation.command.operation().moves_money();
    if moves_money && !run.requests.is_empty() && status >= 500 {
        match &run.result {
            Ok(outcome) => assert_ne!(
                outcome.status,
                OutcomeStatus::Failed,
                "a 5xx answer to a money-moving request ended failed"
            ),
            Err(error) => panic!(
                "a 5xx answer to a money-moving request ended as an error (recorded failed by the host): {error:?}"
            ),
        }
    }
    run
}
