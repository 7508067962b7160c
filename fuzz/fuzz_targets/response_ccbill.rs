#![no_main]
//! CCBill DataLink's answer reader (CSV and XML result codes) for payouts and affiliate refunds.
use gatehouse_fuzz::{invocation, run_and_check, split};
use gatehouse_plugin_ccbill::CcBill;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((selector, status, body)) = split(data) else {
        return;
    };
    let command = if selector % 2 == 0 {
        json!({"operation": "affiliate_payout", "affiliate_id": "1", "amount": {"minor_units": 1495, "currency": "USD"}})
    } else {
        json!({"operation": "affiliate_refund", "affiliate_id": "1", "subscription_id": "2",
               "original_subscription_id": "3", "transaction_type": "one_time"})
    };
    let format = if selector & 2 == 0 { "csv" } else { "xml" };
    let invocation = invocation(
        command,
        "https://datalink.example",
        &[
            ("client_accnum", "912345"),
            ("username", "u"),
            ("using_subacc", "0002"),
            ("response_format", format),
        ],
        &[("password", "p4ss")],
    );
    run_and_check::<CcBill>(&invocation, status, body, b"");
});
