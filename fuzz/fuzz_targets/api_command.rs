#![no_main]
//! The HTTP API's command parsing, step for step as `service::api::command_route` does it: the
//! body as JSON, an object, no `operation` of its own, the route's operation added, then
//! `Command`. A parsed command serializes and parses back to itself.
use gatehouse_plugin_api::{Command, Operation};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const OPERATIONS: [Operation; 7] = [
    Operation::Charge,
    Operation::Refund,
    Operation::AffiliatePayout,
    Operation::AffiliateRefund,
    Operation::Report,
    Operation::Status,
    Operation::PaymentPage,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let operation = OPERATIONS[usize::from(selector) % OPERATIONS.len()];
    let mut fields: Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) => return,
        }
    };
    let Some(object) = fields.as_object_mut() else {
        return;
    };
    if object.contains_key("operation") {
        return;
    }
    object.insert("operation".into(), Value::String(operation.as_str().into()));
    let Ok(command) = serde_json::from_value::<Command>(fields) else {
        return;
    };
    assert_eq!(command.operation(), operation);
    let text = serde_json::to_string(&command).expect("a parsed command serializes");
    let back: Command = serde_json::from_str(&text).expect("a serialized command parses");
    assert_eq!(back, command);
    if let Some(amount) = command.amount() {
        let _ = amount.to_decimal_string();
    }
});
