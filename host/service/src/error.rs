//! The service's errors, and the one API error every surface answers with.
//!
//! [`ApiError`] is built by one exhaustive conversion from the gateway's, the service's and the
//! ledger's typed errors; [`status_of`] gives each stable [`ErrorCode`] its HTTP status, once.
//! The HTTP API answers every error — its own, axum's rejections, the fallbacks — with
//! [`ApiError`]'s JSON envelope, and the CLI prints the same envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_core::{DispatchError, ErrorCode};
use gatehouse_ledger::LedgerError;
use gatehouse_plugin_api::ProviderError;
use serde_json::{Value, json};

/// Why the service refused or could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("invalid Idempotency-Key: {0}")]
    InvalidKey(String),
    #[error("the command with this idempotency key is still running; retry later")]
    InProgress,
    /// An operator asked to reconcile an entry that is final already.
    #[error("ledger entry `{id}` is `{state}` already: there is nothing to reconcile")]
    EntryFinal {
        id: String,
        state: gatehouse_ledger::EntryState,
    },
    /// An operator asked to reconcile an entry still being sent by this process.
    #[error("ledger entry `{id}` is being sent right now; reconcile it once its dispatch ends")]
    EntryInFlight { id: String },
    /// The first request with this idempotency key was refused before anything was sent; a retry
    /// gets the same answer.
    #[error("{message}")]
    RecordedRefusal { code: ErrorCode, message: String },
    /// The answer of an identical unsigned callback being confirmed at the same time, which this
    /// one shared (its code and message, as that one failed).
    #[error("{message}")]
    Shared { code: ErrorCode, message: String },
    /// A bug or a lost task: the service could not finish the request.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Dispatch(error) => error.code(),
            Self::Ledger(error) => ledger_code(error),
            Self::InvalidKey(_) => ErrorCode::BadRequest,
            Self::InProgress | Self::EntryInFlight { .. } => ErrorCode::InProgress,
            Self::EntryFinal { .. } => ErrorCode::EntryFinal,
            Self::RecordedRefusal { code, .. } | Self::Shared { code, .. } => *code,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }
}

fn ledger_code(error: &LedgerError) -> ErrorCode {
    match error {
        LedgerError::KeyReused { .. } => ErrorCode::IdempotencyKeyReused,
        LedgerError::NotFound { .. } => ErrorCode::NotFound,
        LedgerError::NotSettleable { .. } => ErrorCode::EntryNotSettleable,
        LedgerError::InvalidSettlement { .. } => ErrorCode::InvalidRequest,
        LedgerError::DuplicateId { .. }
        | LedgerError::InvalidEntry { .. }
        | LedgerError::NotSending { .. }
        | LedgerError::Storage(_)
        | LedgerError::Corrupt { .. } => ErrorCode::LedgerError,
    }
}

/// The HTTP status each error code answers with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownProvider | ErrorCode::UnknownAccount | ErrorCode::NotFound => {
            StatusCode::NOT_FOUND
        }
        // A provider without the operation is a well-formed request this account cannot take,
        // like an invalid one: 4xx, so a monitor's 5xx rate means a failure of ours or the
        // provider's, never a caller asking for what the provider does not offer.
        ErrorCode::NotSupported
        | ErrorCode::InvalidRequest
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::PluginRefused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::AccountPaused | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown
        | ErrorCode::NotReady
        | ErrorCode::ProviderUnavailable
        | ErrorCode::PluginUnavailable
        | ErrorCode::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
        // The provider refused *our* credentials or answered badly: not the caller's fault.
        ErrorCode::Authentication | ErrorCode::MalformedResponse | ErrorCode::ProviderError => {
            StatusCode::BAD_GATEWAY
        }
        ErrorCode::Declined => StatusCode::PAYMENT_REQUIRED,
        ErrorCode::Duplicate
        | ErrorCode::InProgress
        | ErrorCode::EntryNotSettleable
        | ErrorCode::EntryFinal => StatusCode::CONFLICT,
        ErrorCode::ForbiddenScope | ErrorCode::ForbiddenAccount => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::AccountMisconfigured
        | ErrorCode::PluginFault
        | ErrorCode::LedgerError
        | ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as every surface answers it: a stable code, a message that names what was wrong
/// (never a secret: provider text is scrubbed by the gateway), and the provider's own words when
/// the provider or the plugin said something.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Boxed: most errors carry none, and an error travels by value through every `Result`.
    pub provider: Option<Box<ProviderError>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            provider: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    /// The documented envelope: `{"error": {"code", "message", ...}}`.
    pub fn to_json(&self) -> Value {
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(provider) = &self.provider {
            body["kind"] = json!(provider.kind);
            body["provider_code"] = json!(provider.provider_code);
            body["provider_message"] = json!(provider.provider_message);
            body["fields"] = json!(provider.fields);
        }
        json!({ "error": body })
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let provider = match &error {
            ServiceError::Dispatch(dispatch) => dispatch.provider_error().cloned().map(Box::new),
            _ => None,
        };
        Self {
            code: error.code(),
            message: error.to_string(),
            provider,
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(error: DispatchError) -> Self {
        ServiceError::Dispatch(error).into()
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        ServiceError::Ledger(error).into()
    }
}

impl IntoResponse for ApiError {
    /// The envelope, with the error itself kept in the response's extensions: the API's request
    /// layer adds the request id to the body and logs the code.
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.to_json())).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_an_error_status() {
        for code in ErrorCode::ALL {
            let status = status_of(*code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code} answers {status}"
            );
        }
    }

    #[test]
    fn a_provider_error_keeps_its_words_in_the_envelope() {
        let error = ApiError::from(DispatchError::Provider(
            ProviderError::new(gatehouse_plugin_api::ErrorKind::Declined, "no funds")
                .with_provider_code("51"),
        ));
        assert_eq!(error.status(), StatusCode::PAYMENT_REQUIRED);
        let body = error.to_json();
        assert_eq!(body["error"]["code"], "declined");
        assert_eq!(body["error"]["provider_code"], "51");
    }
}
