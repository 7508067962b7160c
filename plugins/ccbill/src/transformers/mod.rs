//! Pure mappings between normalized commands and CCBill DataLink's wire parameters, and from
//! DataLink result codes to normalized outcomes.
//!
//! Sources: the seed document (`shared/seeds/003`, "Opciones avanzadas de afiliados") for the
//! actions and their parameters; `shared/providers.md` section 4 for the result-code table (from
//! CCBill's API user guide, as quoted by public client code) and the English `transType` tokens.

use gatehouse_plugin_api::http::{encode_form, join_url};
use gatehouse_plugin_api::{Currency, ErrorKind, Money, ProviderError};
use serde::{Deserialize, Serialize};

use crate::account::{DataLinkAccount, Login, ResponseFormat};

pub mod answer;

/// CCBill's production DataLink host, used when an account names no base URL.
pub const DEFAULT_BASE_URL: &str = "https://datalink.ccbill.com";
/// The one CGI script every DataLink action goes through.
pub const ENDPOINT_PATH: &str = "/utils/subscriptionManagement.cgi";

/// The longest identifier this plugin forwards. CCBill's ids are short digit strings; the bound
/// only stops absurd input from travelling.
const MAX_IDENTIFIER_LENGTH: usize = 64;

/// The DataLink actions this plugin performs, by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    AddAffiliatePayout,
    AddAffiliateRefund,
}

impl Action {
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::AddAffiliatePayout => "addAffiliatePayout",
            Self::AddAffiliateRefund => "addAffiliateRefund",
        }
    }
}

/// The `transType` of `addAffiliateRefund`.
///
/// GUESS (strong): the seed, in Spanish, lists "ÚNICO, RECURRENTE o REFACTURACIÓN"; the wire
/// tokens are assumed to be CCBill's upper-case English `ONETIME`, `RECURRING`, `REBILL`
/// (providers.md section 4, open gap 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionType {
    OneTime,
    Recurring,
    Rebill,
}

impl TransactionType {
    /// Reads the normalized `transaction_type` (`one_time`, `recurring`, `rebill`), forgiving
    /// case, `-`/space separators and the wire spelling itself.
    pub fn from_command(text: &str) -> Result<Self, ProviderError> {
        let normalized: String = text
            .trim()
            .chars()
            .filter(|character| !matches!(character, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        match normalized.as_str() {
            "onetime" => Ok(Self::OneTime),
            "recurring" => Ok(Self::Recurring),
            "rebill" => Ok(Self::Rebill),
            _ => Err(ProviderError::invalid_request(
                "transaction_type must be `one_time`, `recurring` or `rebill`",
            )
            .with_field("transaction_type")),
        }
    }

    pub fn wire_name(self) -> &'static str {
        match self {
            Self::OneTime => "ONETIME",
            Self::Recurring => "RECURRING",
            Self::Rebill => "REBILL",
        }
    }
}

/// The seed says `amount` is "the total amount of the sale in US dollars" (example `14.95`).
pub fn usd() -> Result<Currency, ProviderError> {
    Currency::from_code("USD")
        .map_err(|_| ProviderError::plugin_fault("the currency table has no USD"))
}

/// Checks a payout amount and writes it as CCBill's dollars-and-cents decimal (`14.95`).
pub fn payout_amount_to_wire(amount: &Money) -> Result<String, ProviderError> {
    if amount.currency != usd()? {
        return Err(ProviderError::invalid_request(format!(
            "CCBill affiliate payouts are in US dollars, not {}",
            amount.currency
        ))
        .with_field("amount.currency"));
    }
    if !amount.is_positive() {
        return Err(
            ProviderError::invalid_request("amount must be a positive number of US cents")
                .with_field("amount.minor_units"),
        );
    }
    Ok(amount.to_decimal_string())
}

/// Checks an identifier the command carries (affiliate or subscription id) and returns it trimmed.
///
/// The seed's examples are digit strings, but it does not say they must be, so the plugin only
/// refuses what cannot be a CCBill id at all (empty, too long, control characters) and lets
/// CCBill judge the rest (it answers -5 for invalid arguments).
pub fn identifier<'a>(value: &'a str, field: &str) -> Result<&'a str, ProviderError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ProviderError::invalid_request(format!("{field} is empty")).with_field(field));
    }
    if trimmed.chars().count() > MAX_IDENTIFIER_LENGTH
        || trimmed.chars().any(|character| character.is_control())
    {
        return Err(ProviderError::invalid_request(format!(
            "{field} must be a CCBill id of at most {MAX_IDENTIFIER_LENGTH} printable characters"
        ))
        .with_field(field));
    }
    Ok(trimmed)
}

