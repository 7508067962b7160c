#![no_main]
//! Xsolla's webhook parser: fuzzed bodies, half of them correctly signed (so the parser past the
//! signature check is reached), half with a fuzzed signature (which must never verify).
use gatehouse_fuzz::invocation;
use gatehouse_plugin_api::testkit;
use gatehouse_plugin_api::{Details, ErrorKind};
use gatehouse_plugin_xsolla::Xsolla;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sha1::{Digest, Sha1};

const SECRET: &str = "s3cret";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let signed = selector % 2 == 0;
    let signature = if signed {
        let mut hasher = Sha1::new();
        hasher.update(body);
        hasher.update(SECRET.as_bytes());
        format!("Signature {}", hex::encode(hasher.finalize()))
    } else {
        format!(
            "Signature {}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        )
    };
    let invocation = invocation(
        json!({"operation": "webhook", "headers": [["authorization", signature]]}),
        "https://api.xsolla.example/merchant/v2",
        &[("merchant_id", "12345"), ("project_id", "678")],
        &[("api_key", "k"), ("project_secret_key", SECRET)],
    );
    let run = testkit::run::<Xsolla>(&invocation, body, []);
    assert!(run.requests.is_empty(), "a webhook sends nothing");
    match &run.result {
        Ok(outcome) => {
            if let Details::Webhook(result) = &outcome.details
                && let Some(event) = &result.event
                && event.verified
            {
                assert!(signed, "an event verified under a forged signature");
            }
        }
        Err(error) => assert!(
            !(error.kind == ErrorKind::PluginFault && error.message.contains("panicked")),
            "{error:?}"
        ),
    }
});
