//! The account's DataLink login, read from its configuration and checked before any request.
//!
//! The seed's table of main parameters decides what every request carries: `clientAccnum`,
//! `username` and `password` always; `clientSubacc` when the DataLink user belongs to one
//! sub-account; `usingSubacc` when a main-account user acts on a sub-account; `returnXML` to get
//! XML instead of CSV. The two sub-account parameters describe two different kinds of login, so an
//! account may set one of them, never both.

use gatehouse_plugin_api::{AccountConfig, ProviderError};
use serde::{Deserialize, Serialize};

/// Config key: the 6-digit CCBill main account number (`clientAccnum`).
pub const CLIENT_ACCNUM: &str = "client_accnum";
/// Config key: the DataLink user name (`username`).
pub const USERNAME: &str = "username";
/// Config key (secret): the DataLink password (`password`).
pub const PASSWORD: &str = "password";
/// Config key: the 4-digit sub-account a sub-account user's credentials belong to (`clientSubacc`).
pub const CLIENT_SUBACC: &str = "client_subacc";
/// Config key: the 4-digit sub-account a main-account user acts on (`usingSubacc`).
pub const USING_SUBACC: &str = "using_subacc";
/// Config key: `csv` (CCBill's default) or `xml` (sends `returnXML=1`).
pub const RESPONSE_FORMAT: &str = "response_format";

/// The answer format an account asks CCBill for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Csv,
    Xml,
}

impl ResponseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Xml => "XML",
        }
    }
}

/// Whose DataLink credentials the account holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login<'a> {
    /// Main-account credentials, optionally acting on one sub-account (`usingSubacc`).
    MainAccount { using_subacc: Option<&'a str> },
    /// The credentials of one sub-account's DataLink user (`clientSubacc`).
    SubAccount { client_subacc: &'a str },
}

impl Login<'_> {
    /// Whether the request names a sub-account, one way or the other.
    pub fn names_a_subaccount(&self) -> bool {
        !matches!(self, Self::MainAccount { using_subacc: None })
    }
}

/// A validated DataLink login. `Debug` is written by hand so the password cannot reach a log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataLinkAccount<'a> {
    pub client_accnum: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub login: Login<'a>,
    pub response_format: ResponseFormat,
}

impl std::fmt::Debug for DataLinkAccount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLinkAccount")
            .field("client_accnum", &self.client_accnum)
            .field("username", &self.username)
            .field("password", &"***")
            .field("login", &self.login)
            .field("response_format", &self.response_format)
            .finish()
    }
}

/// Reads and checks the account's configuration. Every error names the config key at fault and
/// never repeats a credential.
pub fn read_account(config: &AccountConfig) -> Result<DataLinkAccount<'_>, ProviderError> {
    let account_name = config.account.as_str();
    let client_accnum = required_setting(config, CLIENT_ACCNUM, "clientAccnum")?;
    if !is_n_digits(client_accnum, 6) {
        return Err(config_error(
            account_name,
            CLIENT_ACCNUM,
            "must be the 6-digit CCBill main account number (clientAccnum)",
        ));
    }
    let username = required_setting(config, USERNAME, "username")?;
    let password = config
        .secret(PASSWORD)
        .map(|secret| secret.expose())
        .filter(|password| !password.is_empty())
        .ok_or_else(|| {
            config_error(
                account_name,
                PASSWORD,
                "is missing: every DataLink request carries the DataLink password (password)",
            )
        })?;
    let client_subacc = optional_subaccount(config, CLIENT_SUBACC, "clientSubacc")?;
    let using_subacc = optional_subaccount(config, USING_SUBACC, "usingSubacc")?;
    let login = match (client_subacc, using_subacc) {
        (Some(_), Some(_)) => {
            return Err(ProviderError::invalid_request(format!(
                "account `{account_name}`: `{CLIENT_SUBACC}` (sub-account credentials) and \
                 `{USING_SUBACC}` (main-account credentials acting on a sub-account) describe two \
                 different logins; set only the one that matches the DataLink user"
            ))
            .with_field(CLIENT_SUBACC)
            .with_field(USING_SUBACC));
        }
        (Some(client_subacc), None) => Login::SubAccount { client_subacc },
        (None, using_subacc) => Login::MainAccount { using_subacc },
    };
    let response_format = match config.setting(RESPONSE_FORMAT).map(str::trim) {
        None | Some("") => ResponseFormat::Csv,
        Some(text) if text.eq_ignore_ascii_case("csv") => ResponseFormat::Csv,
        Some(text) if text.eq_ignore_ascii_case("xml") => ResponseFormat::Xml,
        Some(_) => {
            return Err(config_error(
                account_name,
                RESPONSE_FORMAT,
                "must be `csv` (CCBill's default) or `xml` (returnXML=1)",
            ));
        }
    };
    Ok(DataLinkAccount {
        client_accnum,
        username,
        password,
        login,
        response_format,
    })
}

fn required_setting<'a>(
    config: &'a AccountConfig,
    key: &str,
    wire_name: &str,
) -> Result<&'a str, ProviderError> {
    config
        .setting(key)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| {
            config_error(
                &config.account,
                key,
                &format!("is missing: every DataLink request carries it ({wire_name})"),
            )
        })
}

/// An optional 4-digit sub-account number; an empty value counts as unset so that templated
/// configuration can leave it blank.
fn optional_subaccount<'a>(
    config: &'a AccountConfig,
    key: &str,
    wire_name: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match config.setting(key).map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) if is_n_digits(value, 4) => Ok(Some(value)),
        Some(_) => Err(config_error(
            &config.account,
            key,
            &format!("must be a 4-digit CCBill sub-account number ({wire_name})"),
        )),
    }
}

fn config_error(account_name: &str, key: &str, problem: &str) -> ProviderError {
    ProviderError::invalid_request(format!("account `{account_name}`: `{key}` {problem}"))
        .with_field(key)
}

fn is_n_digits(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|byte| byte.is_ascii_digit())
}
