//! The provider's documented error strings (seed `000`, section 3 "Codes erreurs") and HTTP-level
//! failures, mapped to normalized errors in one place.
//!
//! The document gives the strings but not their wrapper; providers.md's GUESS is the bare string
//! with HTTP 200. They are recognized on any status, trimmed, case-insensitively, when the body
//! is just that string, or just that string inside markup (`<html><body>auth error</body></html>`).

use gatehouse_plugin_api::{ErrorKind, ProviderError};

use crate::transformers::{MONTH, StatisticsApi, YEAR};

/// The five documented errors, spelled as the provider spells them (typos included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentedError {
    /// `too many login attemps`: more than 3 failed logins in 5 minutes; the account is locked.
    TooManyLoginAttempts,
    /// `auth error`: wrong user name and password combination.
    AuthError,
    /// `systeme error`: the provider's internal error.
    SystemError,
    /// `wrong year value`: the year is not formatted correctly.
    WrongYear,
    /// `wrong month value`: the month is not formatted correctly.
    WrongMonth,
}

/// Bodies longer than this are never taken for one of the documented (short) error strings.
const LONGEST_ERROR_BODY: usize = 512;

impl DocumentedError {
    pub const ALL: [Self; 5] = [
        Self::TooManyLoginAttempts,
        Self::AuthError,
        Self::SystemError,
        Self::WrongYear,
        Self::WrongMonth,
    ];

    /// The string exactly as the document writes it.
    pub fn wire_text(self) -> &'static str {
        match self {
            Self::TooManyLoginAttempts => "too many login attemps",
            Self::AuthError => "auth error",
            Self::SystemError => "systeme error",
            Self::WrongYear => "wrong year value",
            Self::WrongMonth => "wrong month value",
        }
    }

    /// Whether `body` is just one of the documented strings (trimmed, any case, bare or wrapped
    /// in markup only).
    pub fn recognize(body: &str) -> Option<Self> {
        let trimmed = trim_body(body);
        if trimmed.len() > LONGEST_ERROR_BODY {
            return None;
        }
        Self::matching(trimmed).or_else(|| Self::matching(trim_body(&without_markup(trimmed))))
    }

    fn matching(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|error| text.eq_ignore_ascii_case(error.wire_text()))
    }

    /// The normalized error, with the provider's string as its code and the body as received
    /// (trimmed) as its message.
    pub fn to_provider_error(self, api: StatisticsApi, received: &str) -> ProviderError {
        let script = api.script();
        let error = match self {
            Self::TooManyLoginAttempts => ProviderError::new(
                ErrorKind::RateLimited,
                format!(
                    "Paysite Cash ({script}) has locked the account after more than 3 failed logins in 5 minutes; wait before calling again"
                ),
            ),
            Self::AuthError => ProviderError::new(
                ErrorKind::Authentication,
                format!("Paysite Cash ({script}) refused the user name and password"),
            ),
            Self::SystemError => ProviderError::new(
                ErrorKind::ProviderUnavailable,
                format!("Paysite Cash ({script}) reported an internal error"),
            ),
            Self::WrongYear => {
                ProviderError::invalid_request(format!("Paysite Cash ({script}) refused the year"))
                    .with_field(YEAR)
            }
            Self::WrongMonth => {
                ProviderError::invalid_request(format!("Paysite Cash ({script}) refused the month"))
                    .with_field(MONTH)
            }
        };
        error
            .with_provider_code(self.wire_text())
            .with_provider_message(trim_body(received))
    }
}

/// An answer outside 2xx that is not a documented error string. The document defines no HTTP
/// statuses, so these come from the server or a proxy in front of it.
pub fn http_error(status: u16, body: &str, api: StatisticsApi) -> ProviderError {
    let kind = ErrorKind::for_http_status(status);
    let error = ProviderError::new(
        kind,
        format!("Paysite Cash ({}) answered HTTP {status}", api.script()),
    )
    .with_provider_code(status.to_string());
    let body = trim_body(body);
    if body.is_empty() {
        error
    } else {
        error.with_provider_message(body)
    }
}

/// Trims whitespace and byte-order marks.
fn trim_body(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// The text of `markup` with every `<...>` tag removed (entities are left as they are).
fn without_markup(markup: &str) -> String {
    let mut text = String::with_capacity(markup.len());
    let mut in_tag = false;
    for character in markup.chars() {
        match character {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            other if !in_tag => text.push(other),
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_the_bare_strings() {
        assert_eq!(
            DocumentedError::recognize("  Auth Error\r\n"),
            Some(DocumentedError::AuthError)
        );
        assert_eq!(
            DocumentedError::recognize("\u{feff}too many login attemps"),
            Some(DocumentedError::TooManyLoginAttempts)
        );
        assert_eq!(
            DocumentedError::recognize("<html><body><p>systeme error</p></body></html>"),
            Some(DocumentedError::SystemError)
        );
        // The correct spelling is not the documented string.
        assert_eq!(DocumentedError::recognize("too many login attempts"), None);
        assert_eq!(DocumentedError::recognize("auth error;12"), None);
        assert_eq!(DocumentedError::recognize("date;auth error\n1;2"), None);
        assert_eq!(DocumentedError::recognize(""), None);
    }
}
