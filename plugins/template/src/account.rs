//! The account's settings and secrets, read one way for every flow: a missing secret is an
//! error naming the key (never a value), and every request carries the credential marked
//! sensitive, so the host never logs it.

use gatehouse_plugin_api::{HttpRequest, Invocation, ProviderError};

/// Config key (secret): the API key, sent as `Authorization: Bearer <api_key>`.
pub const API_KEY: &str = "api_key";
/// Config key (optional): the merchant an API key acts for, sent as `Merchant-Id`.
pub const MERCHANT_ID: &str = "merchant_id";

/// The API key, or an error naming the missing key (never a value).
pub(crate) fn api_key(invocation: &Invocation) -> Result<&str, ProviderError> {
    invocation
        .account
        .secret(API_KEY)
        .map(|secret| secret.expose())
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            ProviderError::invalid_request(format!(
                "account `{}` has no `{API_KEY}` configured",
                invocation.account.account
            ))
            .with_field(API_KEY)
        })
}

/// Adds what every request carries: the credential (marked sensitive, so the host never logs
/// it), the merchant when configured, and the answer format.
pub(crate) fn authorized(
    request: HttpRequest,
    invocation: &Invocation,
) -> Result<HttpRequest, ProviderError> {
    let mut request = request
        .sensitive_header("Authorization", format!("Bearer {}", api_key(invocation)?))
        .header("Accept", "application/json");
    if let Some(merchant) = invocation
        .account
        .setting(MERCHANT_ID)
        .filter(|merchant| !merchant.is_empty())
    {
        request = request.header("Merchant-Id", merchant);
    }
    Ok(request)
}