/// The parameters of one action, by wire name, in the order they are sent.
pub type WireParameters<'a> = Vec<(&'static str, &'a str)>;

/// The main parameters of the seed's table, then the action's own ones, as one form body.
///
/// Order follows the seed's sample URLs. `returnXML=1` is added only for XML accounts: CSV is
/// CCBill's default, and the seed marks the parameter optional.
pub fn form_body(
    account: &DataLinkAccount<'_>,
    action: Action,
    action_parameters: &WireParameters<'_>,
) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![("clientAccnum", account.client_accnum)];
    match account.login {
        Login::SubAccount { client_subacc } => pairs.push(("clientSubacc", client_subacc)),
        Login::MainAccount {
            using_subacc: Some(using_subacc),
        } => pairs.push(("usingSubacc", using_subacc)),
        Login::MainAccount { using_subacc: None } => {}
    }
    pairs.push(("username", account.username));
    pairs.push(("password", account.password));
    pairs.push(("action", action.wire_name()));
    if account.response_format == ResponseFormat::Xml {
        pairs.push(("returnXML", "1"));
    }
    pairs.extend(action_parameters.iter().copied());
    encode_form(&pairs)
}

/// `{base_url}/utils/subscriptionManagement.cgi`, CCBill's production host when none is set.
pub fn endpoint_url(base_url: &str) -> String {
    let base = if base_url.trim().is_empty() {
        DEFAULT_BASE_URL
    } else {
        base_url.trim()
    };
    join_url(base, ENDPOINT_PATH)
}

/// What a DataLink result code means for a money-moving action.
#[derive(Debug, PartialEq)]
pub enum ResultMeaning {
    /// `1`: the action was done.
    Succeeded,
    /// A documented refusal: nothing happened at CCBill.
    Refused(ProviderError),
    /// The action may or may not have run (`-7`, or a code no source documents).
    Indeterminate(ProviderError),
}

/// One row of CCBill's result-code table (providers.md section 4; CCBill's own wording).
struct DocumentedCode {
    code: i64,
    kind: ErrorKind,
    summary: &'static str,
    ccbill_text: &'static str,
}

