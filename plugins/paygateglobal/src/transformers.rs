//! Pure mappings between normalized types and PayGateGlobal's wire format
//! (seed document `004`: "Guide d'Intégration", methods 1 and 2, status v1/v2, check-balance).

use gatehouse_plugin_api::{
    BalanceEntry, Currency, Details, ErrorKind, Money, Outcome, OutcomeStatus, ProviderError,
    TransactionInfo,
};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// PayGateGlobal amounts are whole FCFA: ISO 4217 `XOF`, exponent 0.
pub fn xof() -> Result<Currency, ProviderError> {
    Currency::from_code("XOF").map_err(|error| ProviderError::plugin_fault(error.to_string()))
}

/// The networks method 1 accepts (`network`), as the document spells them.
pub fn normalize_network(network: &str) -> Result<&'static str, ProviderError> {
    match network
        .trim()
        .to_ascii_uppercase()
        .replace(['-', ' '], "")
        .as_str()
    {
        "FLOOZ" => Ok("FLOOZ"),
        "TMONEY" => Ok("TMONEY"),
        _ => Err(ProviderError::invalid_request(format!(
            "payment_method `{}` is not a PayGateGlobal network (FLOOZ or TMONEY)",
            gatehouse_plugin_api::error::truncate(network)
        ))
        .with_field("payment_method")),
    }
}

/// Checks an amount can be sent: XOF, whole, positive.
pub fn amount_to_wire(amount: &Money) -> Result<i64, ProviderError> {
    if amount.currency != xof()? {
        return Err(ProviderError::invalid_request(format!(
            "PayGateGlobal takes amounts in XOF (FCFA), not {}",
            amount.currency
        ))
        .with_field("amount.currency"));
    }
    if amount.minor_units <= 0 {
        return Err(
            ProviderError::invalid_request("amount must be a positive number of FCFA")
                .with_field("amount.minor_units"),
        );
    }
    Ok(amount.minor_units)
}

/// A phone number as the document's examples write it: digits, optionally a leading `+`.
pub fn phone_to_wire(phone: &str) -> Result<String, ProviderError> {
    let digits = phone.trim().trim_start_matches('+');
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_string())
    } else {
        Err(ProviderError::invalid_request(
            "customer.phone must be a mobile number of 8 to 15 digits",
        )
        .with_field("customer.phone"))
    }
}

/// The answer of `POST /api/v1/pay`.
#[derive(Debug, Deserialize)]
pub struct PayResponse {
    #[serde(default)]
    pub tx_reference: Option<Value>,
    pub status: Value,
}

/// The answer of `POST /api/v1/status` and `/api/v2/status`.
#[derive(Debug, Deserialize)]
pub struct StatusResponse {
    #[serde(default)]
    pub tx_reference: Option<Value>,
    #[serde(default)]
    pub identifier: Option<Value>,
    #[serde(default)]
    pub payment_reference: Option<Value>,
    pub status: Value,
    #[serde(default)]
    pub datetime: Option<Value>,
    #[serde(default)]
    pub payment_method: Option<Value>,
    #[serde(default)]
    pub amount: Option<Box<RawValue>>,
}

/// The confirmation PayGateGlobal POSTs to the merchant's return URL. Fields the host does not
/// act on are still parsed so that a callback missing its documented shape is noticed.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct Callback {
    pub tx_reference: Value,
    pub identifier: Value,
    #[serde(default)]
    pub payment_reference: Option<Value>,
    pub amount: Box<RawValue>,
    #[serde(default)]
    pub datetime: Option<Value>,
    #[serde(default)]
    pub payment_method: Option<Value>,
    #[serde(default)]
    pub phone_number: Option<Value>,
}

/// The answer of `POST /api/v1/check-balance`.
#[derive(Debug, Deserialize)]
pub struct BalanceResponse {
    pub flooz: Box<RawValue>,
    pub tmoney: Box<RawValue>,
}

/// Reads a JSON body, naming the operation in the error.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|error| {
        ProviderError::malformed_response(format!(
            "PayGateGlobal's {what} answer is not the documented JSON: {error}"
        ))
    })
}

/// A JSON scalar (string or number) as text; PayGateGlobal clients see both for the same fields.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn status_code(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// An amount in whole FCFA, written as a JSON number or string (`500`, `"500"`, `500.0`).
pub fn amount_from_wire(raw: &RawValue) -> Result<Money, ProviderError> {
    let text = raw.get().trim().trim_matches('"');
    Money::parse_decimal(text, xof()?).map_err(|error| {
        ProviderError::malformed_response(format!("PayGateGlobal sent an unusable amount: {error}"))
    })
}

