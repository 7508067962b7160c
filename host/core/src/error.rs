//! What can go wrong with a dispatch, as a typed error, and the stable machine codes every
//! Gatehouse error answers with ([`ErrorCode`]).
//!
//! The codes are defined here, once; the HTTP status each code answers with is defined once too,
//! in `gatehouse-service`'s API error, and the CLI's exit code in the `gatehouse` binary.

use std::fmt;

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
    /// A ledger reservation was offered for another command than the one dispatched: a bug in
    /// the caller, refused before anything is sent.
    #[error("the ledger reservation `{reservation}` was made for another command")]
    ReservationMismatch { reservation: String },
    #[error("the host is shutting down")]
    ShuttingDown,
    /// The hosts sharing the ledger could not be asked whether the account may send (the
    /// database is unreachable): refused, as sending could cost a login the fleet would not see.
    #[error("the fleet's account state is unavailable: {message}")]
    Coordination { message: String },
    /// The provider's plugin overran its budget so often that `stuck` threads are still inside
    /// it: new requests are refused until some return, so threads cannot grow without end.
    #[error(
        "the plugin of `{provider}` is unavailable: {stuck} plugin threads are stuck in it (host.max_abandoned_plugin_threads = {max})"
    )]
    PluginUnavailable {
        provider: String,
        stuck: u64,
        max: u64,
    },
}

impl DispatchError {
    /// The stable machine code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownProvider { .. } => ErrorCode::UnknownProvider,
            Self::UnknownAccount { .. } => ErrorCode::UnknownAccount,
            Self::NotSupported { .. } => ErrorCode::NotSupported,
            Self::InvalidCommand { .. } => ErrorCode::InvalidRequest,
            Self::AccountMisconfigured { .. } => ErrorCode::AccountMisconfigured,
            Self::AccountPaused { .. } => ErrorCode::AccountPaused,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Provider(error) => ErrorCode::from(error.kind),
            Self::ReservationMismatch { .. } => ErrorCode::InternalError,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Coordination { .. } => ErrorCode::LedgerError,
            Self::PluginUnavailable { .. } => ErrorCode::PluginUnavailable,
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

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// Every stable machine code a Gatehouse error carries (`error.code` in the API's JSON
        /// envelope and in the CLI's output). Codes are never renamed; new ones may be added.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The code written as text (a refusal recorded in the ledger), if it is one.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // The host refused the command before sending anything.
    UnknownProvider = "unknown_provider",
    UnknownAccount = "unknown_account",
    NotSupported = "not_supported",
    /// The command is wrong (a field, an amount, an `extra` field), or the provider said so.
    InvalidRequest = "invalid_request",
    AccountMisconfigured = "account_misconfigured",
    AccountPaused = "account_paused",
    RateLimited = "rate_limited",
    ShuttingDown = "shutting_down",
    /// The provider's plugin hung on too many calls; refused until its stuck threads return.
    PluginUnavailable = "plugin_unavailable",
    /// `/readyz`: the host cannot serve yet (no plugin loaded).
    NotReady = "not_ready",
    // The provider's or the plugin's answer (`ErrorKind`).
    Authentication = "authentication",
    Declined = "declined",
    NotFound = "not_found",
    Duplicate = "duplicate",
    ProviderUnavailable = "provider_unavailable",
    MalformedResponse = "malformed_response",
    ProviderError = "provider_error",
    PluginFault = "plugin_fault",
    // The service's and the API's own.
    /// The request cannot be read: not JSON, a bad query or path parameter, a bad header.
    BadRequest = "bad_request",
    Unauthorized = "unauthorized",
    /// The API key is valid but its scopes do not include the route's (`read`, `move_money`,
    /// `operate`).
    ForbiddenScope = "forbidden_scope",
    /// The API key is valid but does not reach the provider or account the request names (or
    /// the route spans every account and the key is limited to some).
    ForbiddenAccount = "forbidden_account",
    /// A ledger entry cannot be settled by hand in its state: final already, or `sending`.
    EntryNotSettleable = "entry_not_settleable",
    /// The ledger entry is final already: there is nothing to reconcile.
    EntryFinal = "entry_final",
    MethodNotAllowed = "method_not_allowed",
    PayloadTooLarge = "payload_too_large",
    IdempotencyKeyReused = "idempotency_key_reused",
    /// The first request with this idempotency key is still running.
    InProgress = "in_progress",
    /// The request did not finish within `server.request_timeout_ms` (waiting for a slot
    /// included); a command it started runs on and is answered to a retry with the same key.
    RequestTimeout = "request_timeout",
    LedgerError = "ledger_error",
    InternalError = "internal_error",
    /// A plugin install or rollback was refused (signature, conformance, provider, an unknown
    /// version); the active version keeps serving.
    PluginRefused = "plugin_refused",
}

impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidRequest => Self::InvalidRequest,
            ErrorKind::Authentication => Self::Authentication,
            ErrorKind::Declined => Self::Declined,
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::NotSupported => Self::NotSupported,
            ErrorKind::RateLimited => Self::RateLimited,
            ErrorKind::Duplicate => Self::Duplicate,
            ErrorKind::ProviderUnavailable => Self::ProviderUnavailable,
            ErrorKind::MalformedResponse => Self::MalformedResponse,
            ErrorKind::ProviderError => Self::ProviderError,
            ErrorKind::PluginFault => Self::PluginFault,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_and_agree_with_the_plugin_kinds() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
        for kind in [
            ErrorKind::InvalidRequest,
            ErrorKind::Authentication,
            ErrorKind::Declined,
            ErrorKind::NotFound,
            ErrorKind::NotSupported,
            ErrorKind::RateLimited,
            ErrorKind::Duplicate,
            ErrorKind::ProviderUnavailable,
            ErrorKind::MalformedResponse,
            ErrorKind::ProviderError,
            ErrorKind::PluginFault,
        ] {
            assert_eq!(ErrorCode::from(kind).as_str(), kind.code());
        }
    }
}