const DOCUMENTED_CODES: &[DocumentedCode] = &[
    DocumentedCode {
        code: 0,
        kind: ErrorKind::ProviderError,
        summary: "CCBill says the action failed",
        ccbill_text: "The requested action failed.",
    },
    DocumentedCode {
        code: -1,
        kind: ErrorKind::Authentication,
        summary: "CCBill refused the DataLink login",
        ccbill_text: "The arguments provided to authenticate the merchant were invalid or missing.",
    },
    DocumentedCode {
        code: -2,
        kind: ErrorKind::InvalidRequest,
        summary: "CCBill refused the subscription id",
        ccbill_text: "The subscription id provided was invalid or the subscription type is not supported by the requested action.",
    },
    DocumentedCode {
        code: -3,
        kind: ErrorKind::NotFound,
        summary: "CCBill has no record of the subscription",
        ccbill_text: "No record was found for the given subscription.",
    },
    DocumentedCode {
        code: -4,
        kind: ErrorKind::NotFound,
        summary: "the subscription belongs to another CCBill account",
        ccbill_text: "The given subscription was not for the account the merchant was authenticated on.",
    },
    DocumentedCode {
        code: -5,
        kind: ErrorKind::InvalidRequest,
        summary: "CCBill refused the action's parameters",
        ccbill_text: "The arguments provided for the requested action were invalid or missing.",
    },
    DocumentedCode {
        code: -6,
        kind: ErrorKind::InvalidRequest,
        summary: "CCBill refused the action",
        ccbill_text: "The requested action was invalid",
    },
    // -7 is not only "internal error": CCBill's own page on it ("CCBill API -7 Error Explained")
    // lists an incorrect DataLink username or password, one that is too short and a missing
    // argument among its causes. The plugin cannot tell which, nor whether the account's
    // credentials were accepted before, so the kind is `authentication`: the host pauses the
    // account (and, until credentials are proven, sends one request at a time), so a wrong
    // password costs one failed login instead of walking into CCBill's lockout. The outcome stays
    // `unknown` (see `interpret_result_code`), because an internal error may hide a done action.
    DocumentedCode {
        code: -7,
        kind: ErrorKind::Authentication,
        summary: "CCBill answered -7: an internal error, or a refused DataLink login (CCBill's -7 also covers an incorrect or too short username or password and a missing argument); the action may or may not have run: check the credentials, and reconcile before retrying",
        ccbill_text: "There was an internal error or a database error and the requested action could not complete.",
    },
    // -8, -9 and -10 refuse the login context rather than the command: every further request
    // from this account will be refused the same way until an operator acts, so they are
    // authentication failures, on which the host pauses the account and says why.
    DocumentedCode {
        code: -8,
        kind: ErrorKind::Authentication,
        summary: "CCBill refused the login from this IP address (DataLink is IP-allow-listed)",
        ccbill_text: "The IP Address the merchant was attempting to authenticate on was not in the valid range.",
    },
    DocumentedCode {
        code: -9,
        kind: ErrorKind::Authentication,
        summary: "the CCBill account is deactivated for DataLink or not permitted to perform this action",
        ccbill_text: "The merchant's account has been deactivated for use on the Datalink system or the merchant is not permitted to perform the requested action",
    },
    DocumentedCode {
        code: -10,
        kind: ErrorKind::Authentication,
        summary: "the CCBill account is not set up for DataLink",
        ccbill_text: "The merchant has not been set up to use the Datalink system.",
    },
    DocumentedCode {
        code: -11,
        kind: ErrorKind::Declined,
        summary: "CCBill declined: the subscription is not eligible",
        ccbill_text: "Subscription is not eligible for a discount, recurring price less than $5.00.",
    },
    DocumentedCode {
        code: -12,
        kind: ErrorKind::RateLimited,
        summary: "CCBill locked the DataLink login after 3 or more failed logins in the last hour",
        ccbill_text: "The merchant has unsuccessfully logged into the system 3 or more times in the last hour. The merchant should wait an hour before attempting to login again and is advised to review the login information.",
    },
    DocumentedCode {
        code: -15,
        kind: ErrorKind::Declined,
        summary: "CCBill declined: the merchant is over its refund threshold",
        ccbill_text: "Merchant over refund threshold",
    },
    DocumentedCode {
        code: -16,
        kind: ErrorKind::Declined,
        summary: "CCBill declined: the merchant is over its void threshold",
        ccbill_text: "Merchant over void threshold",
    },
    DocumentedCode {
        code: -23,
        kind: ErrorKind::Declined,
        summary: "CCBill declined: transaction limit reached",
        ccbill_text: "Transaction limit reached",
    },
    DocumentedCode {
        code: -24,
        kind: ErrorKind::Declined,
        summary: "CCBill declined: purchase limit reached",
        ccbill_text: "Purchase limit reached",
    },
];

/// The result codes CCBill documents, success included.
#[cfg(test)]
pub fn documented_codes() -> impl Iterator<Item = i64> {
    std::iter::once(1).chain(DOCUMENTED_CODES.iter().map(|row| row.code))
}

