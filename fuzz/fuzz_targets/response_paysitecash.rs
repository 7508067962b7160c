#![no_main]
//! Paysite Cash's statistics parser (;-separated text, documented error strings) on fuzzed bodies.
use gatehouse_fuzz::{invocation, run_and_check, split};
use gatehouse_plugin_paysitecash::PaysiteCash;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((selector, status, body)) = split(data) else {
        return;
    };
    let reports = [
        "webmasters",
        "webmasters_quick",
        "webmasters_month",
        "affiliates",
        "affiliates_quick",
        "affiliates_month",
    ];
    let report = reports[usize::from(selector) % reports.len()];
    let filters = if report.ends_with("_month") {
        json!({"month": "02", "year": "2028"})
    } else {
        json!({})
    };
    let invocation = invocation(
        json!({"operation": "report", "report": report, "filters": filters}),
        "https://billing.paysite.example/stats",
        &[("user", "u")],
        &[("password", "pw-secret")],
    );
    run_and_check::<PaysiteCash>(&invocation, status, body, b"");
});
