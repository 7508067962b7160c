//! Pure mappings between Gatehouse's normalized types and Template Pay's wire format.
//!
//! Nothing here builds a request or reads an invocation's flow: these functions take wire values
//! or normalized values and return the other, so each mapping is testable on its own. The wire
//! format is described in the README; every rule below names the part of it it implements.

use gatehouse_plugin_api::{
    AccountConfig, BalanceEntry, Currency, ErrorKind, Money, Outcome, ProviderError,
};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/charges`.
#[derive(Debug, Serialize)]
pub struct ChargeRequest<'a> {
    /// Major units as an exact decimal string (`"10.00"`): never a float.
    pub amount: String,
    pub currency: &'static str,
    /// Our reference; the same value travels as the `Idempotency-Key` header.
    pub reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<&'a str>,
}

/// The answer of `POST /v1/charges` (HTTP 200 or 201).
#[derive(Debug, Deserialize)]
pub struct ChargeResponse {
    pub id: String,
    /// `succeeded`, `pending` or `declined`.
    pub status: String,
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub decline_message: Option<String>,
}

/// The answer of `GET /v1/balance`.
#[derive(Debug, Deserialize)]
pub struct BalanceResponse {
    pub balances: Vec<WireBalance>,
}

#[derive(Debug, Deserialize)]
pub struct WireBalance {
    pub wallet: String,
    pub amount: String,
    pub currency: String,
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    pub error: WireError,
}

#[derive(Debug, Deserialize)]
pub struct WireError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Builds the charge body, refusing what Template Pay cannot take before anything is sent.
pub fn charge_request<'a>(
    amount: &Money,
    reference: &'a str,
    description: Option<&'a str>,
    customer_email: Option<&'a str>,
) -> Result<ChargeRequest<'a>, ProviderError> {
    if !amount.is_positive() {
        return Err(ProviderError::invalid_request("amount must be positive")
            .with_field("amount.minor_units"));
    }
    Ok(ChargeRequest {
        amount: amount.to_decimal_string(),
        currency: amount.currency.code(),
        reference,
        description,
        customer_email,
    })
}

/// Maps a readable charge answer. `Err` means the answer cannot be trusted (unknown status,
/// unusable or different amount): the caller reports the charge `unknown`, never `failed`,
/// because the provider may have taken the money.
pub fn charge_outcome(
    response: &ChargeResponse,
    requested: &Money,
) -> Result<Outcome, ProviderError> {
    let charged = wire_money(&response.amount, &response.currency, "charge")?;
    if charged != *requested {
        return Err(ProviderError::malformed_response(format!(
            "Template Pay reports a charge of {charged}, but {requested} was asked for"
        )));
    }
    let outcome = match response.status.as_str() {
        "succeeded" => Outcome::succeeded(),
        "pending" => Outcome::pending(),
        "declined" => {
            let mut error =
                ProviderError::new(ErrorKind::Declined, "Template Pay declined the charge");
            if let Some(code) = &response.decline_code {
                error = error.with_provider_code(code.clone());
            }
            if let Some(message) = &response.decline_message {
                error = error.with_provider_message(message.clone());
            }
            Outcome::failed(error)
        }
        other => {
            return Err(ProviderError::malformed_response(format!(
                "Template Pay's charge answer has the undocumented status `{}`",
                gatehouse_plugin_api::error::truncate(other)
            )));
        }
    };
    Ok(outcome
        .with_provider_reference(response.id.clone())
        .with_amount(charged))
}

pub fn balances(response: &BalanceResponse) -> Result<Vec<BalanceEntry>, ProviderError> {
    response
        .balances
        .iter()
        .map(|balance| {
            Ok(BalanceEntry {
                name: balance.wallet.clone(),
                amount: wire_money(&balance.amount, &balance.currency, "balance")?,
            })
        })
        .collect()
}

/// An amount as Template Pay writes it: a decimal string in major units plus an ISO 4217 code.
/// A value with more decimals than the currency has is refused rather than rounded.
pub fn wire_money(amount: &str, currency: &str, what: &str) -> Result<Money, ProviderError> {
    let currency = Currency::from_code(currency).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Template Pay's {what} answer has an unusable currency: {error}"
        ))
    })?;
    Money::parse_decimal(amount, currency).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Template Pay's {what} answer has an unusable amount: {error}"
        ))
    })
}

/// Reads a JSON answer; the message names the operation and serde's reason. (serde's reason may
/// quote the provider's text: errors leave the plugin through `secrets_removed` in `lib.rs`, which uses
/// `ProviderError::redacted`.)
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|error| {
        ProviderError::malformed_response(format!(
            "Template Pay's {what} answer is not the documented JSON: {error}"
        ))
    })
}

/// Maps an error answer (any non-2xx status) to a normalized error. The provider's code and
/// message are kept so an operator sees the provider's own words; secrets are removed before the
/// text is cut to length, so a cut can never leave part of a secret behind.
pub fn http_error(status: u16, body: &[u8], account: &AccountConfig) -> ProviderError {
    // Template Pay documents no statuses of its own beyond its error body, so they read the common
    // way; a provider that documents some maps those first and falls back to this.
    let kind = ErrorKind::for_http_status(status);
    let mut error = ProviderError::new(kind, format!("Template Pay answered HTTP {status}"));
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(ErrorResponse { error: wire }) => {
            if let Some(code) = wire.code {
                error = error.with_provider_code(account.redact(&code));
            }
            if let Some(message) = wire.message {
                error = error.with_provider_message(account.redact(&message));
            }
        }
        // Proxies and load balancers answer with HTML or text: keep the start of it.
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if !text.trim().is_empty() {
                error = error.with_provider_message(account.redact(text.trim()));
            }
        }
    }
    error
}

/// Whether a money-moving request answered with `status` may still have been carried out:
/// server errors, timeouts and "this idempotency key exists" say nothing about the money, so the
/// outcome is `unknown` and the host reconciles it. Other 4xx answers are refusals.
pub fn may_have_acted(status: u16) -> bool {
    !(400..=499).contains(&status) || matches!(status, 408 | 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor_units: i64) -> Money {
        Money::new(minor_units, Currency::from_code("USD").expect("USD"))
    }

    #[test]
    fn amounts_are_exact_decimal_strings() {
        let request = charge_request(&usd(1995), "gh_1", None, None).expect("valid");
        assert_eq!(request.amount, "19.95");
        assert_eq!(
            wire_money("19.95", "USD", "test").expect("valid"),
            usd(1995)
        );
        assert_eq!(
            wire_money("19.950", "USD", "test").expect("trailing zero"),
            usd(1995)
        );
        for (amount, currency) in [
            ("19.955", "USD"),
            ("1e3", "USD"),
            ("", "USD"),
            ("10", "XXX"),
            ("10", "usd"),
        ] {
            let error = wire_money(amount, currency, "test").expect_err(amount);
            assert_eq!(error.kind, ErrorKind::MalformedResponse);
        }
    }

    #[test]
    fn statuses_that_may_hide_money_are_recognized() {
        for status in [500, 502, 503, 504, 408, 409, 302, 100] {
            assert!(may_have_acted(status), "{status}");
        }
        for status in [400, 401, 402, 403, 404, 422, 429] {
            assert!(!may_have_acted(status), "{status}");
        }
    }

    #[test]
    fn redaction_removes_every_secret() {
        let account = gatehouse_plugin_api::AccountConfig {
            secrets: [(
                "api_key".to_string(),
                gatehouse_plugin_api::Secret::new("sk_live_abc123"),
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(account.redact("bad key sk_live_abc123!"), "bad key ***!");
    }
}
