//! The one place where everything that can go wrong with a dispatch becomes a typed error with a
//! stable machine code and an HTTP status.

use gatehouse_plugin_api::{ErrorKind, Operation, ProviderError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    #[error("no plugin is loaded for provider `{provider}`")]
    UnknownProvider { provider: String },
    #[error("provider `{provider}` has no account `{account}` in the configuration")]
    UnknownAccount { provider: String, account: String },
    #[error("provider `{provider}` does not support `{operation}`")]
    NotSupported {
        provider: String,
        operation: Operation,
    },
    #[error("invalid command: {message}")]
    InvalidCommand { message: String },
    #[error("account `{provider}/{account}` is misconfigured: {}", problems.join("; "))]
    AccountMisconfigured {
        provider: String,
        account: String,
        problems: Vec<String>,
    },
    #[error("account `{provider}/{account}` is paused until {until_unix} (Unix time): {reason}")]
    AccountPaused {
        provider: String,
        account: String,
        reason: String,
        until_unix: u64,
    },
    #[error(
        "account `{provider}/{account}` allows {per_minute} requests a minute; the next slot is {wait_ms} ms away"
    )]
    RateLimited {
        provider: String,
        account: String,
        per_minute: u32,
        wait_ms: u64,
    },
    #[error("{0}")]
    Provider(ProviderError),
    #[error("the host is shutting down")]
    ShuttingDown,
}

impl DispatchError {
    /// The stable machine code of the API's error answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProvider { .. } => "unknown_provider",
            Self::UnknownAccount { .. } => "unknown_account",
            Self::NotSupported { .. } => "not_supported",
            Self::InvalidCommand { .. } => "invalid_request",
            Self::AccountMisconfigured { .. } => "account_misconfigured",
            Self::AccountPaused { .. } => "account_paused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Provider(error) => error.kind.code(),
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// The HTTP status the API answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownProvider { .. } | Self::UnknownAccount { .. } => 404,
            Self::NotSupported { .. } => 501,
            Self::InvalidCommand { .. } => 422,
            Self::AccountMisconfigured { .. } => 500,
            Self::AccountPaused { .. } | Self::RateLimited { .. } => 429,
            Self::ShuttingDown => 503,
            Self::Provider(error) => match error.kind {
                ErrorKind::InvalidRequest => 422,
                ErrorKind::Authentication => 502,
                ErrorKind::Declined => 402,
                ErrorKind::NotFound => 404,
                ErrorKind::NotSupported => 501,
                ErrorKind::RateLimited => 429,
                ErrorKind::Duplicate => 409,
                ErrorKind::ProviderUnavailable => 503,
                ErrorKind::MalformedResponse | ErrorKind::ProviderError => 502,
                ErrorKind::PluginFault => 500,
            },
        }
    }

    /// The provider error inside, if the error came from the provider or the plugin.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Self::Provider(error) => Some(error),
            _ => None,
        }
    }
}
