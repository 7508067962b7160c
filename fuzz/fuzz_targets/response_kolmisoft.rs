#![no_main]
//! Kolmisoft's payments report parser (XML) on fuzzed bodies.
use gatehouse_fuzz::{invocation, run_and_check, split};
use gatehouse_plugin_kolmisoft::Kolmisoft;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((_, status, body)) = split(data) else {
        return;
    };
    let invocation = invocation(
        json!({"operation": "report", "report": "payments", "from": 1748736000i64, "till": 1748822399i64}),
        "https://m4.example/billing",
        &[("username", "admin")],
        &[("secret_key", "k")],
    );
    run_and_check::<Kolmisoft>(&invocation, status, body, b"");
});
