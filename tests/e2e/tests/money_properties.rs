//! Property tests for money conversion, in the contract's `Money` and in every provider format the
//! plugins write or read, through the real plugin cdylibs (loaded by the host's own loader and
//! driven with scripted answers, no sockets): round trips exact, no overflow or panic at the
//! extremes of `i64`, and amounts with more decimals than the currency allows refused, never
//! rounded.

use crate::reliability;

use gatehouse_plugin_api::{Currency, HttpResponse, Money, MoneyError, OutcomeStatus};
use proptest::prelude::*;
use reliability::{drive, invocation, loaded_plugin};
use serde_json::json;
use serde_json::value::RawValue;

/// Currencies of every exponent ISO 4217 uses: 0, 2, 3 and 4.
const CURRENCIES: [&str; 8] = ["XOF", "JPY", "USD", "EUR", "KWD", "BHD", "TND", "CLF"];

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(CURRENCIES.to_vec())
        .prop_map(|code| Currency::from_code(code).expect("ISO 4217"))
}

fn minor_units() -> impl Strategy<Value = i64> {
    prop_oneof![
        -1_000_000i64..1_000_000,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX - 1),
        Just(i64::MIN + 1)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Minor units -> decimal string -> minor units is the identity, for every i64.
    #[test]
    fn decimal_strings_round_trip_exactly(minor in minor_units(), currency in currency()) {
        let money = Money::new(minor, currency);
        let text = money.to_decimal_string();
        let digits_after_point = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
        prop_assert_eq!(digits_after_point as u32, currency.exponent(), "{}", text);
        prop_assert_eq!(Money::parse_decimal(&text, currency), Ok(money));
        // Trailing zeros past the exponent are the same amount.
        let padded = if text.contains('.') { format!("{text}00") } else { format!("{text}.000") };
        prop_assert_eq!(Money::parse_decimal(&padded, currency), Ok(money));
    }

    /// One more significant decimal than the currency has is refused, never rounded.
    #[test]
    fn too_many_decimals_are_refused(minor in -1_000_000_000i64..1_000_000_000, digit in 1u8..=9, currency in currency()) {
        let text = Money::new(minor, currency).to_decimal_string();
        let longer = if text.contains('.') { format!("{text}{digit}") } else { format!("{text}.{digit}") };
        let refused = matches!(
            Money::parse_decimal(&longer, currency),
            Err(MoneyError::TooManyDecimals { .. })
        );
        prop_assert!(refused, "{} accepted", longer);
    }

    /// Any digit string, however long, parses or is refused: no panic, no wrap-around.
    #[test]
    fn huge_and_odd_decimals_never_overflow(whole in "[+-]?[0-9]{0,45}", fraction in prop::option::of("[0-9]{0,30}"), currency in currency()) {
        let text = match &fraction { Some(fraction) => format!("{whole}.{fraction}"), None => whole.clone() };
        if let Ok(money) = Money::parse_decimal(&text, currency) {
            // Accepted: the same value, exactly.
            let back = Money::parse_decimal(&money.to_decimal_string(), currency);
            prop_assert_eq!(back, Ok(money));
            prop_assert_eq!(canonical(&money.to_decimal_string()), canonical(&text));
        }
    }
}

/// A decimal's text without sign noise, leading zeros or trailing fractional zeros, so that two
/// writings of one value compare equal without any arithmetic.
fn canonical(text: &str) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim_start_matches('+')),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let body = match (whole.is_empty(), fraction.is_empty()) {
        (true, true) => return "0".into(),
        (_, true) => whole.to_string(),
        (true, false) => format!("0.{fraction}"),
        (false, false) => format!("{whole}.{fraction}"),
    };
    if negative { format!("-{body}") } else { body }
}

// Provider formats, through the real cdylibs.

