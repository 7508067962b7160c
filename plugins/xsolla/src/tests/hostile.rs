//! Malformed, truncated and hostile answers: errors (or `unknown` for money), never panics;
//! and secrets never leave the plugin in an error or outcome.

use base64::Engine;
use gatehouse_plugin_api::{ErrorKind, OutcomeStatus, Plugin};
use serde_json::json;

use super::*;

fn commands() -> Vec<serde_json::Value> {
    vec![
        json!({"operation": "payment_page", "amount": {"minor_units": 100, "currency": "USD"}, "customer": {"id": "u"}}),
        json!({"operation": "saved_accounts", "user_id": "u"}),
        json!({"operation": "delete_saved_account", "user_id": "u", "account_type": "card", "account_id": "1"}),
        json!({"operation": "charge", "amount": {"minor_units": 100, "currency": "USD"}, "customer": {"id": "u", "ip": "1.2.3.4"},
               "payment_method": "card", "saved_account_id": "1"}),
        json!({"operation": "refund", "transaction_id": "1", "reason": "r"}),
        json!({"operation": "refund", "transaction_id": "1", "reason": "r", "amount": {"minor_units": 1, "currency": "USD"}}),
        json!({"operation": "report", "report": "search"}),
        json!({"operation": "report", "report": "registry"}),
        json!({"operation": "report", "report": "simple_search"}),
        json!({"operation": "report", "report": "payouts_breakdown"}),
        json!({"operation": "report", "report": "transfers"}),
        json!({"operation": "report", "report": "reports"}),
        json!({"operation": "report", "report": "transaction_details", "filters": {"transaction_id": "1"}}),
        json!({"operation": "status", "transaction_id": "1"}),
        json!({"operation": "status", "reference": "r"}),
        json!({"operation": "sandbox_chargeback", "transaction_id": "1"}),
    ]
}

fn hostile_bodies() -> Vec<Vec<u8>> {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = "{\"a\":".repeat(50_000);
    vec![
        b"".to_vec(),
        b"<html><body>502 Bad Gateway</body></html>".to_vec(),
        br#"{"token": "abc", "transaction_id": 1"#.to_vec(),
        br#"[{"transaction": {"id": 1, "status": "do"#.to_vec(),
        vec![0xff, 0xfe, 0xfd, 0x00, 0x80],
        b"\"\\ud800\"".to_vec(),
        "x".repeat(2_000_000).into_bytes(),
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        br#"{"transaction_id": {"nested": [1, 2, {"x": null}]}, "token": []}"#.to_vec(),
        br#"[{"payment_details": {"payment": {"amount": 99999999999999999999999999, "currency": "USD"}}, "transaction": {"id": 1, "status": "done"}}]"#.to_vec(),
        br#"[{"payment_details": {"payment": {"amount": -0.0000001, "currency": "USD"}}, "transaction": {"id": 1, "status": "done"}}]"#.to_vec(),
        b"null".to_vec(),
        b"true".to_vec(),
    ]
}