/// Maps a result code to what it means for `action`.
pub fn interpret_result_code(code: i64, action: Action) -> ResultMeaning {
    if code == 1 {
        return ResultMeaning::Succeeded;
    }
    let Some(row) = DOCUMENTED_CODES.iter().find(|row| row.code == code) else {
        // No source documents this code: CCBill's guide only promises that anything but 1 is an
        // error, and nothing says whether the action ran. For money-moving actions that means
        // unknown, to be reconciled, never failed.
        return ResultMeaning::Indeterminate(
            ProviderError::new(
                ErrorKind::ProviderError,
                format!(
                    "CCBill answered {} with undocumented result code {code}; whether it ran is unknown",
                    action.wire_name()
                ),
            )
            .with_provider_code(code.to_string()),
        );
    };
    let mut error =
        ProviderError::new(row.kind, format!("{}: {}", action.wire_name(), row.summary))
            .with_provider_code(code.to_string())
            .with_provider_message(row.ccbill_text);
    for field in fields_named_by(code, action) {
        error = error.with_field(*field);
    }
    if code == -7 {
        ResultMeaning::Indeterminate(error)
    } else {
        ResultMeaning::Refused(error)
    }
}

/// What an `Error: NN` answer means. CCBill's DataLink page documents four, all refusals of the
/// login itself, so nothing was done: `failed`, with kinds that make the host pause the account
/// before CCBill locks it.
pub fn interpret_error_text(number: u16, action: Action) -> ResultMeaning {
    let code = format!("Error: {number:02}");
    let refused = |kind: ErrorKind, summary: &str, ccbill_text: &str| {
        ResultMeaning::Refused(
            ProviderError::new(kind, format!("{}: {summary}", action.wire_name()))
                .with_provider_code(code.clone())
                .with_provider_message(ccbill_text),
        )
    };
    match number {
        1 => refused(
            ErrorKind::RateLimited,
            "CCBill refused the DataLink login after too many failed logins; wait before trying again and check the credentials",
            "Too many failed logins",
        ),
        2 => refused(
            ErrorKind::Authentication,
            "CCBill refused the DataLink login (failed login): check the username and password",
            "Failed login",
        ),
        3 => refused(
            ErrorKind::Authentication,
            "CCBill refused the DataLink login: the username is inactive",
            "Inactive username",
        ),
        4 => refused(
            ErrorKind::Authentication,
            "CCBill refused the DataLink login because the IP check failed: this host's IP address is not allowed for the DataLink user; add it in CCBill's DataLink settings",
            "IP check failed",
        ),
        // Undocumented: nothing says whether the action ran.
        other => ResultMeaning::Indeterminate(
            ProviderError::new(
                ErrorKind::ProviderError,
                format!(
                    "CCBill answered {} with undocumented `Error: {other:02}`; whether it ran is unknown",
                    action.wire_name()
                ),
            )
            .with_provider_code(code),
        ),
    }
}

/// The kind of a non-200 HTTP answer. DataLink answers its own errors with HTTP 200, so these
/// come from the server or a proxy in front of it: a missing CGI (404, 405) or a redirect (3xx)
/// means DataLink was not reached, not that the request was wrong; every other status reads the
/// common way.
pub fn http_error_kind(status: u16) -> ErrorKind {
    match status {
        404 | 405 | 300..=399 => ErrorKind::ProviderUnavailable,
        other => ErrorKind::for_http_status(other),
    }
}

/// The command fields a result code is about, where the code names them.
fn fields_named_by(code: i64, action: Action) -> &'static [&'static str] {
    match (code, action) {
        (-4..=-2, Action::AddAffiliateRefund) => &["subscription_id", "original_subscription_id"],
        (-4..=-2, Action::AddAffiliatePayout) => &["original_subscription_id"],
        _ => &[],
    }
}
