//! What a plugin says about itself: who it speaks to, what it can do, what it needs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::Operation;
use crate::outcome::WebhookReply;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The provider id: lower case letters, digits, `-` and `_` (`paygateglobal`).
    pub provider: String,
    pub display_name: String,
    /// The plugin's own version (semver), shown by `gatehouse plugins` and `/v1/plugins`.
    pub plugin_version: String,
    pub operations: Vec<Operation>,
    /// Configuration keys an account of this provider takes.
    pub config_keys: Vec<ConfigKey>,
    /// Provider-specific command fields, by operation.
    #[serde(default)]
    pub extra_fields: Vec<ExtraField>,
    /// Names accepted by the `report` operation.
    #[serde(default)]
    pub reports: Vec<String>,
    /// The provider's production base URL, used when an account names none.
    #[serde(default)]
    pub default_base_url: Option<String>,
    /// The money-moving operations besides `charge` whose transactions the `status` operation
    /// can describe when asked with [`Command::Status`](crate::Command::Status)'s `of` (a
    /// `refund`, an `affiliate_payout`, ...). Empty, the default and what plugins built before
    /// the field declare, means charges only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_of: Vec<Operation>,
    /// The longest free text, in characters, the provider accepts per command field: the key is
    /// the field's path in the command's JSON (`description`, `reason`, `customer.name`,
    /// `extra.<name>`). The host refuses a longer value before any I/O (`invalid_request`)
    /// instead of letting the provider truncate or reject it after the ledger has it. Empty (the
    /// default, and what older plugins declare) means no limit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_text_lengths: BTreeMap<String, usize>,
    /// For providers whose callbacks are not signed, so the plugin must confirm each with the
    /// provider: where the host finds the ledger reference a callback names, so it can
    /// acknowledge one naming no entry of this account (or an entry already final) without the
    /// plugin calling out. Absent (the default) means every callback goes to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_callbacks: Option<UnsignedCallbacks>,
}

/// How the host reads an unsigned callback before the plugin confirms it (see
/// [`Manifest::unsigned_callbacks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsignedCallbacks {
    /// A JSON pointer (RFC 6901, `/identifier`) to the host-made reference (the one the host
    /// passed as `Invocation::reference`) in the callback's JSON body; a string or a number.
    pub reference_pointer: String,
    /// The answer a callback the host does not confirm gets: the provider's "received", so it
    /// stops resending a callback that can change nothing.
    pub acknowledgement: WebhookReply,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub required: bool,
    /// Secret keys are resolved from the environment or a file, never logged, never echoed.
    pub secret: bool,
}