#[test]
fn hostile_answers_never_panic() {
    for command in commands() {
        let money = matches!(command["operation"].as_str(), Some("charge" | "refund"));
        for body in hostile_bodies() {
            for status in [200, 422, 500] {
                let response = gatehouse_plugin_api::HttpResponse::new(status, body.clone());
                let run = run(command.clone(), [response]);
                let preview = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
                match &run.result {
                    Ok(outcome) => {
                        assert_ne!(
                            outcome.error.as_ref().map(|error| error.kind),
                            Some(ErrorKind::PluginFault),
                            "{command} / {status} / {preview}"
                        );
                        // A refund's 2xx is the acceptance itself (204 has no body), so an empty or
                        // JSON 2xx body is pending; anything else after sending is unknown.
                        let refund_accepted = command["operation"] == "refund"
                            && status == 200
                            && (body.is_empty()
                                || std::str::from_utf8(&body)
                                    .ok()
                                    .and_then(|text| {
                                        serde_json::from_str::<&serde_json::value::RawValue>(text)
                                            .ok()
                                    })
                                    .is_some());
                        if money && status != 422 && !refund_accepted {
                            assert_eq!(
                                outcome.status,
                                OutcomeStatus::Unknown,
                                "{command} / {status} / {preview}"
                            );
                        }
                    }
                    Err(error) => {
                        assert_ne!(
                            error.kind,
                            ErrorKind::PluginFault,
                            "{command} / {status} / {preview}: {error:?}"
                        );
                        assert!(
                            !money,
                            "money-moving commands end with an outcome once sent: {command}"
                        );
                        assert!(error.message.len() < 2_000);
                        assert!(
                            error
                                .provider_message
                                .as_deref()
                                .is_none_or(|text| text.chars().count() <= 513)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn hostile_webhook_bodies_never_panic() {
    for body in hostile_bodies() {
        let signature = format!(
            "Signature {}",
            crate::transformers::webhook::signature_of(&body, PROJECT_SECRET)
        );
        for headers in [
            json!([["authorization", signature]]),
            json!([]),
            json!([["authorization", "Signature zz"]]),
        ] {
            let invocation = gatehouse_plugin_api::testkit::invocation(
                json!({"operation": "webhook", "headers": headers}),
                account(),
            );
            let run = gatehouse_plugin_api::testkit::run::<crate::Xsolla>(&invocation, &body, []);
            let outcome = run.outcome();
            let gatehouse_plugin_api::Details::Webhook(result) = &outcome.details else {
                panic!("no reply")
            };
            assert!(
                matches!(result.reply.status, 401 | 422),
                "{}",
                result.reply.status
            );
        }
    }
}

#[test]
fn secrets_never_appear_in_errors_or_outcomes() {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{MERCHANT_ID}:{API_KEY}"));
    let echoes = [
        answer(401, r#"{"message":"Unauthorized"}"#),
        answer(
            422,
            r#"{"message":"bad","extended_message":{"property_errors":{"user.id.value":["blank"]}}}"#,
        ),
        answer(500, "Internal"),
        ok("garbage"),
        ok(r#"{"token":"t"}"#),
        ok("[]"),
        answer(204, ""),
    ];
    let mut transcripts = Vec::new();
    for command in commands() {
        for response in &echoes {
            let run = run(command.clone(), [response.clone()]);
            transcripts.push(format!("{:?}", run.result));
            if let Ok(outcome) = &run.result {
                transcripts.push(serde_json::to_string(outcome).expect("outcome serializes"));
            }
        }
    }
    // Webhooks with good and bad signatures.
    for headers in [
        json!([]),
        json!([[
            "authorization",
            "Signature 0000000000000000000000000000000000000000"
        ]]),
    ] {
        let invocation = gatehouse_plugin_api::testkit::invocation(
            json!({"operation": "webhook", "headers": headers}),
            account(),
        );
        let run = gatehouse_plugin_api::testkit::run::<crate::Xsolla>(&invocation, b"{}", []);
        transcripts.push(format!("{:?}", run.result));
    }
    // Refused commands and the account's own Debug form.
    transcripts.push(format!(
        "{:?}",
        run(
            json!({"operation": "charge", "amount": {"minor_units": 1, "currency": "USD"}}),
            []
        )
        .result
    ));
    transcripts.push(format!("{:?}", account()));
    for transcript in transcripts {
        for secret in [API_KEY, PROJECT_SECRET, pair.as_str()] {
            assert!(!transcript.contains(secret), "secret leaked: {transcript}");
        }
    }
}

#[test]
fn the_manifest_is_valid_and_complete() {
    let manifest = crate::Xsolla::manifest();
    assert_eq!(manifest.validate(), Ok(()));
    assert_eq!(manifest.provider, "xsolla");
    assert_eq!(manifest.plugin_version, "1.0.0");
    assert_eq!(
        manifest.reports,
        [
            "reports",
            "registry",
            "search",
            "simple_search",
            "payouts_breakdown",
            "transfers",
            "transaction_details"
        ]
    );
    let secret_keys: Vec<&str> = manifest
        .config_keys
        .iter()
        .filter(|key| key.secret)
        .map(|key| key.name.as_str())
        .collect();
    assert_eq!(secret_keys, ["api_key", "project_secret_key"]);
    assert_eq!(
        manifest.default_base_url.as_deref(),
        Some("https://api.xsolla.com/merchant/v2")
    );
}
