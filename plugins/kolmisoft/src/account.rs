//! The account's configuration, read once per command into a typed form.

use gatehouse_plugin_api::{AccountConfig, ConfigKey, Method, ProviderError};

pub const USERNAME: &str = "username";
pub const SECRET_KEY: &str = "secret_key";
pub const ALLOW_GET: &str = "allow_get";
pub const UTC_OFFSET_SECONDS: &str = "utc_offset_seconds";

/// The widest offset any timezone has ever used is ±14h; ±18h is the ISO 8601 / RFC bound.
const MAX_UTC_OFFSET_SECONDS: i64 = 18 * 3600;

/// The configuration keys, as the manifest declares them.
pub fn config_keys() -> Vec<ConfigKey> {
    vec![
        ConfigKey::required(
            USERNAME,
            "the API user's username (the `u` parameter): an admin, reseller or user of the Kolmisoft server",
        ),
        ConfigKey::secret(
            SECRET_KEY,
            "the server's API Secret Key (SETTINGS -> Setup -> Settings -> API), used only to compute the request hash",
        ),
        ConfigKey::optional(
            ALLOW_GET,
            "true to send GET requests (parameters in the query string), only if the server has \"Allow GET API\" on; \
             default false: POST with a form body, as the document recommends",
        ),
        ConfigKey::optional(
            UTC_OFFSET_SECONDS,
            "the offset from UTC, in seconds, of the day used for the default period (today 00:00 to 23:59) when a \
             report names no period; default 0 (UTC). The server's own timezone is not documented",
        ),
    ]
}

/// What a request needs from the account. The secret is borrowed, never copied into an error;
/// no `Debug` is derived so that it cannot reach a log through one.
pub struct Settings<'a> {
    pub base_url: &'a str,
    pub username: &'a str,
    pub secret_key: &'a str,
    pub method: Method,
    pub utc_offset_seconds: i64,
}

impl<'a> Settings<'a> {
    pub fn read(account: &'a AccountConfig) -> Result<Self, ProviderError> {
        let missing = |key: &str| {
            ProviderError::invalid_request(format!(
                "account `{}` has no `{key}` configured",
                account.account
            ))
            .with_field(key)
        };
        let base_url = account.base_url.trim();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ProviderError::invalid_request(format!(
                "account `{}` needs a base_url such as http://SERVER_IP/billing",
                account.account
            ))
            .with_field("base_url"));
        }
        let username = account
            .setting(USERNAME)
            .map(str::trim)
            .filter(|username| !username.is_empty())
            .ok_or_else(|| missing(USERNAME))?;
        let secret_key = account
            .secret(SECRET_KEY)
            .map(|secret| secret.expose())
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| missing(SECRET_KEY))?;
        let method = match account
            .setting(ALLOW_GET)
            .map(|text| text.trim().to_ascii_lowercase())
        {
            None => Method::Post,
            Some(flag) => match flag.as_str() {
                "true" | "1" | "yes" | "on" => Method::Get,
                "false" | "0" | "no" | "off" | "" => Method::Post,
                _ => {
                    return Err(ProviderError::invalid_request(format!(
                        "account `{}`: `{ALLOW_GET}` must be true or false",
                        account.account
                    ))
                    .with_field(ALLOW_GET));
                }
            },
        };
        let utc_offset_seconds = match account.setting(UTC_OFFSET_SECONDS) {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|offset| offset.abs() <= MAX_UTC_OFFSET_SECONDS)
                .ok_or_else(|| {
                    ProviderError::invalid_request(format!(
                        "account `{}`: `{UTC_OFFSET_SECONDS}` must be a whole number of seconds between \
                         -{MAX_UTC_OFFSET_SECONDS} and {MAX_UTC_OFFSET_SECONDS} (for example 7200 for UTC+2)",
                        account.account
                    ))
                    .with_field(UTC_OFFSET_SECONDS)
                })?,
        };
        Ok(Self {
            base_url,
            username,
            secret_key,
            method,
            utc_offset_seconds,
        })
    }
}