impl ConfigKey {
    pub fn required(name: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            required: true,
            secret: false,
        }
    }

    pub fn optional(name: &str, description: &str) -> Self {
        Self {
            required: false,
            ..Self::required(name, description)
        }
    }

    pub fn secret(name: &str, description: &str) -> Self {
        Self {
            secret: true,
            ..Self::required(name, description)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraField {
    pub operation: Operation,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

impl ExtraField {
    pub fn optional(operation: Operation, name: &str, description: &str) -> Self {
        Self {
            operation,
            name: name.into(),
            description: description.into(),
            required: false,
        }
    }

    pub fn required(operation: Operation, name: &str, description: &str) -> Self {
        Self {
            required: true,
            ..Self::optional(operation, name, description)
        }
    }
}

impl Manifest {
    pub fn supports(&self, operation: Operation) -> bool {
        self.operations.contains(&operation)
    }

    /// Whether the `status` operation can describe a transaction of `operation`: charges
    /// whenever `status` is offered, the operations of [`status_of`](Self::status_of) besides.
    pub fn status_describes(&self, operation: Operation) -> bool {
        self.supports(Operation::Status)
            && (operation == Operation::Charge || self.status_of.contains(&operation))
    }

    pub fn config_key(&self, name: &str) -> Option<&ConfigKey> {
        self.config_keys.iter().find(|key| key.name == name)
    }

    /// Checks the manifest is usable; returns every problem found, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let id_ok = !self.provider.is_empty()
            && self.provider.len() <= 64
            && self
                .provider
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            problems.push(format!(
                "provider id `{}` must be 1-64 characters of a-z, 0-9, `-` or `_`",
                self.provider.chars().take(64).collect::<String>()
            ));
        }
        if !is_semver(&self.plugin_version) {
            problems.push(format!(
                "plugin_version `{}` is not a semantic version (MAJOR.MINOR.PATCH)",
                self.plugin_version.chars().take(64).collect::<String>()
            ));
        }
        if self.operations.is_empty() {
            problems.push("operations is empty: a plugin must support at least one".into());
        }
        let mut seen = BTreeSet::new();
        for operation in &self.operations {
            if !seen.insert(*operation) {
                problems.push(format!("operation `{operation}` is listed twice"));
            }
        }
        let mut key_names = BTreeSet::new();
        for key in &self.config_keys {
            if key.name.is_empty()
                || !key
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                problems.push(format!(
                    "config key `{}` must be letters, digits or `_`",
                    key.name
                ));
            }
            if !key_names.insert(key.name.as_str()) {
                problems.push(format!("config key `{}` is declared twice", key.name));
            }
            if matches!(
                key.name.as_str(),
                "base_url" | "timeout_ms" | "rate_limit_per_second" | "max_concurrency"
            ) {
                problems.push(format!(
                    "config key `{}` is reserved for the host's account policy",
                    key.name
                ));
            }
        }
        for field in &self.extra_fields {
            if !self.supports(field.operation) {
                problems.push(format!(
                    "extra field `{}` belongs to `{}`, which the plugin does not support",
                    field.name, field.operation
                ));
            }
        }
        for (field, max) in &self.max_text_lengths {
            if *max == 0 || field.is_empty() {
                problems.push(format!(
                    "max_text_lengths: `{field}` must name a field and allow at least one character"
                ));
            }
        }
        if let Some(callbacks) = &self.unsigned_callbacks {
            if !callbacks.reference_pointer.starts_with('/') {
                problems.push(format!(
                    "unsigned_callbacks.reference_pointer `{}` is not a JSON pointer (it starts with `/`)",
                    callbacks.reference_pointer.chars().take(64).collect::<String>()
                ));
            }
            if !self.supports(Operation::Webhook) {
                problems.push(
                    "unsigned_callbacks is set, but the plugin does not support `webhook`".into(),
                );
            }
        }
        if !self.status_of.is_empty() && !self.supports(Operation::Status) {
            problems.push(
                "status_of lists operations, but the plugin does not support `status`".into(),
            );
        }
        for operation in &self.status_of {
            if !operation.moves_money() {
                problems.push(format!(
                    "status_of lists `{operation}`, which moves no money: status describes money movements"
                ));
            }
        }
        if self.supports(Operation::Report) && self.reports.is_empty() {
            problems.push("the plugin supports `report` but lists no report names".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn is_semver(text: &str) -> bool {
    let core = text.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(operations: Vec<Operation>, status_of: Vec<Operation>) -> Manifest {
        Manifest {
            provider: "acme".into(),
            display_name: "Acme".into(),
            plugin_version: "0.1.0".into(),
            operations,
            config_keys: vec![],
            extra_fields: vec![],
            reports: vec![],
            default_base_url: None,
            status_of,
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    #[test]
    fn status_describes_charges_by_default_and_what_status_of_adds() {
        let plain = manifest(vec![Operation::Charge, Operation::Status], vec![]);
        assert!(plain.status_describes(Operation::Charge));
        assert!(!plain.status_describes(Operation::Refund));
        let refunds = manifest(
            vec![Operation::Refund, Operation::Status],
            vec![Operation::Refund],
        );
        assert!(refunds.status_describes(Operation::Refund));
        assert!(!refunds.status_describes(Operation::AffiliatePayout));
        assert!(refunds.validate().is_ok());
        let no_status = manifest(vec![Operation::AffiliatePayout], vec![]);
        assert!(!no_status.status_describes(Operation::Charge));
    }

    #[test]
    fn status_of_needs_status_and_money_movements() {
        let problems = manifest(
            vec![Operation::Refund],
            vec![Operation::Refund, Operation::Balance],
        )
        .validate()
        .expect_err("refused");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|problem| problem.contains("`status`")));
        assert!(problems.iter().any(|problem| problem.contains("`balance`")));
    }

    #[test]
    fn a_manifest_without_status_of_reads_and_writes_as_before() {
        let json = serde_json::to_value(manifest(vec![Operation::Status], vec![])).expect("json");
        assert!(json.get("status_of").is_none());
        let read: Manifest = serde_json::from_value(json).expect("reads");
        assert!(read.status_of.is_empty());
    }

    #[test]
    fn text_limits_and_unsigned_callbacks_are_optional_and_checked() {
        // Written as before when unused, so older hosts and plugins see the same JSON.
        let plain = manifest(vec![Operation::Webhook], vec![]);
        let json = serde_json::to_value(&plain).expect("json");
        assert!(json.get("max_text_lengths").is_none());
        assert!(json.get("unsigned_callbacks").is_none());
        let read: Manifest = serde_json::from_value(json).expect("reads");
        assert!(read.max_text_lengths.is_empty() && read.unsigned_callbacks.is_none());

        let mut declared = plain.clone();
        declared.max_text_lengths = [("description".to_string(), 255)].into();
        declared.unsigned_callbacks = Some(UnsignedCallbacks {
            reference_pointer: "/identifier".into(),
            acknowledgement: WebhookReply::empty(200),
        });
        assert_eq!(declared.validate(), Ok(()));
        let round_trip: Manifest =
            serde_json::from_value(serde_json::to_value(&declared).expect("json")).expect("reads");
        assert_eq!(round_trip, declared);

        let mut wrong = declared.clone();
        wrong.max_text_lengths = [("description".to_string(), 0)].into();
        wrong.unsigned_callbacks = Some(UnsignedCallbacks {
            reference_pointer: "identifier".into(),
            acknowledgement: WebhookReply::empty(200),
        });
        wrong.operations = vec![Operation::Status];
        let problems = wrong.validate().expect_err("refused");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