/// The raw JSON text at `path` in `json`, exactly as written (numbers keep their own text).
fn raw_at(json: &str, path: &[&str]) -> String {
    let mut text = json.to_string();
    for key in path {
        let map: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(&text).expect("a JSON object");
        text = map
            .get(*key)
            .unwrap_or_else(|| panic!("no `{key}` in {text}"))
            .get()
            .to_string();
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// PayGateGlobal: whole FCFA (XOF) written as a JSON integer, exactly; any other currency is
    /// refused before a request.
    #[test]
    fn paygateglobal_writes_whole_fcfa(minor in 1i64..=i64::MAX, other in currency()) {
        let plugin = loaded_plugin("gatehouse-plugin-paygateglobal");
        let charge = |amount: Money| invocation(
            json!({"operation": "charge", "amount": amount, "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}),
            "http://127.0.0.1:9",
            &[],
            &[("auth_token", "t")],
        );
        let xof = Currency::from_code("XOF").expect("XOF");
        let run = drive(&plugin, &charge(Money::new(minor, xof)), b"", vec![HttpResponse::new(200, r#"{"tx_reference": "1", "status": 0}"#)]);
        prop_assert_eq!(run.requests.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&run.requests[0].body).expect("JSON");
        prop_assert_eq!(body["amount"].as_i64(), Some(minor));
        prop_assert_eq!(run.result.expect("outcome").amount, Some(Money::new(minor, xof)));
        if other != xof {
            let run = drive(&plugin, &charge(Money::new(minor, other)), b"", vec![]);
            prop_assert!(run.requests.is_empty());
            let outcome = run.result;
            let refused = match &outcome {
                Err(error) => error.fields == vec!["amount.currency".to_string()],
                Ok(outcome) => outcome.status == OutcomeStatus::Failed,
            };
            prop_assert!(refused, "{:?}", outcome);
        }
    }

    /// PayGateGlobal answers: an amount written as a number, a string or with `.0` reads exactly;
    /// a fraction of a franc is refused (malformed), never rounded.
    #[test]
    fn paygateglobal_reads_amounts_exactly(minor in 0i64..=i64::MAX, half in 1u8..=9) {
        let plugin = loaded_plugin("gatehouse-plugin-paygateglobal");
        let status = invocation(json!({"operation": "status", "transaction_id": "1"}), "http://127.0.0.1:9", &[], &[("auth_token", "t")]);
        for written in [minor.to_string(), format!("\"{minor}\""), format!("{minor}.0"), format!("\"{minor}.00\"")] {
            let body = format!(r#"{{"tx_reference": "1", "status": 2, "amount": {written}}}"#);
            let run = drive(&plugin, &status, b"", vec![HttpResponse::new(200, body.as_str())]);
            let outcome = run.result.expect("outcome");
            prop_assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(minor), "{}", written);
        }
        let body = format!(r#"{{"tx_reference": "1", "status": 2, "amount": {minor}.{half}}}"#);
        let run = drive(&plugin, &status, b"", vec![HttpResponse::new(200, body.as_str())]);
        prop_assert!(run.result.is_err(), "a fractional franc was accepted: {:?}", run.result);
    }

    /// Xsolla: the checkout amount is the exact decimal, as a JSON number's own text, for
    /// currencies of 0, 2, 3 and 4 decimals.
    #[test]
    fn xsolla_writes_exact_decimal_numbers(minor in 1i64..=i64::MAX, currency in currency()) {
        let plugin = loaded_plugin("gatehouse-plugin-xsolla");
        let amount = Money::new(minor, currency);
        let charge = invocation(
            json!({"operation": "charge", "amount": amount, "customer": {"id": "u1", "ip": "203.0.113.7"},
                   "payment_method": "card", "saved_account_id": "5"}),
            "http://127.0.0.1:9/merchant/v2",
            &[("merchant_id", "12345"), ("project_id", "678")],
            &[("api_key", "k"), ("project_secret_key", "s")],
        );
        let run = drive(&plugin, &charge, b"", vec![HttpResponse::new(200, r#"{"transaction_id": 7}"#)]);
        prop_assert_eq!(run.requests.len(), 1);
        let body = String::from_utf8(run.requests[0].body.clone()).expect("UTF-8");
        let written = raw_at(&body, &["purchase", "checkout", "amount"]);
        prop_assert_eq!(&written, &amount.to_decimal_string());
        prop_assert_eq!(raw_at(&body, &["purchase", "checkout", "currency"]), format!("\"{}\"", currency.code()));
        prop_assert_eq!(Money::parse_decimal(&written, currency), Ok(amount));
    }

    /// CCBill: payouts in US dollars and cents (`14.95`), exactly; other currencies and
    /// non-positive amounts refused before a request.
    #[test]
    fn ccbill_writes_dollars_and_cents(minor in minor_units(), other in currency()) {
        let plugin = loaded_plugin("gatehouse-plugin-ccbill");
        let payout = |amount: Money| invocation(
            json!({"operation": "affiliate_payout", "affiliate_id": "1", "amount": amount}),
            "http://127.0.0.1:9",
            &[("client_accnum", "912345"), ("username", "u"), ("using_subacc", "0002")],
            &[("password", "p")],
        );
        let usd = Currency::from_code("USD").expect("USD");
        let run = drive(&plugin, &payout(Money::new(minor, usd)), b"", vec![HttpResponse::new(200, "\"results\"\n\"1\"\n")]);
        if minor > 0 {
            prop_assert_eq!(run.requests.len(), 1);
            let form = String::from_utf8(run.requests[0].body.clone()).expect("text");
            let sent = form.split('&').find_map(|pair| pair.strip_prefix("amount=")).expect("amount").to_string();
            prop_assert_eq!(&sent, &Money::new(minor, usd).to_decimal_string());
            prop_assert_eq!(Money::parse_decimal(&sent, usd), Ok(Money::new(minor, usd)));
        } else {
            prop_assert!(run.requests.is_empty(), "{} cents sent", minor);
        }
        if other != usd {
            let run = drive(&plugin, &payout(Money::new(minor.max(1), other)), b"", vec![]);
            prop_assert!(run.requests.is_empty(), "a payout in {} was sent", other);
        }
    }
}
