#![no_main]
//! PayGateGlobal's answer parsers (pay, duplicate lookup, status v1/v2, balance) on fuzzed bodies.
use gatehouse_fuzz::{invocation, run_and_check, split};
use gatehouse_plugin_paygateglobal::PayGateGlobal;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((selector, status, body)) = split(data) else {
        return;
    };
    let command = match selector % 4 {
        0 => json!({"operation": "charge", "amount": {"minor_units": 1500, "currency": "XOF"},
                    "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
        1 => json!({"operation": "status", "transaction_id": "1"}),
        2 => json!({"operation": "status", "reference": "gh_x"}),
        _ => json!({"operation": "balance"}),
    };
    let invocation = invocation(
        command,
        "https://paygateglobal.example",
        &[],
        &[("auth_token", "t0k3n")],
    );
    run_and_check::<PayGateGlobal>(&invocation, status, body, b"");
});