/// Maps the method-1 status table: 0 registered, 2 invalid token, 4 invalid parameters,
/// 6 duplicate identifier.
pub enum PayResult {
    /// Registered: the customer confirms on their phone; the payment is pending until then.
    Registered(Box<Outcome>),
    /// A transaction with our identifier exists already: look it up to learn its state.
    Duplicate,
    Refused(ProviderError),
}

pub fn pay_result(response: &PayResponse) -> Result<PayResult, ProviderError> {
    let code = status_code(&response.status).ok_or_else(|| {
        ProviderError::malformed_response("PayGateGlobal's pay answer has no numeric `status`")
    })?;
    Ok(match code {
        0 => {
            let reference = response
                .tx_reference
                .as_ref()
                .and_then(scalar_text)
                .ok_or_else(|| {
                    ProviderError::malformed_response(
                        "PayGateGlobal registered the payment but sent no `tx_reference`",
                    )
                })?;
            PayResult::Registered(Box::new(
                Outcome::pending().with_provider_reference(reference),
            ))
        }
        2 => PayResult::Refused(
            ProviderError::new(
                ErrorKind::Authentication,
                "PayGateGlobal refused the auth_token",
            )
            .with_provider_code("2")
            .with_provider_message("Jeton d'authentification invalide"),
        ),
        4 => PayResult::Refused(
            ProviderError::invalid_request("PayGateGlobal refused the parameters")
                .with_provider_code("4")
                .with_provider_message("Paramètres Invalides"),
        ),
        6 => PayResult::Duplicate,
        other => {
            return Err(ProviderError::malformed_response(format!(
                "PayGateGlobal's pay answer has undocumented status {other}"
            ))
            .with_provider_code(other.to_string()));
        }
    })
}

/// Maps the payment status table: 0 paid, 2 in progress, 4 expired, 6 cancelled.
pub fn payment_status(response: &StatusResponse) -> Result<Outcome, ProviderError> {
    let code = status_code(&response.status).ok_or_else(|| {
        ProviderError::malformed_response("PayGateGlobal's status answer has no numeric `status`")
    })?;
    let (status, error) = match code {
        0 => (OutcomeStatus::Succeeded, None),
        2 => (OutcomeStatus::Pending, None),
        4 => (
            OutcomeStatus::Failed,
            Some(
                ProviderError::new(
                    ErrorKind::Declined,
                    "the payment expired before the customer confirmed it",
                )
                .with_provider_code("4")
                .with_provider_message("Expiré"),
            ),
        ),
        6 => (
            OutcomeStatus::Failed,
            Some(
                ProviderError::new(ErrorKind::Declined, "the payment was cancelled")
                    .with_provider_code("6")
                    .with_provider_message("Annulé"),
            ),
        ),
        other => {
            return Err(ProviderError::malformed_response(format!(
                "PayGateGlobal's status answer has undocumented status {other}"
            ))
            .with_provider_code(other.to_string()));
        }
    };
    let mut outcome = Outcome::new(status);
    outcome.error = error;
    if let Some(reference) = response.tx_reference.as_ref().and_then(scalar_text) {
        outcome.provider_reference = Some(reference);
    }
    if let Some(amount) = &response.amount {
        outcome.amount = Some(amount_from_wire(amount)?);
    }
    outcome.details = Details::Transaction(TransactionInfo {
        reference: response.identifier.as_ref().and_then(scalar_text),
        provider_status: Some(code.to_string()),
        payment_method: response.payment_method.as_ref().and_then(scalar_text),
        payment_reference: response.payment_reference.as_ref().and_then(scalar_text),
        date: response.datetime.as_ref().and_then(scalar_text),
        raw: Value::Null,
    });
    Ok(outcome)
}

pub fn balances(response: &BalanceResponse) -> Result<Vec<BalanceEntry>, ProviderError> {
    Ok(vec![
        BalanceEntry {
            name: "flooz".into(),
            amount: amount_from_wire(&response.flooz)?,
        },
        BalanceEntry {
            name: "tmoney".into(),
            amount: amount_from_wire(&response.tmoney)?,
        },
    ])
}

/// Maps an HTTP-level failure. The guide defines none (errors travel in `status`), so any non-2xx
/// answer is the server's or a proxy's and reads the common way.
pub fn http_error(status: u16, body: &str) -> ProviderError {
    let kind = ErrorKind::for_http_status(status);
    ProviderError::new(kind, format!("PayGateGlobal answered HTTP {status}"))
        .with_provider_code(status.to_string())
        .with_provider_message(body.trim())
}
