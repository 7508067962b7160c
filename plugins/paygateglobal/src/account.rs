//! The account's settings and secrets, read one way: PayGateGlobal accounts have one credential,
//! the merchant's API key, sent as `auth_token` in API bodies and as `token` in the payment-page
//! URL (the guide's only transport for method 2).

use gatehouse_plugin_api::{AccountConfig, ConfigKey, ProviderError};

/// Config key (secret): the merchant's API key.
pub const AUTH_TOKEN: &str = "auth_token";

pub fn config_keys() -> Vec<ConfigKey> {
    vec![ConfigKey::secret(
        AUTH_TOKEN,
        "the merchant's API key (auth_token in method 1, token in the payment page URL)",
    )]
}

/// The API key, refused before any request when it is missing or empty.
pub fn auth_token(account: &AccountConfig) -> Result<&str, ProviderError> {
    account
        .secret(AUTH_TOKEN)
        .map(|secret| secret.expose())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ProviderError::invalid_request(format!(
                "account `{}` has no `{AUTH_TOKEN}` configured",
                account.account
            ))
            .with_field(AUTH_TOKEN)
        })
}
