#![no_main]
//! PayGateGlobal's confirmation callback parser (unsigned JSON), then the status confirmation.
use gatehouse_fuzz::{invocation, run_and_check};
use gatehouse_plugin_paygateglobal::PayGateGlobal;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let invocation = invocation(
        json!({"operation": "webhook", "headers": []}),
        "https://paygateglobal.example",
        &[],
        &[("auth_token", "t")],
    );
    let run = run_and_check::<PayGateGlobal>(
        &invocation,
        200,
        br#"{"tx_reference": "1", "status": 0, "identifier": "gh_x"}"#,
        data,
    );
    // A callback is only ever believed after the status API confirmed it.
    if let Ok(outcome) = &run.result
        && let gatehouse_plugin_api::Details::Webhook(result) = &outcome.details
        && let Some(event) = &result.event
        && event.verified
    {
        assert_eq!(
            run.requests.len(),
            1,
            "verified without asking the status API"
        );
    }
});
