//! The account's settings and secrets, read one way for every report: `user` (setting) and
//! `password` (secret; only its md5 goes on the wire), the optional `delimiter` and `currency`.
//! A missing or unusable value is a [`RequestError`] naming the key, never its value.

use std::fmt;

use gatehouse_plugin_api::error::truncate;
use gatehouse_plugin_api::{AccountConfig, Currency};

use crate::transformers::{RequestError, md5_hex};

/// Configuration keys, as the manifest declares them.
pub const USER: &str = "user";
pub const PASSWORD: &str = "password";
pub const DELIMITER: &str = "delimiter";
pub const CURRENCY: &str = "currency";

/// The account's credentials in the form the provider wants. The clear password is kept only so
/// that it (and its md5) can be blanked out of anything the provider echoes back.
pub struct Credentials {
    pub(crate) user: String,
    password: String,
    pub(crate) password_md5: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .field("password_md5", &"***")
            .finish()
    }
}

impl Credentials {
    /// Replaces the password and its md5 (in either case) wherever they occur in provider text,
    /// so that a page echoing our request URL cannot carry the credential into an outcome.
    /// Passwords shorter than [`MIN_REDACTED_PASSWORD_CHARS`] are not searched for: blanking
    /// every `abc` in a report would destroy data, and the host scrubs secrets again anyway.
    pub fn redact(&self, text: &str) -> String {
        let mut redacted = text
            .replace(&self.password_md5, "***")
            .replace(&self.password_md5.to_ascii_uppercase(), "***");
        if self.password.chars().count() >= MIN_REDACTED_PASSWORD_CHARS {
            redacted = redacted.replace(&self.password, "***");
        }
        redacted
    }
}

/// See [`Credentials::redact`].
pub const MIN_REDACTED_PASSWORD_CHARS: usize = 6;

/// How the statistics body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseSettings {
    /// The field separator: `;` unless the account's `delimiter` says otherwise.
    pub delimiter: char,
    /// The account's `currency`, for amounts in rows that name none.
    pub currency: Option<Currency>,
}

/// Reads `user` and `password` from the account; only the password's md5 goes on the wire.
pub fn credentials(account: &AccountConfig) -> Result<Credentials, RequestError> {
    let missing = |key| RequestError::MissingConfig {
        account: truncate(&account.account),
        key,
    };
    let user = account
        .setting(USER)
        .filter(|user| !user.is_empty())
        .ok_or_else(|| missing(USER))?;
    let password = account
        .secret(PASSWORD)
        .map(|secret| secret.expose())
        .filter(|password| !password.is_empty())
        .ok_or_else(|| missing(PASSWORD))?;
    Ok(Credentials {
        user: user.to_string(),
        password: password.to_string(),
        password_md5: md5_hex(password),
    })
}

/// Reads the optional `delimiter` and `currency` settings.
pub fn parse_settings(account: &AccountConfig) -> Result<ParseSettings, RequestError> {
    let delimiter = match account.setting(DELIMITER) {
        None | Some("") => ';',
        Some(text) => checked_delimiter(text)?,
    };
    let currency = match account.setting(CURRENCY).map(str::trim) {
        None | Some("") => None,
        Some(code) => Some(
            Currency::from_code(&code.to_ascii_uppercase())
                .map_err(|_| RequestError::BadCurrency(truncate(code)))?,
        ),
    };
    Ok(ParseSettings {
        delimiter,
        currency,
    })
}

fn checked_delimiter(text: &str) -> Result<char, RequestError> {
    if text.eq_ignore_ascii_case("tab") || text == "\\t" {
        return Ok('\t');
    }
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(delimiter), None) if !matches!(delimiter, '"' | '\n' | '\r') => Ok(delimiter),
        _ => Err(RequestError::BadDelimiter(truncate(text))),
    }
}
