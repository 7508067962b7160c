//! The exit codes of `gatehouse call` (and the other commands), so that a script can tell what
//! happened without reading the JSON:
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | succeeded, or pending (the provider accepted it; a webhook or reconciliation says more) |
//! | 1 | the host could not run the command (ledger storage, an internal error) |
//! | 2 | bad invocation: arguments, `--json`, the configuration file |
//! | 3 | failed: the provider definitively did not do it (safe to retry as a new command), or answered a command that moves no money with an error |
//! | 4 | unknown: it may have happened; the ledger entry is reconciled |
//! | 5 | refused before anything was sent (unknown provider or account, invalid command, paused account, a plugin fault, ...) |
//!
//! `gatehouse plugins` and `gatehouse plugin check` exit 5 when a plugin file was refused;
//! `gatehouse plugin install` and `rollback` exit 5 when the install or rollback was refused
//! (signature, conformance, an unknown version), 1 when the host could not write the versions
//! folder.

use std::process::ExitCode;

use gatehouse_core::ErrorCode;
use gatehouse_plugin_api::OutcomeStatus;

pub const SUCCEEDED: u8 = 0;
pub const HOST_FAILURE: u8 = 1;
pub const BAD_INVOCATION: u8 = 2;
pub const FAILED: u8 = 3;
pub const UNKNOWN: u8 = 4;
pub const REFUSED: u8 = 5;

/// The exit code for a command that ended with an outcome.
pub fn for_outcome(status: OutcomeStatus) -> ExitCode {
    ExitCode::from(match status {
        OutcomeStatus::Succeeded | OutcomeStatus::Pending => SUCCEEDED,
        OutcomeStatus::Failed => FAILED,
        OutcomeStatus::Unknown => UNKNOWN,
    })
}

/// The exit code for a command answered with an error.
pub fn for_error(code: ErrorCode) -> ExitCode {
    ExitCode::from(match code {
        ErrorCode::LedgerError
        | ErrorCode::InternalError
        | ErrorCode::InProgress
        | ErrorCode::RequestTimeout => HOST_FAILURE,
        ErrorCode::BadRequest
        | ErrorCode::Unauthorized
        | ErrorCode::MethodNotAllowed
        | ErrorCode::PayloadTooLarge => BAD_INVOCATION,
        ErrorCode::UnknownProvider
        | ErrorCode::UnknownAccount
        | ErrorCode::NotSupported
        | ErrorCode::InvalidRequest
        | ErrorCode::AccountMisconfigured
        | ErrorCode::AccountPaused
        | ErrorCode::RateLimited
        | ErrorCode::ShuttingDown
        | ErrorCode::NotReady
        | ErrorCode::PluginUnavailable
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::ForbiddenScope
        | ErrorCode::ForbiddenAccount
        | ErrorCode::EntryNotSettleable
        | ErrorCode::EntryFinal
        | ErrorCode::PluginFault
        | ErrorCode::PluginRefused => REFUSED,
        // The provider answered a command that moves no money with an error.
        ErrorCode::Authentication
        | ErrorCode::Declined
        | ErrorCode::NotFound
        | ErrorCode::Duplicate
        | ErrorCode::ProviderUnavailable
        | ErrorCode::MalformedResponse
        | ErrorCode::ProviderError => FAILED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_errors_exit_apart() {
        assert_eq!(
            for_outcome(OutcomeStatus::Pending),
            ExitCode::from(SUCCEEDED)
        );
        assert_eq!(for_outcome(OutcomeStatus::Failed), ExitCode::from(FAILED));
        assert_eq!(for_outcome(OutcomeStatus::Unknown), ExitCode::from(UNKNOWN));
        assert_eq!(for_error(ErrorCode::AccountPaused), ExitCode::from(REFUSED));
        assert_eq!(
            for_error(ErrorCode::LedgerError),
            ExitCode::from(HOST_FAILURE)
        );
        for code in ErrorCode::ALL {
            assert_ne!(for_error(*code), ExitCode::SUCCESS, "{code}");
        }
    }
}
