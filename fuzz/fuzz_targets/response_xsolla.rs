#![no_main]
//! Xsolla's answer parsers (charge, refunds, status, saved accounts, reports, token) on fuzzed bodies.
use gatehouse_fuzz::{invocation, run_and_check, split};
use gatehouse_plugin_xsolla::Xsolla;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((selector, status, body)) = split(data) else {
        return;
    };
    let reports = [
        "reports",
        "registry",
        "search",
        "simple_search",
        "payouts_breakdown",
        "transfers",
    ];
    let command = match selector % 10 {
        0 => json!({"operation": "charge", "amount": {"minor_units": 999, "currency": "USD"},
                    "customer": {"id": "u1", "ip": "203.0.113.7"}, "payment_method": "card", "saved_account_id": "5"}),
        1 => json!({"operation": "refund", "transaction_id": "100", "reason": "r"}),
        2 => {
            json!({"operation": "refund", "transaction_id": "100", "reason": "r", "amount": {"minor_units": 1, "currency": "KWD"}})
        }
        3 => json!({"operation": "status", "transaction_id": "100"}),
        4 => json!({"operation": "status", "reference": "gh_x"}),
        5 => json!({"operation": "saved_accounts", "user_id": "u1"}),
        6 => {
            json!({"operation": "payment_page", "amount": {"minor_units": 500, "currency": "JPY"}, "customer": {"id": "u1"}})
        }
        7 => json!({"operation": "report", "report": "search", "filters": {"format": "csv"}}),
        _ => {
            json!({"operation": "report", "report": reports[usize::from(selector) % reports.len()]})
        }
    };
    let invocation = invocation(
        command,
        "https://api.xsolla.example/merchant/v2",
        &[("merchant_id", "12345"), ("project_id", "678")],
        &[("api_key", "k3y"), ("project_secret_key", "s3cret")],
    );
    run_and_check::<Xsolla>(&invocation, status, body, b"");
});
