//! Normalized errors: one kind the host can act on, plus the provider's own words.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{AccountConfig, Operation};

/// What kind of failure happened, in terms the host and its callers can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command is wrong (missing field, bad amount, unsupported currency); nothing was sent
    /// or the provider refused it as malformed.
    InvalidRequest,
    /// The provider refused the credentials.
    Authentication,
    /// The provider understood the request and said no (insufficient funds, refused refund).
    Declined,
    /// The transaction, account or resource named does not exist at the provider.
    NotFound,
    /// The plugin or the provider does not offer this operation.
    NotSupported,
    /// The provider asks us to slow down, or the host paused the account to avoid a lockout.
    RateLimited,
    /// The provider already has a transaction with this identifier.
    Duplicate,
    /// The provider could not be reached or answered with a server error.
    ProviderUnavailable,
    /// The provider answered something the plugin cannot understand.
    MalformedResponse,
    /// The provider reported an error that fits no other kind; its code and text say more.
    ProviderError,
    /// The plugin misbehaved: it panicked, returned nonsense, or exceeded its time budget.
    PluginFault,
}

impl ErrorKind {
    /// The stable machine code used in the host's API answers (`invalid_request`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Authentication => "authentication",
            Self::Declined => "declined",
            Self::NotFound => "not_found",
            Self::NotSupported => "not_supported",
            Self::RateLimited => "rate_limited",
            Self::Duplicate => "duplicate",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::MalformedResponse => "malformed_response",
            Self::ProviderError => "provider_error",
            Self::PluginFault => "plugin_fault",
        }
    }
}

impl ErrorKind {
    /// The kind an HTTP error status means when the provider's documents say nothing more: the
    /// common reading of the status codes, shared by every plugin so that they agree.
    ///
    /// `401`/`403` are refused credentials (the host pauses the account), `429` a rate limit,
    /// `408` and `5xx` an unavailable provider (for a money-moving request, the host turns it into
    /// `unknown`: the provider may have acted), other `4xx` an invalid request, and anything else
    /// outside `2xx` (`1xx`, `3xx`, nonsense) an answer the plugin cannot read. A plugin whose
    /// provider documents its statuses maps those first and falls back to this.
    pub fn for_http_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Authentication,
            402 => Self::Declined,
            404 => Self::NotFound,
            409 => Self::Duplicate,
            429 => Self::RateLimited,
            408 | 500..=599 => Self::ProviderUnavailable,
            400..=499 => Self::InvalidRequest,
            _ => Self::MalformedResponse,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A normalized error. It never contains a secret: plugins build messages from public data only,
/// and the host scrubs every known secret value from it again before it leaves the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// A human sentence saying what was wrong and where.
    pub message: String,
    /// The provider's own code (`"6"`, `"-12"`, `"INVALID_SIGNATURE"`), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// The provider's own text, verbatim but bounded in length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message: Option<String>,
    /// The request fields the error is about, when the provider or the plugin named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Provider text kept in an error is cut to this many characters: a hostile provider must not be
/// able to make the host store or log megabytes.
pub const MAX_PROVIDER_TEXT: usize = 512;

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            provider_code: None,
            provider_message: None,
            fields: Vec::new(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn malformed_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MalformedResponse, message)
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, message)
    }

    pub fn plugin_fault(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PluginFault, message)
    }

    /// A flow function was handed a command it does not handle: the plugin's own dispatch is
    /// wrong, never the caller's input, so this is a plugin fault naming both operations.
    pub fn wrong_command(expected: Operation, got: Operation) -> Self {
        Self::plugin_fault(format!(
            "the `{expected}` flow was started for a `{got}` command"
        ))
    }

    /// The error with every secret of `account` removed from its texts
    /// ([`AccountConfig::redact`]): the step each error goes through before it leaves a plugin.
    pub fn redacted(self, account: &AccountConfig) -> Self {
        self.redacted_also(account, &[])
    }

    /// [`redacted`](Self::redacted), also removing the non-secret credentials `also` names.
    pub fn redacted_also(mut self, account: &AccountConfig, also: &[&str]) -> Self {
        self.message = account.redact_also(&self.message, also);
        self.provider_code = self
            .provider_code
            .map(|code| account.redact_also(&code, also));
        self.provider_message = self
            .provider_message
            .map(|text| account.redact_also(&text, also));
        self
    }

    pub fn with_provider_code(mut self, code: impl Into<String>) -> Self {
        self.provider_code = Some(truncate(&code.into()));
        self
    }

    pub fn with_provider_message(mut self, text: impl Into<String>) -> Self {
        self.provider_message = Some(truncate(&text.into()));
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.fields.push(field.into());
        self
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(code) = &self.provider_code {
            write!(f, " (provider code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {}

/// Cuts provider text to [`MAX_PROVIDER_TEXT`] characters on a character boundary.
pub fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_PROVIDER_TEXT {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX_PROVIDER_TEXT).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_read_the_common_way() {
        for (status, kind) in [
            (400, ErrorKind::InvalidRequest),
            (401, ErrorKind::Authentication),
            (403, ErrorKind::Authentication),
            (402, ErrorKind::Declined),
            (404, ErrorKind::NotFound),
            (405, ErrorKind::InvalidRequest),
            (408, ErrorKind::ProviderUnavailable),
            (409, ErrorKind::Duplicate),
            (422, ErrorKind::InvalidRequest),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::ProviderUnavailable),
            (503, ErrorKind::ProviderUnavailable),
            (599, ErrorKind::ProviderUnavailable),
            (302, ErrorKind::MalformedResponse),
            (100, ErrorKind::MalformedResponse),
            (0, ErrorKind::MalformedResponse),
            (600, ErrorKind::MalformedResponse),
        ] {
            assert_eq!(ErrorKind::for_http_status(status), kind, "HTTP {status}");
        }
    }

    #[test]
    fn redacted_clears_every_text_of_the_error() {
        let mut account = AccountConfig::default();
        account
            .secrets
            .insert("key".into(), crate::command::Secret::new("sk live"));
        let error = ProviderError::invalid_request("refused sk live")
            .with_provider_code("sk+live")
            .with_provider_message("echo: sk%20live / user7")
            .redacted_also(&account, &["user7"]);
        assert_eq!(error.message, "refused ***");
        assert_eq!(error.provider_code.as_deref(), Some("***"));
        assert_eq!(error.provider_message.as_deref(), Some("echo: *** / ***"));
    }

    #[test]
    fn wrong_command_is_a_plugin_fault_naming_both_operations() {
        let error = ProviderError::wrong_command(Operation::Refund, Operation::Charge);
        assert_eq!(error.kind, ErrorKind::PluginFault);
        assert!(error.message.contains("`refund`"), "{}", error.message);
        assert!(error.message.contains("`charge`"), "{}", error.message);
    }
}
