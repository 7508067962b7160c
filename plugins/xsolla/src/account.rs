//! An account's configuration, read and checked once per command.

use gatehouse_plugin_api::http::join_url;
use gatehouse_plugin_api::{AccountConfig, ConfigKey, HttpRequest, Method, ProviderError};

use crate::transformers::wire::{basic_authorization, is_numeric_id};

pub const MERCHANT_ID: &str = "merchant_id";
pub const PROJECT_ID: &str = "project_id";
pub const API_KEY: &str = "api_key";
pub const PROJECT_SECRET_KEY: &str = "project_secret_key";
pub const SANDBOX: &str = "sandbox";
pub const PAYSTATION_URL: &str = "paystation_url";
pub const SANDBOX_PAYSTATION_URL: &str = "sandbox_paystation_url";

/// The production API root [SEED: `https://api.xsolla.com/merchant/v2`].
pub const DEFAULT_BASE_URL: &str = "https://api.xsolla.com/merchant/v2";
/// The payment UI [SEED: `https://secure.xsolla.com/paystation4/?token={token}`].
pub const DEFAULT_PAYSTATION_URL: &str = "https://secure.xsolla.com/paystation4/";
/// The sandbox payment UI [SEED: `https://sandbox-secure.xsolla.com/paystation4/?token={token}`].
pub const DEFAULT_SANDBOX_PAYSTATION_URL: &str = "https://sandbox-secure.xsolla.com/paystation4/";

pub fn config_keys() -> Vec<ConfigKey> {
    vec![
        ConfigKey::required(
            MERCHANT_ID,
            "the numeric Xsolla merchant ID (Publisher Account > Company settings)",
        ),
        ConfigKey::required(
            PROJECT_ID,
            "the numeric Xsolla project ID tokens, saved accounts and charges belong to",
        ),
        ConfigKey::secret(
            API_KEY,
            "the merchant API key: the password of HTTP Basic `merchant_id:api_key`",
        ),
        ConfigKey::secret(
            PROJECT_SECRET_KEY,
            "the project's secret key: webhooks are signed with sha1(body + key)",
        ),
        ConfigKey::optional(
            SANDBOX,
            "`true` sends `\"mode\": \"sandbox\"` in tokens and charges and opens the sandbox payment UI",
        ),
        ConfigKey::optional(
            PAYSTATION_URL,
            "the payment UI the token is appended to (default https://secure.xsolla.com/paystation4/)",
        ),
        ConfigKey::optional(
            SANDBOX_PAYSTATION_URL,
            "the sandbox payment UI (default https://sandbox-secure.xsolla.com/paystation4/)",
        ),
    ]
}

/// What every request of an account needs, checked before anything is built.
pub struct Account<'a> {
    pub base_url: &'a str,
    pub merchant_id: &'a str,
    pub project_id: &'a str,
    api_key: &'a str,
    pub sandbox: bool,
    config: &'a AccountConfig,
}

impl<'a> Account<'a> {
    pub fn read(config: &'a AccountConfig) -> Result<Self, ProviderError> {
        let merchant_id = numeric_setting(config, MERCHANT_ID)?;
        let project_id = numeric_setting(config, PROJECT_ID)?;
        let api_key = config
            .secret(API_KEY)
            .map(|secret| secret.expose())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| missing(config, API_KEY))?;
        let base_url = if config.base_url.trim().is_empty() {
            DEFAULT_BASE_URL
        } else {
            config.base_url.as_str()
        };
        Ok(Self {
            base_url,
            merchant_id,
            project_id,
            api_key,
            sandbox: config.flag(SANDBOX),
            config,
        })
    }

    /// The project id as the number the JSON bodies carry.
    pub fn project_id_number(&self) -> Result<u64, ProviderError> {
        self.project_id.parse().map_err(|_| {
            ProviderError::invalid_request(format!("`{PROJECT_ID}` does not fit a 64-bit number"))
                .with_field(PROJECT_ID)
        })
    }

    /// `"sandbox"` in sandbox mode, for the bodies' `mode` field.
    pub fn mode(&self) -> Option<&'static str> {
        self.sandbox.then_some("sandbox")
    }

    /// Where the payment UI is opened, per mode; configurable so a simulator can stand in.
    pub fn paystation_url(&self) -> &'a str {
        let (key, default) = if self.sandbox {
            (SANDBOX_PAYSTATION_URL, DEFAULT_SANDBOX_PAYSTATION_URL)
        } else {
            (PAYSTATION_URL, DEFAULT_PAYSTATION_URL)
        };
        self.config
            .setting(key)
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .unwrap_or(default)
    }

    /// A request to `path` under the API root, authenticated with HTTP Basic on every call.
    /// The header is marked sensitive so the host never logs it.
    pub fn request(&self, method: Method, path: &str) -> HttpRequest {
        HttpRequest::new(method, join_url(self.base_url, path))
            .header("Accept", "application/json")
            .sensitive_header(
                "Authorization",
                basic_authorization(self.merchant_id, self.api_key),
            )
    }

    /// A JSON request with a body already serialized.
    pub fn json_request(&self, method: Method, path: &str, body: Vec<u8>) -> HttpRequest {
        let mut request = self
            .request(method, path)
            .header("Content-Type", "application/json");
        request.body = body;
        request
    }
}

/// The project secret key, needed for webhooks only.
pub fn project_secret_key(config: &AccountConfig) -> Option<&str> {
    config
        .secret(PROJECT_SECRET_KEY)
        .map(|secret| secret.expose())
        .filter(|key| !key.is_empty())
}

fn numeric_setting<'a>(config: &'a AccountConfig, name: &str) -> Result<&'a str, ProviderError> {
    let value = config
        .setting(name)
        .map(str::trim)
        .filter(|value| !value.is_empty());
    let value = value.ok_or_else(|| missing(config, name))?;
    if is_numeric_id(value) {
        Ok(value)
    } else {
        Err(ProviderError::invalid_request(format!(
            "account `{}`: `{name}` must be Xsolla's numeric id",
            config.account
        ))
        .with_field(name))
    }
}

fn missing(config: &AccountConfig, name: &str) -> ProviderError {
    ProviderError::invalid_request(format!(
        "account `{}` has no `{name}` configured",
        config.account
    ))
    .with_field(name)
}
