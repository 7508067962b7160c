//! Normalized commands and the invocation that carries one to a plugin.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// Provider-specific fields of a command. The manifest documents which keys each operation reads;
/// the host refuses keys the manifest does not list.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// The operations a plugin can offer. The manifest lists the ones it supports, and the host
/// refuses any other before doing any I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Charge,
    Refund,
    Report,
    AffiliatePayout,
    AffiliateRefund,
    Status,
    Balance,
    PaymentPage,
    SavedAccounts,
    DeleteSavedAccount,
    SandboxChargeback,
    Webhook,
}

impl Operation {
    pub const ALL: [Operation; 12] = [
        Self::Charge,
        Self::Refund,
        Self::Report,
        Self::AffiliatePayout,
        Self::AffiliateRefund,
        Self::Status,
        Self::Balance,
        Self::PaymentPage,
        Self::SavedAccounts,
        Self::DeleteSavedAccount,
        Self::SandboxChargeback,
        Self::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Refund => "refund",
            Self::Report => "report",
            Self::AffiliatePayout => "affiliate_payout",
            Self::AffiliateRefund => "affiliate_refund",
            Self::Status => "status",
            Self::Balance => "balance",
            Self::PaymentPage => "payment_page",
            Self::SavedAccounts => "saved_accounts",
            Self::DeleteSavedAccount => "delete_saved_account",
            Self::SandboxChargeback => "sandbox_chargeback",
            Self::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|operation| operation.as_str() == text)
    }

    /// Whether the operation moves money: such commands are written to the ledger before they
    /// are sent, carry a host-made reference, and end `unknown` rather than `failed` when the
    /// host cannot tell whether the provider acted.
    pub fn moves_money(self) -> bool {
        matches!(
            self,
            Self::Charge | Self::Refund | Self::AffiliatePayout | Self::AffiliateRefund
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who pays or is paid, as far as the provider needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// A normalized command. The JSON form is tagged by `operation`:
/// `{"operation": "charge", "amount": {"minor_units": 500, "currency": "XOF"}, ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Take money from a customer: directly (mobile money) or from a saved account.
    Charge {
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default)]
        customer: Customer,
        /// The payment method or network (`FLOOZ`, `TMONEY`, `card`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_method: Option<String>,
        /// A saved account to charge, for providers that tokenize.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saved_account_id: Option<String>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Give money back; `amount: None` is a full refund.
    Refund {
        transaction_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<Money>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Read a report. `report` names one of the reports the manifest lists for this plugin.
    Report {
        report: String,
        /// Start of the period, Unix seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<i64>,
        /// End of the period, Unix seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        till: Option<i64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        filters: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Credit an affiliate for a referred sale.
    AffiliatePayout {
        affiliate_id: String,
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original_subscription_id: Option<String>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Reverse an affiliate's credit for a refunded transaction.
    AffiliateRefund {
        affiliate_id: String,
        subscription_id: String,
        original_subscription_id: String,
        /// `one_time`, `recurring` or `rebill`.
        transaction_type: String,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Ask the provider for a transaction's state, by its id or by our reference.
    ///
    /// Without `of` (what every host and plugin before it sends and reads), the transaction asked
    /// about is a charge. With `of`, it is the money movement of that operation (a `refund`, an
    /// `affiliate_payout`, ...), and the outcome describes that movement: `succeeded` when the
    /// provider shows it done, `pending` when accepted but not complete, `failed` when the
    /// provider shows it was never made (asking again is safe), `unknown` when its records
    /// cannot tell. A host sends `of` (other than `charge`) only to a plugin whose manifest lists
    /// the operation in [`Manifest::status_of`](crate::Manifest::status_of): a plugin built before
    /// the field refuses a command carrying it.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transaction_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// The operation whose money movement is asked about; absent means a charge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<Operation>,
        /// The amount of the movement asked about, as the host recorded it: for `of: refund`,
        /// the refund's amount, absent for a full refund. A plugin reads it to tell whether the
        /// provider's record answers the question (a partial refund against a full one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<Money>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    Balance {
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Prepare a hosted payment page and return its URL.
    PaymentPage {
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default)]
        customer: Customer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_method: Option<String>,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// List a user's saved payment accounts.
    SavedAccounts {
        user_id: String,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    DeleteSavedAccount {
        user_id: String,
        account_type: String,
        account_id: String,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Ask a provider's sandbox to simulate a chargeback.
    SandboxChargeback {
        transaction_id: String,
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Verify and parse an inbound webhook or callback. The raw body travels beside the command,
    /// byte for byte, so signatures are checked on exactly what the provider sent.
    Webhook {
        /// Header names in lower case.
        headers: Vec<(String, String)>,
    },
}

impl Command {
    pub fn operation(&self) -> Operation {
        match self {
            Self::Charge { .. } => Operation::Charge,
            Self::Refund { .. } => Operation::Refund,
            Self::Report { .. } => Operation::Report,
            Self::AffiliatePayout { .. } => Operation::AffiliatePayout,
            Self::AffiliateRefund { .. } => Operation::AffiliateRefund,
            Self::Status { .. } => Operation::Status,
            Self::Balance { .. } => Operation::Balance,
            Self::PaymentPage { .. } => Operation::PaymentPage,
            Self::SavedAccounts { .. } => Operation::SavedAccounts,
            Self::DeleteSavedAccount { .. } => Operation::DeleteSavedAccount,
            Self::SandboxChargeback { .. } => Operation::SandboxChargeback,
            Self::Webhook { .. } => Operation::Webhook,
        }
    }

    /// The provider-specific fields, for the operations that take them.
    pub fn extra(&self) -> Option<&Extra> {
        match self {
            Self::Charge { extra, .. }
            | Self::Refund { extra, .. }
            | Self::Report { extra, .. }
            | Self::AffiliatePayout { extra, .. }
            | Self::AffiliateRefund { extra, .. }
            | Self::Status { extra, .. }
            | Self::Balance { extra }
            | Self::PaymentPage { extra, .. }
            | Self::SavedAccounts { extra, .. }
            | Self::DeleteSavedAccount { extra, .. }
            | Self::SandboxChargeback { extra, .. } => Some(extra),
            Self::Webhook { .. } => None,
        }
    }

    /// The amount the command moves, if it names one.
    pub fn amount(&self) -> Option<Money> {
        match self {
            Self::Charge { amount, .. }
            | Self::AffiliatePayout { amount, .. }
            | Self::PaymentPage { amount, .. } => Some(*amount),
            Self::Refund { amount, .. } => *amount,
            _ => None,
        }
    }
}

/// A credential value. It crosses the plugin boundary in clear (the plugin must send it), but its
/// `Debug` form is `***`, so it cannot reach a log through a derived `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for building the request that needs it and for nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Values shorter than this are not replaced by [`AccountConfig::redact`].
pub const MIN_REDACTED_LENGTH: usize = 4;

/// One provider account as configured in `plugins.toml`, resolved by the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountConfig {
    /// The account's name in `plugins.toml`.
    pub account: String,
    /// The provider's base URL for this account (a simulator's in sandbox mode).
    pub base_url: String,
    /// Non-secret settings, by the names the manifest declares.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Secret settings, by the names the manifest declares as secret.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
}

impl AccountConfig {
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    /// `text` with every secret value of the account (of at least [`MIN_REDACTED_LENGTH`]
    /// characters) replaced by `***`, as sent raw and in the
    /// two encodings a request carries it in (form-encoded, `+` for a space; percent-encoded,
    /// `%20`). Providers and proxies echo requests, and serde quotes the bodies it fails on, so a
    /// plugin passes provider text through this before it goes into an error or an outcome.
    pub fn redact(&self, text: &str) -> String {
        self.redact_also(text, &[])
    }

    /// [`redact`](Self::redact), also replacing the non-secret credentials `also` names (a user
    /// name, a password's digest) that the provider must not see quoted back in an error either.
    pub fn redact_also(&self, text: &str, also: &[&str]) -> String {
        let mut forms: Vec<String> = Vec::new();
        let values = self
            .secrets
            .values()
            .map(Secret::expose)
            .chain(also.iter().copied())
            .map(str::trim)
            // A value this short is no real credential, and blanking every `ab` in a message
            // would destroy it.
            .filter(|value| value.chars().count() >= MIN_REDACTED_LENGTH);
        for value in values {
            let form_encoded = crate::http::encode_form(&[("", value)]);
            let form_encoded = form_encoded.trim_start_matches('=').to_string();
            let percent_encoded = form_encoded.replace('+', "%20");
            forms.extend([value.to_string(), form_encoded, percent_encoded]);
        }
        // Longest first, so that a value containing another is replaced whole.
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        forms.dedup();
        let mut redacted = text.to_string();
        for form in &forms {
            if redacted.contains(form.as_str()) {
                redacted = redacted.replace(form.as_str(), "***");
            }
        }
        redacted
    }

    /// Whether a boolean setting is on (`true`, `1`, `yes`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(
            self.setting(name).map(str::to_ascii_lowercase).as_deref(),
            Some("true" | "1" | "yes" | "on")
        )
    }
}

/// Everything a plugin receives for one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub command: Command,
    pub account: AccountConfig,
    /// The host-made reference of a money-moving command: unique, stable across retries, and sent
    /// to the provider as its idempotency identifier where the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The host's clock, Unix seconds: plugins read no clock of their own, so flows are
    /// deterministic and testable.
    pub now_unix: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_with(secrets: &[(&str, &str)]) -> AccountConfig {
        AccountConfig {
            account: "main".into(),
            secrets: secrets
                .iter()
                .map(|(name, value)| (name.to_string(), Secret::new(*value)))
                .collect(),
            ..AccountConfig::default()
        }
    }

    #[test]
    fn redact_replaces_secrets_raw_form_and_percent_encoded() {
        let account = account_with(&[("password", "p@ss w0rd"), ("key", "kaya")]);
        assert_eq!(
            account.redact("a=p@ss w0rd b=p%40ss+w0rd c=p%40ss%20w0rd"),
            "a=*** b=*** c=***"
        );
        assert_eq!(account.redact("kayak"), "***k");
        // Too short to be a credential: left alone rather than blanking the message.
        assert_eq!(account_with(&[("pin", "abc")]).redact("abcabc"), "abcabc");
        assert_eq!(
            account.redact_also("user alice, p@ss w0rd", &["alice", " "]),
            "user ***, ***"
        );
    }

    #[test]
    fn redact_prefers_the_longest_secret() {
        let account = account_with(&[("short", "abcd"), ("long", "abcdefg")]);
        assert_eq!(account.redact("xabcdefgx abcd"), "x***x ***");
        assert_eq!(account_with(&[("empty", "")]).redact("text"), "text");
    }

    #[test]
    fn status_without_of_is_unchanged_on_the_wire() {
        let plain: Command = serde_json::from_str(r#"{"operation":"status","transaction_id":"7"}"#)
            .expect("a status command reads");
        assert_eq!(
            serde_json::to_string(&plain).expect("serializes"),
            r#"{"operation":"status","transaction_id":"7"}"#
        );
        let refund: Command = serde_json::from_str(
            r#"{"operation":"status","transaction_id":"7","of":"refund","amount":{"minor_units":150,"currency":"USD"}}"#,
        )
        .expect("a refund status reads");
        match refund {
            Command::Status { of, amount, .. } => {
                assert_eq!(of, Some(Operation::Refund));
                assert_eq!(amount.map(|amount| amount.minor_units), Some(150));
            }
            other => panic!("{other:?}"),
        }
    }
}
