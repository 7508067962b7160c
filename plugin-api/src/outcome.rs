//! Normalized outcomes and the results each operation carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::money::Money;

mod details_de;

/// The state of a command after the provider answered (or did not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Done at the provider.
    Succeeded,
    /// Accepted by the provider, not final yet (a mobile-money payment awaiting the customer).
    Pending,
    /// Definitively not done: safe to try again with a new command.
    Failed,
    /// May or may not have happened (timeout after sending, 5xx, indeterminate provider code).
    /// Never reported as a failure: the host reconciles it through the provider's status.
    Unknown,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the status can still change (and so is worth reconciling).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// The result of a finished command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: OutcomeStatus,
    /// The provider's id for the transaction (`tx_reference`, Xsolla transaction id, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// Why the command failed or ended unknown, in normalized form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
    #[serde(default)]
    pub details: Details,
}

impl Outcome {
    pub fn new(status: OutcomeStatus) -> Self {
        Self {
            status,
            provider_reference: None,
            amount: None,
            error: None,
            details: Details::None,
        }
    }

    pub fn succeeded() -> Self {
        Self::new(OutcomeStatus::Succeeded)
    }

    pub fn pending() -> Self {
        Self::new(OutcomeStatus::Pending)
    }

    pub fn failed(error: ProviderError) -> Self {
        Self::new(OutcomeStatus::Failed).with_error(error)
    }

    pub fn unknown(error: ProviderError) -> Self {
        Self::new(OutcomeStatus::Unknown).with_error(error)
    }

    pub fn with_error(mut self, error: ProviderError) -> Self {
        self.error = Some(error);
        self
    }

    pub fn with_provider_reference(mut self, reference: impl Into<String>) -> Self {
        self.provider_reference = Some(reference.into());
        self
    }

    pub fn with_amount(mut self, amount: Money) -> Self {
        self.amount = Some(amount);
        self
    }

    pub fn with_details(mut self, details: Details) -> Self {
        self.details = details;
        self
    }
}

/// What an operation returns beyond its status. The JSON form is tagged by `type`
/// (deserialized by hand, the tag first: `outcome/details_de.rs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Details {
    #[default]
    None,
    PaymentPage {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Report {
        records: Vec<ReportRecord>,
        /// Set when the provider's answer could not be split into records but is still useful.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_text: Option<String>,
    },
    Balance {
        balances: Vec<BalanceEntry>,
    },
    SavedAccounts {
        accounts: Vec<SavedAccount>,
    },
    Transaction(TransactionInfo),
    Webhook(WebhookResult),
}

/// One record of a report: the normalized columns every report can fill, plus every field the
/// provider sent, verbatim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The provider's date text, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The user, customer or affiliate the record is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Other exact amounts the record carries (tax-inclusive amount, balances, fees), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub amounts: BTreeMap<String, Money>,
    /// The provider's record as it came.
    #[serde(default)]
    pub raw: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEntry {
    /// The wallet or account the balance belongs to (`flooz`, `tmoney`, ...).
    pub name: String,
    pub amount: Money,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedAccount {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub raw: serde_json::Value,
}

/// A transaction as the provider describes it (status queries, transaction details).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionInfo {
    /// Our reference (the identifier or external id we sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The provider's status text or code, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default)]
    pub raw: serde_json::Value,
}

/// What the plugin made of an inbound webhook, and what the host should answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookResult {
    /// The normalized event, when the webhook was genuine and understood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<WebhookEvent>,
    /// The answer to send the provider, in the provider's own format.
    pub reply: WebhookReply,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// A key unique to this event at this provider, for deduplicating replays.
    pub event_id: String,
    /// `payment`, `refund`, `partial_refund`, or the provider's own type.
    pub event_type: String,
    /// The outcome the event reports for the transaction it is about.
    pub status: OutcomeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    /// Our reference (identifier, external id), when the event carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// Whether the plugin confirmed the event with the provider (signature checked, or
    /// status re-read for unsigned callbacks). The host changes its ledger only for verified events.
    pub verified: bool,
    #[serde(default)]
    pub raw: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookReply {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default)]
    pub body: String,
}

impl WebhookReply {
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            body: String::new(),
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: Some("application/json".into()),
            body: body.to_string(),
        }
    }
}
